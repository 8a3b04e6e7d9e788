//! The RoomActor: the single owner of a room's danmaku pipeline.
//!
//! ```text
//! Submit -> validate -> mute? -> resend? -> blocked term? -> seq -> unwritten
//!        -> (one write in flight at a time: the room's group commit)
//!        -> Committed -> batcher -> Broadcast (encoded once) -> every session
//! ```
//!
//! Invariants:
//! - `seq` is strictly increasing and gap-free among committed danmaku.
//! - Nothing is broadcast before it is committed; the broadcast is the ack.
//! - Every accepted danmaku is answered: broadcast with its
//!   `client_msg_id`, an `ack` frame (merged or resent), or an error.
//!
//! On any storage failure the actor fails on purpose after telling the
//! affected senders `unavailable`: its supervisor restarts it, and the new
//! instance rebuilds seq, rules and recent history from storage, so memory
//! and disk never disagree.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use interactive::{Batcher, DanmakuLimits, Flush, InvalidDanmaku, Mutes, RecentIds, TermFilter};
use protocol::v1::{
    Ack, DanmakuBatch, DanmakuDeleted, DanmakuItem, ModerationAction, Presence, RoomClosed,
    server_frame::Frame,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use storage::{Room, Store, TermScope};

use super::gifts::{GiftRefusal, RoomGifts};
use super::story::{RoomStory, StoryCommand};
use super::{RoomError, RoomMsg, Submit, VoteSubmit};
use crate::config::ActorsConfig;
use crate::events::{self, outbox_event};
use crate::hub::{Broadcast, HubClosed, RoomHub, SessionTx};
use crate::now_ms;

pub struct RoomActor;

pub struct RoomArgs {
    pub room: Room,
    pub hub: Arc<RoomHub>,
    pub store: Arc<dyn Store>,
    pub config: Arc<ActorsConfig>,
    pub global_terms: Arc<Vec<String>>,
}

pub struct RoomState {
    room_id: String,
    hub: Arc<RoomHub>,
    store: Arc<dyn Store>,
    config: Arc<ActorsConfig>,
    limits: DanmakuLimits,
    global_terms: Arc<Vec<String>>,
    room_terms: Vec<String>,
    filter: TermFilter,
    mutes: Mutes,
    recent: RecentIds,
    batcher: Batcher,
    next_seq: u64,
    committed_seq: u64,
    /// Accepted, waiting for the write in flight to finish.
    unwritten: Vec<Accepted>,
    /// The write in flight, if any.
    writing: Option<Vec<Accepted>>,
    /// Committed but still held by the batcher: whom to ack if merged.
    unflushed: HashMap<u64, SessionTx>,
    /// Acks for resends of danmaku that are not committed yet.
    deferred_acks: Vec<(u64, SessionTx, String)>,
    flush_tick_at: Option<Instant>,
    drain_waiters: Vec<RpcReplyPort<()>>,
    closing: Option<RpcReplyPort<()>>,
    last_presence: u64,
    gifts: RoomGifts,
    /// Gift sends the store has not answered yet: a drain or close waits
    /// for them, so no sender is left without its receipt.
    gifts_in_flight: usize,
    publish_tick_pending: bool,
    story: RoomStory,
    /// When a `StoryTick` is already scheduled for (wall-clock ms).
    story_tick_at: Option<u64>,
}

struct Accepted {
    item: DanmakuItem,
    sender: SessionTx,
}

impl Actor for RoomActor {
    type Msg = RoomMsg;
    type State = RoomState;
    type Arguments = RoomArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RoomMsg>,
        args: RoomArgs,
    ) -> Result<RoomState, ActorProcessingErr> {
        let RoomArgs {
            room,
            hub,
            store,
            config,
            global_terms,
        } = args;
        let room_id = room.room_id;
        // A barrier through the writer: every write of a previous instance
        // of this room has landed before we read the counter.
        let committed_seq = store.last_danmaku_seq(&room_id).await?;
        let room_terms = store
            .blocked_terms(&TermScope::Room(room_id.clone()))
            .await?;
        let mut mutes = Mutes::new();
        for mute in store.mutes(&room_id, now_ms()).await? {
            mutes.mute(&mute.user_id, mute.until_ms);
        }
        let danmaku = &config.danmaku;
        let mut recent = RecentIds::new(danmaku.dedupe_capacity);
        for item in store
            .recent_danmaku(&room_id, danmaku.dedupe_capacity)
            .await?
        {
            recent.insert(&item.user_id, &item.client_msg_id, item.seq);
        }
        // Sessions that stayed connected through a restart must not see a
        // gap: broadcast what was committed but never broadcast.
        if let Some(broadcast_seq) = hub.prime(committed_seq) {
            let mut after = broadcast_seq;
            while after < committed_seq {
                let items = store.danmaku_after(&room_id, after, 256).await?;
                let Some(last) = items.last().map(|i| i.seq) else {
                    break;
                };
                publish_items(&hub, items, after + 1, last);
                after = last;
            }
        }
        // A room is one live session: its leaderboard covers its gifts.
        let gifts = RoomGifts::load(
            config.gifts.clone(),
            store.as_ref(),
            &room_id,
            room.created_ms,
        )
        .await?;
        let story = RoomStory::load(store.as_ref(), &room_id, config.programs.clone()).await?;
        let filter = TermFilter::new(global_terms.iter().chain(room_terms.iter()));
        tracing::info!(room = %room_id, seq = committed_seq, "room started");
        hub.set_actor(Some(myself));
        Ok(RoomState {
            limits: DanmakuLimits {
                max_chars: danmaku.max_chars,
            },
            batcher: Batcher::new(danmaku.batch.clone()),
            room_id,
            hub,
            store,
            global_terms,
            room_terms,
            filter,
            mutes,
            recent,
            next_seq: committed_seq + 1,
            committed_seq,
            unwritten: Vec::new(),
            writing: None,
            unflushed: HashMap::new(),
            deferred_acks: Vec::new(),
            flush_tick_at: None,
            drain_waiters: Vec::new(),
            closing: None,
            last_presence: u64::MAX,
            gifts,
            gifts_in_flight: 0,
            publish_tick_pending: false,
            story,
            story_tick_at: None,
            config,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<RoomMsg>,
        state: &mut RoomState,
    ) -> Result<(), ActorProcessingErr> {
        myself.send_interval(state.config.presence_interval, || RoomMsg::PresenceTick);
        // A resumed run's window may have closed while the room was down.
        state.story.tick(now_ms());
        state.story_changed(&myself).await?;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<RoomMsg>,
        msg: RoomMsg,
        state: &mut RoomState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RoomMsg::Danmaku(submit) => state.accept(*submit, &myself),
            RoomMsg::Committed(result) => {
                state.committed(result, &myself)?;
                state.story_changed(&myself).await?;
            }
            RoomMsg::Vote(submit) => {
                let VoteSubmit {
                    user_id,
                    input,
                    sender,
                } = *submit;
                state.story.vote(&user_id, &input, sender, now_ms());
                state.story_changed(&myself).await?;
            }
            RoomMsg::Story(command, reply) => {
                let stop = matches!(command, StoryCommand::Stop);
                let result = state.story.command(command, now_ms());
                if stop && result.is_ok() {
                    state.store.delete_story_run(&state.room_id).await?;
                }
                state.story_changed(&myself).await?;
                let _ = reply.send(result);
            }
            RoomMsg::StoryTick => {
                state.story_tick_at = None;
                state.story.tick(now_ms());
                state.story_changed(&myself).await?;
            }
            RoomMsg::FlushTick => {
                state.flush_tick_at = None;
                if let Some(flush) = state.batcher.poll(Instant::now()) {
                    state.broadcast(flush);
                }
                state.schedule_flush(&myself);
            }
            RoomMsg::PresenceTick => state.presence(),
            RoomMsg::DeleteDanmaku { seq, by, reply } => {
                let result = state.delete(seq, &by).await;
                let _ = reply.send(result);
            }
            RoomMsg::SetRoomTerm {
                term,
                add,
                by,
                reply,
            } => {
                let result = state.set_room_term(term, add, &by).await;
                let _ = reply.send(result);
            }
            RoomMsg::GlobalTerms(terms) => {
                state.global_terms = terms;
                state.rebuild_filter();
            }
            RoomMsg::RoomTerms(reply) => {
                let _ = reply.send(state.room_terms.clone());
            }
            RoomMsg::Mute {
                user_id,
                until_ms,
                by,
                reply,
            } => {
                let result = state.mute(user_id, until_ms, &by).await;
                let _ = reply.send(result);
            }
            RoomMsg::Gift(submit) => {
                if state.closing.is_some() {
                    let _ = submit.reply.send(Err(GiftRefusal::unavailable()));
                } else if state
                    .gifts
                    .submit(&state.room_id, &state.store, &myself, *submit)
                {
                    state.gifts_in_flight += 1;
                }
            }
            RoomMsg::GiftStored(stored) => {
                state.gifts_in_flight = state.gifts_in_flight.saturating_sub(1);
                let (goal_event, coins) = state.gifts.stored(&state.room_id, &state.hub, *stored);
                if let Some(event) = goal_event {
                    // The goal's event carries no money: appended after the
                    // gift that reached it, like a stream's events.
                    state.store.append_event(event).await?;
                }
                if coins > 0 {
                    state.story.gift(coins, now_ms());
                    state.story_changed(&myself).await?;
                }
                state.schedule_publish(&myself);
                state.settle(&myself);
            }
            RoomMsg::PublishTick => {
                state.publish_tick_pending = false;
                state.gifts.publish(&state.hub, now_ms());
                state.schedule_publish(&myself);
            }
            RoomMsg::Leaderboard(reply) => {
                let _ = reply.send(state.gifts.top());
            }
            RoomMsg::SetGoal { goal, reply } => {
                let result = state.store.set_room_goal(&state.room_id, goal).await;
                if result.is_ok() {
                    state.gifts.set_goal(&state.hub, goal);
                }
                let _ = reply.send(result.map_err(RoomError::from));
            }
            RoomMsg::Drain(reply) => {
                state.drain_waiters.push(reply);
                state.settle(&myself);
            }
            RoomMsg::Close(reply) => {
                state.closing = Some(reply);
                state.settle(&myself);
            }
            RoomMsg::Crash => panic!("fault injection: room {} asked to crash", state.room_id),
        }
        Ok(())
    }
}

impl RoomState {
    fn accept(&mut self, submit: Submit, myself: &ActorRef<RoomMsg>) {
        let Submit {
            user_id,
            name,
            input,
            sender,
        } = submit;
        let cmid = input.client_msg_id.clone();
        if self.closing.is_some() {
            return sender.error("unavailable", "the room is closing", &cmid);
        }
        let valid = match interactive::validate(&input, &self.limits) {
            Ok(valid) => valid,
            Err(invalid) => {
                reject("bad_request");
                let code = if matches!(invalid, InvalidDanmaku::TooLong { .. }) {
                    "too_large"
                } else {
                    "bad_request"
                };
                return sender.error(code, invalid.to_string(), &cmid);
            }
        };
        let now_ms = now_ms();
        if let Some(until) = self.mutes.muted_until(&user_id, now_ms) {
            reject("muted");
            return sender.error(
                "muted",
                format!("you are muted in this room until {until} (ms since epoch)"),
                &cmid,
            );
        }
        if let Some(seq) = self.recent.get(&user_id, &cmid) {
            // A resend of something already accepted: ack, don't post twice.
            if seq <= self.committed_seq {
                sender.send(Frame::Ack(Ack {
                    client_msg_id: cmid,
                    seq,
                }));
            } else {
                self.deferred_acks.push((seq, sender, cmid));
            }
            return;
        }
        if let Some(term) = self.filter.find(&valid.text) {
            reject("blocked");
            tracing::debug!(room = %self.room_id, user = %user_id, term, "danmaku blocked");
            return sender.error("blocked", "the message contains a blocked term", &cmid);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.recent.insert(&user_id, &cmid, seq);
        let item = DanmakuItem {
            seq,
            user_id,
            name,
            text: valid.text,
            mode: valid.mode as i32,
            color: valid.color,
            ts_ms: now_ms,
            client_msg_id: cmid,
            count: 1,
        };
        self.unwritten.push(Accepted { item, sender });
        self.start_write(myself);
    }

    /// Starts the next write unless one is in flight: while it is, new
    /// danmaku gather in `unwritten` and go together in the next one.
    fn start_write(&mut self, myself: &ActorRef<RoomMsg>) {
        if self.writing.is_some() || self.unwritten.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.unwritten);
        let items: Vec<DanmakuItem> = batch.iter().map(|a| a.item.clone()).collect();
        let event = outbox_event(
            events::DANMAKU_BATCH,
            &self.room_id,
            now_ms(),
            &DanmakuBatch {
                items: items.clone(),
            },
        );
        self.writing = Some(batch);
        let store = self.store.clone();
        let room_id = self.room_id.clone();
        let myself = myself.clone();
        tokio::spawn(async move {
            let result = store
                .append_danmaku(&room_id, items, event)
                .await
                .map_err(|e| e.to_string());
            // If the actor died meanwhile, its successor catches up from storage.
            let _ = myself.cast(RoomMsg::Committed(result));
        });
    }

    fn committed(
        &mut self,
        result: Result<(), String>,
        myself: &ActorRef<RoomMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let batch = self.writing.take().unwrap_or_default();
        if let Err(error) = result {
            for accepted in batch.iter().chain(self.unwritten.iter()) {
                accepted.sender.error(
                    "unavailable",
                    "storage failed, please resend",
                    &accepted.item.client_msg_id,
                );
            }
            return Err(format!("room {}: danmaku write failed: {error}", self.room_id).into());
        }
        let now = Instant::now();
        for Accepted { item, sender } in batch {
            self.story
                .danmaku(&item.user_id, item.seq, &item.text, now_ms());
            self.committed_seq = item.seq;
            self.unflushed.insert(item.seq, sender);
            if let Some(flush) = self.batcher.push(item, now) {
                self.broadcast(flush);
            }
        }
        let committed = self.committed_seq;
        self.deferred_acks.retain(|(seq, sender, cmid)| {
            if *seq > committed {
                return true;
            }
            sender.send(Frame::Ack(Ack {
                client_msg_id: cmid.clone(),
                seq: *seq,
            }));
            false
        });
        self.start_write(myself);
        self.schedule_flush(myself);
        self.settle(myself);
        Ok(())
    }

    fn broadcast(&mut self, flush: Flush) {
        let Flush { items, merged } = flush;
        let mut first = u64::MAX;
        let mut last = 0;
        for m in &merged {
            if let Some(sender) = self.unflushed.remove(&m.seq) {
                sender.send(Frame::Ack(Ack {
                    client_msg_id: m.client_msg_id.clone(),
                    seq: m.seq,
                }));
            }
            first = first.min(m.seq);
            last = last.max(m.seq);
        }
        for item in &items {
            self.unflushed.remove(&item.seq);
            first = first.min(item.seq);
            last = last.max(item.seq);
        }
        if items.is_empty() {
            return;
        }
        metrics::histogram!("live_broadcast_batch_size").record(items.len() as f64);
        publish_items(&self.hub, items, first, last);
    }

    fn schedule_flush(&mut self, myself: &ActorRef<RoomMsg>) {
        let Some(deadline) = self.batcher.next_deadline() else {
            return;
        };
        if self.flush_tick_at.is_some_and(|at| at <= deadline) {
            return;
        }
        self.flush_tick_at = Some(deadline);
        myself.send_after(deadline.saturating_duration_since(Instant::now()), || {
            RoomMsg::FlushTick
        });
    }

    /// Answers drains and finishes a close once nothing is pending.
    fn settle(&mut self, myself: &ActorRef<RoomMsg>) {
        if self.writing.is_some() || !self.unwritten.is_empty() || self.gifts_in_flight > 0 {
            return;
        }
        // Only a drain or a close cuts the batching window short; otherwise
        // held items wait for their window like any other.
        if self.drain_waiters.is_empty() && self.closing.is_none() {
            return;
        }
        if let Some(flush) = self
            .batcher
            .poll(Instant::now() + self.config.danmaku.batch.window)
        {
            self.broadcast(flush);
        }
        self.gifts.flush(&self.hub);
        for waiter in self.drain_waiters.drain(..) {
            let _ = waiter.send(());
        }
        if let Some(reply) = self.closing.take() {
            self.hub.publish(Broadcast::new(
                Frame::RoomClosed(RoomClosed {
                    reason: "room closed".into(),
                }),
                None,
            ));
            self.hub.close(HubClosed::RoomClosed);
            self.story.room_closed();
            let _ = reply.send(());
            myself.stop(Some("room closed".into()));
        }
    }

    /// Broadcasts and persists what the story run did, and wakes the room
    /// for its next deadline.
    async fn story_changed(
        &mut self,
        myself: &ActorRef<RoomMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let now = now_ms();
        self.story
            .publish(&self.room_id, &self.hub, self.store.as_ref(), now)
            .await?;
        let Some(at) = self.story.next_tick_ms() else {
            return Ok(());
        };
        if self.story_tick_at.is_some_and(|scheduled| scheduled <= at) {
            return Ok(());
        }
        self.story_tick_at = Some(at);
        let wait = std::time::Duration::from_millis(at.saturating_sub(now));
        myself.send_after(wait, || RoomMsg::StoryTick);
        Ok(())
    }

    /// Wakes the room when held gifts or a throttled leaderboard are owed.
    fn schedule_publish(&mut self, myself: &ActorRef<RoomMsg>) {
        if self.publish_tick_pending {
            return;
        }
        if let Some(wait) = self.gifts.publish_wait(now_ms()) {
            self.publish_tick_pending = true;
            myself.send_after(wait, || RoomMsg::PublishTick);
        }
    }

    fn presence(&mut self) {
        self.mutes.prune(now_ms());
        let viewers = self.hub.viewers();
        if viewers != self.last_presence {
            self.last_presence = viewers;
            self.hub
                .publish(Broadcast::new(Frame::Presence(Presence { viewers }), None));
        }
    }

    async fn delete(&mut self, seq: u64, by: &str) -> Result<(), RoomError> {
        let action = ModerationAction {
            action: "danmaku_deleted".into(),
            actor_user_id: by.into(),
            seq,
            ..Default::default()
        };
        let event = outbox_event(events::MODERATION, &self.room_id, now_ms(), &action);
        if !self.store.delete_danmaku(&self.room_id, seq, event).await? {
            return Err(RoomError::ItemNotFound("danmaku"));
        }
        self.hub.publish(Broadcast::new(
            Frame::DanmakuDeleted(DanmakuDeleted { seq }),
            None,
        ));
        Ok(())
    }

    async fn set_room_term(
        &mut self,
        term: String,
        add: bool,
        by: &str,
    ) -> Result<bool, RoomError> {
        let scope = TermScope::Room(self.room_id.clone());
        let action = ModerationAction {
            action: if add { "term_added" } else { "term_removed" }.into(),
            actor_user_id: by.into(),
            term: term.clone(),
            ..Default::default()
        };
        let event = outbox_event(events::MODERATION, &self.room_id, now_ms(), &action);
        let changed = if add {
            self.store.add_blocked_term(&scope, &term, event).await?
        } else {
            self.store.remove_blocked_term(&scope, &term, event).await?
        };
        if changed {
            self.room_terms = self.store.blocked_terms(&scope).await?;
            self.rebuild_filter();
        }
        Ok(changed)
    }

    async fn mute(
        &mut self,
        user_id: String,
        until_ms: Option<u64>,
        by: &str,
    ) -> Result<(), RoomError> {
        let action = ModerationAction {
            action: if until_ms.is_some() {
                "user_muted"
            } else {
                "user_unmuted"
            }
            .into(),
            actor_user_id: by.into(),
            target_user_id: user_id.clone(),
            until_ms: until_ms.unwrap_or(0),
            ..Default::default()
        };
        let event = outbox_event(events::MODERATION, &self.room_id, now_ms(), &action);
        self.store
            .set_mute(&self.room_id, &user_id, until_ms, event)
            .await?;
        match until_ms {
            Some(until) => self.mutes.mute(&user_id, until),
            None => {
                self.mutes.unmute(&user_id);
            }
        }
        Ok(())
    }

    fn rebuild_filter(&mut self) {
        self.filter = TermFilter::new(self.global_terms.iter().chain(self.room_terms.iter()));
    }
}

fn reject(reason: &'static str) {
    metrics::counter!("live_danmaku_rejected_total", "reason" => reason).increment(1);
}

/// Encodes committed items once and hands them to every session.
fn publish_items(hub: &RoomHub, items: Vec<DanmakuItem>, first: u64, last: u64) {
    hub.publish(Broadcast::new(
        protocol::danmaku_frame(items),
        Some((first, last)),
    ));
}
