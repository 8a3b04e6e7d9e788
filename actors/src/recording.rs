//! Recordings: a stream's transcode, its HLS output on disk and the
//! `recording.*` events that announce it.
//!
//! A [`StreamActor`](crate::stream::StreamActor) starts a recording when
//! its publisher connects with video (and a transcode slot is free). The
//! job runs on its own thread in the media plane; a recorder task here
//! turns the job's reports into outbox events and keeps the node's table
//! of live recordings (what `/hls/{room}/{stream}/…` serves). When the job
//! fails while the stream is still live, the recorder tells the stream's
//! supervisor, which has the StreamActor start a new recording (within a
//! restart budget).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::UNIX_EPOCH;

use codec::ladder::LadderConfig;
use protocol::v1::{RecordingFinished, RecordingRendition, RecordingSegment, RecordingStarted};
use ractor::ActorRef;
use sfu::{MediaPlane, StreamKey, TranscodeEvent, TranscodeJob};
use storage::Store;

use crate::events::{self, outbox_event};
use crate::now_ms;
use crate::stream::StreamSupervisorMsg;
use crate::subtitles::SubtitleTracks;

/// Tries to store one recording event before giving up on it.
const APPEND_ATTEMPTS: u32 = 5;

/// The recording each live stream of this node is writing now.
#[derive(Clone, Default)]
pub struct LiveRecordings(Arc<RwLock<HashMap<StreamKey, LiveRecording>>>);

/// A recording being written.
#[derive(Clone)]
pub struct LiveRecording {
    pub id: String,
    /// Wall clock (ms since the epoch) of its media time 0.
    pub origin_ms: u64,
    /// Its caption tracks (none: the ladder names no subtitles).
    pub subtitles: Option<Arc<Mutex<SubtitleTracks>>>,
}

impl LiveRecording {
    /// A final caption line into the recording's track in its language.
    pub fn caption(&self, lang: &str, start_ms: u64, end_ms: u64, text: &str) {
        if let Some(tracks) = &self.subtitles {
            lock(tracks).push(lang, start_ms, end_ms, text);
        }
    }
}

fn lock(tracks: &Mutex<SubtitleTracks>) -> std::sync::MutexGuard<'_, SubtitleTracks> {
    tracks.lock().unwrap_or_else(|e| e.into_inner())
}

impl LiveRecordings {
    /// The recording id of a live stream, once its playlists exist.
    pub fn get(&self, room: &str, stream: &str) -> Option<String> {
        self.recording(&StreamKey::new(room, stream))
            .map(|recording| recording.id)
    }

    /// A live stream's recording, once its playlists exist.
    pub fn recording(&self, key: &StreamKey) -> Option<LiveRecording> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    pub(crate) fn set(&self, key: StreamKey, recording: LiveRecording) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, recording);
    }

    fn remove(&self, key: &StreamKey, recording: &str) {
        let mut table = self.0.write().unwrap_or_else(|e| e.into_inner());
        if table
            .get(key)
            .is_some_and(|current| current.id == recording)
        {
            table.remove(key);
        }
    }
}

/// What stream actors need to record: the media plane that runs jobs, the
/// ladder and where recordings go (`<root>/<recording id>/`).
#[derive(Clone)]
pub struct RecordingConfig {
    pub media: MediaPlane,
    /// The ladder of every job; `recording_dir` and `audio` are set per
    /// recording.
    pub ladder: LadderConfig,
    pub root: PathBuf,
    pub live: LiveRecordings,
}

impl std::fmt::Debug for RecordingConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingConfig")
            .field("ladder", &self.ladder)
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// Starts recording a live stream: a transcode job and the task that
/// reports on it. `None` when no job could start (no slot, stream gone).
pub(crate) async fn start(
    config: &RecordingConfig,
    key: &StreamKey,
    audio: bool,
    publisher: &str,
    store: Arc<dyn Store>,
    supervisor: Option<ActorRef<StreamSupervisorMsg>>,
) -> Option<String> {
    let id = uuid::Uuid::now_v7().to_string();
    let mut ladder = config.ladder.clone();
    ladder.recording_dir = Some(config.root.join(&id));
    ladder.audio = audio;
    let job = TranscodeJob {
        stream: key.clone(),
        ladder,
    };
    let transcode = match config.media.transcode(job).await {
        Ok(transcode) => transcode,
        Err(error) => {
            tracing::warn!(room = %key.room, stream = %key.stream, %error, "not recording");
            return None;
        }
    };
    let recorder = Recorder {
        dir: config.root.join(&id),
        subtitle_langs: config.ladder.subtitles.clone(),
        segment_ms: u64::from(config.ladder.segment_seconds) * 1000,
        subtitles: None,
        id: id.clone(),
        key: key.clone(),
        encoder: config.ladder.encoder.clone(),
        publisher: publisher.to_owned(),
        store,
        live: config.live.clone(),
        started: false,
        origin_ms: 0,
        segment_starts: HashMap::new(),
        renditions: 0,
        offered: false,
    };
    tokio::spawn(recorder.run(transcode.events, supervisor));
    tracing::info!(room = %key.room, stream = %key.stream, recording = %id, "recording");
    Some(id)
}

