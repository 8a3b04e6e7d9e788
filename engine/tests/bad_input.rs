//! Bad input gets a precise error, the room keeps working, nothing panics.

mod common;

use common::{ADMIN_KEY, TestEngine, seqs};
use futures_util::SinkExt;
use protocol::v1::server_frame::Frame;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame as RawFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

async fn expect_error(client: &mut common::Client, code: &str) -> protocol::v1::Error {
    match client.next_control().await {
        Frame::Error(error) if error.code == code => error,
        other => panic!("expected error {code}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_error_frames_and_the_session_goes_on() {
    let t = TestEngine::start().await;
    t.create_room("r1").await;
    let mut client = t.chatter("ann", "r1").await;
    client
        .socket
        .send(Message::text("{not json"))
        .await
        .unwrap();
    expect_error(&mut client, "bad_request").await;
    client
        .send_json(json!({ "type": "shout", "text": "hi", "client_msg_id": "x1" }))
        .await;
    let error = expect_error(&mut client, "bad_request").await;
    assert!(error.message.contains("shout"), "{}", error.message);
    assert_eq!(error.client_msg_id, "x1");
    client
        .send_json(
            json!({ "type": "danmaku", "text": "hi", "mode": "sideways", "client_msg_id": "x2" }),
        )
        .await;
    assert!(
        expect_error(&mut client, "bad_request")
            .await
            .message
            .contains("sideways")
    );
    client
        .send_json(
            json!({ "type": "danmaku", "text": "hi", "color": 16777216, "client_msg_id": "x3" }),
        )
        .await;
    expect_error(&mut client, "bad_request").await;
    client
        .send_json(json!({ "type": "danmaku", "text": "   ", "client_msg_id": "x4" }))
        .await;
    expect_error(&mut client, "bad_request").await;
    client
        .send_json(json!({ "type": "danmaku", "text": "x".repeat(101), "client_msg_id": "x5" }))
        .await;
    expect_error(&mut client, "too_large").await;
    client
        .socket
        .send(Message::binary(vec![1, 2, 3]))
        .await
        .unwrap();
    expect_error(&mut client, "bad_request").await;
    client
        .send_json(json!({ "type": "ping", "nonce": 7 }))
        .await;
    assert!(matches!(client.next_control().await, Frame::Pong(p) if p.nonce == 7));
    client.send_danmaku("still here", "ok").await;
    assert_eq!(
        seqs(&client.next_items(1).await),
        vec![1],
        "rejected frames took no seq"
    );
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_invalid_utf8_frames_close_only_their_own_session() {
    let t = TestEngine::start().await;
    t.create_room("r1").await;
    let mut bystander = t.chatter("bob", "r1").await;

    let mut big = t.chatter("big", "r1").await;
    big.socket
        .send(Message::text("x".repeat(17 * 1024)))
        .await
        .unwrap();
    assert_eq!(big.close_code().await, Some(1009));

    let mut broken = t.chatter("broken", "r1").await;
    let raw = RawFrame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    broken.socket.send(Message::Frame(raw)).await.unwrap();
    assert_eq!(broken.close_code().await, Some(1007));

    bystander.send_danmaku("the room goes on", "ok").await;
    assert_eq!(bystander.next_items(1).await[0].text, "the room goes on");
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_errors_use_one_json_shape() {
    let t = TestEngine::start().await;
    let post = |path: &str, body: &'static str| {
        t.http
            .post(format!("{}{path}", t.base))
            .bearer_auth(ADMIN_KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for (path, body, status, code) in [
        ("/v1/rooms", "{bad", 400, "bad_request"),
        (
            "/v1/rooms",
            r#"{"room_id":"has space"}"#,
            400,
            "bad_request",
        ),
        (
            "/v1/rooms",
            r#"{"room_id":"ok","extra":1}"#,
            422,
            "bad_request",
        ),
        (
            "/v1/tokens",
            r#"{"user_id":"u","room":"r","grants":["fly"]}"#,
            422,
            "bad_request",
        ),
        (
            "/v1/tokens",
            r#"{"user_id":"u","room":"r","ttl_s":0}"#,
            400,
            "bad_request",
        ),
    ] {
        let response = post(path, body).await.unwrap();
        assert_eq!(response.status(), status, "{path} {body}");
        let json: serde_json::Value = response.json().await.unwrap();
        assert_eq!(json["error"]["code"], code, "{path} {body}: {json}");
        assert!(
            json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let response = t
        .http
        .post(format!("{}/v1/rooms", t.base))
        .json(&json!({"room_id": "r"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = t
        .http
        .get(format!("{}/v1/rooms/missing", t.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let response = t
        .http
        .put(format!("{}/healthz", t.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let json: serde_json::Value = response.json().await.unwrap();
    assert_eq!(json["error"]["code"], "method_not_allowed");
    let huge = format!(r#"{{"room_id":"r","title":"{}"}}"#, "t".repeat(20 * 1024));
    let response = t
        .http
        .post(format!("{}/v1/rooms", t.base))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    t.create_room("dup").await;
    let response = post("/v1/rooms", r#"{"room_id":"dup"}"#).await.unwrap();
    assert_eq!(response.status(), 409);
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_closed_instead_of_buffering_without_bound() {
    let t = TestEngine::start_with(|c| {
        c.ws.broadcast_capacity = 8;
        c.ws.write_timeout_ms = 500;
        c.danmaku.max_chars = 4000;
    })
    .await;
    t.create_room("r1").await;
    let token = t
        .token("flood", "r1", &["subscribe", "chat", "moderate"])
        .await;
    let mut flooder = common::Client::connect(&t.ws_url("r1"), &token, None).await;
    let mut sleeper = t.chatter("sleeper", "r1").await;
    // The flooder reads its own echoes; the sleeper reads nothing until the end.
    let text = "z".repeat(3900);
    for i in 0..3000 {
        flooder
            .send_danmaku(&format!("{i} {text}"), &format!("f{i}"))
            .await;
        if i % 100 == 99 {
            flooder.next_items(100).await;
        }
    }
    assert_eq!(sleeper.close_code().await, Some(1013));
    let closed = t.metric("live_ws_slow_consumers_closed_total").await;
    assert!(
        closed.is_some_and(|n| n >= 1.0),
        "slow consumer counted: {closed:?}"
    );
    t.shutdown().await;
}
