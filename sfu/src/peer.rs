//! One WebRTC peer of the router: a str0m `Rtc` and what the router knows
//! of it.

use std::time::Instant;

use str0m::Rtc;
use str0m::format::Codec;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid, Pt, Rid};

use crate::layer::{LayerChoice, Layers};
use crate::rendition::{AutoFeed, FeedState};

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
    /// Subscriber of a single-layer stream: the source or rendition it
    /// receives (none until its first keyframe: frames before it cannot be
    /// decoded) and the RTP time of the last video frame it got.
    pub feed: FeedState,
    /// Subscriber asking for `auto`: the feed its estimate earned.
    pub auto: AutoFeed,
    /// Subscriber: the payload type its H.264 renditions go out with
    /// (packetization mode 1), when it negotiated H.264.
    pub rendition_pt: Option<Pt>,
    /// Subscriber: the payload type of Opus on its audio line (what a
    /// program's audio goes out with).
    pub opus_pt: Option<Pt>,
    /// Subscriber: str0m's latest estimate of what reaches it, bit/s.
    pub estimate_bps: Option<u64>,
    /// Publisher: the video bytes last reported, and the rate they give.
    pub source_bytes: Option<(u64, Instant)>,
    pub source_bps: Option<u64>,
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

    /// Turns the publisher's cumulative video byte count into a rate.
    pub fn measure_source(&mut self, bytes: u64, at: Instant) {
        if let Some((last_bytes, last_at)) = self.source_bytes {
            let seconds = at.saturating_duration_since(last_at).as_secs_f64();
            if seconds > 0.0 {
                self.source_bps =
                    Some((bytes.saturating_sub(last_bytes) as f64 * 8.0 / seconds) as u64);
            }
        }
        self.source_bytes = Some((bytes, at));
    }

    /// The payload type for H.264 (packetization mode 1) on the video
    /// line, if the peer negotiated it.
    pub fn h264_pt(&mut self) -> Option<Pt> {
        let mid = self.track_of_kind(MediaKind::Video)?;
        let writer = self.rtc.writer(mid)?;
        writer
            .payload_params()
            .find(|params| {
                let spec = params.spec();
                spec.codec == Codec::H264 && spec.format.packetization_mode == Some(1)
            })
            .map(|params| params.pt())
    }

    /// The payload type of Opus on the audio line, if negotiated.
    pub fn opus_pt(&mut self) -> Option<Pt> {
        let mid = self.track_of_kind(MediaKind::Audio)?;
        let writer = self.rtc.writer(mid)?;
        writer
            .payload_params()
            .find(|params| params.spec().codec == Codec::Opus)
            .map(|params| params.pt())
    }

    pub fn kind_of(&self, mid: Mid) -> Option<MediaKind> {
        self.tracks
            .iter()
            .find(|(m, _)| *m == mid)
            .map(|(_, kind)| *kind)
    }
}
