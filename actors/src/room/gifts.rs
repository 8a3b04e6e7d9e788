//! A room's gifting: from a validated request to a committed, announced,
//! broadcast gift.
//!
//! ```text
//! GiftSubmit -> interactive::gifts::charge (catalog, count, self, overflow)
//!            -> store.send_gift (off the actor: key, conditional debit, rows,
//!               ledger, `gift.sent` outbox row, in one transaction)
//!            -> GiftStored back in the actor -> combo, leaderboard, goal
//!            -> `gift` broadcast (encoded once) + receipt to the sender
//! ```
//!
//! The store is the judge of money: idempotency and balances are decided
//! there, in one transaction, so a retry racing its original or a RoomActor
//! restart between the two cannot charge twice. The actor only keeps the
//! room's running views (combos, leaderboard, goal), which it rebuilds from
//! the store's gift rows when it starts.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use interactive::gifts::{
    self, Catalog, ComboTracker, GiftRequest, Goal, InvalidGift, Leaderboard, SplitPolicy,
};
use protocol::v1::{
    GiftGoal, GiftGoalReached, GiftItem, GiftSent, Leaderboard as LeaderboardFrame,
    LeaderboardEntry, server_frame::Frame,
};
use ractor::ActorRef;
use storage::{GiftOutcome, GiftReceipt, GiftRecord, Store};
use tokio::sync::oneshot;

use super::RoomMsg;
use crate::events::{self, outbox_event, outbox_event_with_id};
use crate::hub::{Broadcast, RoomHub};
use crate::now_ms;

/// The catalog every room prices with, replaceable while the engine runs
/// (the admin API). Copy on write: a change builds a new catalog and swaps
/// it in; a send in progress keeps the one it started with.
#[derive(Debug, Clone)]
pub struct SharedCatalog(Arc<RwLock<Arc<Catalog>>>);

impl SharedCatalog {
    pub fn new(catalog: Catalog) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(catalog))))
    }

    pub fn current(&self) -> Arc<Catalog> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Applies `change` to a copy and publishes it; returns what `change`
    /// returned.
    pub fn update<T>(&self, change: impl FnOnce(&mut Catalog) -> T) -> T {
        let mut slot = self.0.write().unwrap_or_else(PoisonError::into_inner);
        let mut next = Catalog::clone(&slot);
        let result = change(&mut next);
        *slot = Arc::new(next);
        result
    }
}

/// Gift settings shared by every room.
#[derive(Debug, Clone)]
pub struct GiftsConfig {
    pub catalog: SharedCatalog,
    /// The creator's share of each gift: default, per creator tier, per
    /// viewer region.
    pub split: SplitPolicy,
    pub combo_window_ms: u64,
    /// Gifters listed in a `leaderboard` frame.
    pub leaderboard_size: usize,
    /// At most one `leaderboard` frame per this interval.
    pub leaderboard_interval: Duration,
    /// At most one gift broadcast per this window: a lone gift goes out at
    /// once, a storm as one `batch` per window (with the goal's latest
    /// progress) rather than a frame per gift to every viewer.
    pub broadcast_window: Duration,
    /// Every room's gift goal: `(target coins, window)`; `None` for none.
    pub goal: Option<(u64, Duration)>,
}

impl Default for GiftsConfig {
    fn default() -> Self {
        Self {
            catalog: SharedCatalog::new(Catalog::default_gifts()),
            split: SplitPolicy::flat(gifts::DEFAULT_CREATOR_SHARE_BPS),
            combo_window_ms: gifts::DEFAULT_COMBO_WINDOW_MS,
            leaderboard_size: 10,
            leaderboard_interval: Duration::from_secs(1),
            broadcast_window: Duration::from_millis(50),
            goal: None,
        }
    }
}

/// A gift on its way to its room, from a WebSocket session or the HTTP API.
#[derive(Debug)]
pub struct GiftSubmit {
    pub user_id: String,
    pub name: String,
    /// The sender's region (token claim), for the revenue split.
    pub region: String,
    pub request: GiftRequest,
    pub reply: oneshot::Sender<Result<GiftAnswer, GiftRefusal>>,
}

