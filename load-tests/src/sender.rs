//! A sender: one moderator session posting its share of the danmaku rate.
//!
//! Senders are moderators so the per-user rate limit (20 per 30 s) does not
//! cap the offered load; what is measured is the room, not the limiter.
//! The schedule is open-loop: the `n`th send is due at `start + offset +
//! n * period` whatever happened to the previous one, and late ticks are
//! sent at once (tokio's `Burst`), so a slow engine cannot quietly lower
//! the rate it is offered. Every text is unique (sender and counter) so the
//! engine never merges two of them into one item.
//!
//! Senders run on a thread and runtime of their own ([`spawn_all`]): when
//! thousands of viewers keep the main runtime busy, the schedule must not
//! wait behind them, or the offered rate would sag with the generator's
//! load instead of the engine's.
//!
//! A sender also watches the room: its own items coming back (or `ack`
//! frames for them) count as accepted, with the round trip as ack latency;
//! `error` frames naming its `client_msg_id` count as rejected.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use protocol::v1::SendDanmaku;
use protocol::v1::client_frame;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, Interval};
use tokio_tungstenite::tungstenite::Message;

use crate::scenario::{Phase, Shared, TEARDOWN, collect};
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

/// Starts every sender on a dedicated thread with a single-threaded
/// runtime. The thread returns the senders' totals (and how many were stuck)
/// once the phase reaches [`Phase::Stopping`] and they have closed.
pub fn spawn_all(
    shared: Arc<Shared>,
    jobs: Vec<(Plan, String)>,
    phase: watch::Receiver<Phase>,
    ready: mpsc::UnboundedSender<Result<(), String>>,
) -> std::io::Result<std::thread::JoinHandle<(Totals, u64)>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("live-load-senders".into())
        .spawn(move || {
            runtime.block_on(async move {
                let mut senders = JoinSet::new();
                for (plan, url) in jobs {
                    senders.spawn(run(shared.clone(), url, plan, phase.clone(), ready.clone()));
                }
                drop(ready);
                let mut phase = phase;
                let _ = phase.wait_for(|p| *p == Phase::Stopping).await;
                collect(senders, Instant::now() + TEARDOWN).await
            })
        })
}

pub async fn run(
    shared: Arc<Shared>,
    url: String,
    plan: Plan,
    mut phase: watch::Receiver<Phase>,
    ready: mpsc::UnboundedSender<Result<(), String>>,
) -> Tally {
    let mut ws = match wire::open_reporting(&url, shared.connect_timeout, ready).await {
        Ok(ws) => ws,
        Err(reason) => return Tally::failed(reason),
    };
    let prefix = wire::sender_prefix(&shared.run_tag, plan.index);
    let mut tally = Tally::default();
    let mut ticker: Option<Interval> = None;
    loop {
        tokio::select! {
            biased;
            changed = phase.changed() => {
                if changed.is_err() {
                    break;
                }
                match *phase.borrow_and_update() {
                    Phase::Connecting => {}
                    Phase::Sending { start } => {
                        ticker = Some(tokio::time::interval_at(start + plan.offset, plan.period));
                    }
                    Phase::Draining => ticker = None,
                    Phase::Stopping => break,
                }
            }
            () = next_tick(&mut ticker), if tally.sent < plan.quota => {
                let sent_ns = wire::unix_nanos();
                let frame = client_frame::Frame::Danmaku(SendDanmaku {
                    text: format!("bench {} #{}", plan.index, tally.sent),
                    mode: 0,
                    color: 0xFF_FF_FF,
                    client_msg_id: wire::msg_id(&shared.run_tag, plan.index, tally.sent, sent_ns),
                });
                if let Err(error) = ws.send(Message::Text(protocol::encode_client_json(&frame).into())).await {
                    tally.ended_early = Some(wire::describe(&error));
                    return tally;
                }
                tally.sent += 1;
                shared.progress.sent.fetch_add(1, Ordering::Relaxed);
            }
            message = ws.next() => match wire::read(&message) {
                wire::Read::Text(text) => on_text(&mut tally, &shared, &prefix, text),
                wire::Read::Other => {}
                wire::Read::Ended(reason) => {
                    tally.ended_early = Some(reason);
                    return tally;
                }
            },
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    tally
}

async fn next_tick(ticker: &mut Option<Interval>) {
    match ticker {
        Some(ticker) => {
            ticker.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Counts what came back for this sender's own sends.
fn on_text(tally: &mut Tally, shared: &Shared, prefix: &str, text: &str) {
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
