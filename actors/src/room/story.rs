//! The room's story run: an [`interactive::story::StoryRuntime`] fed by the
//! room (votes, committed gifts and danmaku, operator commands, time) whose
//! events become frames for everyone and events on the bus.
//!
//! The room's program (see [`crate::program`]) follows the run: each node's
//! scene is shown there and its host lines spoken; a restored run shows
//! its node's scene again (the program, which outlived the room, already
//! shows it and changes nothing).
//!
//! Persistence: the run's state is written (with its bus events, in one
//! transaction) at every move of the story, and for votes at the tally
//! cadence: a vote's receipt leaves only after the write that holds it, so
//! an acknowledged vote survives a restart.

use std::sync::Arc;

use interactive::story::runtime::{
    StoryEvent, TALLY_INTERVAL_MS, TieBreak, TriggerKind, Window, WindowKind,
};
use interactive::story::{OperatorError, Scene, StoryGraph, StoryRuntime, StoryState, VoteError};
use protocol::v1::server_frame::Frame;
use protocol::v1::{
    CastVote, HostLine, StoryNodeEntered, StoryScene, StoryStatus, StoryTrigger, StoryVoteClosed,
    VoteClosed, VoteCount, VoteOpen, VoteOption, VoteReceipt, VoteTally,
};
use serde::Serialize;
use storage::{OutboxEvent, Store};

use super::RoomError;
use crate::events::{self, outbox_event};
use crate::hub::{Broadcast, RoomHub, SessionTx, error_frame};
use crate::program::Programs;

/// What an operator (or the gateway on their behalf) asks of the run.
#[derive(Debug)]
pub enum StoryCommand {
    Start {
        graph: Arc<StoryGraph>,
        seed: u64,
    },
    Pause,
    Resume,
    Choose(String),
    Jump(String),
    Stop,
    /// Nothing: just the current view.
    Show,
}

/// The run as the HTTP API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct StoryView {
    pub graph_id: String,
    pub version: u32,
    pub node: String,
    pub scene: Scene,
    pub host_lines: Vec<String>,
    /// Every choice of the current node (an operator may take any).
    pub choices: Vec<interactive::story::runtime::VoteOption>,
    pub window: Option<Window>,
    /// The open vote's options with their labels, and counts by option.
    pub vote_options: Vec<interactive::story::runtime::VoteOption>,
    pub tallies: Vec<(String, u64)>,
    pub paused: bool,
    pub ended: bool,
    pub history: Vec<interactive::story::runtime::Step>,
    /// The stream the run's scenes play on (WHEP/HLS like any stream),
    /// while the room's program runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program_stream: Option<String>,
}

/// The room's run, if one is loaded.
#[derive(Default)]
pub struct RoomStory {
    room_id: String,
    runtime: Option<StoryRuntime>,
    /// Where scenes play and host lines are spoken, when this node has
    /// a media plane.
    programs: Option<Programs>,
    /// What the program is owed since the last publish.
    cues: Vec<ProgramCue>,
    /// Receipts of votes the next write holds.
    receipts: Vec<(SessionTx, Frame)>,
    /// Changed since the last write, and when that was.
    dirty: bool,
    last_write_ms: u64,
}