/// A gift the store accepted: now, or earlier for a retried key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GiftAnswer {
    pub receipt: GiftReceipt,
    pub replayed: bool,
}

/// Why a gift was not sent; nothing was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GiftRefusal {
    /// A stable code (see the protocol's `Error` frame).
    pub code: &'static str,
    pub message: String,
    /// For `insufficient_funds`: what the wallet holds.
    pub balance: Option<u64>,
}

impl GiftRefusal {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            balance: None,
        }
    }

    pub fn unavailable() -> Self {
        Self::new(
            "unavailable",
            "the room is restarting, please retry with the same key",
        )
    }
}

impl From<InvalidGift> for GiftRefusal {
    fn from(invalid: InvalidGift) -> Self {
        Self::new(invalid.code(), invalid.message())
    }
}

/// The store's answer for a send, back in the actor.
pub struct GiftStored {
    submit: GiftSubmit,
    /// The parameters the store judged (see [`InFlight`]).
    fingerprint: String,
    result: Result<GiftOutcome, storage::StoreError>,
}

/// The room's running views of gifting.
pub struct RoomGifts {
    config: GiftsConfig,
    combos: ComboTracker,
    leaderboard: Leaderboard,
    goal: Option<Goal>,
    /// When the last `leaderboard` frame went out, and whether a newer one
    /// is owed (sent by the next tick).
    last_leaderboard_ms: u64,
    leaderboard_owed: bool,
    /// Committed gifts not yet broadcast, whether the goal's progress
    /// changed since it was last sent, and when gifts last went out.
    unsent: Vec<Frame>,
    goal_owed: bool,
    last_broadcast_ms: u64,
    /// Sends at the store, by (sender, key): a retry that arrives while its
    /// original is in flight waits for the original's answer instead of
    /// costing the store a second command (single flight). Retries that
    /// come after the answer go to the store, which judges every key.
    in_flight: HashMap<(String, String), InFlight>,
}

struct InFlight {
    fingerprint: String,
    waiters: Vec<GiftSubmit>,
}

impl RoomGifts {
    /// Rebuilds the leaderboard from the gifts committed since `since_ms`
    /// (the room's live session), so a restart shows the same ranking.
    pub async fn load(
        config: GiftsConfig,
        store: &dyn Store,
        room_id: &str,
        since_ms: u64,
    ) -> Result<Self, storage::StoreError> {
        let mut leaderboard = Leaderboard::default();
        let gifts = store.room_gifts(room_id, since_ms).await?;
        for gift in &gifts {
            leaderboard.add(&gift.sender, gift.total);
        }
        let now = now_ms();
        // The room's own goal, else the engine-wide one; its progress is
        // what was given in the last window.
        let goal = match store.room_goal(room_id).await? {
            Some(goal) => Some(goal),
            None => config
                .goal
                .map(|(target, window)| (target, window.as_millis() as u64)),
        };
        let goal = goal.map(|(target, window_ms)| {
            let recent = gifts
                .iter()
                .filter(|g| g.created_ms >= now.saturating_sub(window_ms))
                .map(|g| g.total)
                .sum();
            Goal::resume(target, window_ms, now, recent)
        });
        Ok(Self {
            goal,
            combos: ComboTracker::new(config.combo_window_ms),
            config,
            leaderboard,
            last_leaderboard_ms: 0,
            leaderboard_owed: false,
            unsent: Vec::new(),
            goal_owed: false,
            last_broadcast_ms: 0,
            in_flight: HashMap::new(),
        })
    }

