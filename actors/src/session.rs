//! Sessions: one [`UserActor`] per WebSocket connection, under the
//! [`SessionSupervisor`].
//!
//! The UserActor holds what belongs to the person rather than the room: the
//! grants from their token and their rate limit. The limiter is shared by
//! every session of the same user in the same room, so opening more tabs
//! does not buy more messages.
//!
//! Policy: sessions are not restarted. A failed UserActor makes its
//! connection task close the socket (1011); the client reconnects with
//! `after_seq` and loses nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use interactive::SlidingWindowLimiter;
use interactive::gifts::GiftRequest;
use protocol::v1::server_frame::Frame;
use protocol::v1::{GiftReceipt as GiftReceiptFrame, Pong, client_frame};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::config::ActorsConfig;
use crate::hub::{RoomHub, SessionTx, error_frame};
use crate::room::{GiftRefusal, GiftSubmit, RoomMsg, Submit, VoteSubmit};

/// What a session's token allows inside its room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Grants {
    pub chat: bool,
    /// Moderators are exempt from the rate limit.
    pub moderate: bool,
    /// May send gifts (spending the user's own coins).
    pub gift: bool,
}

#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub session_id: String,
    pub user_id: String,
    pub name: String,
    pub grants: Grants,
    /// The token's region claim (revenue split, rights later).
    pub region: String,
}

pub enum UserMsg {
    Inbound(client_frame::Frame),
}

pub struct UserActor;

pub struct UserArgs {
    info: SessionInfo,
    hub: Arc<RoomHub>,
    tx: SessionTx,
    limiter: SharedLimiter,
    /// Gifts of this session waiting for the room's answer: key -> how
    /// many sends of it wait (a client retrying before the first answer).
    /// Retries join the first send instead of costing the room each.
    waiting_gifts: Arc<Mutex<HashMap<String, u32>>>,
}

impl Actor for UserActor {
    type Msg = UserMsg;
    type State = UserArgs;
    type Arguments = UserArgs;

    async fn pre_start(
        &self,
        _: ActorRef<UserMsg>,
        args: UserArgs,
    ) -> Result<UserArgs, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _: ActorRef<UserMsg>,
        msg: UserMsg,
        state: &mut UserArgs,
    ) -> Result<(), ActorProcessingErr> {
        let UserMsg::Inbound(frame) = msg;
        match frame {
            client_frame::Frame::Ping(ping) => {
                state.tx.send(protocol::v1::server_frame::Frame::Pong(Pong {
                    nonce: ping.nonce,
                }));
            }
            client_frame::Frame::Danmaku(input) => state.danmaku(input),
            client_frame::Frame::Gift(input) => state.gift(input),
            client_frame::Frame::Vote(input) => state.vote(input),
            // A media-plane command and a choice about this connection's
            // frames: the connection task handles them.
            client_frame::Frame::Layer(_) | client_frame::Frame::Captions(_) => {}
        }
        Ok(())
    }
}

impl UserArgs {
    /// Grant and rate limit, then on to the room.
    fn danmaku(&mut self, input: protocol::v1::SendDanmaku) {
        let cmid = input.client_msg_id.clone();
        metrics::counter!("live_danmaku_in_total").increment(1);
        if !self.info.grants.chat {
            metrics::counter!("live_danmaku_rejected_total", "reason" => "forbidden").increment(1);
            return self
                .tx
                .error("forbidden", "your token has no `chat` grant", &cmid);
        }
        if !self.info.grants.moderate {
            let verdict = lock(&self.limiter).try_acquire(Instant::now());
            if let Err(retry_after) = verdict {
                metrics::counter!("live_danmaku_rejected_total", "reason" => "rate_limited")
                    .increment(1);
                let retry_ms = u64::try_from(retry_after.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1);
                return self.tx.send(error_frame(
                    "rate_limited",
                    "too many danmaku, slow down",
                    &cmid,
                    retry_ms,
                ));
            }
        }
        let submit = Submit {
            user_id: self.info.user_id.clone(),
            name: self.info.name.clone(),
            input,
            sender: self.tx.clone(),
        };
        let delivered = self
            .hub
            .actor()
            .is_some_and(|room| room.cast(RoomMsg::Danmaku(Box::new(submit))).is_ok());
        if !delivered {
            self.tx.error(
                "unavailable",
                "the room is restarting, please resend",
                &cmid,
            );
        }
    }
}

