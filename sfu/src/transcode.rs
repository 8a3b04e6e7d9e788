//! Transcoding jobs: a thread per transcoded stream runs the codec crate's
//! [`Transcoder`] on frames the media thread copies out of the router.
//!
//! ```text
//!  media thread ──IngestFrame (bounded; full = dropped, counted)──► transcode thread
//!       ▲                                                              │ decode, scale, encode, HLS
//!       └────────── rendition frames (bounded) ◄──────────────────────┤
//!  StreamActor ◄── TranscodeEvent (opened, segment, ended) ◄──────────┘
//! ```
//!
//! The queue in front of the transcoder is the only buffer: a transcoder
//! that falls behind real time loses frames at the tap (and waits for the
//! next keyframe) rather than queueing without bound. A panic or a codec
//! error ends the job with the reason; its StreamActor decides on a restart.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::{Duration, Instant, SystemTime};

use codec::hls::HlsSegment;
use codec::ladder::{
    LadderConfig, Rendition, TranscodeOutput, TranscodeStats, Transcoder, VideoInput,
};
use codec::{CodecError, VideoCodec};
use str0m::format::Codec;
use str0m::media::MediaKind;
use tokio::sync::mpsc;

use crate::{IngestFrame, RenditionLayer, SfuError, StreamKey};

/// Frames queued in front of a transcoder: about a second of video and
/// audio. Beyond it the transcoder is not keeping up.
pub(crate) const TAP_CAPACITY: usize = 96;

/// At most one forced keyframe per interval: a burst of viewers switching
/// renditions must not turn every frame into a keyframe.
const FORCED_KEYFRAME_INTERVAL: Duration = Duration::from_millis(500);

/// What to transcode and how.
#[derive(Debug, Clone)]
pub struct TranscodeJob {
    pub stream: StreamKey,
    pub ladder: LadderConfig,
}

/// What a transcoding job reports to its owner.
#[derive(Debug)]
pub enum TranscodeEvent {
    /// The ladder opened on the first keyframe; media time 0 is `origin`.
    Opened {
        renditions: Vec<Rendition>,
        origin: SystemTime,
        input_width: u32,
        input_height: u32,
    },
    /// A rendition's HLS segment is complete on disk.
    Segment {
        rendition: String,
        segment: HlsSegment,
    },
    /// The job is over: the stream ended (`error` is `None`) or the
    /// transcoder failed. Its playlists are closed either way.
    Ended {
        stats: TranscodeStats,
        error: Option<String>,
    },
}

/// A running job: its events, until `Ended`.
pub struct Transcode {
    pub events: mpsc::UnboundedReceiver<TranscodeEvent>,
}

/// From a transcode or program thread to the media thread.
pub(crate) enum FromWorker {
    /// A frame of a room's program ([`crate::program`]).
    Program(crate::LocalFrame),
    /// A program showing a live stream needs a keyframe of it.
    SourceKeyframe(StreamKey),
    /// The program's thread ended.
    ProgramEnded {
        stream: StreamKey,
        source: crate::PeerId,
    },
    Opened {
        stream: StreamKey,
        renditions: Vec<RenditionLayer>,
        source_height: u32,
    },
    Frame {
        stream: StreamKey,
        rendition: usize,
        data: Vec<u8>,
        keyframe: bool,
        time: u64,
    },
}

/// The media thread's end of a job.
pub(crate) struct Tap {
    pub frames: SyncSender<IngestFrame>,
    pub keyframe_wanted: Arc<AtomicBool>,
    /// Fault injection: the job fails at its next frame (see
    /// [`MediaPlane::inject_transcode_failure`](crate::MediaPlane::inject_transcode_failure)).
    pub fail: Arc<AtomicBool>,
    /// Frames were dropped: skip video until a keyframe.
    pub resync: bool,
    /// Only the stream's sound is wanted (captions listening to it).
    pub audio_only: bool,
}

/// The cap on concurrent jobs; a slot is held by a job's thread.
#[derive(Clone)]
pub(crate) struct Slots {
    active: Arc<AtomicUsize>,
    max: usize,
}

pub(crate) struct Slot(Arc<AtomicUsize>);

