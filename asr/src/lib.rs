//! # asr: speech recognition for live captions
//!
//! Whisper through CTranslate2 (the `ct2rs` crate), behind the captions
//! crate's [`Recognizer`]. Its own crate because CTranslate2 is C++ built
//! from source (minutes, once per target directory): only what runs
//! recognition links it (see docs/captions.md).
//!
//! Models are CTranslate2 conversions of Whisper installed by
//! `scripts/install-models` (from registry packages; nothing is fetched at
//! run time), each a directory with `model.bin`, `config.json`,
//! `tokenizer.json`, `vocabulary.txt` and `preprocessor_config.json`.

mod features;

use std::path::{Path, PathBuf};

use captions::recognize::{Effort, RecognizeError, Recognizer};
use ct2rs::Tokenizer as _;
use ct2rs::sys::{StorageView, WhisperOptions};
use ct2rs::tokenizers::hf;

use crate::features::{FRAMES, Features, N_MELS};

/// Whisper's own judgement that an utterance holds no speech: the
/// no-speech token is likely and what was written is unlikely (OpenAI's
/// and faster-whisper's thresholds), or the no-speech token is very likely
/// whatever was written (silence gets " you" at -0.8 per token, with the
/// no-speech token at 0.95; speech here scores below 0.05). Noise and
/// music that passed the voice activity detector end here instead of as a
/// caption ("I", "You").
const NO_SPEECH_PROB: f32 = 0.6;
const LOW_AVG_LOGPROB: f32 = -1.0;
const SURELY_NO_SPEECH_PROB: f32 = 0.8;

/// The files a model directory must hold.
const MODEL_FILES: [&str; 4] = [
    "model.bin",
    "config.json",
    "tokenizer.json",
    "preprocessor_config.json",
];

#[derive(Debug, thiserror::Error)]
pub enum AsrError {
    #[error("no Whisper model in {dir}: {file} is missing (scripts/install-models installs one)")]
    Missing { dir: PathBuf, file: &'static str },
    #[error(
        "the Whisper model in {dir} is English-only; it cannot hear `{lang}` (or translate into English)"
    )]
    EnglishOnly { dir: PathBuf, lang: String },
    #[error("the Whisper model in {dir} did not load: {reason}")]
    Load { dir: PathBuf, reason: String },
}

impl AsrError {
    /// The model directory at fault.
    pub fn dir(&self) -> &Path {
        match self {
            Self::Missing { dir, .. } | Self::EnglishOnly { dir, .. } | Self::Load { dir, .. } => {
                dir
            }
        }
    }
}

/// What recognition costs and how hard it tries.
#[derive(Debug, Clone)]
pub struct WhisperConfig {
    /// The language spoken on streams (Whisper is told, not asked: its
    /// guess from a second of speech is unreliable).
    pub lang: String,
    /// CPU threads one recognition uses.
    pub threads: usize,
    /// Beam width for final lines (partials are greedy: they are
    /// replaced within a second).
    pub final_beam: usize,
    /// Write English whatever is spoken (Whisper's translate task): for
    /// streams in a language the translator has no pair from. Needs a
    /// multilingual model.
    pub into_english: bool,
}

impl WhisperConfig {
    /// The language lines are written in.
    fn written(&self) -> &str {
        if self.into_english { "en" } else { &self.lang }
    }
}

/// Whisper models loaded: one for final lines, and optionally a smaller,
/// faster one for partial lines (measured here on espeak-ng speech:
/// base, 2 threads: 1.5 s an utterance, 3 % word errors; tiny.en: 0.8 s,
/// 17 %; a partial is replaced within a second, a final line stays).
pub struct Whisper {
    final_model: Model,
    partial_model: Option<Model>,
    features: Features,
    config: WhisperConfig,
}

impl Whisper {
    /// Loads the model for final lines from `final_dir`, and the one for
    /// partial lines from `partial_dir` (none: the same model for both).
    pub fn load(
        final_dir: &Path,
        partial_dir: Option<&Path>,
        config: WhisperConfig,
    ) -> Result<Self, AsrError> {
        let final_model = Model::load(final_dir, &config)?;
        let partial_model = partial_dir
            .map(|dir| Model::load(dir, &config))
            .transpose()?;
        Ok(Self {
            final_model,
            partial_model,
            features: Features::new(),
            config,
        })
    }
}

