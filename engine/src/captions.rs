//! Captions wiring: the recognizer (loaded once per node), the translator
//! and where subtitles go, from `[captions]`.

use std::path::Path;
use std::sync::Arc;

use actors::{Captions, CaptionsConfig, LiveRecordings};
use captions::transcribe::Transcriber;
use captions::{Apertium, Cached, LibreTranslate, Translator};

use crate::config::{CaptionsSection, Config};

/// The node's captions, or none when `captions.enabled` is off. What
/// cannot run here (no model, an Apertium pair not installed) is logged
/// and left out: the engine runs without it.
pub(crate) fn start(
    config: &Config,
    media: &sfu::MediaPlane,
    recordings: Option<LiveRecordings>,
) -> Option<Captions> {
    let c = &config.captions;
    if !c.enabled {
        return None;
    }
    let transcriber = if c.asr { recognizer(c) } else { None };
    metrics::gauge!("live_caption_asr_enabled").set(if transcriber.is_some() { 1.0 } else { 0.0 });
    Some(Captions::new(CaptionsConfig {
        media: media.clone(),
        transcriber,
        translator: translator(c),
        spoken: written(c).to_owned(),
        unheard_stream: config.story.program_stream.clone(),
        recorded: recorded_languages(c),
        recordings,
    }))
}

/// The language lines are written in: the spoken one, or English when
/// recognition translates into it.
fn written(c: &CaptionsSection) -> &str {
    if c.asr_into_english { "en" } else { &c.spoken }
}

/// The languages recordings carry subtitles in: the written one first.
pub(crate) fn recorded_languages(c: &CaptionsSection) -> Vec<String> {
    let mut langs = vec![written(c).to_owned()];
    for lang in &c.recorded {
        if !langs.contains(lang) {
            langs.push(lang.clone());
        }
    }
    langs
}

fn recognizer(c: &CaptionsSection) -> Option<Transcriber> {
    let whisper = asr::WhisperConfig {
        lang: c.spoken.clone(),
        threads: c.asr_threads,
        final_beam: c.final_beam,
        into_english: c.asr_into_english,
    };
    let started = std::time::Instant::now();
    let partial =
        (!c.partial_model_dir.as_os_str().is_empty()).then_some(c.partial_model_dir.as_path());
    let loaded = match asr::Whisper::load(&c.model_dir, partial, whisper.clone()) {
        // The partial model is a speed-up, not a need: without it the
        // final model writes partial lines too.
        Err(error) if Some(error.dir()) == partial => {
            tracing::warn!(%error, "partial lines use the final model");
            asr::Whisper::load(&c.model_dir, None, whisper)
        }
        loaded => loaded,
    };
    let model = match loaded {
        Ok(model) => model,
        Err(error) => {
            tracing::warn!(%error, "speech recognition is off: streams get no recognized captions");
            return None;
        }
    };
    tracing::info!(model = %c.model_dir.display(), elapsed = ?started.elapsed(), "speech recognition on");
    match Transcriber::start(Box::new(model)) {
        Ok(transcriber) => Some(transcriber),
        Err(error) => {
            tracing::error!(%error, "no recognizer thread: speech recognition is off");
            None
        }
    }
}

fn translator(c: &CaptionsSection) -> Option<Arc<dyn Translator>> {
    let pairs: Vec<(String, String)> = c
        .translate_to
        .iter()
        .filter(|to| *to != written(c))
        .map(|to| (written(c).to_owned(), to.clone()))
        .collect();
    match c.translator.as_str() {
        "apertium" => {
            let wanted: Vec<(&str, &str)> = pairs
                .iter()
                .map(|(a, b)| (a.as_str(), b.as_str()))
                .collect();
            let apertium = Apertium::start(Path::new(&c.apertium_modes_dir), &wanted);
            Some(Arc::new(Cached::new(apertium, c.cache_lines)))
        }
        "libretranslate" => {
            let key =
                (!c.libretranslate_api_key.is_empty()).then(|| c.libretranslate_api_key.clone());
            let api = LibreTranslate::new(&c.libretranslate_url, key, pairs);
            Some(Arc::new(Cached::new(api, c.cache_lines)))
        }
        _ => None,
    }
}
