//! # engine: the `live-engine` binary
//!
//! Wiring only: reads [`Config`], opens the embedded store, picks the event
//! bus (in-process, or NATS JetStream when `nats_url` is set), starts the
//! actor tree and the gateway, and stops them in order.
//!
//! Shutdown order matters for "acknowledged means durable": stop accepting,
//! close every session with a close frame, let each room commit and
//! broadcast what it accepted, publish what the outbox holds, then close
//! the store (which flushes the writer).
//!
//! [`Engine`] is also how black-box tests run a real engine in-process on
//! an ephemeral port.

mod captions;
pub mod config;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actors::{Actors, RoomSupervisorMsg};
use anyhow::{Context, bail};
use bus::{EventBus, InProcessBus, NatsBus, NatsOptions};
use gateway::{AppState, Auth};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use storage::{EmbeddedOptions, EmbeddedStore, Store, TermScope};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;

pub struct Engine {
    http_addr: SocketAddr,
    media_addr: SocketAddr,
    admin_key: String,
    actors: Actors,
    store: Arc<EmbeddedStore>,
    shutdown: CancellationToken,
    media: sfu::MediaPlane,
    /// The roles run in this process (billing, VOD): they stop with
    /// `shutdown`.
    roles: Vec<JoinHandle<()>>,
    sessions: TaskTracker,
    server: JoinHandle<std::io::Result<()>>,
    shutdown_timeout: Duration,
}

impl Engine {
    pub async fn start(config: Config) -> anyhow::Result<Engine> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
        let admin_key = match &config.admin_key {
            Some(key) => key.clone(),
            None => load_or_generate_admin_key(&config.data_dir)?,
        };
        let options = EmbeddedOptions {
            synchronous_full: config.store.synchronous_full,
            max_group: config.store.max_group,
            ..EmbeddedOptions::default()
        };
        let store = Arc::new(
            EmbeddedStore::open(&config.data_dir, options).with_context(|| {
                format!("cannot open the store in {}", config.data_dir.display())
            })?,
        );
        let bus: Arc<dyn EventBus> = match &config.nats_url {
            Some(url) => {
                let nats = NatsBus::connect(NatsOptions::new(url.clone()))
                    .await
                    .context("cannot configure NATS")?;
                match tokio::time::timeout(Duration::from_secs(3), nats.ensure_streams()).await {
                    Ok(Ok(())) => tracing::info!(%url, "event bus: NATS JetStream"),
                    _ => {
                        tracing::warn!(%url, "NATS not reachable yet; events wait in the outbox until it is")
                    }
                }
                Arc::new(nats)
            }
            None => {
                tracing::info!("event bus: in-process");
                Arc::new(InProcessBus::default())
            }
        };
        let (media, media_events) = sfu::MediaPlane::start(
            config.media_udp_addr,
            config.media_advertised_addr,
            config.media_limits(),
        )
        .with_context(|| {
            format!(
                "cannot start the media plane on {} (media_udp_addr)",
                config.media_udp_addr
            )
        })?;
        // Installed before anything records a metric at start-up (the
        // encoder choice below).
        let metrics = metrics_handle();
        let dyn_store: Arc<dyn Store> = store.clone();
        let recordings = actors::LiveRecordings::default();
        let recordings_root = config.data_dir.join("recordings");
        let mut actors_config = config.actors();
        let ladder = config.transcode.enabled.then(|| config.ladder());
        let subtitle_langs = if config.captions.enabled {
            captions::recorded_languages(&config.captions)
        } else {
            Vec::new()
        };
        actors_config.recording = ladder.clone().map(|mut ladder| {
            ladder.subtitles = subtitle_langs.clone();
            actors::RecordingConfig {
                media: media.clone(),
                ladder,
                root: recordings_root.clone(),
                live: recordings.clone(),
            }
        });
        let captions = captions::start(
            &config,
            &media,
            ladder.is_some().then(|| recordings.clone()),
        );
        actors_config.captions = captions.clone();
        let programs = actors::Programs::new(actors::ProgramsConfig {
            media: media.clone(),
            clips_dir: config.clips_dir(),
            stream: config.story.program_stream.clone(),
            voice: checked_voice(config.voice()),
            encoder: ladder.as_ref().map_or_else(
                // Without transcoding, no NVENC probe: software.
                || match config.transcode.encoder.as_str() {
                    "auto" => "libx264".to_owned(),
                    fixed => fixed.to_owned(),
                },
                |ladder| ladder.encoder.clone(),
            ),
            captions: captions.clone(),
        });
        actors_config.programs = Some(programs.clone());
        let catalog = actors_config.gifts.catalog.clone();
        apply_catalog_changes(&catalog, dyn_store.as_ref()).await?;
        let actors = Actors::start(dyn_store.clone(), bus.clone(), actors_config)
            .await
            .context("cannot start the actor tree")?;
        seed_global_terms(&actors, dyn_store.as_ref(), &config.danmaku.blocked_terms).await?;
        tokio::spawn(pump_media_events(media_events, actors.clone()));

