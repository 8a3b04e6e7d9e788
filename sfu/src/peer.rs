//! One WebRTC peer of the router: a str0m `Rtc` and what the router knows
//! of it.

use std::time::Instant;

use str0m::Rtc;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid, Rid};

use crate::layer::{LayerChoice, Layers};

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
    /// Per publisher track and layer: when a keyframe was last requested.
    pub last_keyframe_request: Vec<(Mid, Option<Rid>, Instant)>,
    /// Publisher: requests held back by the throttle, sent when it allows
    /// unless a keyframe of that layer arrives first.
    pub pending_keyframe: Vec<(Mid, Option<Rid>, KeyframeRequestKind)>,
    /// Publisher: its simulcast layers, and the bytes last reported per
    /// layer (to measure their rates).
    pub layers: Layers,
    pub layer_bytes: Vec<(Rid, u64, Instant)>,
    /// Subscriber: the layer asked for, and the one being forwarded.
    pub layer: LayerChoice,
    pub current_rid: Option<Rid>,
    /// Subscriber of a single-layer stream: whether video has started,
    /// which it does on a keyframe (frames before it cannot be decoded).
    pub video_started: bool,
    /// Subscriber: str0m's latest estimate of what reaches it, bit/s.
    pub estimate_bps: Option<u64>,
}

impl Peer {
    pub fn track_of_kind(&self, kind: MediaKind) -> Option<Mid> {
        self.tracks
            .iter()
            .find(|(_, k)| *k == kind)
            .map(|(mid, _)| *mid)
    }

    /// Turns a layer's cumulative byte count into a rate for ranking.
    pub fn measure_layer(&mut self, rid: Rid, bytes: u64, at: Instant) {
        if let Some(entry) = self.layer_bytes.iter_mut().find(|(r, _, _)| *r == rid) {
            let seconds = at.saturating_duration_since(entry.2).as_secs_f64();
            if seconds > 0.0 {
                let rate = (bytes.saturating_sub(entry.1) as f64 / seconds) as u64;
                self.layers.measured(rid, rate);
            }
            *entry = (rid, bytes, at);
        } else {
            self.layer_bytes.push((rid, bytes, at));
        }
    }

    pub fn kind_of(&self, mid: Mid) -> Option<MediaKind> {
        self.tracks
            .iter()
            .find(|(m, _)| *m == mid)
            .map(|(_, kind)| *kind)
    }
}
