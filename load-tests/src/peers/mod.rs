//! The servers a comparison runs, started and stopped by the runner
//! itself: the engine and its peers (Janus, nats-server, the ffmpeg CLI),
//! each pinned to the same CPUs and, for WebRTC, behind the same kind of
//! network path ([`netns`]).

pub mod engine;
pub mod janus;
pub mod nats_ws;
pub mod netns;
pub mod process;
pub mod profile;
pub mod rtp_feed;
