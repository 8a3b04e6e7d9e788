//! The `danmaku` scenario from start to report: set up, ramp, send, drain,
//! measure, tear down. Every wait in here has a deadline.
//!
//! [`fan_out`] is the run itself, whatever the server: the engine's room
//! ([`run`], through [`Room`]) or a peer's
//! ([`crate::peers::nats_ws::run`]); a [`Protocol`] says how to reach it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use crate::admin::{Admin, RoomStatus, counter_deltas};
use crate::cli::{
    DanmakuArgs, MAX_DURATION, MAX_GRACE, MAX_RATE, MAX_SENDERS, MAX_VIEWERS, Target,
};
use crate::proc_stats::{ProcReader, ProcSample};
use crate::report::{EngineReport, FanoutRun, GeneratorReport, Measured, Report};
use crate::room::Room;
use crate::sender::{self, Plan};
use crate::session::{self, Protocol, Role};
use crate::tally::{Tally, Totals};
use crate::wire;

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

impl Progress {
    /// Whether what was sent has reached each of `viewers`: with `acks`,
    /// every send has its answer and every accepted one was delivered;
    /// without, every one sent was.
    fn all_delivered(&self, viewers: u64, acks: bool) -> bool {
        let sent = self.sent.load(Ordering::Relaxed);
        let delivered = self.delivered.load(Ordering::Relaxed);
        if !acks {
            return delivered >= sent * viewers;
        }
        let accepted = self.accepted.load(Ordering::Relaxed);
        accepted + self.rejected.load(Ordering::Relaxed) >= sent && delivered >= accepted * viewers
    }

    fn line(&self, start: Instant, acks: bool) -> String {
        let answers = if acks {
            format!(
                " accepted {} rejected {}",
                self.accepted.load(Ordering::Relaxed),
                self.rejected.load(Ordering::Relaxed)
            )
        } else {
            String::new()
        };
        format!(
            "t={:>4.0}s sent {}{answers} delivered {}",
            start.elapsed().as_secs_f64(),
            self.sent.load(Ordering::Relaxed),
            self.delivered.load(Ordering::Relaxed)
        )
    }
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

/// What a fan-out run is asked for, whichever server it loads.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub viewers: u32,
    pub senders: u32,
    /// Messages per second, in total across all senders.
    pub rate: u32,
    /// Connections opened per second while ramping up.
    pub ramp: u32,
    /// How long the senders send.
    pub duration: Duration,
    /// After that, how long to wait for deliveries still in flight.
    pub grace: Duration,
    /// Give up on one connection after this long.
    pub connect_timeout: Duration,
}

/// Upper bounds of a [`Load`] beside those the `danmaku` flags name.
const MAX_RAMP: u32 = 100_000;
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(120);

impl Load {
    /// The bounds the `danmaku` flags enforce: every count at least 1,
    /// every time but the grace period longer than zero, none unbounded.
    pub fn validate(&self) -> anyhow::Result<()> {
        let count = |value: u32, max: u32, what: &str| {
            if value == 0 || value > max {
                bail!("{what} must be between 1 and {max}");
            }
            Ok(())
        };
        let time = |value: Duration, may_be_zero: bool, max: Duration, what: &str| {
            if may_be_zero && value > max {
                bail!("{what} must be at most {}s", max.as_secs());
            }
            if !may_be_zero && (value.is_zero() || value > max) {
                bail!("{what} must be between 1ms and {}s", max.as_secs());
            }
            Ok(())
        };
        count(self.viewers, MAX_VIEWERS, "viewers")?;
        count(self.senders, MAX_SENDERS, "senders")?;
        count(self.rate, MAX_RATE, "rate")?;
        count(self.ramp, MAX_RAMP, "ramp")?;
        time(self.duration, false, MAX_DURATION, "duration")?;
        time(self.grace, true, MAX_GRACE, "grace")?;
        time(
            self.connect_timeout,
            false,
            MAX_CONNECT_TIMEOUT,
            "connect timeout",
        )
    }

    /// Messages the senders are scheduled to send in total.
    pub fn planned_sends(&self) -> u64 {
        (f64::from(self.rate) * self.duration.as_secs_f64()).round() as u64
    }

    /// When the connection outcomes of sessions opened now are all in.
    fn connect_deadline(&self) -> Instant {
        Instant::now() + self.connect_timeout + Duration::from_secs(1)
    }
}

impl From<&DanmakuArgs> for Load {
    fn from(args: &DanmakuArgs) -> Self {
        Self {
            viewers: args.viewers,
            senders: args.senders,
            rate: args.rate,
            ramp: args.ramp,
            duration: args.duration,
            grace: args.grace,
            connect_timeout: args.connect_timeout,
        }
    }
}