/// One CTranslate2 Whisper model and its tokenizer.
struct Model {
    whisper: ct2rs::sys::Whisper,
    tokenizer: hf::Tokenizer,
    /// The tokens every transcription starts with: start, language and
    /// task for a multilingual model; start alone for an English-only one
    /// (it was trained without the others).
    prompt: Vec<String>,
}

/// What a model wrote, and how sure it was.
struct Transcript {
    text: String,
    no_speech_prob: f32,
    avg_logprob: f32,
}

impl Model {
    fn load(dir: &Path, config: &WhisperConfig) -> Result<Self, AsrError> {
        for file in MODEL_FILES {
            if !dir.join(file).is_file() {
                return Err(AsrError::Missing {
                    dir: dir.to_owned(),
                    file,
                });
            }
        }
        let failed = |error: anyhow::Error| AsrError::Load {
            dir: dir.to_owned(),
            reason: format!("{error:#}"),
        };
        let ct2 = ct2rs::Config {
            num_threads_per_replica: config.threads.max(1),
            // The packaged models are float16, which CPUs here do not
            // compute efficiently; int8 (quantized at load, through ruy) is
            // about a third faster than float32 and hears the same words.
            compute_type: ct2rs::ComputeType::INT8,
            ..ct2rs::Config::default()
        };
        let whisper = ct2rs::sys::Whisper::new(dir, ct2).map_err(failed)?;
        let tokenizer = hf::Tokenizer::new(dir).map_err(failed)?;
        let task = if config.into_english {
            "<|translate|>"
        } else {
            "<|transcribe|>"
        };
        let prompt = if whisper.is_multilingual() {
            vec![
                "<|startoftranscript|>".to_owned(),
                format!("<|{}|>", config.lang),
                task.to_owned(),
                "<|notimestamps|>".to_owned(),
            ]
        } else if config.lang == "en" && !config.into_english {
            vec![
                "<|startoftranscript|>".to_owned(),
                "<|notimestamps|>".to_owned(),
            ]
        } else {
            return Err(AsrError::EnglishOnly {
                dir: dir.to_owned(),
                lang: config.lang.clone(),
            });
        };
        Ok(Self {
            whisper,
            tokenizer,
            prompt,
        })
    }

    fn transcribe(&self, features: &mut [f32], beam: usize) -> anyhow::Result<Transcript> {
        let view = StorageView::new(&[1, N_MELS, FRAMES], features, Default::default())?;
        let options = WhisperOptions {
            beam_size: beam.max(1),
            return_scores: true,
            return_no_speech_prob: true,
            ..WhisperOptions::default()
        };
        let result = self
            .whisper
            .generate(&view, std::slice::from_ref(&self.prompt), &options)?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow::anyhow!("no result"))?;
        let tokens: Vec<String> = result
            .sequences
            .into_iter()
            .next()
            .unwrap_or_default()
            .into_iter()
            .filter(|token| !(token.starts_with("<|") && token.ends_with("|>")))
            .collect();
        Ok(Transcript {
            text: self.tokenizer.decode(tokens)?,
            no_speech_prob: result.no_speech_prob,
            avg_logprob: result.scores.first().copied().unwrap_or(0.0),
        })
    }
}

impl Recognizer for Whisper {
    fn language(&self) -> &str {
        self.config.written()
    }

    fn recognize(&mut self, speech: &[f32], effort: Effort) -> Result<String, RecognizeError> {
        let (model, beam) = match effort {
            Effort::Partial | Effort::FinalBehind => {
                (self.partial_model.as_ref().unwrap_or(&self.final_model), 1)
            }
            Effort::Final => (&self.final_model, self.config.final_beam),
        };
        let mut features = self.features.of(speech);
        let transcript = model
            .transcribe(&mut features, beam)
            .map_err(|error| RecognizeError(format!("{error:#}")))?;
        let unlikely =
            transcript.no_speech_prob > NO_SPEECH_PROB && transcript.avg_logprob < LOW_AVG_LOGPROB;
        if unlikely || transcript.no_speech_prob > SURELY_NO_SPEECH_PROB {
            tracing::debug!(text = %transcript.text, no_speech = transcript.no_speech_prob, "not speech");
            return Ok(String::new());
        }
        Ok(transcript.text)
    }
}
