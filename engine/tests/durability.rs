//! The real binary as a process: kill -9 loses nothing acknowledged, and
//! SIGTERM closes sessions with a close frame.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{ADMIN_KEY, Client, TestEngine};
use serde_json::json;

struct Process {
    child: Child,
    base: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(data_dir: &std::path::Path, port: u16) -> Process {
    let child = Command::new(env!("CARGO_BIN_EXE_live-engine"))
        .arg("serve")
        .env("LIVE_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("LIVE_MEDIA_UDP_ADDR", "127.0.0.1:0")
        .env("LIVE_DATA_DIR", data_dir)
        .env("LIVE_ADMIN_KEY", ADMIN_KEY)
        .env_remove("LIVE_NATS_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "engine did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Process { child, base }
}

/// A fresh engine process on its own data directory, with room `r1`.
async fn with_room_r1() -> (Process, TestEngine, std::path::PathBuf, u16) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_owned();
    let port = free_port();
    let process = spawn(&data, port);
    let t = view(&process, dir);
    t.create_room("r1").await;
    (process, t, data, port)
}

/// A `TestEngine`-like view of a process, to reuse the HTTP helpers.
fn view(process: &Process, dir: tempfile::TempDir) -> TestEngine {
    TestEngine {
        engine: None,
        base: process.base.clone(),
        http: reqwest::Client::new(),
        dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_after_a_burst_loses_no_acknowledged_danmaku() {
    let (mut process, t, data, port) = with_room_r1().await;
    // Moderators are exempt from the rate limit: a real burst.
    let token = t
        .token("burst", "r1", &["subscribe", "chat", "moderate"])
        .await;
    let mut client = Client::connect(&t.ws_url("r1"), &token, None).await;
    let n = 500;
    for i in 0..n {
        client
            .send_danmaku(&format!("burst {i}"), &format!("b{i}"))
            .await;
    }
    // The broadcast of a sender's own danmaku is its acknowledgement.
    let acked = client.next_items(n).await;
    process.child.kill().unwrap();
    process.child.wait().unwrap();

    let mut process = spawn(&data, port);
    let history = t.history("r1", &token, 0).await;
    let acked_ids: Vec<_> = acked
        .iter()
        .map(|i| (i.seq, i.client_msg_id.clone()))
        .collect();
    let stored: Vec<_> = history
        .iter()
        .map(|i| (i.seq, i.client_msg_id.clone()))
        .collect();
    assert_eq!(
        stored, acked_ids,
        "every acknowledged danmaku survived kill -9, in order"
    );
    // And the room goes on from the next seq.
    let mut client = Client::connect(&t.ws_url("r1"), &token, None).await;
    client.send_danmaku("after restart", "after").await;
    assert_eq!(client.next_items(1).await[0].seq, n as u64 + 1);
    process.child.kill().unwrap();
    process.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_sessions_with_a_close_frame_and_keeps_what_was_acked() {
    let (mut process, t, data, port) = with_room_r1().await;
    let mut client = t.chatter("ann", "r1").await;
    for i in 0..5 {
        client
            .send_danmaku(&format!("m{i}"), &format!("m{i}"))
            .await;
    }
    client.next_items(5).await;
    let status = Command::new("kill")
        .args(["-TERM", &process.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(client.close_code().await, Some(1001), "going away");
    let exit = process.child.wait().unwrap();
    assert!(exit.success(), "graceful exit, got {exit:?}");
    let mut process = spawn(&data, port);
    let token = t.token("v", "r1", &["subscribe"]).await;
    assert_eq!(t.history("r1", &token, 0).await.len(), 5);
    let response = t
        .http
        .post(format!("{}/v1/rooms", t.base))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"room_id": "r1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409, "rooms survive restarts too");
    process.child.kill().unwrap();
    process.child.wait().unwrap();
}

#[test]
fn invalid_configuration_is_a_clear_cli_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_live-engine"))
        .arg("serve")
        .env("LIVE_HTTP_ADDR", "nowhere")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("invalid configuration") && stderr.to_lowercase().contains("http_addr"),
        "{stderr}"
    );
}

/// Sends one gift until the engine acknowledges it (through a kill and a
/// restart): a client retrying with its key. Returns the gift id.
async fn send_until_acknowledged(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    key: &str,
    progress: &Progress,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "gift {key} never acknowledged");
        let sent = http
            .post(format!("{base}/v1/rooms/r1/gifts"))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .json(&json!({ "gift_id": "flower", "count": 1, "to": "streamer" }))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if let Ok(response) = sent {
            let status = response.status().as_u16();
            if status == 200 || status == 201 {
                let body: serde_json::Value = response.json().await.unwrap();
                progress.acknowledged.fetch_add(1, Ordering::Relaxed);
                return body["id"].as_str().unwrap().to_owned();
            }
            assert!(status == 503, "gift {key}: unexpected {status}");
        }
        progress.failed_attempts.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

#[derive(Default)]
struct Progress {
    acknowledged: AtomicUsize,
    /// Attempts that met a dead or restarting engine.
    failed_attempts: AtomicUsize,
}

fn reconcile(data_dir: &std::path::Path) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_live-engine"))
        .arg("reconcile")
        .env("LIVE_DATA_DIR", data_dir)
        .env("LIVE_ADMIN_KEY", ADMIN_KEY)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_a_gift_storm_charges_each_key_once_and_reconciles() {
    let (mut process, t, data, port) = with_room_r1().await;
    let funded = t
        .http
        .post(format!("{}/v1/wallets/alice/topup", t.base))
        .bearer_auth(ADMIN_KEY)
        .header("Idempotency-Key", "fund")
        .json(&json!({ "amount": 1_000_000 }))
        .send()
        .await
        .unwrap();
    assert_eq!(funded.status(), 201);
    let token = t.token("alice", "r1", &["gift"]).await;

    // Eight clients, 100 gifts each, all retrying until acknowledged.
    let (clients, per_client) = (8, 100);
    let progress = Arc::new(Progress::default());
    let mut storm = Vec::new();
    for c in 0..clients {
        let (http, base, token) = (t.http.clone(), t.base.clone(), token.clone());
        let progress = progress.clone();
        storm.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in 0..per_client {
                let key = format!("client{c}-gift{n}");
                let id = send_until_acknowledged(&http, &base, &token, &key, &progress).await;
                ids.push((key, id));
            }
            ids
        }));
    }
    // Kill the engine in the middle of the storm, then bring it back.
    let deadline = Instant::now() + Duration::from_secs(30);
    while progress.acknowledged.load(Ordering::Relaxed) < 200 {
        assert!(Instant::now() < deadline, "the storm did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    process.child.kill().unwrap();
    process.child.wait().unwrap();
    let mut process = spawn(&data, port);
    let mut acknowledged = Vec::new();
    for client in storm {
        acknowledged.extend(client.await.unwrap());
    }
    let total = (clients * per_client) as u64;
    assert_eq!(acknowledged.len() as u64, total);
    assert!(
        progress.failed_attempts.load(Ordering::Relaxed) > 0,
        "the kill landed in the middle of the storm"
    );
    let keys: std::collections::HashSet<_> = acknowledged.iter().map(|(k, _)| k).collect();
    let ids: std::collections::HashSet<_> = acknowledged.iter().map(|(_, id)| id).collect();
    assert_eq!(
        (keys.len(), ids.len()),
        (acknowledged.len(), acknowledged.len())
    );

    // Each key is one gift, charged once; billing (in-process: its sweep
    // picks up what the kill cut off) settles every one.
    let wallet: serde_json::Value = t.get_json_as("/v1/wallets/alice", ADMIN_KEY).await;
    assert_eq!(
        wallet["balance"],
        1_000_000 - 50 * total,
        "one charge per key"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let earnings = t
            .get_json_as("/v1/creators/streamer/earnings", ADMIN_KEY)
            .await;
        if earnings["gifts"] == total {
            assert_eq!(earnings["coins"], 35 * total);
            break;
        }
        assert!(Instant::now() < deadline, "billing settled {earnings}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, report) = reconcile(&data);
    assert_eq!(code, 0, "reconcile beside the running engine:\n{report}");
    assert!(report.contains(&format!("{total} gifts")), "{report}");
    process.child.kill().unwrap();
    process.child.wait().unwrap();
    let (code, report) = reconcile(&data);
    assert_eq!(
        code, 0,
        "reconcile on the stopped engine's store:\n{report}"
    );
    // A tampered wallet makes it fail, with the difference printed.
    let conn = rusqlite::Connection::open(data.join(storage::DB_FILE)).unwrap();
    conn.execute("UPDATE wallets SET balance = balance + 1", [])
        .unwrap();
    drop(conn);
    let (code, report) = reconcile(&data);
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains("DIFFERENCE wallet balance differs from its ledger: 1 (coins 1)"),
        "{report}"
    );
}
