//! Side-by-side results: for each scenario the engine's figures, the
//! peer's, and their ratio oriented so that above 1 means the engine does
//! better; rendered as JSON and as markdown, and spliced into
//! `docs/benchmarks.md` between two markers so the prose around the
//! numbers stays hand-written.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};
use serde::Serialize;

/// Which direction is good for a metric.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    Higher,
    Lower,
}

/// One measured quantity on both sides.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub metric: String,
    pub unit: &'static str,
    pub better: Better,
    pub engine: Option<f64>,
    /// None: the peer has no such figure (or no peer in this scenario).
    pub peer: Option<f64>,
}

impl Row {
    pub fn new(metric: impl Into<String>, unit: &'static str, better: Better) -> Self {
        Self {
            metric: metric.into(),
            unit,
            better,
            engine: None,
            peer: None,
        }
    }

    pub fn values(mut self, engine: Option<f64>, peer: Option<f64>) -> Self {
        self.engine = engine.filter(|v| v.is_finite());
        self.peer = peer.filter(|v| v.is_finite());
        self
    }

    /// Engine over peer for "higher is better", peer over engine for
    /// "lower is better": above 1, the engine leads.
    pub fn ratio(&self) -> Option<f64> {
        let (engine, peer) = (self.engine?, self.peer?);
        let (top, bottom) = match self.better {
            Better::Higher => (engine, peer),
            Better::Lower => (peer, engine),
        };
        (bottom > 0.0).then(|| top / bottom)
    }
}

/// One scenario's comparison.
#[derive(Debug, Serialize)]
pub struct Comparison {
    pub scenario: String,
    /// What the engine was compared with ("Janus 1.1.2 streaming plugin").
    pub peer: String,
    /// How: same input, paths, pinning; what each side's figures come from.
    pub setup: String,
    pub rows: Vec<Row>,
    /// Each side's full report, for whoever wants more than the table.
    pub engine_report: serde_json::Value,
    pub peer_report: serde_json::Value,
}

/// The whole run: the machine, the versions, every comparison.
#[derive(Debug, Serialize)]
pub struct SuiteReport {
    pub date: String,
    pub quick: bool,
    pub machine: Machine,
    pub versions: Vec<(String, String)>,
    pub comparisons: Vec<Comparison>,
    /// Scenarios that could not run, with the reason.
    pub failures: Vec<(String, String)>,
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub os: String,
    pub kernel: String,
}

impl Machine {
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_owned(), |(_, v)| v.trim().to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        let os = std::fs::read_to_string("/etc/os-release")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map_or_else(|| "unknown".to_owned(), |v| v.trim_matches('"').to_owned());
        Self {
            cpu,
            cores: machine_cores(),
            memory_gib: memory_kib / 1024.0 / 1024.0,
            os,
            kernel: first_line("uname", &["-r"]),
        }
    }
}

/// The machine's online CPUs, whatever this process is pinned to
/// (`available_parallelism` counts only the CPUs it may run on).
pub fn machine_cores() -> usize {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|text| text.lines().filter(|l| l.starts_with("processor")).count())
        .ok()
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// The first line a program prints (stdout, else stderr), or "absent".
pub fn first_line(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(out) => {
            let text = if out.stdout.is_empty() {
                out.stderr
            } else {
                out.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        }
        Err(_) => "absent".to_owned(),
    }
}

