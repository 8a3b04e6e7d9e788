//! The media plane's I/O shell: one thread that owns the UDP socket and the
//! [`Router`], and the handle the rest of the engine talks to it through.
//!
//! ```text
//!  gateway/actors ──Command──► media thread (current-thread runtime)
//!                              ├─ UdpSocket::recv_from ─► Router::handle_datagram
//!                              ├─ timer ───────────────► Router::handle_timeout
//!                              └─ Router::poll_transmit ─► UdpSocket::send_to
//!  actors ◄──SfuEvent── (one per connection change, never per packet)
//! ```
//!
//! Datagrams never cross a thread or a lock: the thread that reads the
//! socket runs the router and writes the socket. Commands (publish,
//! subscribe, remove) are per user action. One thread serves the node
//! today; the router is per thread, so more cores mean more routers with
//! streams sharded across them (next step).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::TrySendError;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::layer::LayerChoice;
use crate::meter::Meter;
use crate::program::{Program, ProgramJob, Spoken, Voice};
use crate::transcode::{FromWorker, Job, Slots, TAP_CAPACITY, Tap};
use crate::{
    IngestFrame, PeerId, Role, Router, RouterConfig, SfuError, SfuEvent, StreamInfo, StreamKey,
    Transcode, TranscodeJob,
};

/// How much one media plane takes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_peers: usize,
    pub max_subscribers_per_stream: usize,
    /// Transcoding jobs at once (each takes about a core for a 720p ladder
    /// in software).
    pub max_transcodes: usize,
}

/// A WHIP or WHEP session: the resource behind a `Location` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSession {
    /// Unguessable: 128 random bits, hex.
    pub id: String,
    pub peer: PeerId,
    pub role: Role,
    pub stream: StreamKey,
    /// The user whose token created it; only they (or an admin) may end it.
    pub owner: String,
}

/// A router event, with the session's owner when the session still exists.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaEvent {
    pub event: SfuEvent,
    pub owner: Option<String>,
}

