//! The RoomSupervisor: creates rooms, starts their actors on first use,
//! restarts them within a budget, and fans global rule changes out to them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use protocol::v1::{ModerationAction, RoomClosedEvent, RoomCreated};
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use storage::{Room, Store, TermScope};

use super::{RoomActor, RoomArgs, RoomError, RoomMsg};
use crate::config::ActorsConfig;
use crate::events::{self, outbox_event};
use crate::hub::{HubClosed, RoomHub};
use crate::now_ms;
use crate::supervision::Restarts;

pub struct RoomSupervisor;

pub struct RoomSupervisorArgs {
    pub store: Arc<dyn Store>,
    pub config: Arc<ActorsConfig>,
}

pub enum RoomSupervisorMsg {
    Create {
        room_id: String,
        title: String,
        reply: RpcReplyPort<Result<Room, RoomError>>,
    },
    /// The hub of a room, starting its actor if it is not running.
    Acquire {
        room_id: String,
        reply: RpcReplyPort<Result<Arc<RoomHub>, RoomError>>,
    },
    Close {
        room_id: String,
        reply: RpcReplyPort<Result<(), RoomError>>,
    },
    GlobalTerm {
        term: String,
        add: bool,
        by: String,
        reply: RpcReplyPort<Result<bool, RoomError>>,
    },
    /// Viewer counts of the rooms running on this node.
    Running(RpcReplyPort<HashMap<String, u64>>),
    /// Waits until every running room has committed and broadcast what it
    /// accepted (graceful shutdown).
    DrainAll(RpcReplyPort<()>),
    /// Fault injection for tests: make a room's actor panic.
    Crash { room_id: String },
}

pub struct SupervisorState {
    store: Arc<dyn Store>,
    config: Arc<ActorsConfig>,
    global_terms: Arc<Vec<String>>,
    rooms: HashMap<String, Running>,
    by_actor: HashMap<ActorId, String>,
}

struct Running {
    room: Room,
    hub: Arc<RoomHub>,
    actor: ActorRef<RoomMsg>,
    restarts: Restarts,
}

