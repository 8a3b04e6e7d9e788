//! The `danmaku` scenario from start to report: set up, ramp, send, drain,
//! measure, tear down. Every wait in here has a deadline.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use crate::admin::{Admin, RoomStatus, counter_deltas};
use crate::cli::DanmakuArgs;
use crate::proc_stats::{ProcReader, ProcSample};
use crate::report::{EngineReport, GeneratorReport, Measured, Report};
use crate::sender::{self, Plan};
use crate::tally::{Tally, Totals};
use crate::{viewer, wire};

/// Where the run is; every session watches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Sessions connect; nobody sends.
    Connecting,
    /// Senders send on their schedule from `start`.
    Sending { start: Instant },
    /// Sending is over; sessions keep reading what is still in flight.
    Draining,
    /// Close and return the tally.
    Stopping,
}

/// Live counters the scenario reads to print progress and to end the grace
/// period early. Updated once per frame, never per item.
#[derive(Debug, Default)]
pub struct Progress {
    pub delivered: AtomicU64,
    pub sent: AtomicU64,
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
}

/// What every session of a run shares (read-only but for [`Progress`]).
#[derive(Debug)]
pub struct Shared {
    /// Tags this run's `client_msg_id`s; see [`wire::msg_id`].
    pub run_tag: String,
    pub connect_timeout: Duration,
    pub progress: Progress,
}

impl Shared {
    pub fn new(run_tag: String, connect_timeout: Duration) -> Self {
        Self {
            run_tag,
            connect_timeout,
            progress: Progress::default(),
        }
    }
}

/// How long sessions get to close and hand back their tallies at the end.
pub(crate) const TEARDOWN: Duration = Duration::from_secs(10);
/// Idle time between the last connection and the "connected" sample, so
/// the engine's per-session setup has settled.
const SETTLE: Duration = Duration::from_secs(1);
/// Tokens minted concurrently.
const MINT_IN_FLIGHT: usize = 64;