enum Command {
    Open {
        role: Role,
        stream: StreamKey,
        offer: String,
        owner: String,
        layer: LayerChoice,
        reply: oneshot::Sender<Result<(MediaSession, String), SfuError>>,
    },
    /// Sets the layer of every subscriber session of `owner` in `room`.
    SetLayer {
        owner: String,
        room: String,
        layer: LayerChoice,
        reply: oneshot::Sender<usize>,
    },
    Close {
        session: String,
        reply: oneshot::Sender<Result<MediaSession, SfuError>>,
    },
    Find {
        session: String,
        reply: oneshot::Sender<Option<MediaSession>>,
    },
    Streams {
        room: String,
        reply: oneshot::Sender<Vec<StreamInfo>>,
    },
    /// Makes a stream's transcoder fail (fault injection).
    FailTranscode {
        stream: StreamKey,
        reply: oneshot::Sender<bool>,
    },
    /// Starts a program on `stream` (ending the one it may have).
    StartProgram {
        stream: StreamKey,
        owner: String,
        keyframe_wanted: Arc<AtomicBool>,
        reply: oneshot::Sender<Result<PeerId, SfuError>>,
    },
    /// Starts copying a stream's frames into a program's queue.
    Relay { source: StreamKey, tap: Tap },
    /// Starts copying a live stream's frames into a transcoder's queue.
    Tap {
        stream: StreamKey,
        tap: Tap,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
}

/// The handle: cheap to clone, usable from any task.
#[derive(Clone)]
pub struct MediaPlane {
    commands: mpsc::Sender<Command>,
    local_addr: SocketAddr,
    transcodes: Slots,
    /// Where transcode threads send renditions back to the media thread.
    renditions: mpsc::Sender<FromWorker>,
}

impl MediaPlane {
    /// Binds `bind` and starts the media thread. `advertised` is the
    /// address put in ICE candidates when peers reach the socket through
    /// another address (NAT, load balancer); by default the bound one.
    pub fn start(
        bind: SocketAddr,
        advertised: Option<SocketAddr>,
        limits: Limits,
    ) -> std::io::Result<(Self, mpsc::UnboundedReceiver<MediaEvent>)> {
        let socket = std::net::UdpSocket::bind(bind)?;
        socket.set_nonblocking(true)?;
        let local_addr = socket.local_addr()?;
        let candidate = advertised.unwrap_or(local_addr);
        if candidate.ip().is_unspecified() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "media_udp_addr {bind} is a wildcard: set media_advertised_addr to the address peers reach"
                ),
            ));
        }
        let (commands, rx) = mpsc::channel(256);
        let (events_tx, events) = mpsc::unbounded_channel();
        // A few frames per rendition per stream in flight; more means the
        // media thread is the bottleneck and frames are dropped, counted.
        let (renditions, renditions_rx) = mpsc::channel(1024);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("media-0".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match UdpSocket::from_std(socket) {
                        Ok(socket) => {
                            run(
                                socket,
                                Router::new(RouterConfig {
                                    max_peers: limits.max_peers,
                                    max_subscribers_per_stream: limits.max_subscribers_per_stream,
                                    ..RouterConfig::new(candidate)
                                }),
                                rx,
                                renditions_rx,
                                events_tx,
                            )
                            .await
                        }
                        Err(error) => tracing::error!(%error, "media socket unusable"),
                    }
                });
            })?;
        tracing::info!(%local_addr, %candidate, "media plane listening");
        Ok((
            Self {
                commands,
                local_addr,
                transcodes: Slots::new(limits.max_transcodes),
                renditions,
            },
            events,
        ))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// WHIP: a publisher's offer for `stream`; returns the session and the answer.
    pub async fn publish(
        &self,
        stream: StreamKey,
        offer: String,
        owner: String,
    ) -> Result<(MediaSession, String), SfuError> {
        self.open(Role::Publisher, stream, offer, owner, LayerChoice::Auto)
            .await
    }

    /// WHEP: a subscriber's offer for a live `stream`.
    pub async fn subscribe(
        &self,
        stream: StreamKey,
        offer: String,
        owner: String,
        layer: LayerChoice,
    ) -> Result<(MediaSession, String), SfuError> {
        self.open(Role::Subscriber, stream, offer, owner, layer)
            .await
    }

    /// Chooses the simulcast layer for `owner`'s subscriber sessions in
    /// `room`; returns how many sessions it applied to.
    pub async fn set_layer(
        &self,
        owner: &str,
        room: &str,
        layer: LayerChoice,
    ) -> Result<usize, SfuError> {
        let (owner, room) = (owner.to_owned(), room.to_owned());
        self.ask(|reply| Command::SetLayer {
            owner,
            room,
            layer,
            reply,
        })
        .await
    }

    async fn open(
        &self,
        role: Role,
        stream: StreamKey,
        offer: String,
        owner: String,
        layer: LayerChoice,
    ) -> Result<(MediaSession, String), SfuError> {
        self.ask(|reply| Command::Open {
            role,
            stream,
            offer,
            owner,
            layer,
            reply,
        })
        .await?
    }

    pub async fn session(&self, id: &str) -> Option<MediaSession> {
        let session = id.to_owned();
        self.ask(|reply| Command::Find { session, reply })
            .await
            .ok()
            .flatten()
    }

    /// Ends a session (`DELETE` of its resource).
    pub async fn close(&self, id: &str) -> Result<MediaSession, SfuError> {
        let session = id.to_owned();
        self.ask(|reply| Command::Close { session, reply }).await?
    }

    /// The live streams of a room.
    pub async fn streams(&self, room: &str) -> Result<Vec<StreamInfo>, SfuError> {
        let room = room.to_owned();
        self.ask(|reply| Command::Streams { room, reply }).await
    }

    /// Starts transcoding a live stream: a thread runs the job's ladder on
    /// the stream's frames until the publisher leaves (or the transcoder
    /// fails); its renditions become layers of the stream. Refused with
    /// [`SfuError::Full`] beyond `max_transcodes`.
    pub async fn transcode(&self, job: TranscodeJob) -> Result<Transcode, SfuError> {
        let slot = self.transcodes.acquire()?;
        let (frames_tx, frames) = std::sync::mpsc::sync_channel(TAP_CAPACITY);
        let keyframe_wanted = Arc::new(AtomicBool::new(false));
        let fail = Arc::new(AtomicBool::new(false));
        let tap = Tap {
            frames: frames_tx,
            keyframe_wanted: keyframe_wanted.clone(),
            fail: fail.clone(),
            resync: false,
            audio_only: false,
        };
        let stream = job.stream.clone();
        self.ask(|reply| Command::Tap { stream, tap, reply })
            .await??;
        let (events_tx, events) = mpsc::unbounded_channel();
        let name = format!("transcode-{}", job.stream.stream);
        let job = Job {
            job,
            frames,
            keyframe_wanted,
            fail,
            back: self.renditions.clone(),
            events: events_tx,
            slot,
        };
        std::thread::Builder::new()
            .name(name)
            .spawn(move || job.run())
            .map_err(|_| SfuError::Unavailable)?;
        Ok(Transcode { events })
    }

    /// Starts a room's program on `stream`: a stream the engine publishes
    /// itself, played by a thread of its own until the returned handle is
    /// dropped (see [`crate::program`]), and the host lines it speaks, as
    /// they are heard. Viewers subscribe to it like to
    /// any stream. A program already on `stream` is replaced; a WebRTC
    /// publisher there makes it [`SfuError::StreamLive`].
    pub async fn program(
        &self,
        stream: StreamKey,
        owner: String,
        voice: Option<Voice>,
        encoder: String,
    ) -> Result<(Program, mpsc::UnboundedReceiver<Spoken>), SfuError> {
        let (cues_tx, cues) = std::sync::mpsc::channel();
        let (spoken_tx, spoken) = mpsc::unbounded_channel();
        let keyframe_wanted = Arc::new(AtomicBool::new(false));
        let alive = Arc::new(AtomicBool::new(true));
        let key = stream.clone();
        let flag = keyframe_wanted.clone();
        let source = self
            .ask(|reply| Command::StartProgram {
                stream: key,
                owner,
                keyframe_wanted: flag,
                reply,
            })
            .await??;
        let job = ProgramJob {
            stream: stream.clone(),
            source,
            cues,
            voice,
            encoder,
            back: self.renditions.clone(),
            spoken: spoken_tx,
            keyframe_wanted,
            alive: alive.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name(format!("program-{}", stream.room))
            .spawn(move || job.run());
        if spawned.is_err() {
            let _ = self
                .renditions
                .send(FromWorker::ProgramEnded { stream, source })
                .await;
            return Err(SfuError::Unavailable);
        }
        let program = Program {
            cues: cues_tx,
            alive,
        };
        Ok((program, spoken))
    }

    /// A queue of `source`'s frames (from its next keyframe, and whenever
    /// it is live) for a program showing it; copying stops when the
    /// receiver is dropped.
    pub async fn relay(
        &self,
        source: StreamKey,
    ) -> Result<std::sync::mpsc::Receiver<IngestFrame>, SfuError> {
        self.copy(source, false).await
    }

    /// A queue of `source`'s sound (whenever it is live) for captions
    /// listening to it; copying stops when the receiver is dropped.
    pub async fn listen(
        &self,
        source: StreamKey,
    ) -> Result<std::sync::mpsc::Receiver<IngestFrame>, SfuError> {
        self.copy(source, true).await
    }

    async fn copy(
        &self,
        source: StreamKey,
        audio_only: bool,
    ) -> Result<std::sync::mpsc::Receiver<IngestFrame>, SfuError> {
        let (frames, queue) = std::sync::mpsc::sync_channel(TAP_CAPACITY);
        let tap = Tap {
            frames,
            keyframe_wanted: Arc::default(),
            fail: Arc::default(),
            resync: true,
            audio_only,
        };
        self.commands
            .send(Command::Relay { source, tap })
            .await
            .map_err(|_| SfuError::Unavailable)?;
        Ok(queue)
    }

    /// Fault injection for tests and drills: the stream's transcoder fails
    /// at its next frame, as a codec error would make it. Returns whether
    /// the stream had one.
    pub async fn inject_transcode_failure(&self, stream: StreamKey) -> bool {
        self.ask(|reply| Command::FailTranscode { stream, reply })
            .await
            .unwrap_or(false)
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, SfuError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| SfuError::Unavailable)?;
        answer.await.map_err(|_| SfuError::Unavailable)
    }
}

