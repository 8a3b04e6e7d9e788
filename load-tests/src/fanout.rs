//! The `sfu-fanout` scenario: one source, N subscribers, one SFU: the
//! engine (a WHIP publisher, WHEP subscribers) or Janus's streaming plugin
//! (a mountpoint fed over RTP by the caller, viewers through its HTTP API),
//! measured the same way at the subscribers.
//!
//! ```text
//!   source ready (engine: room, tokens, publisher connected)
//!   -> subscribers join (bounded concurrency), join time taken from the
//!      first request to the first whole frame -> settle
//!   -> snapshot (subscribers, server CPU, engine counters) -> --duration
//!   -> snapshot -> close everything -> report
//! ```
//!
//! Received bitrate, packets, loss and jitter come from the subscribers
//! themselves (the same webrtc-rs receiver for both SFUs); CPU from /proc;
//! the engine alone adds its outgoing packets/s and forwarding latency from
//! /metrics (`live_media_packets_total{direction="out"}`,
//! `live_media_forward_seconds`). Every wait has a deadline.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use codec::VideoEncoderConfig;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::admin::{Admin, counter_deltas, parse_buckets, parse_counters, window_quantile};
use crate::cli::{FanoutArgs, Target};
use crate::peers::janus::JanusViewer;
use crate::proc_stats::{ProcReader, ProcSample};
use crate::report::Latency;
use crate::rtc::{
    Endpoint, PublishOptions, Publisher, Subscriber, SubscriberStats, delete_session,
};
use crate::scenario::note;

/// How long the publisher gets to connect.
const CONNECT: Duration = Duration::from_secs(15);
/// The engine's forwarding-latency histogram.
const FORWARD_METRIC: &str = "live_media_forward_seconds";
/// How long a serial join waits for its first frame before the next.
const FIRST_FRAME: Duration = Duration::from_secs(10);
/// After the last join, before measuring: first frames land, rates settle.
const SETTLE: Duration = Duration::from_secs(3);

/// The SFU under test, and how to reach it.
pub enum Sfu<'a> {
    /// The engine: the runner publishes over WHIP (webrtc-rs, a live
    /// encoder) and subscribers watch over WHEP; its /metrics add the
    /// outgoing packets and the forwarding latency.
    Engine(&'a Target),
    /// Janus's streaming plugin: a mountpoint the caller feeds over RTP,
    /// watched through Janus's HTTP API.
    Janus {
        base: &'a str,
        mountpoint: u64,
        pid: Option<u32>,
    },
}

