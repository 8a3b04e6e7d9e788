//! Moderation state a room consults before committing a danmaku: blocked
//! terms and muted users.
//!
//! Both sides of a term match go through [`normalize`], so the tricks people
//! use to slip a word past a filter (full-width letters, capitals, zero-width
//! spaces) all fold to the same string as the moderator's term.

use std::collections::{HashMap, HashSet};

use aho_corasick::{AhoCorasick, MatchKind};
use unicode_normalization::UnicodeNormalization;

/// Characters that render as nothing but split a word for a naive matcher.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}'
    )
}

/// Folds text for matching: NFKC (full-width and other compatibility forms
/// become their plain letters), lowercase, invisible format characters gone.
///
/// Invisible characters are dropped before NFKC too, so one placed between a
/// letter and its combining accent does not stop them from composing.
pub fn normalize(text: &str) -> String {
    text.chars()
        .filter(|&c| !is_invisible(c))
        .nfkc()
        .flat_map(char::to_lowercase)
        .filter(|&c| !is_invisible(c))
        .collect()
}

/// A room's blocked terms, compiled once into one automaton so a check costs
/// one pass over the text however many terms there are.
#[derive(Debug, Clone, Default)]
pub struct TermFilter {
    /// Normalized, non-empty, distinct, in the order given: with leftmost-first
    /// matching an earlier term wins a tie at the same position.
    terms: Vec<String>,
    /// `None` when there are no terms, or in the (memory-exhausting) case the
    /// automaton exceeds its size limits; then [`naive_find`] does the job.
    matcher: Option<AhoCorasick>,
}

impl TermFilter {
    pub fn new<I, S>(terms: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut seen = HashSet::new();
        let terms: Vec<String> = terms
            .into_iter()
            .map(|t| normalize(t.as_ref()))
            .filter(|t| !t.is_empty() && seen.insert(t.clone()))
            .collect();
        let matcher = if terms.is_empty() {
            None
        } else {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostFirst)
                .build(&terms)
                .ok()
        };
        Self { terms, matcher }
    }

    /// The normalized blocked term found in `text`, if any: the leftmost one,
    /// and of those starting there the one listed first.
    pub fn find(&self, text: &str) -> Option<&str> {
        if self.terms.is_empty() {
            return None;
        }
        let text = normalize(text);
        let index = match &self.matcher {
            Some(ac) => ac.find(&text).map(|m| m.pattern().as_usize()),
            None => naive_find(&self.terms, &text),
        }?;
        self.terms.get(index).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.terms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }
}

/// Leftmost-first search term by term: the fallback when the automaton cannot
/// be built, and the reference the automaton is tested against.
fn naive_find(terms: &[String], text: &str) -> Option<usize> {
    terms
        .iter()
        .enumerate()
        .filter_map(|(i, t)| text.find(t.as_str()).map(|at| (at, i)))
        .min()
        .map(|(_, i)| i)
}

/// Muted users of one room and when each mute ends.
///
/// Expired entries are harmless (they read as not muted) and are dropped by
/// [`Mutes::prune`] whenever the owner finds it convenient.
#[derive(Debug, Clone, Default)]
pub struct Mutes {
    until_ms: HashMap<String, u64>,
}