struct Recorder {
    id: String,
    dir: PathBuf,
    /// Caption languages the master playlist names, and their tracks once
    /// the recording opened.
    subtitle_langs: Vec<String>,
    segment_ms: u64,
    subtitles: Option<Arc<Mutex<SubtitleTracks>>>,
    key: StreamKey,
    encoder: String,
    publisher: String,
    store: Arc<dyn Store>,
    live: LiveRecordings,
    started: bool,
    /// Wall clock of media time 0 (from `Opened`).
    origin_ms: u64,
    /// Per rendition: where its next segment starts (ms).
    segment_starts: HashMap<String, u64>,
    /// Renditions of the ladder; the recording is served live once each
    /// has a segment (a player needs every playlist it is offered).
    renditions: usize,
    /// Served live already (set once, not per segment).
    offered: bool,
}

impl Recorder {
    async fn run(
        mut self,
        mut events: tokio::sync::mpsc::UnboundedReceiver<TranscodeEvent>,
        supervisor: Option<ActorRef<StreamSupervisorMsg>>,
    ) {
        while let Some(event) = events.recv().await {
            let failed = match &event {
                TranscodeEvent::Ended { error, .. } => error.is_some(),
                _ => false,
            };
            let ended = matches!(event, TranscodeEvent::Ended { .. });
            if let Err(error) = self.report(event).await {
                tracing::error!(recording = %self.id, %error, "a recording event was not stored");
            }
            if ended {
                if failed && let Some(supervisor) = &supervisor {
                    let _ = supervisor.cast(StreamSupervisorMsg::RecordingFailed(self.key.clone()));
                }
                break;
            }
        }
        self.live.remove(&self.key, &self.id);
    }

    async fn report(&mut self, event: TranscodeEvent) -> Result<(), storage::StoreError> {
        match event {
            TranscodeEvent::Opened {
                renditions, origin, ..
            } => {
                let origin_ms = origin
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                let danmaku_seq_start = self.store.last_danmaku_seq(&self.key.room).await?;
                let event = RecordingStarted {
                    recording_id: self.id.clone(),
                    room_id: self.key.room.clone(),
                    stream: self.key.stream.clone(),
                    media_origin_ms: origin_ms,
                    renditions: renditions
                        .into_iter()
                        .map(|r| RecordingRendition {
                            name: r.name,
                            width: r.width,
                            height: r.height,
                            bitrate_bps: r.bitrate_bps,
                        })
                        .collect(),
                    danmaku_seq_start,
                    encoder: self.encoder.clone(),
                    publisher_user_id: self.publisher.clone(),
                };
                self.started = true;
                self.origin_ms = origin_ms;
                self.open_subtitles();
                self.renditions = event.renditions.len();
                self.append(events::RECORDING_STARTED, &event).await
            }
            TranscodeEvent::Segment { rendition, segment } => {
                if let Some(tracks) = &self.subtitles {
                    lock(tracks).cut(now_ms());
                }
                let start = self.segment_starts.entry(rendition.clone()).or_default();
                let start_ms = *start;
                *start += segment.duration_ms;
                let playable = self.segment_starts.len() == self.renditions && self.renditions > 0;
                if playable && !self.offered {
                    self.offered = true;
                    let live = LiveRecording {
                        id: self.id.clone(),
                        origin_ms: self.origin_ms,
                        subtitles: self.subtitles.clone(),
                    };
                    self.live.set(self.key.clone(), live);
                }
                let event = RecordingSegment {
                    recording_id: self.id.clone(),
                    room_id: self.key.room.clone(),
                    stream: self.key.stream.clone(),
                    rendition,
                    sequence: segment.sequence,
                    uri: segment.uri,
                    duration_ms: segment.duration_ms,
                    start_ms,
                };
                self.append(events::RECORDING_SEGMENT, &event).await
            }
            TranscodeEvent::Ended { stats, error } => {
                if let Some(tracks) = self.subtitles.take() {
                    lock(&tracks).finish();
                }
                metrics::counter!("live_recordings_total", "outcome" => if error.is_some() { "failed" } else { "finished" })
                    .increment(1);
                if !self.started {
                    // No keyframe ever decoded: nothing was recorded.
                    return Ok(());
                }
                let event = RecordingFinished {
                    recording_id: self.id.clone(),
                    room_id: self.key.room.clone(),
                    stream: self.key.stream.clone(),
                    duration_ms: stats.duration_ms,
                    finished_ms: now_ms(),
                    frames_in: stats.frames_in,
                    decode_errors: stats.decode_errors,
                    error: error.unwrap_or_default(),
                };
                self.append(events::RECORDING_FINISHED, &event).await
            }
        }
    }

    /// Creates the caption tracks the master playlist names, before the
    /// recording is offered to players.
    fn open_subtitles(&mut self) {
        if self.subtitle_langs.is_empty() {
            return;
        }
        match SubtitleTracks::create(
            &self.id,
            &self.dir,
            &self.subtitle_langs,
            self.segment_ms,
            self.origin_ms,
        ) {
            Ok(tracks) => self.subtitles = Some(Arc::new(Mutex::new(tracks))),
            Err(error) => {
                metrics::counter!("live_caption_subtitle_errors_total").increment(1);
                tracing::error!(recording = %self.id, %error, "cannot write the recording's subtitles");
            }
        }
    }

    /// Stores one event, retrying a failing store a few times: every
    /// later event of the recording depends on its `recording.started`.
    async fn append(
        &self,
        kind: &str,
        payload: &impl prost::Message,
    ) -> Result<(), storage::StoreError> {
        let event = outbox_event(kind, &self.key.room, now_ms(), payload);
        let mut delay = std::time::Duration::from_millis(100);
        for _ in 1..APPEND_ATTEMPTS {
            match self.store.append_event(event.clone()).await {
                Ok(()) => return Ok(()),
                Err(error) => {
                    tracing::warn!(recording = %self.id, %error, ?delay, "retrying a recording event");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
        self.store.append_event(event).await
    }
}