impl RoomStory {
    /// Resumes the room's persisted run, if it has one whose graph is still
    /// stored; a run that cannot be resumed is logged and left alone.
    pub async fn load(
        store: &dyn Store,
        room_id: &str,
        programs: Option<Programs>,
    ) -> Result<Self, storage::StoreError> {
        let idle = Self {
            room_id: room_id.to_owned(),
            programs,
            ..Self::default()
        };
        let Some(saved) = store.story_run(room_id).await? else {
            return Ok(idle);
        };
        let resumed = async {
            let state: StoryState =
                serde_json::from_str(&saved).map_err(|e| format!("unreadable state: {e}"))?;
            let spec = store
                .story_graph(&state.graph_id, state.graph_version)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| {
                    format!("graph {} v{} is gone", state.graph_id, state.graph_version)
                })?;
            let graph = StoryGraph::from_json(&spec)
                .map_err(|p| format!("graph no longer valid: {p:?}"))?;
            StoryRuntime::restore(Arc::new(graph), state).map_err(|e| e.to_string())
        };
        match resumed.await {
            Ok(runtime) => {
                tracing::info!(room = %room_id, node = %runtime.state().node, "story resumed");
                let mut story = Self {
                    runtime: Some(runtime),
                    ..idle
                };
                if let Some(view) = story.view() {
                    story.cues.push(ProgramCue::Show(view.scene));
                }
                Ok(story)
            }
            Err(reason) => {
                tracing::error!(room = %room_id, %reason, "story run not resumed");
                Ok(idle)
            }
        }
    }

    /// When the room should call [`Self::tick`] next (wall-clock ms): the
    /// run's next deadline, or the next write for votes waiting on one.
    pub fn next_tick_ms(&self) -> Option<u64> {
        let runtime = self.runtime.as_ref()?;
        let write = self
            .dirty
            .then(|| self.last_write_ms.saturating_add(TALLY_INTERVAL_MS));
        runtime.poll_timeout().into_iter().chain(write).min()
    }

    pub fn command(
        &mut self,
        command: StoryCommand,
        now_ms: u64,
    ) -> Result<Option<StoryView>, RoomError> {
        let result = match (command, self.runtime.as_mut()) {
            (StoryCommand::Start { graph, seed }, _) => {
                self.runtime = Some(StoryRuntime::start(graph, seed, now_ms));
                Ok(())
            }
            (_, None) => return Err(RoomError::NoStory),
            // Reading changes nothing, so it costs no write.
            (StoryCommand::Show, Some(_)) => return Ok(self.view()),
            (StoryCommand::Stop, Some(_)) => {
                self.runtime = None;
                self.cues.clear();
                if let Some(programs) = &self.programs {
                    programs.stop(&self.room_id);
                }
                // Votes waiting for a write that will not come.
                for (sender, _) in self.receipts.drain(..) {
                    sender.send(vote_error(&VoteError::Ended));
                }
                return Ok(None);
            }
            (StoryCommand::Pause, Some(runtime)) => runtime.pause(now_ms),
            (StoryCommand::Resume, Some(runtime)) => runtime.resume(now_ms),
            (StoryCommand::Choose(choice), Some(runtime)) => runtime.choose(&choice, now_ms),
            (StoryCommand::Jump(node), Some(runtime)) => runtime.jump(&node, now_ms),
        };
        result.map_err(|e: OperatorError| RoomError::StoryRefused(e.to_string()))?;
        self.dirty = true;
        Ok(self.view())
    }

    pub fn view(&self) -> Option<StoryView> {
        let runtime = self.runtime.as_ref()?;
        let state = runtime.state();
        let graph = runtime.graph();
        let node = graph.node_index(&state.node).map(|i| &graph.nodes[i])?;
        Some(StoryView {
            graph_id: graph.id.clone(),
            version: graph.version,
            node: state.node.clone(),
            scene: node.scene.clone(),
            host_lines: node.host_lines.clone(),
            choices: node
                .choices
                .iter()
                .map(|c| interactive::story::runtime::VoteOption {
                    id: c.id.clone(),
                    label: c.label.clone(),
                })
                .collect(),
            window: state.window.clone().map(|mut w| {
                // Ballots are private; the view carries the counts.
                if let WindowKind::Vote { ballots, .. } = &mut w.kind {
                    ballots.clear();
                }
                w
            }),
            vote_options: match &state.window {
                Some(Window {
                    kind: WindowKind::Vote { options, .. },
                    ..
                }) => options
                    .iter()
                    .map(|id| interactive::story::runtime::VoteOption {
                        id: id.clone(),
                        label: node
                            .choices
                            .iter()
                            .find(|c| &c.id == id)
                            .map(|c| c.label.clone())
                            .unwrap_or_default(),
                    })
                    .collect(),
                _ => Vec::new(),
            },
            tallies: runtime.tallies(),
            paused: state.paused_at_ms.is_some(),
            ended: state.ended,
            history: state.history.clone(),
            program_stream: self
                .programs
                .as_ref()
                .filter(|programs| programs.is_running(&self.room_id))
                .map(|programs| programs.stream_name().to_owned()),
        })
    }

    /// The room closed: its program ends with it (the run stays stored).
    pub fn room_closed(&mut self) {
        if let Some(programs) = &self.programs {
            programs.stop(&self.room_id);
        }
    }

    /// A viewer's vote: refused at once, or counted and answered after the
    /// write that holds it.
    pub fn vote(&mut self, user_id: &str, input: &CastVote, sender: SessionTx, now_ms: u64) {
        let Some(runtime) = self.runtime.as_mut() else {
            return sender.send(vote_error(&VoteError::NoVoteOpen));
        };
        let window = (input.window != 0).then_some(input.window);
        match runtime.vote(user_id, window, &input.option, now_ms) {
            Ok(receipt) => {
                metrics::counter!("live_story_votes_total").increment(1);
                self.dirty = true;
                self.receipts.push((
                    sender,
                    Frame::VoteReceipt(VoteReceipt {
                        window: receipt.window,
                        option: receipt.option,
                        changed_from: receipt.changed_from.unwrap_or_default(),
                    }),
                ));
            }
            Err(error) => {
                metrics::counter!("live_story_votes_refused_total", "reason" => error.code())
                    .increment(1);
                sender.send(vote_error(&error));
            }
        }
    }

    /// Coins of a committed gift.
    pub fn gift(&mut self, coins: u64, now_ms: u64) {
        if let Some(runtime) = self.runtime.as_mut() {
            runtime.gift(coins, now_ms);
        }
    }

    /// A committed danmaku.
    pub fn danmaku(&mut self, user_id: &str, seq: u64, text: &str, now_ms: u64) {
        if let Some(runtime) = self.runtime.as_mut() {
            runtime.danmaku(user_id, seq, text, now_ms);
        }
    }

    pub fn tick(&mut self, now_ms: u64) {
        if let Some(runtime) = self.runtime.as_mut() {
            runtime.handle_timeout(now_ms);
        }
    }

    /// Broadcasts what the run said since the last call, and writes the
    /// run (with its bus events) when it moved, or when votes have waited
    /// a tally interval for their write; then sends those votes' receipts.
    pub async fn publish(
        &mut self,
        room_id: &str,
        hub: &Arc<RoomHub>,
        store: &dyn Store,
        now_ms: u64,
    ) -> Result<(), storage::StoreError> {
        let votes_due = now_ms >= self.last_write_ms.saturating_add(TALLY_INTERVAL_MS);
        let Some(runtime) = self.runtime.as_mut() else {
            self.receipts.clear();
            return Ok(());
        };
        let mut frames = Vec::new();
        let mut bus = Vec::new();
        let mut moved = false;
        let graph = Arc::clone(runtime.graph());
        while let Some(event) = runtime.poll_event() {
            moved |= !matches!(
                event,
                StoryEvent::VoteTally { .. } | StoryEvent::TriggerProgress { .. }
            );
            self.cues.extend(ProgramCue::of(&event));
            let frame = frame(&graph.id, event);
            if let Some(event) = bus_event(room_id, &graph, runtime.state(), &frame) {
                bus.push(event);
            }
            frames.push(frame);
        }
        if !frames.is_empty() {
            hub.publish(Broadcast::new(protocol::batch_frame(frames), None));
        }
        if let Some(programs) = &self.programs {
            for cue in self.cues.drain(..) {
                match cue {
                    ProgramCue::Show(scene) => programs.show(room_id, &scene, &graph.id, hub).await,
                    ProgramCue::Say(text) => programs.say(room_id, &text),
                }
            }
        }
        self.cues.clear();
        if moved || (self.dirty && votes_due) {
            let state = serde_json::to_string(runtime.state())
                .map_err(|e| storage::StoreError::Corrupt(format!("story state: {e}")))?;
            store.save_story_run(room_id, state, now_ms, bus).await?;
            self.dirty = false;
            self.last_write_ms = now_ms;
            for (sender, receipt) in self.receipts.drain(..) {
                sender.send(receipt);
            }
        }
        Ok(())
    }
}