impl UserArgs {
    /// Grant check, then to the room; the answer (receipt or error) comes
    /// back to this session only, the broadcast to everyone.
    fn gift(&mut self, input: protocol::v1::SendGift) {
        let key = input.idempotency_key.clone();
        if !self.info.grants.gift {
            return self.tx.send(gift_error(
                "forbidden",
                "your token has no `gift` grant",
                &key,
            ));
        }
        if !key.is_empty() {
            let mut waiting = lock(&self.waiting_gifts);
            if let Some(sends) = waiting.get_mut(&key) {
                *sends += 1;
                metrics::counter!("live_gift_retries_joined_total").increment(1);
                return;
            }
            waiting.insert(key.clone(), 1);
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        let submit = GiftSubmit {
            user_id: self.info.user_id.clone(),
            name: self.info.name.clone(),
            region: self.info.region.clone(),
            request: GiftRequest {
                gift_id: input.gift_id,
                count: input.count,
                to: input.to,
                idempotency_key: input.idempotency_key,
            },
            reply,
        };
        let delivered = self
            .hub
            .actor()
            .is_some_and(|room| room.cast(RoomMsg::Gift(Box::new(submit))).is_ok());
        let tx = self.tx.clone();
        let waiting = self.waiting_gifts.clone();
        tokio::spawn(async move {
            let answer = answer.await;
            let joined = lock(&waiting).remove(&key).map_or(0, |sends| sends - 1);
            let frame = match answer {
                _ if !delivered => refusal_frame(&GiftRefusal::unavailable(), &key),
                Ok(Ok(answer)) => Frame::GiftReceipt(GiftReceiptFrame {
                    idempotency_key: key,
                    id: answer.receipt.gift.gift_id,
                    balance: answer.receipt.balance_after,
                    replayed: answer.replayed,
                }),
                Ok(Err(refusal)) => refusal_frame(&refusal, &key),
                Err(_) => refusal_frame(&GiftRefusal::unavailable(), &key),
            };
            // One answer per send: the retries that joined get the same
            // one, a receipt marked `replayed` (nothing more was charged).
            let copy = (joined > 0).then(|| match &frame {
                Frame::GiftReceipt(receipt) => Frame::GiftReceipt(GiftReceiptFrame {
                    replayed: true,
                    ..receipt.clone()
                }),
                other => other.clone(),
            });
            tx.send(frame);
            for copy in std::iter::repeat_n(copy, joined as usize).flatten() {
                tx.send(copy);
            }
        });
    }
}

impl UserArgs {
    /// To the room, whose story run counts it (anyone in the room may
    /// vote: joining took the `subscribe` grant) and answers the sender.
    fn vote(&mut self, input: protocol::v1::CastVote) {
        let submit = VoteSubmit {
            user_id: self.info.user_id.clone(),
            input,
            sender: self.tx.clone(),
        };
        let delivered = self
            .hub
            .actor()
            .is_some_and(|room| room.cast(RoomMsg::Vote(Box::new(submit))).is_ok());
        if !delivered {
            self.tx.error(
                "unavailable",
                "the room is restarting, please vote again",
                "",
            );
        }
    }
}

fn refusal_frame(refusal: &GiftRefusal, key: &str) -> Frame {
    gift_error(refusal.code, &refusal.message, key)
}

fn gift_error(code: &str, message: &str, key: &str) -> Frame {
    Frame::Error(protocol::v1::Error {
        code: code.to_owned(),
        message: message.to_owned(),
        idempotency_key: key.to_owned(),
        ..Default::default()
    })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The limiter every session of one user in one room shares.
type SharedLimiter = Arc<Mutex<SlidingWindowLimiter>>;

pub struct SessionSupervisor;

pub enum SessionSupervisorMsg {
    Start {
        info: SessionInfo,
        hub: Arc<RoomHub>,
        tx: SessionTx,
        reply: RpcReplyPort<Result<ActorRef<UserMsg>, String>>,
    },
}

pub struct SessionsState {
    config: Arc<ActorsConfig>,
    /// (room, user) -> limiter shared by that user's sessions, with the
    /// number of sessions using it.
    limiters: HashMap<(String, String), (SharedLimiter, usize)>,
    keys: HashMap<ractor::ActorId, (String, String)>,
}

impl Actor for SessionSupervisor {
    type Msg = SessionSupervisorMsg;
    type State = SessionsState;
    type Arguments = Arc<ActorsConfig>;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        config: Arc<ActorsConfig>,
    ) -> Result<SessionsState, ActorProcessingErr> {
        Ok(SessionsState {
            config,
            limiters: HashMap::new(),
            keys: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut SessionsState,
    ) -> Result<(), ActorProcessingErr> {
        let SessionSupervisorMsg::Start {
            info,
            hub,
            tx,
            reply,
        } = msg;
        let key = (hub.room_id().to_owned(), info.user_id.clone());
        let danmaku = &state.config.danmaku;
        let entry = state.limiters.entry(key.clone()).or_insert_with(|| {
            (
                Arc::new(Mutex::new(SlidingWindowLimiter::new(
                    danmaku.rate_limit,
                    danmaku.rate_window,
                ))),
                0,
            )
        });
        entry.1 += 1;
        let args = UserArgs {
            info,
            hub,
            tx,
            limiter: entry.0.clone(),
            waiting_gifts: Arc::default(),
        };
        let result = UserActor::spawn_linked(None, UserActor, args, myself.get_cell()).await;
        let result = match result {
            Ok((actor, _)) => {
                state.keys.insert(actor.get_id(), key);
                Ok(actor)
            }
            Err(error) => {
                state.release(&key);
                Err(error.to_string())
            }
        };
        let _ = reply.send(result);
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut SessionsState,
    ) -> Result<(), ActorProcessingErr> {
        let cell = match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                tracing::warn!(%error, "session actor failed; its socket will be closed");
                cell
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => cell,
            _ => return Ok(()),
        };
        if let Some(key) = state.keys.remove(&cell.get_id()) {
            state.release(&key);
        }
        Ok(())
    }
}

impl SessionsState {
    fn release(&mut self, key: &(String, String)) {
        if let Some(entry) = self.limiters.get_mut(key) {
            entry.1 -= 1;
            if entry.1 == 0 {
                self.limiters.remove(key);
            }
        }
    }
}
