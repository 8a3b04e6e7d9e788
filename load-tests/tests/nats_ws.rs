//! The NATS fan-out peer against a real nats-server (the Debian package's
//! /usr/sbin/nats-server, or `$NATS_SERVER`): started on free loopback
//! ports, unpinned, without root or a network namespace.

use std::path::{Path, PathBuf};
use std::time::Duration;

use load_tests::peers::nats_ws::{self, NatsFanoutArgs};
use load_tests::peers::process::{Launch, Server};

const VIEWERS: u32 = 50;

fn nats_server() -> String {
    std::env::var("NATS_SERVER").unwrap_or_else(|_| "/usr/sbin/nats-server".into())
}

/// Two distinct ports nobody listens on right now: the kernel's picks,
/// held together (so it cannot pick one twice) and then released.
fn free_ports() -> (u16, u16) {
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    let (a, b) = (bind(), bind());
    let port = |l: &std::net::TcpListener| l.local_addr().unwrap().port();
    (port(&a), port(&b))
}

/// A fresh directory for the config and the server's log, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "nats-ws-test-{}-{}",
            std::process::id(),
            load_tests::wire::unix_nanos()
        ));
        std::fs::create_dir_all(&dir).expect("creating a temp dir");
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// nats-server with [`nats_ws::config`], ready once its WebSocket port
/// accepts TCP.
async fn start_nats(dir: &Path) -> (Server, u16) {
    let program = nats_server();
    assert!(
        Path::new(&program).exists(),
        "{program} not found: install nats-server (Debian: apt install nats-server) or set NATS_SERVER"
    );
    let (ws_port, client_port) = free_ports();
    let config = dir.join("nats.conf");
    std::fs::write(&config, nats_ws::config(ws_port, client_port, None)).unwrap();
    let mut server = Server::spawn(Launch {
        name: "nats-server",
        program: &program,
        args: vec!["-c".into(), config.display().to_string()],
        env: Vec::new(),
        cpus: None,
        namespace: None,
        log_dir: dir,
        profile: false,
    })
    .unwrap();
    server
        .wait_ready(Duration::from_secs(10), || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", ws_port))
                .await
                .is_ok()
        })
        .await
        .unwrap();
    (server, ws_port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_viewer_gets_every_message_from_nats_over_websocket() {
    let dir = TempDir::new();
    let (mut server, ws_port) = start_nats(dir.path()).await;
    let args = NatsFanoutArgs {
        ws_url: format!("ws://127.0.0.1:{ws_port}"),
        subject: "live.bench.danmaku".into(),
        viewers: VIEWERS,
        senders: 2,
        rate: 100,
        duration: Duration::from_secs(3),
        grace: Duration::from_secs(5),
        ramp: 500,
        connect_timeout: Duration::from_secs(5),
        server_pid: Some(server.pid()),
    };
    let report = nats_ws::run(&args).await.unwrap();
    println!("{}", report.render());
    server.check_running().unwrap();

    let c = &report.connections;
    assert_eq!(
        c.viewers_connected,
        u64::from(VIEWERS),
        "{:?}",
        c.viewer_failures
    );
    assert_eq!(c.senders_connected, 2, "{:?}", c.sender_failures);
    assert!(
        c.viewers_ended_early.is_empty(),
        "{:?}",
        c.viewers_ended_early
    );
    // 300 are planned; a sender starved past the end of the window (a
    // loaded machine) skips the rest, as the engine scenario's does.
    assert!(report.sends.sent >= 270, "{}", report.sends.sent);
    let d = &report.delivery;
    assert_eq!(d.expected, report.sends.sent * u64::from(VIEWERS));
    assert_eq!(d.deliveries, d.expected, "nothing is lost at this size");
    assert_eq!(d.foreign_items + d.undecodable_frames, 0);
    assert!(d.latency_ms.p50 > 0.0, "{:?}", d.latency_ms);
    assert_eq!(d.latency_ms.samples, d.deliveries);
    let s = report.server.as_ref().expect("the server was sampled");
    assert_eq!(s.pid, server.pid());
    assert!(s.rss_idle_kb > 0 && s.rss_connected_kb > 0);
    assert!(s.cpu_percent > 0.0, "nats-server used no CPU: {s:?}");
    assert!(report.deliveries_per_s_per_core.is_some());
    serde_json::to_string(&report).unwrap();
    server.stop();
}
