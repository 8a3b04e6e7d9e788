//! The result of a run: a human summary on stdout and the same facts as
//! JSON (`--json`), so CI and the bench script can keep and compare runs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::cli::DanmakuArgs;
use crate::proc_stats::ProcSample;
use crate::tally::Totals;

#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub url: String,
    pub room: String,
    pub room_created: bool,
    pub run_tag: String,
    pub config: RunConfig,
    pub connections: Connections,
    pub sends: Sends,
    pub delivery: Delivery,
    /// Present with `--engine-pid`.
    pub engine: Option<EngineReport>,
    /// The load generator itself: if it is near its core count × 100 %,
    /// the latencies measure the generator, not the engine.
    pub generator: Option<GeneratorReport>,
    /// Increase of the engine's `*_total` counters over the run (/metrics).
    pub engine_counters: BTreeMap<String, f64>,
}

#[derive(Debug, Serialize)]
pub struct RunConfig {
    pub viewers: u32,
    pub senders: u32,
    pub rate: u32,
    pub duration_s: f64,
    pub grace_s: f64,
    pub ramp: u32,
    pub unique_viewer_tokens: bool,
}

#[derive(Debug, Serialize)]
pub struct Connections {
    pub viewers_connected: u64,
    pub viewer_failures: BTreeMap<String, u64>,
    pub senders_connected: u64,
    pub sender_failures: BTreeMap<String, u64>,
    /// From the first viewer opened to the last outcome known.
    pub ramp_s: f64,
    /// Sessions the engine ended before the run did, by close reason.
    pub viewers_ended_early: BTreeMap<String, u64>,
    pub senders_ended_early: BTreeMap<String, u64>,
    /// Sessions that did not close within the teardown deadline.
    pub stuck_at_close: u64,
}

#[derive(Debug, Serialize)]
pub struct Sends {
    pub planned: u64,
    pub sent: u64,
    /// Seen accepted by their sender (own item broadcast back, or `ack`).
    pub accepted: u64,
    pub rejected: u64,
    pub sent_per_s: f64,
    /// `error` frames received by senders, by code.
    pub errors: BTreeMap<String, u64>,
    /// Send to the sender seeing its own item come back.
    pub ack_latency_ms: Latency,
}

#[derive(Debug, Serialize)]
pub struct Delivery {
    /// Items viewers received from this run (`count` included).
    pub deliveries: u64,
    /// Accepted sends × connected viewers.
    pub expected: u64,
    /// deliveries / expected.
    pub ratio: f64,
    /// Deliveries per second of the send window.
    pub per_s: f64,
    pub send_window_s: f64,
    pub grace_used_s: f64,
    /// Send to receive, as every viewer saw it.
    pub latency_ms: Latency,
    pub frames: u64,
    pub foreign_items: u64,
    pub undecodable_frames: u64,
    /// `error` frames received by viewers, by code.
    pub errors: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    /// From a histogram in microseconds.
    pub fn from_us(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return Self {
                samples: 0,
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                p999: 0.0,
                max: 0.0,
                mean: 0.0,
            };
        }
        Self {
            samples: h.len(),
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }

    pub(crate) fn line(&self) -> String {
        if self.samples == 0 {
            return "no samples".into();
        }
        format!(
            "p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (n={})",
            self.p50, self.p90, self.p99, self.p999, self.max, self.samples
        )
    }
}

#[derive(Debug, Serialize)]
pub struct EngineReport {
    pub pid: u32,
    /// CPU from the start of sending to the end of the grace period, in
    /// percent of one core.
    pub cpu_percent: f64,
    /// CPU while the sessions were connecting.
    pub connect_cpu_percent: f64,
    pub rss_idle_kb: u64,
    pub rss_connected_kb: u64,
    pub rss_end_kb: u64,
    /// (rss_connected - rss_idle) / sessions connected: what one idle
    /// session costs the engine.
    pub kb_per_connection: f64,
}

impl EngineReport {
    pub fn new(
        pid: u32,
        idle: &ProcSample,
        connected: &ProcSample,
        end: &ProcSample,
        sessions: u64,
    ) -> Self {
        let grown = connected.rss_kb.saturating_sub(idle.rss_kb) as f64;
        Self {
            pid,
            cpu_percent: end.cpu_percent_since(connected),
            connect_cpu_percent: connected.cpu_percent_since(idle),
            rss_idle_kb: idle.rss_kb,
            rss_connected_kb: connected.rss_kb,
            rss_end_kb: end.rss_kb,
            kb_per_connection: if sessions == 0 {
                0.0
            } else {
                grown / sessions as f64
            },
        }
    }
}

#[derive(Debug, Serialize)]
pub struct GeneratorReport {
    /// Over the same window as the engine's `cpu_percent`.
    pub cpu_percent: f64,
    pub rss_kb: u64,
}

/// What a run measured, for [`Report::new`].
pub struct Measured {
    pub room_created: bool,
    pub run_tag: String,
    pub ramp_s: f64,
    pub send_window_s: f64,
    pub grace_used_s: f64,
    /// Totals and the count of sessions stuck at close.
    pub viewers: (Totals, u64),
    pub senders: (Totals, u64),
    pub engine: Option<EngineReport>,
    pub generator: Option<GeneratorReport>,
    pub engine_counters: BTreeMap<String, f64>,
}

