//! # load-tests: `live-load`, the engine's load generator
//!
//! A product, not a script: it drives a *running* engine over loopback the
//! way an audience would, stops by itself, and prints what it saw.
//! Scenarios: `live-load sfu-fanout` ([`fanout`]: one WHIP publisher with a
//! real encoder, N webrtc-rs WHEP subscribers; peers in [`rtc`], shared
//! with the engine's tests) and `live-load danmaku`: N viewers watch a room
//! while M senders post danmaku at a fixed total rate; every viewer times
//! every item it receives against the send time the sender wrote into
//! `client_msg_id`.
//!
//! A danmaku run, in order ([`scenario::run`]):
//!
//! ```text
//!   health check -> room (created or reused) -> tokens
//!   -> sample engine (idle) -> ramp viewers -> connect senders
//!   -> sample engine (connected) -> send for --duration -> grace
//!   -> sample engine (end) -> close everything -> report
//! ```
//!
//! What it must never do: hold a lock per received message (every task
//! counts into its own [`tally::Tally`]; they are merged once at the end),
//! abort the run because some connections failed (they are counted), or run
//! unbounded (every count, rate and wait has an upper limit).
//!
//! Modules: [`cli`] (flags and their bounds), [`admin`] (HTTP: health, room,
//! tokens, /metrics), [`wire`] (WebSocket connect, `client_msg_id` format,
//! walking frames), [`viewer`] and [`sender`] (one task per socket),
//! [`tally`] (per-task counters and histograms), [`proc_stats`] (the
//! engine's CPU and RSS from /proc), [`report`] (human summary and JSON).

pub mod admin;
pub mod cli;
pub mod fanout;
pub mod gifts;
pub mod proc_stats;
pub mod report;
pub mod rtc;
pub mod scenario;
pub mod sender;
pub mod tally;
pub mod transcode;
pub mod viewer;
pub mod wire;
