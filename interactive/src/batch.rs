//! The room's broadcast batcher: committed danmaku go in, what to broadcast
//! comes out.
//!
//! Policy: low latency when idle, batches under load. A danmaku arriving in a
//! quiet room goes out at once. One arriving within `window` of the last flush
//! is held, and everything held goes out together when the window closes, so a
//! busy room costs each viewer at most one frame per `window` whatever the
//! message rate.
//!
//! While held, a danmaku whose text equals a held one (the "666" and "lol"
//! floods) is merged into it: viewers see one item with a `count`, and the
//! merge is reported in [`Flush::merged`] so its sender still gets an ack.
//!
//! The owner calls [`Batcher::poll`] at [`Batcher::next_deadline`]; the
//! batcher never reads the clock.

use std::time::{Duration, Instant};

use protocol::v1::DanmakuItem;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchConfig {
    /// At most one flush per `window`, except when `max_items` forces one.
    pub window: Duration,
    /// How far apart two identical texts may arrive and still be merged.
    pub merge_window: Duration,
    /// Caps the size of one broadcast frame, and the batcher's memory.
    pub max_items: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_millis(50),
            merge_window: Duration::from_secs(1),
            max_items: 256,
        }
    }
}

/// What to broadcast now.
#[derive(Debug, Clone, PartialEq)]
pub struct Flush {
    /// In arrival order, each with `count >= 1`.
    pub items: Vec<DanmakuItem>,
    /// Danmaku folded into one of `items` rather than broadcast on their own.
    pub merged: Vec<Merged>,
}

/// A danmaku that was merged into another instead of being broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// The merged danmaku's own seq, for the sender's ack.
    pub seq: u64,
    /// The broadcast item whose `count` it raised.
    pub into_seq: u64,
    pub user_id: String,
    pub client_msg_id: String,
}

#[derive(Debug, Clone)]
struct Held {
    item: DanmakuItem,
    arrived: Instant,
}

#[derive(Debug, Clone)]
pub struct Batcher {
    config: BatchConfig,
    pending: Vec<Held>,
    merged: Vec<Merged>,
    last_flush: Option<Instant>,
}

impl Batcher {
    pub fn new(config: BatchConfig) -> Self {
        Self {
            config,
            pending: Vec::new(),
            merged: Vec::new(),
            last_flush: None,
        }
    }

    /// Takes one committed danmaku. Its incoming `count` is ignored: a pushed
    /// item is one message.
    pub fn push(&mut self, mut item: DanmakuItem, now: Instant) -> Option<Flush> {
        item.count = 1;
        if self.pending.is_empty() && self.window_elapsed(now) {
            self.last_flush = Some(now);
            return Some(Flush {
                items: vec![item],
                merged: Vec::new(),
            });
        }
        let merge_window = self.config.merge_window;
        let target = self.pending.iter_mut().rev().find(|held| {
            held.item.text == item.text
                && now.saturating_duration_since(held.arrived) <= merge_window
        });
        if let Some(held) = target {
            held.item.count = held.item.count.saturating_add(1);
            self.merged.push(Merged {
                seq: item.seq,
                into_seq: held.item.seq,
                user_id: item.user_id,
                client_msg_id: item.client_msg_id,
            });
        } else {
            self.pending.push(Held { item, arrived: now });
        }
        // Merges count too, so a flood of one text cannot grow `merged` unbounded.
        let max = self.config.max_items;
        (self.pending.len() >= max || self.merged.len() >= max).then(|| self.flush(now))
    }

    /// Flushes everything held once the window since the last flush has passed.
    pub fn poll(&mut self, now: Instant) -> Option<Flush> {
        (!self.pending.is_empty() && self.window_elapsed(now)).then(|| self.flush(now))
    }

