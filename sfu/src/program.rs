//! A room's program: a stream the engine publishes itself, playing clips
//! and speaking host lines, that viewers watch through one WHEP session
//! for a whole event while what it shows changes under them.
//!
//! ```text
//!  owner (RoomActor) ──Cue (play clip, hold, say)──► program thread
//!                                                     ├─ ClipReader: H.264 access units as they are
//!                                                     ├─ clip audio + voice ─► mix ─► Opus (once)
//!                                                     └─ paced in real time ──LocalFrame──► media thread
//!  voice thread ◄── line ── program thread              (Router::push_local: every viewer,
//!       └─ espeak-ng ─► 48 kHz PCM ──► program thread     the transcoder's tap)
//! ```
//!
//! A live scene shows one of the room's streams: the media thread copies
//! its frames to the program (as it does for a transcoder), which places
//! them on its timeline as they come, H.264 as it is, VP8 turned into
//! H.264 (the program's codec, which every viewer negotiated), its sound
//! decoded into the mix.
//!
//! Switching clips needs no renegotiation: the program has one timeline
//! (its own clock since it started), every clip's frames are placed on it,
//! and a clip starts with a keyframe, so a switch is seen from the new
//! clip's first frame. A clip shorter than its scene loops. Video is
//! never decoded; only audio is, to mix the host's voice over it.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::time::{Duration, Instant};

use codec::clip::{ClipItem, ClipReader, ClipVideo, wav_to_stereo_48k};
use codec::{
    CodecError, EncoderSetup, OPUS_FRAME_SAMPLES, OPUS_SAMPLE_RATE, OpusDecoder, OpusEncoder,
    Scaler, VideoCodec, VideoDecoder, VideoEncoder, VideoEncoderConfig,
};
use str0m::format::Codec;
use str0m::media::MediaKind;
use tokio::sync::mpsc;

use crate::rendition::DISCONTINUITY_TICKS;
use crate::transcode::FromWorker;
use crate::{IngestFrame, LocalFrame, PeerId, StreamKey};

/// Video read ahead of its time: a second of it, enough for the audio
/// interleaved with it (containers put up to a second of one beside the
/// other), and never more frames than this.
const VIDEO_AHEAD_US: u64 = 1_000_000;
const VIDEO_AHEAD_MAX: usize = 120;
/// Clip audio queued beyond this (a clip whose audio runs ahead of its
/// video) is dropped from the front: well beyond the read-ahead.
const MAX_AUDIO_QUEUE: usize = 4 * OPUS_SAMPLE_RATE as usize * 2;
/// Live audio is played as it comes: a burst after a stall must not make
/// it lag the picture for the rest of the scene.
const LIVE_AUDIO_QUEUE: usize = OPUS_SAMPLE_RATE as usize / 5 * 2;
/// At most one keyframe asked of a live source this often.
const KEYFRAME_ASK_INTERVAL: Duration = Duration::from_millis(500);
/// Speech waiting to be played, at most (a minute).
const MAX_SPEECH_QUEUE: usize = 60 * OPUS_SAMPLE_RATE as usize * 2;
/// The clip's sound under the host's voice.
const DUCKED: f32 = 0.35;
const OPUS_BITRATE_BPS: u32 = 96_000;
/// While a live scene shows, the program looks for its frames at least
/// this often (they come on their own queue).
const LIVE_POLL: Duration = Duration::from_millis(5);

/// How the host speaks: a command that writes a WAV of the text it reads
/// on stdin to stdout (`espeak-ng --stdout -v <voice> -s <speed>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voice {
    pub command: String,
    pub voice: String,
    /// Words per minute.
    pub speed: u32,
}