pub async fn run(args: &DanmakuArgs) -> anyhow::Result<Report> {
    let admin = Admin::new(&args.url, &args.admin_key)?;
    admin.health().await?;
    let engine = args.engine_pid.map(ProcReader::new).transpose()?;
    let generator = ProcReader::new(std::process::id()).ok();
    let room_status = admin.ensure_room(&args.room).await?;
    let run_tag = format!("{:06x}", (wire::unix_nanos() / 1000) & 0xff_ffff);
    note(&format!(
        "room `{}` {}, run {run_tag}: {} viewers, {} senders, {}/s for {:.1}s",
        args.room,
        if room_status == RoomStatus::Created {
            "created"
        } else {
            "reused"
        },
        args.viewers,
        args.senders,
        args.rate,
        args.duration.as_secs_f64()
    ));

    let viewer_count = if args.unique_viewer_tokens {
        args.viewers
    } else {
        1
    };
    let viewer_tokens =
        mint_all(&admin, &args.room, viewer_count, "viewer", &["subscribe"]).await?;
    let sender_tokens = mint_all(
        &admin,
        &args.room,
        args.senders,
        "sender",
        &["subscribe", "chat", "moderate"],
    )
    .await?;
    let viewer_urls: Vec<Arc<str>> = viewer_tokens
        .iter()
        .map(|t| Arc::from(wire::room_url(&args.url, &args.room, t)))
        .collect();

    let shared = Arc::new(Shared::new(run_tag.clone(), args.connect_timeout));
    let counters_before = admin.counters().await;
    let engine_idle = sample(engine.as_ref());

    // Ramp the viewers at --ramp per second, in 10 ms steps.
    let (phase_tx, phase_rx) = watch::channel(Phase::Connecting);
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let mut viewers = JoinSet::new();
    let ramp_start = Instant::now();
    let mut pace = tokio::time::interval(Duration::from_millis(10));
    pace.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut outcomes = Outcomes::default();
    let mut opened = 0u32;
    while opened < args.viewers {
        pace.tick().await;
        let due = (ramp_start.elapsed().as_secs_f64() * f64::from(args.ramp)).ceil() as u32;
        while opened < due.clamp(1, args.viewers) {
            let url = viewer_urls[opened as usize % viewer_urls.len()].clone();
            viewers.spawn(viewer::run(
                shared.clone(),
                url,
                phase_rx.clone(),
                ready_tx.clone(),
            ));
            opened += 1;
        }
        outcomes.drain(&mut ready_rx);
    }
    outcomes
        .wait(
            &mut ready_rx,
            args.viewers,
            Instant::now() + args.connect_timeout + Duration::from_secs(1),
        )
        .await;
    let ramp_s = ramp_start.elapsed().as_secs_f64();
    note(&format!(
        "viewers: {} connected, {} failed in {ramp_s:.1}s",
        outcomes.ok, outcomes.failed
    ));
    if outcomes.ok == 0 {
        let _ = phase_tx.send(Phase::Stopping);
        bail!("no viewer could connect: {}", outcomes.describe());
    }

    let jobs = Plan::split(args.planned_sends(), args.rate, args.senders)
        .into_iter()
        .zip(&sender_tokens)
        .map(|(plan, token)| (plan, wire::room_url(&args.url, &args.room, token)))
        .collect();
    drop(ready_tx);
    // A channel of their own: a viewer answering after its deadline must
    // not be counted as a sender.
    let (sender_ready_tx, mut sender_ready_rx) = mpsc::unbounded_channel();
    let senders = sender::spawn_all(shared.clone(), jobs, phase_rx.clone(), sender_ready_tx)
        .context("starting the sender thread")?;
    let mut sender_outcomes = Outcomes::default();
    sender_outcomes
        .wait(
            &mut sender_ready_rx,
            args.senders,
            Instant::now() + args.connect_timeout + Duration::from_secs(1),
        )
        .await;
    if sender_outcomes.ok == 0 {
        let _ = phase_tx.send(Phase::Stopping);
        bail!("no sender could connect: {}", sender_outcomes.describe());
    }

    tokio::time::sleep(SETTLE).await;
    let engine_connected = sample(engine.as_ref());
    let generator_start = sample(generator.as_ref());

    // Send for --duration, printing progress every 5 s.
    let start = Instant::now() + Duration::from_millis(50);
    let _ = phase_tx.send(Phase::Sending { start });
    let send_end = start + args.duration;
    let mut report_every =
        tokio::time::interval_at(start + Duration::from_secs(5), Duration::from_secs(5));
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(send_end) => break,
            _ = report_every.tick() => note(&progress_line(&shared.progress, start)),
        }
    }
    let _ = phase_tx.send(Phase::Draining);
    let send_window_s = args.duration.as_secs_f64();

    // Grace: until every accepted danmaku reached every connected viewer
    // and every send has its answer, or --grace runs out.
    let grace_start = Instant::now();
    let viewers_connected = outcomes.ok;
    loop {
        let p = &shared.progress;
        let accepted = p.accepted.load(Ordering::Relaxed);
        let answered =
            accepted + p.rejected.load(Ordering::Relaxed) >= p.sent.load(Ordering::Relaxed);
        if answered && p.delivered.load(Ordering::Relaxed) >= accepted * viewers_connected {
            break;
        }
        if grace_start.elapsed() >= args.grace {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let grace_used_s = grace_start.elapsed().as_secs_f64();
    let engine_end = sample(engine.as_ref());
    let generator_end = sample(generator.as_ref());
    let counters_after = admin.counters().await;

    let _ = phase_tx.send(Phase::Stopping);
    let viewer_totals = collect(viewers, Instant::now() + TEARDOWN).await;
    let sender_totals = tokio::task::spawn_blocking(move || senders.join())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_else(|| (Totals::default(), u64::from(args.senders)));
    note(&format!(
        "closed {} viewer and {} sender sessions",
        viewer_totals.0.connected, sender_totals.0.connected
    ));

    let engine_report = match (engine, engine_idle, engine_connected, engine_end) {
        (Some(reader), Some(idle), Some(connected), Some(end)) => Some(EngineReport::new(
            reader.pid(),
            &idle,
            &connected,
            &end,
            viewer_totals.0.connected + sender_totals.0.connected,
        )),
        _ => None,
    };
    let generator_report = match (generator_start, generator_end) {
        (Some(start), Some(end)) => Some(GeneratorReport {
            cpu_percent: end.cpu_percent_since(&start),
            rss_kb: end.rss_kb,
        }),
        _ => None,
    };
    let engine_counters = match (counters_before, counters_after) {
        (Some(before), Some(after)) => counter_deltas(&before, &after),
        _ => BTreeMap::new(),
    };
    Ok(Report::new(
        args,
        Measured {
            room_created: room_status == RoomStatus::Created,
            run_tag,
            ramp_s,
            send_window_s,
            grace_used_s,
            viewers: viewer_totals,
            senders: sender_totals,
            engine: engine_report,
            generator: generator_report,
            engine_counters,
        },
    ))
}

/// Mints `count` tokens (`bench-<role>-<i>`), [`MINT_IN_FLIGHT`] at a time.
async fn mint_all(
    admin: &Admin,
    room: &str,
    count: u32,
    role: &str,
    grants: &[&str],
) -> anyhow::Result<Vec<String>> {
    futures_util::stream::iter(0..count)
        .map(|i| async move {
            let user_id = format!("bench-{role}-{i}");
            admin.mint(&user_id, &user_id, room, grants).await
        })
        .buffered(MINT_IN_FLIGHT)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()
        .with_context(|| format!("minting {role} tokens"))
}

/// Connection outcomes reported as sessions learn them.
#[derive(Default)]
struct Outcomes {
    ok: u64,
    failed: u64,
    reasons: BTreeMap<String, u64>,
}

impl Outcomes {
    fn record(&mut self, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => self.ok += 1,
            Err(reason) => {
                self.failed += 1;
                *self.reasons.entry(reason).or_default() += 1;
            }
        }
    }

    fn drain(&mut self, rx: &mut mpsc::UnboundedReceiver<Result<(), String>>) {
        while let Ok(outcome) = rx.try_recv() {
            self.record(outcome);
        }
    }

    /// Waits until `expected` outcomes are in, or `deadline`.
    async fn wait(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<Result<(), String>>,
        expected: u32,
        deadline: Instant,
    ) {
        while self.ok + self.failed < u64::from(expected) {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(outcome)) => self.record(outcome),
                Ok(None) | Err(_) => break,
            }
        }
    }

    fn describe(&self) -> String {
        let reasons: Vec<String> = self
            .reasons
            .iter()
            .map(|(r, n)| format!("{r} ({n}x)"))
            .collect();
        if reasons.is_empty() {
            "no answer".into()
        } else {
            reasons.join(", ")
        }
    }
}

