//! The EngineSupervisor: root of the tree. It starts the RoomSupervisor, the
//! SessionSupervisor and the OutboxRelay, restarts any of them one-for-one
//! within the restart budget, and stops the engine past it.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use bus::EventBus;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use storage::Store;

use crate::config::ActorsConfig;
use crate::relay::{OutboxRelay, RelayArgs, RelayMsg};
use crate::room::{RoomSupervisor, RoomSupervisorArgs, RoomSupervisorMsg};
use crate::session::{SessionSupervisor, SessionSupervisorMsg};
use crate::stream::{RoomsLocator, StreamSupervisor, StreamSupervisorArgs, StreamSupervisorMsg};
use crate::supervision::Restarts;

/// The current children, shared with the gateway: a restarted child
/// replaces its entry, so callers always reach the live one.
pub struct Children {
    rooms: ActorRef<RoomSupervisorMsg>,
    sessions: ActorRef<SessionSupervisorMsg>,
    relay: ActorRef<RelayMsg>,
    streams: ActorRef<StreamSupervisorMsg>,
}

/// The gateway's view of the actor tree.
#[derive(Clone)]
pub struct Actors {
    children: Arc<RwLock<Children>>,
    root: ActorRef<()>,
}

impl Actors {
    pub async fn start(
        store: Arc<dyn Store>,
        bus: Arc<dyn EventBus>,
        config: ActorsConfig,
    ) -> Result<Self, ractor::SpawnErr> {
        let deps = Deps {
            store,
            bus,
            config: Arc::new(config),
        };
        let (root, _) = Actor::spawn(None, EngineSupervisor, deps).await?;
        let children = root
            .call(EngineCall::Children, None)
            .await
            .ok()
            .and_then(|r| r.success_or(()).ok())
            .ok_or_else(|| {
                ractor::SpawnErr::StartupFailed(
                    "engine supervisor did not report its children".into(),
                )
            })?;
        Ok(Self {
            children,
            root: root.get_cell().into(),
        })
    }

    pub fn rooms(&self) -> ActorRef<RoomSupervisorMsg> {
        self.children
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .rooms
            .clone()
    }

    pub fn sessions(&self) -> ActorRef<SessionSupervisorMsg> {
        self.children
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .sessions
            .clone()
    }

    pub fn streams(&self) -> ActorRef<StreamSupervisorMsg> {
        self.children
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .streams
            .clone()
    }

    pub fn relay(&self) -> ActorRef<RelayMsg> {
        self.children
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .relay
            .clone()
    }

    /// Graceful stop: every room commits and broadcasts what it accepted,
    /// the relay publishes what it can, then the tree stops.
    pub async fn shutdown(&self) {
        let _ = ractor::call_t!(self.rooms(), RoomSupervisorMsg::DrainAll, 15_000);
        let _ = ractor::call_t!(self.relay(), RelayMsg::Drain, 5_000);
        self.root.stop(Some("shutdown".into()));
    }