/// The media thread's loop.
async fn run(
    socket: UdpSocket,
    mut router: Router,
    mut commands: mpsc::Receiver<Command>,
    mut renditions: mpsc::Receiver<FromWorker>,
    events: mpsc::UnboundedSender<MediaEvent>,
) {
    // Peers address their datagrams to the candidate they were given (the
    // advertised address behind a NAT), and str0m matches the destination
    // against its local candidates: so that is the destination, whatever
    // address the socket is bound to.
    let destination = router.host_candidate();
    let mut sessions: HashMap<String, MediaSession> = HashMap::new();
    let mut taps: HashMap<StreamKey, Tap> = HashMap::new();
    let mut relays: HashMap<StreamKey, Vec<Tap>> = HashMap::new();
    // Each program's flag for its viewers' keyframe requests.
    let mut programs: HashMap<StreamKey, Arc<AtomicBool>> = HashMap::new();
    let mut meter = Meter::default();
    let mut buf = vec![0u8; 2048];
    loop {
        let deadline = router.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            command = commands.recv() => {
                let Some(command) = command else { break };
                match command {
                    Command::Tap { stream, tap, reply } => {
                        let tapped = router.set_tapped(&stream, true, Instant::now());
                        if tapped.is_ok() {
                            taps.insert(stream, tap);
                        }
                        let _ = reply.send(tapped);
                    }
                    Command::StartProgram { stream, owner, keyframe_wanted, reply } => {
                        programs.insert(stream.clone(), keyframe_wanted);
                        let _ = reply.send(start_program(&mut router, &mut sessions, stream, owner));
                    }
                    Command::Relay { source, tap } => {
                        router.set_copied(&source, true, Instant::now());
                        relays.entry(source).or_default().push(tap);
                    }
                    Command::FailTranscode { stream, reply } => {
                        let tap = taps.get(&stream);
                        if let Some(tap) = tap {
                            tap.fail.store(true, Ordering::Relaxed);
                        }
                        let _ = reply.send(tap.is_some());
                    }
                    command => handle(command, &mut router, &mut sessions),
                }
            }
            Some(message) = renditions.recv() => match message {
                FromWorker::Opened { stream, renditions, source_height } => {
                    router.set_renditions(&stream, renditions, source_height);
                }
                FromWorker::Frame { stream, rendition, data, keyframe, time } => {
                    router.push_rendition(&stream, rendition, &data, keyframe, time, Instant::now());
                }
                FromWorker::Program(frame) => router.push_local(frame, Instant::now()),
                FromWorker::SourceKeyframe(source) => {
                    router.request_source_keyframe(&source, Instant::now());
                }
                FromWorker::ProgramEnded { stream, source } => {
                    router.end_local(&stream, source, Instant::now());
                }
            },
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, source)) => {
                    if !router.handle_datagram(Instant::now(), source, destination, &buf[..n]) {
                        // Noise, scans, or packets for a peer already gone.
                        metrics::counter!("live_media_ignored_datagrams_total").increment(1);
                    }
                }
                Err(error) => tracing::debug!(%error, "media socket read failed"),
            },
            _ = sleep_until(deadline) => router.handle_timeout(Instant::now()),
        }
        while let Some(transmit) = router.poll_transmit() {
            if let Err(error) = socket
                .send_to(&transmit.contents, transmit.destination)
                .await
            {
                tracing::debug!(%error, destination = %transmit.destination, "media send failed");
            }
        }
        while let Some(event) = router.poll_event() {
            let event = match event {
                SfuEvent::Ingest(frame) => {
                    feed_relays(&mut relays, &mut router, &frame);
                    feed_tap(&mut taps, &mut router, frame);
                    continue;
                }
                event => event,
            };
            let peer = match &event {
                SfuEvent::Connected { peer, .. } | SfuEvent::Closed { peer, .. } => *peer,
                // Counters stay in this thread: they become metrics here
                // and never cost the actors a message.
                SfuEvent::Stats(stats) => {
                    meter.track(stats);
                    continue;
                }
                SfuEvent::Forwarded { received } => {
                    // After the sends above: receive -> last copy sent.
                    meter.forwarded(received.elapsed());
                    continue;
                }
                SfuEvent::Ingest(_) => unreachable!("taken above"),
                SfuEvent::RenditionKeyframeWanted(stream) => {
                    if let Some(tap) = taps.get(stream) {
                        tap.keyframe_wanted.store(true, Ordering::Relaxed);
                    }
                    continue;
                }
                SfuEvent::LocalKeyframeWanted(stream) => {
                    if let Some(wanted) = programs.get(stream) {
                        wanted.store(true, Ordering::Relaxed);
                    }
                    continue;
                }
            };
            if let SfuEvent::Closed { role, stream, .. } = &event {
                meter.forget(peer);
                if *role == Role::Publisher {
                    // Its transcoder sees the queue close and finishes.
                    taps.remove(stream);
                    programs.remove(stream);
                }
            }
            let owner = sessions
                .values()
                .find(|s| s.peer == peer)
                .map(|s| s.owner.clone());
            if let SfuEvent::Closed { .. } = &event {
                sessions.retain(|_, s| s.peer != peer);
            }
            let _ = events.send(MediaEvent { event, owner });
        }
    }
}

