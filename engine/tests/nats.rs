//! Events through a real nats-server with JetStream, including an outage.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bus::testing::NatsServer;
use common::{TestEngine, read_stream};
use prost::Message;
use protocol::v1::DanmakuBatch;

async fn danmaku_seqs(url: &str) -> (Vec<u64>, Vec<String>) {
    let envelopes = read_stream(url, "LIVE_DANMAKU").await;
    let ids = envelopes.iter().map(|e| e.id.clone()).collect();
    let seqs = envelopes
        .iter()
        .flat_map(|e| DanmakuBatch::decode(e.payload.clone()).unwrap().items)
        .map(|item| item.seq)
        .collect();
    (seqs, ids)
}

async fn wait_for_outbox_empty(t: &TestEngine) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let depth = t.metric("live_outbox_depth").await;
        if depth == Some(0.0) {
            return;
        }
        assert!(Instant::now() < deadline, "outbox did not drain: {depth:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_exactly_once_across_a_nats_outage() {
    let mut nats = NatsServer::start();
    let url = nats.url();
    let t = TestEngine::start_with(|c| c.nats_url = Some(url.clone())).await;
    t.create_room("r1").await;
    let mut client = t.chatter("ann", "r1").await;
    for i in 0..5 {
        client
            .send_danmaku(&format!("before {i}"), &format!("a{i}"))
            .await;
    }
    client.next_items(5).await;
    wait_for_outbox_empty(&t).await;
    let rooms = read_stream(&url, "LIVE_ROOMS").await;
    assert_eq!(rooms.len(), 1);
    assert_eq!(
        (rooms[0].kind.as_str(), rooms[0].room_id.as_str()),
        ("room.created", "r1")
    );

    nats.stop();
    // Danmaku keeps flowing while the bus is down: acknowledged means
    // committed, and events wait in the outbox.
    for i in 0..10 {
        client
            .send_danmaku(&format!("during outage {i}"), &format!("b{i}"))
            .await;
    }
    client.next_items(10).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    nats.restart();
    for i in 0..5 {
        client
            .send_danmaku(&format!("after {i}"), &format!("c{i}"))
            .await;
    }
    client.next_items(5).await;
    wait_for_outbox_empty(&t).await;

    let (seqs, ids) = danmaku_seqs(&url).await;
    let mut counts: HashMap<u64, usize> = HashMap::new();
    for seq in &seqs {
        *counts.entry(*seq).or_default() += 1;
    }
    assert_eq!(
        counts.keys().copied().collect::<BTreeSet<_>>(),
        (1..=20).collect::<BTreeSet<_>>(),
        "every danmaku is in the stream"
    );
    assert!(
        counts.values().all(|&n| n == 1),
        "each exactly once: {counts:?}"
    );
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        ids.len(),
        "event ids are unique"
    );
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_starts_while_nats_is_down_and_catches_up() {
    let mut nats = NatsServer::start();
    let url = nats.url();
    nats.stop();
    let t = TestEngine::start_with(|c| c.nats_url = Some(url.clone())).await;
    t.create_room("r1").await;
    let mut client = t.chatter("ann", "r1").await;
    client.send_danmaku("while nats is down", "x").await;
    client.next_items(1).await;
    nats.restart();
    wait_for_outbox_empty(&t).await;
    assert_eq!(danmaku_seqs(&url).await.0, vec![1]);
    assert_eq!(read_stream(&url, "LIVE_ROOMS").await.len(), 1);
    t.shutdown().await;
}