impl Report {
    pub fn new(args: &DanmakuArgs, m: Measured) -> Self {
        let (viewers, viewers_stuck) = m.viewers;
        let (senders, senders_stuck) = m.senders;
        let expected = senders.accepted * viewers.connected;
        let window = m.send_window_s.max(1e-9);
        Self {
            scenario: "danmaku",
            url: args.url.clone(),
            room: args.room.clone(),
            room_created: m.room_created,
            run_tag: m.run_tag,
            config: RunConfig {
                viewers: args.viewers,
                senders: args.senders,
                rate: args.rate,
                duration_s: args.duration.as_secs_f64(),
                grace_s: args.grace.as_secs_f64(),
                ramp: args.ramp,
                unique_viewer_tokens: args.unique_viewer_tokens,
            },
            connections: Connections {
                viewers_connected: viewers.connected,
                viewer_failures: viewers.connect_failures.clone(),
                senders_connected: senders.connected,
                sender_failures: senders.connect_failures.clone(),
                ramp_s: m.ramp_s,
                viewers_ended_early: viewers.ended_early.clone(),
                senders_ended_early: senders.ended_early.clone(),
                stuck_at_close: viewers_stuck + senders_stuck,
            },
            sends: Sends {
                planned: args.planned_sends(),
                sent: senders.sent,
                accepted: senders.accepted,
                rejected: senders.rejected,
                sent_per_s: senders.sent as f64 / window,
                errors: senders.errors.clone(),
                ack_latency_ms: Latency::from_us(&senders.latency),
            },
            delivery: Delivery {
                deliveries: viewers.deliveries,
                expected,
                ratio: if expected == 0 {
                    0.0
                } else {
                    viewers.deliveries as f64 / expected as f64
                },
                per_s: viewers.deliveries as f64 / window,
                send_window_s: m.send_window_s,
                grace_used_s: m.grace_used_s,
                latency_ms: Latency::from_us(&viewers.latency),
                frames: viewers.frames,
                foreign_items: viewers.foreign_items,
                undecodable_frames: viewers.undecodable + senders.undecodable,
                errors: viewers.errors.clone(),
            },
            engine: m.engine,
            generator: m.generator,
            engine_counters: m.engine_counters,
        }
    }

    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        write_json_file(self, path)
    }

    /// The human summary.
    pub fn render(&self) -> String {
        let c = &self.connections;
        let s = &self.sends;
        let d = &self.delivery;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "live-load danmaku  room {} ({})  run {}  {}",
            self.room,
            if self.room_created {
                "created"
            } else {
                "reused"
            },
            self.run_tag,
            self.url
        );
        let _ = writeln!(
            out,
            "  connections  viewers {}/{} in {:.1}s, senders {}/{}{}",
            c.viewers_connected,
            self.config.viewers,
            c.ramp_s,
            c.senders_connected,
            self.config.senders,
            failures(&c.viewer_failures, &c.sender_failures)
        );
        let _ = writeln!(
            out,
            "  sends        {} planned, {} sent ({:.1}/s), {} accepted, {} rejected",
            s.planned, s.sent, s.sent_per_s, s.accepted, s.rejected
        );
        let _ = writeln!(
            out,
            "  deliveries   {} of {} expected ({:.3} %), {:.0}/s over {:.1}s, grace used {:.2}s",
            d.deliveries,
            d.expected,
            d.ratio * 100.0,
            d.per_s,
            d.send_window_s,
            d.grace_used_s
        );
        let _ = writeln!(out, "  latency ms   {}", d.latency_ms.line());
        let _ = writeln!(out, "  ack ms       {}", s.ack_latency_ms.line());
        let mut errors = d.errors.clone();
        for (code, n) in &s.errors {
            *errors.entry(code.clone()).or_default() += n;
        }
        let _ = writeln!(out, "  errors       {}", counts(&errors));
        if !c.viewers_ended_early.is_empty()
            || !c.senders_ended_early.is_empty()
            || c.stuck_at_close > 0
        {
            let _ = writeln!(
                out,
                "  dropped      viewers: {}; senders: {}; stuck at close: {}",
                counts(&c.viewers_ended_early),
                counts(&c.senders_ended_early),
                c.stuck_at_close
            );
        }
        if d.foreign_items > 0 || d.undecodable_frames > 0 {
            let _ = writeln!(
                out,
                "  other        {} foreign items, {} undecodable frames",
                d.foreign_items, d.undecodable_frames
            );
        }
        if let Some(e) = &self.engine {
            let _ = writeln!(
                out,
                "  engine       pid {}: cpu {:.1} % sending ({:.1} % connecting); rss {} idle, {} connected ({:.1} KiB/session), {} at end",
                e.pid,
                e.cpu_percent,
                e.connect_cpu_percent,
                mib(e.rss_idle_kb),
                mib(e.rss_connected_kb),
                e.kb_per_connection,
                mib(e.rss_end_kb)
            );
        }
        if let Some(g) = &self.generator {
            let _ = writeln!(
                out,
                "  generator    cpu {:.1} % sending; rss {}",
                g.cpu_percent,
                mib(g.rss_kb)
            );
        }
        if !self.engine_counters.is_empty() {
            let list: Vec<String> = self
                .engine_counters
                .iter()
                .map(|(k, v)| format!("{k} +{v}"))
                .collect();
            let _ = writeln!(out, "  counters     {}", list.join(", "));
        }
        out.truncate(out.trim_end().len());
        out
    }
}

fn failures(viewers: &BTreeMap<String, u64>, senders: &BTreeMap<String, u64>) -> String {
    if viewers.is_empty() && senders.is_empty() {
        return String::new();
    }
    format!(
        "; failed: viewers {}, senders {}",
        counts(viewers),
        counts(senders)
    )
}

fn counts(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "none".into();
    }
    map.iter()
        .map(|(k, n)| format!("{k} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

/// Writes a report as pretty JSON, creating its directory.
pub fn write_json_file(report: &impl Serialize, path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(report).context("serializing the report")?;
    std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))
}
