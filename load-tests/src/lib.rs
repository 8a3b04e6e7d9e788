//! # load-tests: the engine's load generator and benchmark runner
//!
//! A product, not a script: it drives an engine the way an audience would,
//! stops by itself, and prints what it saw. Given `--url`, a scenario
//! drives that engine; without it, the runner starts a fresh engine and
//! the peer a user would pick instead ([`peers`]: Janus, nats-server, the
//! ffmpeg CLI), runs the same load against both, one after the other on
//! the same pinned CPUs, and puts the figures side by side ([`suite`],
//! [`compare`]). `load-tests all` does that for every scenario and writes
//! one report (and the generated part of docs/benchmarks.md).
//!
//! Scenarios: `sfu-fanout` and `join` ([`fanout`]: one source, N webrtc-rs
//! subscribers; peers in [`rtc`], shared with the engine's tests),
//! `danmaku` ([`scenario`]: N viewers watch a room while M senders post at
//! a fixed total rate; every viewer times every item against the send time
//! the sender wrote into `client_msg_id`), `gifts` ([`gifts`]: a retry
//! storm, then the books), `transcode` ([`transcode`]: the ladder against
//! the ffmpeg CLI), `captions` ([`captions`]: spoken sentences to caption
//! frames, in the spoken language and translated).
//!
//! A danmaku run, in order ([`scenario::run`]; from "sample" on it is
//! [`scenario::fan_out`], which runs nats-server's the same way):
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
//! walking frames), [`session`] (one task per socket, whatever the server;
//! [`room`] is the engine's side of it), [`viewer`] and [`sender`] (what
//! they count and send),
//! [`tally`] (per-task counters and histograms), [`proc_stats`] (a
//! server's CPU and RSS from /proc), [`report`] (human summary and JSON),
//! [`progress`] (stderr: a bar on a terminal, lines otherwise).

pub mod admin;
pub mod captions;
pub mod cli;
pub mod compare;
pub mod fanout;
pub mod gift_socket;
pub mod gifts;
pub mod peers;
pub mod proc_stats;
pub mod progress;
pub mod report;
pub mod room;
pub mod rtc;
pub mod scenario;
pub mod sender;
pub mod session;
pub mod suite;
pub mod tally;
pub mod transcode;
pub mod viewer;
pub mod wire;
