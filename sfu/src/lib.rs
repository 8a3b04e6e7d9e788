//! # sfu: the media plane
//!
//! A selective forwarding unit built on [str0m](https://docs.rs/str0m), in
//! str0m's own style: the [`Router`] is sans-IO. It takes datagrams, the
//! passing of time and commands (publish, subscribe, remove), and returns
//! datagrams to send, the next time it needs to be woken, and events. It has
//! no socket, no thread and never reads the clock, so tests drive a
//! publisher, the router and subscribers through an in-memory network
//! faster than real time.
//!
//! ```text
//!             datagram in                      datagrams out
//!  UDP ──────────────────► Router ─────────────────────────► UDP
//!                           │ peer = str0m Rtc (ICE-lite, DTLS-SRTP)
//!  publisher Rtc ──MediaData──► forward to every subscriber of the stream
//!  subscriber Rtc ──KeyframeRequest──► publisher (throttled per track)
//! ```
//!
//! Nouns (see docs/architecture.md): a **stream** is what one publisher
//! sends into a room under a name; a **publisher** and its **subscribers**
//! are peers; a **track** is one media line (audio or video) of a peer.
//!
//! What it must never do: take a lock, send an actor message or allocate a
//! map entry per packet. Actors talk to it by commands through a
//! [`MediaPlane`], whose thread owns the router and the UDP socket.

mod error;
mod layer;
mod meter;
mod peer;
mod plane;
pub mod program;
mod rendition;
mod router;
mod transcode;

pub use error::SfuError;
pub use layer::{LayerChoice, Layers};
pub use peer::{PeerId, Role};
pub use plane::{Limits, MediaEvent, MediaPlane, MediaSession};
pub use program::{Cue, Program, Spoken, Voice};
pub use rendition::{Feed, RenditionLayer};
pub use router::{
    IngestFrame, KEYFRAME_REQUEST_INTERVAL, LocalFrame, Router, RouterConfig, SfuEvent, StreamInfo,
    StreamKey, TrackStats, Transmit,
};
pub use transcode::{Transcode, TranscodeEvent, TranscodeJob};

/// The process-wide crypto provider for DTLS and SRTP. Called once before
/// the first [`Router`] is built (idempotent).
pub fn install_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| str0m::crypto::from_feature_flags().install_process_default());
}
