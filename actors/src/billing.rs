//! The billing role: turns every `gift.sent` event into exactly one
//! settlement (the creator's share made payable) and keeps each creator's
//! earnings.
//!
//! ```text
//!  LIVE_GIFTS (JetStream, durable consumer "billing", explicit ack)
//!     └─> decode GiftSent ─> store.settle (insert-if-absent by gift id,
//!                                           earnings += creator share)
//!                         ─> ack only after the settlement is committed
//! ```
//!
//! Delivery is at least once; the settlement's key (the gift id, which is
//! also the event id and `Nats-Msg-Id`) makes the effect exactly once: a
//! redelivery after a crash between commit and ack finds its settlement
//! and is acked without a second credit.
//!
//! On the in-process bus nothing is durable, so billing also sweeps the
//! store for gifts without a settlement: at start, after it lagged behind
//! the bus, and every `sweep_interval`. With NATS it relies on the stream
//! alone, so a broken pipeline shows up in `reconcile` instead of being
//! papered over.
//!
//! The split is not recomputed here: the gift row carries the creator and
//! platform amounts decided when it was sent (one transaction priced and
//! debited it), so billing and the ledger cannot disagree.

use std::sync::Arc;
use std::time::Duration;

use bus::{ConsumerSpec, EventBus};
use futures_util::FutureExt;
use prost::Message;
use protocol::v1::{Envelope, GiftSent};
use storage::{GiftRecord, Settlement, Store};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::events;
use crate::now_ms;

#[derive(Debug, Clone)]
pub struct BillingConfig {
    /// In-process bus only: how often gifts without a settlement are swept.
    pub sweep_interval: Duration,
    /// How long JetStream waits for an ack before delivering again.
    pub ack_wait: Duration,
}

impl Default for BillingConfig {
    fn default() -> Self {
        Self {
            sweep_interval: Duration::from_secs(5),
            ack_wait: Duration::from_secs(30),
        }
    }
}

/// The durable consumer's name: every billing instance shares it.
pub const CONSUMER: &str = "billing";

pub fn spawn(
    store: Arc<dyn Store>,
    bus: Arc<dyn EventBus>,
    config: BillingConfig,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(run(store, bus, config, stop))
}

async fn run(
    store: Arc<dyn Store>,
    bus: Arc<dyn EventBus>,
    config: BillingConfig,
    stop: CancellationToken,
) {
    let durable = bus.durable();
    tracing::info!(bus = bus.name(), durable, "billing started");
    let spec = ConsumerSpec {
        name: CONSUMER.into(),
        stream: "LIVE_GIFTS".into(),
        filter_subject: "live.gift.>".into(),
        ack_wait: config.ack_wait,
    };
    let mut consumer = match bus.consumer(spec).await {
        Ok(consumer) => consumer,
        Err(error) => {
            tracing::error!(%error, "billing cannot consume gift events");
            return;
        }
    };
    if !durable {
        sweep(store.as_ref()).await;
    }
    let mut sweep_tick = tokio::time::interval(config.sweep_interval);
    let mut backoff = Duration::from_millis(100);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = sweep_tick.tick(), if !durable => sweep(store.as_ref()).await,
            delivery = consumer.next() => match delivery {
                Ok(first) => {
                    backoff = Duration::from_millis(100);
                    // Whatever else is already waiting joins this batch:
                    // one transaction for all of them under load.
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match consumer.next().now_or_never() {
                            Some(Ok(delivery)) => batch.push(delivery),
                            _ => break,
                        }
                    }
                    let settlements = batch
                        .iter()
                        .filter_map(|delivery| settlement_of_event(&delivery.event.payload))
                        .collect();
                    match settle(store.as_ref(), settlements).await {
                        // Acked only once the settlements are committed (or
                        // were, for redeliveries); a failed ack is a
                        // redelivery later, which settles nothing twice.
                        Ok(()) => {
                            for delivery in batch {
                                if let Err(error) = delivery.ack().await {
                                    tracing::debug!(%error, "billing ack failed; the event comes again");
                                }
                            }
                        }
                        Err(error) => {
                            // Not acked: the bus delivers them again.
                            metrics::counter!("live_billing_errors_total").increment(1);
                            tracing::warn!(%error, "billing could not settle a batch");
                        }
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, ?backoff, "billing consumer unavailable");
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    if !durable {
                        sweep(store.as_ref()).await;
                    }
                }
            },
        }
    }
    tracing::info!("billing stopped");
}

/// Events settled in one transaction at most.
const MAX_BATCH: usize = 256;

/// The settlement a `gift.sent` event asks for; `None` for other kinds. A
/// payload that does not decode is logged and skipped (acked): retrying it
/// cannot help, and `reconcile` reports the gift as unsettled.
fn settlement_of_event(payload: &[u8]) -> Option<Settlement> {
    let Ok(envelope) = Envelope::decode(payload) else {
        tracing::error!("billing skipped an event that is not an envelope");
        return None;
    };
    if envelope.kind != events::GIFT_SENT {
        return None;
    }
    let Ok(gift) = GiftSent::decode(envelope.payload) else {
        tracing::error!(id = %envelope.id, "billing skipped a gift.sent it cannot decode");
        return None;
    };
    Some(Settlement {
        gift_id: gift.gift_id,
        creator: gift.recipient,
        room_id: gift.room_id,
        creator_amount: gift.creator_amount,
        platform_amount: gift.platform_amount,
        gift_ms: gift.created_ms,
        settled_ms: now_ms(),
    })
}

async fn settle(
    store: &dyn Store,
    settlements: Vec<Settlement>,
) -> Result<(), storage::StoreError> {
    if settlements.is_empty() {
        return Ok(());
    }
    let total = settlements.len();
    let settled = store.settle(settlements).await?;
    metrics::counter!("live_billing_events_total", "outcome" => "settled")
        .increment(settled as u64);
    metrics::counter!("live_billing_events_total", "outcome" => "duplicate")
        .increment((total - settled) as u64);
    Ok(())
}

/// Settles gifts the bus did not bring (in-process bus only).
async fn sweep(store: &dyn Store) {
    loop {
        let gifts = match store.unsettled_gifts(512).await {
            Ok(gifts) => gifts,
            Err(error) => {
                tracing::warn!(%error, "billing sweep failed");
                return;
            }
        };
        if gifts.is_empty() {
            return;
        }
        if let Err(error) = settle(store, gifts.iter().map(settlement_of).collect()).await {
            tracing::warn!(%error, "billing sweep failed");
            return;
        }
    }
}

fn settlement_of(gift: &GiftRecord) -> Settlement {
    Settlement {
        gift_id: gift.gift_id.clone(),
        creator: gift.recipient.clone(),
        room_id: gift.room_id.clone(),
        creator_amount: gift.creator_amount,
        platform_amount: gift.platform_amount,
        gift_ms: gift.created_ms,
        settled_ms: now_ms(),
    }
}