    /// Prices the request and hands it to the store without blocking the
    /// actor; the answer comes back as [`RoomMsg::GiftStored`]. Returns
    /// whether it went to the store (`false`: refused here and answered,
    /// or a retry of a send in flight, answered with it).
    pub fn submit(
        &mut self,
        room_id: &str,
        store: &Arc<dyn Store>,
        myself: &ActorRef<RoomMsg>,
        submit: GiftSubmit,
    ) -> bool {
        let charge = match gifts::charge(
            &self.config.catalog.current(),
            room_id,
            &submit.user_id,
            &submit.request,
            self.config
                .split
                .creator_share_bps(&submit.request.to, &submit.region),
        ) {
            Ok(charge) => charge,
            Err(invalid) => {
                metrics::counter!("live_gifts_rejected_total", "reason" => invalid.code())
                    .increment(1);
                let _ = submit.reply.send(Err(invalid.into()));
                return false;
            }
        };
        let flight_key = (charge.from.clone(), charge.idempotency_key.clone());
        match self.in_flight.get_mut(&flight_key) {
            Some(flight) if flight.fingerprint == charge.fingerprint => {
                flight.waiters.push(submit);
                return false;
            }
            // Other parameters under a key in flight: the store judges it
            // after the original, in order.
            Some(_) => {}
            None => {
                self.in_flight.insert(
                    flight_key,
                    InFlight {
                        fingerprint: charge.fingerprint.clone(),
                        waiters: Vec::new(),
                    },
                );
            }
        }
        let gift_id = uuid::Uuid::now_v7().to_string();
        let created_ms = now_ms();
        let record = GiftRecord {
            gift_id: gift_id.clone(),
            room_id: room_id.to_owned(),
            sender: charge.from,
            recipient: charge.to,
            gift: charge.gift_id,
            count: charge.count,
            unit_price: charge.unit_price,
            total: charge.split.total,
            creator_amount: charge.split.creator,
            platform_amount: charge.split.platform,
            idempotency_key: charge.idempotency_key,
            fingerprint: charge.fingerprint,
            created_ms,
        };
        let event = outbox_event_with_id(
            gift_id,
            events::GIFT_SENT,
            room_id,
            created_ms,
            &gift_sent(&record),
        );
        let (store, myself) = (Arc::clone(store), myself.clone());
        tokio::spawn(async move {
            let fingerprint = record.fingerprint.clone();
            let result = store.send_gift(record, event).await;
            let stored = GiftStored {
                submit,
                fingerprint,
                result,
            };
            // The actor is gone (restarting): the send may have committed;
            // the client retries with its key and learns which.
            if let Err(ractor::MessagingErr::SendErr(RoomMsg::GiftStored(stored))) =
                myself.cast(RoomMsg::GiftStored(Box::new(stored)))
            {
                let _ = stored.submit.reply.send(Err(GiftRefusal::unavailable()));
            }
        });
        true
    }

