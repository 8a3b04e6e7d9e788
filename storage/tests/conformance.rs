//! The `Store` contract, written against `&dyn Store` so every backend runs
//! the same functions: the embedded store below, the Scylla backend later
//! (add its fixture and one `suite!` line).
//!
//! The `embedded` module at the end holds what only a local file can show:
//! reopen after close, schema versions, drop without close.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use protocol::v1::DanmakuItem;
use storage::{
    Earnings, EmbeddedOptions, EmbeddedStore, GiftOutcome, GiftRecord, OutboxEvent, Room,
    Settlement, Store, StoreError, StoryGraphPut, TermScope, TopUp, TopUpOutcome, VodAsset,
    VodDanmaku, VodRendition, VodStatus, account,
};
use tempfile::TempDir;

fn event(id: &str) -> OutboxEvent {
    OutboxEvent {
        id: id.to_owned(),
        subject: format!("live.test.{id}"),
        payload: Bytes::from(format!("payload of {id}")),
    }
}

fn room(room_id: &str, created_ms: u64) -> Room {
    Room {
        room_id: room_id.to_owned(),
        title: format!("title of {room_id}"),
        created_ms,
        closed_ms: None,
    }
}

fn item(seq: u64) -> DanmakuItem {
    DanmakuItem {
        seq,
        user_id: format!("u{}", seq % 7),
        name: "Ann".into(),
        text: format!("message {seq}"),
        mode: 1,
        color: 0x00_FF_00,
        ts_ms: 1_700_000_000_000 + seq,
        client_msg_id: format!("c{seq}"),
        count: 3,
    }
}

fn topup(id: &str, user: &str, amount: u64, key: &str) -> TopUp {
    TopUp {
        topup_id: id.into(),
        user_id: user.into(),
        amount,
        idempotency_key: key.into(),
        created_ms: 500,
    }
}

/// A gift of `total` coins from `sender` to "streamer" in room r1, split
/// 70/30, with the fingerprint of (sender, count 1, total).
fn gift(id: &str, sender: &str, total: u64, key: &str, created_ms: u64) -> GiftRecord {
    let creator_amount = total * 7 / 10;
    GiftRecord {
        gift_id: id.into(),
        room_id: "r1".into(),
        sender: sender.into(),
        recipient: "streamer".into(),
        gift: "heart".into(),
        count: 1,
        unit_price: total,
        total,
        creator_amount,
        platform_amount: total - creator_amount,
        idempotency_key: key.into(),
        fingerprint: format!("r1/{sender}/streamer/heart/1/{total}"),
        created_ms,
    }
}

async fn amounts(store: &dyn Store, account: &str) -> Vec<i64> {
    store
        .ledger(account)
        .await
        .unwrap()
        .iter()
        .map(|line| line.amount)
        .collect()
}

fn seqs(items: &[DanmakuItem]) -> Vec<u64> {
    items.iter().map(|i| i.seq).collect()
}

async fn outbox_ids(store: &dyn Store) -> Vec<String> {
    store
        .outbox_pending(1000)
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.event.id)
        .collect()
}

/// The backend-independent contract.
mod suite {
    use super::*;

    pub async fn an_event_alone_is_appended_to_the_outbox(store: &dyn Store) {
        store.append_event(event("stream-started")).await.unwrap();
        store
            .create_room(room("r1", 1), event("room-created"))
            .await
            .unwrap();
        store.append_event(event("stream-ended")).await.unwrap();
        assert_eq!(
            outbox_ids(store).await,
            vec!["stream-started", "room-created", "stream-ended"]
        );
        assert_eq!(store.outbox_depth().await.unwrap(), 3);
    }

    pub async fn create_room_is_idempotent(store: &dyn Store) {
        assert!(
            store
                .create_room(room("r1", 100), event("e1"))
                .await
                .unwrap()
        );
        let mut again = room("r1", 200);
        again.title = "another title".into();
        assert!(!store.create_room(again, event("e2")).await.unwrap());

        assert_eq!(store.room("r1").await.unwrap(), Some(room("r1", 100)));
        assert_eq!(outbox_ids(store).await, ["e1"]);
        assert_eq!(store.outbox_depth().await.unwrap(), 1);
        assert_eq!(store.room("missing").await.unwrap(), None);
    }

    pub async fn closing_twice_closes_once(store: &dyn Store) {
        store
            .create_room(room("r1", 100), event("e1"))
            .await
            .unwrap();
        assert!(store.close_room("r1", 500, event("e2")).await.unwrap());
        assert!(!store.close_room("r1", 600, event("e3")).await.unwrap());
        assert!(!store.close_room("missing", 600, event("e4")).await.unwrap());

        let closed = store.room("r1").await.unwrap().unwrap();
        assert_eq!(closed.closed_ms, Some(500));
        assert_eq!(outbox_ids(store).await, ["e1", "e2"]);
        // A closed room's id is never reused.
        assert!(
            !store
                .create_room(room("r1", 700), event("e5"))
                .await
                .unwrap()
        );
        assert_eq!(store.outbox_depth().await.unwrap(), 2);
    }