/// What a run's event asks of the room's program.
enum ProgramCue {
    Show(Scene),
    Say(String),
}

impl ProgramCue {
    fn of(event: &StoryEvent) -> Vec<Self> {
        match event {
            StoryEvent::NodeEntered {
                scene, host_lines, ..
            } => std::iter::once(Self::Show(scene.clone()))
                .chain(host_lines.iter().cloned().map(Self::Say))
                .collect(),
            StoryEvent::HostAnswer { text, .. } => vec![Self::Say(text.clone())],
            _ => Vec::new(),
        }
    }
}

fn vote_error(error: &VoteError) -> Frame {
    error_frame(error.code(), error.to_string(), "", 0)
}

fn counts(tallies: &[(String, u64)]) -> Vec<VoteCount> {
    tallies
        .iter()
        .map(|(option, votes)| VoteCount {
            option: option.clone(),
            votes: *votes,
        })
        .collect()
}

fn tie_break(tie_break: TieBreak) -> (&'static str, u64) {
    match tie_break {
        TieBreak::None => ("none", 0),
        TieBreak::Default => ("default", 0),
        TieBreak::Draw { seed } => ("draw", seed),
        TieBreak::Operator => ("operator", 0),
    }
}

fn snake<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// One runtime event as the frame viewers get.
fn frame(graph_id: &str, event: StoryEvent) -> Frame {
    match event {
        StoryEvent::NodeEntered {
            node,
            scene,
            host_lines,
            via,
            by,
            at_ms,
            ..
        } => {
            let (scene_kind, scene_source) = match scene {
                Scene::Clip(file) => ("clip", file),
                Scene::Live(stream) => ("live", stream),
            };
            Frame::Scene(StoryScene {
                graph_id: graph_id.to_owned(),
                node,
                scene_kind: scene_kind.to_owned(),
                scene_source,
                host_lines,
                via: via.unwrap_or_default(),
                by: snake(&by),
                at_ms,
            })
        }
        StoryEvent::VoteOpened {
            window,
            options,
            closes_ms,
            allow_change,
        } => Frame::VoteOpen(VoteOpen {
            window,
            options: options
                .into_iter()
                .map(|o| VoteOption {
                    id: o.id,
                    label: o.label,
                })
                .collect(),
            closes_ms,
            allow_change,
        }),
        StoryEvent::VoteTally {
            window,
            tallies,
            voters,
        } => Frame::VoteTally(VoteTally {
            window,
            tallies: counts(&tallies),
            voters,
        }),
        StoryEvent::VoteClosed {
            window,
            tallies,
            voters,
            winner,
            tie_break: how,
        } => {
            let (how, seed) = tie_break(how);
            Frame::VoteClosed(VoteClosed {
                window,
                tallies: counts(&tallies),
                voters,
                winner: winner.unwrap_or_default(),
                tie_break: how.to_owned(),
                seed,
            })
        }
        StoryEvent::TriggerOpened {
            window,
            trigger,
            target,
            closes_ms,
        } => Frame::StoryTrigger(StoryTrigger {
            window,
            trigger: trigger_name(trigger).to_owned(),
            count: 0,
            target,
            closes_ms: closes_ms.unwrap_or(0),
        }),
        StoryEvent::TriggerProgress {
            window,
            trigger,
            count,
            target,
        } => Frame::StoryTrigger(StoryTrigger {
            window,
            trigger: trigger_name(trigger).to_owned(),
            count,
            target,
            closes_ms: 0,
        }),
        StoryEvent::HostAnswer {
            faq,
            text,
            reply_to_user,
            reply_to_seq,
            at_ms,
        } => Frame::HostLine(HostLine {
            text,
            faq_id: faq,
            reply_to_user,
            reply_to_seq,
            at_ms,
        }),
        StoryEvent::Paused { at_ms } => status("paused", "", at_ms),
        StoryEvent::Resumed { at_ms } => status("resumed", "", at_ms),
        StoryEvent::Ended { node, at_ms } => status("ended", &node, at_ms),
    }
}

