//! The virtual host's FAQ: a danmaku asking about something the event's
//! FAQ covers gets the entry's answer as a host line. Keywords match the
//! way blocked terms do ([`TermFilter`]: normalized text, Aho-Corasick, so
//! one pass over a message whatever the number of entries); an entry is
//! answered at most once per [`FAQ_COOLDOWN_MS`], so a chat asking the same
//! question fifty times gets one answer, not fifty.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::moderation::{TermFilter, normalize};

/// How long an answered entry stays quiet.
pub const FAQ_COOLDOWN_MS: u64 = 10_000;
pub const MAX_FAQ_ENTRIES: usize = 200;
pub const MAX_ANSWER_CHARS: usize = 500;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaqEntry {
    pub id: String,
    /// Words or phrases that ask about it (any one matches).
    pub keywords: Vec<String>,
    pub answer: String,
}

#[derive(Debug, Clone)]
pub struct Faq {
    entries: Vec<FaqEntry>,
    filter: TermFilter,
    /// Normalized keyword -> entry.
    by_keyword: HashMap<String, usize>,
}

impl Faq {
    pub fn new(entries: Vec<FaqEntry>) -> Self {
        let mut by_keyword = HashMap::new();
        // In the graph's order: at one position, the keyword listed first wins.
        let mut keywords = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            for keyword in &entry.keywords {
                let keyword = normalize(keyword);
                if !by_keyword.contains_key(&keyword) {
                    by_keyword.insert(keyword.clone(), i);
                    keywords.push(keyword);
                }
            }
        }
        let filter = TermFilter::new(&keywords);
        Self {
            entries,
            filter,
            by_keyword,
        }
    }

    /// The entry `text` asks about, if any (the leftmost keyword decides).
    pub fn find(&self, text: &str) -> Option<&FaqEntry> {
        let keyword = self.filter.find(text)?;
        self.by_keyword.get(keyword).map(|&i| &self.entries[i])
    }

    pub fn entries(&self) -> &[FaqEntry] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faq() -> Faq {
        Faq::new(vec![
            FaqEntry {
                id: "price".into(),
                keywords: vec!["price".into(), "how much".into()],
                answer: "799 euros".into(),
            },
            FaqEntry {
                id: "ship".into(),
                keywords: vec!["shipping".into(), "deliver".into()],
                answer: "From March".into(),
            },
        ])
    }

    #[test]
    fn a_keyword_anywhere_in_any_case_finds_its_entry() {
        let faq = faq();
        assert_eq!(
            faq.find("HOW MUCH is it??").map(|e| e.id.as_str()),
            Some("price")
        );
        assert_eq!(
            faq.find("do you deliver to Spain").map(|e| e.id.as_str()),
            Some("ship")
        );
        assert_eq!(
            faq.find("shipping and price?").map(|e| e.id.as_str()),
            Some("ship"),
            "the leftmost keyword decides"
        );
        assert_eq!(faq.find("nice colour"), None);
        assert_eq!(Faq::new(Vec::new()).find("price"), None);
    }
}