impl Slots {
    pub fn new(max: usize) -> Self {
        Self {
            active: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    pub fn acquire(&self) -> Result<Slot, SfuError> {
        let taken = self
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |active| {
                (active < self.max).then_some(active + 1)
            });
        match taken {
            Ok(active) => {
                metrics::gauge!("live_transcodes_active").set((active + 1) as f64);
                Ok(Slot(self.active.clone()))
            }
            Err(_) => {
                metrics::counter!("live_transcodes_refused_total").increment(1);
                Err(SfuError::Full(
                    "this node runs as many transcodes as it may",
                ))
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let before = self.0.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!("live_transcodes_active").set(before.saturating_sub(1) as f64);
    }
}

/// What a job's thread owns.
pub(crate) struct Job {
    pub job: TranscodeJob,
    pub frames: Receiver<IngestFrame>,
    pub keyframe_wanted: Arc<AtomicBool>,
    pub fail: Arc<AtomicBool>,
    pub back: mpsc::Sender<FromWorker>,
    pub events: mpsc::UnboundedSender<TranscodeEvent>,
    pub slot: Slot,
}

impl Job {
    /// The thread's body: runs the transcoder until the tap closes or it
    /// fails, then reports.
    pub fn run(self) {
        let Job {
            job,
            frames,
            keyframe_wanted,
            fail,
            back,
            events,
            slot,
        } = self;
        let mut stats = TranscodeStats::default();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let signals = Signals {
                keyframe_wanted: &keyframe_wanted,
                fail: &fail,
            };
            pipeline(&job, &frames, signals, &back, &events, &mut stats)
        }));
        let error = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error.to_string()),
            Err(_) => Some("the transcoder panicked".to_owned()),
        };
        if let (Some(error), Some(dir)) = (&error, &job.ladder.recording_dir) {
            tracing::warn!(room = %job.stream.room, stream = %job.stream.stream, %error, "transcode failed");
            seal_recording(dir);
        }
        drop(slot);
        let _ = events.send(TranscodeEvent::Ended { stats, error });
    }
}

/// Flags the media thread raises for a job.
struct Signals<'a> {
    keyframe_wanted: &'a AtomicBool,
    fail: &'a AtomicBool,
}

fn pipeline(
    job: &TranscodeJob,
    frames: &Receiver<IngestFrame>,
    signals: Signals,
    back: &mpsc::Sender<FromWorker>,
    events: &mpsc::UnboundedSender<TranscodeEvent>,
    stats: &mut TranscodeStats,
) -> Result<(), CodecError> {
    let mut transcoder = Transcoder::new(job.ladder.clone());
    let mut out = Vec::new();
    let mut ladder = Ladder::default();
    let mut flush = |out: &mut Vec<TranscodeOutput>| {
        for output in out.drain(..) {
            dispatch(
                output,
                &job.stream,
                &mut ladder,
                back,
                events,
                signals.keyframe_wanted,
            );
        }
    };
    let mut last_forced: Option<Instant> = None;
    while let Ok(frame) = frames.recv() {
        if signals.fail.load(Ordering::Relaxed) {
            return Err(CodecError::Input("failure injected by a test".into()));
        }
        let started = Instant::now();
        match (frame.kind, video_codec(frame.codec)) {
            (MediaKind::Video, Some(codec)) => {
                let force = signals.keyframe_wanted.load(Ordering::Relaxed)
                    && last_forced.is_none_or(|at| at.elapsed() >= FORCED_KEYFRAME_INTERVAL);
                let input = VideoInput {
                    codec,
                    data: &frame.data,
                    keyframe: frame.keyframe,
                    time: frame.time,
                    received: frame.received,
                };
                transcoder.push_video(input, force, &mut out)?;
                metrics::histogram!("live_transcode_frame_seconds")
                    .record(started.elapsed().as_secs_f64());
                // The request is answered only once a keyframe came out (a
                // frame skipped while waiting for the source's keyframe
                // answers nothing).
                let answered = out
                    .iter()
                    .any(|o| matches!(o, TranscodeOutput::Frame { keyframe: true, .. }));
                if force && answered {
                    signals.keyframe_wanted.store(false, Ordering::Relaxed);
                    last_forced = Some(started);
                }
            }
            (MediaKind::Audio, _) if frame.codec == Codec::Opus => {
                transcoder.push_audio(&frame.data, frame.time, frame.received)?;
            }
            _ => {}
        }
        count(stats, transcoder.stats());
        flush(&mut out);
    }
    let last = transcoder.stats();
    transcoder.finish(&mut out)?;
    count(stats, last);
    flush(&mut out);
    Ok(())
}

