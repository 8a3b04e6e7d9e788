//! Danmaku end to end: a real engine, real WebSocket clients.

mod common;

use common::{ADMIN_KEY, Client, TestEngine, seqs};
use protocol::v1::server_frame::Frame;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_in_one_room_see_each_others_danmaku_in_order() {
    let t = TestEngine::start().await;
    t.create_room("r1").await;
    let mut clients = Vec::new();
    for user in ["ann", "bob", "cy"] {
        clients.push(t.chatter(user, "r1").await);
    }
    for round in 0..5 {
        for (i, client) in clients.iter_mut().enumerate() {
            client
                .send_danmaku(&format!("hello {round} from {i}"), &format!("{i}-{round}"))
                .await;
        }
    }
    let mut seen = Vec::new();
    for client in clients.iter_mut() {
        let items = client.next_items(15).await;
        let seq = seqs(&items);
        assert!(
            seq.windows(2).all(|w| w[1] == w[0] + 1),
            "seqs strictly increasing without gaps: {seq:?}"
        );
        assert_eq!(seq[0], 1);
        seen.push(items);
    }
    assert!(
        seen.windows(2).all(|w| w[0] == w[1]),
        "every client sees the same items in the same order"
    );
    let ann = &seen[0];
    assert!(ann.iter().any(|i| i.user_id == "bob"
        && i.name == "BOB"
        && i.text == "hello 4 from 1"
        && i.client_msg_id == "1-4"));
    assert!(ann.iter().all(|i| i.ts_ms > 0 && i.color == 0xFFFFFF));
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_term_reaches_no_one_else() {
    let t = TestEngine::start().await;
    t.create_room("r1").await;
    let status = t
        .http
        .post(format!("{}/v1/rooms/r1/blocked_terms", t.base))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({ "term": "spoiler" }))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 201);
    let mut sender = t.chatter("ann", "r1").await;
    let mut viewer = t.chatter("bob", "r1").await;
    for (i, text) in [
        "huge SPOILER ahead",
        "ｓｐｏｉｌｅｒ in full width",
        "spo\u{200B}iler hidden",
    ]
    .iter()
    .enumerate()
    {
        sender.send_danmaku(text, &format!("bad-{i}")).await;
        match sender.next_control().await {
            Frame::Error(error) => {
                assert_eq!(error.code, "blocked");
                assert_eq!(error.client_msg_id, format!("bad-{i}"));
            }
            other => panic!("expected a blocked error, got {other:?}"),
        }
    }
    sender.send_danmaku("clean message", "ok").await;
    let items = viewer.next_items(1).await;
    assert_eq!(
        items[0].text, "clean message",
        "the viewer's first danmaku is the clean one"
    );
    assert_eq!(items[0].seq, 1, "blocked messages take no seq");
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_21st_message_inside_30_seconds_is_rate_limited() {
    let t = TestEngine::start().await;
    t.create_room("r1").await;
    let mut client = t.chatter("ann", "r1").await;
    for i in 0..21 {
        client
            .send_danmaku(&format!("message {i}"), &format!("m{i}"))
            .await;
    }
    let items = client.next_items(20).await;
    assert_eq!(items.len(), 20);
    match client.next_control().await {
        Frame::Error(error) => {
            assert_eq!(error.code, "rate_limited");
            assert_eq!(error.client_msg_id, "m20");
            assert!(
                error.retry_after_ms > 0 && error.retry_after_ms <= 30_000,
                "{}",
                error.retry_after_ms
            );
        }
        other => panic!("expected rate_limited, got {other:?}"),
    }
    // A second session of the same user shares the limit.
    let mut again = t.chatter("ann", "r1").await;
    again.send_danmaku("from another tab", "tab2").await;
    assert!(matches!(again.next_control().await, Frame::Error(e) if e.code == "rate_limited"));
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_with_after_seq_receives_exactly_what_was_missed() {
    let t = TestEngine::start().await;
    t.create_room("r1").await;
    let mut sender = t.chatter("ann", "r1").await;
    let token = t.token("bob", "r1", &["subscribe"]).await;
    let mut viewer = Client::connect(&t.ws_url("r1"), &token, None).await;
    for i in 0..3 {
        sender
            .send_danmaku(&format!("before {i}"), &format!("b{i}"))
            .await;
    }
    let seen = viewer.next_items(3).await;
    let last_seen = seen.last().unwrap().seq;
    drop(viewer);
    for i in 0..4 {
        sender
            .send_danmaku(&format!("while away {i}"), &format!("w{i}"))
            .await;
    }
    sender.next_items(7).await;
    let mut viewer = Client::connect(&t.ws_url("r1"), &token, Some(last_seen)).await;
    assert!(viewer.welcome.recovered);
    sender.send_danmaku("live again", "live").await;
    let items = viewer.next_items(5).await;
    assert_eq!(
        seqs(&items),
        vec![4, 5, 6, 7, 8],
        "missed items once each, then live"
    );
    assert_eq!(items[0].text, "while away 0");
    assert_eq!(items[4].text, "live again");
    let history = t.history("r1", &token, 2).await;
    assert_eq!(seqs(&history), vec![3, 4, 5, 6, 7, 8]);
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_expired_and_insufficient_tokens_are_refused() {
    let t = TestEngine::start().await;
    t.create_room("r1").await;
    let token = t.token("ann", "r1", &["subscribe"]).await;
    let mut tampered = token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(
        Client::refused_status(&t.ws_url("r1"), &tampered).await,
        401
    );
    let other_room = t.token("ann", "r2", &["subscribe"]).await;
    assert_eq!(
        Client::refused_status(&t.ws_url("r1"), &other_room).await,
        403
    );
    let no_subscribe = t.token("ann", "r1", &["chat"]).await;
    assert_eq!(
        Client::refused_status(&t.ws_url("r1"), &no_subscribe).await,
        403
    );
    let response = t
        .http
        .get(format!("{}/v1/rooms/r1/danmaku", t.base))
        .bearer_auth(&tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_token");
    let response = t
        .http
        .post(format!("{}/v1/rooms", t.base))
        .bearer_auth(&token)
        .json(&json!({"room_id": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(
        Client::refused_status(
            &t.ws_url("nope"),
            &t.token("ann", "*", &["subscribe"]).await
        )
        .await,
        404
    );
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_actor_panic_is_survived_with_seq_continuing() {
    let t = TestEngine::start().await;
    t.create_room("r1").await;
    let mut sender = t.chatter("ann", "r1").await;
    let mut viewer = t.chatter("bob", "r1").await;
    for i in 0..5 {
        sender
            .send_danmaku(&format!("before crash {i}"), &format!("a{i}"))
            .await;
    }
    assert_eq!(seqs(&viewer.next_items(5).await), vec![1, 2, 3, 4, 5]);
    sender.next_items(5).await;
    t.crash_room("r1");
    // Keep sending through the restart, as a client does: a danmaku
    // without an answer (it was in the mailbox of the actor that died) or
    // refused as `unavailable` is resent with the same client_msg_id, which
    // the room dedupes.
    for i in 0..5 {
        let cmid = format!("b{i}");
        'resend: loop {
            sender
                .send_danmaku(&format!("after crash {i}"), &cmid)
                .await;
            while let Some(frame) = sender
                .next_frame_within(std::time::Duration::from_millis(500))
                .await
            {
                match frame {
                    Frame::Danmaku(item) if item.client_msg_id == cmid => break 'resend,
                    Frame::Ack(ack) if ack.client_msg_id == cmid => break 'resend,
                    Frame::Batch(batch)
                        if batch.items.iter().any(|i| matches!(&i.frame, Some(Frame::Danmaku(d)) if d.client_msg_id == cmid)) =>
                    {
                        break 'resend;
                    }
                    Frame::Error(e) if e.code == "unavailable" => {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue 'resend;
                    }
                    Frame::Presence(_) | Frame::Danmaku(_) | Frame::Batch(_) | Frame::Ack(_) => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
    }
    let items = viewer.next_items(5).await;
    assert_eq!(
        seqs(&items),
        vec![6, 7, 8, 9, 10],
        "same socket, no gap, no repeat"
    );
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderators_delete_and_mute_and_history_follows() {
    let t = TestEngine::start().await;
    t.create_room("r1").await;
    let mod_token = t
        .token("mod", "r1", &["subscribe", "chat", "moderate"])
        .await;
    let mut moderator = Client::connect(&t.ws_url("r1"), &mod_token, None).await;
    let mut troll = t.chatter("troll", "r1").await;
    troll.send_danmaku("first", "t1").await;
    troll.send_danmaku("second", "t2").await;
    assert_eq!(seqs(&moderator.next_items(2).await), vec![1, 2]);
    let status = t.delete("/v1/rooms/r1/danmaku/1", &mod_token).await;
    assert_eq!(status, 204);
    assert!(matches!(moderator.next_control().await, Frame::DanmakuDeleted(d) if d.seq == 1));
    assert!(
        matches!(troll.next_control().await, Frame::DanmakuDeleted(d) if d.seq == 1),
        "every session sees the deletion"
    );
    assert_eq!(seqs(&t.history("r1", &mod_token, 0).await), vec![2]);
    let status = t.delete("/v1/rooms/r1/danmaku/99", &mod_token).await;
    assert_eq!(status, 404);
    let viewer_token = t.token("v", "r1", &["subscribe", "chat"]).await;
    let status = t.delete("/v1/rooms/r1/danmaku/2", &viewer_token).await;
    assert_eq!(status, 403);
    let response = t
        .http
        .put(format!("{}/v1/rooms/r1/mutes/troll", t.base))
        .bearer_auth(&mod_token)
        .json(&json!({ "duration_s": 60 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    troll.send_danmaku("third", "t3").await;
    assert!(
        matches!(troll.next_control().await, Frame::Error(e) if e.code == "muted" && e.client_msg_id == "t3")
    );
    let status = t.delete("/v1/rooms/r1/mutes/troll", &mod_token).await;
    assert_eq!(status, 204);
    troll.send_danmaku("fourth", "t4").await;
    assert_eq!(moderator.next_items(1).await[0].text, "fourth");
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_with_the_same_client_msg_id_is_acked_not_posted_twice() {
    let t = TestEngine::start().await;
    t.create_room("r1").await;
    let mut client = t.chatter("ann", "r1").await;
    client.send_danmaku("once", "same").await;
    let first = client.next_items(1).await;
    client.send_danmaku("once", "same").await;
    match client.next_control().await {
        Frame::Ack(ack) => {
            assert_eq!(ack.client_msg_id, "same");
            assert_eq!(ack.seq, first[0].seq);
        }
        other => panic!("expected an ack, got {other:?}"),
    }
    let token = t.token("v", "r1", &["subscribe"]).await;
    assert_eq!(t.history("r1", &token, 0).await.len(), 1);
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_sessions_share_the_room_with_json_sessions() {
    use futures_util::{SinkExt, StreamExt};
    use prost::Message as _;
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

    let t = TestEngine::start().await;
    t.create_room("r1").await;
    let token = t.token("pb", "r1", &["subscribe", "chat"]).await;
    let mut request = t.ws_url("r1").into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        format!("live.v1.pb, access_token.{token}").parse().unwrap(),
    );
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "live.v1.pb");
    let mut json_viewer = t.chatter("js", "r1").await;
    let frame = protocol::v1::ClientFrame {
        frame: Some(protocol::v1::client_frame::Frame::Danmaku(
            protocol::v1::SendDanmaku {
                text: "over protobuf".into(),
                mode: 1,
                color: 0xFF0000,
                client_msg_id: "pb1".into(),
            },
        )),
    };
    socket
        .send(Message::binary(frame.encode_to_vec()))
        .await
        .unwrap();
    let mut got_item = false;
    while !got_item {
        let message = tokio::time::timeout(common::WAIT, socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Binary(bytes) = message {
            match protocol::decode_server_protobuf(&bytes).unwrap() {
                Frame::Danmaku(item) => {
                    assert_eq!(item.text, "over protobuf");
                    got_item = true;
                }
                Frame::Welcome(_) | Frame::Presence(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    let items = json_viewer.next_items(1).await;
    assert_eq!(
        (items[0].text.as_str(), items[0].mode, items[0].color),
        ("over protobuf", 1, 0xFF0000)
    );
    t.shutdown().await;
}