fn trigger_name(trigger: TriggerKind) -> &'static str {
    match trigger {
        TriggerKind::GiftGoal => "gift_goal",
        TriggerKind::Keyword => "keyword",
        TriggerKind::Timer => "timer",
        TriggerKind::Operator => "operator",
    }
}

fn status(status: &str, node: &str, at_ms: u64) -> Frame {
    Frame::StoryStatus(StoryStatus {
        status: status.to_owned(),
        node: node.to_owned(),
        at_ms,
    })
}

/// The bus event of a frame, for the two the bus carries.
fn bus_event(
    room_id: &str,
    graph: &StoryGraph,
    state: &StoryState,
    frame: &Frame,
) -> Option<OutboxEvent> {
    match frame {
        Frame::Scene(scene) => Some(outbox_event(
            events::STORY_NODE_ENTERED,
            room_id,
            scene.at_ms,
            &StoryNodeEntered {
                room_id: room_id.to_owned(),
                graph_id: graph.id.clone(),
                graph_version: graph.version,
                node: scene.node.clone(),
                via: scene.via.clone(),
                by: scene.by.clone(),
                at_ms: scene.at_ms,
            },
        )),
        Frame::VoteClosed(closed) => Some(outbox_event(
            events::VOTE_CLOSED,
            room_id,
            state.entered_ms,
            &StoryVoteClosed {
                room_id: room_id.to_owned(),
                graph_id: graph.id.clone(),
                result: Some(closed.clone()),
            },
        )),
        _ => None,
    }
}
