//! The real binary as a process: kill -9 loses nothing acknowledged, and
//! SIGTERM closes sessions with a close frame.

mod common;

use std::process::{Child, Command, Stdio};
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
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_owned();
    let port = free_port();
    let mut process = spawn(&data, port);
    let t = view(&process, dir);
    t.create_room("r1").await;
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
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_owned();
    let port = free_port();
    let mut process = spawn(&data, port);
    let t = view(&process, dir);
    t.create_room("r1").await;
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
