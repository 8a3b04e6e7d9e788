//! Knobs of the control plane, filled from the engine's configuration.

use std::time::Duration;

use interactive::BatchConfig;

use crate::captions::Captions;
use crate::program::Programs;
use crate::recording::RecordingConfig;
use crate::room::GiftsConfig;
use crate::supervision::RestartBudget;

#[derive(Debug, Clone)]
pub struct DanmakuConfig {
    /// Longest accepted text, in characters.
    pub max_chars: usize,
    /// At most this many danmaku per user in any `rate_window` (moderators
    /// are exempt).
    pub rate_limit: u32,
    pub rate_window: Duration,
    /// Broadcast batching and merging of identical texts.
    pub batch: BatchConfig,
    /// At most this many missed items are replayed to a reconnecting session.
    pub recovery_limit: usize,
    /// How many recent `(user, client_msg_id)` pairs a room remembers to
    /// drop resends.
    pub dedupe_capacity: usize,
}

impl Default for DanmakuConfig {
    fn default() -> Self {
        Self {
            max_chars: 100,
            rate_limit: 20,
            rate_window: Duration::from_secs(30),
            batch: BatchConfig::default(),
            recovery_limit: 1000,
            dedupe_capacity: 1024,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ActorsConfig {
    pub danmaku: DanmakuConfig,
    pub gifts: GiftsConfig,
    /// How often a room broadcasts its viewer count (only when it changed).
    pub presence_interval: Duration,
    /// Frames a session may fall behind the room before it is closed as a
    /// slow consumer.
    pub broadcast_capacity: usize,
    /// Direct frames (errors, acks) a session may have queued.
    pub session_queue: usize,
    /// Restarts allowed per room (and per engine child) inside a window.
    pub restart_budget: RestartBudget,
    /// Events the relay takes from the outbox per round trip.
    pub relay_batch: usize,
    /// Transcoding and recording of streams; none forwards media only.
    pub recording: Option<RecordingConfig>,
    /// Rooms' programs (story clips and voice); none: stories run without
    /// one (frames and events only).
    pub programs: Option<Programs>,
    /// Captions of streams (recognized, sent as text, translated); none:
    /// no captions beyond a program's own.
    pub captions: Option<Captions>,
}

impl Default for ActorsConfig {
    fn default() -> Self {
        Self {
            danmaku: DanmakuConfig::default(),
            gifts: GiftsConfig::default(),
            presence_interval: Duration::from_secs(5),
            broadcast_capacity: 1024,
            session_queue: 256,
            restart_budget: RestartBudget::default(),
            relay_batch: 256,
            recording: None,
            programs: None,
            captions: None,
        }
    }
}
