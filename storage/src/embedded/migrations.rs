//! Versioned schema. `PRAGMA user_version` records how many scripts of
//! [`MIGRATIONS`] have been applied; each script runs in its own transaction
//! together with the version bump, so a crash mid-migration leaves the
//! previous version intact. Scripts are append-only: a released script is
//! never edited, a change is a new script.
//!
//! Every table leads its primary key with the ScyllaDB partition key (see the
//! crate docs for the CQL), so the embedded store answers each read from one
//! contiguous key range exactly as Scylla will.

use rusqlite::Connection;

use crate::{Result, StoreError};

/// The schema scripts, in order; script `i` takes the database to version
/// `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: rooms, danmaku, moderation, outbox.
    "
    CREATE TABLE rooms (
        room_id    TEXT    NOT NULL PRIMARY KEY,
        title      TEXT    NOT NULL,
        created_ms INTEGER NOT NULL,
        closed_ms  INTEGER
    ) WITHOUT ROWID;
    -- Stands in for Scylla's `open_rooms` table: only open rooms, in the
    -- order a restarting node wants them.
    CREATE INDEX rooms_open ON rooms (created_ms, room_id) WHERE closed_ms IS NULL;

    -- `item` is the protobuf encoding of DanmakuItem, so a field added to the
    -- message is stored without a migration; the key columns are broken out
    -- because they are what every query touches.
    CREATE TABLE danmaku (
        room_id TEXT    NOT NULL,
        bucket  INTEGER NOT NULL,
        seq     INTEGER NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0,
        item    BLOB    NOT NULL,
        PRIMARY KEY (room_id, bucket, seq)
    ) WITHOUT ROWID;

    -- The highest seq ever appended per room: one-partition answer to
    -- `last_danmaku_seq`, and the bound that stops bucket walks.
    CREATE TABLE danmaku_head (
        room_id  TEXT    NOT NULL PRIMARY KEY,
        last_seq INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE blocked_terms (
        scope TEXT NOT NULL,
        term  TEXT NOT NULL,
        PRIMARY KEY (scope, term)
    ) WITHOUT ROWID;

    CREATE TABLE mutes (
        room_id  TEXT    NOT NULL,
        user_id  TEXT    NOT NULL,
        until_ms INTEGER NOT NULL,
        PRIMARY KEY (room_id, user_id)
    ) WITHOUT ROWID;

    -- AUTOINCREMENT: positions are never reused, even after the newest row
    -- is removed, so `position` is strictly increasing over the table's life.
    CREATE TABLE outbox (
        position   INTEGER PRIMARY KEY AUTOINCREMENT,
        id         TEXT    NOT NULL UNIQUE,
        subject    TEXT    NOT NULL,
        payload    BLOB    NOT NULL,
        created_ms INTEGER NOT NULL
    );
    ",
    // 2: wallets, idempotency keys, gifts, the ledger.
    "
    -- Partition user_id. The CHECK is a second line behind the conditional
    -- debit: a negative balance cannot be written even by a bug.
    CREATE TABLE wallets (
        user_id    TEXT    NOT NULL PRIMARY KEY,
        balance    INTEGER NOT NULL CHECK (balance >= 0),
        updated_ms INTEGER NOT NULL
    ) WITHOUT ROWID;

    -- Partition (owner, key): a sender's gift keys, the admin's top-up keys.
    -- `result_id` is the gift or top-up the key produced.
    CREATE TABLE idempotency (
        owner       TEXT    NOT NULL,
        key         TEXT    NOT NULL,
        fingerprint TEXT    NOT NULL,
        result_id   TEXT    NOT NULL,
        created_ms  INTEGER NOT NULL,
        PRIMARY KEY (owner, key)
    ) WITHOUT ROWID;

    -- Partition room_id, clustered by time: a room's leaderboard rebuild and
    -- reconciliation read ranges of it. gift_id is unique on its own too.
    CREATE TABLE gifts (
        room_id         TEXT    NOT NULL,
        created_ms      INTEGER NOT NULL,
        gift_id         TEXT    NOT NULL UNIQUE,
        sender          TEXT    NOT NULL,
        recipient       TEXT    NOT NULL,
        gift            TEXT    NOT NULL,
        count           INTEGER NOT NULL CHECK (count > 0),
        unit_price      INTEGER NOT NULL CHECK (unit_price >= 0),
        total           INTEGER NOT NULL CHECK (total >= 0),
        creator_amount  INTEGER NOT NULL,
        platform_amount INTEGER NOT NULL,
        idempotency_key TEXT    NOT NULL,
        fingerprint     TEXT    NOT NULL,
        balance_after   INTEGER NOT NULL,
        CHECK (creator_amount + platform_amount = total),
        PRIMARY KEY (room_id, created_ms, gift_id)
    ) WITHOUT ROWID;

    CREATE TABLE topups (
        topup_id      TEXT    NOT NULL PRIMARY KEY,
        user_id       TEXT    NOT NULL,
        amount        INTEGER NOT NULL CHECK (amount > 0),
        balance_after INTEGER NOT NULL,
        created_ms    INTEGER NOT NULL
    ) WITHOUT ROWID;

    -- Partition account, clustered by time. Lines are only ever inserted.
    CREATE TABLE ledger (
        account     TEXT    NOT NULL,
        created_ms  INTEGER NOT NULL,
        transfer_id TEXT    NOT NULL,
        amount      INTEGER NOT NULL,
        PRIMARY KEY (account, created_ms, transfer_id)
    ) WITHOUT ROWID;
    ",
    // 3: billing's settlements, one per gift, and earnings per creator.
    "
    CREATE TABLE settlements (
        gift_id         TEXT    NOT NULL PRIMARY KEY,
        creator         TEXT    NOT NULL,
        room_id         TEXT    NOT NULL,
        creator_amount  INTEGER NOT NULL,
        platform_amount INTEGER NOT NULL,
        gift_ms         INTEGER NOT NULL,
        settled_ms      INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE creator_earnings (
        creator    TEXT    NOT NULL PRIMARY KEY,
        gifts      INTEGER NOT NULL,
        coins      INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    ",
    // 4: catalog changes made through the admin API, applied over the
    // defaults and the configuration at start.
    "
    CREATE TABLE gift_catalog (
        gift_id    TEXT    NOT NULL PRIMARY KEY,
        name       TEXT    NOT NULL,
        price      INTEGER NOT NULL CHECK (price >= 0),
        tier       INTEGER NOT NULL,
        combo      INTEGER NOT NULL,
        retired    INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    ",
    // 5: a room's own gift goal (a brand event's target).
    "
    CREATE TABLE room_goals (
        room_id   TEXT    NOT NULL PRIMARY KEY,
        target    INTEGER NOT NULL CHECK (target > 0),
        window_ms INTEGER NOT NULL CHECK (window_ms > 0)
    ) WITHOUT ROWID;
    ",
    // 6: VOD assets built from recording events, and the danmaku replayed
    // over them, partitioned by (vod, 6-minute segment), clustered by offset.
    "
    CREATE TABLE vod_assets (
        vod_id            TEXT    NOT NULL PRIMARY KEY,
        room_id           TEXT    NOT NULL,
        stream            TEXT    NOT NULL,
        status            TEXT    NOT NULL,
        media_origin_ms   INTEGER NOT NULL,
        duration_ms       INTEGER NOT NULL,
        segments          INTEGER NOT NULL,
        renditions        TEXT    NOT NULL,
        danmaku_seq_start INTEGER NOT NULL,
        publisher         TEXT    NOT NULL,
        finished_ms       INTEGER,
        error             TEXT    NOT NULL
    ) WITHOUT ROWID;
    -- Stands in for Scylla's `vod_by_room` table (partition room_id,
    -- clustered by media_origin_ms DESC).
    CREATE INDEX vod_by_room ON vod_assets (room_id, media_origin_ms DESC);
    CREATE INDEX vod_by_time ON vod_assets (media_origin_ms DESC);
    CREATE TABLE vod_danmaku (
        vod_id    TEXT    NOT NULL,
        segment   INTEGER NOT NULL,
        offset_ms INTEGER NOT NULL,
        seq       INTEGER NOT NULL,
        item      BLOB    NOT NULL,
        PRIMARY KEY (vod_id, segment, offset_ms, seq)
    ) WITHOUT ROWID;
    ",
    // 7: story graphs (immutable versions) and each room's story run.
    "
    CREATE TABLE story_graphs (
        graph_id   TEXT    NOT NULL,
        version    INTEGER NOT NULL,
        spec       TEXT    NOT NULL,
        created_ms INTEGER NOT NULL,
        PRIMARY KEY (graph_id, version)
    ) WITHOUT ROWID;
    CREATE TABLE story_runs (
        room_id    TEXT    NOT NULL PRIMARY KEY,
        state      TEXT    NOT NULL,
        updated_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    ",
];

/// Brings the database to the last script's version, refusing one that is newer:
/// an older binary must not write into a schema it does not understand.
pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    migrate_with(conn, MIGRATIONS)
}

fn migrate_with(conn: &mut Connection, scripts: &[&str]) -> Result<()> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let known = scripts.len();
    let current = usize::try_from(current)
        .map_err(|_| StoreError::Migration(format!("negative schema version {current}")))?;
    if current > known {
        return Err(StoreError::Migration(format!(
            "database schema version {current} is newer than this build knows ({known}); \
             refusing to open it with an older binary"
        )));
    }
    for (index, script) in scripts.iter().enumerate().skip(current) {
        let version = index + 1;
        let tx = conn.transaction()?;
        tx.execute_batch(script)
            .map_err(|e| StoreError::Migration(format!("migration {version} failed: {e}")))?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
        tracing::info!(version, "storage schema migrated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(conn: &Connection) -> i64 {
        conn.pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap()
    }

    #[test]
    fn fresh_database_reaches_the_latest_version_and_stays_there() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        assert_eq!(version(&conn), MIGRATIONS.len() as i64);
        // Running again applies nothing (a second CREATE TABLE would fail).
        migrate(&mut conn).unwrap();
        assert_eq!(version(&conn), MIGRATIONS.len() as i64);
    }

    #[test]
    fn applies_only_the_missing_scripts() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_with(&mut conn, &["CREATE TABLE a (x)"]).unwrap();
        migrate_with(&mut conn, &["CREATE TABLE a (x)", "CREATE TABLE b (y)"]).unwrap();
        assert_eq!(version(&conn), 2);
        conn.execute("INSERT INTO b (y) VALUES (1)", []).unwrap();
    }

    #[test]
    fn a_failing_script_leaves_the_previous_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        let err = migrate_with(
            &mut conn,
            &[
                "CREATE TABLE a (x)",
                "CREATE TABLE b (y); CREATE TABLE a (x)",
            ],
        )
        .unwrap_err();
        assert!(matches!(err, StoreError::Migration(m) if m.contains("migration 2")));
        assert_eq!(version(&conn), 1);
        // Script 2's first statement was rolled back with it.
        assert!(conn.execute("INSERT INTO b (y) VALUES (1)", []).is_err());
    }

    #[test]
    fn a_newer_database_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        let err = migrate(&mut conn).unwrap_err();
        assert!(matches!(err, StoreError::Migration(m) if m.contains("newer")));
    }
}
