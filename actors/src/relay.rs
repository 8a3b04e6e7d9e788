//! The OutboxRelay: moves events from the storage outbox to the bus.
//!
//! Rows leave the outbox only once the bus acknowledged them, in order: on
//! the first failure the relay stops, keeps the rest, and retries with
//! exponential backoff. A retry may publish an event the bus already has
//! (its ack was lost); the stable event id makes that a no-op downstream.

use std::sync::Arc;
use std::time::Duration;

use bus::{BusError, EventBus, Outgoing};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use storage::Store;

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub struct OutboxRelay;

pub struct RelayArgs {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn EventBus>,
    pub batch: usize,
}

pub enum RelayMsg {
    /// New rows were committed.
    Wake,
    /// The backoff after a failure elapsed.
    Retry,
    /// Publish what can be published now; replies whether the outbox is empty.
    Drain(RpcReplyPort<bool>),
}

pub struct RelayState {
    store: Arc<dyn Store>,
    bus: Arc<dyn EventBus>,
    batch: usize,
    backoff: Duration,
    retry_pending: bool,
    waker: tokio::task::JoinHandle<()>,
}

enum Outcome {
    Empty,
    Failed,
}

impl Actor for OutboxRelay {
    type Msg = RelayMsg;
    type State = RelayState;
    type Arguments = RelayArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RelayMsg>,
        args: RelayArgs,
    ) -> Result<RelayState, ActorProcessingErr> {
        let notify = args.store.outbox_notify();
        let waker = tokio::spawn(async move {
            loop {
                notify.notified().await;
                if myself.cast(RelayMsg::Wake).is_err() {
                    break;
                }
            }
        });
        Ok(RelayState {
            store: args.store,
            bus: args.bus,
            batch: args.batch.max(1),
            backoff: MIN_BACKOFF,
            retry_pending: false,
            waker,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<RelayMsg>,
        _: &mut RelayState,
    ) -> Result<(), ActorProcessingErr> {
        // Whatever a previous run left behind goes first.
        let _ = myself.cast(RelayMsg::Wake);
        Ok(())
    }

    async fn post_stop(
        &self,
        _: ActorRef<RelayMsg>,
        state: &mut RelayState,
    ) -> Result<(), ActorProcessingErr> {
        state.waker.abort();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<RelayMsg>,
        msg: RelayMsg,
        state: &mut RelayState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RelayMsg::Wake if state.retry_pending => {}
            RelayMsg::Wake | RelayMsg::Retry => {
                state.retry_pending = false;
                if let Outcome::Failed = state.drain().await? {
                    state.retry_pending = true;
                    myself.send_after(state.backoff, || RelayMsg::Retry);
                    state.backoff = (state.backoff * 2).min(MAX_BACKOFF);
                }
            }
            RelayMsg::Drain(reply) => {
                let outcome = state.drain().await?;
                let _ = reply.send(matches!(outcome, Outcome::Empty));
            }
        }
        Ok(())
    }
}

impl RelayState {
    async fn drain(&mut self) -> Result<Outcome, ActorProcessingErr> {
        let outcome = loop {
            let rows = self.store.outbox_pending(self.batch).await?;
            if rows.is_empty() {
                self.backoff = MIN_BACKOFF;
                break Outcome::Empty;
            }
            let outgoing: Vec<Outgoing<'_>> = rows
                .iter()
                .map(|row| Outgoing {
                    id: &row.event.id,
                    subject: &row.event.subject,
                    payload: &row.event.payload,
                })
                .collect();
            let results = self.bus.publish_batch(&outgoing).await;
            let mut done = Vec::with_capacity(rows.len());
            let mut failed = false;
            for (row, result) in rows.iter().zip(results) {
                match result {
                    Ok(()) => done.push(row.position),
                    Err(BusError::Rejected(reason)) => {
                        // Retrying cannot succeed; keeping it would block
                        // every later event.
                        tracing::error!(id = %row.event.id, subject = %row.event.subject, %reason, "bus rejected event; dropped from the outbox");
                        metrics::counter!("live_outbox_rejected_total").increment(1);
                        done.push(row.position);
                    }
                    Err(BusError::Unavailable(reason)) => {
                        tracing::warn!(bus = self.bus.name(), %reason, "event bus unavailable; will retry");
                        failed = true;
                        break;
                    }
                }
            }
            metrics::counter!("live_outbox_published_total").increment(done.len() as u64);
            self.store.outbox_remove(done).await?;
            if failed {
                metrics::counter!("live_outbox_publish_failures_total").increment(1);
                break Outcome::Failed;
            }
        };
        metrics::gauge!("live_outbox_depth").set(self.store.outbox_depth().await? as f64);
        Ok(outcome)
    }
}