fn number(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 100_000.0 {
        format!("{:.0} k", value / 1000.0)
    } else if magnitude >= 100.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

fn cell(value: Option<f64>, unit: &str) -> String {
    value.map_or_else(
        || "—".to_owned(),
        |v| format!("{} {unit}", number(v)).trim().to_owned(),
    )
}

impl Comparison {
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let with_peer = self.rows.iter().any(|r| r.peer.is_some());
        if with_peer {
            let _ = writeln!(
                out,
                "### {} (vs {})\n\n{}\n",
                self.scenario, self.peer, self.setup
            );
            let _ = writeln!(
                out,
                "| metric | engine | {} | engine ÷ peer (> 1: engine better) |",
                self.peer
            );
            let _ = writeln!(out, "|---|---|---|---|");
        } else {
            let _ = writeln!(
                out,
                "### {} ({})\n\n{}\n",
                self.scenario, self.peer, self.setup
            );
            let _ = writeln!(out, "| metric | engine |\n|---|---|");
        }
        for row in &self.rows {
            let metric = format!(
                "{} ({} better)",
                row.metric,
                if row.better == Better::Higher {
                    "higher"
                } else {
                    "lower"
                }
            );
            let engine = cell(row.engine, row.unit);
            if with_peer {
                let ratio = row
                    .ratio()
                    .map_or_else(|| "—".to_owned(), |r| format!("**{r:.2}x**"));
                let peer = cell(row.peer, row.unit);
                let _ = writeln!(out, "| {metric} | {engine} | {peer} | {ratio} |");
            } else {
                let _ = writeln!(out, "| {metric} | {engine} |");
            }
        }
        out
    }
}

impl SuiteReport {
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Generated by `scripts/bench`{} on {}: {} ({} cores, {:.0} GiB), {}, Linux {}.\n",
            if self.quick {
                " (quick mode: tiny loads, figures not meaningful)"
            } else {
                ""
            },
            self.date,
            m.cpu,
            m.cores,
            m.memory_gib,
            m.os,
            m.kernel
        );
        let _ = writeln!(out, "| component | version |\n|---|---|");
        for (name, version) in &self.versions {
            let _ = writeln!(out, "| {name} | {version} |");
        }
        out.push('\n');
        for comparison in &self.comparisons {
            out.push_str(&comparison.markdown());
            out.push('\n');
        }
        for (scenario, reason) in &self.failures {
            let _ = writeln!(out, "**{scenario} did not run**: {reason}\n");
        }
        out
    }
}

pub const BEGIN: &str = "<!-- generated by scripts/bench: begin -->";
pub const END: &str = "<!-- generated by scripts/bench: end -->";

/// Replaces what lies between [`BEGIN`] and [`END`] in `doc` with
/// `generated`; the rest of the file is left as it is.
pub fn splice(doc: &str, generated: &str) -> anyhow::Result<String> {
    let (Some(begin), Some(end)) = (doc.find(BEGIN), doc.find(END)) else {
        bail!("the markers {BEGIN} and {END} are missing");
    };
    if end < begin {
        bail!("{END} comes before {BEGIN}");
    }
    Ok(format!(
        "{}{BEGIN}\n\n{}\n{}",
        &doc[..begin],
        generated.trim_end(),
        &doc[end..]
    ))
}

pub fn splice_file(path: &Path, generated: &str) -> anyhow::Result<()> {
    let doc =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    std::fs::write(path, splice(&doc, generated)?)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_point_the_same_way_whatever_the_metric() {
        let faster = Row::new("fps", "", Better::Higher).values(Some(60.0), Some(30.0));
        assert_eq!(faster.ratio(), Some(2.0));
        let cheaper = Row::new("CPU", "%", Better::Lower).values(Some(20.0), Some(40.0));
        assert_eq!(cheaper.ratio(), Some(2.0));
        let missing = Row::new("p99", "ms", Better::Lower).values(Some(1.0), None);
        assert_eq!(missing.ratio(), None);
        let zero = Row::new("loss", "", Better::Lower).values(Some(0.0), Some(0.0));
        assert_eq!(zero.ratio(), None, "no ratio of nothing to nothing");
    }

    #[test]
    fn splicing_replaces_only_the_generated_part() {
        let doc = format!("# B\nprose\n{BEGIN}\nold\n{END}\nmore prose\n");
        let new = splice(&doc, "new table\n").unwrap();
        assert_eq!(
            new,
            format!("# B\nprose\n{BEGIN}\n\nnew table\n{END}\nmore prose\n")
        );
        assert!(splice("no markers", "x").is_err());
    }
}