impl Actor for RoomSupervisor {
    type Msg = RoomSupervisorMsg;
    type State = SupervisorState;
    type Arguments = RoomSupervisorArgs;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let global_terms = Arc::new(args.store.blocked_terms(&TermScope::Global).await?);
        Ok(SupervisorState {
            store: args.store,
            config: args.config,
            global_terms,
            rooms: HashMap::new(),
            by_actor: HashMap::new(),
        })
    }

    async fn post_stop(
        &self,
        _: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Sessions of rooms we no longer supervise must not hang on a hub
        // without an actor: end them so clients reconnect.
        for running in state.rooms.values() {
            running.actor.stop(None);
            running.hub.close(HubClosed::Unavailable);
        }
        metrics::gauge!("live_rooms_active").set(0.0);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RoomSupervisorMsg::Create {
                room_id,
                title,
                reply,
            } => {
                let _ = reply.send(state.create(room_id, title).await);
            }
            RoomSupervisorMsg::Acquire { room_id, reply } => {
                let _ = reply.send(state.acquire(&room_id, myself.get_cell()).await);
            }
            RoomSupervisorMsg::Close { room_id, reply } => {
                let _ = reply.send(state.close(&room_id).await);
            }
            RoomSupervisorMsg::GlobalTerm {
                term,
                add,
                by,
                reply,
            } => {
                let _ = reply.send(state.global_term(term, add, &by).await);
            }
            RoomSupervisorMsg::Running(reply) => {
                let viewers = state
                    .rooms
                    .iter()
                    .map(|(id, r)| (id.clone(), r.hub.viewers()))
                    .collect();
                let _ = reply.send(viewers);
            }
            RoomSupervisorMsg::DrainAll(reply) => {
                let actors: Vec<_> = state.rooms.values().map(|r| r.actor.clone()).collect();
                tokio::spawn(async move {
                    for actor in actors {
                        let _ = ractor::call_t!(actor, RoomMsg::Drain, 10_000);
                    }
                    let _ = reply.send(());
                });
            }
            RoomSupervisorMsg::Crash { room_id } => {
                if let Some(running) = state.rooms.get(&room_id) {
                    let _ = running.actor.cast(RoomMsg::Crash);
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                let Some(room_id) = state.by_actor.remove(&cell.get_id()) else {
                    return Ok(());
                };
                tracing::error!(room = %room_id, %error, "room actor failed");
                metrics::counter!("live_room_restarts_total").increment(1);
                state.restart(&room_id, myself.get_cell()).await;
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                if let Some(room_id) = state.by_actor.remove(&cell.get_id()) {
                    tracing::info!(room = %room_id, ?reason, "room actor stopped");
                    if let Some(running) = state.rooms.remove(&room_id) {
                        running.hub.close(HubClosed::RoomClosed);
                    }
                    state.report();
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl SupervisorState {
    async fn create(&mut self, room_id: String, title: String) -> Result<Room, RoomError> {
        let room = Room {
            room_id: room_id.clone(),
            title: title.clone(),
            created_ms: now_ms(),
            closed_ms: None,
        };
        let event = outbox_event(
            events::ROOM_CREATED,
            &room_id,
            room.created_ms,
            &RoomCreated {
                room_id: room_id.clone(),
                title,
            },
        );
        if self.store.create_room(room.clone(), event).await? {
            Ok(room)
        } else {
            Err(RoomError::AlreadyExists)
        }
    }

    async fn acquire(
        &mut self,
        room_id: &str,
        supervisor: ActorCell,
    ) -> Result<Arc<RoomHub>, RoomError> {
        if let Some(running) = self.rooms.get(room_id) {
            return Ok(running.hub.clone());
        }
        let room = match self.store.room(room_id).await? {
            Some(room) if room.closed_ms.is_none() => room,
            _ => return Err(RoomError::NotFound),
        };
        let hub = RoomHub::new(room_id.to_owned(), self.config.broadcast_capacity);
        let actor = self.spawn(&room, &hub, supervisor).await?;
        self.rooms.insert(
            room_id.to_owned(),
            Running {
                room,
                hub: hub.clone(),
                actor,
                restarts: Restarts::default(),
            },
        );
        self.report();
        Ok(hub)
    }

    async fn spawn(
        &mut self,
        room: &Room,
        hub: &Arc<RoomHub>,
        supervisor: ActorCell,
    ) -> Result<ActorRef<RoomMsg>, RoomError> {
        let args = RoomArgs {
            room: room.clone(),
            hub: hub.clone(),
            store: self.store.clone(),
            config: self.config.clone(),
            global_terms: self.global_terms.clone(),
        };
        let (actor, _) = RoomActor::spawn_linked(None, RoomActor, args, supervisor)
            .await
            .map_err(|e| RoomError::Unavailable(e.to_string()))?;
        self.by_actor.insert(actor.get_id(), room.room_id.clone());
        Ok(actor)
    }

    /// One-for-one restart within the budget; past it the room's sessions are
    /// closed and the next `Acquire` starts it afresh.
    async fn restart(&mut self, room_id: &str, supervisor: ActorCell) {
        let Some(mut running) = self.rooms.remove(room_id) else {
            return;
        };
        running.hub.set_actor(None);
        if !running
            .restarts
            .allow(self.config.restart_budget, Instant::now())
        {
            tracing::error!(room = %room_id, "room exceeded its restart budget; closing its sessions");
            running.hub.close(HubClosed::Unavailable);
            self.stop_program(room_id);
            self.report();
            return;
        }
        match self.spawn(&running.room, &running.hub, supervisor).await {
            Ok(actor) => {
                running.actor = actor;
                self.rooms.insert(room_id.to_owned(), running);
            }
            Err(error) => {
                tracing::error!(room = %room_id, %error, "room failed to restart");
                running.hub.close(HubClosed::Unavailable);
                self.stop_program(room_id);
            }
        }
        self.report();
    }

    async fn close(&mut self, room_id: &str) -> Result<(), RoomError> {
        let event = outbox_event(
            events::ROOM_CLOSED,
            room_id,
            now_ms(),
            &RoomClosedEvent {
                room_id: room_id.to_owned(),
            },
        );
        if !self.store.close_room(room_id, now_ms(), event).await? {
            return Err(RoomError::NotFound);
        }
        if let Some(running) = self.rooms.remove(room_id) {
            self.by_actor.remove(&running.actor.get_id());
            if ractor::call_t!(running.actor, RoomMsg::Close, 10_000).is_err() {
                running.actor.stop(None);
                running.hub.close(HubClosed::RoomClosed);
            }
        }
        self.stop_program(room_id);
        self.report();
        Ok(())
    }

    /// A room gone from this node (closed, or past its restart budget)
    /// takes its program with it: the program's viewers and captions
    /// belong to the hub that just closed. A room started again resumes
    /// its story on a new program.
    fn stop_program(&self, room_id: &str) {
        if let Some(programs) = &self.config.programs {
            programs.stop(room_id);
        }
    }

    async fn global_term(&mut self, term: String, add: bool, by: &str) -> Result<bool, RoomError> {
        let action = ModerationAction {
            action: if add { "term_added" } else { "term_removed" }.into(),
            actor_user_id: by.into(),
            term: term.clone(),
            ..Default::default()
        };
        let event = outbox_event(events::MODERATION, "", now_ms(), &action);
        let changed = if add {
            self.store
                .add_blocked_term(&TermScope::Global, &term, event)
                .await?
        } else {
            self.store
                .remove_blocked_term(&TermScope::Global, &term, event)
                .await?
        };
        if changed {
            self.global_terms = Arc::new(self.store.blocked_terms(&TermScope::Global).await?);
            // One message per room, not per viewer.
            for running in self.rooms.values() {
                let _ = running
                    .actor
                    .cast(RoomMsg::GlobalTerms(self.global_terms.clone()));
            }
        }
        Ok(changed)
    }

    fn report(&self) {
        metrics::gauge!("live_rooms_active").set(self.rooms.len() as f64);
    }
}
