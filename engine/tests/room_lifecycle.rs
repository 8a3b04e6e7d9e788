//! Rooms beyond single danmaku: merging under load, presence, global
//! moderation, deletion.

mod common;

use std::time::Duration;

use common::{ADMIN_KEY, Client, TestEngine};
use protocol::v1::server_frame::Frame;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_danmaku_in_one_window_merge_and_every_sender_is_acked() {
    // A long window, so both identical texts land in it even on a loaded
    // machine (the merged item goes out when it closes).
    let t = TestEngine::start_with(|c| {
        c.danmaku.batch_window_ms = 3000;
        c.danmaku.merge_window_ms = 3000;
    })
    .await;
    t.create_room("r1").await;
    let mut viewer = t.chatter("viewer", "r1").await;
    let mut a = t.chatter("a", "r1").await;
    let mut b = t.chatter("b", "r1").await;
    let mut c = t.chatter("c", "r1").await;
    a.send_danmaku("opening", "a1").await;
    assert_eq!(
        viewer.next_items(1).await[0].text,
        "opening",
        "an idle room sends at once"
    );
    b.send_danmaku("666", "b1").await;
    c.send_danmaku("666", "c1").await;
    let merged = viewer.next_items(1).await.remove(0);
    assert_eq!((merged.text.as_str(), merged.count), ("666", 2));
    // Whichever arrived first carries the item; the other sender gets an ack.
    let (merged_into, acked_id) = match merged.client_msg_id.as_str() {
        "b1" => (&mut c, "c1"),
        "c1" => (&mut b, "b1"),
        other => panic!("unexpected client_msg_id {other}"),
    };
    match merged_into.next_control().await {
        Frame::Ack(ack) => assert_eq!(
            (ack.client_msg_id.as_str(), ack.seq),
            (acked_id, merged.seq + 1)
        ),
        other => panic!("the merged sender is acked, got {other:?}"),
    }
    // Both are stored individually: history is the full record.
    let token = t.token("h", "r1", &["subscribe"]).await;
    let history = t.history("r1", &token, 0).await;
    let mut ids: Vec<_> = history.iter().map(|i| i.client_msg_id.as_str()).collect();
    ids[1..].sort_unstable();
    assert_eq!(ids, vec!["a1", "b1", "c1"]);
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_counts_are_broadcast_periodically() {
    let t = TestEngine::start_with(|c| c.danmaku.presence_interval_ms = 100).await;
    t.create_room("r1").await;
    let mut first = t.chatter("one", "r1").await;
    let _second = t.chatter("two", "r1").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match first.next_frame().await {
            Frame::Presence(p) if p.viewers == 2 => break,
            _ => assert!(
                tokio::time::Instant::now() < deadline,
                "no presence with 2 viewers"
            ),
        }
    }
    let room = t.get_json("/v1/rooms/r1").await;
    assert_eq!(
        (room["viewers"].as_u64(), room["live"].as_bool()),
        (Some(2), Some(true))
    );
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_blocked_terms_apply_to_running_and_new_rooms() {
    let t = TestEngine::start().await;
    t.create_room("r1").await;
    let mut client = t.chatter("ann", "r1").await;
    let response = t
        .http
        .post(format!("{}/v1/blocked_terms", t.base))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"term": "scam link"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    client.send_danmaku("visit my SCAM LINK", "x").await;
    assert!(matches!(client.next_control().await, Frame::Error(e) if e.code == "blocked"));
    t.create_room("r2").await;
    let mut other = t.chatter("bob", "r2").await;
    other.send_danmaku("scam link here", "y").await;
    assert!(matches!(other.next_control().await, Frame::Error(e) if e.code == "blocked"));
    assert_eq!(
        t.delete("/v1/blocked_terms/scam%20link", ADMIN_KEY).await,
        204
    );
    other.send_danmaku("scam link here", "z").await;
    assert_eq!(other.next_items(1).await[0].client_msg_id, "z");
    let token = t.token("v", "r1", &["subscribe"]).await;
    assert_eq!(t.delete("/v1/blocked_terms/anything", &token).await, 403);
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_room_tells_and_closes_its_sessions() {
    let t = TestEngine::start().await;
    t.create_room("r1").await;
    let mut client = t.chatter("ann", "r1").await;
    client.send_danmaku("last words", "l").await;
    client.next_items(1).await;
    assert_eq!(t.delete("/v1/rooms/r1", ADMIN_KEY).await, 204);
    assert!(matches!(client.next_control().await, Frame::RoomClosed(_)));
    assert_eq!(client.close_code().await, Some(1000));
    let room = t.get_json("/v1/rooms/r1").await;
    assert!(room["closed_ms"].as_u64().is_some());
    let token = t.token("ann", "r1", &["subscribe"]).await;
    assert_eq!(Client::refused_status(&t.ws_url("r1"), &token).await, 404);
    let rooms = t.get_json("/v1/rooms").await;
    assert_eq!(rooms["rooms"].as_array().map(Vec::len), Some(0));
    assert_eq!(t.delete("/v1/rooms/r1", ADMIN_KEY).await, 404);
    t.shutdown().await;
}