    pub async fn open_rooms_are_ordered_by_creation_then_id(store: &dyn Store) {
        for (id, created, ev) in [("r2", 200, "e1"), ("r3", 100, "e2"), ("r1", 100, "e3")] {
            store
                .create_room(room(id, created), event(ev))
                .await
                .unwrap();
        }
        let ids = |rooms: Vec<Room>| rooms.into_iter().map(|r| r.room_id).collect::<Vec<_>>();
        assert_eq!(ids(store.open_rooms().await.unwrap()), ["r1", "r3", "r2"]);
        store.close_room("r3", 300, event("e4")).await.unwrap();
        assert_eq!(ids(store.open_rooms().await.unwrap()), ["r1", "r2"]);
    }

    pub async fn danmaku_after_walks_across_the_bucket_boundary(store: &dyn Store) {
        // Two calls, the second entirely in bucket 1.
        let first: Vec<_> = (4090..4096).map(item).collect();
        let second: Vec<_> = (4096..=4100).map(item).collect();
        store
            .append_danmaku("r1", first, event("e1"))
            .await
            .unwrap();
        store
            .append_danmaku("r1", second, event("e2"))
            .await
            .unwrap();

        let page = store.danmaku_after("r1", 4093, 3).await.unwrap();
        assert_eq!(seqs(&page), [4094, 4095, 4096]);
        // Every field round-trips, count as given.
        assert_eq!(page[2], item(4096));

        let rest = store.danmaku_after("r1", 4093, 100).await.unwrap();
        assert_eq!(seqs(&rest), (4094..=4100).collect::<Vec<_>>());
        assert_eq!(
            seqs(&store.danmaku_after("r1", 0, 2).await.unwrap()),
            [4090, 4091]
        );
        assert!(
            store
                .danmaku_after("r1", 4100, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(store.danmaku_after("r1", 0, 0).await.unwrap().is_empty());
        assert!(
            store
                .danmaku_after("r1", u64::MAX, 10)
                .await
                .unwrap()
                .is_empty()
        );
        // Other rooms are other partitions.
        assert!(store.danmaku_after("r2", 0, 10).await.unwrap().is_empty());
        assert_eq!(store.last_danmaku_seq("r1").await.unwrap(), 4100);
        assert_eq!(store.last_danmaku_seq("r2").await.unwrap(), 0);
    }

    pub async fn recent_danmaku_is_the_tail_in_ascending_order(store: &dyn Store) {
        let items: Vec<_> = (4094..=4098).map(item).collect();
        store
            .append_danmaku("r1", items, event("e1"))
            .await
            .unwrap();
        assert_eq!(
            seqs(&store.recent_danmaku("r1", 3).await.unwrap()),
            [4096, 4097, 4098]
        );
        assert_eq!(
            seqs(&store.recent_danmaku("r1", 4).await.unwrap()),
            [4095, 4096, 4097, 4098]
        );
        assert_eq!(
            seqs(&store.recent_danmaku("r1", 100).await.unwrap()).len(),
            5
        );
        assert!(store.recent_danmaku("r1", 0).await.unwrap().is_empty());
        assert!(store.recent_danmaku("nobody", 10).await.unwrap().is_empty());
    }

    pub async fn deleted_danmaku_is_hidden_but_keeps_its_seq(store: &dyn Store) {
        store
            .append_danmaku("r1", (1..=5).map(item).collect(), event("e1"))
            .await
            .unwrap();
        assert!(store.delete_danmaku("r1", 3, event("e2")).await.unwrap());
        assert!(!store.delete_danmaku("r1", 3, event("e3")).await.unwrap());
        assert!(!store.delete_danmaku("r1", 99, event("e4")).await.unwrap());
        assert!(!store.delete_danmaku("r2", 1, event("e5")).await.unwrap());

        assert_eq!(
            seqs(&store.danmaku_after("r1", 0, 10).await.unwrap()),
            [1, 2, 4, 5]
        );
        assert_eq!(seqs(&store.danmaku_after("r1", 2, 1).await.unwrap()), [4]);
        assert_eq!(seqs(&store.recent_danmaku("r1", 2).await.unwrap()), [4, 5]);

        assert!(store.delete_danmaku("r1", 5, event("e6")).await.unwrap());
        assert_eq!(seqs(&store.recent_danmaku("r1", 2).await.unwrap()), [2, 4]);
        // The newest row is deleted, yet its seq stays taken.
        assert_eq!(store.last_danmaku_seq("r1").await.unwrap(), 5);
        assert_eq!(outbox_ids(store).await, ["e1", "e2", "e6"]);
        assert_eq!(store.deleted_danmaku("r1", 1, 5).await.unwrap(), [3, 5]);
        assert_eq!(store.deleted_danmaku("r1", 4, 4).await.unwrap(), [0u64; 0]);
        assert_eq!(store.deleted_danmaku("r1", 5, 1).await.unwrap(), [0u64; 0]);
    }

    /// Many appends at once land in shared transactions; a bad one fails
    /// alone and leaves nothing behind, its event included.
    pub async fn a_duplicate_seq_fails_only_its_own_append(store: Arc<dyn Store>) {
        const WRITERS: u64 = 64;
        let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS as usize + 3));
        let mut tasks = Vec::new();
        let spawn = |items: Vec<DanmakuItem>, id: String| {
            let store = Arc::clone(&store);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                store.append_danmaku("r1", items, event(&id)).await
            })
        };
        for seq in 1..=WRITERS {
            tasks.push((seq, spawn(vec![item(seq)], format!("ok{seq}"))));
        }
        // Duplicate within one call: always refused, whole call.
        let inner = spawn(vec![item(1000), item(1001), item(1000)], "inner".into());
        // Two calls racing for seq 2000: exactly one wins.
        let race_a = spawn(vec![item(2000)], "race-a".into());
        let race_b = spawn(vec![item(2000), item(2001)], "race-b".into());

        for (seq, task) in tasks {
            task.await
                .unwrap()
                .unwrap_or_else(|e| panic!("append of seq {seq} failed: {e}"));
        }
        assert!(matches!(inner.await.unwrap(), Err(StoreError::Sqlite(_))));
        let a = race_a.await.unwrap();
        let b = race_b.await.unwrap();
        assert!(
            a.is_ok() != b.is_ok(),
            "exactly one racer wins: {a:?} / {b:?}"
        );

        let stored = store.danmaku_after("r1", 0, 10_000).await.unwrap();
        let mut expected: Vec<u64> = (1..=WRITERS).collect();
        expected.push(2000);
        if b.is_ok() {
            expected.push(2001);
        }
        assert_eq!(seqs(&stored), expected);

        let ids = outbox_ids(store.as_ref()).await;
        assert_eq!(ids.len(), WRITERS as usize + 1);
        assert!(!ids.iter().any(|id| id == "inner"));
        let winner = if a.is_ok() { "race-a" } else { "race-b" };
        let loser = if a.is_ok() { "race-b" } else { "race-a" };
        assert!(ids.iter().any(|id| id == winner));
        assert!(!ids.iter().any(|id| id == loser));
        let expected_last = if b.is_ok() { 2001 } else { 2000 };
        assert_eq!(store.last_danmaku_seq("r1").await.unwrap(), expected_last);
    }

    pub async fn outbox_keeps_write_order_and_forgets_what_is_removed(store: &dyn Store) {
        store.create_room(room("r1", 1), event("e1")).await.unwrap();
        store
            .add_blocked_term(&TermScope::Global, "spam", event("e2"))
            .await
            .unwrap();
        store
            .set_mute("r1", "u1", Some(10), event("e3"))
            .await
            .unwrap();
        store
            .append_danmaku("r1", vec![item(1)], event("e4"))
            .await
            .unwrap();

        let rows = store.outbox_pending(10).await.unwrap();
        assert_eq!(
            rows.iter().map(|r| r.event.clone()).collect::<Vec<_>>(),
            ["e1", "e2", "e3", "e4"].map(event)
        );
        assert!(rows.windows(2).all(|w| w[0].position < w[1].position));
        assert_eq!(store.outbox_depth().await.unwrap(), 4);
        assert_eq!(store.outbox_pending(2).await.unwrap(), rows[..2]);
        assert!(store.outbox_pending(0).await.unwrap().is_empty());

        store
            .outbox_remove(vec![rows[0].position, rows[1].position])
            .await
            .unwrap();
        assert_eq!(store.outbox_pending(10).await.unwrap(), rows[2..]);
        assert_eq!(store.outbox_depth().await.unwrap(), 2);
        // Removing what is gone is harmless.
        store.outbox_remove(vec![rows[0].position]).await.unwrap();
        store.outbox_remove(Vec::new()).await.unwrap();

        store
            .outbox_remove(rows.iter().map(|r| r.position).collect())
            .await
            .unwrap();
        assert_eq!(store.outbox_depth().await.unwrap(), 0);
        // Positions keep increasing after the outbox empties.
        store.close_room("r1", 2, event("e5")).await.unwrap();
        let next = store.outbox_pending(10).await.unwrap();
        assert_eq!(next.len(), 1);
        assert!(next[0].position > rows[3].position);
    }

    pub async fn outbox_notify_wakes_the_relay_after_a_write(store: &dyn Store) {
        let notify = store.outbox_notify();
        let wait = Duration::from_secs(10);

        // A relay already waiting.
        let waiter = {
            let notify = Arc::clone(&notify);
            tokio::spawn(async move { tokio::time::timeout(wait, notify.notified()).await })
        };
        tokio::task::yield_now().await;
        store.create_room(room("r1", 1), event("e1")).await.unwrap();
        assert!(waiter.await.unwrap().is_ok(), "waiting relay was not woken");

        // A relay that starts waiting only after the commit still wakes,
        // and finds the row there.
        store.create_room(room("r2", 1), event("e2")).await.unwrap();
        assert!(tokio::time::timeout(wait, notify.notified()).await.is_ok());
        assert_eq!(outbox_ids(store).await, ["e1", "e2"]);
    }

    pub async fn mutes_expire_by_the_callers_clock(store: &dyn Store) {
        store
            .set_mute("r1", "u1", Some(1000), event("e1"))
            .await
            .unwrap();
        store
            .set_mute("r1", "u2", Some(2000), event("e2"))
            .await
            .unwrap();
        store
            .set_mute("r2", "u3", Some(5000), event("e3"))
            .await
            .unwrap();
        let users = |mutes: Vec<storage::Mute>| {
            mutes
                .into_iter()
                .map(|m| (m.user_id, m.until_ms))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            users(store.mutes("r1", 999).await.unwrap()),
            [("u1".to_owned(), 1000), ("u2".to_owned(), 2000)]
        );
        assert_eq!(
            users(store.mutes("r1", 1000).await.unwrap()),
            [("u2".to_owned(), 2000)]
        );
        assert!(store.mutes("r1", 2000).await.unwrap().is_empty());

        // Extending replaces; unmuting deletes; both always announce.
        store
            .set_mute("r1", "u1", Some(3000), event("e4"))
            .await
            .unwrap();
        store.set_mute("r1", "u2", None, event("e5")).await.unwrap();
        store
            .set_mute("r1", "ghost", None, event("e6"))
            .await
            .unwrap();
        assert_eq!(
            users(store.mutes("r1", 2500).await.unwrap()),
            [("u1".to_owned(), 3000)]
        );
        assert_eq!(
            users(store.mutes("r2", 0).await.unwrap()),
            [("u3".to_owned(), 5000)]
        );
        assert_eq!(store.outbox_depth().await.unwrap(), 6);
    }

    pub async fn blocked_terms_are_separate_per_scope(store: &dyn Store) {
        let global = TermScope::Global;
        let r1 = TermScope::Room("r1".into());
        let r2 = TermScope::Room("r2".into());
        assert!(
            store
                .add_blocked_term(&global, "zeta", event("e1"))
                .await
                .unwrap()
        );
        assert!(
            store
                .add_blocked_term(&global, "alpha", event("e2"))
                .await
                .unwrap()
        );
        assert!(
            !store
                .add_blocked_term(&global, "zeta", event("e3"))
                .await
                .unwrap()
        );
        assert!(
            store
                .add_blocked_term(&r1, "zeta", event("e4"))
                .await
                .unwrap()
        );
        assert!(
            store
                .add_blocked_term(&r2, "beta", event("e5"))
                .await
                .unwrap()
        );

        assert_eq!(
            store.blocked_terms(&global).await.unwrap(),
            ["alpha", "zeta"]
        );
        assert_eq!(store.blocked_terms(&r1).await.unwrap(), ["zeta"]);
        assert_eq!(store.blocked_terms(&r2).await.unwrap(), ["beta"]);

        assert!(
            store
                .remove_blocked_term(&r1, "zeta", event("e6"))
                .await
                .unwrap()
        );
        assert!(
            !store
                .remove_blocked_term(&r1, "zeta", event("e7"))
                .await
                .unwrap()
        );
        assert!(
            !store
                .remove_blocked_term(&r2, "zeta", event("e8"))
                .await
                .unwrap()
        );
        assert!(store.blocked_terms(&r1).await.unwrap().is_empty());
        assert_eq!(
            store.blocked_terms(&global).await.unwrap(),
            ["alpha", "zeta"]
        );
        assert_eq!(outbox_ids(store).await, ["e1", "e2", "e4", "e5", "e6"]);
    }

    pub async fn a_top_up_credits_once_per_key(store: &dyn Store) {
        let credited = store
            .top_up(topup("t1", "alice", 1_000, "k1"), event("t1"))
            .await;
        assert_eq!(credited.unwrap(), TopUpOutcome::Credited { balance: 1_000 });
        let retried = store
            .top_up(topup("t2", "alice", 1_000, "k1"), event("t2"))
            .await;
        assert_eq!(retried.unwrap(), TopUpOutcome::Replayed { balance: 1_000 });
        let other = store
            .top_up(topup("t3", "alice", 5, "k1"), event("t3"))
            .await;
        assert_eq!(other.unwrap(), TopUpOutcome::KeyConflict);
        let second = store
            .top_up(topup("t4", "alice", 250, "k2"), event("t4"))
            .await;
        assert_eq!(second.unwrap(), TopUpOutcome::Credited { balance: 1_250 });
        assert_eq!(store.wallet_balance("alice").await.unwrap(), 1_250);
        assert_eq!(store.wallet_balance("nobody").await.unwrap(), 0);
        assert_eq!(outbox_ids(store).await, ["t1", "t4"]);
        let wallet: Vec<i64> = amounts(store, &account::wallet("alice")).await;
        assert_eq!(wallet, [1_000, 250]);
        assert_eq!(amounts(store, account::PAYMENTS).await, [-1_000, -250]);
        let huge = store
            .top_up(topup("t5", "alice", i64::MAX as u64, "k3"), event("t5"))
            .await;
        assert_eq!(huge.unwrap(), TopUpOutcome::Overflow);
        assert_eq!(store.wallet_balance("alice").await.unwrap(), 1_250);
    }

    pub async fn a_gift_debits_records_splits_and_announces_at_once(store: &dyn Store) {
        store
            .top_up(topup("t1", "alice", 500, "k"), event("t1"))
            .await
            .unwrap();
        let sent = store
            .send_gift(gift("g1", "alice", 150, "key-1", 1_000), event("g1"))
            .await;
        let GiftOutcome::Sent(receipt) = sent.unwrap() else {
            panic!("the gift was sent");
        };
        assert_eq!(receipt.balance_after, 350);
        assert_eq!(receipt.gift.gift_id, "g1");
        assert_eq!(store.wallet_balance("alice").await.unwrap(), 350);
        assert_eq!(amounts(store, &account::wallet("alice")).await, [500, -150]);
        assert_eq!(amounts(store, &account::earnings("streamer")).await, [105]);
        assert_eq!(amounts(store, account::COMMISSION).await, [45]);
        assert_eq!(outbox_ids(store).await, ["t1", "g1"]);
        let gifts = store.room_gifts("r1", 0).await.unwrap();
        assert_eq!(gifts, std::slice::from_ref(&receipt.gift));
        assert!(store.room_gifts("r1", 1_001).await.unwrap().is_empty());
        assert!(store.room_gifts("r2", 0).await.unwrap().is_empty());
    }

    pub async fn a_reused_gift_key_replays_or_conflicts_and_writes_nothing(store: &dyn Store) {
        store
            .top_up(topup("t1", "alice", 500, "k"), event("t1"))
            .await
            .unwrap();
        let first = store
            .send_gift(gift("g1", "alice", 150, "key-1", 1_000), event("g1"))
            .await;
        let GiftOutcome::Sent(first) = first.unwrap() else {
            panic!("the gift was sent");
        };
        // A retry carries a new id and time (a new attempt), same parameters.
        let retry = store
            .send_gift(gift("g2", "alice", 150, "key-1", 2_000), event("g2"))
            .await;
        assert_eq!(retry.unwrap(), GiftOutcome::Replayed(first.clone()));
        let mut other = gift("g3", "alice", 150, "key-1", 3_000);
        other.count = 2;
        other.fingerprint.push_str("-other");
        let conflict = store.send_gift(other, event("g3")).await;
        assert_eq!(conflict.unwrap(), GiftOutcome::KeyConflict);
        assert_eq!(store.wallet_balance("alice").await.unwrap(), 350);
        assert_eq!(outbox_ids(store).await, ["t1", "g1"]);
        assert_eq!(store.room_gifts("r1", 0).await.unwrap().len(), 1);
        // Keys belong to their sender: bob's "key-1" is his own.
        store
            .top_up(topup("t2", "bob", 500, "kb"), event("t2"))
            .await
            .unwrap();
        let bobs = store
            .send_gift(gift("g4", "bob", 150, "key-1", 4_000), event("g4"))
            .await;
        assert!(matches!(bobs.unwrap(), GiftOutcome::Sent(_)));
    }

    pub async fn insufficient_funds_write_nothing(store: &dyn Store) {
        store
            .top_up(topup("t1", "alice", 100, "k"), event("t1"))
            .await
            .unwrap();
        let refused = store
            .send_gift(gift("g1", "alice", 150, "key-1", 1_000), event("g1"))
            .await;
        assert_eq!(
            refused.unwrap(),
            GiftOutcome::InsufficientFunds { balance: 100 }
        );
        let never = store
            .send_gift(gift("g2", "carol", 1, "key-1", 1_000), event("g2"))
            .await;
        assert_eq!(
            never.unwrap(),
            GiftOutcome::InsufficientFunds { balance: 0 }
        );
        assert_eq!(store.wallet_balance("alice").await.unwrap(), 100);
        assert_eq!(outbox_ids(store).await, ["t1"]);
        assert!(store.room_gifts("r1", 0).await.unwrap().is_empty());
        assert!(
            amounts(store, &account::earnings("streamer"))
                .await
                .is_empty()
        );
        // The key was not spent on the refusal: after a top-up it sends.
        store
            .top_up(topup("t2", "alice", 100, "k2"), event("t2"))
            .await
            .unwrap();
        let sent = store
            .send_gift(gift("g3", "alice", 150, "key-1", 2_000), event("g3"))
            .await;
        assert!(matches!(sent.unwrap(), GiftOutcome::Sent(r) if r.balance_after == 50));
    }

    pub async fn concurrent_retries_of_one_key_charge_once(store: Arc<dyn Store>) {
        store
            .top_up(topup("t1", "alice", 1_000, "k"), event("t1"))
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for attempt in 0..40 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                let id = format!("g{attempt}");
                store
                    .send_gift(
                        gift(&id, "alice", 100, "one-key", 1_000 + attempt),
                        event(&id),
                    )
                    .await
                    .unwrap()
            }));
        }
        let mut sent = 0;
        let mut receipts = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                GiftOutcome::Sent(receipt) => {
                    sent += 1;
                    receipts.push(receipt);
                }
                GiftOutcome::Replayed(receipt) => receipts.push(receipt),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(sent, 1, "exactly one charge for one key");
        assert!(
            receipts.windows(2).all(|w| w[0] == w[1]),
            "every retry sees the same receipt"
        );
        assert_eq!(store.wallet_balance("alice").await.unwrap(), 900);
        assert_eq!(store.outbox_depth().await.unwrap(), 2);
    }

    pub async fn concurrent_sends_never_overdraw(store: Arc<dyn Store>) {
        store
            .top_up(topup("t1", "alice", 1_000, "k"), event("t1"))
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for n in 0..30u64 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                let id = format!("g{n}");
                let key = format!("key-{n}");
                store
                    .send_gift(gift(&id, "alice", 50, &key, 1_000 + n), event(&id))
                    .await
                    .unwrap()
            }));
        }
        let (mut sent, mut refused) = (0, 0);
        for task in tasks {
            match task.await.unwrap() {
                GiftOutcome::Sent(_) => sent += 1,
                GiftOutcome::InsufficientFunds { balance } => {
                    assert!(balance < 50);
                    refused += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!((sent, refused), (20, 10));
        assert_eq!(store.wallet_balance("alice").await.unwrap(), 0);
        let wallet: i64 = amounts(&*store, &account::wallet("alice"))
            .await
            .iter()
            .sum();
        assert_eq!(wallet, 0, "the ledger agrees with the balance");
    }

    pub async fn a_gift_is_settled_once_and_counted_in_earnings(store: &dyn Store) {
        store
            .top_up(topup("t1", "alice", 1_000, "k"), event("t1"))
            .await
            .unwrap();
        for (n, total) in [(1, 100), (2, 50)] {
            let id = format!("g{n}");
            let sent = store
                .send_gift(
                    gift(&id, "alice", total, &format!("key-{n}"), 1_000 + n),
                    event(&id),
                )
                .await
                .unwrap();
            assert!(matches!(sent, GiftOutcome::Sent(_)));
        }
        let unsettled = store.unsettled_gifts(10).await.unwrap();
        let ids: Vec<&str> = unsettled.iter().map(|g| g.gift_id.as_str()).collect();
        assert_eq!(ids, ["g1", "g2"]);
        let settlement = |gift: &GiftRecord| Settlement {
            gift_id: gift.gift_id.clone(),
            creator: gift.recipient.clone(),
            room_id: gift.room_id.clone(),
            creator_amount: gift.creator_amount,
            platform_amount: gift.platform_amount,
            gift_ms: gift.created_ms,
            settled_ms: 5_000,
        };
        assert_eq!(
            store.settle(vec![settlement(&unsettled[0])]).await.unwrap(),
            1
        );
        assert_eq!(
            store.settle(vec![settlement(&unsettled[0])]).await.unwrap(),
            0,
            "a redelivered gift settles once"
        );
        assert_eq!(
            store.earnings("streamer").await.unwrap(),
            Earnings {
                gifts: 1,
                coins: 70
            }
        );
        let left = store.unsettled_gifts(10).await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].gift_id, "g2");
        // A batch with a repeat inside settles each gift once.
        let batch = vec![
            settlement(&left[0]),
            settlement(&left[0]),
            settlement(&unsettled[0]),
        ];
        assert_eq!(store.settle(batch).await.unwrap(), 1);
        assert_eq!(
            store.earnings("streamer").await.unwrap(),
            Earnings {
                gifts: 2,
                coins: 105
            }
        );
        assert!(store.unsettled_gifts(10).await.unwrap().is_empty());
        assert_eq!(store.earnings("nobody").await.unwrap(), Earnings::default());
    }

    fn vod(vod_id: &str, room_id: &str, origin_ms: u64) -> VodAsset {
        VodAsset {
            vod_id: vod_id.to_owned(),
            room_id: room_id.to_owned(),
            stream: "main".into(),
            status: VodStatus::Recording,
            media_origin_ms: origin_ms,
            duration_ms: 0,
            segments: 0,
            renditions: vec![
                VodRendition {
                    name: "720p".into(),
                    width: 1280,
                    height: 720,
                    bitrate_bps: 2_500_000,
                },
                VodRendition {
                    name: "360p".into(),
                    width: 640,
                    height: 360,
                    bitrate_bps: 700_000,
                },
            ],
            danmaku_seq_start: 41,
            publisher: "streamer".into(),
            finished_ms: None,
            error: String::new(),
        }
    }

    pub async fn vod_assets_are_kept_whole_and_listed_newest_first(store: &dyn Store) {
        store.put_vod_asset(vod("v1", "r1", 1_000)).await.unwrap();
        store.put_vod_asset(vod("v2", "r2", 2_000)).await.unwrap();
        store.put_vod_asset(vod("v3", "r1", 3_000)).await.unwrap();
        let mut ready = vod("v1", "r1", 1_000);
        ready.status = VodStatus::Ready;
        ready.duration_ms = 61_500;
        ready.segments = 31;
        ready.finished_ms = Some(70_000);
        store.put_vod_asset(ready.clone()).await.unwrap();
        assert_eq!(store.vod_asset("v1").await.unwrap(), Some(ready.clone()));
        // A stale write after it became ready changes nothing.
        store.put_vod_asset(vod("v1", "r1", 1_000)).await.unwrap();
        assert_eq!(store.vod_asset("v1").await.unwrap(), Some(ready));
        // While recording, progress only grows.
        let progress = |segments, duration_ms| VodAsset {
            segments,
            duration_ms,
            ..vod("v3", "r1", 3_000)
        };
        store.put_vod_asset(progress(5, 10_000)).await.unwrap();
        store.put_vod_asset(progress(3, 6_000)).await.unwrap();
        let v3 = store.vod_asset("v3").await.unwrap().unwrap();
        assert_eq!((v3.segments, v3.duration_ms), (5, 10_000));
        assert_eq!(store.vod_asset("nope").await.unwrap(), None);
        let ids = |assets: Vec<VodAsset>| assets.into_iter().map(|a| a.vod_id).collect::<Vec<_>>();
        assert_eq!(
            ids(store.vod_assets(Some("r1"), 10).await.unwrap()),
            ["v3", "v1"]
        );
        assert_eq!(ids(store.vod_assets(None, 2).await.unwrap()), ["v3", "v2"]);
        assert!(store.vod_assets(Some("r9"), 10).await.unwrap().is_empty());
    }

    pub async fn vod_danmaku_is_read_per_segment_by_offset_and_imported_once(store: &dyn Store) {
        let placed = |segment, offset_ms, seq| VodDanmaku {
            segment,
            offset_ms,
            item: item(seq),
        };
        let first = vec![
            placed(0, 5_000, 3),
            placed(0, 1_200, 2),
            placed(1, 360_100, 4),
        ];
        assert_eq!(store.put_vod_danmaku("v1", first.clone()).await.unwrap(), 3);
        // Redone after a crash: nothing doubles.
        let again = [first, vec![placed(0, 1_200, 1)]].concat();
        assert_eq!(store.put_vod_danmaku("v1", again).await.unwrap(), 1);
        let segment = store.vod_danmaku("v1", 0).await.unwrap();
        let order: Vec<(u64, u64)> = segment.iter().map(|d| (d.offset_ms, d.item.seq)).collect();
        assert_eq!(order, [(1_200, 1), (1_200, 2), (5_000, 3)]);
        assert_eq!(segment[2].item, item(3));
        assert_eq!(store.vod_danmaku("v1", 1).await.unwrap().len(), 1);
        assert!(store.vod_danmaku("v1", 2).await.unwrap().is_empty());
        assert!(store.vod_danmaku("v2", 0).await.unwrap().is_empty());
    }

    pub async fn story_graph_versions_are_immutable(store: &dyn Store) {
        let put = |spec: &str| store.put_story_graph("launch", 1, spec.to_owned(), 10);
        assert_eq!(put("{\"a\":1}").await.unwrap(), StoryGraphPut::Created);
        assert_eq!(put("{\"a\":1}").await.unwrap(), StoryGraphPut::Unchanged);
        assert_eq!(put("{\"a\":2}").await.unwrap(), StoryGraphPut::Conflict);
        assert_eq!(
            store.story_graph("launch", 1).await.unwrap().as_deref(),
            Some("{\"a\":1}"),
            "a conflict leaves the first content"
        );
        assert_eq!(
            store
                .put_story_graph("launch", 2, "{}".into(), 11)
                .await
                .unwrap(),
            StoryGraphPut::Created
        );
        assert_eq!(store.story_graph("launch", 3).await.unwrap(), None);
        assert_eq!(store.story_graph("other", 1).await.unwrap(), None);
    }

    pub async fn a_story_run_is_replaced_whole_with_its_events(store: &dyn Store) {
        assert_eq!(store.story_run("r1").await.unwrap(), None);
        store
            .save_story_run("r1", "state-1".into(), 1, vec![event("s1")])
            .await
            .unwrap();
        store
            .save_story_run("r1", "state-2".into(), 2, vec![event("s2"), event("s3")])
            .await
            .unwrap();
        store
            .save_story_run("r2", "other".into(), 2, vec![])
            .await
            .unwrap();
        assert_eq!(
            store.story_run("r1").await.unwrap().as_deref(),
            Some("state-2")
        );
        assert_eq!(outbox_ids(store).await, ["s1", "s2", "s3"]);
        assert!(store.delete_story_run("r1").await.unwrap());
        assert!(!store.delete_story_run("r1").await.unwrap());
        assert_eq!(store.story_run("r1").await.unwrap(), None);
        assert_eq!(
            store.story_run("r2").await.unwrap().as_deref(),
            Some("other")
        );
    }

    pub async fn last_seq_and_flush_are_barriers(store: Arc<dyn Store>) {
        // Writes queued behind one another from several tasks; once each
        // has been submitted, a barrier call sees it.
        let mut tasks = Vec::new();
        for seq in 1..=20 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                store
                    .append_danmaku("r1", vec![item(seq)], event(&format!("e{seq}")))
                    .await
            }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        store.flush().await.unwrap();
        assert_eq!(store.last_danmaku_seq("r1").await.unwrap(), 20);
        assert_eq!(store.outbox_depth().await.unwrap(), 20);
    }
}