#[derive(Debug, Serialize)]
pub struct FanoutReport {
    pub scenario: &'static str,
    /// `engine` or `janus`.
    pub sfu: &'static str,
    pub url: String,
    pub config: FanoutConfig,
    /// The engine's WHIP publisher (a Janus mountpoint is fed by ffmpeg,
    /// which reports nothing).
    pub publisher: Option<PublisherReport>,
    pub subscribers: SubscribersReport,
    pub server: ServerMedia,
    /// The load generator's CPU over the window: near its core count × 100 %
    /// means the subscribers, not the server, were the limit.
    pub generator_cpu_percent: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct FanoutConfig {
    pub subscribers: u32,
    pub codec: String,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub video_kbps: u32,
    pub window_s: f64,
}

#[derive(Debug, Serialize)]
pub struct PublisherReport {
    pub frames: u64,
    pub keyframes: u64,
    pub keyframe_requests: u64,
    /// Encoded video bitrate over the window, kbit/s.
    pub video_kbps: f64,
}

#[derive(Debug, Serialize)]
pub struct SubscribersReport {
    pub joined: u64,
    pub failed: Vec<String>,
    /// Join start (WHEP POST, or Janus `create`) -> first whole video
    /// frame, ms.
    pub join_to_first_frame_ms: Latency,
    /// Where the join's time goes: start -> signalled (offer and answer
    /// exchanged), signalled -> connected (ICE, DTLS), connected -> first
    /// video packet (the SFU's keyframe request, the publisher's
    /// keyframe), first packet -> first whole frame.
    pub signalling_ms: Latency,
    pub signalled_to_connected_ms: Latency,
    pub connected_to_first_packet_ms: Latency,
    pub first_packet_to_first_frame_ms: Latency,
    /// Received video payload per subscriber over the window, kbit/s.
    pub kbps_min: f64,
    pub kbps_median: f64,
    pub kbps_max: f64,
    /// RTP packets (video and audio) all subscribers received per second.
    pub packets_per_s: f64,
    /// Lost / (received + lost) video packets, over all subscribers.
    pub loss_ratio: f64,
    pub loss_ratio_worst: f64,
    pub jitter_ms_median: f64,
    pub jitter_ms_max: f64,
    /// Subscribers that decode (a sample: decoding all would measure the
    /// generator): frames decoded, errors, and the decoded size.
    pub decoded_frames: u64,
    pub decode_errors: u64,
    pub decoded_size: Option<(u32, u32)>,
}

/// Below this loss a subscriber count counts as sustained.
pub const SUSTAINED_LOSS: f64 = 0.005;

#[derive(Debug, Serialize)]
pub struct ServerMedia {
    pub cpu_percent: Option<f64>,
    pub rss_kb: Option<u64>,
    /// CPU (percent of a core) per subscriber.
    pub cpu_percent_per_subscriber: Option<f64>,
    /// Subscribers one core would carry at this load, when the loss stayed
    /// under [`SUSTAINED_LOSS`] (subscribers ÷ cores used).
    pub subscribers_per_core: Option<f64>,
    /// Packets the subscribers received per second ÷ cores used: the
    /// same figure for either SFU, measured at the receivers.
    pub received_packets_per_s_per_core: Option<f64>,
    /// The engine's own counters (none for Janus): packets and bits sent
    /// per second, and receive -> last copy sent per frame (histogram
    /// buckets over the window, interpolated).
    pub out_packets_per_s: Option<f64>,
    pub out_packets_per_s_per_core: Option<f64>,
    pub out_mbps: Option<f64>,
    pub forward_ms_p50: Option<f64>,
    pub forward_ms_p99: Option<f64>,
}

/// A subscriber of either SFU; both are the same webrtc-rs receiver.
enum Viewer {
    Whep(Subscriber),
    Janus(JanusViewer),
}

impl Viewer {
    fn stats(&self) -> &Arc<SubscriberStats> {
        match self {
            Self::Whep(s) => s.stats(),
            Self::Janus(j) => j.stats(),
        }
    }

    async fn close(self) {
        match self {
            Self::Whep(s) => s.close().await,
            Self::Janus(j) => j.close().await,
        }
    }
}

/// What feeds the SFU and how a viewer joins it.
enum Source {
    Engine {
        admin: Admin,
        whep_path: String,
        whip_path: String,
        subscribe_token: String,
        publish_token: String,
        publisher: Publisher,
    },
    Janus {
        http: reqwest::Client,
        base: String,
        mountpoint: u64,
    },
}

impl Source {
    async fn join(&self, decode: bool) -> anyhow::Result<Viewer> {
        match self {
            Self::Engine {
                admin,
                whep_path,
                subscribe_token,
                ..
            } => {
                let endpoint = Endpoint {
                    http: admin.http(),
                    base: admin.base(),
                    path: whep_path,
                    token: subscribe_token,
                };
                Ok(Viewer::Whep(Subscriber::start(&endpoint, decode).await?))
            }
            Self::Janus {
                http,
                base,
                mountpoint,
            } => Ok(Viewer::Janus(
                JanusViewer::join(http, base, *mountpoint, decode).await?,
            )),
        }
    }

    fn publisher(&self) -> Option<&Publisher> {
        match self {
            Self::Engine { publisher, .. } => Some(publisher),
            Self::Janus { .. } => None,
        }
    }

    fn admin(&self) -> Option<&Admin> {
        match self {
            Self::Engine { admin, .. } => Some(admin),
            Self::Janus { .. } => None,
        }
    }

