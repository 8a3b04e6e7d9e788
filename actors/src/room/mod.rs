//! Rooms: one [`RoomActor`] per live room under the [`RoomSupervisor`].

mod actor;
mod gifts;
mod story;
mod supervisor;

pub use actor::{RoomActor, RoomArgs};
pub use gifts::{
    GiftAnswer, GiftRefusal, GiftStored, GiftSubmit, GiftsConfig, RoomGifts, SharedCatalog,
};
pub use story::{RoomStory, StoryCommand, StoryView};
pub use supervisor::{RoomSupervisor, RoomSupervisorArgs, RoomSupervisorMsg};

use protocol::v1::{CastVote, SendDanmaku};
use ractor::RpcReplyPort;

use crate::hub::SessionTx;

/// Why a room operation failed; the gateway maps each to one HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    #[error("room not found")]
    NotFound,
    #[error("room already exists")]
    AlreadyExists,
    #[error("{0} not found")]
    ItemNotFound(&'static str),
    /// The room is restarting or overloaded: retry shortly.
    #[error("room unavailable: {0}")]
    Unavailable(String),
    #[error("storage error: {0}")]
    Storage(String),
    #[error("no story is running in this room")]
    NoStory,
    /// An operator command the run refused, and why.
    #[error("{0}")]
    StoryRefused(String),
}

impl From<storage::StoreError> for RoomError {
    fn from(error: storage::StoreError) -> Self {
        Self::Storage(error.to_string())
    }
}

/// A danmaku on its way from a session to its room.
#[derive(Debug)]
pub struct Submit {
    pub user_id: String,
    pub name: String,
    pub input: SendDanmaku,
    pub sender: SessionTx,
}

/// A vote on its way from a session to its room.
#[derive(Debug)]
pub struct VoteSubmit {
    pub user_id: String,
    pub input: CastVote,
    pub sender: SessionTx,
}

pub enum RoomMsg {
    Danmaku(Box<Submit>),
    Vote(Box<VoteSubmit>),
    /// An operator's command to the room's story run; the run as it is
    /// after it (`None`: no run, after `Stop`).
    Story(
        StoryCommand,
        RpcReplyPort<Result<Option<StoryView>, RoomError>>,
    ),
    /// The story run's deadline, or its next write, is due.
    StoryTick,
    /// The storage write started by the room finished.
    Committed(Result<(), String>),
    /// The batcher's deadline passed.
    FlushTick,
    /// Time to broadcast the viewer count if it changed.
    PresenceTick,
    DeleteDanmaku {
        seq: u64,
        by: String,
        reply: RpcReplyPort<Result<(), RoomError>>,
    },
    SetRoomTerm {
        term: String,
        add: bool,
        by: String,
        reply: RpcReplyPort<Result<bool, RoomError>>,
    },
    GlobalTerms(std::sync::Arc<Vec<String>>),
    RoomTerms(RpcReplyPort<Vec<String>>),
    /// `until_ms: None` lifts the mute.
    Mute {
        user_id: String,
        until_ms: Option<u64>,
        by: String,
        reply: RpcReplyPort<Result<(), RoomError>>,
    },
    Gift(Box<GiftSubmit>),
    /// The store answered a gift send started by the room.
    GiftStored(Box<GiftStored>),
    /// Held gift broadcasts or a throttled leaderboard frame are due.
    PublishTick,
    /// The room's top gifters, highest first.
    Leaderboard(RpcReplyPort<Vec<(String, u64)>>),
    /// Sets the room's own gift goal `(target coins, window ms)`, or
    /// removes it; persisted.
    SetGoal {
        goal: Option<(u64, u64)>,
        reply: RpcReplyPort<Result<(), RoomError>>,
    },
    /// Replies once every accepted danmaku is committed and broadcast and
    /// every gift in flight is answered.
    Drain(RpcReplyPort<()>),
    /// The room was deleted: drain, tell every session, stop.
    Close(RpcReplyPort<()>),
    /// Fault injection for tests of the restart policy: the actor panics.
    Crash,
}

impl std::fmt::Debug for RoomMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Self::Danmaku(_) => "Danmaku",
            Self::Vote(_) => "Vote",
            Self::Story(..) => "Story",
            Self::StoryTick => "StoryTick",
            Self::Committed(_) => "Committed",
            Self::FlushTick => "FlushTick",
            Self::PresenceTick => "PresenceTick",
            Self::DeleteDanmaku { .. } => "DeleteDanmaku",
            Self::SetRoomTerm { .. } => "SetRoomTerm",
            Self::GlobalTerms(_) => "GlobalTerms",
            Self::RoomTerms(_) => "RoomTerms",
            Self::Mute { .. } => "Mute",
            Self::Gift(_) => "Gift",
            Self::GiftStored(_) => "GiftStored",
            Self::PublishTick => "PublishTick",
            Self::Leaderboard(_) => "Leaderboard",
            Self::SetGoal { .. } => "SetGoal",
            Self::Drain(_) => "Drain",
            Self::Close(_) => "Close",
            Self::Crash => "Crash",
        };
        f.write_str(name)
    }
}