/// Hands a frame to its stream's transcoder (see [`feed`]); a transcoder
/// that ended stops the copying.
fn feed_tap(taps: &mut HashMap<StreamKey, Tap>, router: &mut Router, frame: IngestFrame) {
    let Some(tap) = taps.get_mut(&frame.stream) else {
        return;
    };
    let stream = frame.stream.clone();
    if !feed(tap, router, frame, "live_transcode_frames_total") {
        // The transcoder ended (it failed): stop copying.
        taps.remove(&stream);
        let _ = router.set_tapped(&stream, false, Instant::now());
    }
}

/// Hands a frame to the programs showing its stream and the captions
/// listening to it (see [`feed`]); those gone stop being fed, and the last
/// one stops the copying.
fn feed_relays(
    relays: &mut HashMap<StreamKey, Vec<Tap>>,
    router: &mut Router,
    frame: &IngestFrame,
) {
    let Some(taps) = relays.get_mut(&frame.stream) else {
        return;
    };
    taps.retain_mut(|tap| {
        let counter = if tap.audio_only {
            "live_caption_relay_frames_total"
        } else {
            "live_program_relay_frames_total"
        };
        feed(tap, router, frame.clone(), counter)
    });
    if taps.is_empty() {
        relays.remove(&frame.stream);
        router.set_copied(&frame.stream, false, Instant::now());
    }
}