fn open(dir: &std::path::Path) -> EmbeddedStore {
    EmbeddedStore::open(dir, EmbeddedOptions::default()).unwrap()
}

/// One `#[tokio::test]` per suite function, on a fresh embedded store.
macro_rules! embedded_suite {
    (borrowed: $($name:ident),* ; shared: $($shared:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let dir = TempDir::new().unwrap();
                let store = open(dir.path());
                suite::$name(&store).await;
                store.close().await.unwrap();
            }
        )*
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $shared() {
                let dir = TempDir::new().unwrap();
                let store = Arc::new(open(dir.path()));
                suite::$shared(Arc::clone(&store) as Arc<dyn Store>).await;
                store.close().await.unwrap();
            }
        )*
    };
}

embedded_suite!(
    borrowed:
        an_event_alone_is_appended_to_the_outbox,
        create_room_is_idempotent,
        closing_twice_closes_once,
        open_rooms_are_ordered_by_creation_then_id,
        danmaku_after_walks_across_the_bucket_boundary,
        recent_danmaku_is_the_tail_in_ascending_order,
        deleted_danmaku_is_hidden_but_keeps_its_seq,
        outbox_keeps_write_order_and_forgets_what_is_removed,
        outbox_notify_wakes_the_relay_after_a_write,
        mutes_expire_by_the_callers_clock,
        blocked_terms_are_separate_per_scope,
        a_top_up_credits_once_per_key,
        a_gift_debits_records_splits_and_announces_at_once,
        a_reused_gift_key_replays_or_conflicts_and_writes_nothing,
        insufficient_funds_write_nothing,
        a_gift_is_settled_once_and_counted_in_earnings,
        vod_assets_are_kept_whole_and_listed_newest_first,
        vod_danmaku_is_read_per_segment_by_offset_and_imported_once,
        story_graph_versions_are_immutable,
        a_story_run_is_replaced_whole_with_its_events;
    shared:
        a_duplicate_seq_fails_only_its_own_append,
        last_seq_and_flush_are_barriers,
        concurrent_retries_of_one_key_charge_once,
        concurrent_sends_never_overdraw,
);

