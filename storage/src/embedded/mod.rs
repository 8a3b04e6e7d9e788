//! The embedded backend: one SQLite file (`live.db`) in WAL mode.
//!
//! Writes go through the single [`writer`] thread and its group commit;
//! reads go through the [`readers`] pool beside it. The domain SQL lives in
//! one module per concept ([`rooms`], [`danmaku`], [`moderation`],
//! [`wallets`], [`outbox`]) as plain functions over a `&Connection`, so the same function
//! serves a write on the writer's savepoint or a read on a pooled snapshot.

mod danmaku;
mod migrations;
mod moderation;
mod outbox;
mod readers;
mod rooms;
mod stories;
mod vod;
mod wallets;
pub(crate) use wallets::{GIFT_COLUMNS, gift_row};
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use protocol::v1::DanmakuItem;
use rusqlite::Connection;
use tokio::sync::Notify;

use crate::{
    CatalogEntry, Earnings, GiftOutcome, GiftRecord, LedgerLine, Mute, OutboxEvent, OutboxRow,
    Result, Room, Settlement, Store, StoreError, StoryGraphPut, TermScope, TopUp, TopUpOutcome,
    VodAsset, VodDanmaku,
};
use readers::Readers;
use writer::{Writer, Written};

/// The database file inside the data directory.
pub const DB_FILE: &str = "live.db";

/// How long a connection waits on a lock before giving up. Only the WAL
/// checkpoint and a second process can hold one against us.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Knobs for [`EmbeddedStore::open`].
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// `true` (the default): `synchronous=FULL`, an fsync per commit, so an
    /// acknowledged write survives power loss. `false`: `NORMAL`, which in
    /// WAL mode survives a process crash but may lose the last commits to a
    /// power cut; for tests and throwaway nodes.
    pub synchronous_full: bool,
    /// Most commands per transaction (default 1024). Larger groups spread
    /// one fsync over more writes but hold the replies of the first longer.
    pub max_group: usize,
    /// Read connections (default 4): reads that may run at once.
    pub readers: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            synchronous_full: true,
            max_group: 1024,
            readers: 4,
        }
    }
}

/// [`Store`] on an embedded SQLite database, for a single node or a test.
pub struct EmbeddedStore {
    writer: Writer,
    readers: Arc<Readers>,
    outbox_notify: Arc<Notify>,
}

impl EmbeddedStore {
    /// Opens (creating if needed) `dir/live.db`, brings its schema up to
    /// date and starts the writer thread.
    ///
    /// Fails with [`StoreError::Migration`] if the file was written by a
    /// newer build.
    pub fn open(dir: &Path, options: EmbeddedOptions) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(DB_FILE);
        let mut conn = Connection::open(&path)?;
        configure_writer(&conn, &options)?;
        migrations::migrate(&mut conn)?;
        let readers = Readers::open(path, options.readers, BUSY_TIMEOUT)?;
        let outbox_notify = Arc::new(Notify::new());
        let writer = Writer::spawn(conn, options.max_group, Arc::clone(&outbox_notify))?;
        Ok(EmbeddedStore {
            writer,
            readers,
            outbox_notify,
        })
    }

    /// Commits everything submitted so far, stops the writer thread and
    /// joins it. Later writes fail with [`StoreError::Closed`]; reads keep
    /// working on what was committed. Dropping the store without closing
    /// also commits what was queued, but nobody waits for it.
    pub async fn close(&self) -> Result<()> {
        self.writer.shutdown().await
    }
}

fn configure_writer(conn: &Connection, options: &EmbeddedOptions) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        // Without WAL every read would block the writer; the filesystem
        // (no shared memory, e.g. some network mounts) is what refuses it.
        return Err(StoreError::Io(std::io::Error::other(format!(
            "SQLite refused WAL journal mode (got {mode})"
        ))));
    }
    let synchronous = if options.synchronous_full {
        "FULL"
    } else {
        "NORMAL"
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    // Partitions reference each other by key only, as in Scylla.
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    Ok(())
}