/// Hands a frame to a queue without ever waiting: a full queue drops the
/// frame (counted in `counter` by stage), and video then waits for the next keyframe, which is
/// asked of the publisher, so the reader never decodes a frame whose
/// reference it lost. False when the reader is gone.
fn feed(tap: &mut Tap, router: &mut Router, frame: IngestFrame, counter: &'static str) -> bool {
    let video = frame.kind == str0m::media::MediaKind::Video;
    if video && tap.audio_only {
        return true;
    }
    if video && !frame.contiguous {
        // Packets were lost: this frame and those after it may refer to
        // what is missing. The router already asked for a keyframe.
        metrics::counter!(counter, "stage" => "incomplete").increment(1);
        tap.resync = true;
        return true;
    }
    if video && tap.resync {
        if !frame.keyframe {
            metrics::counter!(counter, "stage" => "dropped").increment(1);
            return true;
        }
        tap.resync = false;
    }
    match tap.frames.try_send(frame) {
        Ok(()) => true,
        Err(TrySendError::Full(frame)) => {
            metrics::counter!(counter, "stage" => "dropped").increment(1);
            if video {
                tap.resync = true;
                router.request_source_keyframe(&frame.stream, Instant::now());
            }
            true
        }
        Err(TrySendError::Disconnected(_)) => false,
    }
}

/// A program on `stream` (ending the one it may have), with a session like
/// a publisher's: its owner is who the stream's events name.
fn start_program(
    router: &mut Router,
    sessions: &mut HashMap<String, MediaSession>,
    stream: StreamKey,
    owner: String,
) -> Result<PeerId, SfuError> {
    let now = Instant::now();
    if let Some(old) = router.local_source(&stream) {
        router.end_local(&stream, old, now);
    }
    router.publish_local(stream.clone()).inspect(|&peer| {
        let id = session_id();
        let session = MediaSession {
            id: id.clone(),
            peer,
            role: Role::Publisher,
            stream,
            owner,
        };
        sessions.insert(id, session);
    })
}

