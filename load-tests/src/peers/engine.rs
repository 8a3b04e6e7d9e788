//! The engine as the runner starts it for a comparison: the release
//! binary built beside the runner (`live-engine`), a fresh data directory,
//! a fixed admin key (loopback or namespace only, throwaway data), pinned
//! like its peer, transcoding off unless the scenario is about it.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use super::netns::Namespace;
use super::process::{Launch, Server};
use crate::cli::Target;

/// The admin key of engines the runner starts: nothing but the runner can
/// reach them.
pub const BENCH_ADMIN_KEY: &str = "bench-loopback-admin-key";

pub struct EngineSetup<'a> {
    pub binary: &'a Path,
    /// Where it listens: 127.0.0.1, or its namespace's address.
    pub ip: IpAddr,
    pub http_port: u16,
    pub media_port: u16,
    pub cpus: Option<&'a str>,
    pub namespace: Option<&'a Namespace>,
    /// Data directory and log go under it.
    pub work: &'a Path,
    /// `LIVE_*` settings on top of the defaults.
    pub env: Vec<(String, String)>,
}

pub struct RunningEngine {
    pub server: Server,
    pub target: Target,
}

/// `live-engine` next to the running executable (one `cargo build
/// --release -p engine -p load-tests` builds both).
pub fn default_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("where is this executable?")?;
    let binary = exe.with_file_name("live-engine");
    anyhow::ensure!(
        binary.is_file(),
        "{} is missing: build it with `cargo build --release -p engine` (or pass --engine-bin)",
        binary.display()
    );
    Ok(binary)
}

pub async fn start(setup: EngineSetup<'_>) -> anyhow::Result<RunningEngine> {
    let http = SocketAddr::new(setup.ip, setup.http_port);
    let media = SocketAddr::new(setup.ip, setup.media_port);
    let data = setup.work.join("engine-data");
    std::fs::create_dir_all(&data)?;
    let mut env = vec![
        ("LIVE_HTTP_ADDR".to_owned(), http.to_string()),
        ("LIVE_MEDIA_UDP_ADDR".to_owned(), media.to_string()),
        ("LIVE_DATA_DIR".to_owned(), data.display().to_string()),
        ("LIVE_ADMIN_KEY".to_owned(), BENCH_ADMIN_KEY.to_owned()),
        ("LIVE_LOG".to_owned(), "warn".to_owned()),
        ("LIVE_TRANSCODE__ENABLED".to_owned(), "false".to_owned()),
    ];
    env.extend(setup.env);
    let binary = setup.binary.display().to_string();
    let mut server = Server::spawn(Launch {
        name: "engine",
        program: &binary,
        args: vec!["serve".into()],
        env,
        cpus: setup.cpus,
        namespace: setup.namespace,
        log_dir: setup.work,
        profile: true,
    })?;
    let url = format!("http://{http}");
    let health = format!("{url}/healthz");
    let client = reqwest::Client::new();
    server
        .wait_ready(Duration::from_secs(20), || {
            let request = client.get(&health).send();
            async move { request.await.is_ok_and(|r| r.status().is_success()) }
        })
        .await?;
    let engine_pid = Some(server.pid());
    Ok(RunningEngine {
        server,
        target: Target {
            url,
            admin_key: BENCH_ADMIN_KEY.to_owned(),
            engine_pid,
        },
    })
}
