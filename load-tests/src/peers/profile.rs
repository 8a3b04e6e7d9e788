//! CPU profiles of the servers a comparison starts (`--profile DIR`):
//! `perf record` attached to the server once it is ready and stopped just
//! before the server is, so start-up and shutdown stay out of the picture;
//! then a flame graph (`inferno`) and a flat table of the hottest
//! functions beside it.
//!
//! Sampling is `cpu-clock` (a software clock, so it works in VMs without a
//! PMU) with DWARF unwinding (release builds keep no frame pointers), at a
//! rate low enough that unwinding one busy core stays cheap.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Where profiles go; unset means no profiling.
static PROFILE_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Samples per second: enough for a 20 s window to show every path above
/// half a percent, few enough that `perf script` unwinds them in seconds.
const SAMPLE_HZ: &str = "199";

/// Turns profiling on for every server started after this, writing into
/// `dir` (created). Fails when `perf` or `inferno` is missing.
pub fn enable(dir: &Path) -> anyhow::Result<()> {
    for tool in ["perf", "inferno-collapse-perf", "inferno-flamegraph"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        anyhow::ensure!(
            found,
            "--profile needs `{tool}` (scripts/bench --profile installs it)"
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let _ = PROFILE_DIR.set(dir.to_path_buf());
    Ok(())
}

/// A `perf record` attached to one server.
pub struct Profiler {
    perf: Child,
    data: PathBuf,
    /// `<dir>/<name>-<pid>`, the stem of every file this profile writes.
    stem: PathBuf,
}

impl Profiler {
    /// Starts sampling `pid`, when profiling is on.
    pub fn attach(name: &str, pid: u32) -> anyhow::Result<Option<Self>> {
        let Some(dir) = PROFILE_DIR.get() else {
            return Ok(None);
        };
        let stem = dir.join(format!("{name}-{pid}"));
        let data = stem.with_extension("perf.data");
        let log = File::create(stem.with_extension("perf.log"))?;
        let perf = Command::new("perf")
            .args(["record", "-e", "cpu-clock", "-F", SAMPLE_HZ])
            .args([
                "--call-graph",
                "dwarf,8192",
                "-m",
                "16M",
                "-p",
                &pid.to_string(),
                "-o",
            ])
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start perf record")?;
        Ok(Some(Self { perf, data, stem }))
    }

    /// Stops sampling and writes `<stem>.svg` (flame graph) and
    /// `<stem>.txt` (functions by their own share of the samples).
    pub fn finish(mut self) -> anyhow::Result<PathBuf> {
        let _ = Command::new("kill")
            .args(["-INT", &self.perf.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.perf.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = self.perf.kill();
                bail!("perf record did not stop");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let data = self.data.display().to_string();
        let svg = self.stem.with_extension("svg");
        let folded = self.stem.with_extension("folded");
        shell(&format!(
            "perf script -i '{data}' 2>/dev/null | inferno-collapse-perf > '{}'",
            folded.display()
        ))?;
        shell(&format!(
            "inferno-flamegraph --minwidth 1 --title '{}' < '{}' > '{}'",
            self.stem.file_name().unwrap_or_default().display(),
            folded.display(),
            svg.display()
        ))?;
        shell(&format!(
            "perf report -i '{data}' --stdio --no-children -g none --sort symbol \
             --percent-limit 0.5 2>/dev/null | grep -v -e '^#' -e '^$' > '{}'",
            self.stem.with_extension("txt").display()
        ))?;
        // The raw samples are large; the folded stacks keep everything the
        // pictures are made of.
        let _ = std::fs::remove_file(&self.data);
        Ok(svg)
    }
}

fn shell(script: &str) -> anyhow::Result<()> {
    let status = Command::new("sh").args(["-c", script]).status()?;
    anyhow::ensure!(status.success(), "`{script}` failed ({status})");
    Ok(())
}