        let listener = tokio::net::TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("cannot listen on {} (http_addr)", config.http_addr))?;
        let http_addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let sessions = TaskTracker::new();
        let mut roles = Vec::new();
        if config.billing.enabled {
            roles.push(actors::billing::spawn(
                dyn_store.clone(),
                bus.clone(),
                config.billing(),
                shutdown.clone(),
            ));
        }
        if config.vod.enabled {
            roles.push(actors::vod::spawn(
                dyn_store.clone(),
                bus.clone(),
                shutdown.clone(),
            ));
        }
        let app = AppState {
            actors: actors.clone(),
            store: dyn_store,
            media: media.clone(),
            catalog,
            auth: Arc::new(Auth::new(&admin_key)),
            config: Arc::new(config.gateway()),
            metrics,
            shutdown: shutdown.clone(),
            sessions: sessions.clone(),
            recordings,
            recordings_root,
            url_key: gateway::url_signing_key(&admin_key),
            programs: Some(programs),
            captions,
            motion: Some(
                actors::MotionLog::start(config.data_dir.join("motion")).with_context(|| {
                    format!(
                        "cannot write avatar motion under {}",
                        config.data_dir.display()
                    )
                })?,
            ),
        };
        if let Some(addr) = config.avatar.vmc_udp_addr {
            let socket = tokio::net::UdpSocket::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (avatar.vmc_udp_addr)"))?;
            let room = config.avatar.vmc_udp_room.clone();
            let app = app.clone();
            tokio::spawn(async move {
                if let Err(error) = gateway::avatar::listen_udp(app, socket, room).await {
                    tracing::error!(%error, "VMC over UDP stopped");
                }
            });
        }
        let router = gateway::router(app);
        let stop = shutdown.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        });
        tracing::info!(%http_addr, data_dir = %config.data_dir.display(), "live-engine listening");
        Ok(Engine {
            media_addr: media.local_addr(),
            media,
            http_addr,
            admin_key,
            actors,
            store,
            shutdown,
            sessions,
            server,
            roles,
            shutdown_timeout: Duration::from_secs(config.shutdown_timeout_s),
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The bound UDP address of the media plane.
    pub fn media_addr(&self) -> SocketAddr {
        self.media_addr
    }

    pub fn admin_key(&self) -> &str {
        &self.admin_key
    }

    /// The store, for tests that read it behind the API.
    pub fn store(&self) -> &Arc<EmbeddedStore> {
        &self.store
    }

    /// The actor tree, for fault-injection tests.
    pub fn actors(&self) -> &Actors {
        &self.actors
    }

    /// The media plane, for fault-injection tests.
    pub fn media(&self) -> &sfu::MediaPlane {
        &self.media
    }

    /// Resolves if the actor tree stops on its own (a child past its
    /// restart budget): the process should exit and be restarted.
    pub async fn failed(&self) {
        self.actors.stopped().await;
    }

    /// Graceful shutdown; see the crate docs for the order.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        tracing::info!("shutting down");
        self.shutdown.cancel();
        self.sessions.close();
        if tokio::time::timeout(self.shutdown_timeout, self.sessions.wait())
            .await
            .is_err()
        {
            tracing::warn!("sessions did not close in time");
        }
        self.actors.shutdown().await;
        for role in self.roles {
            // Each stops at its next await; work in flight (a settlement,
            // a danmaku import) finishes.
            let _ = tokio::time::timeout(self.shutdown_timeout, role).await;
        }
        self.store.close().await.context("flushing the store")?;
        match tokio::time::timeout(self.shutdown_timeout, self.server).await {
            Ok(Ok(result)) => result.context("http server")?,
            Ok(Err(join)) => bail!("http server task failed: {join}"),
            Err(_) => tracing::warn!("http server did not stop in time"),
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// The configured voice if its command is installed; otherwise host lines
/// stay text, said once at start rather than at every line.
fn checked_voice(voice: Option<sfu::Voice>) -> Option<sfu::Voice> {
    let voice = voice?;
    let command = Path::new(&voice.command);
    let installed = if command.components().count() > 1 {
        command.is_file()
    } else {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(command).is_file()))
    };
    if installed {
        Some(voice)
    } else {
        tracing::warn!(command = %voice.command, "story.voice_command is not installed: host lines stay text (apt-get install espeak-ng, or set story.voice_enabled = false)");
        None
    }
}

/// Media connection changes (one per peer connecting or leaving, never per
/// packet): counted, logged, and handed to the stream actors.
async fn pump_media_events(
    mut events: tokio::sync::mpsc::UnboundedReceiver<sfu::MediaEvent>,
    actors: Actors,
) {
    let mut connected = std::collections::HashSet::new();
    while let Some(media) = events.recv().await {
        match &media.event {
            sfu::SfuEvent::Connected {
                peer, role, stream, ..
            } => {
                connected.insert(*peer);
                metrics::gauge!("live_media_peers", "role" => role_name(*role)).increment(1.0);
                tracing::info!(%peer, ?role, room = %stream.room, stream = %stream.stream, "media peer connected");
            }
            sfu::SfuEvent::Closed { peer, role, stream } => {
                if connected.remove(peer) {
                    metrics::gauge!("live_media_peers", "role" => role_name(*role)).decrement(1.0);
                }
                tracing::info!(%peer, ?role, room = %stream.room, stream = %stream.stream, "media peer closed");
            }
            // Kept on the media thread; never sent here.
            sfu::SfuEvent::Stats(_)
            | sfu::SfuEvent::Forwarded { .. }
            | sfu::SfuEvent::Ingest(_)
            | sfu::SfuEvent::RenditionKeyframeWanted(_)
            | sfu::SfuEvent::LocalKeyframeWanted(_) => continue,
        }
        if actors
            .streams()
            .cast(actors::stream::StreamSupervisorMsg::Media(media))
            .is_err()
        {
            tracing::warn!("stream supervisor unavailable; a media event was dropped");
        }
    }
}

fn role_name(role: sfu::Role) -> &'static str {
    match role {
        sfu::Role::Publisher => "publisher",
        sfu::Role::Subscriber => "subscriber",
    }
}