    /// Answers the sender and, for a new send, updates the room's views and
    /// broadcasts. Returns an event to append when the goal was reached,
    /// and the coins of the gift when it was a new one (0 otherwise).
    pub fn stored(
        &mut self,
        room_id: &str,
        hub: &RoomHub,
        stored: GiftStored,
    ) -> (Option<storage::OutboxEvent>, u64) {
        let GiftStored {
            submit,
            fingerprint,
            result,
        } = stored;
        let flight_key = (
            submit.user_id.clone(),
            submit.request.idempotency_key.clone(),
        );
        // The waiters belong to the send with their parameters: a request
        // with other parameters under the same key answers only itself.
        let waiters = match self.in_flight.get(&flight_key) {
            Some(flight) if flight.fingerprint == fingerprint => self
                .in_flight
                .remove(&flight_key)
                .map(|flight| flight.waiters)
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let answer = answer(room_id, result);
        let mut goal_event = None;
        let mut coins = 0;
        if let Ok(GiftAnswer {
            receipt,
            replayed: false,
        }) = &answer
        {
            metrics::counter!("live_gifts_total").increment(1);
            metrics::counter!("live_gift_coins_total").increment(receipt.gift.total);
            goal_event = self.apply(room_id, &submit.name, &receipt.gift);
            coins = receipt.gift.total;
            self.publish(hub, now_ms());
        }
        // Retries that waited on this send get its answer, as replays.
        for waiter in waiters {
            let replay = answer.clone().map(|answer| GiftAnswer {
                replayed: true,
                ..answer
            });
            let _ = waiter.reply.send(replay);
        }
        let _ = submit.reply.send(answer);
        (goal_event, coins)
    }

    /// Updates combos, leaderboard and goal with a new gift and queues its
    /// broadcast; returns the goal's event when this gift reached it.
    fn apply(
        &mut self,
        room_id: &str,
        name: &str,
        gift: &GiftRecord,
    ) -> Option<storage::OutboxEvent> {
        let catalog = self.config.catalog.current();
        let catalog_gift = catalog.get(&gift.gift);
        let (combo_id, combo_count) = match catalog_gift {
            Some(g) if g.combo => {
                let combo = self.combos.record(
                    &gift.sender,
                    &gift.gift,
                    gift.count,
                    &gift.gift_id,
                    gift.created_ms,
                );
                (combo.combo_id, combo.total)
            }
            _ => (gift.gift_id.clone(), u64::from(gift.count)),
        };
        self.combos.expire(gift.created_ms);
        self.unsent.push(Frame::Gift(GiftItem {
            id: gift.gift_id.clone(),
            user_id: gift.sender.clone(),
            name: name.to_owned(),
            to: gift.recipient.clone(),
            gift_id: gift.gift.clone(),
            gift_name: catalog_gift.map(|g| g.name.clone()).unwrap_or_default(),
            tier: catalog_gift.map_or(1, |g| u32::from(g.tier)),
            count: gift.count,
            coins: gift.total,
            combo_id,
            combo_count,
            ts_ms: gift.created_ms,
        }));
        self.leaderboard.add(&gift.sender, gift.total);
        self.leaderboard_owed = true;
        let goal = self.goal.as_mut()?;
        let reached = goal.add(gift.total, gift.created_ms);
        self.goal_owed = true;
        let coins = reached?;
        Some(outbox_event(
            events::GIFT_GOAL_REACHED,
            room_id,
            gift.created_ms,
            &GiftGoalReached {
                room_id: room_id.to_owned(),
                target: goal.target,
                coins,
                window_ms: goal.window_ms,
            },
        ))
    }

    /// Broadcasts what is owed and due: the unsent gifts (and the goal)
    /// once the broadcast window has passed, the leaderboard once its
    /// interval has. Called after each gift and by the room's tick.
    pub fn publish(&mut self, hub: &RoomHub, now_ms: u64) {
        let window = self.config.broadcast_window.as_millis() as u64;
        if now_ms.saturating_sub(self.last_broadcast_ms) >= window {
            self.publish_unsent(hub, now_ms);
        }
        self.publish_leaderboard(hub, now_ms);
    }

    /// Broadcasts the held gifts now, window or not: a drain or a close
    /// must not leave a committed gift unseen.
    pub fn flush(&mut self, hub: &RoomHub) {
        self.publish_unsent(hub, now_ms());
    }

    fn publish_unsent(&mut self, hub: &RoomHub, now_ms: u64) {
        if !self.unsent.is_empty() {
            self.last_broadcast_ms = now_ms;
            let mut frames = std::mem::take(&mut self.unsent);
            if std::mem::take(&mut self.goal_owed)
                && let Some(goal) = &self.goal
            {
                frames.push(Frame::GiftGoal(GiftGoal {
                    target: goal.target,
                    coins: goal.progress(),
                    window_ms: goal.window_ms,
                    reached: goal.progress() >= goal.target,
                }));
            }
            hub.publish(Broadcast::new(protocol::batch_frame(frames), None));
        }
    }

    /// Sends the leaderboard if one is owed and the interval has passed.
    fn publish_leaderboard(&mut self, hub: &RoomHub, now_ms: u64) {
        let interval = self.config.leaderboard_interval.as_millis() as u64;
        if !self.leaderboard_owed || now_ms.saturating_sub(self.last_leaderboard_ms) < interval {
            return;
        }
        self.leaderboard_owed = false;
        self.last_leaderboard_ms = now_ms;
        let entries = self
            .leaderboard
            .top(self.config.leaderboard_size)
            .into_iter()
            .map(|(user_id, coins)| LeaderboardEntry { user_id, coins })
            .collect();
        hub.publish(Broadcast::new(
            Frame::Leaderboard(LeaderboardFrame { entries }),
            None,
        ));
    }

    /// How long until something owed may go out (unsent gifts, the
    /// leaderboard), if anything is owed.
    pub fn publish_wait(&self, now_ms: u64) -> Option<Duration> {
        let due = |owed: bool, last: u64, interval: Duration| {
            owed.then(|| last.saturating_add(interval.as_millis() as u64))
        };
        let gifts = due(
            !self.unsent.is_empty(),
            self.last_broadcast_ms,
            self.config.broadcast_window,
        );
        let leaderboard = due(
            self.leaderboard_owed,
            self.last_leaderboard_ms,
            self.config.leaderboard_interval,
        );
        let due = gifts.into_iter().chain(leaderboard).min()?;
        Some(Duration::from_millis(due.saturating_sub(now_ms).max(1)))
    }

    /// Replaces the room's goal (or removes it); a new goal counts from now.
    pub fn set_goal(&mut self, hub: &RoomHub, goal: Option<(u64, u64)>) {
        self.goal = goal.map(|(target, window_ms)| Goal::new(target, window_ms, now_ms()));
        if let Some(goal) = &self.goal {
            hub.publish(Broadcast::new(
                Frame::GiftGoal(GiftGoal {
                    target: goal.target,
                    coins: 0,
                    window_ms: goal.window_ms,
                    reached: false,
                }),
                None,
            ));
        }
    }

    /// The current top gifters, for a joining session or the HTTP API.
    pub fn top(&self) -> Vec<(String, u64)> {
        self.leaderboard.top(self.config.leaderboard_size)
    }
}

fn conflict() -> GiftRefusal {
    metrics::counter!("live_gifts_rejected_total", "reason" => "idempotency_conflict").increment(1);
    GiftRefusal::new(
        "idempotency_conflict",
        "this idempotency key was used for a different gift",
    )
}

/// What the sender is told for the store's outcome.
fn answer(
    room_id: &str,
    result: Result<GiftOutcome, storage::StoreError>,
) -> Result<GiftAnswer, GiftRefusal> {
    let outcome = result.map_err(|error| {
        tracing::warn!(room = %room_id, %error, "gift not stored");
        GiftRefusal::unavailable()
    })?;
    match outcome {
        GiftOutcome::Sent(receipt) => Ok(GiftAnswer {
            receipt,
            replayed: false,
        }),
        GiftOutcome::Replayed(receipt) => Ok(GiftAnswer {
            receipt,
            replayed: true,
        }),
        GiftOutcome::KeyConflict => Err(conflict()),
        GiftOutcome::InsufficientFunds { balance } => {
            metrics::counter!("live_gifts_rejected_total", "reason" => "insufficient_funds")
                .increment(1);
            Err(GiftRefusal {
                balance: Some(balance),
                ..GiftRefusal::new("insufficient_funds", "not enough coins in your wallet")
            })
        }
    }
}

fn gift_sent(gift: &GiftRecord) -> GiftSent {
    GiftSent {
        gift_id: gift.gift_id.clone(),
        room_id: gift.room_id.clone(),
        sender: gift.sender.clone(),
        recipient: gift.recipient.clone(),
        gift: gift.gift.clone(),
        count: gift.count,
        unit_price: gift.unit_price,
        total: gift.total,
        creator_amount: gift.creator_amount,
        platform_amount: gift.platform_amount,
        created_ms: gift.created_ms,
    }
}
