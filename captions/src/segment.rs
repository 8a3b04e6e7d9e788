//! Voice-activity segmentation, sans-IO: a stream's sound (16 kHz mono,
//! what Whisper takes) cut into utterances at pauses, so recognition runs
//! on whole phrases and a caption is final as soon as the speaker pauses.
//!
//! Energy-based: a 30 ms frame is speech when it is well above the noise
//! floor, the quietest frame of the last few seconds (speech pauses
//! between words; steady noise, a fan, never does, so it becomes the
//! floor and stops counting as speech).
//! An utterance starts with a little of the sound before it (consonants
//! start quiet), ends after a pause, and is cut when it runs too long, so
//! a caption never waits on a speaker who does not pause. While it lasts,
//! partial snapshots come out at a steady pace for partial captions.

use std::collections::VecDeque;

/// Whisper's sampling rate.
pub const SAMPLE_RATE: u32 = 16_000;
const FRAME: usize = (SAMPLE_RATE as usize) * 30 / 1000;
const FRAME_MS: u64 = 30;

#[derive(Debug, Clone, PartialEq)]
pub struct SegmenterConfig {
    /// Dropped when shorter: clicks and coughs.
    pub min_speech_ms: u64,
    /// The pause that ends an utterance.
    pub end_silence_ms: u64,
    /// An utterance longer than this is cut (and the next one starts).
    pub max_utterance_ms: u64,
    /// A partial snapshot this often while an utterance lasts; 0: none.
    pub partial_every_ms: u64,
    /// Sound kept from before an utterance's first loud frame.
    pub pre_roll_ms: u64,
    /// How far above the noise floor speech is.
    pub above_floor_db: f32,
    /// Never speech below this level (dBFS).
    pub min_level_dbfs: f32,
}

impl Default for SegmenterConfig {
    fn default() -> Self {
        Self {
            min_speech_ms: 250,
            end_silence_ms: 450,
            max_utterance_ms: 8_000,
            partial_every_ms: 1_000,
            pre_roll_ms: 210,
            above_floor_db: 12.0,
            min_level_dbfs: -45.0,
        }
    }
}

/// A piece of speech, times in ms from the first sample pushed.
#[derive(Debug, Clone, PartialEq)]
pub struct Utterance {
    pub start_ms: u64,
    pub end_ms: u64,
    pub samples: Vec<f32>,
    /// False for a snapshot of an utterance still going on.
    pub final_: bool,
}

pub struct Segmenter {
    config: SegmenterConfig,
    /// Samples of the frame being filled.
    partial_frame: Vec<f32>,
    /// Stream time of the next frame's first sample.
    frame_ms: u64,
    /// The last frames before speech (pre-roll), with their times.
    recent: VecDeque<(u64, Vec<f32>)>,
    speaking: Option<Speech>,
    /// Levels of the last frames, for the floor.
    levels: VecDeque<f32>,
    out: VecDeque<Utterance>,
}

/// The window the floor is the minimum of.
const FLOOR_WINDOW_MS: u64 = 4_000;

struct Speech {
    start_ms: u64,
    samples: Vec<f32>,
    loud_ms: u64,
    quiet_run_ms: u64,
    last_partial_ms: u64,
}

impl Segmenter {
    pub fn new(config: SegmenterConfig) -> Self {
        Self {
            config,
            partial_frame: Vec::with_capacity(FRAME),
            frame_ms: 0,
            recent: VecDeque::new(),
            speaking: None,
            levels: VecDeque::new(),
            out: VecDeque::new(),
        }
    }

    /// Feeds samples (16 kHz mono, -1..1).
    pub fn push(&mut self, samples: &[f32]) {
        for sample in samples {
            self.partial_frame.push(*sample);
            if self.partial_frame.len() == FRAME {
                let frame = std::mem::replace(&mut self.partial_frame, Vec::with_capacity(FRAME));
                self.frame(frame);
            }
        }
    }

