//! Billing end to end: gifts sent over HTTP (each retried with its key, as
//! a client does), `gift.sent` through the outbox to a real nats-server,
//! the billing role's durable consumer settling each gift once, across a
//! NATS outage in the middle of the storm. And on the embedded in-process
//! bus, where billing also sweeps the store.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bus::testing::NatsServer;
use common::{ADMIN_KEY, TestEngine, read_stream};
use prost::Message;
use protocol::v1::GiftSent;
use serde_json::{Value, json};
use storage::Store;

/// Sends gift `n` (a flower, 50 coins: 35 to the creator) and retries it
/// once with the same key; returns the gift id. Retries on 503.
async fn send_twice(t: &TestEngine, token: &str, n: usize) -> String {
    let key = format!("storm-{n}");
    let mut ids = Vec::new();
    for _ in 0..2 {
        loop {
            let response = t
                .http
                .post(format!("{}/v1/rooms/r1/gifts", t.base))
                .bearer_auth(token)
                .header("Idempotency-Key", &key)
                .json(&json!({ "gift_id": "flower", "count": 1, "to": "streamer" }))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            if status == 503 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            assert!(status == 201 || status == 200, "status {status}");
            let body: Value = response.json().await.unwrap();
            ids.push(body["id"].as_str().unwrap().to_owned());
            break;
        }
    }
    assert_eq!(ids[0], ids[1], "the retry answers with the first send");
    ids.pop().unwrap()
}

async fn earnings(t: &TestEngine) -> (u64, u64) {
    let body: Value = t
        .http
        .get(format!("{}/v1/creators/streamer/earnings", t.base))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        body["gifts"].as_u64().unwrap(),
        body["coins"].as_u64().unwrap(),
    )
}

async fn until_earnings(t: &TestEngine, gifts: u64) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = earnings(t).await;
        if now.0 >= gifts {
            return now;
        }
        assert!(Instant::now() < deadline, "settled {now:?} of {gifts}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn fund(t: &TestEngine, user: &str, amount: u64) {
    let response = t
        .http
        .post(format!("{}/v1/wallets/{user}/topup", t.base))
        .bearer_auth(ADMIN_KEY)
        .header("Idempotency-Key", format!("fund-{user}"))
        .json(&json!({ "amount": amount }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_gift_is_settled_exactly_once_across_a_nats_outage() {
    let mut nats = NatsServer::start();
    let url = nats.url();
    let t = TestEngine::start_with(|c| c.nats_url = Some(url.clone())).await;
    t.create_room("r1").await;
    fund(&t, "alice", 10_000).await;
    let token = t.token("alice", "r1", &["gift"]).await;

    let mut sent = Vec::new();
    for n in 0..10 {
        sent.push(send_twice(&t, &token, n).await);
    }
    until_earnings(&t, 10).await;
    nats.stop();
    // Gifts go on while the bus is down: committed, their events wait in
    // the outbox, billing waits on its consumer.
    for n in 10..20 {
        sent.push(send_twice(&t, &token, n).await);
    }
    assert_eq!(earnings(&t).await.0, 10, "nothing settles without the bus");
    nats.restart();
    for n in 20..30 {
        sent.push(send_twice(&t, &token, n).await);
    }
    let (gifts, coins) = until_earnings(&t, 30).await;
    // Give redeliveries a moment to show up if they were going to count.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(earnings(&t).await, (30, 30 * 35), "each gift settled once");
    assert_eq!((gifts, coins), (30, 1_050));

    let wallet: Value = t.get_json_as("/v1/wallets/alice", ADMIN_KEY).await;
    assert_eq!(
        wallet["balance"],
        10_000 - 30 * 50,
        "each gift charged once"
    );
    let events = read_stream(&url, "LIVE_GIFTS").await;
    let ids: BTreeSet<String> = events.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids.len(), events.len(), "no gift event twice in the stream");
    assert_eq!(
        ids,
        sent.iter().cloned().collect(),
        "every gift's event, by gift id"
    );
    for envelope in &events {
        let gift = GiftSent::decode(envelope.payload.clone()).unwrap();
        assert_eq!(gift.gift_id, envelope.id, "the event id is the gift id");
        assert_eq!((gift.total, gift.creator_amount), (50, 35));
    }
    // And the books agree: `live-engine reconcile` beside the running
    // engine finds nothing and exits 0.
    t.engine().store().flush().await.unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_live-engine"))
        .arg("reconcile")
        .env("LIVE_DATA_DIR", t.dir.path())
        .env("LIVE_ADMIN_KEY", ADMIN_KEY)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{report}");
    assert!(
        report.contains("30 gifts (1500 coins), 30 settlements"),
        "{report}"
    );
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_in_process_bus_billing_settles_every_gift() {
    let t = TestEngine::start().await;
    t.create_room("r1").await;
    fund(&t, "alice", 1_000).await;
    let token = t.token("alice", "r1", &["gift"]).await;
    for n in 0..5 {
        send_twice(&t, &token, n).await;
    }
    let (gifts, coins) = until_earnings(&t, 5).await;
    assert_eq!((gifts, coins), (5, 175));
    let creator = t.token("streamer", "r1", &[]).await;
    let own: Value = t
        .get_json_as("/v1/creators/streamer/earnings", &creator)
        .await;
    assert_eq!(own["coins"], 175, "the creator reads their own earnings");
    let other = t.token("someone", "r1", &[]).await;
    let refused = t
        .http
        .get(format!("{}/v1/creators/streamer/earnings", t.base))
        .bearer_auth(other)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reached_gift_goal_is_broadcast_and_published_once() {
    let nats = NatsServer::start();
    let url = nats.url();
    let t = TestEngine::start_with(|c| {
        c.nats_url = Some(url.clone());
        c.gifts.goal_coins = 100;
    })
    .await;
    t.create_room("r1").await;
    fund(&t, "alice", 1_000).await;
    let mut watcher = t.chatter("watcher", "r1").await;
    let token = t.token("alice", "r1", &["gift"]).await;
    for n in 0..3 {
        send_twice(&t, &token, n).await;
    }
    // 50, 100 (reached), 150: the frames follow (gifts within one broadcast
    // window share a frame with the latest progress); the event goes out once.
    let mut progress = Vec::new();
    while progress.last().is_none_or(|&(coins, _, _)| coins < 150) {
        if let protocol::v1::server_frame::Frame::GiftGoal(goal) = watcher.next_leaf().await {
            progress.push((goal.coins, goal.reached, goal.target));
        }
    }
    assert_eq!(progress.last(), Some(&(150, true, 100)));
    assert!(progress.is_sorted(), "progress only grows: {progress:?}");
    assert!(
        progress
            .iter()
            .all(|&(coins, reached, target)| reached == (coins >= target)),
        "reached exactly from the target on: {progress:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let published = read_stream(&url, "LIVE_GIFT_GOALS").await;
        if !published.is_empty() {
            assert_eq!(published.len(), 1, "reached once per window");
            assert_eq!(published[0].kind, "gift_goal.reached");
            let goal = protocol::v1::GiftGoalReached::decode(published[0].payload.clone()).unwrap();
            assert_eq!(
                (goal.room_id.as_str(), goal.target, goal.coins),
                ("r1", 100, 100)
            );
            break;
        }
        assert!(Instant::now() < deadline, "the goal event reached NATS");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t.shutdown().await;
}