    /// When to call [`Batcher::poll`]; `None` while nothing is held.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.pending.is_empty() {
            return None;
        }
        self.last_flush?.checked_add(self.config.window)
    }

    /// Distinct items held (merges raise a held item's count, not this).
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    fn window_elapsed(&self, now: Instant) -> bool {
        self.last_flush
            .is_none_or(|last| now.saturating_duration_since(last) >= self.config.window)
    }

    fn flush(&mut self, now: Instant) -> Flush {
        self.last_flush = Some(now);
        Flush {
            items: self.pending.drain(..).map(|held| held.item).collect(),
            merged: std::mem::take(&mut self.merged),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    const MS: Duration = Duration::from_millis(1);

    fn item(seq: u64, text: &str) -> DanmakuItem {
        DanmakuItem {
            seq,
            user_id: format!("u{seq}"),
            text: text.to_owned(),
            client_msg_id: format!("c{seq}"),
            ..Default::default()
        }
    }

    fn seqs(flush: &Flush) -> Vec<u64> {
        flush.items.iter().map(|i| i.seq).collect()
    }

    #[test]
    fn idle_room_flushes_at_once() {
        let t0 = Instant::now();
        let mut batcher = Batcher::new(BatchConfig::default());
        let flush = batcher.push(item(1, "hi"), t0).expect("first item flushes");
        assert_eq!(flush.items[0].count, 1);
        assert_eq!(seqs(&flush), [1]);
        assert_eq!(batcher.next_deadline(), None);
        // A window later the room is idle again.
        let flush = batcher
            .push(item(2, "hi"), t0 + 50 * MS)
            .expect("idle again");
        assert_eq!(seqs(&flush), [2]);
    }

    #[test]
    fn busy_room_batches_until_the_deadline() {
        let t0 = Instant::now();
        let mut batcher = Batcher::new(BatchConfig::default());
        assert!(batcher.push(item(1, "a"), t0).is_some());
        assert_eq!(batcher.push(item(2, "b"), t0 + 10 * MS), None);
        assert_eq!(batcher.push(item(3, "c"), t0 + 20 * MS), None);
        assert_eq!(batcher.pending_len(), 2);
        assert_eq!(batcher.next_deadline(), Some(t0 + 50 * MS));
        assert_eq!(batcher.poll(t0 + 49 * MS), None);
        let flush = batcher.poll(t0 + 50 * MS).expect("deadline reached");
        assert_eq!(seqs(&flush), [2, 3]);
        assert!(flush.items.iter().all(|i| i.count == 1));
        assert_eq!(batcher.pending_len(), 0);
        assert_eq!(batcher.next_deadline(), None);
        assert_eq!(batcher.poll(t0 + 200 * MS), None);
    }

    #[test]
    fn identical_texts_merge_while_held() {
        let t0 = Instant::now();
        let mut batcher = Batcher::new(BatchConfig::default());
        batcher.push(item(1, "666"), t0);
        assert_eq!(batcher.push(item(2, "666"), t0 + MS), None);
        assert_eq!(batcher.push(item(3, "666"), t0 + 2 * MS), None);
        assert_eq!(batcher.push(item(4, "666 "), t0 + 3 * MS), None);
        let flush = batcher.poll(t0 + 50 * MS).expect("due");
        assert_eq!(seqs(&flush), [2, 4]);
        assert_eq!(flush.items[0].count, 2);
        assert_eq!(flush.items[1].count, 1);
        assert_eq!(
            flush.merged,
            [Merged {
                seq: 3,
                into_seq: 2,
                user_id: "u3".into(),
                client_msg_id: "c3".into(),
            }]
        );
    }

    #[test]
    fn no_merge_beyond_merge_window() {
        let t0 = Instant::now();
        let config = BatchConfig {
            window: Duration::from_secs(10),
            merge_window: 100 * MS,
            max_items: 256,
        };
        let mut batcher = Batcher::new(config);
        batcher.push(item(1, "x"), t0);
        batcher.push(item(2, "x"), t0 + MS);
        batcher.push(item(3, "x"), t0 + 101 * MS); // exactly merge_window later: merged
        batcher.push(item(4, "x"), t0 + 102 * MS); // beyond it: held on its own
        batcher.push(item(5, "x"), t0 + 103 * MS);
        let flush = batcher.poll(t0 + Duration::from_secs(10)).expect("due");
        assert_eq!(seqs(&flush), [2, 4]);
        assert_eq!((flush.items[0].count, flush.items[1].count), (2, 2));
        let into: Vec<_> = flush.merged.iter().map(|m| (m.seq, m.into_seq)).collect();
        assert_eq!(into, [(3, 2), (5, 4)], "5 merges into the recent one");
    }

    #[test]
    fn max_items_flushes_at_once() {
        let t0 = Instant::now();
        let config = BatchConfig {
            max_items: 3,
            ..Default::default()
        };
        let mut batcher = Batcher::new(config);
        batcher.push(item(1, "a"), t0);
        assert_eq!(batcher.push(item(2, "b"), t0), None);
        assert_eq!(batcher.push(item(3, "c"), t0), None);
        let flush = batcher.push(item(4, "d"), t0).expect("full");
        assert_eq!(seqs(&flush), [2, 3, 4]);
        // The forced flush restarts the window.
        assert_eq!(batcher.push(item(5, "e"), t0 + MS), None);
        assert_eq!(batcher.next_deadline(), Some(t0 + 50 * MS));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push { gap_ms: u64, text: u8 },
        Poll { gap_ms: u64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..30, 0u8..4).prop_map(|(gap_ms, text)| Op::Push { gap_ms, text }),
            (0u64..80).prop_map(|gap_ms| Op::Poll { gap_ms }),
        ]
    }

    proptest! {
        #[test]
        fn batching_invariants(
            ops in prop::collection::vec(op(), 0..120),
            window_ms in 0u64..60,
            merge_ms in 0u64..200,
            max_items in 1usize..8,
        ) {
            let config = BatchConfig {
                window: Duration::from_millis(window_ms),
                merge_window: Duration::from_millis(merge_ms),
                max_items,
            };
            let mut batcher = Batcher::new(config);
            let t0 = Instant::now();
            let mut now = t0;
            let mut seq = 0u64;
            let mut flushes = Vec::new();
            for op in ops {
                match op {
                    Op::Push { gap_ms, text } => {
                        now += Duration::from_millis(gap_ms);
                        seq += 1;
                        flushes.extend(batcher.push(item(seq, &text.to_string()), now));
                    }
                    Op::Poll { gap_ms } => {
                        now += Duration::from_millis(gap_ms);
                        let deadline = batcher.next_deadline();
                        let flushed = batcher.poll(now);
                        if flushed.is_some() {
                            // Nothing flushes from poll before its deadline.
                            prop_assert!(deadline.is_some_and(|d| now >= d));
                        } else if let Some(d) = deadline {
                            prop_assert!(now < d);
                        }
                        flushes.extend(flushed);
                    }
                }
                prop_assert_eq!(batcher.next_deadline().is_some(), batcher.pending_len() > 0);
            }
            if let Some(deadline) = batcher.next_deadline() {
                flushes.extend(batcher.poll(deadline));
            }
            prop_assert_eq!(batcher.pending_len(), 0);

            // Each pushed seq accounted for exactly once; counts add up.
            let mut seen: HashMap<u64, u32> = HashMap::new();
            let mut total = 0u64;
            let mut last_seq = 0u64;
            for flush in &flushes {
                prop_assert!(flush.items.len() <= max_items);
                for item in &flush.items {
                    prop_assert!(item.count >= 1);
                    prop_assert!(item.seq > last_seq, "seqs strictly increasing");
                    last_seq = item.seq;
                    total += u64::from(item.count);
                    *seen.entry(item.seq).or_default() += 1;
                }
                for merged in &flush.merged {
                    prop_assert!(merged.into_seq < merged.seq);
                    prop_assert!(flush.items.iter().any(|i| i.seq == merged.into_seq && i.count >= 2));
                    prop_assert_eq!(&merged.client_msg_id, &format!("c{}", merged.seq));
                    *seen.entry(merged.seq).or_default() += 1;
                }
            }
            prop_assert_eq!(total, seq);
            prop_assert_eq!(seen.len() as u64, seq);
            prop_assert!(seen.values().all(|&n| n == 1));
        }
    }
}
