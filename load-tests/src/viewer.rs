//! A viewer's count of what the engine's room sends it: one
//! [`session::run`](crate::session::run) per viewer reads the socket, and
//! [`on_text`] counts each text frame.
//!
//! Frames are read through [`FrameView`] (no allocation per item; see why
//! there). It times every bench item it receives against the send time carried in
//! the item's `client_msg_id`, into its own [`Tally`]. The only shared
//! write is one relaxed atomic add per frame (not per item), which lets the
//! scenario end the grace period as soon as everything has arrived.

use std::sync::atomic::Ordering;

use crate::scenario::Shared;
use crate::tally::Tally;
use crate::wire::{self, FrameView};

/// Counts one text frame: deliveries and latencies of this run's items,
/// other items as foreign, `error` frames by code.
pub fn on_text(tally: &mut Tally, shared: &Shared, text: &str) {
    tally.frames += 1;
    let Ok(frame) = FrameView::parse(text) else {
        tally.undecodable += 1;
        return;
    };
    // One clock read per frame: items of a batch arrived together.
    let now = wire::unix_nanos();
    let before = tally.deliveries;
    frame.for_each_leaf(&mut |leaf| match leaf.kind.as_ref() {
        "danmaku" => {
            let count = leaf.count.unwrap_or(1).max(1);
            match leaf
                .client_msg_id
                .as_deref()
                .and_then(|id| wire::sent_ns(id, &shared.run_tag))
            {
                Some(sent) => {
                    tally.deliveries += u64::from(count);
                    tally.record_latency_us(now.saturating_sub(sent) / 1000, count);
                }
                None => tally.foreign_items += u64::from(count),
            }
        }
        "error" => tally.count_error(leaf.code.as_deref().unwrap_or("")),
        _ => {}
    });
    let delivered = tally.deliveries - before;
    if delivered > 0 {
        shared
            .progress
            .delivered
            .fetch_add(delivered, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn items_of_this_run_are_timed_and_others_are_foreign() {
        let shared = Shared::new("r1".into(), Duration::from_secs(1));
        let sent = wire::unix_nanos() - 5_000_000;
        let id = wire::msg_id("r1", 0, 1, sent);
        let text = format!(
            r#"{{"type":"batch","items":[{{"type":"danmaku","seq":1,"text":"a","client_msg_id":"{id}","count":3}},{{"type":"danmaku","seq":4,"text":"b","client_msg_id":"web-1"}},{{"type":"error","code":"rate_limited"}}]}}"#
        );
        let mut tally = Tally::default();
        on_text(&mut tally, &shared, &text);
        on_text(&mut tally, &shared, "not json");
        assert_eq!(tally.frames, 2);
        assert_eq!(tally.undecodable, 1);
        assert_eq!(tally.deliveries, 3);
        assert_eq!(tally.foreign_items, 1);
        assert_eq!(tally.errors["rate_limited"], 1);
        assert_eq!(tally.latency.len(), 3);
        assert!(tally.latency.min() >= 4_900, "{}", tally.latency.min());
        assert_eq!(shared.progress.delivered.load(Ordering::Relaxed), 3);
    }
}
