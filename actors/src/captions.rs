//! Captions: what is said on a room's streams, as `caption` frames in the
//! language spoken and in every language a viewer of the room watches,
//! and as WebVTT in the stream's recording (docs/captions.md).
//!
//! Per stream, one *captioner* task takes its lines in order, from speech
//! recognition (a listener thread on the stream's sound, through the
//! node's [`Transcriber`]), from the room's program (its host's lines) or
//! sent as text (the API): it broadcasts each line once per language
//! (sessions keep the frames in the language they chose), translates only
//! into languages someone watches (and, for final lines, those recorded),
//! and writes final lines into the recording's subtitle tracks. Nothing
//! here runs per viewer.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use captions::Translator;
use captions::listen::SoundPacket;
use captions::transcribe::{Heard, Transcriber};
use captions::translate::LINE_TIMEOUT;
use protocol::v1::Caption;
use protocol::v1::server_frame::Frame;
use sfu::{MediaPlane, StreamKey};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

use crate::hub::{Broadcast, RoomHub};
use crate::recording::LiveRecordings;

/// What captions need and where they find it.
#[derive(Clone)]
pub struct CaptionsConfig {
    pub media: MediaPlane,
    /// Speech recognition; none: lines come only from programs and the API.
    pub transcriber: Option<Transcriber>,
    /// Translation; none: lines stay in the language they were said in.
    pub translator: Option<Arc<dyn Translator>>,
    /// The language streams are spoken in (what recognition writes).
    pub spoken: String,
    /// Streams never listened to: rooms' programs caption their host's
    /// lines themselves.
    pub unheard_stream: String,
    /// The streams' recordings, whose subtitle tracks final lines go
    /// into; none: frames only.
    pub recordings: Option<LiveRecordings>,
    /// Languages recordings carry: final lines are translated into these
    /// even when nobody watches them live.
    pub recorded: Vec<String>,
}

/// A line for a stream's captioner.
#[derive(Debug, Clone)]
pub struct Line {
    pub caption: Caption,
    /// For recognized lines: when the recognizer finished.
    pub recognized: Option<SystemTime>,
}

/// The captions of this node's streams.
#[derive(Clone)]
pub struct Captions {
    config: Arc<CaptionsConfig>,
    streams: Arc<Mutex<HashMap<StreamKey, Captioned>>>,
}

struct Captioned {
    lines: UnboundedSender<Line>,
    /// The room's hub the captioner publishes to (a room closed and opened
    /// again has a new one).
    hub: Arc<RoomHub>,
    /// Set to stop the stream's listener (none: not listened to).
    stop_listening: Option<Arc<AtomicBool>>,
}

impl std::fmt::Debug for Captions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Captions")
            .field("spoken", &self.config.spoken)
            .field("recognition", &self.config.transcriber.is_some())
            .finish_non_exhaustive()
    }
}

impl Captions {
    pub fn new(config: CaptionsConfig) -> Self {
        Self {
            config: Arc::new(config),
            streams: Arc::default(),
        }
    }

    /// The language streams are spoken in.
    pub fn spoken(&self) -> &str {
        &self.config.spoken
    }

    /// The languages a viewer can choose: the one spoken, then those it
    /// translates into.
    pub fn offered(&self) -> Vec<String> {
        let mut offered = vec![self.config.spoken.clone()];
        if let Some(translator) = &self.config.translator {
            let targets: BTreeSet<String> = translator
                .pairs()
                .into_iter()
                .filter(|(from, _)| *from == self.config.spoken)
                .map(|(_, to)| to)
                .collect();
            offered.extend(targets.into_iter().filter(|to| *to != self.config.spoken));
        }
        offered
    }

