//! # actors: the control plane
//!
//! The ractor tree that owns who is in which room and what happens to each
//! danmaku. It is where the sans-IO rules of `interactive/` meet time,
//! storage and the bus.
//!
//! ```text
//! EngineSupervisor
//!  ├─ RoomSupervisor ── RoomActor(room)     validation, moderation, seq, persistence, batching, presence
//!  ├─ SessionSupervisor ─ UserActor(session) grants, rate limit, forwarding to the room
//!  ├─ StreamSupervisor ── StreamActor(stream) stream.started/ended events and frames, recordings
//!  └─ OutboxRelay                            storage outbox -> event bus, with backoff
//! ```
//!
//! What flows where:
//!
//! - A session's inbound frame is one message to its [`UserActor`](session::UserActor),
//!   then one message to the [`RoomActor`](room::RoomActor). Never one message
//!   per viewer: the room encodes a broadcast once into a [`RoomHub`]'s
//!   broadcast channel and every connection task reads the shared bytes.
//! - The room answers a sender directly through its [`SessionTx`] (errors,
//!   acks), never through an RPC the sender waits on.
//! - A danmaku is broadcast only after its storage transaction committed:
//!   the broadcast is the sender's acknowledgement, so acknowledged means
//!   durable.
//!
//! Restart policy (see [`supervision`]): a RoomActor that fails is restarted
//! one-for-one within a restart budget and rebuilds its state from storage.
//! The [`RoomHub`] outlives it, so connected sessions keep their sockets and
//! their broadcast receivers across the restart. Sessions are not restarted:
//! a failed session's socket is closed and the client reconnects with
//! `after_seq`.
//!
//! This crate never touches sockets or HTTP (that is `gateway/`) and holds no
//! domain rule of its own (those are in `interactive/`).

pub mod billing;
pub mod captions;
pub mod config;
pub mod engine;
pub mod events;
pub mod hub;
pub mod motion;
pub mod program;
pub mod recording;
pub mod relay;
pub mod room;
pub mod session;
pub mod stream;
pub mod subtitles;
pub mod supervision;
pub mod vod;

pub use captions::{Captions, CaptionsConfig};
pub use config::{ActorsConfig, DanmakuConfig};
pub use engine::{Actors, EngineSupervisor};
pub use hub::{Broadcast, RoomHub, SessionTx};
pub use motion::MotionLog;
pub use program::{Programs, ProgramsConfig};
pub use recording::{LiveRecording, LiveRecordings, RecordingConfig};
pub use room::{
    GiftAnswer, GiftRefusal, GiftSubmit, GiftsConfig, RoomError, RoomMsg, RoomSupervisorMsg,
    SharedCatalog, StoryCommand, StoryView,
};
pub use session::{Grants, SessionInfo, SessionSupervisorMsg, UserMsg};

/// Milliseconds since the Unix epoch: the wall-clock time stamped on
/// danmaku and events. Windows and limits use `Instant` instead.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
