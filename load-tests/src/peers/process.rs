//! A server process the runner starts and stops itself (the engine, Janus,
//! nats-server, ffmpeg): pinned to its CPUs with `taskset`, optionally in a
//! [`Namespace`], output to a log file, stopped (TERM, then KILL) when
//! dropped, so no run leaves anything behind.

use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::netns::Namespace;
use super::profile::Profiler;

/// How to start one server.
pub struct Launch<'a> {
    /// Short name, for messages and the log file.
    pub name: &'a str,
    pub program: &'a str,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// `taskset -c` list (e.g. `"0"`), or none to leave it unpinned.
    pub cpus: Option<&'a str>,
    pub namespace: Option<&'a Namespace>,
    /// Where `<name>.log` goes.
    pub log_dir: &'a Path,
    /// Whether `--profile` samples it (servers compared, not feeders).
    pub profile: bool,
}

pub struct Server {
    name: String,
    child: Child,
    log: PathBuf,
    profile: bool,
    profiler: Option<Profiler>,
}

/// How long a server gets to stop after TERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

impl Server {
    pub fn spawn(launch: Launch<'_>) -> anyhow::Result<Self> {
        let log = launch.log_dir.join(format!("{}.log", launch.name));
        let out = File::create(&log).with_context(|| format!("cannot write {}", log.display()))?;
        let mut argv: Vec<String> = Vec::new();
        if let Some(cpus) = launch.cpus {
            argv.extend(["taskset".into(), "-c".into(), cpus.into()]);
        }
        if let Some(ns) = launch.namespace {
            argv.extend(["ip".into(), "netns".into(), "exec".into(), ns.name().into()]);
        }
        argv.push(launch.program.into());
        argv.extend(launch.args);
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .envs(launch.env)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot start {} ({})", launch.name, argv.join(" ")))?;
        Ok(Self {
            name: launch.name.to_owned(),
            child,
            log,
            profile: launch.profile,
            profiler: None,
        })
    }

    /// The server's pid (`taskset` and `ip netns exec` exec into it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Polls `ready` every 100 ms until it says yes; fails with the log's
    /// tail if the server exits or `limit` passes first.
    pub async fn wait_ready<F, Fut>(&mut self, limit: Duration, mut ready: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = Instant::now() + limit;
        loop {
            if ready().await {
                if self.profile {
                    self.profiler = Profiler::attach(&self.name, self.pid())?;
                }
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited ({status}): {}", self.name, self.log_tail(15));
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not ready after {limit:?}: {}",
                    self.name,
                    self.log_tail(15)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Fails if the server has exited (with its log's tail).
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status}): {}", self.name, self.log_tail(15));
        }
        Ok(())
    }

    /// The last `lines` lines of the server's output.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// TERM, a bounded wait, then KILL.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if let Some(profiler) = self.profiler.take() {
            match profiler.finish() {
                Ok(svg) => eprintln!("profile of {}: {}", self.name, svg.display()),
                Err(error) => eprintln!("no profile of {}: {error:#}", self.name),
            }
        }
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .output();
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.terminate();
    }
}