/// The ladder as opened: names for the events, and which renditions go
/// back to the router (those smaller than the source: one of the
/// source's own size serves HLS only).
#[derive(Default)]
struct Ladder {
    names: Vec<String>,
    offered: Vec<bool>,
}

fn dispatch(
    output: TranscodeOutput,
    stream: &StreamKey,
    ladder: &mut Ladder,
    back: &mpsc::Sender<FromWorker>,
    events: &mpsc::UnboundedSender<TranscodeEvent>,
    keyframe_wanted: &AtomicBool,
) {
    match output {
        TranscodeOutput::Opened {
            renditions,
            origin,
            input_width,
            input_height,
        } => {
            ladder.names = renditions.iter().map(|r| r.name.clone()).collect();
            ladder.offered = renditions.iter().map(|r| r.height < input_height).collect();
            let layers = renditions
                .iter()
                .map(|r| RenditionLayer {
                    name: r.name.clone(),
                    width: r.width,
                    height: r.height,
                    bitrate_bps: r.bitrate_bps,
                })
                .collect();
            // Once per job, and the renditions are never offered without
            // it: wait for room rather than drop it.
            let _ = back.blocking_send(FromWorker::Opened {
                stream: stream.clone(),
                renditions: layers,
                source_height: input_height,
            });
            let origin = SystemTime::now() - origin.elapsed();
            let _ = events.send(TranscodeEvent::Opened {
                renditions,
                origin,
                input_width,
                input_height,
            });
        }
        TranscodeOutput::Frame {
            rendition,
            data,
            keyframe,
            source_time,
        } => {
            if !ladder.offered.get(rendition).copied().unwrap_or(false) {
                return;
            }
            let sent = back.try_send(FromWorker::Frame {
                stream: stream.clone(),
                rendition,
                data,
                keyframe,
                time: source_time,
            });
            if sent.is_err() {
                // Viewers of the rendition now miss a reference frame:
                // a keyframe repairs their picture.
                metrics::counter!("live_transcode_frames_total", "stage" => "lost_to_media_thread")
                    .increment(1);
                keyframe_wanted.store(true, Ordering::Relaxed);
            }
        }
        TranscodeOutput::Segment { rendition, segment } => {
            let _ = events.send(TranscodeEvent::Segment {
                rendition: ladder.names.get(rendition).cloned().unwrap_or_default(),
                segment,
            });
        }
    }
}

/// Publishes the growth of a job's counters as metrics (node-wide series:
/// one per stage, not per stream).
fn count(reported: &mut TranscodeStats, now: TranscodeStats) {
    let stages = [
        ("in", reported.frames_in, now.frames_in),
        ("decoded", reported.frames_decoded, now.frames_decoded),
        ("encoded", reported.frames_encoded, now.frames_encoded),
        ("decode_error", reported.decode_errors, now.decode_errors),
        ("skipped", reported.frames_skipped, now.frames_skipped),
    ];
    for (stage, before, after) in stages {
        if after > before {
            metrics::counter!("live_transcode_frames_total", "stage" => stage)
                .increment(after - before);
        }
    }
    *reported = now;
}

fn video_codec(codec: Codec) -> Option<VideoCodec> {
    match codec {
        Codec::Vp8 => Some(VideoCodec::Vp8),
        Codec::H264 => Some(VideoCodec::H264),
        _ => None,
    }
}

/// Closes the playlists of a recording whose writer died: players treat
/// a playlist without `#EXT-X-ENDLIST` as still live.
fn seal_recording(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let playlist = entry.path().join(codec::hls::MEDIA_PLAYLIST);
        if playlist.exists()
            && let Err(error) = codec::hls::seal_playlist(&playlist)
        {
            tracing::warn!(playlist = %playlist.display(), %error, "could not seal a playlist");
        }
    }
}
