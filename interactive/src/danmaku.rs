//! Validation of a client's `SendDanmaku` before it is sequenced.
//!
//! Every rule here is checked before anything is committed, so a refusal
//! costs nothing downstream and the client gets a message it can show as is.

use std::fmt;

use protocol::v1::{DanmakuMode, SendDanmaku};

/// Per-room limits on what one danmaku may carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DanmakuLimits {
    /// Counted in chars, not bytes, so CJK text gets the same room as Latin.
    pub max_chars: usize,
}

impl Default for DanmakuLimits {
    fn default() -> Self {
        Self { max_chars: 100 }
    }
}

/// A danmaku that passed [`validate`]: holding one is proof of the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidDanmaku {
    /// Trimmed of surrounding whitespace.
    pub text: String,
    pub mode: DanmakuMode,
    /// 0xRRGGBB.
    pub color: u32,
}

/// Why a danmaku was refused. `Display` is written for the sender's eyes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidDanmaku {
    Empty,
    TooLong { max: usize, got: usize },
    BadMode(i32),
    BadColor(u32),
    ControlCharacter,
}

impl fmt::Display for InvalidDanmaku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("text is empty"),
            Self::TooLong { max, got } => {
                write!(f, "text is {got} characters, the limit is {max}")
            }
            Self::BadMode(mode) => write!(f, "unknown display mode {mode}"),
            Self::BadColor(color) => write!(f, "color {color:#x} is not 0xRRGGBB"),
            Self::ControlCharacter => {
                f.write_str("text contains a control character (newline, tab, ...)")
            }
        }
    }
}

impl std::error::Error for InvalidDanmaku {}

/// Checks a danmaku against `limits`.
///
/// Surrounding whitespace is trimmed first: a message of spaces is empty, and
/// a trailing newline from a paste is not worth refusing. Control characters
/// inside the text are refused because they break single-line overlays.
pub fn validate(
    input: &SendDanmaku,
    limits: &DanmakuLimits,
) -> Result<ValidDanmaku, InvalidDanmaku> {
    let text = input.text.trim();
    if text.is_empty() {
        return Err(InvalidDanmaku::Empty);
    }
    let chars = text.chars().count();
    if chars > limits.max_chars {
        return Err(InvalidDanmaku::TooLong {
            max: limits.max_chars,
            got: chars,
        });
    }
    if text.chars().any(char::is_control) {
        return Err(InvalidDanmaku::ControlCharacter);
    }
    let mode =
        DanmakuMode::try_from(input.mode).map_err(|_| InvalidDanmaku::BadMode(input.mode))?;
    if input.color > 0xFF_FFFF {
        return Err(InvalidDanmaku::BadColor(input.color));
    }
    Ok(ValidDanmaku {
        text: text.to_owned(),
        mode,
        color: input.color,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn send(text: &str) -> SendDanmaku {
        SendDanmaku {
            text: text.to_owned(),
            ..Default::default()
        }
    }

    fn check(input: &SendDanmaku) -> Result<ValidDanmaku, InvalidDanmaku> {
        validate(input, &DanmakuLimits::default())
    }

    #[test]
    fn accepts_and_trims() {
        let input = SendDanmaku {
            text: "  hello 世界\n".into(),
            mode: DanmakuMode::Top as i32,
            color: 0xFF_FFFF,
            client_msg_id: "c1".into(),
        };
        assert_eq!(
            check(&input),
            Ok(ValidDanmaku {
                text: "hello 世界".into(),
                mode: DanmakuMode::Top,
                color: 0xFF_FFFF,
            })
        );
    }

    #[test]
    fn refuses_empty_and_whitespace() {
        assert_eq!(check(&send("")), Err(InvalidDanmaku::Empty));
        assert_eq!(check(&send(" \t\n\u{3000}")), Err(InvalidDanmaku::Empty));
    }

    #[test]
    fn length_is_counted_in_chars() {
        let limits = DanmakuLimits { max_chars: 3 };
        assert!(validate(&send("弾幕だ"), &limits).is_ok());
        assert_eq!(
            validate(&send("弾幕です"), &limits),
            Err(InvalidDanmaku::TooLong { max: 3, got: 4 })
        );
    }

    #[test]
    fn refuses_inner_control_characters() {
        for text in ["a\nb", "a\tb", "a\0b", "a\u{7f}b", "a\u{85}b"] {
            assert_eq!(
                check(&send(text)),
                Err(InvalidDanmaku::ControlCharacter),
                "{text:?}"
            );
        }
    }

    #[test]
    fn refuses_unknown_mode_and_wide_color() {
        let mut input = send("hi");
        input.mode = 3;
        assert_eq!(check(&input), Err(InvalidDanmaku::BadMode(3)));
        input.mode = -1;
        assert_eq!(check(&input), Err(InvalidDanmaku::BadMode(-1)));
        input.mode = DanmakuMode::Bottom as i32;
        input.color = 0x100_0000;
        assert_eq!(check(&input), Err(InvalidDanmaku::BadColor(0x100_0000)));
    }

    #[test]
    fn messages_speak_to_the_sender() {
        let err = InvalidDanmaku::TooLong { max: 100, got: 140 };
        assert_eq!(err.to_string(), "text is 140 characters, the limit is 100");
        assert_eq!(
            InvalidDanmaku::BadColor(0x1000000).to_string(),
            "color 0x1000000 is not 0xRRGGBB"
        );
    }

    proptest! {
        /// Whatever comes in, an accepted danmaku satisfies every rule.
        #[test]
        fn accepted_danmaku_obey_the_rules(
            text in "\\PC{0,8}[\\s\\x00-\\x1f]{0,2}\\PC{0,8}",
            mode in -2i32..5,
            color in prop_oneof![0u32..=0xFF_FFFF, any::<u32>()],
            max_chars in 0usize..12,
        ) {
            let input = SendDanmaku { text, mode, color, client_msg_id: String::new() };
            let trimmed = input.text.trim();
            let n = trimmed.chars().count();
            let obeys = (1..=max_chars).contains(&n)
                && !trimmed.chars().any(char::is_control)
                && (0..=2).contains(&mode)
                && color <= 0xFF_FFFF;
            let result = validate(&input, &DanmakuLimits { max_chars });
            prop_assert_eq!(result.is_ok(), obeys, "{:?}", result);
            if let Ok(valid) = result {
                prop_assert_eq!(valid.text.as_str(), trimmed);
                prop_assert_eq!(valid.mode as i32, mode);
                prop_assert_eq!(valid.color, color);
            }
        }
    }
}