/// A `LIMIT` bound: SQLite counts in i64, callers in usize.
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn create_room(&self, room: Room, event: OutboxEvent) -> Result<bool> {
        self.writer
            .submit(move |conn| rooms::create(conn, &room, &event))
            .await
    }

    async fn close_room(&self, room_id: &str, closed_ms: u64, event: OutboxEvent) -> Result<bool> {
        let room_id = room_id.to_owned();
        self.writer
            .submit(move |conn| rooms::close(conn, &room_id, closed_ms, &event))
            .await
    }

    async fn room(&self, room_id: &str) -> Result<Option<Room>> {
        let room_id = room_id.to_owned();
        self.readers
            .read(move |conn| rooms::get(conn, &room_id))
            .await
    }

    async fn open_rooms(&self) -> Result<Vec<Room>> {
        self.readers.read(rooms::open).await
    }

    async fn append_danmaku(
        &self,
        room_id: &str,
        items: Vec<DanmakuItem>,
        event: OutboxEvent,
    ) -> Result<()> {
        let room_id = room_id.to_owned();
        self.writer
            .submit(move |conn| danmaku::append(conn, &room_id, &items, &event))
            .await
    }

    async fn danmaku_after(
        &self,
        room_id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<DanmakuItem>> {
        let room_id = room_id.to_owned();
        self.readers
            .read(move |conn| danmaku::after(conn, &room_id, after_seq, limit))
            .await
    }

    async fn recent_danmaku(&self, room_id: &str, limit: usize) -> Result<Vec<DanmakuItem>> {
        let room_id = room_id.to_owned();
        self.readers
            .read(move |conn| danmaku::recent(conn, &room_id, limit))
            .await
    }

    async fn last_danmaku_seq(&self, room_id: &str) -> Result<u64> {
        // On the writer, not a reader: queued behind every earlier write.
        let room_id = room_id.to_owned();
        self.writer
            .submit(move |conn| Ok(Written::silent(danmaku::last_seq(conn, &room_id)?)))
            .await
    }

    async fn deleted_danmaku(&self, room_id: &str, first: u64, last: u64) -> Result<Vec<u64>> {
        let room_id = room_id.to_owned();
        self.readers
            .read(move |conn| danmaku::deleted_between(conn, &room_id, first, last))
            .await
    }

    async fn delete_danmaku(&self, room_id: &str, seq: u64, event: OutboxEvent) -> Result<bool> {
        let room_id = room_id.to_owned();
        self.writer
            .submit(move |conn| danmaku::delete(conn, &room_id, seq, &event))
            .await
    }

    async fn blocked_terms(&self, scope: &TermScope) -> Result<Vec<String>> {
        let scope = scope.clone();
        self.readers
            .read(move |conn| moderation::terms(conn, &scope))
            .await
    }

    async fn add_blocked_term(
        &self,
        scope: &TermScope,
        term: &str,
        event: OutboxEvent,
    ) -> Result<bool> {
        let (scope, term) = (scope.clone(), term.to_owned());
        self.writer
            .submit(move |conn| moderation::add_term(conn, &scope, &term, &event))
            .await
    }

    async fn remove_blocked_term(
        &self,
        scope: &TermScope,
        term: &str,
        event: OutboxEvent,
    ) -> Result<bool> {
        let (scope, term) = (scope.clone(), term.to_owned());
        self.writer
            .submit(move |conn| moderation::remove_term(conn, &scope, &term, &event))
            .await
    }

    async fn mutes(&self, room_id: &str, now_ms: u64) -> Result<Vec<Mute>> {
        let room_id = room_id.to_owned();
        self.readers
            .read(move |conn| moderation::mutes(conn, &room_id, now_ms))
            .await
    }

    async fn put_story_graph(
        &self,
        graph_id: &str,
        version: u32,
        spec: String,
        created_ms: u64,
    ) -> Result<StoryGraphPut> {
        let graph_id = graph_id.to_owned();
        self.writer
            .submit(move |conn| stories::put_graph(conn, &graph_id, version, &spec, created_ms))
            .await
    }

    async fn story_graph(&self, graph_id: &str, version: u32) -> Result<Option<String>> {
        let graph_id = graph_id.to_owned();
        self.readers
            .read(move |conn| stories::graph(conn, &graph_id, version))
            .await
    }

    async fn save_story_run(
        &self,
        room_id: &str,
        state: String,
        updated_ms: u64,
        events: Vec<OutboxEvent>,
    ) -> Result<()> {
        let room_id = room_id.to_owned();
        self.writer
            .submit(move |conn| stories::save_run(conn, &room_id, &state, updated_ms, &events))
            .await
    }

    async fn story_run(&self, room_id: &str) -> Result<Option<String>> {
        let room_id = room_id.to_owned();
        self.readers
            .read(move |conn| stories::run(conn, &room_id))
            .await
    }

    async fn delete_story_run(&self, room_id: &str) -> Result<bool> {
        let room_id = room_id.to_owned();
        self.writer
            .submit(move |conn| stories::delete_run(conn, &room_id))
            .await
    }

    async fn append_event(&self, event: OutboxEvent) -> Result<()> {
        self.writer
            .submit(move |conn| {
                outbox::insert(conn, &event)?;
                Ok(Written::announced(()))
            })
            .await
    }

    async fn set_mute(
        &self,
        room_id: &str,
        user_id: &str,
        until_ms: Option<u64>,
        event: OutboxEvent,
    ) -> Result<()> {
        let (room_id, user_id) = (room_id.to_owned(), user_id.to_owned());
        self.writer
            .submit(move |conn| moderation::set_mute(conn, &room_id, &user_id, until_ms, &event))
            .await
    }

    async fn send_gift(&self, gift: GiftRecord, event: OutboxEvent) -> Result<GiftOutcome> {
        self.writer
            .submit(move |conn| wallets::send_gift(conn, &gift, &event))
            .await
    }

    async fn top_up(&self, topup: TopUp, event: OutboxEvent) -> Result<TopUpOutcome> {
        self.writer
            .submit(move |conn| wallets::top_up(conn, &topup, &event))
            .await
    }

    async fn wallet_balance(&self, user_id: &str) -> Result<u64> {
        let user_id = user_id.to_owned();
        self.readers
            .read(move |conn| wallets::balance(conn, &user_id))
            .await
    }

    async fn room_gifts(&self, room_id: &str, since_ms: u64) -> Result<Vec<GiftRecord>> {
        let room_id = room_id.to_owned();
        self.readers
            .read(move |conn| wallets::room_gifts(conn, &room_id, since_ms))
            .await
    }

    async fn ledger(&self, account: &str) -> Result<Vec<LedgerLine>> {
        let account = account.to_owned();
        self.readers
            .read(move |conn| wallets::ledger(conn, &account))
            .await
    }

    async fn settle(&self, settlements: Vec<Settlement>) -> Result<usize> {
        self.writer
            .submit(move |conn| wallets::settle(conn, &settlements))
            .await
    }

    async fn earnings(&self, creator: &str) -> Result<Earnings> {
        let creator = creator.to_owned();
        self.readers
            .read(move |conn| wallets::earnings(conn, &creator))
            .await
    }

    async fn unsettled_gifts(&self, limit: usize) -> Result<Vec<GiftRecord>> {
        self.readers
            .read(move |conn| wallets::unsettled(conn, limit))
            .await
    }

    async fn room_goal(&self, room_id: &str) -> Result<Option<(u64, u64)>> {
        let room_id = room_id.to_owned();
        self.readers
            .read(move |conn| wallets::room_goal(conn, &room_id))
            .await
    }

    async fn set_room_goal(&self, room_id: &str, goal: Option<(u64, u64)>) -> Result<()> {
        let room_id = room_id.to_owned();
        self.writer
            .submit(move |conn| wallets::set_room_goal(conn, &room_id, goal))
            .await
    }

    async fn catalog_entries(&self) -> Result<Vec<CatalogEntry>> {
        self.readers.read(wallets::catalog_entries).await
    }

    async fn put_catalog_entry(&self, entry: CatalogEntry) -> Result<()> {
        self.writer
            .submit(move |conn| wallets::put_catalog_entry(conn, &entry))
            .await
    }

    async fn put_vod_asset(&self, asset: VodAsset) -> Result<()> {
        self.writer
            .submit(move |conn| vod::put_asset(conn, &asset))
            .await
    }

    async fn vod_asset(&self, vod_id: &str) -> Result<Option<VodAsset>> {
        let vod_id = vod_id.to_owned();
        self.readers
            .read(move |conn| vod::asset(conn, &vod_id))
            .await
    }

    async fn vod_assets(&self, room_id: Option<&str>, limit: usize) -> Result<Vec<VodAsset>> {
        let room_id = room_id.map(str::to_owned);
        self.readers
            .read(move |conn| vod::assets(conn, room_id.as_deref(), limit))
            .await
    }

    async fn put_vod_danmaku(&self, vod_id: &str, items: Vec<VodDanmaku>) -> Result<usize> {
        let vod_id = vod_id.to_owned();
        self.writer
            .submit(move |conn| vod::put_danmaku(conn, &vod_id, &items))
            .await
    }

    async fn vod_danmaku(&self, vod_id: &str, segment: u32) -> Result<Vec<VodDanmaku>> {
        let vod_id = vod_id.to_owned();
        self.readers
            .read(move |conn| vod::danmaku(conn, &vod_id, segment))
            .await
    }

    async fn outbox_pending(&self, limit: usize) -> Result<Vec<OutboxRow>> {
        self.readers
            .read(move |conn| outbox::pending(conn, limit))
            .await
    }

    async fn outbox_remove(&self, positions: Vec<u64>) -> Result<()> {
        if positions.is_empty() {
            return Ok(());
        }
        self.writer
            .submit(move |conn| Ok(Written::silent(outbox::remove(conn, &positions)?)))
            .await
    }

    async fn outbox_depth(&self) -> Result<u64> {
        self.readers.read(outbox::depth).await
    }

    fn outbox_notify(&self) -> Arc<Notify> {
        Arc::clone(&self.outbox_notify)
    }

    async fn flush(&self) -> Result<()> {
        self.writer.submit(|_| Ok(Written::silent(()))).await
    }
}
