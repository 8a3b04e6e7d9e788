//! The result of a run: a human summary on stdout and the same facts as
//! JSON (`--json`), so CI and the bench script can keep and compare runs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::Deref;
use std::path::Path;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::proc_stats::ProcSample;
use crate::scenario::Load;
use crate::tally::Totals;

/// The engine's danmaku run.
#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub url: String,
    pub room: String,
    pub room_created: bool,
    /// What every fan-out run reports; its fields read as this report's
    /// own ([`Deref`]) and sit beside them in the JSON.
    #[serde(flatten)]
    pub run: FanoutRun,
    /// Present with `--engine-pid`.
    pub engine: Option<EngineReport>,
    /// Increase of the engine's `*_total` counters over the run (/metrics).
    pub engine_counters: BTreeMap<String, f64>,
}

impl Deref for Report {
    type Target = FanoutRun;

    fn deref(&self) -> &FanoutRun {
        &self.run
    }
}

impl Report {
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        write_json_file(self, path)
    }

    /// The human summary.
    pub fn render(&self) -> String {
        let title = format!(
            "danmaku  room {} ({})  run {}  {}",
            self.room,
            if self.room_created {
                "created"
            } else {
                "reused"
            },
            self.run_tag,
            self.url
        );
        let engine = self
            .engine
            .as_ref()
            .map(|e| e.line("engine", "session", None));
        let counters = (!self.engine_counters.is_empty()).then(|| {
            let list: Vec<String> = self
                .engine_counters
                .iter()
                .map(|(k, v)| format!("{k} +{v}"))
                .collect();
            format!("  counters     {}", list.join(", "))
        });
        self.run.render(&title, engine, counters)
    }
}

/// What every danmaku fan-out run reports, whichever server it loaded
/// (the engine's room or a peer's subject), so that two reports compare
/// field by field. Each report adds its server's process
/// ([`EngineReport`]) under a name of its own.
#[derive(Debug, Serialize)]
pub struct FanoutRun {
    pub run_tag: String,
    pub config: RunConfig,
    /// Sessions that ended early: closed by the server (the engine's 1013,
    /// NATS's slow consumers) or otherwise disconnected, by reason.
    pub connections: Connections,
    pub sends: Sends,
    /// `expected` counts accepted sends where the server answers each one
    /// (the engine), sent ones where it does not (NATS).
    pub delivery: Delivery,
    /// The load generator itself: if it is near its core count × 100 %,
    /// the latencies measure the generator, not the server.
    pub generator: Option<GeneratorReport>,
}

#[derive(Debug, Serialize)]
pub struct RunConfig {
    pub viewers: u32,
    pub senders: u32,
    pub rate: u32,
    pub duration_s: f64,
    pub grace_s: f64,
    pub ramp: u32,
    /// The engine's `--unique-viewer-tokens`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unique_viewer_tokens: Option<bool>,
}

#[derive(Debug, Serialize)]
pub struct Connections {
    pub viewers_connected: u64,
    pub viewer_failures: BTreeMap<String, u64>,
    pub senders_connected: u64,
    pub sender_failures: BTreeMap<String, u64>,
    /// From the first viewer opened to the last outcome known.
    pub ramp_s: f64,
    /// Sessions the server ended before the run did, by close reason.
    pub viewers_ended_early: BTreeMap<String, u64>,
    pub senders_ended_early: BTreeMap<String, u64>,
    /// Sessions that did not close within the teardown deadline.
    pub stuck_at_close: u64,
}

#[derive(Debug, Serialize)]
pub struct Sends {
    pub planned: u64,
    /// Written to the socket.
    pub sent: u64,
    /// Where the server answers every send (the engine): its answers.
    #[serde(flatten)]
    pub answers: Option<Answers>,
    pub sent_per_s: f64,
    /// Errors senders received, by code (the engine's `error` frames,
    /// NATS's `-ERR` texts).
    pub errors: BTreeMap<String, u64>,
    /// Bytes of one payload (the danmaku JSON; the send time in it varies
    /// by a digit at most), where the report states it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_bytes: Option<usize>,
}