    /// Resolves when the root supervisor has stopped (shutdown, or a child
    /// past its restart budget).
    pub async fn stopped(&self) {
        while self.root.get_status() != ractor::ActorStatus::Stopped {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

pub struct EngineSupervisor;

pub struct Deps {
    store: Arc<dyn Store>,
    bus: Arc<dyn EventBus>,
    config: Arc<ActorsConfig>,
}

pub enum EngineCall {
    Children(ractor::RpcReplyPort<Arc<RwLock<Children>>>),
}

pub struct EngineState {
    deps: Deps,
    children: Arc<RwLock<Children>>,
    rooms_cell: Arc<RwLock<ActorRef<RoomSupervisorMsg>>>,
    locator: RoomsLocator,
    restarts: [Restarts; 4],
}

#[derive(Clone, Copy)]
enum Child {
    Rooms = 0,
    Sessions = 1,
    Relay = 2,
    Streams = 3,
}

impl Deps {
    async fn spawn_rooms(
        &self,
        supervisor: ActorCell,
    ) -> Result<ActorRef<RoomSupervisorMsg>, ractor::SpawnErr> {
        let args = RoomSupervisorArgs {
            store: self.store.clone(),
            config: self.config.clone(),
        };
        Ok(
            RoomSupervisor::spawn_linked(None, RoomSupervisor, args, supervisor)
                .await?
                .0,
        )
    }

    async fn spawn_sessions(
        &self,
        supervisor: ActorCell,
    ) -> Result<ActorRef<SessionSupervisorMsg>, ractor::SpawnErr> {
        Ok(SessionSupervisor::spawn_linked(
            None,
            SessionSupervisor,
            self.config.clone(),
            supervisor,
        )
        .await?
        .0)
    }

    async fn spawn_streams(
        &self,
        supervisor: ActorCell,
        rooms: RoomsLocator,
    ) -> Result<ActorRef<StreamSupervisorMsg>, ractor::SpawnErr> {
        let args = StreamSupervisorArgs {
            store: self.store.clone(),
            rooms,
            budget: self.config.restart_budget,
            recording: self.config.recording.clone(),
            captions: self.config.captions.clone(),
        };
        Ok(
            StreamSupervisor::spawn_linked(None, StreamSupervisor, args, supervisor)
                .await?
                .0,
        )
    }

    async fn spawn_relay(
        &self,
        supervisor: ActorCell,
    ) -> Result<ActorRef<RelayMsg>, ractor::SpawnErr> {
        let args = RelayArgs {
            store: self.store.clone(),
            bus: self.bus.clone(),
            batch: self.config.relay_batch,
        };
        Ok(
            OutboxRelay::spawn_linked(None, OutboxRelay, args, supervisor)
                .await?
                .0,
        )
    }
}

impl Actor for EngineSupervisor {
    type Msg = EngineCall;
    type State = EngineState;
    type Arguments = Deps;

    async fn pre_start(
        &self,
        myself: ActorRef<EngineCall>,
        deps: Deps,
    ) -> Result<EngineState, ActorProcessingErr> {
        let cell = myself.get_cell();
        let rooms = deps.spawn_rooms(cell.clone()).await?;
        // Stream actors reach rooms through this cell, which follows a
        // restarted RoomSupervisor.
        let rooms_cell = Arc::new(RwLock::new(rooms.clone()));
        let locator: RoomsLocator = {
            let cell = rooms_cell.clone();
            Arc::new(move || cell.read().unwrap_or_else(|e| e.into_inner()).clone())
        };
        let children = Children {
            rooms,
            sessions: deps.spawn_sessions(cell.clone()).await?,
            relay: deps.spawn_relay(cell.clone()).await?,
            streams: deps.spawn_streams(cell, locator.clone()).await?,
        };
        Ok(EngineState {
            deps,
            children: Arc::new(RwLock::new(children)),
            rooms_cell,
            locator,
            restarts: Default::default(),
        })
    }

    async fn handle(
        &self,
        _: ActorRef<EngineCall>,
        msg: EngineCall,
        state: &mut EngineState,
    ) -> Result<(), ActorProcessingErr> {
        let EngineCall::Children(reply) = msg;
        let _ = reply.send(state.children.clone());
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<EngineCall>,
        event: SupervisionEvent,
        state: &mut EngineState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match event {
            SupervisionEvent::ActorFailed(cell, error) => (cell, error.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "stopped".into()))
            }
            _ => return Ok(()),
        };
        if myself.get_status() != ractor::ActorStatus::Running {
            return Ok(());
        }
        let Some(child) = state.which(&cell) else {
            return Ok(());
        };
        tracing::error!(child = child.name(), %why, "engine child stopped; restarting");
        if !state.restarts[child as usize].allow(state.deps.config.restart_budget, Instant::now()) {
            return Err(format!("{} exceeded its restart budget", child.name()).into());
        }
        let supervisor = myself.get_cell();
        match child {
            Child::Rooms => {
                let rooms = state.deps.spawn_rooms(supervisor).await?;
                *state.rooms_cell.write().unwrap_or_else(|e| e.into_inner()) = rooms.clone();
                state.children_mut().rooms = rooms;
            }
            Child::Sessions => {
                let sessions = state.deps.spawn_sessions(supervisor).await?;
                state.children_mut().sessions = sessions;
            }
            Child::Relay => {
                let relay = state.deps.spawn_relay(supervisor).await?;
                state.children_mut().relay = relay;
            }
            Child::Streams => {
                let streams = state
                    .deps
                    .spawn_streams(supervisor, state.locator.clone())
                    .await?;
                state.children_mut().streams = streams;
            }
        }
        Ok(())
    }
}

impl EngineState {
    fn children_mut(&self) -> std::sync::RwLockWriteGuard<'_, Children> {
        self.children.write().unwrap_or_else(|e| e.into_inner())
    }

    fn which(&self, cell: &ActorCell) -> Option<Child> {
        let children = self.children.read().unwrap_or_else(|e| e.into_inner());
        let id = cell.get_id();
        [
            (children.rooms.get_id(), Child::Rooms),
            (children.sessions.get_id(), Child::Sessions),
            (children.relay.get_id(), Child::Relay),
            (children.streams.get_id(), Child::Streams),
        ]
        .into_iter()
        .find_map(|(child_id, child)| (child_id == id).then_some(child))
    }
}

impl Child {
    fn name(self) -> &'static str {
        match self {
            Child::Rooms => "room supervisor",
            Child::Sessions => "session supervisor",
            Child::Relay => "outbox relay",
            Child::Streams => "stream supervisor",
        }
    }
}
