//! NATS JetStream backend.
//!
//! The client connects in the background and keeps reconnecting, so an
//! engine can start (and keep accepting danmaku) while NATS is down: events
//! wait in the outbox and the relay retries. Streams are ensured before the
//! first publish and again after any failure, because a restarted
//! nats-server with a fresh store has lost them.

use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage, stream};
use futures_util::future::join_all;
use tokio::sync::Mutex;

use crate::consume::NatsConsumer;
use crate::{BusError, Consumer, ConsumerSpec, EventBus, Outgoing};

/// A JetStream stream the engine publishes into.
#[derive(Debug, Clone, Copy)]
pub struct StreamSpec {
    pub name: &'static str,
    pub subjects: &'static str,
    pub max_age: Duration,
}

const DAY: Duration = Duration::from_secs(24 * 3600);

/// The streams for events that must not be lost. Transient traffic
/// (presence, cross-node relay) will use core NATS subjects outside these.
pub const STREAMS: &[StreamSpec] = &[
    StreamSpec {
        name: "LIVE_ROOMS",
        subjects: "live.room.>",
        max_age: Duration::from_secs(30 * 24 * 3600),
    },
    StreamSpec {
        name: "LIVE_DANMAKU",
        subjects: "live.danmaku.>",
        max_age: Duration::from_secs(7 * 24 * 3600),
    },
    StreamSpec {
        name: "LIVE_STREAMS",
        subjects: "live.stream.>",
        max_age: Duration::from_secs(30 * 24 * 3600),
    },
    StreamSpec {
        name: "LIVE_MODERATION",
        subjects: "live.moderation.>",
        max_age: Duration::from_secs(30 * 24 * 3600),
    },
    // Money: kept a year, so billing can replay and reconcile any period.
    StreamSpec {
        name: "LIVE_GIFTS",
        subjects: "live.gift.>",
        max_age: Duration::from_secs(365 * 24 * 3600),
    },
    StreamSpec {
        name: "LIVE_WALLETS",
        subjects: "live.wallet.>",
        max_age: Duration::from_secs(365 * 24 * 3600),
    },
    // Recordings: what the VOD service builds its assets from.
    StreamSpec {
        name: "LIVE_RECORDINGS",
        subjects: "live.recording.>",
        max_age: Duration::from_secs(30 * 24 * 3600),
    },
    StreamSpec {
        name: "LIVE_GIFT_GOALS",
        subjects: "live.gift_goal.>",
        max_age: Duration::from_secs(30 * 24 * 3600),
    },
    // Branching stories: where each run went and what the audience chose.
    StreamSpec {
        name: "LIVE_STORIES",
        subjects: "live.story.>",
        max_age: Duration::from_secs(30 * 24 * 3600),
    },
    StreamSpec {
        name: "LIVE_VOTES",
        subjects: "live.vote.>",
        max_age: Duration::from_secs(30 * 24 * 3600),
    },
];

#[derive(Debug, Clone)]
pub struct NatsOptions {
    pub url: String,
    /// How long to wait for one JetStream acknowledgement.
    pub ack_timeout: Duration,
    /// JetStream's duplicate window: a republish of the same id inside it is
    /// dropped. Must exceed the longest outage the relay retries through
    /// without having seen an ack.
    pub duplicate_window: Duration,
}

impl NatsOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ack_timeout: Duration::from_secs(5),
            duplicate_window: DAY / 12,
        }
    }
}

pub struct NatsBus {
    jetstream: jetstream::Context,
    options: NatsOptions,
    streams_ready: Mutex<bool>,
}

impl NatsBus {
    /// Starts connecting; returns at once even when the server is down.
    pub async fn connect(options: NatsOptions) -> Result<Self, BusError> {
        let client = async_nats::ConnectOptions::new()
            .name("live-engine")
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
            .connect(options.url.as_str())
            .await
            .map_err(|e| BusError::Unavailable(format!("{}: {e}", options.url)))?;
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(options.ack_timeout)
            .build(client);
        Ok(Self {
            jetstream,
            options,
            streams_ready: Mutex::new(false),
        })
    }

    /// Creates the [`STREAMS`] that do not exist yet.
    pub async fn ensure_streams(&self) -> Result<(), BusError> {
        let mut ready = self.streams_ready.lock().await;
        if *ready {
            return Ok(());
        }
        for spec in STREAMS {
            let config = stream::Config {
                name: spec.name.to_owned(),
                subjects: vec![spec.subjects.to_owned()],
                storage: stream::StorageType::File,
                max_age: spec.max_age,
                duplicate_window: self.options.duplicate_window,
                ..Default::default()
            };
            self.jetstream
                .get_or_create_stream(config)
                .await
                .map_err(|e| BusError::Unavailable(format!("stream {}: {e}", spec.name)))?;
        }
        *ready = true;
        Ok(())
    }

    async fn forget_streams(&self) {
        *self.streams_ready.lock().await = false;
    }
}

#[async_trait::async_trait]
impl EventBus for NatsBus {
    async fn publish_batch(&self, events: &[Outgoing<'_>]) -> Vec<Result<(), BusError>> {
        if let Err(e) = self.ensure_streams().await {
            return events
                .iter()
                .map(|_| Err(BusError::Unavailable(e.to_string())))
                .collect();
        }
        // Send every publish first, then await the acks together: one round
        // trip for the batch instead of one per event.
        let mut pending = Vec::with_capacity(events.len());
        for event in events {
            let publish = PublishMessage::build()
                .payload(event.payload.clone())
                .message_id(event.id);
            pending.push(
                self.jetstream
                    .send_publish(event.subject.to_owned(), publish)
                    .await,
            );
        }
        let acks = join_all(pending.into_iter().map(|sent| async move {
            match sent {
                Ok(ack) => ack.await.map(|_| ()).map_err(classify),
                Err(e) => Err(classify(e)),
            }
        }))
        .await;
        if acks
            .iter()
            .any(|r| matches!(r, Err(BusError::Unavailable(_))))
        {
            self.forget_streams().await;
        }
        acks
    }

    async fn consumer(&self, spec: ConsumerSpec) -> Result<Box<dyn Consumer>, BusError> {
        Ok(Box::new(NatsConsumer {
            jetstream: self.jetstream.clone(),
            spec,
            messages: None,
        }))
    }

    fn durable(&self) -> bool {
        true
    }

    fn name(&self) -> &'static str {
        "nats"
    }
}

fn classify(error: jetstream::context::PublishError) -> BusError {
    use jetstream::context::PublishErrorKind;
    match error.kind() {
        PublishErrorKind::MaxPayloadExceeded => BusError::Rejected(error.to_string()),
        _ => BusError::Unavailable(error.to_string()),
    }
}