    /// Starts recognizing speech on a stream that went live (when this
    /// node recognizes speech, and the stream is not a program).
    pub async fn listen(&self, key: &StreamKey, hub: &Arc<RoomHub>) {
        let Some(transcriber) = self.config.transcriber.clone() else {
            return;
        };
        if key.stream == self.config.unheard_stream {
            return;
        }
        let queue = match self.config.media.listen(key.clone()).await {
            Ok(queue) => queue,
            Err(error) => {
                tracing::warn!(room = %key.room, stream = %key.stream, %error, "not listening for captions");
                return;
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let lines = self.lines_for(key, hub, Some(stop.clone()));
        let (heard_tx, heard) = mpsc::unbounded_channel();
        let flag = stop.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("listen-{}", key.room))
            .spawn(move || {
                let packets = std::iter::from_fn(|| next_sound(&queue, &flag));
                captions::listen::listen(packets, &transcriber, &heard_tx);
            });
        if let Err(error) = spawned {
            tracing::error!(%error, "no listener thread: the stream gets no captions");
            return;
        }
        tokio::spawn(forward_heard(heard, key.stream.clone(), lines));
        tracing::info!(room = %key.room, stream = %key.stream, "listening for captions");
    }

    /// Where a stream's lines go (its captioner, started if need be).
    pub fn lines(&self, key: &StreamKey, hub: &Arc<RoomHub>) -> UnboundedSender<Line> {
        self.lines_for(key, hub, None)
    }

    fn lines_for(
        &self,
        key: &StreamKey,
        hub: &Arc<RoomHub>,
        stop_listening: Option<Arc<AtomicBool>>,
    ) -> UnboundedSender<Line> {
        let mut streams = self.lock();
        if let Some(captioned) = streams.get_mut(key)
            && !captioned.lines.is_closed()
            && Arc::ptr_eq(&captioned.hub, hub)
        {
            // A stream listened to again (its publisher came back before
            // the captioner ended): one listener, the new one.
            if let Some(stop) = stop_listening
                && let Some(old) = captioned.stop_listening.replace(stop)
            {
                old.store(true, Ordering::Release);
            }
            return captioned.lines.clone();
        }
        let (lines, queue) = mpsc::unbounded_channel();
        let captioner = Captioner {
            key: key.clone(),
            hub: hub.clone(),
            translator: self.config.translator.clone(),
            recorded: self.config.recorded.clone(),
            recordings: self.config.recordings.clone(),
        };
        tokio::spawn(captioner.run(queue));
        streams.insert(
            key.clone(),
            Captioned {
                lines: lines.clone(),
                hub: hub.clone(),
                stop_listening,
            },
        );
        lines
    }

    /// The stream ended: its listener stops (what was being said is still
    /// recognized and sent), and its captioner ends after its last line.
    pub fn stop(&self, key: &StreamKey) {
        if let Some(captioned) = self.lock().remove(key)
            && let Some(stop) = captioned.stop_listening
        {
            stop.store(true, Ordering::Release);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StreamKey, Captioned>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The stream's next Opus packet, or `None` once the listener is stopped
/// (checked at least every 200 ms while the stream is silent).
fn next_sound(
    queue: &std::sync::mpsc::Receiver<sfu::IngestFrame>,
    stop: &AtomicBool,
) -> Option<SoundPacket> {
    loop {
        if stop.load(Ordering::Acquire) {
            return None;
        }
        match queue.recv_timeout(Duration::from_millis(200)) {
            Ok(frame) => {
                return Some(SoundPacket {
                    opus: frame.data,
                    rtp_time: frame.time,
                    received: frame.received,
                });
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return None,
        }
    }
}

/// Recognized utterances, as lines for the stream's captioner; what was
/// not speech is dropped here (counted).
async fn forward_heard(
    mut heard: UnboundedReceiver<Heard>,
    stream: String,
    lines: UnboundedSender<Line>,
) {
    while let Some(heard) = heard.recv().await {
        let audio_end = UNIX_EPOCH + Duration::from_millis(heard.end_ms);
        if heard.final_ {
            let delay = heard.heard_at.duration_since(audio_end).unwrap_or_default();
            metrics::histogram!("live_caption_stage_seconds", "stage" => "asr")
                .record(delay.as_secs_f64());
        }
        let Some(text) = heard.text else {
            metrics::counter!("live_caption_not_speech_total").increment(1);
            continue;
        };
        let line = Line {
            caption: Caption {
                stream: stream.clone(),
                lang: heard.lang,
                start_ms: heard.start_ms,
                end_ms: heard.end_ms,
                text,
                r#final: heard.final_,
                source: "asr".into(),
                translated_from: String::new(),
            },
            recognized: Some(heard.heard_at),
        };
        if lines.send(line).is_err() {
            return;
        }
    }
}

/// One stream's lines, in order.
struct Captioner {
    key: StreamKey,
    hub: Arc<RoomHub>,
    translator: Option<Arc<dyn Translator>>,
    /// Languages recordings carry: final lines are translated into these
    /// even when nobody watches them live.
    recorded: Vec<String>,
    recordings: Option<LiveRecordings>,
}

impl Captioner {
    async fn run(mut self, mut lines: UnboundedReceiver<Line>) {
        while let Some(line) = lines.recv().await {
            self.say(line).await;
        }
    }

    async fn say(&mut self, line: Line) {
        let Line {
            caption,
            recognized,
        } = line;
        let final_ = caption.r#final;
        self.publish(&caption, recognized, "original");
        let from = caption.lang.clone();
        let mut targets: BTreeSet<String> = self.hub.caption_languages().into_iter().collect();
        if final_ {
            targets.extend(self.recorded.iter().cloned());
        }
        targets.remove(&from);
        targets.remove("");
        let Some(translator) = self.translator.clone() else {
            return;
        };
        for to in targets {
            let started = Instant::now();
            let translated = tokio::time::timeout(
                LINE_TIMEOUT,
                translator.translate(&caption.text, &from, &to),
            )
            .await;
            let text = match translated {
                Ok(Ok(text)) => text,
                // A language nobody translates into from this one: not an error.
                Ok(Err(captions::TranslateError::Unsupported { .. })) => continue,
                Ok(Err(error)) => {
                    metrics::counter!("live_caption_translate_errors_total").increment(1);
                    tracing::warn!(%from, %to, %error, "a caption line was not translated");
                    continue;
                }
                Err(_) => {
                    metrics::counter!("live_caption_translate_errors_total").increment(1);
                    tracing::warn!(%from, %to, "a caption line took too long to translate");
                    continue;
                }
            };
            metrics::histogram!("live_caption_stage_seconds", "stage" => "mt")
                .record(started.elapsed().as_secs_f64());
            let translated = Caption {
                lang: to,
                text,
                translated_from: from.clone(),
                ..caption.clone()
            };
            self.publish(&translated, recognized, "translated");
        }
    }

    /// One frame for the room (sessions keep the languages they chose),
    /// and final lines into the recording.
    fn publish(&mut self, caption: &Caption, recognized: Option<SystemTime>, kind: &'static str) {
        self.hub
            .publish(Broadcast::new(Frame::Caption(caption.clone()), None));
        if !caption.r#final {
            return;
        }
        if let Some(recording) = self
            .recordings
            .as_ref()
            .and_then(|recordings| recordings.recording(&self.key))
        {
            recording.caption(
                &caption.lang,
                caption.start_ms,
                caption.end_ms,
                &caption.text,
            );
        }
        if let Some(recognized) = recognized {
            let now = SystemTime::now();
            let audio_end = UNIX_EPOCH + Duration::from_millis(caption.end_ms);
            if kind == "original" {
                metrics::histogram!("live_caption_stage_seconds", "stage" => "broadcast").record(
                    now.duration_since(recognized)
                        .unwrap_or_default()
                        .as_secs_f64(),
                );
            }
            metrics::histogram!("live_caption_delay_seconds", "kind" => kind).record(
                now.duration_since(audio_end)
                    .unwrap_or_default()
                    .as_secs_f64(),
            );
        }
    }
}