    async fn close(self) {
        if let Self::Engine {
            admin,
            whip_path,
            publish_token,
            publisher,
            ..
        } = self
        {
            let whip = Endpoint {
                http: admin.http(),
                base: admin.base(),
                path: &whip_path,
                token: &publish_token,
            };
            let _ = delete_session(&whip, publisher.location()).await;
            publisher.close().await;
        }
    }
}

/// How a subscriber joined: when it began, when signalling was done
/// (offer and answer exchanged), whether it decodes.
struct Joined {
    started: Instant,
    signalled: Instant,
    decode: bool,
}

/// Per subscriber: video bytes, video packets, video packets lost, audio
/// packets.
type Counts = (u64, u64, u64, u64);

struct Snapshot {
    at: Instant,
    per_subscriber: Vec<Counts>,
    /// The WHIP publisher's video bytes and frames.
    publisher: Option<(u64, u64)>,
    server: Option<ProcSample>,
    generator: Option<ProcSample>,
    counters: std::collections::BTreeMap<String, f64>,
    /// `live_media_forward_seconds` buckets.
    forward: Vec<(f64, f64)>,
}

pub async fn run(sfu: Sfu<'_>, args: &FanoutArgs) -> anyhow::Result<FanoutReport> {
    let (source, url, server) = match sfu {
        Sfu::Engine(target) => (
            engine_source(target, args).await?,
            target.url.clone(),
            target.engine_pid,
        ),
        Sfu::Janus {
            base,
            mountpoint,
            pid,
        } => (
            Source::Janus {
                http: reqwest::Client::new(),
                base: base.to_owned(),
                mountpoint,
            },
            base.to_owned(),
            pid,
        ),
    };
    let server = server.map(ProcReader::new).transpose()?;
    let generator = ProcReader::new(std::process::id()).ok();
    note(&format!(
        "{}: {} subscribers joining, {} at a time",
        sfu_name(&source),
        args.subscribers,
        args.join_concurrency
    ));
    let joins = futures_util::stream::iter(0..args.subscribers)
        .map(|index| {
            let decode = index < args.decoders;
            let source = &source;
            async move {
                let started = Instant::now();
                let viewer = source.join(decode).await;
                let signalled = Instant::now();
                if let (Ok(viewer), true) = (&viewer, args.serial_joins) {
                    let stats = viewer.stats();
                    let _ = crate::rtc::wait_for(|| stats.first_frame_at().is_some(), FIRST_FRAME)
                        .await;
                }
                let joined = Joined {
                    started,
                    signalled,
                    decode,
                };
                (joined, viewer)
            }
        })
        .buffer_unordered(if args.serial_joins {
            1
        } else {
            usize::from(args.join_concurrency)
        })
        .collect::<Vec<_>>()
        .await;
    let mut viewers = Vec::new();
    let mut failed = Vec::new();
    for (join, joined) in joins {
        match joined {
            Ok(viewer) => viewers.push((join, viewer)),
            Err(error) => failed.push(format!("{error:#}")),
        }
    }
    note(&format!(
        "{} joined, {} failed; settling {SETTLE:?}",
        viewers.len(),
        failed.len()
    ));
    tokio::time::sleep(SETTLE).await;

    let before = snapshot(&source, &viewers, &server, &generator).await;
    let mut left = args.duration;
    while !left.is_zero() {
        let step = left.min(Duration::from_secs(5));
        tokio::time::sleep(step).await;
        left -= step;
        let received: u64 = viewers
            .iter()
            .map(|(_, v)| SubscriberStats::get(&v.stats().video_packets))
            .sum();
        note(&format!(
            "{:.0}s left, {received} video packets received in all",
            left.as_secs_f64()
        ));
    }
    let after = snapshot(&source, &viewers, &server, &generator).await;
    let report = build_report(&url, &source, args, &viewers, failed, &before, &after);
    for (_, viewer) in viewers {
        viewer.close().await;
    }
    source.close().await;
    Ok(report)
}

fn sfu_name(source: &Source) -> &'static str {
    match source {
        Source::Engine { .. } => "engine",
        Source::Janus { .. } => "janus",
    }
}