/// Joins every session until `deadline`; the ones still running are
/// aborted and counted as `stuck`.
pub(crate) async fn collect(mut set: JoinSet<Tally>, deadline: Instant) -> (Totals, u64) {
    let mut totals = Totals::default();
    loop {
        match tokio::time::timeout_at(deadline, set.join_next()).await {
            Ok(Some(Ok(tally))) => totals.absorb(tally),
            Ok(Some(Err(_))) => totals.absorb(Tally::failed("task panicked".into())),
            Ok(None) => return (totals, 0),
            Err(_) => {
                let stuck = set.len() as u64;
                set.abort_all();
                return (totals, stuck);
            }
        }
    }
}

fn sample(reader: Option<&ProcReader>) -> Option<ProcSample> {
    reader.and_then(|r| r.sample().ok())
}

fn progress_line(p: &Progress, start: Instant) -> String {
    format!(
        "t={:>4.0}s sent {} accepted {} rejected {} delivered {}",
        start.elapsed().as_secs_f64(),
        p.sent.load(Ordering::Relaxed),
        p.accepted.load(Ordering::Relaxed),
        p.rejected.load(Ordering::Relaxed),
        p.delivered.load(Ordering::Relaxed)
    )
}

/// Progress goes to stderr so that stdout carries only the report.
pub(crate) fn note(line: &str) {
    eprintln!("live-load: {line}");
}