impl Mutes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Mutes until `until_ms`, replacing any earlier mute: the moderator's
    /// latest decision stands, including one that shortens a mute.
    pub fn mute(&mut self, user_id: &str, until_ms: u64) {
        self.until_ms.insert(user_id.to_owned(), until_ms);
    }

    /// True if the user had an entry (even one already expired).
    pub fn unmute(&mut self, user_id: &str) -> bool {
        self.until_ms.remove(user_id).is_some()
    }

    /// `Some(until)` while the mute is in force, i.e. `now_ms < until`.
    pub fn muted_until(&self, user_id: &str, now_ms: u64) -> Option<u64> {
        self.until_ms
            .get(user_id)
            .copied()
            .filter(|&until| now_ms < until)
    }

    pub fn prune(&mut self, now_ms: u64) {
        self.until_ms.retain(|_, &mut until| now_ms < until);
    }

    /// Entries held, expired ones not yet pruned included.
    pub fn len(&self) -> usize {
        self.until_ms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.until_ms.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The full-width form of a printable ASCII character.
    fn full_width(c: char) -> char {
        match c {
            '!'..='~' => char::from_u32(c as u32 + 0xFEE0).unwrap_or(c),
            _ => c,
        }
    }

    #[test]
    fn normalize_folds_disguises() {
        assert_eq!(normalize("ＢＡＤ"), "bad");
        assert_eq!(normalize("b\u{200B}a\u{00AD}d\u{FEFF}"), "bad");
        assert_eq!(normalize("\u{202E}BaD\u{2060}"), "bad");
        assert_eq!(normalize("ﬁne"), "fine");
        // An invisible char between a letter and its accent does not block composition.
        assert_eq!(normalize("e\u{200B}\u{0301}"), "é");
    }

    #[test]
    fn filter_finds_disguised_terms() {
        let filter = TermFilter::new(["Bad", "worse"]);
        assert_eq!(filter.find("this is ＢＡＤ"), Some("bad"));
        assert_eq!(filter.find("w\u{200B}orse!"), Some("worse"));
        assert_eq!(filter.find("all good"), None);
    }

    #[test]
    fn filter_drops_empty_and_duplicate_terms() {
        let filter = TermFilter::new(["", "\u{200B}", "spam", "SPAM", "ｓｐａｍ", "eggs"]);
        assert_eq!(filter.len(), 2);
        assert!(!filter.is_empty());
        assert!(TermFilter::new([""; 3]).is_empty());
    }

    #[test]
    fn empty_filter_matches_nothing() {
        let filter = TermFilter::default();
        assert!(filter.is_empty());
        assert_eq!(filter.find(""), None);
        assert_eq!(filter.find("anything"), None);
    }

    #[test]
    fn leftmost_then_first_listed_wins() {
        let filter = TermFilter::new(["bc", "abc", "ab"]);
        assert_eq!(filter.find("xabc"), Some("abc"));
        assert_eq!(filter.find("xbc ab"), Some("bc"));
    }

    #[test]
    fn mutes_expire_at_until() {
        let mut mutes = Mutes::new();
        mutes.mute("u1", 1_000);
        assert_eq!(mutes.muted_until("u1", 999), Some(1_000));
        assert_eq!(mutes.muted_until("u1", 1_000), None);
        assert_eq!(mutes.muted_until("u2", 0), None);
        mutes.mute("u1", 500);
        assert_eq!(mutes.muted_until("u1", 600), None, "a later mute replaces");
    }

    #[test]
    fn unmute_and_prune() {
        let mut mutes = Mutes::new();
        mutes.mute("a", 100);
        mutes.mute("b", 200);
        assert!(mutes.unmute("a"));
        assert!(!mutes.unmute("a"));
        mutes.mute("c", 300);
        mutes.prune(200);
        assert_eq!(mutes.len(), 1);
        assert_eq!(mutes.muted_until("c", 299), Some(300));
        mutes.prune(300);
        assert!(mutes.is_empty());
    }

    proptest! {
        /// The automaton and the plain search always agree.
        #[test]
        fn automaton_agrees_with_naive_search(
            terms in prop::collection::vec("[abc]{0,3}", 0..6),
            text in "[abcd]{0,12}",
        ) {
            let filter = TermFilter::new(&terms);
            let expected = naive_find(&filter.terms, &normalize(&text)).map(|i| filter.terms[i].as_str());
            prop_assert_eq!(filter.find(&text), expected);
        }

        /// An ASCII term stays found however its letters are disguised.
        #[test]
        fn disguised_terms_are_found(
            term in "[a-z0-9]{1,6}",
            before in "[ -~]{0,6}",
            after in "[ -~]{0,6}",
            disguise in prop::collection::vec((0u8..3, prop::option::of(prop::sample::select(vec![
                '\u{00AD}', '\u{200B}', '\u{200D}', '\u{200F}', '\u{202A}', '\u{202E}', '\u{2060}', '\u{2064}', '\u{FEFF}',
            ]))), 6),
        ) {
            let filter = TermFilter::new([&term]);
            let mut text = before.clone();
            for (c, (how, invisible)) in term.chars().zip(&disguise) {
                text.push(match how {
                    0 => c,
                    1 => c.to_ascii_uppercase(),
                    _ => full_width(c.to_ascii_uppercase()),
                });
                text.extend(*invisible);
            }
            text.push_str(&after);
            prop_assert!(filter.find(&text).is_some(), "{:?} not found in {:?}", term, text);
        }

        /// A mute is in force exactly on `[.., until)` and only for its user.
        #[test]
        fn mute_window(until in any::<u64>(), now in any::<u64>()) {
            let mut mutes = Mutes::new();
            mutes.mute("u", until);
            prop_assert_eq!(mutes.muted_until("u", now).is_some(), now < until);
            prop_assert_eq!(mutes.muted_until("v", now), None);
            mutes.prune(now);
            prop_assert_eq!(mutes.len(), usize::from(now < until));
        }
    }
}
