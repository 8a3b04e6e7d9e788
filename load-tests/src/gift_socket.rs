//! One sender's room socket, used for gifts the way the web app sends them:
//! `gift` frames out through a writer task, and each answer (`gift_receipt`,
//! or `error` carrying the key) routed back to a send of that key, oldest
//! first. Ten sends of one key get ten answers, one each.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use crate::wire::{self, FrameView, Read};

/// A gift id, or why there is none (the error frame's code, `timeout`,
/// `connection closed`).
pub type Answer = Result<String, String>;

type Waiting = Arc<Mutex<HashMap<String, VecDeque<oneshot::Sender<Answer>>>>>;

pub struct GiftSocket {
    out: mpsc::UnboundedSender<String>,
    waiting: Waiting,
    /// Why the socket ended (`close 1013 slow consumer`), once it has.
    ended: Arc<OnceLock<String>>,
}

impl GiftSocket {
    /// Opens the room socket at `url` and waits for its welcome.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let ws = wire::open(url, Duration::from_secs(10))
            .await
            .map_err(|reason| anyhow::anyhow!("room socket refused: {reason}"))?;
        let (mut sink, mut stream) = ws.split();
        let (out, mut outgoing) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Some(text) = outgoing.recv().await {
                if sink.send(Message::text(text)).await.is_err() {
                    break;
                }
            }
        });
        let waiting: Waiting = Arc::default();
        let routes = waiting.clone();
        let ended = Arc::new(OnceLock::new());
        let reason = ended.clone();
        tokio::spawn(async move {
            loop {
                match wire::read(&stream.next().await) {
                    Read::Text(text) => route(&routes, text),
                    Read::Other => {}
                    Read::Ended(why) => {
                        let _ = reason.set(why);
                        break;
                    }
                }
            }
            // Whoever still waits learns the socket is gone.
            lock(&routes).clear();
        });
        Ok(Self {
            out,
            waiting,
            ended,
        })
    }

    /// Sends one `gift` frame with `key` and waits (up to `limit`) for its
    /// answer.
    pub async fn send(&self, key: &str, frame: String, limit: Duration) -> Answer {
        let (tx, rx) = oneshot::channel();
        lock(&self.waiting)
            .entry(key.to_owned())
            .or_default()
            .push_back(tx);
        if self.out.send(frame).is_err() {
            return Err(self.end_reason());
        }
        match tokio::time::timeout(limit, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(self.end_reason()),
            Err(_) => Err("timeout".into()),
        }
    }

    fn end_reason(&self) -> String {
        self.ended
            .get()
            .map_or_else(|| "connection closed".to_owned(), Clone::clone)
    }
}

/// Hands each answer in `text` to the oldest send of its key still waiting.
fn route(waiting: &Waiting, text: &str) {
    let Ok(frame) = FrameView::parse(text) else {
        return;
    };
    frame.for_each_leaf(&mut |leaf| {
        let answer = match &*leaf.kind {
            "gift_receipt" => Ok(leaf.id.as_deref().unwrap_or_default().to_owned()),
            "error" => Err(leaf.code.as_deref().unwrap_or("error").to_owned()),
            _ => return,
        };
        let Some(key) = leaf.idempotency_key.as_deref() else {
            return;
        };
        let mut waiting = lock(waiting);
        let Some(queue) = waiting.get_mut(key) else {
            return;
        };
        // A send that timed out left its slot behind: skip it.
        while let Some(tx) = queue.pop_front() {
            if tx.send(answer.clone()).is_ok() {
                break;
            }
        }
        if queue.is_empty() {
            waiting.remove(key);
        }
    });
}

fn lock(
    waiting: &Waiting,
) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<oneshot::Sender<Answer>>>> {
    waiting.lock().unwrap_or_else(|e| e.into_inner())
}