/// Room, tokens and a connected WHIP publisher on the engine.
async fn engine_source(target: &Target, args: &FanoutArgs) -> anyhow::Result<Source> {
    let admin = Admin::new(&target.url, &target.admin_key)?;
    admin.health().await?;
    admin.ensure_room(&args.room).await?;
    let publish_token = admin
        .mint("fanout-publisher", "publisher", &args.room, &["publish"])
        .await?;
    let subscribe_token = admin
        .mint("fanout-viewer", "viewer", &args.room, &["subscribe"])
        .await?;
    let stream = format!("fanout-{:x}", crate::wire::unix_nanos() & 0xffff_ffff);
    let whip_path = format!("/whip/{}/{stream}", args.room);
    let whip = Endpoint {
        http: admin.http(),
        base: admin.base(),
        path: &whip_path,
        token: &publish_token,
    };
    let options = PublishOptions {
        video: VideoEncoderConfig {
            codec: args.codec.into(),
            width: args.width,
            height: args.height,
            fps: args.fps,
            bitrate_bps: args.video_kbps * 1000,
            keyframe_interval: args.fps * 4,
        },
        audio_bitrate_bps: 48_000,
        speech: None,
    };
    let publisher = Publisher::start(&whip, options).await?;
    let connected = crate::rtc::wait_for(|| publisher.stats().connected(), CONNECT).await;
    if connected.is_err() {
        publisher.close().await;
        bail!("the publisher did not connect within {CONNECT:?}");
    }
    note(&format!(
        "publishing {}x{} {:?} at {} kbit/s",
        args.width, args.height, args.codec, args.video_kbps
    ));
    Ok(Source::Engine {
        admin,
        whep_path: format!("/whep/{}/{stream}", args.room),
        whip_path,
        subscribe_token,
        publish_token,
        publisher,
    })
}

async fn snapshot(
    source: &Source,
    viewers: &[(Joined, Viewer)],
    server: &Option<ProcReader>,
    generator: &Option<ProcReader>,
) -> Snapshot {
    let get = SubscriberStats::get;
    let metrics = match source.admin() {
        Some(admin) => admin.metrics().await.unwrap_or_default(),
        None => String::new(),
    };
    Snapshot {
        at: Instant::now(),
        per_subscriber: viewers
            .iter()
            .map(|(_, v)| {
                let s = v.stats();
                (
                    get(&s.video_bytes),
                    get(&s.video_packets),
                    get(&s.video_packets_lost),
                    get(&s.audio_packets),
                )
            })
            .collect(),
        publisher: source.publisher().map(|p| {
            let p = p.stats();
            (get(&p.video_bytes), get(&p.video_frames))
        }),
        server: server.as_ref().and_then(|e| e.sample().ok()),
        generator: generator.as_ref().and_then(|g| g.sample().ok()),
        counters: parse_counters(&metrics),
        forward: parse_buckets(&metrics, FORWARD_METRIC),
    }
}

