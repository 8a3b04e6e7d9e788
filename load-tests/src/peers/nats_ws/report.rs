//! What a NATS run reports: the fan-out measures every run has
//! ([`FanoutRun`], the engine report's own), nats-server's process, and
//! deliveries per server core.

use std::ops::Deref;

use serde::Serialize;

use super::NatsFanoutArgs;
use crate::report::{self, EngineReport, FanoutRun, Measured};
use crate::scenario::Load;
use crate::sender::danmaku_payload;
use crate::wire;

/// The result of one NATS run; its fan-out measures read as its own
/// fields ([`Deref`]) and sit beside them in the JSON.
///
/// Viewers that ended early (`connections`) are slow consumers the server
/// dropped, or other disconnects; `delivery.expected` is sent × connected
/// viewers (NATS acknowledges nothing); `delivery.frames` counts MSGs, one
/// item each; `sends.payload_bytes` is the engine's danmaku JSON.
#[derive(Debug, Serialize)]
pub struct NatsFanoutReport {
    pub scenario: &'static str,
    pub ws_url: String,
    pub subject: String,
    #[serde(flatten)]
    pub run: FanoutRun,
    /// `delivery.per_s` ÷ (server CPU % / 100): deliveries one fully used
    /// server core sustains. Absent without a server pid or CPU use.
    pub deliveries_per_s_per_core: Option<f64>,
    /// nats-server's CPU and memory (`kb_per_connection`: per idle
    /// connection, viewers and senders), with `server_pid`.
    pub server: Option<EngineReport>,
}

impl Deref for NatsFanoutReport {
    type Target = FanoutRun;

    fn deref(&self) -> &FanoutRun {
        &self.run
    }
}

impl NatsFanoutReport {
    pub(super) fn new(args: &NatsFanoutArgs, load: &Load, m: Measured) -> Self {
        let mut run = FanoutRun::new(load, &m);
        run.sends.payload_bytes = Some(danmaku_payload(&m.run_tag, 0, 0, wire::unix_nanos()).len());
        let deliveries_per_s_per_core = m
            .server
            .as_ref()
            .filter(|s| s.cpu_percent > 0.0)
            .map(|s| run.delivery.per_s / (s.cpu_percent / 100.0));
        Self {
            scenario: "nats-ws-fanout",
            ws_url: args.ws_url.clone(),
            subject: args.subject.clone(),
            run,
            deliveries_per_s_per_core,
            server: m.server,
        }
    }

    pub fn write_json(&self, path: &std::path::Path) -> anyhow::Result<()> {
        report::write_json_file(self, path)
    }

    /// The human summary, in the layout of the engine report.
    pub fn render(&self) -> String {
        let title = format!(
            "nats-server ws fan-out  subject {}  run {}  {}",
            self.subject, self.run_tag, self.ws_url
        );
        let server = self
            .server
            .as_ref()
            .map(|s| s.line("server", "connection", self.deliveries_per_s_per_core));
        self.run.render(&title, server, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::nats_ws::tests::args;
    use crate::report::tests::{layout, load, measured};

    #[test]
    fn the_report_has_the_engine_reports_measures_without_answers() {
        let report = NatsFanoutReport::new(&args(), &load(), measured(false));
        assert_eq!(report.delivery.expected, 3_000, "sent × viewers");
        assert_eq!(
            layout(&report),
            [
                "config connections deliveries_per_s_per_core delivery generator run_tag scenario sends server subject ws_url",
                "duration_s grace_s ramp rate senders viewers",
                "errors payload_bytes planned sent sent_per_s",
            ]
        );
        let text = report.render();
        assert!(
            text.starts_with("nats-server ws fan-out  subject live.bench  run abc123  ws://"),
            "{text}"
        );
        let payload = report.sends.payload_bytes.unwrap();
        assert!(
            text.contains(&format!(
                "\n  sends        300 planned, 300 sent (100.0/s), {payload} B payload\n"
            )),
            "{text}"
        );
        assert!(!text.contains("ack ms"), "{text}");
    }
}