    /// The next utterance (or partial snapshot), in order.
    pub fn poll(&mut self) -> Option<Utterance> {
        self.out.pop_front()
    }

    /// The stream ended: what is being said is final now.
    pub fn finish(&mut self) {
        self.end_utterance();
    }

    /// Whether an utterance is under way.
    pub fn in_speech(&self) -> bool {
        self.speaking.is_some()
    }

    fn frame(&mut self, frame: Vec<f32>) {
        let at = self.frame_ms;
        self.frame_ms += FRAME_MS;
        let level = level_dbfs(&frame).max(-90.0);
        self.levels.push_back(level);
        if self.levels.len() as u64 * FRAME_MS > FLOOR_WINDOW_MS {
            self.levels.pop_front();
        }
        let floor = self.levels.iter().copied().fold(f32::INFINITY, f32::min);
        let loud = level > (floor + self.config.above_floor_db).max(self.config.min_level_dbfs);
        match self.speaking.as_mut() {
            None if loud => {
                // Speech starts, with what came just before it.
                let mut samples = Vec::new();
                let start_ms = self.recent.front().map_or(at, |(t, _)| *t);
                for (_, earlier) in self.recent.drain(..) {
                    samples.extend(earlier);
                }
                samples.extend(&frame);
                self.speaking = Some(Speech {
                    start_ms,
                    samples,
                    loud_ms: FRAME_MS,
                    quiet_run_ms: 0,
                    last_partial_ms: start_ms,
                });
            }
            None => {
                self.recent.push_back((at, frame));
                while self.recent.len() as u64 * FRAME_MS > self.config.pre_roll_ms {
                    self.recent.pop_front();
                }
            }
            Some(speech) => {
                speech.samples.extend(&frame);
                if loud {
                    speech.loud_ms += FRAME_MS;
                    speech.quiet_run_ms = 0;
                } else {
                    speech.quiet_run_ms += FRAME_MS;
                }
                let end_ms = at + FRAME_MS;
                if speech.quiet_run_ms >= self.config.end_silence_ms {
                    self.end_utterance();
                } else if end_ms - speech.start_ms + FRAME_MS > self.config.max_utterance_ms {
                    // Cut before the next frame would make it too long:
                    // the next utterance goes on from here.
                    self.end_utterance();
                } else if self.config.partial_every_ms > 0
                    && end_ms - speech.last_partial_ms >= self.config.partial_every_ms
                    && speech.loud_ms >= self.config.min_speech_ms
                {
                    speech.last_partial_ms = end_ms;
                    let snapshot = Utterance {
                        start_ms: speech.start_ms,
                        end_ms,
                        samples: speech.samples.clone(),
                        final_: false,
                    };
                    self.out.push_back(snapshot);
                }
            }
        }
    }

    fn end_utterance(&mut self) {
        let Some(speech) = self.speaking.take() else {
            return;
        };
        if speech.loud_ms < self.config.min_speech_ms {
            return;
        }
        // The pause that ended it is not part of it.
        let trailing = (speech.quiet_run_ms as usize) * (SAMPLE_RATE as usize) / 1000;
        let mut samples = speech.samples;
        samples.truncate(samples.len().saturating_sub(trailing));
        let end_ms = speech.start_ms + (samples.len() as u64) * 1000 / u64::from(SAMPLE_RATE);
        self.out.push_back(Utterance {
            start_ms: speech.start_ms,
            end_ms,
            samples,
            final_: true,
        });
    }
}

