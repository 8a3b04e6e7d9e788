//! One WebRTC peer of the router: a str0m `Rtc` and what the router knows
//! of it.

use std::time::Instant;

use str0m::Rtc;
use str0m::media::{MediaKind, Mid};

/// Identifies a peer for as long as the router lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u64);

impl std::fmt::Display for PeerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "peer-{}", self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Publisher,
    Subscriber,
}

pub(crate) struct Peer {
    pub id: PeerId,
    pub role: Role,
    pub stream: crate::StreamKey,
    pub rtc: Rtc,
    /// Media lines, in negotiation order.
    pub tracks: Vec<(Mid, MediaKind)>,
    /// When the router must next call `handle_input(Timeout)`.
    pub timeout: Instant,
    pub connected: bool,
    /// Per publisher track: when a keyframe was last requested upstream.
    pub last_keyframe_request: Vec<(Mid, Instant)>,
}

impl Peer {
    pub fn track_of_kind(&self, kind: MediaKind) -> Option<Mid> {
        self.tracks
            .iter()
            .find(|(_, k)| *k == kind)
            .map(|(mid, _)| *mid)
    }

    pub fn kind_of(&self, mid: Mid) -> Option<MediaKind> {
        self.tracks
            .iter()
            .find(|(m, _)| *m == mid)
            .map(|(_, kind)| *kind)
    }
}
