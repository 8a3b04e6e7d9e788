//! CPU time and resident memory of a process, read from /proc (Linux only).
//!
//! The engine runs in its own process, so its cost is read from outside:
//! `utime + stime` from `/proc/PID/stat` for CPU seconds and `VmRSS` from
//! `/proc/PID/status` for memory. The generator samples itself the same way,
//! to tell a saturated engine from a saturated load generator.

use std::time::Instant;

use anyhow::{Context, bail};
use serde::Serialize;

/// One reading of a process.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ProcSample {
    /// User plus system CPU seconds since the process started.
    pub cpu_s: f64,
    /// Resident set size, KiB.
    pub rss_kb: u64,
    #[serde(skip)]
    pub at: Instant,
}

impl ProcSample {
    /// CPU use between two samples, in percent of one core (may exceed 100).
    pub fn cpu_percent_since(&self, earlier: &ProcSample) -> f64 {
        let wall = self.at.duration_since(earlier.at).as_secs_f64();
        if wall <= 0.0 {
            0.0
        } else {
            100.0 * (self.cpu_s - earlier.cpu_s) / wall
        }
    }
}

/// Reads one process.
pub struct ProcReader {
    pid: u32,
    ticks_per_s: f64,
}

impl ProcReader {
    pub fn new(pid: u32) -> anyhow::Result<Self> {
        let reader = Self {
            pid,
            ticks_per_s: clock_ticks(),
        };
        reader.sample().with_context(|| {
            format!("cannot read /proc/{pid} (is the process on this machine?)")
        })?;
        Ok(reader)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn sample(&self) -> anyhow::Result<ProcSample> {
        let at = Instant::now();
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let (utime, stime) = parse_stat(&stat)?;
        let Some(rss_kb) = parse_vm_rss(&status) else {
            bail!("no VmRSS in /proc/{}/status", self.pid)
        };
        Ok(ProcSample {
            cpu_s: (utime + stime) as f64 / self.ticks_per_s,
            rss_kb,
            at,
        })
    }
}

/// `utime` and `stime` (clock ticks), fields 14 and 15 of /proc/PID/stat.
/// The command name (field 2) may hold spaces and parentheses, so fields
/// are counted from the last `)`.
pub fn parse_stat(text: &str) -> anyhow::Result<(u64, u64)> {
    let Some((_, rest)) = text.rsplit_once(')') else {
        bail!("malformed /proc stat")
    };
    // `rest` starts at field 3 (state): utime is field 14, i.e. index 11.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .context("short /proc stat")?
            .parse::<u64>()
            .context("bad number in /proc stat")
    };
    Ok((field(11)?, field(12)?))
}

/// `VmRSS` in KiB from /proc/PID/status.
pub fn parse_vm_rss(text: &str) -> Option<u64> {
    let line = text.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `sysconf(_SC_CLK_TCK)` without a libc binding: ask `getconf`, and fall
/// back to 100, the value on every mainstream Linux architecture.
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse::<f64>().ok())
        .filter(|ticks| *ticks > 0.0)
        .unwrap_or(100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_paren() {
        let stat = "4242 (live (engine) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 17 0 123 456 789";
        assert_eq!(parse_stat(stat).unwrap(), (250, 75));
        assert!(parse_stat("garbage").is_err());
    }

    #[test]
    fn vm_rss_is_read_in_kib() {
        let status = "Name:\tlive-engine\nVmPeak:\t  9000 kB\nVmRSS:\t   12345 kB\nThreads:\t17\n";
        assert_eq!(parse_vm_rss(status), Some(12345));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let reader = ProcReader::new(std::process::id()).unwrap();
        let sample = reader.sample().unwrap();
        assert!(sample.rss_kb > 0);
    }
}
