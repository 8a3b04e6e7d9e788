//! Bus events as the outbox stores them: a protobuf [`Envelope`] with a
//! UUIDv7 id that doubles as the JetStream `Nats-Msg-Id`.

use bytes::Bytes;
use prost::Message;
use protocol::v1::Envelope;
use storage::OutboxEvent;

/// The subject family of each kind (`live.<family>.<room>`), which also
/// chooses the JetStream stream.
fn family(kind: &str) -> &str {
    kind.split('.').next().unwrap_or(kind)
}

/// Wraps a payload into an outbox event of `kind` for `room_id`, with a
/// fresh UUIDv7 id.
pub fn outbox_event(
    kind: &str,
    room_id: &str,
    time_ms: u64,
    payload: &impl Message,
) -> OutboxEvent {
    outbox_event_with_id(
        uuid::Uuid::now_v7().to_string(),
        kind,
        room_id,
        time_ms,
        payload,
    )
}

/// The same with the id given: an event announcing a fact that has its own
/// id (a gift) carries that id, so consumers dedupe by the fact's id.
/// `scope` is the subject's last token: the room, or the user for wallets.
pub fn outbox_event_with_id(
    id: String,
    kind: &str,
    scope: &str,
    time_ms: u64,
    payload: &impl Message,
) -> OutboxEvent {
    let room_id = scope;
    let envelope = Envelope {
        id: id.clone(),
        kind: kind.to_owned(),
        room_id: room_id.to_owned(),
        time_ms,
        payload: Bytes::from(payload.encode_to_vec()),
    };
    OutboxEvent {
        id,
        subject: bus::subject(family(kind), room_id),
        payload: Bytes::from(envelope.encode_to_vec()),
    }
}

pub const ROOM_CREATED: &str = "room.created";
pub const ROOM_CLOSED: &str = "room.closed";
pub const DANMAKU_BATCH: &str = "danmaku.batch";
pub const MODERATION: &str = "moderation.action";
pub const STREAM_STARTED: &str = "stream.started";
pub const STREAM_ENDED: &str = "stream.ended";
pub const GIFT_SENT: &str = "gift.sent";
pub const WALLET_TOPPED_UP: &str = "wallet.topped_up";
pub const GIFT_GOAL_REACHED: &str = "gift_goal.reached";
pub const STORY_NODE_ENTERED: &str = "story.node_entered";
pub const VOTE_CLOSED: &str = "vote.closed";
pub const RECORDING_STARTED: &str = "recording.started";
pub const RECORDING_SEGMENT: &str = "recording.segment";
pub const RECORDING_FINISHED: &str = "recording.finished";

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::v1::RoomCreated;

    #[test]
    fn event_id_is_the_envelope_id_and_subject_follows_the_kind() {
        let event = outbox_event(
            ROOM_CREATED,
            "r1",
            5,
            &RoomCreated {
                room_id: "r1".into(),
                title: "t".into(),
            },
        );
        let envelope = Envelope::decode(event.payload.clone()).unwrap();
        assert_eq!(envelope.id, event.id);
        assert_eq!(envelope.kind, "room.created");
        assert_eq!(event.subject, "live.room.r1");
        let payload = RoomCreated::decode(envelope.payload).unwrap();
        assert_eq!(payload.title, "t");
    }
}
