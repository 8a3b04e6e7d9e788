//! # captions: live subtitles
//!
//! What turns speech on a stream into caption lines in every language a
//! viewer watches in (see docs/captions.md): voice-activity segmentation
//! of a stream's sound, machine translation behind one [`Translator`]
//! interface, and WebVTT for HLS and VOD; listening to a stream's Opus
//! and queueing its utterances for the node's recognizer. The recognizer
//! itself (Whisper through CTranslate2, a long C++ build) is the `asr`
//! crate, behind [`recognize::Recognizer`], kept out of every crate that
//! does not need it.

pub mod listen;
pub mod recognize;
pub mod segment;
pub mod transcribe;
pub mod translate;
pub mod webvtt;

pub use translate::{Apertium, Cached, LibreTranslate, TranslateError, Translator};
