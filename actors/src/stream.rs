//! Streams: one [`StreamActor`] per live stream, under the
//! [`StreamSupervisor`].
//!
//! The media plane owns forwarding; a StreamActor owns what the rest of the
//! engine learns about a stream: the `stream.started` / `stream.ended`
//! events on the bus and the `stream_started` / `stream_ended` frames every
//! session of the room receives. It is fed one message per connection
//! change (never per packet) by the engine's media event pump.
//!
//! Why not under the RoomActor, as the brief drew it: a stream lives in the
//! media thread, independent of the room's danmaku pipeline. Keeping stream
//! actors beside the rooms means a RoomActor restart neither stops nor
//! orphans them, and a StreamActor restart never touches forwarding. It
//! reaches its room's sessions through the room's hub.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use protocol::v1::server_frame::Frame;
use protocol::v1::{StreamEnded, StreamEndedEvent, StreamStarted, StreamStartedEvent};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use sfu::{MediaEvent, Role, SfuEvent, StreamKey};
use storage::Store;

use crate::captions::Captions;
use crate::events::{self, outbox_event};
use crate::hub::{Broadcast, RoomHub};
use crate::now_ms;
use crate::recording::{self, RecordingConfig};
use crate::room::RoomSupervisorMsg;
use crate::supervision::{RestartBudget, Restarts};

/// Finds the current RoomSupervisor (it may have been restarted).
pub type RoomsLocator = Arc<dyn Fn() -> ActorRef<RoomSupervisorMsg> + Send + Sync>;

pub enum StreamSupervisorMsg {
    Media(MediaEvent),
    /// A stream's recording failed while it may still be live.
    RecordingFailed(StreamKey),
}

pub enum StreamMsg {
    SubscriberJoined,
    SubscriberLeft,
    /// Start a recording (at start, and again after one failed).
    Record,
    /// The publisher left: announce the end and stop.
    Ended {
        reason: String,
    },
}

pub struct StreamSupervisor;

pub struct StreamSupervisorArgs {
    pub store: Arc<dyn Store>,
    pub rooms: RoomsLocator,
    pub budget: RestartBudget,
    /// Transcode and record streams (none: forward only).
    pub recording: Option<RecordingConfig>,
    /// Caption streams (none: no captions).
    pub captions: Option<Captions>,
}

pub struct StreamsState {
    args: StreamSupervisorArgs,
    streams: HashMap<StreamKey, Running>,
    by_actor: HashMap<ActorId, StreamKey>,
}

struct Running {
    actor: ActorRef<StreamMsg>,
    start: StreamStart,
    restarts: Restarts,
    /// Restarts of the stream's recording after failures.
    recording_restarts: Restarts,
}

/// What a StreamActor is started with; kept to restart it.
#[derive(Clone)]
struct StreamStart {
    key: StreamKey,
    tracks: Vec<String>,
    publisher: String,
    started_ms: u64,
}

