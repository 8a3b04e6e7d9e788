//! Listening to one stream: its Opus packets become 16 kHz speech, cut
//! into utterances, handed to the node's [`Transcriber`].
//!
//! Runs on a thread of its own per stream (decoding is cheap, but it must
//! never wait on the media thread or the recognizer). Times follow the
//! packets' RTP clock, not their arrival, so jitter does not stretch an
//! utterance; a gap (packets lost, a muted publisher sending nothing) is
//! heard as silence, and a long one starts the timeline again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use codec::{OPUS_SAMPLE_RATE, SPEECH_SAMPLE_RATE, SpeechDecoder};
use tokio::sync::mpsc::UnboundedSender;

use crate::segment::{Segmenter, SegmenterConfig};
use crate::transcribe::{Heard, Job, Transcriber};

/// One Opus packet of a stream's audio.
#[derive(Debug, Clone)]
pub struct SoundPacket {
    pub opus: Arc<[u8]>,
    /// RTP time at 48 kHz.
    pub rtp_time: u64,
    pub received: Instant,
}

/// A gap longer than this starts the timeline again instead of being
/// filled with silence.
const MAX_GAP_SAMPLES: u64 = 5 * OPUS_SAMPLE_RATE as u64;

static LISTENERS: AtomicU64 = AtomicU64::new(1);

/// Listens until `packets` ends, then hands over what was being said.
pub fn listen(
    packets: impl Iterator<Item = SoundPacket>,
    transcriber: &Transcriber,
    reply: &UnboundedSender<Heard>,
) {
    let listener = LISTENERS.fetch_add(1, Ordering::Relaxed);
    let mut decoder = match SpeechDecoder::open() {
        Ok(decoder) => decoder,
        Err(error) => {
            tracing::error!(%error, "no Opus decoder: the stream gets no captions");
            return;
        }
    };
    let mut timeline: Option<Timeline> = None;
    let mut speech = Vec::with_capacity(1024);
    for packet in packets {
        if reply.is_closed() {
            return;
        }
        let line = match &mut timeline {
            Some(line) if packet.rtp_time < line.next_rtp => continue,
            Some(line) if packet.rtp_time - line.next_rtp > MAX_GAP_SAMPLES => {
                line.end(listener, transcriber, reply);
                timeline.insert(Timeline::start(&packet))
            }
            Some(line) => line,
            None => timeline.insert(Timeline::start(&packet)),
        };
        let gap = packet.rtp_time - line.next_rtp;
        if gap > 0 {
            let silence = gap * u64::from(SPEECH_SAMPLE_RATE) / u64::from(OPUS_SAMPLE_RATE);
            line.segmenter.push(&vec![0.0; silence as usize]);
        }
        speech.clear();
        match decoder.decode(&packet.opus, &mut speech) {
            Ok(duration) => {
                line.next_rtp = packet.rtp_time + duration as u64;
                line.segmenter.push(&speech);
            }
            Err(error) => {
                metrics::counter!("live_caption_decode_errors_total").increment(1);
                tracing::debug!(%error, "an Opus packet did not decode");
                line.next_rtp = packet.rtp_time;
            }
        }
        line.hand_over(listener, transcriber, reply);
    }
    if let Some(line) = &mut timeline {
        line.end(listener, transcriber, reply);
    }
}

/// A run of the stream's sound without a long gap.
struct Timeline {
    segmenter: Segmenter,
    /// Wall clock (ms) of the run's first sample.
    origin_ms: u64,
    /// The RTP time the next packet should have.
    next_rtp: u64,
}

impl Timeline {
    fn start(packet: &SoundPacket) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let age = packet.received.elapsed().as_millis() as u64;
        Self {
            segmenter: Segmenter::new(SegmenterConfig::default()),
            origin_ms: now.saturating_sub(age),
            next_rtp: packet.rtp_time,
        }
    }

    fn hand_over(
        &mut self,
        listener: u64,
        transcriber: &Transcriber,
        reply: &UnboundedSender<Heard>,
    ) {
        while let Some(utterance) = self.segmenter.poll() {
            transcriber.submit(Job {
                listener,
                utterance,
                origin_ms: self.origin_ms,
                reply: reply.clone(),
            });
        }
    }

    fn end(&mut self, listener: u64, transcriber: &Transcriber, reply: &UnboundedSender<Heard>) {
        self.segmenter.finish();
        self.hand_over(listener, transcriber, reply);
    }
}