/// Bounds of the forwarding-latency buckets, seconds: 50 µs to 1 s.
const FORWARD_BUCKETS: [f64; 14] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0,
];

/// One recorder per process (tests may start several engines).
fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Forwarding latency as a histogram, not a summary: buckets
            // can be subtracted between two scrapes, so a benchmark (or a
            // dashboard) gets the percentiles of exactly its own window.
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("live_media_forward_seconds".to_owned()),
                    &FORWARD_BUCKETS,
                )
                .expect("bucket bounds are not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            handle
        })
        .clone()
}

/// Catalog changes made through the admin API outlive restarts: they are
/// applied over the defaults and the configuration.
async fn apply_catalog_changes(
    catalog: &actors::SharedCatalog,
    store: &dyn Store,
) -> anyhow::Result<()> {
    let entries = store
        .catalog_entries()
        .await
        .context("cannot read the gift catalog")?;
    catalog.update(|catalog| {
        for entry in entries {
            if entry.retired {
                catalog.remove(&entry.gift_id);
            } else {
                catalog.upsert(interactive::gifts::Gift {
                    id: entry.gift_id,
                    name: entry.name,
                    price: entry.price,
                    tier: entry.tier,
                    combo: entry.combo,
                });
            }
        }
    });
    Ok(())
}

/// Blocked terms from the configuration join the global list at start-up.
async fn seed_global_terms(
    actors: &Actors,
    store: &dyn Store,
    terms: &[String],
) -> anyhow::Result<()> {
    let present = store.blocked_terms(&TermScope::Global).await?;
    for term in terms.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
        if present.iter().any(|p| p == term) {
            continue;
        }
        let (term, by) = (term.to_owned(), "config".to_owned());
        ractor::call_t!(
            actors.rooms(),
            |reply| RoomSupervisorMsg::GlobalTerm {
                term,
                add: true,
                by,
                reply
            },
            10_000
        )
        .map_err(|e| anyhow::anyhow!("seeding blocked terms: {e}"))?
        .map_err(|e| anyhow::anyhow!("seeding blocked terms: {e}"))?;
    }
    Ok(())
}

/// The admin key of a data directory: read from `admin.key`, or generated,
/// saved with mode 0600, and printed once.
fn load_or_generate_admin_key(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("admin.key");
    if let Ok(key) = std::fs::read_to_string(&path) {
        let key = key.trim().to_owned();
        if key.len() >= 16 {
            return Ok(key);
        }
        bail!(
            "{} holds no valid admin key; delete it or set LIVE_ADMIN_KEY",
            path.display()
        );
    }
    let bytes: [u8; 24] = rand::random();
    let key: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private(&path, &key).with_context(|| format!("cannot write {}", path.display()))?;
    println!("Generated admin key (saved in {}): {key}", path.display());
    Ok(key)
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}
