//! The rows the repositories hand out and take in. Plain data: no behaviour
//! beyond naming the partition each one lives in.

use bytes::Bytes;

/// How many danmaku sequence numbers share one partition. A bucket is
/// `seq / DANMAKU_BUCKET_SIZE`, so a busy room's history is spread over many
/// bounded partitions (ScyllaDB wants partitions well under ~100 MB) while a
/// catch-up read after a reconnect touches one, rarely two.
pub const DANMAKU_BUCKET_SIZE: u64 = 4096;

/// The bucket (second partition-key column) a danmaku sequence number lives in.
pub fn danmaku_bucket(seq: u64) -> u64 {
    seq / DANMAKU_BUCKET_SIZE
}

/// A room as the directory knows it. Closed rooms are kept so their ids are
/// never reused (an id names one stream's history forever).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    pub room_id: String,
    pub title: String,
    pub created_ms: u64,
    pub closed_ms: Option<u64>,
}

/// An event to publish, written in the same transaction as the domain change
/// it describes (transactional outbox), so the bus never hears of a change
/// that did not happen and never misses one that did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    /// Unique per event; the bus uses it to drop duplicates when the relay
    /// publishes again after a crash.
    pub id: String,
    pub subject: String,
    pub payload: Bytes,
}

/// An outbox event waiting to be relayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Strictly increasing in insert order, so the relay publishes in the
    /// order the changes were committed and removes what it published.
    pub position: u64,
    pub event: OutboxEvent,
}

/// Where a blocked term applies.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TermScope {
    Global,
    Room(String),
}

impl TermScope {
    /// The partition key: `""` for global, else the room id. A room with the
    /// empty id would share the global partition; room ids are never empty.
    pub fn partition_key(&self) -> &str {
        match self {
            TermScope::Global => "",
            TermScope::Room(room_id) => room_id,
        }
    }
}

/// A user who may not send in a room until `until_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mute {
    pub user_id: String,
    pub until_ms: u64,
}

/// One gift send, priced and split, as recorded. Immutable once written:
/// a correction is a new transfer, never an edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GiftRecord {
    /// The send's id (UUIDv7): the gift row's key, the ledger transfer id,
    /// the `gift.sent` event id and so the bus's `Nats-Msg-Id`.
    pub gift_id: String,
    pub room_id: String,
    pub sender: String,
    pub recipient: String,
    /// The catalog gift.
    pub gift: String,
    pub count: u32,
    pub unit_price: u64,
    /// `unit_price × count`, debited from the sender's wallet.
    pub total: u64,
    /// Credited to the recipient's earnings.
    pub creator_amount: u64,
    /// Credited to the platform's commission; `creator + platform = total`.
    pub platform_amount: u64,
    pub idempotency_key: String,
    /// What must match for a reused key to be the same request.
    pub fingerprint: String,
    pub created_ms: u64,
}

/// What a sender is told about a send: the record and their balance right
/// after it (the same answer again for a retry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GiftReceipt {
    pub gift: GiftRecord,
    pub balance_after: u64,
}

/// The result of [`crate::Store::send_gift`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GiftOutcome {
    /// Debited, recorded, announced: committed and durable.
    Sent(GiftReceipt),
    /// The key was used before with the same parameters: the first send's
    /// receipt, nothing written.
    Replayed(GiftReceipt),
    /// The key was used before with other parameters: nothing written.
    KeyConflict,
    /// The wallet holds less than the total: nothing written.
    InsufficientFunds { balance: u64 },
}

/// Coins added to a wallet by a payment (the admin API stands in for the
/// payment provider).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopUp {
    /// The transfer id (UUIDv7), also the event id.
    pub topup_id: String,
    pub user_id: String,
    pub amount: u64,
    pub idempotency_key: String,
    pub created_ms: u64,
}

/// The result of [`crate::Store::top_up`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopUpOutcome {
    Credited {
        balance: u64,
    },
    /// Same key, same user and amount: the first top-up's balance after it.
    Replayed {
        balance: u64,
    },
    KeyConflict,
    /// The balance would exceed what a wallet may hold.
    Overflow,
}