impl Actor for StreamSupervisor {
    type Msg = StreamSupervisorMsg;
    type State = StreamsState;
    type Arguments = StreamSupervisorArgs;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(StreamsState {
            args,
            streams: HashMap::new(),
            by_actor: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let MediaEvent { event, owner } = match msg {
            StreamSupervisorMsg::Media(event) => event,
            StreamSupervisorMsg::RecordingFailed(key) => {
                let budget = state.args.budget;
                if let Some(running) = state.streams.get_mut(&key) {
                    if running.recording_restarts.allow(budget, Instant::now()) {
                        let _ = running.actor.cast(StreamMsg::Record);
                    } else {
                        tracing::error!(room = %key.room, stream = %key.stream, "recording exceeded its restart budget");
                    }
                }
                return Ok(());
            }
        };
        match event {
            SfuEvent::Connected {
                role: Role::Publisher,
                stream,
                tracks,
                ..
            } => {
                let tracks = tracks
                    .iter()
                    .map(|k| if k.is_audio() { "audio" } else { "video" }.to_owned())
                    .collect();
                let start = StreamStart {
                    key: stream.clone(),
                    tracks,
                    publisher: owner.unwrap_or_default(),
                    started_ms: now_ms(),
                };
                if let Some(actor) = state.spawn(&start, false, &myself).await {
                    state.streams.insert(
                        stream,
                        Running {
                            actor,
                            start,
                            restarts: Restarts::default(),
                            recording_restarts: Restarts::default(),
                        },
                    );
                }
            }
            SfuEvent::Connected {
                role: Role::Subscriber,
                stream,
                ..
            } => state.tell(&stream, StreamMsg::SubscriberJoined),
            SfuEvent::Closed {
                role: Role::Subscriber,
                stream,
                ..
            } => state.tell(&stream, StreamMsg::SubscriberLeft),
            SfuEvent::Closed {
                role: Role::Publisher,
                stream,
                ..
            } => {
                if let Some(captions) = &state.args.captions {
                    captions.stop(&stream);
                }
                if let Some(running) = state.streams.remove(&stream) {
                    state.by_actor.remove(&running.actor.get_id());
                    let _ = running.actor.cast(StreamMsg::Ended {
                        reason: "the publisher left".into(),
                    });
                }
            }
            // Counters become metrics on the media thread; frames for
            // transcoders never leave it.
            SfuEvent::Stats(_)
            | SfuEvent::Forwarded { .. }
            | SfuEvent::Ingest(_)
            | SfuEvent::RenditionKeyframeWanted(_)
            | SfuEvent::LocalKeyframeWanted(_) => {}
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(cell, error) = event {
            let Some(key) = state.by_actor.remove(&cell.get_id()) else {
                return Ok(());
            };
            tracing::error!(room = %key.room, stream = %key.stream, %error, "stream actor failed");
            let Some(mut running) = state.streams.remove(&key) else {
                return Ok(());
            };
            if !running.restarts.allow(state.args.budget, Instant::now()) {
                tracing::error!(room = %key.room, stream = %key.stream, "stream actor exceeded its restart budget");
                return Ok(());
            }
            // Forwarding never stopped; the new actor resumes without a
            // second `stream.started`.
            if let Some(actor) = state.spawn(&running.start, true, &myself).await {
                running.actor = actor;
                state.streams.insert(key, running);
            }
        }
        Ok(())
    }
}

impl StreamsState {
    async fn spawn(
        &mut self,
        start: &StreamStart,
        resumed: bool,
        myself: &ActorRef<StreamSupervisorMsg>,
    ) -> Option<ActorRef<StreamMsg>> {
        let room_id = start.key.room.clone();
        let hub = ractor::call_t!(
            (self.args.rooms)(),
            |reply| RoomSupervisorMsg::Acquire { room_id, reply },
            10_000
        )
        .ok()?
        .ok()?;
        let args = StreamArgs {
            start: start.clone(),
            resumed,
            hub,
            store: self.args.store.clone(),
            recording: self.args.recording.clone(),
            captions: self.args.captions.clone(),
            supervisor: myself.clone(),
        };
        match StreamActor::spawn_linked(None, StreamActor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                self.by_actor.insert(actor.get_id(), start.key.clone());
                Some(actor)
            }
            Err(error) => {
                tracing::error!(room = %start.key.room, stream = %start.key.stream, %error, "stream actor did not start");
                None
            }
        }
    }

    fn tell(&self, stream: &StreamKey, msg: StreamMsg) {
        if let Some(running) = self.streams.get(stream) {
            let _ = running.actor.cast(msg);
        }
    }
}

pub struct StreamActor;

pub struct StreamArgs {
    start: StreamStart,
    resumed: bool,
    hub: Arc<RoomHub>,
    store: Arc<dyn Store>,
    recording: Option<RecordingConfig>,
    captions: Option<Captions>,
    supervisor: ActorRef<StreamSupervisorMsg>,
}

pub struct StreamState {
    start: StreamStart,
    hub: Arc<RoomHub>,
    store: Arc<dyn Store>,
    subscribers: u64,
    recording: Option<RecordingConfig>,
    supervisor: ActorRef<StreamSupervisorMsg>,
}

impl Actor for StreamActor {
    type Msg = StreamMsg;
    type State = StreamState;
    type Arguments = StreamArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<StreamMsg>,
        args: StreamArgs,
    ) -> Result<StreamState, ActorProcessingErr> {
        let StreamArgs {
            start,
            resumed,
            hub,
            store,
            recording,
            captions,
            supervisor,
        } = args;
        if !resumed {
            let key = &start.key;
            let payload = StreamStartedEvent {
                room_id: key.room.clone(),
                stream: key.stream.clone(),
                tracks: start.tracks.clone(),
                publisher_user_id: start.publisher.clone(),
            };
            store
                .append_event(outbox_event(
                    events::STREAM_STARTED,
                    &key.room,
                    start.started_ms,
                    &payload,
                ))
                .await?;
            let frame = Frame::StreamStarted(StreamStarted {
                stream: key.stream.clone(),
                tracks: start.tracks.clone(),
                publisher_user_id: start.publisher.clone(),
            });
            hub.publish(Broadcast::new(frame, None));
            tracing::info!(room = %key.room, stream = %key.stream, "stream started");
            // A restarted actor leaves the running recording alone: it
            // lives in the media plane, not here.
            if recording.is_some() && start.tracks.iter().any(|t| t == "video") {
                myself.cast(StreamMsg::Record)?;
            }
            // Like the recording, the listener outlives a restarted actor.
            if let Some(captions) = &captions
                && start.tracks.iter().any(|t| t == "audio")
            {
                captions.listen(key, &hub).await;
            }
        }
        metrics::gauge!("live_streams_live").increment(1.0);
        Ok(StreamState {
            start,
            hub,
            store,
            subscribers: 0,
            recording,
            supervisor,
        })
    }

    async fn post_stop(
        &self,
        _: ActorRef<StreamMsg>,
        _: &mut StreamState,
    ) -> Result<(), ActorProcessingErr> {
        metrics::gauge!("live_streams_live").decrement(1.0);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<StreamMsg>,
        msg: StreamMsg,
        state: &mut StreamState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            StreamMsg::SubscriberJoined => state.subscribers += 1,
            StreamMsg::SubscriberLeft => state.subscribers = state.subscribers.saturating_sub(1),
            StreamMsg::Record => {
                if let Some(config) = &state.recording {
                    let start = &state.start;
                    recording::start(
                        config,
                        &start.key,
                        start.tracks.iter().any(|t| t == "audio"),
                        &start.publisher,
                        state.store.clone(),
                        Some(state.supervisor.clone()),
                    )
                    .await;
                }
            }
            StreamMsg::Ended { reason } => {
                let key = &state.start.key;
                let ended_ms = now_ms();
                let payload = StreamEndedEvent {
                    room_id: key.room.clone(),
                    stream: key.stream.clone(),
                    duration_ms: ended_ms.saturating_sub(state.start.started_ms),
                    reason: reason.clone(),
                };
                state
                    .store
                    .append_event(outbox_event(
                        events::STREAM_ENDED,
                        &key.room,
                        ended_ms,
                        &payload,
                    ))
                    .await?;
                state.hub.publish(Broadcast::new(
                    Frame::StreamEnded(StreamEnded {
                        stream: key.stream.clone(),
                        reason,
                    }),
                    None,
                ));
                tracing::info!(room = %key.room, stream = %key.stream, "stream ended");
                myself.stop(Some("stream ended".into()));
            }
        }
        Ok(())
    }
}
