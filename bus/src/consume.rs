//! The consuming side: a service role (billing today; VOD and rights next)
//! takes events one by one and acknowledges each after its effect is
//! durable. Delivery is at least once on both backends; a consumer makes
//! the effect exactly once by keying it on the event id.
//!
//! - NATS: a durable pull consumer with explicit acks. The server remembers
//!   the position; an event not acked within `ack_wait` is delivered again,
//!   so a consumer that crashes between its write and its ack sees the
//!   event again and finds its own write.
//! - In-process: a live subscription. It is not durable (the process is the
//!   bus); a consumer on it must also sweep its source of truth after a
//!   start or a lag, which [`BusError::Unavailable`] from `next` signals.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer};
use futures_util::StreamExt;
use tokio::sync::broadcast;

use crate::{BusError, Received};

/// Which events a consumer wants, and under which durable name.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    /// The durable name: one position per name, shared by every instance
    /// of the role (they split the events between them).
    pub name: String,
    /// The JetStream stream holding the events.
    pub stream: String,
    /// e.g. `live.gift.>`.
    pub filter_subject: String,
    /// How long the server waits for an ack before delivering again.
    pub ack_wait: Duration,
}

/// One delivered event; ack it once its effect is durable.
pub struct Delivery {
    pub event: Received,
    ack: Option<jetstream::Message>,
}

impl Delivery {
    pub async fn ack(self) -> Result<(), BusError> {
        self.reply(AckKind::Ack).await
    }

    /// How many times this event has been delivered (1 the first time;
    /// always 1 in-process).
    pub fn deliveries(&self) -> u64 {
        self.ack
            .as_ref()
            .and_then(|message| message.info().ok())
            .map_or(1, |info| info.delivered.max(1) as u64)
    }

    /// Not now: deliver it again after `delay` (an event that depends on
    /// one not seen yet). In-process there is no redelivery.
    pub async fn retry_later(self, delay: Duration) -> Result<(), BusError> {
        self.reply(AckKind::Nak(Some(delay))).await
    }

    /// Never: stop delivering it (it cannot be applied; already logged).
    pub async fn give_up(self) -> Result<(), BusError> {
        self.reply(AckKind::Term).await
    }

    async fn reply(self, kind: AckKind) -> Result<(), BusError> {
        match self.ack {
            Some(message) => message
                .ack_with(kind)
                .await
                .map_err(|e| BusError::Unavailable(format!("ack: {e}"))),
            None => Ok(()),
        }
    }
}

/// A stream of deliveries. `next` waits for the next event; an error means
/// the source broke (server gone, subscriber lagged): the caller backs off
/// and calls again, the consumer reconnects by itself.
#[async_trait::async_trait]
pub trait Consumer: Send {
    async fn next(&mut self) -> Result<Delivery, BusError>;
}

pub(crate) struct InProcessConsumer {
    pub(crate) receiver: broadcast::Receiver<Received>,
    pub(crate) prefix: String,
}

#[async_trait::async_trait]
impl Consumer for InProcessConsumer {
    async fn next(&mut self) -> Result<Delivery, BusError> {
        loop {
            match self.receiver.recv().await {
                Ok(event) if event.subject.starts_with(&self.prefix) => {
                    return Ok(Delivery { event, ack: None });
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    return Err(BusError::Unavailable(format!(
                        "the in-process subscriber fell {missed} events behind"
                    )));
                }
                Err(broadcast::error::RecvError::Closed) => {
                    return Err(BusError::Unavailable("the in-process bus is gone".into()));
                }
            }
        }
    }
}

/// `live.gift.>` -> `live.gift.`: the in-process filter is a prefix.
pub(crate) fn subject_prefix(filter: &str) -> String {
    filter
        .trim_end_matches('>')
        .trim_end_matches('*')
        .to_owned()
}

pub(crate) struct NatsConsumer {
    pub(crate) jetstream: jetstream::Context,
    pub(crate) spec: ConsumerSpec,
    pub(crate) messages: Option<consumer::pull::Stream>,
}

impl NatsConsumer {
    async fn open(&self) -> Result<consumer::pull::Stream, BusError> {
        let unavailable = |what: &str, e: &dyn std::fmt::Display| {
            BusError::Unavailable(format!("consumer {}: {what}: {e}", self.spec.name))
        };
        let stream = self
            .jetstream
            .get_stream(&self.spec.stream)
            .await
            .map_err(|e| unavailable("stream", &e))?;
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(
                &self.spec.name,
                consumer::pull::Config {
                    durable_name: Some(self.spec.name.clone()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: self.spec.ack_wait,
                    filter_subject: self.spec.filter_subject.clone(),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| unavailable("create", &e))?;
        consumer
            .messages()
            .await
            .map_err(|e| unavailable("messages", &e))
    }
}

#[async_trait::async_trait]
impl Consumer for NatsConsumer {
    async fn next(&mut self) -> Result<Delivery, BusError> {
        if self.messages.is_none() {
            self.messages = Some(self.open().await?);
        }
        let messages = self.messages.as_mut().expect("opened above");
        match messages.next().await {
            Some(Ok(message)) => Ok(Delivery {
                event: Received {
                    id: message
                        .headers
                        .as_ref()
                        .and_then(|h| h.get("Nats-Msg-Id"))
                        .map(|v| v.to_string())
                        .unwrap_or_default(),
                    subject: message.subject.to_string(),
                    payload: message.payload.clone(),
                },
                ack: Some(message),
            }),
            Some(Err(error)) => {
                self.messages = None;
                Err(BusError::Unavailable(format!(
                    "consumer {}: {error}",
                    self.spec.name
                )))
            }
            None => {
                self.messages = None;
                Err(BusError::Unavailable(format!(
                    "consumer {}: the message stream ended",
                    self.spec.name
                )))
            }
        }
    }
}
