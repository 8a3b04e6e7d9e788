//! The part of a room that outlives its actor: the broadcast channel every
//! session reads, the viewer count, and a handle on the current RoomActor.
//!
//! A RoomActor restart swaps the actor handle and keeps everything else, so
//! sessions never notice beyond a short pause.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use protocol::v1::server_frame::Frame;
use ractor::ActorRef;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::room::RoomMsg;

/// One frame for every session of a room, encoded once per encoding.
#[derive(Debug)]
pub struct Broadcast {
    /// The danmaku seqs the frame carries, for sessions that replayed
    /// history and must skip what they already sent.
    pub seqs: Option<(u64, u64)>,
    pub frame: Frame,
    pub json: Bytes,
    pub protobuf: Bytes,
}

impl Broadcast {
    pub fn new(frame: Frame, seqs: Option<(u64, u64)>) -> Self {
        let json = protocol::encode_server_json(&frame);
        let protobuf = protocol::encode_server_protobuf(&frame);
        Self {
            seqs,
            frame,
            json,
            protobuf,
        }
    }

    pub fn bytes(&self, encoding: protocol::Encoding) -> &Bytes {
        match encoding {
            protocol::Encoding::Json => &self.json,
            protocol::Encoding::Protobuf => &self.protobuf,
        }
    }
}

/// Why a room's sessions are being closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubClosed {
    /// The room was deleted.
    RoomClosed,
    /// The room failed past its restart budget, or the engine is stopping:
    /// reconnect later.
    Unavailable,
}

pub struct RoomHub {
    room_id: String,
    frames: broadcast::Sender<Arc<Broadcast>>,
    actor: RwLock<Option<ActorRef<RoomMsg>>>,
    viewers: AtomicU64,
    last_broadcast_seq: AtomicU64,
    primed: AtomicBool,
    closed: CancellationToken,
    close_reason: RwLock<Option<HubClosed>>,
    /// Sessions per caption language chosen: what translation runs for.
    caption_watchers: Mutex<HashMap<String, usize>>,
}

impl RoomHub {
    pub fn new(room_id: String, capacity: usize) -> Arc<Self> {
        let (frames, _) = broadcast::channel(capacity.max(1));
        Arc::new(Self {
            room_id,
            frames,
            actor: RwLock::new(None),
            viewers: AtomicU64::new(0),
            last_broadcast_seq: AtomicU64::new(0),
            primed: AtomicBool::new(false),
            closed: CancellationToken::new(),
            close_reason: RwLock::new(None),
            caption_watchers: Mutex::default(),
        })
    }

    /// Counts a session watching captions in `lang` until the returned
    /// guard drops.
    pub fn watch_captions(self: &Arc<Self>, lang: &str) -> CaptionWatch {
        *self.watchers().entry(lang.to_owned()).or_default() += 1;
        CaptionWatch {
            hub: self.clone(),
            lang: lang.to_owned(),
        }
    }

    /// The caption languages someone in the room watches.
    pub fn caption_languages(&self) -> Vec<String> {
        self.watchers().keys().cloned().collect()
    }

    fn watchers(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.caption_watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub fn room_id(&self) -> &str {
        &self.room_id
    }

    /// Subscribes to the room's frames. Subscribe before reading history, so
    /// nothing committed in between is missed.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Broadcast>> {
        self.frames.subscribe()
    }

    pub fn publish(&self, broadcast: Broadcast) {
        if let Some((_, last)) = broadcast.seqs {
            self.last_broadcast_seq.fetch_max(last, Ordering::AcqRel);
        }
        // No receiver is fine: nobody is watching.
        let _ = self.frames.send(Arc::new(broadcast));
    }

    /// The highest danmaku seq broadcast so far.
    pub fn last_broadcast_seq(&self) -> u64 {
        self.last_broadcast_seq.load(Ordering::Acquire)
    }

