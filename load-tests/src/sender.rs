//! A sender: one moderator session posting its share of the danmaku rate.
//!
//! Senders are moderators so the per-user rate limit (20 per 30 s) does not
//! cap the offered load; what is measured is the room, not the limiter.
//! The schedule is open-loop ([`session::run`]). Every text is unique
//! (sender and counter) so the engine never merges two of them into one
//! item.
//!
//! Senders run on a thread and runtime of their own ([`spawn_all`]): when
//! thousands of viewers keep the main runtime busy, the schedule must not
//! wait behind them, or the offered rate would sag with the generator's
//! load instead of the server's.
//!
//! A sender also watches the room: its own items coming back (or `ack`
//! frames for them) count as accepted, with the round trip as ack latency;
//! `error` frames naming its `client_msg_id` count as rejected.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use protocol::v1::SendDanmaku;
use protocol::v1::client_frame;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::scenario::{Phase, Shared, TEARDOWN, collect};
use crate::session::{self, Protocol, Role};
use crate::tally::{Tally, Totals};
use crate::wire::{self, FrameView};

/// One sender's part of the schedule.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub index: u32,
    /// Danmaku to send in the whole run.
    pub quota: u64,
    /// Time between two sends of this sender.
    pub period: Duration,
    /// Delay of the first send after the common start, so that senders
    /// interleave instead of firing together.
    pub offset: Duration,
}

impl Plan {
    /// Splits `total` sends at `rate`/s evenly over `senders` senders.
    pub fn split(total: u64, rate: u32, senders: u32) -> Vec<Plan> {
        let senders64 = u64::from(senders);
        (0..senders)
            .map(|index| Plan {
                index,
                quota: total / senders64 + u64::from(u64::from(index) < total % senders64),
                period: Duration::from_secs_f64(f64::from(senders) / f64::from(rate)),
                offset: Duration::from_secs_f64(f64::from(index) / f64::from(rate)),
            })
            .collect()
    }
}

/// The JSON the `n`th danmaku of `sender` carries, whatever the server: a
/// danmaku client frame whose `client_msg_id` ([`wire::msg_id`]) holds its
/// send time, so that a viewer can time it ([`wire::sent_ns`]) and every
/// server carries payloads of the same size.
pub fn danmaku_payload(run_tag: &str, sender: u32, n: u64, sent_ns: u64) -> String {
    protocol::encode_client_json(&client_frame::Frame::Danmaku(SendDanmaku {
        text: format!("bench {sender} #{n}"),
        mode: 0,
        color: 0xFF_FF_FF,
        client_msg_id: wire::msg_id(run_tag, sender, n, sent_ns),
    }))
}

/// Starts the senders of `plans` on a dedicated thread, on `runtime` (a
/// single-threaded one, built by the caller before the viewers take the
/// file descriptors). The thread returns the senders' totals (and how many
/// were stuck) once the phase reaches [`Phase::Stopping`] and they have
/// closed.
pub fn spawn_all<P: Protocol>(
    runtime: Runtime,
    protocol: Arc<P>,
    shared: Arc<Shared>,
    plans: Vec<Plan>,
    phase: watch::Receiver<Phase>,
    ready: mpsc::UnboundedSender<Result<(), String>>,
) -> std::io::Result<std::thread::JoinHandle<(Totals, u64)>> {
    std::thread::Builder::new()
        .name("load-tests-senders".into())
        .spawn(move || {
            runtime.block_on(async move {
                let mut senders = JoinSet::new();
                for plan in plans {
                    let open = protocol.open(Role::Sender(plan), &shared);
                    let sender = session::run(
                        shared.clone(),
                        open,
                        Some(plan),
                        phase.clone(),
                        ready.clone(),
                    );
                    senders.spawn(sender);
                }
                drop(ready);
                let mut phase = phase;
                let _ = phase.wait_for(|p| *p == Phase::Stopping).await;
                collect(senders, Instant::now() + TEARDOWN).await
            })
        })
}

/// Counts what came back for this sender's own sends (`prefix`: its
/// [`wire::sender_prefix`]).
pub fn on_text(tally: &mut Tally, shared: &Shared, prefix: &str, text: &str) {
    tally.frames += 1;
    let Ok(frame) = FrameView::parse(text) else {
        tally.undecodable += 1;
        return;
    };
    let now = wire::unix_nanos();
    let (mut accepted, mut rejected) = (0, 0);
    frame.for_each_leaf(&mut |leaf| {
        let mine = leaf
            .client_msg_id
            .as_deref()
            .filter(|id| id.starts_with(prefix));
        match (leaf.kind.as_ref(), mine) {
            ("danmaku" | "ack", Some(id)) => {
                if let Some(sent) = wire::sent_ns(id, &shared.run_tag) {
                    tally.record_latency_us(now.saturating_sub(sent) / 1000, 1);
                }
                accepted += 1;
            }
            ("error", mine) => {
                tally.count_error(leaf.code.as_deref().unwrap_or(""));
                rejected += u64::from(mine.is_some());
            }
            _ => {}
        }
    });
    tally.accepted += accepted;
    tally.rejected += rejected;
    if accepted > 0 {
        shared
            .progress
            .accepted
            .fetch_add(accepted, Ordering::Relaxed);
    }
    if rejected > 0 {
        shared
            .progress
            .rejected
            .fetch_add(rejected, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_splits_count_and_interleaves_senders() {
        let plans = Plan::split(1003, 100, 10);
        assert_eq!(plans.iter().map(|p| p.quota).sum::<u64>(), 1003);
        assert_eq!(plans[0].quota, 101);
        assert_eq!(plans[9].quota, 100);
        assert_eq!(plans[0].period, Duration::from_millis(100));
        assert_eq!(plans[3].offset, Duration::from_millis(30));
    }

    #[test]
    fn the_payload_is_a_danmaku_a_viewer_can_time() {
        let sent = wire::unix_nanos() - 3_000_000;
        let payload = danmaku_payload("r1", 4, 17, sent);
        let view = FrameView::parse(&payload).unwrap();
        assert_eq!(view.kind, "danmaku");
        let id = view.client_msg_id.as_deref().unwrap();
        assert_eq!(id, wire::msg_id("r1", 4, 17, sent));
        assert_eq!(wire::sent_ns(id, "r1"), Some(sent));
        assert!(payload.contains("\"bench 4 #17\""), "{payload}");
    }

    #[test]
    fn own_items_and_acks_are_accepted_and_own_errors_rejected() {
        let shared = Shared::new("r1".into(), Duration::from_secs(1));
        let prefix = wire::sender_prefix("r1", 2);
        let mine = wire::msg_id("r1", 2, 0, wire::unix_nanos());
        let theirs = wire::msg_id("r1", 3, 0, wire::unix_nanos());
        let text = format!(
            r#"{{"type":"batch","items":[{{"type":"danmaku","seq":1,"client_msg_id":"{mine}"}},{{"type":"danmaku","seq":2,"client_msg_id":"{theirs}"}},{{"type":"ack","client_msg_id":"{mine}x","seq":3}}]}}"#
        );
        let mut tally = Tally::default();
        on_text(&mut tally, &shared, &prefix, &text);
        on_text(
            &mut tally,
            &shared,
            &prefix,
            &format!(r#"{{"type":"error","code":"blocked","client_msg_id":"{mine}"}}"#),
        );
        assert_eq!((tally.accepted, tally.rejected), (2, 1));
        assert_eq!(tally.errors["blocked"], 1);
        assert_eq!(shared.progress.accepted.load(Ordering::Relaxed), 2);
    }
}
