//! # captions: live subtitles
//!
//! What turns speech on a stream into caption lines in every language a
//! viewer watches in (see docs/captions.md): voice-activity segmentation
//! of a stream's sound, machine translation behind one [`Translator`]
//! interface, and WebVTT for HLS and VOD. Speech recognition (Whisper
//! through CTranslate2) comes in its own module with its own build cost,
//! kept out of every crate that does not need it.

pub mod segment;
pub mod translate;
pub mod webvtt;

pub use translate::{Apertium, Cached, LibreTranslate, TranslateError, Translator};