/// What only the embedded backend can show.
mod embedded {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn data_survives_close_and_reopen() {
        let dir = TempDir::new().unwrap();
        let store = open(dir.path());
        store.create_room(room("r1", 1), event("e1")).await.unwrap();
        store
            .append_danmaku("r1", (4095..=4097).map(item).collect(), event("e2"))
            .await
            .unwrap();
        store.delete_danmaku("r1", 4097, event("e3")).await.unwrap();
        store
            .add_blocked_term(&TermScope::Global, "spam", event("e4"))
            .await
            .unwrap();
        store.close().await.unwrap();

        // Closed: writes are refused, committed data still reads.
        assert!(matches!(
            store.create_room(room("r2", 1), event("e5")).await,
            Err(StoreError::Closed)
        ));
        assert!(matches!(store.flush().await, Err(StoreError::Closed)));
        assert!(matches!(
            store.last_danmaku_seq("r1").await,
            Err(StoreError::Closed)
        ));
        assert!(store.room("r1").await.unwrap().is_some());
        store.close().await.unwrap();
        drop(store);

        let store = open(dir.path());
        assert_eq!(store.room("r1").await.unwrap(), Some(room("r1", 1)));
        assert_eq!(store.room("r2").await.unwrap(), None);
        assert_eq!(
            seqs(&store.danmaku_after("r1", 0, 10).await.unwrap()),
            [4095, 4096]
        );
        assert_eq!(store.last_danmaku_seq("r1").await.unwrap(), 4097);
        assert_eq!(
            store.blocked_terms(&TermScope::Global).await.unwrap(),
            ["spam"]
        );
        assert_eq!(outbox_ids(&store).await, ["e1", "e2", "e3", "e4"]);
        // Numbering goes on where it stopped.
        store.create_room(room("r3", 2), event("e6")).await.unwrap();
        let rows = store.outbox_pending(10).await.unwrap();
        assert_eq!(rows.last().unwrap().event.id, "e6");
        store.close().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_database_from_a_newer_build_is_refused() {
        let dir = TempDir::new().unwrap();
        let store = open(dir.path());
        store.create_room(room("r1", 1), event("e1")).await.unwrap();
        store.close().await.unwrap();
        drop(store);

        let path = dir.path().join(storage::DB_FILE);
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 999).unwrap();
        drop(conn);

