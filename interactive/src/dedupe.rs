//! Recent `(user_id, client_msg_id)` pairs and the seq each was posted as.
//!
//! A client that lost its connection resends what it was not acked for; the
//! room answers a resend with the original seq instead of posting it twice.
//! Only the last `capacity` ids are kept: resends come within seconds, so a
//! bounded memory is enough.

use std::collections::{HashMap, VecDeque};

#[derive(Debug, Clone)]
pub struct RecentIds {
    capacity: usize,
    /// user_id -> client_msg_id -> seq; nested so a lookup needs no allocation.
    seqs: HashMap<String, HashMap<String, u64>>,
    /// Every stored pair, oldest first, for eviction.
    order: VecDeque<(String, String)>,
}

impl RecentIds {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            seqs: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn get(&self, user_id: &str, client_msg_id: &str) -> Option<u64> {
        self.seqs.get(user_id)?.get(client_msg_id).copied()
    }

    /// Remembers the pair, evicting the oldest beyond capacity. An empty
    /// `client_msg_id` means the client asked for no dedupe and is ignored.
    /// Storing a pair again updates its seq but not its age.
    pub fn insert(&mut self, user_id: &str, client_msg_id: &str, seq: u64) {
        if client_msg_id.is_empty() || self.capacity == 0 {
            return;
        }
        let ids = self.seqs.entry(user_id.to_owned()).or_default();
        if ids.insert(client_msg_id.to_owned(), seq).is_some() {
            return;
        }
        self.order
            .push_back((user_id.to_owned(), client_msg_id.to_owned()));
        while self.order.len() > self.capacity {
            let Some((user, id)) = self.order.pop_front() else {
                break;
            };
            if let Some(ids) = self.seqs.get_mut(&user) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.seqs.remove(&user);
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn remembers_per_user() {
        let mut ids = RecentIds::new(8);
        ids.insert("alice", "m1", 10);
        assert_eq!(ids.get("alice", "m1"), Some(10));
        assert_eq!(ids.get("bob", "m1"), None);
        assert_eq!(ids.get("alice", "m2"), None);
    }

    #[test]
    fn ignores_empty_client_msg_id() {
        let mut ids = RecentIds::new(8);
        ids.insert("alice", "", 1);
        assert!(ids.is_empty());
        assert_eq!(ids.get("alice", ""), None);
    }

    #[test]
    fn evicts_oldest_beyond_capacity() {
        let mut ids = RecentIds::new(2);
        ids.insert("a", "1", 1);
        ids.insert("a", "2", 2);
        ids.insert("a", "1", 11);
        assert_eq!(ids.len(), 2);
        ids.insert("b", "3", 3);
        assert_eq!(ids.len(), 2);
        assert_eq!(ids.get("a", "1"), None, "oldest goes first");
        assert_eq!(ids.get("a", "2"), Some(2));
        assert_eq!(ids.get("b", "3"), Some(3));
    }

    #[test]
    fn zero_capacity_stores_nothing() {
        let mut ids = RecentIds::new(0);
        ids.insert("a", "1", 1);
        assert_eq!(ids.get("a", "1"), None);
        assert_eq!(ids.len(), 0);
    }

    proptest! {
        /// Behaves like a plain FIFO list of the last `capacity` distinct pairs.
        #[test]
        fn matches_a_fifo_model(
            capacity in 0usize..6,
            inserts in prop::collection::vec((0u8..3, 0u8..4), 0..60),
        ) {
            let mut ids = RecentIds::new(capacity);
            let mut model: VecDeque<(String, String, u64)> = VecDeque::new();
            for (seq, (user, id)) in inserts.into_iter().enumerate() {
                let (user, id, seq) = (user.to_string(), if id == 0 { String::new() } else { id.to_string() }, seq as u64);
                ids.insert(&user, &id, seq);
                if !id.is_empty() && capacity > 0 {
                    if let Some(entry) = model.iter_mut().find(|(u, i, _)| *u == user && *i == id) {
                        entry.2 = seq;
                    } else {
                        model.push_back((user, id, seq));
                        if model.len() > capacity {
                            model.pop_front();
                        }
                    }
                }
                prop_assert_eq!(ids.len(), model.len());
                prop_assert!(ids.len() <= capacity);
                for user in 0u8..3 {
                    for id in 1u8..4 {
                        let (user, id) = (user.to_string(), id.to_string());
                        let expected = model.iter().find(|(u, i, _)| *u == user && *i == id).map(|e| e.2);
                        prop_assert_eq!(ids.get(&user, &id), expected);
                    }
                }
            }
        }
    }
}
