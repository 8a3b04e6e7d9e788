//! Speech recognition behind one interface, and the cleaning of what it
//! writes before it becomes a caption.

/// Turns an utterance (16 kHz mono, -1..1) into text. Implemented by
/// `asr::Whisper`; one recognizer serves every stream of a node, on the
/// [`Transcriber`](crate::transcribe::Transcriber)'s thread.
pub trait Recognizer: Send {
    /// The language it writes (BCP 47 short: `en`).
    fn language(&self) -> &str;

    /// What was said. `effort` trades accuracy for time: a partial line is
    /// replaced a second later, a final one stays.
    fn recognize(&mut self, speech: &[f32], effort: Effort) -> Result<String, RecognizeError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effort {
    /// A snapshot of speech still going on: fast, replaced soon.
    Partial,
    /// A line that stays: the best the recognizer has.
    Final,
    /// A line that stays, while the recognizer is behind (another final
    /// line waits, or this one waited long): fast, so the delay stops
    /// growing instead of every line coming later than the last.
    FinalBehind,
}

impl Effort {
    pub fn is_final(self) -> bool {
        self != Self::Partial
    }

    /// The label of `live_caption_asr_*` metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Partial => "partial",
            Self::Final => "final",
            Self::FinalBehind => "final_behind",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("speech recognition failed: {0}")]
pub struct RecognizeError(pub String);

/// A recognizer's text made fit to show, or `None` when it says nothing
/// that was spoken.
///
/// Whisper writes sound it cannot read as words in brackets or between
/// music notes (`[MUSIC]`, `(applause)`, `♪ ... ♪`): not speech, so not
/// a caption. What is left without a letter or a digit is nothing.
pub fn caption_text(raw: &str) -> Option<String> {
    let mut kept = String::with_capacity(raw.len());
    let mut closing: Option<char> = None;
    for c in raw.chars() {
        match closing {
            Some(close) if c == close => closing = None,
            Some(_) => {}
            None => match c {
                '[' => closing = Some(']'),
                '(' => closing = Some(')'),
                '♪' | '♫' | '♬' | '♩' => {}
                c => kept.push(c),
            },
        }
    }
    let mut text = kept.split_whitespace().collect::<Vec<_>>().join(" ");
    // What a removed tag leaves before punctuation: "midnight (laughs)."
    for mark in [".", ",", "!", "?", ";", ":"] {
        text = text.replace(&format!(" {mark}"), mark);
    }
    text.chars().any(char::is_alphanumeric).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sounds_that_are_not_speech_are_no_caption() {
        assert_eq!(caption_text(" Hello  there. "), Some("Hello there.".into()));
        assert_eq!(caption_text("[MUSIC PLAYING]"), None);
        assert_eq!(caption_text("(upbeat music)"), None);
        assert_eq!(caption_text("♪ ♪ ♪"), None);
        assert_eq!(caption_text(" ... "), None);
        assert_eq!(caption_text(""), None);
        assert_eq!(
            caption_text("[BLANK_AUDIO] Orders open at midnight (laughs)."),
            Some("Orders open at midnight.".into())
        );
        // An unclosed bracket hides the rest: Whisper's closing came in a
        // later window, and half a tag is still a tag.
        assert_eq!(caption_text("Hi [inaudible"), Some("Hi".into()));
    }
}