        match EmbeddedStore::open(dir.path(), EmbeddedOptions::default()) {
            Err(StoreError::Migration(message)) => {
                assert!(message.contains("999"), "{message}");
                assert!(message.contains("newer"), "{message}");
            }
            Err(other) => panic!("expected a migration error, got {other}"),
            Ok(_) => panic!("a newer schema was opened"),
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn drop_without_close_keeps_acknowledged_writes() {
        let dir = TempDir::new().unwrap();
        let store = Arc::new(open(dir.path()));
        let mut tasks = Vec::new();
        for seq in 1..=10 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                store
                    .append_danmaku("r1", vec![item(seq)], event(&format!("e{seq}")))
                    .await
            }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        drop(store);

        let store = open(dir.path());
        assert_eq!(store.last_danmaku_seq("r1").await.unwrap(), 10);
        assert_eq!(store.outbox_depth().await.unwrap(), 10);
        store.close().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn open_creates_the_directory_and_honours_options() {
        let dir = TempDir::new().unwrap();
        let nested = dir.path().join("a").join("b");
        let store = EmbeddedStore::open(
            &nested,
            EmbeddedOptions {
                synchronous_full: false,
                max_group: 1,
                readers: 1,
            },
        )
        .unwrap();
        assert!(nested.join(storage::DB_FILE).exists());
        // max_group 1 and one reader still serve concurrent callers.
        let store = Arc::new(store);
        let mut tasks = Vec::new();
        for seq in 1..=8 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                store
                    .append_danmaku("r1", vec![item(seq)], event(&format!("e{seq}")))
                    .await?;
                store.danmaku_after("r1", seq - 1, 1).await
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap().len(), 1);
        }
        store.close().await.unwrap();

        let conn = rusqlite::Connection::open(nested.join(storage::DB_FILE)).unwrap();
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_reused_event_id_refuses_the_change_it_announces() {
        let dir = TempDir::new().unwrap();
        let store = open(dir.path());
        store.create_room(room("r1", 1), event("e1")).await.unwrap();
        assert!(store.create_room(room("r2", 1), event("e1")).await.is_err());
        assert_eq!(store.room("r2").await.unwrap(), None);
        store.close().await.unwrap();
    }
}