impl Sends {
    /// `P planned, S sent (R/s)`, and the answers or payload size where
    /// the report has them.
    fn summary(&self) -> String {
        let mut out = format!(
            "{} planned, {} sent ({:.1}/s)",
            self.planned, self.sent, self.sent_per_s
        );
        if let Some(a) = &self.answers {
            let _ = write!(out, ", {} accepted, {} rejected", a.accepted, a.rejected);
        }
        if let Some(bytes) = self.payload_bytes {
            let _ = write!(out, ", {bytes} B payload");
        }
        out
    }
}

#[derive(Debug, Serialize)]
pub struct Answers {
    /// Seen accepted by their sender (own item broadcast back, or `ack`).
    pub accepted: u64,
    pub rejected: u64,
    /// Send to the sender seeing its own item come back.
    pub ack_latency_ms: Latency,
}

#[derive(Debug, Serialize)]
pub struct Delivery {
    /// Items viewers received from this run (`count` included).
    pub deliveries: u64,
    /// Accepted (or, without answers, sent) sends × connected viewers.
    pub expected: u64,
    /// deliveries / expected.
    pub ratio: f64,
    /// Deliveries per second of the send window.
    pub per_s: f64,
    pub send_window_s: f64,
    pub grace_used_s: f64,
    /// Send to receive, as every viewer saw it.
    pub latency_ms: Latency,
    /// Frames (NATS: MSGs, one item each) viewers received.
    pub frames: u64,
    pub foreign_items: u64,
    pub undecodable_frames: u64,
    /// Errors viewers received, by code.
    pub errors: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
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
                p95: 0.0,
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
            p95: ms(h.value_at_quantile(0.95)),
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

