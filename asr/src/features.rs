//! What Whisper hears: the log-mel spectrogram of one 30 s window, 80 mel
//! bands every 10 ms (25 ms Hann windows), normalized over the whole
//! window as Whisper was trained: log10, floored 8 (80 dB) below the
//! window's loudest value, then scaled to about [-1, 1].
//!
//! Normalizing over the window, not frame by frame, matters: a frame of
//! near-silence normalized on its own looks as loud as speech, and Whisper
//! then writes words for it.

use mel_spec::mel::{log_mel_spectrogram, mel};
use mel_spec::stft::Spectrogram;
use ndarray::Array2;

/// Whisper's feature extractor: 16 kHz, n_fft 400, hop 160, 80 mels,
/// 3000 frames (30 s).
pub(crate) struct Features {
    filters: Array2<f64>,
}

pub(crate) const SAMPLE_RATE: usize = 16_000;
const N_FFT: usize = 400;
const HOP: usize = 160;
pub(crate) const N_MELS: usize = 80;
pub(crate) const FRAMES: usize = 3_000;
/// Below any mel band's power: log10 of it is the floor of silence.
const EPSILON_LOG10: f64 = -10.0;

impl Features {
    pub(crate) fn new() -> Self {
        Self {
            filters: mel(SAMPLE_RATE as f64, N_FFT, N_MELS, None, None, false, true),
        }
    }

    /// The features of `speech` (16 kHz mono; at most 30 s are heard,
    /// padded with silence), row-major `[N_MELS][FRAMES]`.
    pub(crate) fn of(&self, speech: &[f32]) -> Vec<f32> {
        let mut stft = Spectrogram::new(N_FFT, HOP);
        let mut log_mel = vec![EPSILON_LOG10; N_MELS * FRAMES];
        let heard = &speech[..speech.len().min(FRAMES * HOP)];
        // The last window reaches a little past the speech, into silence.
        let hops = heard.len().div_ceil(HOP) + N_FFT / HOP;
        let silence = [0f32; HOP];
        for frame in 0..hops.min(FRAMES) {
            let samples = heard
                .get(frame * HOP..)
                .map_or(&silence[..], |rest| &rest[..rest.len().min(HOP)]);
            let Some(fft) = stft.add(samples) else {
                continue;
            };
            let bands = log_mel_spectrogram(&fft, &self.filters);
            for (band, value) in bands.iter().enumerate() {
                log_mel[band * FRAMES + frame] = *value;
            }
        }
        let floor = log_mel.iter().copied().fold(f64::NEG_INFINITY, f64::max) - 8.0;
        log_mel
            .into_iter()
            .map(|value| ((value.max(floor) + 4.0) / 4.0) as f32)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tone_lights_its_band_and_silence_sits_at_the_floor() {
        let features = Features::new();
        let tone: Vec<f32> = (0..SAMPLE_RATE)
            .map(|i| (i as f32 / SAMPLE_RATE as f32 * 1000.0 * std::f32::consts::TAU).sin() * 0.5)
            .collect();
        let values = features.of(&tone);
        assert_eq!(values.len(), N_MELS * FRAMES);
        let at = |band: usize, frame: usize| values[band * FRAMES + frame];
        let loudest_band = (0..N_MELS)
            .max_by(|a, b| at(*a, 50).total_cmp(&at(*b, 50)))
            .unwrap();
        // 1 kHz is about a third of the way up Whisper's mel scale.
        assert!((20..35).contains(&loudest_band), "band {loudest_band}");
        // The window's maximum maps to (max + 4) / 4, and everything after
        // the tone to the floor, 8 below it: exactly 2 lower.
        let top = values.iter().copied().fold(f32::MIN, f32::max);
        assert!((at(loudest_band, 50) - top).abs() < 0.2);
        assert!((at(loudest_band, 2_000) - (top - 2.0)).abs() < 1e-4);
        assert!((at(0, 2_999) - (top - 2.0)).abs() < 1e-4);
    }
}
