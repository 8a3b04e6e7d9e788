//! The embedded bus: a bounded broadcast to in-process subscribers.
//!
//! It has the same dedupe contract as JetStream (an id seen within the
//! duplicate window is accepted but not delivered again), so consumers
//! behave the same whichever backend runs.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::consume::{InProcessConsumer, subject_prefix};
use crate::{BusError, Consumer, ConsumerSpec, EventBus, Outgoing};

/// An event as a subscriber sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub id: String,
    pub subject: String,
    pub payload: Bytes,
}

pub struct InProcessBus {
    sender: broadcast::Sender<Received>,
    recent: Mutex<RecentIds>,
}

/// The ids of the last `capacity` events: the in-process duplicate window.
struct RecentIds {
    capacity: usize,
    order: VecDeque<String>,
    seen: HashSet<String>,
}

impl RecentIds {
    fn insert(&mut self, id: &str) -> bool {
        if self.seen.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        self.order.push_back(id.to_owned());
        self.seen.insert(id.to_owned());
        true
    }
}

impl InProcessBus {
    /// `capacity` bounds both the subscriber backlog and the dedupe window.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let (sender, _) = broadcast::channel(capacity);
        Self {
            sender,
            recent: Mutex::new(RecentIds {
                capacity,
                order: VecDeque::with_capacity(capacity),
                seen: HashSet::with_capacity(capacity),
            }),
        }
    }

    /// A subscriber that sees every event published from now on. A
    /// subscriber that falls behind by more than the capacity gets
    /// `RecvError::Lagged` and must resynchronise from its own state.
    pub fn subscribe(&self) -> broadcast::Receiver<Received> {
        self.sender.subscribe()
    }
}

impl Default for InProcessBus {
    fn default() -> Self {
        Self::new(4096)
    }
}

#[async_trait::async_trait]
impl EventBus for InProcessBus {
    async fn publish_batch(&self, events: &[Outgoing<'_>]) -> Vec<Result<(), BusError>> {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        for event in events {
            if recent.insert(event.id) {
                // No subscriber is not an error: the event is accepted, as a
                // JetStream stream accepts events nobody consumes yet.
                let _ = self.sender.send(Received {
                    id: event.id.to_owned(),
                    subject: event.subject.to_owned(),
                    payload: event.payload.clone(),
                });
            }
        }
        events.iter().map(|_| Ok(())).collect()
    }

    async fn consumer(&self, spec: ConsumerSpec) -> Result<Box<dyn Consumer>, BusError> {
        Ok(Box::new(InProcessConsumer {
            receiver: self.subscribe(),
            prefix: subject_prefix(&spec.filter_subject),
        }))
    }

    fn durable(&self) -> bool {
        false
    }

    fn name(&self) -> &'static str {
        "in-process"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delivers_in_order_and_drops_duplicate_ids() {
        let bus = InProcessBus::new(8);
        let mut rx = bus.subscribe();
        let payload = Bytes::from_static(b"x");
        let a = Outgoing {
            id: "a",
            subject: "live.room.r",
            payload: &payload,
        };
        let b = Outgoing {
            id: "b",
            subject: "live.room.r",
            payload: &payload,
        };
        let results = bus.publish_batch(&[a, b, a]).await;
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(rx.recv().await.unwrap().id, "a");
        assert_eq!(rx.recv().await.unwrap().id, "b");
        assert!(
            rx.try_recv().is_err(),
            "the duplicate `a` must not be delivered"
        );
    }
}