fn build_report(
    url: &str,
    source: &Source,
    args: &FanoutArgs,
    viewers: &[(Joined, Viewer)],
    failed: Vec<String>,
    before: &Snapshot,
    after: &Snapshot,
) -> FanoutReport {
    let window = after.at.duration_since(before.at).as_secs_f64().max(1e-9);
    let get = SubscriberStats::get;

    let histogram = || Histogram::<u64>::new(3).expect("valid histogram precision");
    let (mut join, mut signal, mut connect, mut first_packet, mut assemble) = (
        histogram(),
        histogram(),
        histogram(),
        histogram(),
        histogram(),
    );
    let span = |h: &mut Histogram<u64>, from: Option<Instant>, to: Option<Instant>| {
        if let (Some(from), Some(to)) = (from, to) {
            let _ = h.record(to.saturating_duration_since(from).as_micros() as u64);
        }
    };
    let mut kbps = Vec::new();
    let (mut received, mut lost, mut worst, mut packets) = (0u64, 0u64, 0f64, 0u64);
    let mut jitter_ms = Vec::new();
    let (mut decoded, mut decode_errors, mut decoded_size) = (0, 0, None);
    for (index, (joined, viewer)) in viewers.iter().enumerate() {
        let stats = viewer.stats();
        let (connected, packet, frame) = (
            stats.connected_at(),
            stats.first_packet_at(),
            stats.first_frame_at(),
        );
        span(&mut join, Some(joined.started), frame);
        span(&mut signal, Some(joined.started), Some(joined.signalled));
        span(&mut connect, Some(joined.signalled), connected);
        span(&mut first_packet, connected, packet);
        span(&mut assemble, packet, frame);
        let (bytes0, packets0, lost0, audio0) = before.per_subscriber[index];
        let (bytes1, packets1, lost1, audio1) = after.per_subscriber[index];
        kbps.push((bytes1 - bytes0) as f64 * 8.0 / window / 1000.0);
        let (got, missing) = (packets1 - packets0, lost1 - lost0);
        received += got;
        lost += missing;
        packets += got + (audio1 - audio0);
        if got + missing > 0 {
            worst = worst.max(missing as f64 / (got + missing) as f64);
        }
        jitter_ms.push(get(&stats.video_jitter_us) as f64 / 1000.0);
        if joined.decode {
            decoded += get(&stats.decoded_frames);
            decode_errors += get(&stats.decode_errors);
            decoded_size = Some(stats.dimensions());
        }
    }
    kbps.sort_by(f64::total_cmp);
    jitter_ms.sort_by(f64::total_cmp);
    let median = |v: &[f64]| v.get(v.len() / 2).copied().unwrap_or(0.0);
    let loss_ratio = if received + lost == 0 {
        0.0
    } else {
        lost as f64 / (received + lost) as f64
    };
    let packets_per_s = packets as f64 / window;

    let cpu_percent = match (&before.server, &after.server) {
        (Some(b), Some(a)) => Some(a.cpu_percent_since(b)),
        _ => None,
    };
    // Per core only where the server did measurable work.
    let cores = cpu_percent.filter(|cpu| *cpu > 1.0).map(|cpu| cpu / 100.0);
    let joined = viewers.len() as f64;
    let engine = source.admin().map(|_| {
        let deltas = counter_deltas(&before.counters, &after.counters);
        let sum_out = |name: &str| -> f64 {
            deltas
                .iter()
                .filter(|(series, _)| {
                    series.starts_with(name) && series.contains("direction=\"out\"")
                })
                .map(|(_, value)| value)
                .sum()
        };
        let quantile = |q: f64| {
            window_quantile(&before.forward, &after.forward, q).map(|seconds| seconds * 1000.0)
        };
        let out_packets_per_s = sum_out("live_media_packets_total") / window;
        (
            out_packets_per_s,
            sum_out("live_media_bytes_total") * 8.0 / window / 1e6,
            quantile(0.5),
            quantile(0.99),
        )
    });
    let publisher = source.publisher().map(|p| {
        let stats = p.stats();
        let (bytes0, bytes1) = (
            before.publisher.map_or(0, |p| p.0),
            after.publisher.map_or(0, |p| p.0),
        );
        PublisherReport {
            frames: get(&stats.video_frames),
            keyframes: get(&stats.keyframes),
            keyframe_requests: get(&stats.keyframe_requests),
            video_kbps: (bytes1 - bytes0) as f64 * 8.0 / window / 1000.0,
        }
    });
    FanoutReport {
        scenario: "sfu-fanout",
        sfu: sfu_name(source),
        url: url.to_owned(),
        config: FanoutConfig {
            subscribers: args.subscribers,
            codec: format!("{:?}", args.codec),
            width: args.width,
            height: args.height,
            fps: args.fps,
            video_kbps: args.video_kbps,
            window_s: window,
        },
        publisher,
        subscribers: SubscribersReport {
            joined: viewers.len() as u64,
            failed,
            join_to_first_frame_ms: Latency::from_us(&join),
            signalling_ms: Latency::from_us(&signal),
            signalled_to_connected_ms: Latency::from_us(&connect),
            connected_to_first_packet_ms: Latency::from_us(&first_packet),
            first_packet_to_first_frame_ms: Latency::from_us(&assemble),
            kbps_min: kbps.first().copied().unwrap_or(0.0),
            kbps_median: median(&kbps),
            kbps_max: kbps.last().copied().unwrap_or(0.0),
            packets_per_s,
            loss_ratio,
            loss_ratio_worst: worst,
            jitter_ms_median: median(&jitter_ms),
            jitter_ms_max: jitter_ms.last().copied().unwrap_or(0.0),
            decoded_frames: decoded,
            decode_errors,
            decoded_size,
        },
        server: ServerMedia {
            cpu_percent,
            rss_kb: after.server.map(|s| s.rss_kb),
            cpu_percent_per_subscriber: cpu_percent
                .filter(|_| joined > 0.0)
                .map(|cpu| cpu / joined),
            subscribers_per_core: cores
                .filter(|_| loss_ratio < SUSTAINED_LOSS && joined > 0.0)
                .map(|cores| joined / cores),
            received_packets_per_s_per_core: cores.map(|cores| packets_per_s / cores),
            out_packets_per_s: engine.map(|e| e.0),
            out_packets_per_s_per_core: engine.and_then(|e| cores.map(|cores| e.0 / cores)),
            out_mbps: engine.map(|e| e.1),
            forward_ms_p50: engine.and_then(|e| e.2),
            forward_ms_p99: engine.and_then(|e| e.3),
        },
        generator_cpu_percent: match (&before.generator, &after.generator) {
            (Some(b), Some(a)) => Some(a.cpu_percent_since(b)),
            _ => None,
        },
    }
}

