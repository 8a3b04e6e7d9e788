//! # storage: the engine's durable state, shaped for ScyllaDB partitions
//!
//! This crate owns every byte the engine must not lose: the room directory,
//! each room's danmaku history, moderation state (blocked terms, mutes) and
//! the **outbox** of events waiting to reach the bus. It exposes them as one
//! repository trait, [`Store`], whose every method names the partition it
//! touches.
//!
//! ## Where it sits
//!
//! ```text
//!   gateway ─▶ actors (room, moderation) ─▶ storage::Store ─▶ SQLite file | (ScyllaDB)
//!                                                  │
//!                          outbox relay ◀─notify───┘──▶ bus (NATS)
//! ```
//!
//! It depends on `protocol` alone. It **never knows about actors**: no actor
//! handles, no room logic, no clocks that decide anything (`now_ms` is a
//! parameter). Invariants that need a single writer per room (seq numbering)
//! belong to the room actor; the store only refuses a duplicate `(room, seq)`
//! and answers [`Store::last_danmaku_seq`] as a barrier when an actor restarts.
//!
//! ## Partitions
//!
//! | data          | partition key                 | clustering |
//! |---------------|-------------------------------|------------|
//! | rooms         | `room_id`                     | —          |
//! | danmaku       | `(room_id, seq / 4096)`       | `seq`      |
//! | blocked terms | scope: `""` global, else room | `term`     |
//! | mutes         | `room_id`                     | `user_id`  |
//! | wallets       | `user_id`                     | —          |
//! | idempotency   | `(owner, key)`                | —          |
//! | gifts         | `room_id`                     | `created_ms, gift_id` |
//! | ledger        | `account`                     | `created_ms, transfer_id` |
//!
//! Every hot read is one partition, or a short walk of danmaku buckets
//! ([`DANMAKU_BUCKET_SIZE`]). The embedded tables lead their primary keys with
//! the same columns, so the embedded store behaves like the one we will run.
//!
//! ## Outbox
//!
//! Every mutation takes an [`OutboxEvent`] and stores it atomically with the
//! change, only when the change happened. A relay drains
//! [`Store::outbox_pending`], publishes, and [`Store::outbox_remove`]s; it
//! sleeps on [`Store::outbox_notify`] instead of polling.
//!
//! ## Backends
//!
//! [`EmbeddedStore`] (the only one today): SQLite in WAL mode, one writer
//! thread doing group commit (one fsync shared by every write queued at the
//! time; acknowledged means durable), a pool of read connections beside it,
//! versioned migrations. `tests/conformance.rs` is written against
//! `&dyn Store` so the future Scylla backend runs the same suite.
//!
//! ## ScyllaDB mapping
//!
//! The Scylla backend must keep these keys (the embedded schema in
//! `embedded/migrations.rs` mirrors them column for column):
//!
//! ```cql
//! -- create: INSERT ... IF NOT EXISTS; close: UPDATE ... IF closed_ms = null.
//! CREATE TABLE rooms (
//!     room_id    text PRIMARY KEY,
//!     title      text,
//!     created_ms bigint,
//!     closed_ms  bigint
//! );
//! -- What SQLite's partial index `rooms_open` stands in for: one small
//! -- partition of live rooms, updated with every create and close.
//! CREATE TABLE open_rooms (
//!     shard      int,                 -- always 0
//!     created_ms bigint,
//!     room_id    text,
//!     title      text,
//!     PRIMARY KEY ((shard), created_ms, room_id)
//! );
//! CREATE TABLE danmaku (
//!     room_id text,
//!     bucket  bigint,                 -- seq / 4096
//!     seq     bigint,
//!     deleted boolean,                -- our tombstone; the row stays
//!     item    blob,                   -- protobuf DanmakuItem
//!     PRIMARY KEY ((room_id, bucket), seq)
//! ) WITH CLUSTERING ORDER BY (seq ASC);
//! -- Highest seq ever appended. Only the room's actor appends, so
//! -- raising it needs no LWT.
//! CREATE TABLE danmaku_head (
//!     room_id  text PRIMARY KEY,
//!     last_seq bigint
//! );
//! CREATE TABLE blocked_terms (
//!     scope text,                     -- '' = global, else room_id
//!     term  text,
//!     PRIMARY KEY ((scope), term)
//! );
//! -- Written USING TTL (until_ms - now) so expired mutes vanish.
//! CREATE TABLE mutes (
//!     room_id  text,
//!     user_id  text,
//!     until_ms bigint,
//!     PRIMARY KEY ((room_id), user_id)
//! );
//! -- Written in one LOGGED BATCH with the change it announces. An LWT
//! -- cannot join a multi-partition batch: there the backend applies the
//! -- condition first and then the batch, the one gap the embedded store
//! -- does not have.
//! CREATE TABLE outbox (
//!     shard      int,                 -- hash of the domain partition key mod N
//!     position   timeuuid,
//!     id         text,
//!     subject    text,
//!     payload    blob,
//!     created_ms bigint,
//!     PRIMARY KEY ((shard), position)
//! );
//! -- Gifts (see docs/architecture.md, "Gifts on ScyllaDB", for the steps
//! -- and how a crash between them is recovered).
//! CREATE TABLE wallets (             -- one partition per user: a
//!     user_id     text,               -- conditional batch on it is atomic
//!     transfer_id text,               -- one row per debit or credit
//!     amount      bigint,
//!     balance     bigint STATIC,      -- ... SET balance = ? IF balance = ?
//!     updated_ms  bigint STATIC,
//!     PRIMARY KEY ((user_id), transfer_id)
//! );
//! CREATE TABLE idempotency (          -- INSERT ... IF NOT EXISTS USING TTL 172800
//!     owner       text,
//!     key         text,
//!     fingerprint text,
//!     result_id   text,
//!     state       text,               -- 'claimed' then 'done'
//!     created_ms  bigint,
//!     PRIMARY KEY ((owner, key))
//! );
//! CREATE TABLE gifts (                -- INSERT ... IF NOT EXISTS (by gift_id)
//!     room_id text, created_ms bigint, gift_id text, sender text,
//!     recipient text, gift text, count int, unit_price bigint,
//!     total bigint, creator_amount bigint, platform_amount bigint,
//!     idempotency_key text, fingerprint text, balance_after bigint,
//!     PRIMARY KEY ((room_id), created_ms, gift_id)
//! );
//! CREATE TABLE ledger (
//!     account text, created_ms bigint, transfer_id text, amount bigint,
//!     PRIMARY KEY ((account), created_ms, transfer_id)
//! );
//! -- VOD: assets by id, listed per room, danmaku replay per 6-minute
//! -- segment (a player reads one partition per segment it plays).
//! CREATE TABLE vod_assets (
//!     vod_id text PRIMARY KEY, room_id text, stream text, status text,
//!     media_origin_ms bigint, duration_ms bigint, segments bigint,
//!     renditions list<frozen<rendition>>, danmaku_seq_start bigint,
//!     publisher text, finished_ms bigint, error text
//! );
//! CREATE TABLE vod_by_room (          -- written with vod_assets in a logged batch
//!     room_id text, media_origin_ms bigint, vod_id text,
//!     PRIMARY KEY ((room_id), media_origin_ms, vod_id)
//! ) WITH CLUSTERING ORDER BY (media_origin_ms DESC, vod_id ASC);
//! CREATE TABLE vod_danmaku (          -- INSERT ... IF NOT EXISTS is not needed:
//!     vod_id text, segment int,       -- a re-import writes the same row
//!     offset_ms bigint, seq bigint, item blob,
//!     PRIMARY KEY ((vod_id, segment), offset_ms, seq)
//! );
//! ```

pub mod audit;
mod embedded;
mod error;
mod model;
mod store;

pub use embedded::{DB_FILE, EmbeddedOptions, EmbeddedStore};
pub use error::{Result, StoreError};
pub use model::{
    CatalogEntry, DANMAKU_BUCKET_SIZE, Earnings, GiftOutcome, GiftReceipt, GiftRecord, LedgerLine,
    Mute, OutboxEvent, OutboxRow, Room, Settlement, StoryGraphPut, TermScope, TopUp, TopUpOutcome,
    VOD_DANMAKU_SEGMENT_MS, VodAsset, VodDanmaku, VodRendition, VodStatus, account, danmaku_bucket,
};
pub use store::Store;