fn level_dbfs(frame: &[f32]) -> f32 {
    let power = frame.iter().map(|s| s * s).sum::<f32>() / frame.len().max(1) as f32;
    10.0 * (power + 1e-12).log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn silence(ms: u64) -> Vec<f32> {
        vec![0.0; (ms * 16) as usize]
    }

    /// Speech-like sound: a tone in syllables (three a second) that fall
    /// almost silent between them, as consonants and breaths do.
    fn voice(ms: u64) -> Vec<f32> {
        (0..ms * 16)
            .map(|i| {
                let t = i as f32 / 16_000.0;
                let envelope = (t * std::f32::consts::PI * 3.0).sin().powi(2);
                0.3 * envelope * (t * 2.0 * std::f32::consts::PI * 220.0).sin()
            })
            .collect()
    }

    /// Deterministic noise at about `dbfs`.
    fn noise(ms: u64, dbfs: f32) -> Vec<f32> {
        let amplitude = 10f32.powf(dbfs / 20.0) * 3f32.sqrt();
        let mut state = 0x2545_f491_u32;
        (0..ms * 16)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state as f32 / u32::MAX as f32 * 2.0 - 1.0) * amplitude
            })
            .collect()
    }

    fn finals(segmenter: &mut Segmenter) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        while let Some(u) = segmenter.poll() {
            if u.final_ {
                out.push((u.start_ms, u.end_ms));
            }
        }
        out
    }

    #[test]
    fn two_phrases_separated_by_a_pause_are_two_utterances_with_their_times() {
        let mut segmenter = Segmenter::new(SegmenterConfig::default());
        for piece in [
            silence(1_000),
            voice(1_500),
            silence(600),
            voice(900),
            silence(1_000),
        ] {
            segmenter.push(&piece);
        }
        let utterances = finals(&mut segmenter);
        assert_eq!(utterances.len(), 2, "{utterances:?}");
        let (start, end) = utterances[0];
        assert!((780..=1_000).contains(&start), "with its pre-roll: {start}");
        assert!(
            (2_490..=2_560).contains(&end),
            "ends where the voice does: {end}"
        );
        let (start, end) = utterances[1];
        assert!((2_880..=3_100).contains(&start), "{start}");
        assert!((3_990..=4_060).contains(&end), "{end}");
    }

    #[test]
    fn partials_come_while_speaking_then_the_final() {
        let mut segmenter = Segmenter::new(SegmenterConfig::default());
        segmenter.push(&silence(300));
        segmenter.push(&voice(3_200));
        segmenter.push(&silence(600));
        let mut kinds = Vec::new();
        while let Some(u) = segmenter.poll() {
            kinds.push((u.final_, u.end_ms - u.start_ms));
        }
        let partials = kinds.iter().filter(|(final_, _)| !final_).count();
        assert_eq!(partials, 3, "one a second: {kinds:?}");
        assert!(kinds.last().is_some_and(|(final_, _)| *final_));
        assert!(
            kinds.windows(2).all(|w| w[0].1 < w[1].1),
            "each longer: {kinds:?}"
        );
    }

    #[test]
    fn a_click_is_not_speech_and_a_monologue_is_cut() {
        let mut segmenter = Segmenter::new(SegmenterConfig::default());
        segmenter.push(&silence(500));
        segmenter.push(&voice(90));
        segmenter.push(&silence(1_000));
        assert!(finals(&mut segmenter).is_empty(), "a click");

        segmenter.push(&voice(20_000));
        segmenter.finish();
        let cut = finals(&mut segmenter);
        assert_eq!(cut.len(), 3, "8 s, 8 s and the rest: {cut:?}");
        assert!(
            cut.iter().all(|(start, end)| end - start <= 8_000),
            "{cut:?}"
        );
        assert_eq!(cut[1].0, cut[0].1, "no gap between the pieces");
    }

    #[test]
    fn steady_noise_becomes_the_floor_and_speech_over_it_still_counts() {
        let mut segmenter = Segmenter::new(SegmenterConfig::default());
        segmenter.push(&noise(10_000, -30.0));
        let during_noise = finals(&mut segmenter);
        assert!(
            during_noise.len() <= 1,
            "noise settles into the floor: {during_noise:?}"
        );
        let mut loud = voice(1_500);
        for (v, n) in loud.iter_mut().zip(noise(1_500, -30.0)) {
            *v += n;
        }
        segmenter.push(&loud);
        segmenter.push(&noise(1_000, -30.0));
        assert_eq!(finals(&mut segmenter).len(), 1, "the voice over the noise");
    }
}