impl FanoutReport {
    pub fn render(&self) -> String {
        let (c, s, e) = (&self.config, &self.subscribers, &self.server);
        let opt =
            |v: Option<f64>, unit: &str| v.map_or("n/a".to_owned(), |v| format!("{v:.1}{unit}"));
        let mut out = String::new();
        let _ = writeln!(
            out,
            "sfu-fanout ({})  {} subscribers  {} {}x{}@{} {} kbit/s  window {:.1}s  {}",
            self.sfu,
            c.subscribers,
            c.codec,
            c.width,
            c.height,
            c.fps,
            c.video_kbps,
            c.window_s,
            self.url
        );
        if let Some(p) = &self.publisher {
            let _ = writeln!(
                out,
                "  publisher    {:.0} kbit/s video, {} frames, {} keyframes, {} keyframe requests",
                p.video_kbps, p.frames, p.keyframes, p.keyframe_requests
            );
        }
        let _ = writeln!(
            out,
            "  subscribers  {} joined, {} failed; join -> first frame ms: {}",
            s.joined,
            s.failed.len(),
            s.join_to_first_frame_ms.line()
        );
        let _ = writeln!(
            out,
            "  join p50     {:.0} ms signalling, {:.0} ms connecting, {:.0} ms to the first packet, {:.0} ms to the first frame",
            s.signalling_ms.p50,
            s.signalled_to_connected_ms.p50,
            s.connected_to_first_packet_ms.p50,
            s.first_packet_to_first_frame_ms.p50
        );
        let _ = writeln!(
            out,
            "  received     kbit/s min {:.0} median {:.0} max {:.0}; {:.0} packets/s; loss {:.4} (worst {:.4}); jitter ms median {:.2} max {:.2}",
            s.kbps_min,
            s.kbps_median,
            s.kbps_max,
            s.packets_per_s,
            s.loss_ratio,
            s.loss_ratio_worst,
            s.jitter_ms_median,
            s.jitter_ms_max
        );
        let _ = writeln!(
            out,
            "  decoded      {} frames, {} errors, size {:?}",
            s.decoded_frames, s.decode_errors, s.decoded_size
        );
        let _ = writeln!(
            out,
            "  server       CPU {} ({} per subscriber); {} subscribers per core; {} received packets/s per core",
            opt(e.cpu_percent, "%"),
            opt(e.cpu_percent_per_subscriber, "%"),
            opt(e.subscribers_per_core, ""),
            opt(e.received_packets_per_s_per_core, ""),
        );
        if let Some(out_packets) = e.out_packets_per_s {
            let _ = writeln!(
                out,
                "  engine       out {out_packets:.0} packets/s ({} per core), {} Mbit/s; forward p50 {} p99 {}",
                opt(e.out_packets_per_s_per_core, ""),
                opt(e.out_mbps, ""),
                opt(e.forward_ms_p50, " ms"),
                opt(e.forward_ms_p99, " ms"),
            );
        }
        let _ = writeln!(
            out,
            "  generator    CPU {}",
            opt(self.generator_cpu_percent, "%")
        );
        for reason in s.failed.iter().take(3) {
            let _ = writeln!(out, "  failed join: {reason}");
        }
        out
    }
}
