//! The repository contract every backend implements. Each method names the
//! partition it touches; none needs a cross-partition transaction except the
//! outbox write, which a backend without transactions replaces with a logged
//! batch (see the crate docs).

use std::sync::Arc;

use async_trait::async_trait;
use protocol::v1::DanmakuItem;
use tokio::sync::Notify;

use crate::{
    CatalogEntry, Earnings, GiftOutcome, GiftRecord, LedgerLine, Mute, OutboxEvent, OutboxRow,
    Result, Room, Settlement, StoryGraphPut, TermScope, TopUp, TopUpOutcome, VodAsset, VodDanmaku,
};

/// The engine's durable state, partition by partition.
///
/// Every mutating call takes the [`OutboxEvent`] that announces it; the event
/// is stored atomically with the change, and only when the change happened
/// (a call that returns `false` wrote nothing, event included). A call that
/// returned `Ok` is durable.
///
/// A write whose future is dropped after it was submitted may still commit:
/// callers that need to know retry and rely on the `false` answers above.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // ---- rooms — partition: room_id ----

    /// Creates a room. `false` (and no event) if the id exists, open or
    /// closed: ids are never reused.
    async fn create_room(&self, room: Room, event: OutboxEvent) -> Result<bool>;
    /// Closes an open room. `false` (no event) if missing or already closed,
    /// so a retried close announces once.
    async fn close_room(&self, room_id: &str, closed_ms: u64, event: OutboxEvent) -> Result<bool>;
    async fn room(&self, room_id: &str) -> Result<Option<Room>>;
    /// Rooms not closed, oldest first (ties by id), for the node that
    /// restarts their actors.
    async fn open_rooms(&self) -> Result<Vec<Room>>;

    // ---- danmaku — partition: (room_id, bucket = seq / 4096), clustered by seq ----

    /// Stores one row per item, `count` as given. A duplicate `(room, seq)`
    /// fails this call (nothing of it is stored) and no other.
    async fn append_danmaku(
        &self,
        room_id: &str,
        items: Vec<DanmakuItem>,
        event: OutboxEvent,
    ) -> Result<()>;
    /// Items with `seq > after_seq`, not deleted, ascending, at most `limit`:
    /// what a reconnecting client missed. Walks buckets, never the table.
    async fn danmaku_after(
        &self,
        room_id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<DanmakuItem>>;
    /// The last `limit` items not deleted, ascending: a joining client's
    /// backlog.
    async fn recent_danmaku(&self, room_id: &str, limit: usize) -> Result<Vec<DanmakuItem>>;
    /// The highest seq ever stored for the room (deleted rows count, so a
    /// seq is never handed out twice), 0 if none. A barrier: it reflects every
    /// write submitted before the call, which is what a restarting room actor
    /// needs to resume numbering.
    async fn last_danmaku_seq(&self, room_id: &str) -> Result<u64>;
    /// The seqs in `first..=last` that were deleted: what a replay of
    /// copied danmaku (VOD) must leave out after the fact.
    async fn deleted_danmaku(&self, room_id: &str, first: u64, last: u64) -> Result<Vec<u64>>;
    /// Marks an item deleted (a tombstone: the seq stays taken). `false` (no
    /// event) if missing or already deleted.
    async fn delete_danmaku(&self, room_id: &str, seq: u64, event: OutboxEvent) -> Result<bool>;

    // ---- moderation — blocked terms partition: scope; mutes partition: room_id ----

    /// The scope's terms, sorted.
    async fn blocked_terms(&self, scope: &TermScope) -> Result<Vec<String>>;
    /// `false` (no event) if already present.
    async fn add_blocked_term(
        &self,
        scope: &TermScope,
        term: &str,
        event: OutboxEvent,
    ) -> Result<bool>;
    /// `false` (no event) if absent.
    async fn remove_blocked_term(
        &self,
        scope: &TermScope,
        term: &str,
        event: OutboxEvent,
    ) -> Result<bool>;
    /// Mutes still in force at `now_ms` (`until_ms > now_ms`), by user id.
    /// Time is the caller's: the store never reads the clock to decide.
    async fn mutes(&self, room_id: &str, now_ms: u64) -> Result<Vec<Mute>>;
    /// Mutes until `until_ms`, or unmutes with `None`. The event is always
    /// written: moderators see every action, even a redundant one.
    async fn set_mute(
        &self,
        room_id: &str,
        user_id: &str,
        until_ms: Option<u64>,
        event: OutboxEvent,
    ) -> Result<()>;

    // ---- wallets and gifts — partitions: wallet user_id; idempotency
    //      (owner, key); gifts room_id by (created_ms, gift_id); ledger
    //      account by (created_ms, transfer_id) ----

    /// Sends a gift in one transaction, or not at all: claims the sender's
    /// idempotency key, debits the wallet only if it holds the total,
    /// records the immutable gift row, writes the ledger lines (wallet
    /// −total, earnings +creator, commission +platform) and the event.
    /// A reused key answers from the first send ([`GiftOutcome::Replayed`])
    /// or refuses ([`GiftOutcome::KeyConflict`]); neither writes anything.
    async fn send_gift(&self, gift: GiftRecord, event: OutboxEvent) -> Result<GiftOutcome>;
    /// Credits a wallet (a payment), idempotent by key like a gift: the
    /// ledger moves the coins from `platform:payments`.
    async fn top_up(&self, topup: TopUp, event: OutboxEvent) -> Result<TopUpOutcome>;
    /// A wallet's balance; 0 for a user who never had coins.
    async fn wallet_balance(&self, user_id: &str) -> Result<u64>;
    /// Gifts sent in a room at or after `since_ms`, oldest first: what a
    /// restarting room rebuilds its leaderboard from.
    async fn room_gifts(&self, room_id: &str, since_ms: u64) -> Result<Vec<GiftRecord>>;
    /// An account's ledger lines, oldest first.
    async fn ledger(&self, account: &str) -> Result<Vec<LedgerLine>>;

    // ---- billing — partitions: settlement gift_id; earnings creator ----

    /// Records settlements and adds each to its creator's earnings, once
    /// per gift, in one transaction; a gift settled before is skipped.
    /// Returns how many were new.
    async fn settle(&self, settlements: Vec<Settlement>) -> Result<usize>;
    async fn earnings(&self, creator: &str) -> Result<Earnings>;
    /// Gifts with no settlement yet, oldest first: what billing sweeps up
    /// after missing events (an in-process bus that lagged, a restart).
    async fn unsettled_gifts(&self, limit: usize) -> Result<Vec<GiftRecord>>;

    /// A room's own gift goal `(target coins, window ms)`, if it has one.
    async fn room_goal(&self, room_id: &str) -> Result<Option<(u64, u64)>>;
    /// Sets (`Some`) or clears (`None`) a room's gift goal.
    async fn set_room_goal(&self, room_id: &str, goal: Option<(u64, u64)>) -> Result<()>;

    // ---- gift catalog — partition: gift_id ----

    /// Every change the admin API made to the catalog, by gift id.
    async fn catalog_entries(&self) -> Result<Vec<CatalogEntry>>;
    /// Records a gift added, changed or retired (the last write wins).
    async fn put_catalog_entry(&self, entry: CatalogEntry) -> Result<()>;

    // ---- VOD — assets: partition vod_id; replay: (vod_id, segment) by offset ----

    /// Creates a VOD asset or moves it forward: once `ready` it no longer
    /// changes, and while `recording` its segments and duration only grow
    /// (a stale or concurrent write cannot undo a newer one).
    async fn put_vod_asset(&self, asset: VodAsset) -> Result<()>;
    async fn vod_asset(&self, vod_id: &str) -> Result<Option<VodAsset>>;
    /// Newest first, of one room or of all.
    async fn vod_assets(&self, room_id: Option<&str>, limit: usize) -> Result<Vec<VodAsset>>;
    /// Places danmaku on a VOD's timeline; one already placed (same
    /// segment, offset and seq) is left alone, so an import can be redone.
    /// Returns how many were new.
    async fn put_vod_danmaku(&self, vod_id: &str, items: Vec<VodDanmaku>) -> Result<usize>;
    /// The danmaku of one replay segment, by offset.
    async fn vod_danmaku(&self, vod_id: &str, segment: u32) -> Result<Vec<VodDanmaku>>;

    // ---- stories — graphs: partition graph_id by version; runs: partition room_id ----

    /// Stores a graph version (its JSON as uploaded), once: a version is
    /// immutable, so other content under it is a conflict.
    async fn put_story_graph(
        &self,
        graph_id: &str,
        version: u32,
        spec: String,
        created_ms: u64,
    ) -> Result<StoryGraphPut>;
    async fn story_graph(&self, graph_id: &str, version: u32) -> Result<Option<String>>;
    /// Replaces a room's story run state and appends the events of the
    /// change, in one transaction.
    async fn save_story_run(
        &self,
        room_id: &str,
        state: String,
        updated_ms: u64,
        events: Vec<OutboxEvent>,
    ) -> Result<()>;
    async fn story_run(&self, room_id: &str) -> Result<Option<String>>;
    /// Forgets a room's run (the operator stopped it); whether there was one.
    async fn delete_story_run(&self, room_id: &str) -> Result<bool>;

    // ---- outbox ----

    /// Records an event whose fact lives elsewhere (a stream going live is
    /// the media plane's state, not a row here): the outbox row alone.
    async fn append_event(&self, event: OutboxEvent) -> Result<()>;
    /// Events not yet relayed, oldest first.
    async fn outbox_pending(&self, limit: usize) -> Result<Vec<OutboxRow>>;
    /// Forgets events the relay has published.
    async fn outbox_remove(&self, positions: Vec<u64>) -> Result<()>;
    /// How many events wait: the relay's lag, exported as a gauge.
    async fn outbox_depth(&self) -> Result<u64>;
    /// Notified after every commit that added outbox rows, so the relay wakes
    /// without polling.
    fn outbox_notify(&self) -> Arc<Notify>;
    /// Barrier: returns once every write submitted before the call is
    /// committed.
    async fn flush(&self) -> Result<()>;
}