    /// The summary line about the server's process, named `name`:
    /// `per` is what `kb_per_connection` is per (session, connection);
    /// `per_core`, deliveries per second per server core.
    pub fn line(&self, name: &str, per: &str, per_core: Option<f64>) -> String {
        let per_core =
            per_core.map_or_else(String::new, |v| format!(", {v:.0} deliveries/s per core"));
        format!(
            "  {name:<12} pid {}: cpu {:.1} % sending ({:.1} % connecting){per_core}; rss {} idle, {} connected ({:.1} KiB/{per}), {} at end",
            self.pid,
            self.cpu_percent,
            self.connect_cpu_percent,
            mib(self.rss_idle_kb),
            mib(self.rss_connected_kb),
            self.kb_per_connection,
            mib(self.rss_end_kb)
        )
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct GeneratorReport {
    /// Over the same window as the server's `cpu_percent`.
    pub cpu_percent: f64,
    pub rss_kb: u64,
}

/// What a fan-out run measured ([`crate::scenario::fan_out`]).
pub struct Measured {
    pub run_tag: String,
    /// Whether the server answered every send ([`crate::session::Protocol::ACKS`]).
    pub acks: bool,
    pub ramp_s: f64,
    pub grace_used_s: f64,
    /// Totals and the count of sessions stuck at close.
    pub viewers: (Totals, u64),
    pub senders: (Totals, u64),
    /// The server's process, when it was sampled.
    pub server: Option<EngineReport>,
    pub generator: Option<GeneratorReport>,
}

impl FanoutRun {
    pub fn new(load: &Load, m: &Measured) -> Self {
        let (viewers, viewers_stuck) = &m.viewers;
        let (senders, senders_stuck) = &m.senders;
        let answered = if m.acks {
            senders.accepted
        } else {
            senders.sent
        };
        let expected = answered * viewers.connected;
        let send_window_s = load.duration.as_secs_f64();
        let window = send_window_s.max(1e-9);
        Self {
            run_tag: m.run_tag.clone(),
            config: RunConfig {
                viewers: load.viewers,
                senders: load.senders,
                rate: load.rate,
                duration_s: send_window_s,
                grace_s: load.grace.as_secs_f64(),
                ramp: load.ramp,
                unique_viewer_tokens: None,
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
                planned: load.planned_sends(),
                sent: senders.sent,
                answers: m.acks.then(|| Answers {
                    accepted: senders.accepted,
                    rejected: senders.rejected,
                    ack_latency_ms: Latency::from_us(&senders.latency),
                }),
                sent_per_s: senders.sent as f64 / window,
                errors: senders.errors.clone(),
                payload_bytes: None,
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
                send_window_s,
                grace_used_s: m.grace_used_s,
                latency_ms: Latency::from_us(&viewers.latency),
                frames: viewers.frames,
                foreign_items: viewers.foreign_items,
                undecodable_frames: viewers.undecodable + senders.undecodable,
                errors: viewers.errors.clone(),
            },
            generator: m.generator,
        }
    }

    /// The human summary under `title`: `server` is the line about the
    /// server's process ([`EngineReport::line`]), `last` one a report adds.
    pub fn render(&self, title: &str, server: Option<String>, last: Option<String>) -> String {
        let c = &self.connections;
        let s = &self.sends;
        let d = &self.delivery;
        let mut out = format!("{title}\n");
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
        let _ = writeln!(out, "  sends        {}", s.summary());
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
        if let Some(a) = &s.answers {
            let _ = writeln!(out, "  ack ms       {}", a.ack_latency_ms.line());
        }
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
        let generator = self.generator.map(|g| g.line());
        for line in [server, generator, last].into_iter().flatten() {
            let _ = writeln!(out, "{line}");
        }
        out.truncate(out.trim_end().len());
        out
    }
}

impl GeneratorReport {
    fn line(&self) -> String {
        format!(
            "  generator    cpu {:.1} % sending; rss {}",
            self.cpu_percent,
            mib(self.rss_kb)
        )
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

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;

    pub(crate) fn load() -> Load {
        Load {
            viewers: 10,
            senders: 2,
            rate: 100,
            ramp: 1000,
            duration: Duration::from_secs(3),
            grace: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(5),
        }
    }

    pub(crate) fn measured(acks: bool) -> Measured {
        let viewers = Totals {
            connected: 10,
            deliveries: 2_900,
            ..Totals::default()
        };
        let senders = Totals {
            connected: 2,
            sent: 300,
            accepted: 290,
            ..Totals::default()
        };
        Measured {
            run_tag: "abc123".into(),
            acks,
            ramp_s: 0.5,
            grace_used_s: 0.1,
            viewers: (viewers, 0),
            senders: (senders, 0),
            server: None,
            generator: None,
        }
    }

    /// The keys of a report's JSON, and of its `config` and `sends`: each
    /// sorted, separated by spaces.
    pub(crate) fn layout(report: &impl Serialize) -> [String; 3] {
        let json = serde_json::to_value(report).unwrap();
        let keys = |value: &serde_json::Value| {
            let mut keys: Vec<&str> = value
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.as_str())
                .collect();
            keys.sort_unstable();
            keys.join(" ")
        };
        [keys(&json), keys(&json["config"]), keys(&json["sends"])]
    }

    #[test]
    fn the_engine_report_keeps_its_fields_and_layout() {
        let mut run = FanoutRun::new(&load(), &measured(true));
        run.config.unique_viewer_tokens = Some(false);
        let report = Report {
            scenario: "danmaku",
            url: "http://127.0.0.1:8080".into(),
            room: "bench".into(),
            room_created: true,
            run,
            engine: None,
            engine_counters: BTreeMap::new(),
        };
        assert_eq!(report.delivery.expected, 2_900, "accepted × viewers");
        assert_eq!(
            layout(&report),
            [
                "config connections delivery engine engine_counters generator room room_created run_tag scenario sends url",
                "duration_s grace_s ramp rate senders unique_viewer_tokens viewers",
                "accepted ack_latency_ms errors planned rejected sent sent_per_s",
            ]
        );
        assert_eq!(
            report.render(),
            "danmaku  room bench (created)  run abc123  http://127.0.0.1:8080\n\
             \x20 connections  viewers 10/10 in 0.5s, senders 2/2\n\
             \x20 sends        300 planned, 300 sent (100.0/s), 290 accepted, 0 rejected\n\
             \x20 deliveries   2900 of 2900 expected (100.000 %), 967/s over 3.0s, grace used 0.10s\n\
             \x20 latency ms   no samples\n\
             \x20 ack ms       no samples\n\
             \x20 errors       none"
        );
    }
}
