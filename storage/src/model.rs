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
