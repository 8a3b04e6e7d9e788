//! # bus: where events leave the process
//!
//! Every change that other services care about (room created, danmaku batch,
//! moderation action, later gifts and recordings) is written to the storage
//! outbox in the same transaction as the change itself. The outbox relay in
//! `actors/` then hands each event to an [`EventBus`] and deletes the outbox
//! row only once the bus has acknowledged it. So the bus only needs one verb:
//! publish, durably, with a stable id.
//!
//! Two backends share the interface:
//!
//! - [`InProcessBus`]: the embedded default. Events are delivered to
//!   in-process subscribers (role workers running in the same binary).
//! - [`NatsBus`]: NATS JetStream. Streams are created at start-up when
//!   missing; every publish sets `Nats-Msg-Id` to the event id, so a republish
//!   after an outage is dropped by the stream's duplicate window, and
//!   consumers stay idempotent by the same id.
//!
//! Subjects are `live.<kind>.<room>`; see [`subject`].
//!
//! This crate knows nothing of storage or actors; it sits beside `storage/`
//! under `actors/`.

mod consume;
mod inprocess;
mod nats;
#[cfg(feature = "test-support")]
pub mod testing;

pub use consume::{Consumer, ConsumerSpec, Delivery};
pub use inprocess::{InProcessBus, Received};
pub use nats::{NatsBus, NatsOptions, STREAMS, StreamSpec};

use bytes::Bytes;

/// One event to publish. The payload is an encoded `protocol::v1::Envelope`.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub id: &'a str,
    pub subject: &'a str,
    pub payload: &'a Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The bus could not be reached or did not answer in time: retry later.
    #[error("event bus unavailable: {0}")]
    Unavailable(String),
    /// The bus refused this event (no stream for the subject, too large).
    /// Retrying the same event will not help.
    #[error("event bus rejected the event: {0}")]
    Rejected(String),
}

/// The publishing side of the event bus.
#[async_trait::async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Publishes events in order and reports, per event, whether the bus
    /// durably accepted it. Implementations pipeline the batch (send all, then
    /// await the acknowledgements) so one round trip covers many events.
    async fn publish_batch(&self, events: &[Outgoing<'_>]) -> Vec<Result<(), BusError>>;

    /// A consumer of the events `spec` selects (see [`consume`]).
    async fn consumer(&self, spec: ConsumerSpec) -> Result<Box<dyn Consumer>, BusError>;

    /// Whether consumers resume where they stopped after a restart (NATS)
    /// or only see what is published while they run (in-process).
    fn durable(&self) -> bool;

    /// A short name for logs and metrics.
    fn name(&self) -> &'static str;
}

/// The subject of an event: `live.<kind>.<room>`.
///
/// Room ids are validated at the gateway to `[A-Za-z0-9_-]`, which are valid
/// subject tokens; an empty room (a global event) becomes `_global`.
pub fn subject(kind: &str, room_id: &str) -> String {
    let room = if room_id.is_empty() {
        "_global"
    } else {
        room_id
    };
    format!("live.{kind}.{room}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn subject_names_kind_and_room() {
        assert_eq!(super::subject("danmaku", "r1"), "live.danmaku.r1");
        assert_eq!(super::subject("moderation", ""), "live.moderation._global");
    }
}