    /// Called by a RoomActor at start: returns `None` the first time (a fresh
    /// hub: nothing to catch up), else the seq broadcast before a restart.
    pub fn prime(&self, last_committed: u64) -> Option<u64> {
        if self.primed.swap(true, Ordering::AcqRel) {
            Some(self.last_broadcast_seq())
        } else {
            self.last_broadcast_seq
                .store(last_committed, Ordering::Release);
            None
        }
    }

    pub fn actor(&self) -> Option<ActorRef<RoomMsg>> {
        self.actor.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_actor(&self, actor: Option<ActorRef<RoomMsg>>) {
        *self.actor.write().unwrap_or_else(|e| e.into_inner()) = actor;
    }

    pub fn viewers(&self) -> u64 {
        self.viewers.load(Ordering::Relaxed)
    }

    /// Counts a viewer until the returned guard drops.
    pub fn join(self: &Arc<Self>) -> ViewerGuard {
        self.viewers.fetch_add(1, Ordering::Relaxed);
        ViewerGuard { hub: self.clone() }
    }

    /// Ends every session of the room with `reason`.
    pub fn close(&self, reason: HubClosed) {
        self.close_reason
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(reason);
        self.set_actor(None);
        self.closed.cancel();
    }

    /// Resolves when the hub is closed, with the reason.
    pub async fn closed(&self) -> HubClosed {
        self.closed.cancelled().await;
        self.close_reason().unwrap_or(HubClosed::Unavailable)
    }

    pub fn close_reason(&self) -> Option<HubClosed> {
        *self.close_reason.read().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct ViewerGuard {
    hub: Arc<RoomHub>,
}

impl Drop for ViewerGuard {
    fn drop(&mut self) {
        self.hub.viewers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A session watching captions in a language (see
/// [`RoomHub::watch_captions`]).
pub struct CaptionWatch {
    hub: Arc<RoomHub>,
    lang: String,
}

impl CaptionWatch {
    pub fn lang(&self) -> &str {
        &self.lang
    }
}

impl Drop for CaptionWatch {
    fn drop(&mut self) {
        let mut watchers = self.hub.watchers();
        if let Some(count) = watchers.get_mut(&self.lang) {
            *count -= 1;
            if *count == 0 {
                watchers.remove(&self.lang);
            }
        }
    }
}

/// The direct line to one session: errors and acks for that session only.
///
/// Bounded; a session whose queue is full is flagged slow and its
/// connection task closes it (1013), instead of memory growing.
#[derive(Clone, Debug)]
pub struct SessionTx {
    frames: mpsc::Sender<Frame>,
    slow: CancellationToken,
}

impl SessionTx {
    pub fn new(capacity: usize) -> (Self, mpsc::Receiver<Frame>, CancellationToken) {
        let (frames, rx) = mpsc::channel(capacity.max(1));
        let slow = CancellationToken::new();
        (
            Self {
                frames,
                slow: slow.clone(),
            },
            rx,
            slow,
        )
    }

    pub fn send(&self, frame: Frame) {
        match self.frames.try_send(frame) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.slow.cancel(),
            // The session is gone; nobody to tell.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    pub fn error(&self, code: &str, message: impl Into<String>, client_msg_id: &str) {
        self.send(error_frame(code, message, client_msg_id, 0));
    }
}

pub fn error_frame(
    code: &str,
    message: impl Into<String>,
    client_msg_id: &str,
    retry_after_ms: u64,
) -> Frame {
    Frame::Error(protocol::v1::Error {
        code: code.to_owned(),
        message: message.into(),
        client_msg_id: client_msg_id.to_owned(),
        retry_after_ms,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caption_language_is_watched_while_a_session_holds_it() {
        let hub = RoomHub::new("r1".into(), 8);
        let first = hub.watch_captions("es");
        let second = hub.watch_captions("es");
        let catalan = hub.watch_captions("ca");
        let mut watched = hub.caption_languages();
        watched.sort();
        assert_eq!(watched, ["ca", "es"]);
        drop(first);
        drop(catalan);
        assert_eq!(hub.caption_languages(), ["es"]);
        assert_eq!(second.lang(), "es");
        drop(second);
        assert!(hub.caption_languages().is_empty());
    }
}