/// The result of [`crate::Store::put_story_graph`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoryGraphPut {
    Created,
    /// The same version with the same content was there already.
    Unchanged,
    /// That version exists with other content: versions are immutable.
    Conflict,
}

/// One line of the double-entry ledger: every transfer's lines sum to zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerLine {
    /// `wallet:<user>`, `earnings:<creator>`, `platform:commission` or
    /// `platform:payments` (the outside world's side of a top-up).
    pub account: String,
    pub transfer_id: String,
    /// Signed: negative leaves the account.
    pub amount: i64,
    pub created_ms: u64,
}

/// Billing's record that a gift's creator share is payable: at most one
/// per gift, whatever the bus redelivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub gift_id: String,
    pub creator: String,
    pub room_id: String,
    pub creator_amount: u64,
    pub platform_amount: u64,
    pub gift_ms: u64,
    pub settled_ms: u64,
}

/// What a creator has earned, as billing settled it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Earnings {
    pub gifts: u64,
    pub coins: u64,
}

/// A gift as the admin API last set it: added, changed, or retired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    pub gift_id: String,
    pub name: String,
    pub price: u64,
    pub tier: u8,
    pub combo: bool,
    /// Taken off the catalog: new sends are refused.
    pub retired: bool,
    pub updated_ms: u64,
}

/// Ledger account names, in one place.
pub mod account {
    pub fn wallet(user_id: &str) -> String {
        format!("wallet:{user_id}")
    }
    pub fn earnings(creator_id: &str) -> String {
        format!("earnings:{creator_id}")
    }
    pub const COMMISSION: &str = "platform:commission";
    pub const PAYMENTS: &str = "platform:payments";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_split_at_the_bucket_size() {
        assert_eq!(danmaku_bucket(0), 0);
        assert_eq!(danmaku_bucket(DANMAKU_BUCKET_SIZE - 1), 0);
        assert_eq!(danmaku_bucket(DANMAKU_BUCKET_SIZE), 1);
        assert_eq!(danmaku_bucket(4100), 1);
    }

    #[test]
    fn global_scope_is_the_empty_partition() {
        assert_eq!(TermScope::Global.partition_key(), "");
        assert_eq!(TermScope::Room("r1".into()).partition_key(), "r1");
    }
}

/// The length of one danmaku replay segment of a VOD (6 minutes, as on
/// Bilibili): a player fetches the segment its playhead is in.
pub const VOD_DANMAKU_SEGMENT_MS: u64 = 6 * 60 * 1000;

/// Where a VOD asset is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VodStatus {
    /// The stream is live: segments are being added.
    Recording,
    /// The recording finished: playlists closed, danmaku imported.
    Ready,
}

impl VodStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Recording => "recording",
            Self::Ready => "ready",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "recording" => Some(Self::Recording),
            "ready" => Some(Self::Ready),
            _ => None,
        }
    }
}

/// One rendition of a VOD asset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VodRendition {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub bitrate_bps: u32,
}

/// A recorded stream as the VOD service keeps it. Partition: `vod_id`
/// (the recording id); listed per room newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VodAsset {
    pub vod_id: String,
    pub room_id: String,
    pub stream: String,
    pub status: VodStatus,
    /// Wall-clock time of media time 0 (ms since the epoch).
    pub media_origin_ms: u64,
    pub duration_ms: u64,
    /// Segments of the top rendition so far.
    pub segments: u64,
    pub renditions: Vec<VodRendition>,
    /// The room's last danmaku seq before the recording: replay starts after.
    pub danmaku_seq_start: u64,
    pub publisher: String,
    pub finished_ms: Option<u64>,
    /// Why the recording stopped early; empty when the stream ended.
    pub error: String,
}

/// A danmaku placed on a VOD's timeline. Partition `(vod_id, segment)`,
/// clustered by `(offset_ms, seq)`.
#[derive(Debug, Clone, PartialEq)]
pub struct VodDanmaku {
    pub segment: u32,
    /// Milliseconds from media time 0.
    pub offset_ms: u64,
    pub item: protocol::v1::DanmakuItem,
}
