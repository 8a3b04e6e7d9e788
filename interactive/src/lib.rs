//! # interactive: the room's rules, without the room
//!
//! The decisions a live room makes about viewer interaction, as plain data
//! structures that take input and return decisions:
//!
//! | module         | owns                                                        |
//! |----------------|-------------------------------------------------------------|
//! | [`danmaku`]    | what a `SendDanmaku` may contain ([`validate`])             |
//! | [`moderation`] | blocked terms ([`TermFilter`], [`normalize`]), [`Mutes`]    |
//! | [`rate`]       | "N messages per window" per sender ([`SlidingWindowLimiter`]) |
//! | [`dedupe`]     | resends answered with their first seq ([`RecentIds`])       |
//! | [`batch`]      | what to broadcast, when: batches and merges ([`Batcher`])   |
//! | [`gifts`]      | catalog, pricing and split ([`gifts::charge`]), combos, leaderboard, goals |
//! | [`avatar`]     | VMC avatar motion (OSC) folded into poses, sampled at 60 Hz at most |
//! | [`story`]      | story graphs (validation), the branching runtime: votes, gift goals, keywords, timers |
//!
//! ## How a danmaku flows through it
//!
//! ```text
//!  SendDanmaku ─► SlidingWindowLimiter          (in the user's session actor)
//!                      │ allowed
//!                      ▼                          (in the room actor, in this order)
//!                  validate ──► Mutes ──► RecentIds::get ──seen──► ack with the old seq
//!                                               │ new
//!                                               ▼
//!                                          TermFilter ──blocked──► error to the sender only
//!                                               │ ok
//!   (the room actor assigns seq, stores, RecentIds::insert)
//!                      │ committed
//!                      ▼
//!   Batcher::push / poll(at next_deadline) ──► Flush { items, merged } ──► broadcast + acks
//! ```
//!
//! ## What it must never do
//!
//! - **No I/O, no clock, no threads.** Nothing here touches a socket, a file,
//!   a lock, an async runtime, or `Instant::now()`. Time is an argument
//!   (`now: Instant` for durations, `now_ms: u64` for wall-clock deadlines
//!   that are persisted), so tests run a minute of chat in a microsecond and
//!   replay exactly.
//! - **No panics on input.** Everything a client or moderator sends is
//!   checked and turned into a value ([`InvalidDanmaku`], `Err(retry_after)`),
//!   never unwrapped.
//! - **No sequencing or storage.** Assigning seqs and persisting belong to the
//!   room actor; this crate only says yes, no, or "not yet".
//!
//! ## Where it sits
//!
//! Below `actors/` (each room actor owns one of each structure, by `&mut self`
//! and without locks), above `protocol/` (whose generated types it reads and
//! returns). It depends on nothing else in the workspace.
//!
//! The invariants each structure promises are stated in its module and checked
//! by proptest beside the code.

pub mod avatar;
pub mod batch;
pub mod danmaku;
pub mod dedupe;
pub mod gifts;
pub mod moderation;
pub mod rate;
pub mod story;

pub use batch::{BatchConfig, Batcher, Flush, Merged};
pub use danmaku::{DanmakuLimits, InvalidDanmaku, ValidDanmaku, validate};
pub use dedupe::RecentIds;
pub use moderation::{Mutes, TermFilter, normalize};
pub use rate::SlidingWindowLimiter;
