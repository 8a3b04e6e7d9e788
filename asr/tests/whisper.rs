//! Whisper tiny.en (the model `scripts/install-models` installs) on speech
//! that took the path a stream's sound takes: espeak-ng's WAV, Opus at
//! 48 kHz stereo, decoded to 16 kHz mono.

use std::path::{Path, PathBuf};

use asr::{AsrError, Whisper, WhisperConfig};
use captions::recognize::{Effort, Recognizer, caption_text};
use codec::{OpusEncoder, SpeechDecoder};

/// An installed model (`scripts/install-models` installs what is missing).
fn model(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = std::process::Command::new(root.join("scripts/install-models"))
        .stdout(std::process::Stdio::null())
        .status()
        .expect("scripts/install-models runs");
    assert!(status.success());
    root.join(".models").join(name)
}

fn config(lang: &str) -> WhisperConfig {
    WhisperConfig {
        lang: lang.into(),
        threads: 2,
        final_beam: 1,
        into_english: false,
    }
}

/// 48 kHz stereo through Opus and back, as a recognizer hears it.
fn through_opus(stereo: &[i16]) -> Vec<f32> {
    let mut encoder = OpusEncoder::open(48_000).unwrap();
    let mut decoder = SpeechDecoder::open().unwrap();
    let mut speech = Vec::new();
    for frame in stereo.chunks(codec::OPUS_FRAME_SAMPLES * 2) {
        let mut frame = frame.to_vec();
        frame.resize(codec::OPUS_FRAME_SAMPLES * 2, 0);
        for packet in encoder.encode(&frame).unwrap() {
            decoder.decode(&packet, &mut speech).unwrap();
        }
    }
    speech
}

fn spoken(voice: &str, text: &str) -> Vec<f32> {
    let wav = std::process::Command::new("espeak-ng")
        .args(["--stdout", "-v", voice, "-s", "150", text])
        .output()
        .expect("espeak-ng runs")
        .stdout;
    through_opus(&codec::clip::wav_to_stereo_48k(&wav).unwrap())
}

#[test]
fn speech_is_written_and_silence_is_nothing() {
    let mut whisper = Whisper::load(&model("whisper-tiny.en"), None, config("en")).unwrap();
    assert_eq!(whisper.language(), "en");
    let speech = spoken(
        "en-us",
        "Orders open at midnight and delivery takes three days.",
    );
    for effort in [Effort::Partial, Effort::Final] {
        let text = whisper.recognize(&speech, effort).unwrap().to_lowercase();
        // espeak-ng's "Orders" and "delivery" are often heard as other words: the
        // sentence, not each word, is what the engine's test holds to a
        // word error rate.
        for word in ["open at midnight", "three days"] {
            assert!(text.contains(word), "{effort:?}: `{word}` not in {text:?}");
        }
    }
    let silence = through_opus(&vec![0; 48_000 * 2 * 2]);
    let text = whisper.recognize(&silence, Effort::Final).unwrap();
    assert_eq!(caption_text(&text), None, "silence heard as {text:?}");
}

#[test]
fn a_model_that_cannot_serve_is_refused_by_name() {
    let Err(missing) = Whisper::load(Path::new("/nonexistent/model"), None, config("en")) else {
        panic!("a directory without a model loads");
    };
    assert!(
        matches!(
            missing,
            AsrError::Missing {
                file: "model.bin",
                ..
            }
        ),
        "{missing:?}"
    );
    let message = missing.to_string();
    assert!(message.contains("scripts/install-models"), "{message}");
    let english_only = Whisper::load(&model("whisper-tiny.en"), None, config("es"));
    assert!(matches!(english_only, Err(AsrError::EnglishOnly { .. })));
}

#[test]
fn spanish_speech_is_written_in_english_by_the_translate_task() {
    let into_english = WhisperConfig {
        into_english: true,
        ..config("es")
    };
    let mut whisper = Whisper::load(&model("whisper-base"), None, into_english.clone()).unwrap();
    assert_eq!(whisper.language(), "en", "lines are written in English");
    let speech = spoken(
        "es",
        "Bienvenidos a todos al programa de esta noche. Hoy vamos a ver el nuevo teléfono.",
    );
    let text = whisper
        .recognize(&speech, Effort::Final)
        .unwrap()
        .to_lowercase();
    assert!(text.contains("new phone"), "{text:?}");
    // An English-only model cannot.
    assert!(matches!(
        Whisper::load(&model("whisper-tiny.en"), None, into_english),
        Err(AsrError::EnglishOnly { .. })
    ));
}