impl Voice {
    /// The line as 48 kHz stereo PCM. The text goes in on stdin: never
    /// read as an option, whatever it starts with.
    pub fn speak(&self, text: &str) -> Result<Vec<i16>, String> {
        let cannot_run = |e: std::io::Error| format!("cannot run {}: {e}", self.command);
        let mut child = Command::new(&self.command)
            .args(["--stdout", "-v", &self.voice, "-s", &self.speed.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(cannot_run)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(text.as_bytes()).map_err(cannot_run)?;
        }
        let output = child.wait_with_output().map_err(cannot_run)?;
        if !output.status.success() {
            return Err(format!(
                "{} failed: {}",
                self.command,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        wav_to_stereo_48k(&output.stdout).map_err(|e| e.to_string())
    }
}

/// What the owner tells a program.
#[derive(Debug)]
pub enum Cue {
    /// Play this clip from its start, now, looping until the next cue.
    Clip(PathBuf),
    /// Show a live stream: its frames as the media plane copies them
    /// ([`crate::MediaPlane::relay`]), from its next keyframe.
    Live {
        source: StreamKey,
        frames: Receiver<IngestFrame>,
    },
    /// Stop the scene's picture and sound; speech goes on.
    Hold,
    /// Speak a line over what plays.
    Say(String),
}

/// A host line as it is heard: when it starts and ends in the program's
/// sound (wall clock, ms since the epoch), for captions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spoken {
    pub text: String,
    /// The voice's language.
    pub lang: String,
    pub start_ms: u64,
    pub end_ms: u64,
}

/// The owner's handle: dropping it ends the program, and with it its
/// viewers' sessions.
pub struct Program {
    pub(crate) cues: Sender<Cue>,
    /// Lowered when the thread ends (it panicked, or the media thread is
    /// gone): the owner starts another.
    pub(crate) alive: Arc<AtomicBool>,
}

impl Program {
    pub fn cue(&self, cue: Cue) {
        let _ = self.cues.send(cue);
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }
}

/// What a program's thread owns.
pub(crate) struct ProgramJob {
    pub stream: StreamKey,
    pub source: PeerId,
    pub cues: Receiver<Cue>,
    pub voice: Option<Voice>,
    /// The H.264 encoder live VP8 scenes are turned into H.264 with.
    pub encoder: String,
    pub back: mpsc::Sender<FromWorker>,
    /// Where spoken lines are told, timed.
    pub spoken: mpsc::UnboundedSender<Spoken>,
    /// Raised by the media thread when a viewer needs a keyframe (joined,
    /// or lost a picture).
    pub keyframe_wanted: Arc<AtomicBool>,
    /// Lowered when the thread ends.
    pub alive: Arc<AtomicBool>,
}

impl ProgramJob {
    /// The thread's body: until the handle is dropped (or the media
    /// thread is gone); then the stream ends on the media thread.
    pub fn run(self) {
        metrics::gauge!("live_programs_active").increment(1.0);
        let (stream, source, back) = (self.stream.clone(), self.source, self.back.clone());
        let alive = self.alive.clone();
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.play())).is_err() {
            tracing::error!(room = %stream.room, "a program thread panicked");
        }
        alive.store(false, Ordering::Relaxed);
        let _ = back.blocking_send(FromWorker::ProgramEnded { stream, source });
        metrics::gauge!("live_programs_active").decrement(1.0);
    }

    fn play(self) {
        let ProgramJob {
            stream,
            source,
            cues,
            voice,
            encoder: h264_encoder,
            back,
            spoken,
            keyframe_wanted,
            alive: _,
        } = self;
        let mut encoder = OpusEncoder::open(OPUS_BITRATE_BPS)
            .inspect_err(|error| {
                // Still a program: its picture goes on.
                tracing::error!(%error, "program without sound: no Opus encoder");
                metrics::counter!("live_program_errors_total", "stage" => "audio").increment(1);
            })
            .ok();
        let speech = voice.map(VoiceThread::spawn);
        let mut state = Playout::new(Instant::now());
        state.h264_encoder = h264_encoder;
        let send = |kind, data: Vec<u8>, keyframe, time| {
            let frame = LocalFrame {
                stream: stream.clone(),
                source,
                kind,
                data: Arc::from(data),
                keyframe,
                time,
            };
            back.blocking_send(FromWorker::Program(frame)).is_ok()
        };
        loop {
            let now = Instant::now();
            if let Some(speech) = &speech {
                while let Ok((text, pcm)) = speech.lines.try_recv() {
                    let (wait, length) = state.queue_speech(pcm);
                    let start_ms = wall_ms() + wait.as_millis() as u64;
                    let _ = spoken.send(Spoken {
                        text,
                        lang: speech.lang.clone(),
                        start_ms,
                        end_ms: start_ms + length.as_millis() as u64,
                    });
                }
            }
            let live = state.live_video(now);
            let viewer_asks = keyframe_wanted.swap(false, Ordering::Relaxed);
            if let Some(source) = state.keyframe_from_live(viewer_asks, now) {
                let _ = back.blocking_send(FromWorker::SourceKeyframe(source));
            }
            while let Some(video) = state.due_video(now) {
                metrics::counter!("live_program_frames_total", "kind" => "video").increment(1);
                if !send(MediaKind::Video, video.data, video.keyframe, video.time) {
                    return;
                }
            }
            for video in live {
                metrics::counter!("live_program_frames_total", "kind" => "live").increment(1);
                if !send(MediaKind::Video, video.data, video.keyframe, video.time) {
                    return;
                }
            }
            while state.audio_due(now) {
                let (time, pcm) = state.next_audio();
                let Some(encoder) = encoder.as_mut() else {
                    continue;
                };
                match encoder.encode(&pcm) {
                    Ok(packets) => {
                        for packet in packets {
                            if !send(MediaKind::Audio, packet, false, time) {
                                return;
                            }
                        }
                    }
                    Err(error) => tracing::debug!(%error, "a program audio frame was not encoded"),
                }
            }
            let mut wait = state.next_due().saturating_duration_since(Instant::now());
            if state.live.is_some() {
                wait = wait.min(LIVE_POLL);
            }
            match cues.recv_timeout(wait) {
                Ok(Cue::Say(text)) => match &speech {
                    Some(speech) => speech.say(text),
                    None => tracing::debug!("no voice configured; a host line stays text"),
                },
                Ok(cue) => state.cue(cue, Instant::now()),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

/// A video frame placed on the program's timeline.
struct Placed {
    /// H.264, Annex B.
    data: Vec<u8>,
    keyframe: bool,
    /// Program time, 90 kHz.
    time: u64,
}

/// A live stream the program shows.
struct LiveRelay {
    source: StreamKey,
    frames: Receiver<IngestFrame>,
    /// Frames are skipped until a keyframe (none placed yet, or a new
    /// timeline): one is asked of the source.
    waiting: bool,
    /// The next VP8 frame turned into H.264 is a keyframe (a viewer asked).
    force_keyframe: bool,
    last_ask: Option<Instant>,
    /// The source's video time and the program time it was placed at, and
    /// the source time of the last frame (to see a new timeline).
    anchor: Option<(u64, Duration)>,
    last_source: u64,
    opus: Option<OpusDecoder>,
    /// Set up on the first VP8 frame.
    to_h264: Option<ToH264>,
}

impl LiveRelay {
    fn new(source: StreamKey, frames: Receiver<IngestFrame>) -> Self {
        Self {
            source,
            frames,
            waiting: true,
            force_keyframe: false,
            last_ask: None,
            anchor: None,
            last_source: 0,
            opus: None,
            to_h264: None,
        }
    }

    /// Where a source frame goes on the program's timeline: after the
    /// last frame sent, keeping the source's own spacing. A relay starts
    /// (and starts over, when the source's time jumps) on a keyframe.
    fn place(
        &mut self,
        source: u64,
        keyframe: bool,
        now: Duration,
        last: Option<Duration>,
    ) -> Option<Duration> {
        let jumped =
            source.abs_diff(self.last_source) > DISCONTINUITY_TICKS || source < self.last_source;
        if self.anchor.is_some() && jumped {
            self.anchor = None;
        }
        let after_last =
            |at: Duration| last.map_or(at, |last| at.max(last + Duration::from_millis(1)));
        let (origin, placed) = match self.anchor {
            Some(anchor) => anchor,
            None if keyframe => {
                let anchor = (source, after_last(now));
                self.anchor = Some(anchor);
                anchor
            }
            None => return None,
        };
        self.last_source = source;
        let since = Duration::from_micros((source - origin) * 100 / 9);
        Some(after_last(placed + since))
    }
}

/// Turns a live VP8 stream into H.264 at its own size (re-opened when the
/// size changes; an odd size, which VP8 allows and H.264 encoders refuse,
/// scaled to the even size below it), with the program's timestamps.
struct ToH264 {
    decoder: VideoDecoder,
    encoder: Option<VideoEncoder>,
    scaler: Option<Scaler>,
    name: String,
}

impl ToH264 {
    fn new(name: &str) -> Result<Self, CodecError> {
        Ok(Self {
            decoder: VideoDecoder::open(VideoCodec::Vp8)?,
            encoder: None,
            scaler: None,
            name: name.to_owned(),
        })
    }

    fn convert(
        &mut self,
        data: &[u8],
        time: u64,
        force_keyframe: bool,
    ) -> Result<Vec<(Vec<u8>, bool)>, CodecError> {
        let mut out = Vec::new();
        for mut decoded in self.decoder.decode(data)? {
            let even = (decoded.width() & !1, decoded.height() & !1);
            let picture = if even == (decoded.width(), decoded.height()) {
                &mut decoded
            } else {
                let scaler = match self.scaler.as_mut() {
                    Some(scaler) if scaler.size() == even => scaler,
                    _ => self.scaler.insert(Scaler::new(even.0, even.1)),
                };
                scaler.scale(&decoded)?
            };
            let size = (picture.width(), picture.height());
            let stale = self
                .encoder
                .as_ref()
                .is_none_or(|e| (e.config().width, e.config().height) != size);
            if stale {
                let config = VideoEncoderConfig {
                    codec: VideoCodec::H264,
                    width: size.0,
                    height: size.1,
                    fps: 30,
                    // About 3 bits a pixel a second: 2.8 Mbit/s at 720p.
                    bitrate_bps: (size.0 * size.1 * 3).clamp(300_000, 8_000_000),
                    keyframe_interval: 60,
                };
                let setup = EncoderSetup {
                    name: &self.name,
                    clock_hz: 90_000,
                    global_header: false,
                };
                self.encoder = Some(VideoEncoder::open_with(config, setup)?);
            }
            let Some(encoder) = self.encoder.as_mut() else {
                continue;
            };
            for frame in encoder.encode_at(picture, time as i64, stale || force_keyframe)? {
                out.push((frame.data, frame.keyframe));
            }
        }
        Ok(out)
    }
}

/// The clip playing now.
struct Playing {
    path: PathBuf,
    reader: ClipReader,
    /// Program time of the clip's time 0 in this pass.
    base: Duration,
    video: VecDeque<ClipVideo>,
    /// The gap between the last two frames, to place the first frame of
    /// the next pass of a loop.
    last_frame_gap: Duration,
    /// Video frames read in this pass (a clip without any is not looped).
    frames_read: u64,
}

/// The program's timeline and what plays on it, sans-IO apart from the
/// clip files it reads: told the time, it says what is due.
struct Playout {
    start: Instant,
    playing: Option<Playing>,
    /// Decoded clip audio not yet played (interleaved stereo, 48 kHz).
    scene_audio: VecDeque<i16>,
    speech: VecDeque<i16>,
    /// Audio frames sent: the audio clock.
    audio_frames: u64,
    /// Program time of the last video frame sent.
    last_video: Option<Duration>,
    /// The live stream shown, when the scene is live.
    live: Option<LiveRelay>,
    /// The encoder for live VP8 (FFmpeg's name).
    h264_encoder: String,
}

impl Playout {
    fn new(start: Instant) -> Self {
        Self {
            start,
            playing: None,
            scene_audio: VecDeque::new(),
            speech: VecDeque::new(),
            audio_frames: 0,
            last_video: None,
            live: None,
            h264_encoder: "libx264".into(),
        }
    }

    fn cue(&mut self, cue: Cue, now: Instant) {
        match cue {
            Cue::Clip(path) => {
                self.scene_audio.clear();
                self.live = None;
                // The new clip starts now, and never before what was sent.
                let now = now.saturating_duration_since(self.start);
                let base = self
                    .last_video
                    .map_or(now, |last| now.max(last + Duration::from_millis(1)));
                self.playing = open(&path, base);
                if self.playing.is_some() {
                    metrics::counter!("live_program_switches_total").increment(1);
                    tracing::info!(clip = %path.display(), "program plays a clip");
                }
            }
            Cue::Hold => {
                self.playing = None;
                self.live = None;
                self.scene_audio.clear();
            }
            Cue::Live { source, frames } => {
                self.playing = None;
                self.scene_audio.clear();
                self.live = Some(LiveRelay::new(source, frames));
                metrics::counter!("live_program_switches_total").increment(1);
                tracing::info!("program shows a live stream");
            }
            Cue::Say(_) => {}
        }
    }

    /// Queues a spoken line after those waiting; returns how long until
    /// it is heard and how long it lasts.
    fn queue_speech(&mut self, pcm: Vec<i16>) -> (Duration, Duration) {
        let (wait, length) = (sound_length(self.speech.len()), sound_length(pcm.len()));
        self.speech.extend(pcm);
        let over = self.speech.len().saturating_sub(MAX_SPEECH_QUEUE);
        self.speech.drain(..over);
        (wait, length)
    }

    /// The next video frame whose time has come, if any.
    fn due_video(&mut self, now: Instant) -> Option<Placed> {
        let now = now.saturating_duration_since(self.start);
        self.fill();
        let playing = self.playing.as_mut()?;
        let next = playing.video.front()?;
        let at = playing.base + Duration::from_micros(next.time_us);
        if at > now {
            return None;
        }
        let frame = playing.video.pop_front()?;
        if let Some(following) = playing.video.front() {
            playing.last_frame_gap =
                Duration::from_micros(following.time_us.saturating_sub(frame.time_us));
        }
        self.last_video = Some(at);
        Some(Placed {
            data: frame.data,
            keyframe: frame.keyframe,
            time: ticks(at),
        })
    }

    /// What the live source sent since the last call: its video placed on
    /// the timeline (to send now), its sound queued for the mix.
    fn live_video(&mut self, now: Instant) -> Vec<Placed> {
        let now = now.saturating_duration_since(self.start);
        let mut out = Vec::new();
        let Some(live) = self.live.as_mut() else {
            return out;
        };
        loop {
            let frame = match live.frames.try_recv() {
                Ok(frame) => frame,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.live = None;
                    break;
                }
            };
            if frame.kind == MediaKind::Audio {
                let opus = match live.opus.as_mut() {
                    Some(opus) => opus,
                    None => match OpusDecoder::open() {
                        Ok(opus) => live.opus.insert(opus),
                        Err(_) => continue,
                    },
                };
                let mut pcm = Vec::new();
                if opus.decode_interleaved(&frame.data, &mut pcm).is_ok() {
                    self.scene_audio.extend(pcm);
                }
                continue;
            }
            let Some(at) = live.place(frame.time, frame.keyframe, now, self.last_video) else {
                live.waiting = true;
                continue;
            };
            live.waiting = false;
            let converted = match frame.codec {
                Codec::H264 => Ok(vec![(frame.data.to_vec(), frame.keyframe)]),
                Codec::Vp8 => {
                    let to_h264 = match live.to_h264.as_mut() {
                        Some(to_h264) => Ok(to_h264),
                        None => ToH264::new(&self.h264_encoder).map(|c| live.to_h264.insert(c)),
                    };
                    let force = std::mem::take(&mut live.force_keyframe);
                    to_h264.and_then(|c| c.convert(&frame.data, ticks(at), force))
                }
                other => Err(CodecError::Input(format!("{other:?} cannot be shown"))),
            };
            match converted {
                Ok(frames) => {
                    for (data, keyframe) in frames {
                        self.last_video = Some(at);
                        out.push(Placed {
                            data,
                            keyframe,
                            time: ticks(at),
                        });
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, "a live frame was not shown");
                    metrics::counter!("live_program_errors_total", "stage" => "live").increment(1);
                }
            }
        }
        let over = self.scene_audio.len().saturating_sub(LIVE_AUDIO_QUEUE);
        self.scene_audio.drain(..over);
        out
    }

    /// The live source to ask for a keyframe, if one is needed (a viewer
    /// asked, or the relay waits for one) and none was asked lately. A
    /// VP8 source's next frame is also made a keyframe here. Clips cannot
    /// make one: their viewers wait for the clip's next.
    fn keyframe_from_live(&mut self, viewer_asks: bool, now: Instant) -> Option<StreamKey> {
        let live = self.live.as_mut()?;
        if viewer_asks && live.to_h264.is_some() && !live.waiting {
            live.force_keyframe = true;
            return None;
        }
        let due = live
            .last_ask
            .is_none_or(|at| now.duration_since(at) >= KEYFRAME_ASK_INTERVAL);
        if !(viewer_asks || live.waiting) || !due {
            return None;
        }
        live.last_ask = Some(now);
        Some(live.source.clone())
    }

    /// Reads the clip ahead: video until a few frames wait, and the audio
    /// beside it; at its end the clip starts again after its last frame.
    fn fill(&mut self) {
        let Some(playing) = self.playing.as_mut() else {
            return;
        };
        while playing.video.len() < VIDEO_AHEAD_MAX
            && playing
                .video
                .front()
                .zip(playing.video.back())
                .is_none_or(|(first, last)| {
                    last.time_us.saturating_sub(first.time_us) < VIDEO_AHEAD_US
                })
        {
            match playing.reader.read() {
                Ok(Some(ClipItem::Video(frame))) => {
                    playing.frames_read += 1;
                    playing.video.push_back(frame);
                }
                Ok(Some(ClipItem::Audio(samples))) => self.scene_audio.extend(samples),
                Ok(None) if playing.frames_read == 0 => {
                    tracing::warn!(clip = %playing.path.display(), "a clip without pictures stopped");
                    self.playing = None;
                    return;
                }
                Ok(None) if playing.video.is_empty() => {
                    // The end of a pass: loop.
                    let next_base =
                        self.last_video.unwrap_or(playing.base) + playing.last_frame_gap;
                    match open(&playing.path, next_base) {
                        Some(again) => *playing = again,
                        None => {
                            self.playing = None;
                            return;
                        }
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(clip = %playing.path.display(), %error, "a clip stopped");
                    metrics::counter!("live_program_errors_total", "stage" => "clip").increment(1);
                    self.playing = None;
                    return;
                }
            }
        }
        let over = self.scene_audio.len().saturating_sub(MAX_AUDIO_QUEUE);
        self.scene_audio.drain(..over);
    }

    fn audio_time(&self, frames: u64) -> Duration {
        Duration::from_micros(
            frames * OPUS_FRAME_SAMPLES as u64 * 1_000_000 / u64::from(OPUS_SAMPLE_RATE),
        )
    }

    fn audio_due(&self, now: Instant) -> bool {
        self.start + self.audio_time(self.audio_frames) <= now
    }

    /// The next 20 ms of sound and its time (48 kHz): the clip's, under
    /// the host's voice when it speaks; silence when neither has any.
    fn next_audio(&mut self) -> (u64, Vec<i16>) {
        let time = self.audio_frames * OPUS_FRAME_SAMPLES as u64;
        self.audio_frames += 1;
        let speaking = !self.speech.is_empty();
        let clip_gain = if speaking { DUCKED } else { 1.0 };
        let mut pcm = Vec::with_capacity(OPUS_FRAME_SAMPLES * 2);
        for _ in 0..OPUS_FRAME_SAMPLES * 2 {
            let clip = f32::from(self.scene_audio.pop_front().unwrap_or(0)) * clip_gain;
            let voice = f32::from(self.speech.pop_front().unwrap_or(0));
            pcm.push((clip + voice).clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16);
        }
        (time, pcm)
    }

    /// When something is next due: the next audio frame at the latest.
    fn next_due(&self) -> Instant {
        let audio = self.start + self.audio_time(self.audio_frames);
        let video = self
            .playing
            .as_ref()
            .and_then(|p| {
                p.video
                    .front()
                    .map(|f| p.base + Duration::from_micros(f.time_us))
            })
            .map(|at| self.start + at);
        video.map_or(audio, |video| video.min(audio))
    }
}

/// How long `samples` interleaved stereo samples at 48 kHz play.
fn sound_length(samples: usize) -> Duration {
    Duration::from_micros((samples / 2) as u64 * 1_000_000 / u64::from(OPUS_SAMPLE_RATE))
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Program time in the video clock (90 kHz).
fn ticks(at: Duration) -> u64 {
    (at.as_micros() * 9 / 100) as u64
}

fn open(path: &Path, base: Duration) -> Option<Playing> {
    match ClipReader::open(path) {
        Ok(reader) => Some(Playing {
            path: path.to_path_buf(),
            reader,
            base,
            video: VecDeque::new(),
            last_frame_gap: Duration::from_millis(40),
            frames_read: 0,
        }),
        Err(error) => {
            tracing::warn!(clip = %path.display(), %error, "a clip cannot be played");
            metrics::counter!("live_program_errors_total", "stage" => "clip").increment(1);
            None
        }
    }
}

/// Speaks lines on its own thread: a line takes the TTS tens of
/// milliseconds, which the program's pacing must not wait for.
struct VoiceThread {
    texts: Sender<String>,
    /// Each line with its sound.
    lines: Receiver<(String, Vec<i16>)>,
    lang: String,
}

impl VoiceThread {
    fn spawn(voice: Voice) -> Self {
        let (texts, inbox) = std::sync::mpsc::channel::<String>();
        let (outbox, lines) = std::sync::mpsc::channel();
        let lang = voice.voice.clone();
        let spawned = std::thread::Builder::new()
            .name("program-voice".into())
            .spawn(move || {
                for text in inbox {
                    match voice.speak(&text) {
                        Ok(pcm) => {
                            metrics::counter!("live_program_voice_lines_total").increment(1);
                            if outbox.send((text, pcm)).is_err() {
                                return;
                            }
                        }
                        Err(error) => {
                            tracing::warn!(%error, "a host line was not spoken");
                            metrics::counter!("live_program_errors_total", "stage" => "voice")
                                .increment(1);
                        }
                    }
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "no voice thread; host lines stay text");
        }
        Self { texts, lines, lang }
    }

    fn say(&self, text: String) {
        let _ = self.texts.send(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo_clips() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-demo-clips");
        let status = Command::new(script).arg(dir.path()).status().unwrap();
        assert!(
            status.success(),
            "scripts/make-demo-clips (needs the ffmpeg CLI)"
        );
        dir
    }

    /// Every video frame due up to `until`, stepping 10 ms at a time.
    fn run_until(playout: &mut Playout, from: Duration, until: Duration) -> Vec<Placed> {
        let mut frames = Vec::new();
        let mut at = from;
        while at <= until {
            while let Some(frame) = playout.due_video(playout.start + at) {
                frames.push(frame);
            }
            at += Duration::from_millis(10);
        }
        frames
    }

    #[test]
    fn clips_switch_on_their_first_keyframe_loop_and_keep_one_timeline() {
        let clips = demo_clips();
        let start = Instant::now();
        let mut playout = Playout::new(start);
        assert!(
            playout.due_video(start).is_none(),
            "nothing plays before a cue"
        );
        playout.cue(Cue::Clip(clips.path().join("intro.mp4")), start);
        let intro = run_until(&mut playout, Duration::ZERO, Duration::from_millis(2_000));
        assert_eq!(intro.len(), 51, "25 fps for 2 s, from time 0");
        assert!(intro[0].keyframe);
        assert_eq!(intro[0].time, 0);
        assert_eq!(intro[25].time, 90_000);

        // The vote closes: the winner plays from its first frame, a
        // keyframe, right away and after what was sent.
        let switch = start + Duration::from_millis(2_005);
        playout.cue(Cue::Clip(clips.path().join("aurora.mp4")), switch);
        let aurora = run_until(
            &mut playout,
            Duration::from_millis(2_005),
            Duration::from_millis(14_500),
        );
        assert!(aurora[0].keyframe);
        assert_eq!(aurora[0].time, 2_005 * 90);
        let times: Vec<u64> = intro.iter().chain(&aurora).map(|p| p.time).collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]), "one timeline");
        // A 6 s clip over 12.5 s: it loops, each pass from a keyframe,
        // without a gap.
        let passes: Vec<&Placed> = aurora
            .iter()
            .filter(|p| p.keyframe && (p.time - aurora[0].time).is_multiple_of(6_000 * 90))
            .collect();
        assert_eq!(passes.len(), 3, "three passes begin by 14.5 s");
        assert_eq!(passes[1].time, (2_005 + 6_000) * 90);
        let gaps: Vec<u64> = aurora.windows(2).map(|w| w[1].time - w[0].time).collect();
        assert!(gaps.iter().all(|g| *g == 3_600), "40 ms apart: {gaps:?}");

        // Hold: pictures stop, sound goes on (silence).
        playout.cue(Cue::Hold, start + Duration::from_millis(14_500));
        assert!(
            run_until(
                &mut playout,
                Duration::from_millis(14_500),
                Duration::from_millis(15_000)
            )
            .is_empty()
        );
    }

    #[test]
    fn the_voice_is_mixed_over_the_ducked_clip_and_audio_never_stops() {
        let clips = demo_clips();
        let start = Instant::now();
        let mut playout = Playout::new(start);
        // Before any clip: silence, on the audio clock.
        assert!(playout.audio_due(start));
        let (time, pcm) = playout.next_audio();
        assert_eq!((time, pcm.len()), (0, OPUS_FRAME_SAMPLES * 2));
        assert!(pcm.iter().all(|s| *s == 0));

        playout.cue(Cue::Clip(clips.path().join("intro.mp4")), start);
        let _ = run_until(&mut playout, Duration::ZERO, Duration::from_millis(500));
        let (time, tone) = playout.next_audio();
        assert_eq!(time, 960);
        let loudness = |pcm: &[i16]| pcm.iter().map(|s| i64::from(s.unsigned_abs())).sum::<i64>();
        assert!(loudness(&tone) > 0, "the clip's tone");

        playout.queue_speech(vec![1000; OPUS_FRAME_SAMPLES * 2]);
        let (time, mixed) = playout.next_audio();
        assert_eq!(time, 1920);
        let clip_part: Vec<i16> = mixed.iter().map(|s| s - 1000).collect();
        assert!(
            loudness(&clip_part) < loudness(&tone) / 2,
            "the clip is ducked under the voice"
        );
        let (_, after) = playout.next_audio();
        assert!(
            loudness(&after) > loudness(&clip_part),
            "and back up after it"
        );
    }

    #[test]
    fn a_live_source_starts_on_a_keyframe_keeps_its_spacing_and_never_goes_back() {
        let (_, frames) = std::sync::mpsc::sync_channel(1);
        let mut live = LiveRelay::new(StreamKey::new("r1", "main"), frames);
        let ms = Duration::from_millis;
        // Program time 10 s; the last clip frame went out at 10 s too.
        let (now, last) = (ms(10_000), Some(ms(10_000)));
        assert_eq!(
            live.place(900_000, false, now, last),
            None,
            "not before a keyframe"
        );
        let first = live.place(903_000, true, now, last).unwrap();
        assert_eq!(first, ms(10_001), "just after what was sent");
        // 33 ms later in the source: 33 ms later in the program, even when
        // it arrives late.
        let second = live
            .place(903_000 + 2_970, false, ms(10_200), Some(first))
            .unwrap();
        assert_eq!(second, ms(10_034));
        // The publisher came back with a new timeline: wait for its
        // keyframe, then go on after what was sent.
        assert_eq!(live.place(10, false, ms(11_000), Some(second)), None);
        let third = live.place(3_000, true, ms(11_000), Some(second)).unwrap();
        assert_eq!(third, ms(11_000));
        assert!(live.place(6_000, false, ms(11_010), Some(third)).unwrap() > third);
    }

    #[test]
    fn keyframes_are_asked_of_a_live_source_when_needed_and_not_too_often() {
        let start = Instant::now();
        let mut playout = Playout::new(start);
        let (_, frames) = std::sync::mpsc::sync_channel(1);
        let source = StreamKey::new("r1", "main");
        playout.cue(
            Cue::Live {
                source: source.clone(),
                frames,
            },
            start,
        );
        // Waiting for the relay's first keyframe: asked at once, then at
        // most every 500 ms.
        assert_eq!(
            playout.keyframe_from_live(false, start),
            Some(source.clone())
        );
        let soon = start + Duration::from_millis(100);
        assert_eq!(playout.keyframe_from_live(true, soon), None);
        let later = start + Duration::from_millis(600);
        assert_eq!(
            playout.keyframe_from_live(false, later),
            Some(source.clone())
        );
        // Showing a VP8 source: a viewer's request makes the next converted
        // frame a keyframe, without asking the publisher.
        let live = playout.live.as_mut().unwrap();
        live.waiting = false;
        live.to_h264 = Some(ToH264::new("libx264").unwrap());
        let much_later = start + Duration::from_secs(5);
        assert_eq!(playout.keyframe_from_live(true, much_later), None);
        assert!(playout.live.as_ref().unwrap().force_keyframe);
        // Nobody asks, nothing waits: nothing to do.
        assert_eq!(playout.keyframe_from_live(false, much_later), None);
    }

    #[test]
    fn a_vp8_camera_of_an_odd_size_becomes_even_h264() {
        let config = codec::VideoEncoderConfig {
            codec: VideoCodec::Vp8,
            width: 161,
            height: 91,
            fps: 30,
            bitrate_bps: 300_000,
            keyframe_interval: 30,
        };
        let mut vp8 = VideoEncoder::open(config).unwrap();

        let mut to_h264 = ToH264::new("libx264").unwrap();
        let mut h264 = VideoDecoder::open(VideoCodec::H264).unwrap();
        let mut sizes = Vec::new();
        for n in 0..10u64 {
            // A camera of an odd size (a window share, say).
            let mut picture = codec::RawVideo::new(161, 91);
            for frame in vp8.encode(&mut picture, false).unwrap() {
                for (data, _) in to_h264.convert(&frame.data, n * 3000, false).unwrap() {
                    for decoded in h264.decode(&data).unwrap() {
                        sizes.push((decoded.width(), decoded.height()));
                    }
                }
            }
        }
        assert!(!sizes.is_empty(), "the camera is shown");
        assert!(sizes.iter().all(|size| *size == (160, 90)), "{sizes:?}");
    }

    #[test]
    fn a_clip_that_cannot_be_read_leaves_the_program_running() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("broken.mp4"), "not a clip").unwrap();
        let start = Instant::now();
        let mut playout = Playout::new(start);
        playout.cue(Cue::Clip(dir.path().join("broken.mp4")), start);
        playout.cue(Cue::Clip(dir.path().join("missing.mp4")), start);
        assert!(playout.due_video(start + Duration::from_secs(1)).is_none());
        assert!(playout.audio_due(start));
        assert_eq!(playout.next_audio().1.len(), OPUS_FRAME_SAMPLES * 2);
    }

    #[test]
    fn espeak_speaks_a_line_as_48k_stereo() {
        let voice = Voice {
            command: "espeak-ng".into(),
            voice: "en-us".into(),
            speed: 175,
        };
        let pcm = voice.speak("-v welcome to the launch").unwrap();
        let seconds = pcm.len() as f64 / 2.0 / f64::from(OPUS_SAMPLE_RATE);
        assert!((0.8..4.0).contains(&seconds), "{seconds} s of speech");
        assert!(pcm.iter().any(|s| s.unsigned_abs() > 1000), "not silence");
        let missing = Voice {
            command: "no-such-tts".into(),
            ..voice
        };
        assert!(
            missing
                .speak("hello")
                .unwrap_err()
                .contains("cannot run no-such-tts")
        );
    }
}