impl fmt::Display for Load {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} viewers, {} senders, {}/s for {:.1}s",
            self.viewers,
            self.senders,
            self.rate,
            self.duration.as_secs_f64()
        )
    }
}

/// How long sessions get to close and hand back their tallies at the end.
pub(crate) const TEARDOWN: Duration = Duration::from_secs(10);
/// Idle time between the last connection and the "connected" sample, so
/// the server's per-session setup has settled.
const SETTLE: Duration = Duration::from_secs(1);
/// Tokens minted concurrently.
const MINT_IN_FLIGHT: usize = 64;

pub async fn run(target: &Target, args: &DanmakuArgs) -> anyhow::Result<Report> {
    let admin = Admin::new(&target.url, &target.admin_key)?;
    admin.health().await?;
    let engine = target.engine_pid.map(ProcReader::new).transpose()?;
    let room_status = admin.ensure_room(&args.room).await?;
    let room_created = room_status == RoomStatus::Created;
    let load = Load::from(args);
    let run_tag = wire::run_tag();
    note(&format!(
        "room `{}` {}, run {run_tag}: {load}",
        args.room,
        if room_created { "created" } else { "reused" },
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
    let room = Room::new(&target.url, &args.room, &viewer_tokens, &sender_tokens);

    let counters_before = admin.counters().await;
    let (measured, counters_after) = fan_out(room, &load, run_tag, engine, async || {
        admin.counters().await
    })
    .await?;
    let engine_counters = match (counters_before, counters_after) {
        (Some(before), Some(after)) => counter_deltas(&before, &after),
        _ => BTreeMap::new(),
    };
    let mut run = FanoutRun::new(&load, &measured);
    run.config.unique_viewer_tokens = Some(args.unique_viewer_tokens);
    Ok(Report {
        scenario: "danmaku",
        url: target.url.clone(),
        room: args.room.clone(),
        room_created,
        run,
        engine: measured.server,
        engine_counters,
    })
}

/// One run against `protocol`'s server, from the first viewer to the last
/// close: ramp the viewers, connect the senders, settle, send for
/// `load.duration`, wait up to `load.grace` for what is still in flight,
/// close. `server` is sampled idle (before the first viewer), connected
/// (after the settle) and at the end (after the grace period); `at_end`
/// runs after that last sample, while every session is still open.
///
/// Failed connections are counted, not fatal; the run fails only if no
/// viewer or no sender could connect.
pub async fn fan_out<P: Protocol, T>(
    protocol: P,
    load: &Load,
    run_tag: String,
    server: Option<ProcReader>,
    at_end: impl AsyncFnOnce() -> T,
) -> anyhow::Result<(Measured, T)> {
    let protocol = Arc::new(protocol);
    let shared = Arc::new(Shared::new(run_tag, load.connect_timeout));
    let generator = ProcReader::new(std::process::id()).ok();
    // Built before the viewers ramp: it needs file descriptors too, and
    // when `ulimit -n` is short the senders should fail to connect
    // (counted, with the reason) rather than the run fail to start them.
    let sender_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the senders' runtime")?;
    let server_idle = sample(server.as_ref());

    let (phase_tx, phase_rx) = watch::channel(Phase::Connecting);
    let ramp_start = Instant::now();
    let (viewers, outcomes) = ramp_viewers(&*protocol, load, &shared, &phase_rx).await;
    let ramp_s = ramp_start.elapsed().as_secs_f64();
    note(&format!(
        "{}viewers: {} connected, {} failed in {ramp_s:.1}s",
        by::<P>(),
        outcomes.ok,
        outcomes.failed
    ));
    if outcomes.ok == 0 {
        let _ = phase_tx.send(Phase::Stopping);
        bail!(
            "no viewer could connect{}: {}",
            to::<P>(),
            outcomes.describe()
        );
    }

    // A channel of their own: a viewer answering after its deadline must
    // not be counted as a sender.
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let plans = Plan::split(load.planned_sends(), load.rate, load.senders);
    let senders = sender::spawn_all(
        sender_runtime,
        protocol,
        shared.clone(),
        plans,
        phase_rx.clone(),
        ready_tx,
    )
    .context("starting the sender thread")?;
    let mut sender_outcomes = Outcomes::default();
    let deadline = load.connect_deadline();
    sender_outcomes
        .wait(&mut ready_rx, load.senders, deadline)
        .await;
    if sender_outcomes.ok == 0 {
        let _ = phase_tx.send(Phase::Stopping);
        bail!(
            "no sender could connect{}: {}",
            to::<P>(),
            sender_outcomes.describe()
        );
    }

    tokio::time::sleep(SETTLE).await;
    let server_connected = sample(server.as_ref());
    let generator_start = sample(generator.as_ref());

    let start = Instant::now() + Duration::from_millis(50);
    let _ = phase_tx.send(Phase::Sending { start });
    send_window::<P>(&shared, start, load.duration).await;
    let _ = phase_tx.send(Phase::Draining);
    let grace_used_s = drain::<P>(&shared, outcomes.ok, load.grace).await;
    let server_end = sample(server.as_ref());
    let generator_end = sample(generator.as_ref());
    let after = at_end().await;

    let _ = phase_tx.send(Phase::Stopping);
    let viewers = collect(viewers, Instant::now() + TEARDOWN).await;
    let all_stuck = u64::from(load.senders);
    let senders = tokio::task::spawn_blocking(move || senders.join())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_else(|| (Totals::default(), all_stuck));
    note(&format!(
        "{}closed {} viewer and {} sender sessions",
        by::<P>(),
        viewers.0.connected,
        senders.0.connected
    ));

    let server = match (server, server_idle, server_connected, server_end) {
        (Some(reader), Some(idle), Some(connected), Some(end)) => Some(EngineReport::new(
            reader.pid(),
            &idle,
            &connected,
            &end,
            viewers.0.connected + senders.0.connected,
        )),
        _ => None,
    };
    let generator = match (generator_start, generator_end) {
        (Some(start), Some(end)) => Some(GeneratorReport {
            cpu_percent: end.cpu_percent_since(&start),
            rss_kb: end.rss_kb,
        }),
        _ => None,
    };
    let measured = Measured {
        run_tag: shared.run_tag.clone(),
        acks: P::ACKS,
        ramp_s,
        grace_used_s,
        viewers,
        senders,
        server,
        generator,
    };
    Ok((measured, after))
}

/// Opens `load.viewers` viewers at `load.ramp` per second (in 10 ms
/// steps) and waits, bounded, for every outcome.
async fn ramp_viewers<P: Protocol>(
    protocol: &P,
    load: &Load,
    shared: &Arc<Shared>,
    phase: &watch::Receiver<Phase>,
) -> (JoinSet<Tally>, Outcomes) {
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let mut viewers = JoinSet::new();
    let mut outcomes = Outcomes::default();
    let start = Instant::now();
    let mut pace = tokio::time::interval(Duration::from_millis(10));
    pace.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut opened = 0u32;
    while opened < load.viewers {
        pace.tick().await;
        let due = (start.elapsed().as_secs_f64() * f64::from(load.ramp)).ceil() as u32;
        while opened < due.clamp(1, load.viewers) {
            let open = protocol.open(Role::Viewer(opened), shared);
            let viewer = session::run(shared.clone(), open, None, phase.clone(), ready_tx.clone());
            viewers.spawn(viewer);
            opened += 1;
        }
        outcomes.drain(&mut ready_rx);
    }
    drop(ready_tx);
    let deadline = load.connect_deadline();
    outcomes.wait(&mut ready_rx, load.viewers, deadline).await;
    (viewers, outcomes)
}

/// Sends for `duration` from `start`, printing progress every 5 s.
async fn send_window<P: Protocol>(shared: &Shared, start: Instant, duration: Duration) {
    let mut every =
        tokio::time::interval_at(start + Duration::from_secs(5), Duration::from_secs(5));
    let end = start + duration;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(end) => return,
            _ = every.tick() => note(&format!("{}{}", by::<P>(), shared.progress.line(start, P::ACKS))),
        }
    }
}

/// Grace: waits until everything sent reached every connected viewer (and,
/// with answers, every send has its answer), or `grace` runs out; returns
/// the time it took.
async fn drain<P: Protocol>(shared: &Shared, viewers: u64, grace: Duration) -> f64 {
    let start = Instant::now();
    while !shared.progress.all_delivered(viewers, P::ACKS) && start.elapsed() < grace {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed().as_secs_f64()
}

/// Before a peer's progress notes: its name.
fn by<P: Protocol>() -> String {
    P::PEER.map_or_else(String::new, |peer| format!("{peer} "))
}

/// After "could not connect" for a peer: its name.
fn to<P: Protocol>() -> String {
    P::PEER.map_or_else(String::new, |peer| format!(" to {peer}"))
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

pub(crate) use crate::progress::note;