/// Unguessable: 128 random bits, hex.
fn session_id() -> String {
    let id: [u8; 16] = rand::random();
    id.iter().map(|b| format!("{b:02x}")).collect()
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn handle(command: Command, router: &mut Router, sessions: &mut HashMap<String, MediaSession>) {
    let now = Instant::now();
    match command {
        Command::Open {
            role,
            stream,
            offer,
            owner,
            layer,
            reply,
        } => {
            let opened = match role {
                Role::Publisher => router.publish(stream.clone(), &offer, now),
                Role::Subscriber => router.subscribe(stream.clone(), &offer, layer, now),
            };
            let result = opened.map(|(peer, answer)| {
                let id = session_id();
                let session = MediaSession {
                    id: id.clone(),
                    peer,
                    role,
                    stream,
                    owner,
                };
                sessions.insert(id, session.clone());
                (session, answer)
            });
            let _ = reply.send(result);
        }
        // Handled by the run loop, which keeps the programs' flags.
        Command::StartProgram { reply, .. } => {
            let _ = reply.send(Err(SfuError::Unavailable));
        }
        Command::Close { session, reply } => {
            let result = match sessions.remove(&session) {
                Some(found) => router.remove(found.peer, now).map(|()| found),
                None => Err(SfuError::UnknownPeer),
            };
            let _ = reply.send(result);
        }
        Command::SetLayer {
            owner,
            room,
            layer,
            reply,
        } => {
            let peers: Vec<PeerId> = sessions
                .values()
                .filter(|s| s.role == Role::Subscriber && s.owner == owner && s.stream.room == room)
                .map(|s| s.peer)
                .collect();
            let applied = peers
                .into_iter()
                .filter(|peer| router.set_layer(*peer, layer, now).is_ok())
                .count();
            let _ = reply.send(applied);
        }
        Command::Find { session, reply } => {
            let _ = reply.send(sessions.get(&session).cloned());
        }
        Command::Streams { room, reply } => {
            let mut streams = router.streams_in(&room);
            for info in &mut streams {
                if let Some(session) = sessions.values().find(|s| {
                    s.role == Role::Publisher
                        && s.stream.room == room
                        && s.stream.stream == info.stream
                }) {
                    info.publisher.clone_from(&session.owner);
                }
            }
            let _ = reply.send(streams);
        }
        // Handled by the run loop, which owns the taps.
        Command::Tap { reply, .. } => {
            let _ = reply.send(Err(SfuError::Unavailable));
        }
        Command::FailTranscode { reply, .. } => {
            let _ = reply.send(false);
        }
        Command::Relay { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use str0m::format::Codec;
    use str0m::media::MediaKind;

    use super::*;

    fn frame(kind: MediaKind, keyframe: bool) -> IngestFrame {
        IngestFrame {
            stream: StreamKey::new("r1", "main"),
            kind,
            codec: if kind == MediaKind::Video {
                Codec::Vp8
            } else {
                Codec::Opus
            },
            data: Arc::from(&[1u8, 2, 3][..]),
            keyframe,
            time: 0,
            received: Instant::now(),
            contiguous: true,
        }
    }

    #[test]
    fn a_transcoder_that_falls_behind_loses_frames_until_the_next_keyframe() {
        let mut router = Router::new(RouterConfig::new("192.0.2.1:5000".parse().unwrap()));
        let (sender, queue) = std::sync::mpsc::sync_channel(3);
        let mut taps = HashMap::new();
        let stream = StreamKey::new("r1", "main");
        taps.insert(
            stream.clone(),
            Tap {
                frames: sender,
                keyframe_wanted: Arc::default(),
                fail: Arc::default(),
                resync: false,
                audio_only: false,
            },
        );
        let video = |keyframe| frame(MediaKind::Video, keyframe);
        feed_tap(&mut taps, &mut router, video(true));
        feed_tap(&mut taps, &mut router, video(false));
        feed_tap(&mut taps, &mut router, video(false));
        // Full: dropped, and video now waits for a keyframe.
        feed_tap(&mut taps, &mut router, video(false));
        assert!(taps[&stream].resync);
        assert_eq!(
            queue.try_iter().count(),
            3,
            "the queue never grows past its bound"
        );
        feed_tap(&mut taps, &mut router, video(false));
        feed_tap(&mut taps, &mut router, frame(MediaKind::Audio, false));
        feed_tap(&mut taps, &mut router, video(true));
        feed_tap(&mut taps, &mut router, video(false));
        let kept: Vec<(MediaKind, bool)> = queue.try_iter().map(|f| (f.kind, f.keyframe)).collect();
        assert_eq!(
            kept,
            [
                (MediaKind::Audio, false),
                (MediaKind::Video, true),
                (MediaKind::Video, false)
            ],
            "the delta after the loss is skipped; audio and the next keyframe go on"
        );
        assert!(!taps[&stream].resync);
        // A frame with lost packets: skipped, and so is what follows it
        // until a keyframe.
        let incomplete = IngestFrame {
            contiguous: false,
            ..video(false)
        };
        feed_tap(&mut taps, &mut router, incomplete);
        feed_tap(&mut taps, &mut router, video(false));
        assert_eq!(queue.try_iter().count(), 0);
        feed_tap(&mut taps, &mut router, video(true));
        assert_eq!(queue.try_iter().count(), 1);
        // The transcoder is gone: the tap goes with it.
        drop(queue);
        feed_tap(&mut taps, &mut router, video(true));
        assert!(taps.is_empty());
    }
}
