//! Reconciliation over a real embedded store: clean after real sends,
//! settlements and top-ups; every kind of tampering is found and counted.

use bytes::Bytes;
use storage::audit::{load_embedded, reconcile};
use storage::{
    EmbeddedOptions, EmbeddedStore, GiftOutcome, GiftRecord, OutboxEvent, Settlement, Store, TopUp,
};
use tempfile::TempDir;

fn event(id: &str) -> OutboxEvent {
    OutboxEvent {
        id: id.into(),
        subject: "live.gift.r1".into(),
        payload: Bytes::from_static(b"e"),
    }
}

fn gift(id: &str, total: u64, created_ms: u64) -> GiftRecord {
    GiftRecord {
        gift_id: id.into(),
        room_id: "r1".into(),
        sender: "alice".into(),
        recipient: "streamer".into(),
        gift: "heart".into(),
        count: 1,
        unit_price: total,
        total,
        creator_amount: total * 7 / 10,
        platform_amount: total - total * 7 / 10,
        idempotency_key: format!("key-{id}"),
        fingerprint: format!("fp-{id}"),
        created_ms,
    }
}

/// Alice tops up 1000 and sends three gifts; billing settles the first two.
async fn populated() -> TempDir {
    let dir = TempDir::new().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let topup = TopUp {
        topup_id: "t1".into(),
        user_id: "alice".into(),
        amount: 1_000,
        idempotency_key: "pay".into(),
        created_ms: 10,
    };
    store.top_up(topup, event("t1")).await.unwrap();
    for (n, total) in [(1u64, 100u64), (2, 50), (3, 10)] {
        let id = format!("g{n}");
        let record = gift(&id, total, 100 + n);
        let sent = store.send_gift(record.clone(), event(&id)).await.unwrap();
        assert!(matches!(sent, GiftOutcome::Sent(_)));
        if n < 3 {
            let settlement = Settlement {
                gift_id: id.clone(),
                creator: "streamer".into(),
                room_id: "r1".into(),
                creator_amount: record.creator_amount,
                platform_amount: record.platform_amount,
                gift_ms: record.created_ms,
                settled_ms: 200,
            };
            assert_eq!(store.settle(vec![settlement]).await.unwrap(), 1);
        }
    }
    // The relay published every event but g3's.
    let rows = store.outbox_pending(10).await.unwrap();
    let published: Vec<u64> = rows
        .iter()
        .filter(|row| row.event.id != "g3")
        .map(|row| row.position)
        .collect();
    store.outbox_remove(published).await.unwrap();
    store.close().await.unwrap();
    dir
}

fn tamper(dir: &TempDir, sql: &str) {
    let conn = rusqlite::Connection::open(dir.path().join(storage::DB_FILE)).unwrap();
    conn.execute_batch(sql).unwrap();
}

fn differences(dir: &TempDir) -> Vec<(String, u64, i128)> {
    let snapshot = load_embedded(dir.path(), 0, u64::MAX).unwrap();
    reconcile(&snapshot)
        .differences
        .into_iter()
        .map(|d| (d.what.to_owned(), d.count, d.coins))
        .collect()
}

#[tokio::test]
async fn a_consistent_store_reconciles_but_for_the_gift_billing_has_not_seen() {
    let dir = populated().await;
    let snapshot = load_embedded(dir.path(), 0, u64::MAX).unwrap();
    let result = reconcile(&snapshot);
    assert_eq!(
        (result.gifts, result.gift_coins, result.wallets),
        (3, 160, 1)
    );
    assert_eq!(
        differences(&dir),
        [(
            "gift not settled: its event waits in the outbox".to_owned(),
            1,
            7
        )]
    );
    // Once billing settles it, nothing differs.
    tamper(
        &dir,
        "INSERT INTO settlements VALUES ('g3', 'streamer', 'r1', 7, 3, 103, 300);
         DELETE FROM outbox;",
    );
    assert!(differences(&dir).is_empty(), "{:?}", differences(&dir));
    // A period that leaves g1 out checks the rest and still sees g1's lines
    // as belonging to a transfer outside it.
    let part = reconcile(&load_embedded(dir.path(), 102, u64::MAX).unwrap());
    assert_eq!(part.gifts, 2);
    assert!(part.is_clean(), "{:?}", part.differences);
}

#[tokio::test]
async fn every_kind_of_tampering_is_found_with_its_amount() {
    let dir = populated().await;
    tamper(
        &dir,
        "INSERT INTO settlements VALUES ('g3', 'streamer', 'r1', 7, 3, 103, 300);
         DELETE FROM outbox;
         UPDATE wallets SET balance = balance + 25 WHERE user_id = 'alice';
         DELETE FROM ledger WHERE transfer_id = 'g2' AND account = 'platform:commission';
         DELETE FROM settlements WHERE gift_id = 'g1';
         UPDATE settlements SET creator_amount = 8 WHERE gift_id = 'g3';
         INSERT INTO settlements VALUES ('ghost', 'streamer', 'r1', 70, 30, 150, 300);
         INSERT INTO ledger VALUES ('earnings:streamer', 150, 'stray', 99);",
    );
    let found = differences(&dir);
    let expect = |what: &str, count: u64, coins: i128| {
        assert!(
            found.contains(&(what.to_owned(), count, coins)),
            "{what} x{count} ({coins}) in {found:#?}"
        );
    };
    expect("wallet balance differs from its ledger", 1, 25);
    expect("transfer does not sum to zero", 1, -15);
    expect("gift without its ledger lines", 1, 50);
    expect("gift not settled by billing", 1, 70);
    expect("settlement differs from its gift", 1, 1);
    expect("settlement without a gift", 1, 70);
    expect("ledger lines without a gift or top-up", 1, 99);
    assert_eq!(found.len(), 7, "{found:#?}");
}

#[tokio::test]
async fn a_missing_store_is_a_clear_error() {
    let dir = TempDir::new().unwrap();
    let error = load_embedded(dir.path(), 0, u64::MAX).unwrap_err();
    assert!(error.to_string().contains("no store at"), "{error}");
}
