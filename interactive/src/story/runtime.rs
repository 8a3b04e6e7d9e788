//! The story runtime: one validated graph followed by one room, with time
//! as an input. The room actor feeds it votes, gifts, danmaku, operator
//! commands and timeouts, and drains [`StoryEvent`]s to broadcast; after
//! each change it persists [`StoryRuntime::state`], so a restart resumes
//! mid-vote with every ballot ([`StoryRuntime::restore`]).
//!
//! ```text
//!   enter(node) ─ visits += 1, on_enter effects, NodeEntered
//!       └─ open the node's window:
//!            vote      2..5 offered choices -> VoteOpened; ballots; VoteTally every 250 ms at most
//!                      1 offered -> taken at once; 0 -> Ended
//!            gift_goal coins within window_ms -> `reached`, else `missed` at the close
//!            keyword   `users` distinct senders of a word within window_ms -> `matched`, else `missed`
//!            timer     `choice` after after_ms
//!            operator  waits for an operator
//!            (none)    Ended
//!   close -> choice effects -> enter(next)
//! ```
//!
//! Ties are broken without chance where possible: the most votes win; a tie
//! that includes the vote's `default` goes to it; any other tie is a draw
//! seeded by the run's seed and the window's number, and the seed is in
//! the `VoteClosed` event, so anyone can replay the draw.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::expr::{Scope, Value};
use super::faq::FAQ_COOLDOWN_MS;
use super::graph::{Scene, StoryGraph, Trigger};

/// At most one `VoteTally` (or goal progress) per this interval.
pub const TALLY_INTERVAL_MS: u64 = 250;
/// Moves in a row without waiting (single offered choices, zero timers)
/// before the runtime stops following them: a graph whose conditions
/// loop forever ends instead of spinning.
const MAX_CHAINED_MOVES: usize = 64;
/// Steps of history kept (the oldest go first).
const MAX_HISTORY: usize = 1_000;

/// Everything the runtime needs to resume: persisted after each change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoryState {
    pub graph_id: String,
    pub graph_version: u32,
    /// The current node's id.
    pub node: String,
    pub entered_ms: u64,
    pub variables: BTreeMap<String, Value>,
    pub visits: BTreeMap<String, u32>,
    pub history: Vec<Step>,
    pub window: Option<Window>,
    /// When the current pause began; `None` while running.
    pub paused_at_ms: Option<u64>,
    /// The run's seed: each tie-break draw derives from it and the
    /// window's number.
    pub seed: u64,
    pub windows_opened: u64,
    pub ended: bool,
    /// FAQ entry -> when the host last answered it.
    #[serde(default)]
    pub faq_answered: BTreeMap<String, u64>,
}

/// One node entered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub node: String,
    pub entered_ms: u64,
    /// The choice taken to get here (none for the start and jumps).
    pub via: Option<String>,
    pub by: Decision,
}

/// What moved the story.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Start,
    Vote,
    OnlyOption,
    GiftGoalReached,
    GiftGoalMissed,
    KeywordMatched,
    KeywordMissed,
    Timer,
    Operator,
    Jump,
}

/// The open trigger of the current node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// 1, 2, ... over the run: votes name the window they are for.
    pub number: u64,
    pub opened_ms: u64,
    /// When it closes on its own; none for an operator's.
    pub closes_ms: Option<u64>,
    pub kind: WindowKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    Vote {
        /// The choices offered (their conditions held at the opening).
        options: Vec<String>,
        /// user -> option: one counted vote per user.
        ballots: BTreeMap<String, String>,
        allow_change: bool,
    },
    GiftGoal {
        coins: u64,
    },
    Keyword {
        users: BTreeSet<String>,
    },
    Timer,
    Operator,
}

/// How a vote's winner was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum TieBreak {
    /// One option had the most votes.
    None,
    /// A tie (or no votes) that included the vote's default.
    Default,
    /// A tie without the default: a draw from this seed.
    Draw { seed: u64 },
    /// An operator decided.
    Operator,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteOption {
    pub id: String,
    pub label: String,
}

/// What viewers (and the bus) hear about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum StoryEvent {
    NodeEntered {
        node: String,
        scene: Scene,
        host_lines: Vec<String>,
        via: Option<String>,
        by: Decision,
        visits: u32,
        at_ms: u64,
    },
    VoteOpened {
        window: u64,
        options: Vec<VoteOption>,
        closes_ms: u64,
        allow_change: bool,
    },
    VoteTally {
        window: u64,
        tallies: Vec<(String, u64)>,
        voters: u64,
    },
    VoteClosed {
        window: u64,
        tallies: Vec<(String, u64)>,
        voters: u64,
        /// None when an operator jumped elsewhere.
        winner: Option<String>,
        tie_break: TieBreak,
    },
    /// A gift goal, keyword, timer or operator window opened.
    TriggerOpened {
        window: u64,
        trigger: TriggerKind,
        /// Coins (gift goal) or users (keyword) needed; 0 otherwise.
        target: u64,
        closes_ms: Option<u64>,
    },
    /// Coins or users so far in a gift goal or keyword window.
    TriggerProgress {
        window: u64,
        trigger: TriggerKind,
        count: u64,
        target: u64,
    },
    /// The host answers a question from the chat (an FAQ entry).
    HostAnswer {
        faq: String,
        text: String,
        reply_to_user: String,
        reply_to_seq: u64,
        at_ms: u64,
    },
    Paused {
        at_ms: u64,
    },
    Resumed {
        at_ms: u64,
    },
    Ended {
        node: String,
        at_ms: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    GiftGoal,
    Keyword,
    Timer,
    Operator,
}

/// A counted vote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoteReceipt {
    pub window: u64,
    pub option: String,
    /// The voter's earlier vote in this window moved to `option`.
    pub changed_from: Option<String>,
}

/// Why a vote was not counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoteError {
    /// No vote is open now.
    NoVoteOpen,
    /// The vote named a window that is no longer open.
    WindowClosed {
        window: u64,
    },
    UnknownOption {
        option: String,
        options: Vec<String>,
    },
    /// Changes are not allowed in this window; the vote that counts.
    AlreadyVoted {
        option: String,
    },
    Paused,
    Ended,
}

impl VoteError {
    /// The error frame's code.
    pub fn code(&self) -> &'static str {
        match self {
            VoteError::NoVoteOpen => "no_vote_open",
            VoteError::WindowClosed { .. } => "vote_closed",
            VoteError::UnknownOption { .. } => "unknown_option",
            VoteError::AlreadyVoted { .. } => "already_voted",
            VoteError::Paused => "story_paused",
            VoteError::Ended => "story_ended",
        }
    }
}

impl fmt::Display for VoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VoteError::NoVoteOpen => f.write_str("no vote is open"),
            VoteError::WindowClosed { window } => write!(f, "vote {window} is closed"),
            VoteError::UnknownOption { option, options } => {
                write!(
                    f,
                    "`{option}` is not an option; the options are {}",
                    options.join(", ")
                )
            }
            VoteError::AlreadyVoted { option } => {
                write!(
                    f,
                    "you already voted for `{option}` and this vote does not allow changes"
                )
            }
            VoteError::Paused => f.write_str("the story is paused"),
            VoteError::Ended => f.write_str("the story has ended"),
        }
    }
}

/// Why an operator command was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorError {
    Ended,
    AlreadyPaused,
    NotPaused,
    UnknownChoice {
        choice: String,
        choices: Vec<String>,
    },
    UnknownNode {
        node: String,
    },
}

impl fmt::Display for OperatorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OperatorError::Ended => f.write_str("the story has ended"),
            OperatorError::AlreadyPaused => f.write_str("the story is already paused"),
            OperatorError::NotPaused => f.write_str("the story is not paused"),
            OperatorError::UnknownChoice { choice, choices } => write!(
                f,
                "`{choice}` is not a choice of this node; its choices are {}",
                choices.join(", ")
            ),
            OperatorError::UnknownNode { node } => write!(f, "no node `{node}` in this graph"),
        }
    }
}

/// Why a persisted state does not fit a graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreError {
    OtherGraph { state: String, graph: String },
    UnknownNode(String),
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestoreError::OtherGraph { state, graph } => {
                write!(f, "the state belongs to graph {state}, not {graph}")
            }
            RestoreError::UnknownNode(node) => {
                write!(f, "the state's node `{node}` is not in the graph")
            }
        }
    }
}

pub struct StoryRuntime {
    graph: Arc<StoryGraph>,
    state: StoryState,
    events: VecDeque<StoryEvent>,
    /// Votes per offered option of the open vote (derived from ballots).
    tallies: Vec<u64>,
    progress_owed: bool,
    last_progress_ms: u64,
}

impl StoryRuntime {
    /// Starts a run at the graph's start node.
    pub fn start(graph: Arc<StoryGraph>, seed: u64, now_ms: u64) -> Self {
        let state = StoryState {
            graph_id: graph.id.clone(),
            graph_version: graph.version,
            node: graph.nodes[graph.start].id.clone(),
            entered_ms: now_ms,
            variables: graph.variables.clone(),
            visits: BTreeMap::new(),
            history: Vec::new(),
            window: None,
            paused_at_ms: None,
            seed,
            windows_opened: 0,
            ended: false,
            faq_answered: BTreeMap::new(),
        };
        let start = graph.start;
        let mut runtime = Self::with_state(graph, state);
        runtime.enter(start, None, Decision::Start, now_ms, 0);
        runtime
    }

    /// Resumes a persisted run; call [`Self::handle_timeout`] next, in case
    /// its window closed while it was down.
    pub fn restore(graph: Arc<StoryGraph>, state: StoryState) -> Result<Self, RestoreError> {
        if state.graph_id != graph.id || state.graph_version != graph.version {
            return Err(RestoreError::OtherGraph {
                state: format!("{} v{}", state.graph_id, state.graph_version),
                graph: format!("{} v{}", graph.id, graph.version),
            });
        }
        if graph.node_index(&state.node).is_none() {
            return Err(RestoreError::UnknownNode(state.node.clone()));
        }
        let mut runtime = Self::with_state(graph, state);
        runtime.recount();
        Ok(runtime)
    }

    fn with_state(graph: Arc<StoryGraph>, state: StoryState) -> Self {
        Self {
            graph,
            state,
            events: VecDeque::new(),
            tallies: Vec::new(),
            progress_owed: false,
            last_progress_ms: 0,
        }
    }

    pub fn state(&self) -> &StoryState {
        &self.state
    }

    pub fn graph(&self) -> &Arc<StoryGraph> {
        &self.graph
    }

    pub fn poll_event(&mut self) -> Option<StoryEvent> {
        self.events.pop_front()
    }

    /// The open vote's tallies, by option.
    pub fn tallies(&self) -> Vec<(String, u64)> {
        match &self.state.window {
            Some(Window {
                kind: WindowKind::Vote { options, .. },
                ..
            }) => options
                .iter()
                .cloned()
                .zip(self.tallies.iter().copied())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// When [`Self::handle_timeout`] is next needed.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.state.ended || self.state.paused_at_ms.is_some() {
            return None;
        }
        let closes = self.state.window.as_ref().and_then(|w| w.closes_ms);
        let progress = self
            .progress_owed
            .then(|| self.last_progress_ms.saturating_add(TALLY_INTERVAL_MS));
        closes.into_iter().chain(progress).min()
    }

    /// Closes a window whose time has come, and sends owed tallies.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        if self.state.ended || self.state.paused_at_ms.is_some() {
            return;
        }
        let Some(window) = &self.state.window else {
            return;
        };
        if window.closes_ms.is_some_and(|at| at <= now_ms) {
            self.close(now_ms);
        } else {
            self.send_progress(now_ms, false);
        }
    }

    /// One viewer's vote in the open vote (`window`: the one the client
    /// saw, so a late vote for an earlier window is refused as such).
    pub fn vote(
        &mut self,
        user: &str,
        window: Option<u64>,
        option: &str,
        now_ms: u64,
    ) -> Result<VoteReceipt, VoteError> {
        self.handle_timeout(now_ms);
        if self.state.ended {
            return Err(VoteError::Ended);
        }
        if self.state.paused_at_ms.is_some() {
            return Err(VoteError::Paused);
        }
        let Some(open) = &mut self.state.window else {
            return Err(
                window.map_or(VoteError::NoVoteOpen, |window| VoteError::WindowClosed {
                    window,
                }),
            );
        };
        let number = open.number;
        let WindowKind::Vote {
            options,
            ballots,
            allow_change,
        } = &mut open.kind
        else {
            return Err(
                window.map_or(VoteError::NoVoteOpen, |window| VoteError::WindowClosed {
                    window,
                }),
            );
        };
        if let Some(asked) = window
            && asked != number
        {
            return Err(VoteError::WindowClosed { window: asked });
        }
        let Some(slot) = options.iter().position(|o| o == option) else {
            return Err(VoteError::UnknownOption {
                option: option.to_owned(),
                options: options.clone(),
            });
        };
        let changed_from = match ballots.get(user) {
            Some(previous) if previous == option => None,
            Some(previous) if !*allow_change => {
                return Err(VoteError::AlreadyVoted {
                    option: previous.clone(),
                });
            }
            Some(previous) => {
                let previous = previous.clone();
                if let Some(old) = options.iter().position(|o| *o == previous) {
                    self.tallies[old] = self.tallies[old].saturating_sub(1);
                }
                self.tallies[slot] += 1;
                Some(previous)
            }
            None => {
                self.tallies[slot] += 1;
                None
            }
        };
        ballots.insert(user.to_owned(), option.to_owned());
        self.progress_owed = true;
        self.send_progress(now_ms, false);
        Ok(VoteReceipt {
            window: number,
            option: option.to_owned(),
            changed_from,
        })
    }

    /// Coins given in the room (counted by an open gift goal).
    pub fn gift(&mut self, coins: u64, now_ms: u64) {
        if !self.counting(now_ms) {
            return;
        }
        let node = &self.graph.nodes[self.current()];
        let (
            Some(Window {
                kind: WindowKind::GiftGoal { coins: given },
                ..
            }),
            Trigger::GiftGoal {
                coins: target,
                reached,
                ..
            },
        ) = (&mut self.state.window, &node.trigger)
        else {
            return;
        };
        *given = given.saturating_add(coins);
        let reached = (*given >= *target).then_some((*reached, Decision::GiftGoalReached));
        self.counted(reached, now_ms);
    }

    /// A danmaku sent in the room (`seq`: its number in the room): the
    /// host answers it when the FAQ covers it, and an open keyword trigger
    /// counts it.
    pub fn danmaku(&mut self, user: &str, seq: u64, text: &str, now_ms: u64) {
        self.answer(user, seq, text, now_ms);
        if !self.counting(now_ms) {
            return;
        }
        let node = &self.graph.nodes[self.current()];
        let (
            Some(Window {
                kind: WindowKind::Keyword { users: senders },
                ..
            }),
            Trigger::Keyword {
                words,
                users,
                matched,
                ..
            },
        ) = (&mut self.state.window, &node.trigger)
        else {
            return;
        };
        let text = text.to_lowercase();
        if !words.iter().any(|word| text.contains(word.as_str()))
            || !senders.insert(user.to_owned())
        {
            return;
        }
        let reached = (senders.len() as u64 >= u64::from(*users))
            .then_some((*matched, Decision::KeywordMatched));
        self.counted(reached, now_ms);
    }

    /// The FAQ's answer to `text`, unless that entry was answered within
    /// the cooldown (or the story is over).
    fn answer(&mut self, user: &str, seq: u64, text: &str, now_ms: u64) {
        if self.state.ended {
            return;
        }
        let Some(entry) = self.graph.faq.find(text) else {
            return;
        };
        let last = self.state.faq_answered.get(&entry.id).copied();
        if last.is_some_and(|at| now_ms < at.saturating_add(FAQ_COOLDOWN_MS)) {
            return;
        }
        self.state.faq_answered.insert(entry.id.clone(), now_ms);
        self.events.push_back(StoryEvent::HostAnswer {
            faq: entry.id.clone(),
            text: entry.answer.clone(),
            reply_to_user: user.to_owned(),
            reply_to_seq: seq,
            at_ms: now_ms,
        });
    }

    /// Whether gifts and danmaku count now: time applied first, and the
    /// run neither paused nor over.
    fn counting(&mut self, now_ms: u64) -> bool {
        self.handle_timeout(now_ms);
        self.state.paused_at_ms.is_none() && !self.state.ended
    }

    /// After a gift goal or keyword counted something: its choice when the
    /// target was reached, else progress when due.
    fn counted(&mut self, reached: Option<(usize, Decision)>, now_ms: u64) {
        match reached {
            Some((choice, by)) => {
                self.send_progress(now_ms, true);
                self.decide(choice, by, now_ms);
            }
            None => {
                self.progress_owed = true;
                self.send_progress(now_ms, false);
            }
        }
    }

    pub fn pause(&mut self, now_ms: u64) -> Result<(), OperatorError> {
        if self.state.ended {
            return Err(OperatorError::Ended);
        }
        if self.state.paused_at_ms.is_some() {
            return Err(OperatorError::AlreadyPaused);
        }
        self.state.paused_at_ms = Some(now_ms);
        self.events.push_back(StoryEvent::Paused { at_ms: now_ms });
        Ok(())
    }

    /// Resumes; the open window gets back the time the pause took.
    pub fn resume(&mut self, now_ms: u64) -> Result<(), OperatorError> {
        let Some(paused_at) = self.state.paused_at_ms.take() else {
            return Err(OperatorError::NotPaused);
        };
        let paused_for = now_ms.saturating_sub(paused_at);
        if let Some(closes) = self
            .state
            .window
            .as_mut()
            .and_then(|w| w.closes_ms.as_mut())
        {
            *closes = closes.saturating_add(paused_for);
        }
        self.events.push_back(StoryEvent::Resumed { at_ms: now_ms });
        self.handle_timeout(now_ms);
        Ok(())
    }

    /// An operator takes one of the current node's choices now (its
    /// condition aside): an open vote closes with the operator's pick.
    pub fn choose(&mut self, choice: &str, now_ms: u64) -> Result<(), OperatorError> {
        if self.state.ended {
            return Err(OperatorError::Ended);
        }
        let node = &self.graph.nodes[self.current()];
        let Some(index) = node.choices.iter().position(|c| c.id == choice) else {
            return Err(OperatorError::UnknownChoice {
                choice: choice.to_owned(),
                choices: node.choices.iter().map(|c| c.id.clone()).collect(),
            });
        };
        self.close_vote(Some(choice.to_owned()), TieBreak::Operator);
        self.take(index, Decision::Operator, now_ms, 0);
        Ok(())
    }

    /// An operator moves the story to any node (even after its end).
    pub fn jump(&mut self, node: &str, now_ms: u64) -> Result<(), OperatorError> {
        let Some(index) = self.graph.node_index(node) else {
            return Err(OperatorError::UnknownNode {
                node: node.to_owned(),
            });
        };
        self.close_vote(None, TieBreak::Operator);
        self.state.ended = false;
        self.enter(index, None, Decision::Jump, now_ms, 0);
        Ok(())
    }

    fn current(&self) -> usize {
        // Checked at start and restore; a graph never loses nodes.
        self.graph
            .node_index(&self.state.node)
            .unwrap_or(self.graph.start)
    }

    fn enter(
        &mut self,
        index: usize,
        via: Option<String>,
        by: Decision,
        now_ms: u64,
        chained: usize,
    ) {
        let graph = Arc::clone(&self.graph);
        let node = &graph.nodes[index];
        self.state.node = node.id.clone();
        self.state.entered_ms = now_ms;
        let visits = self.state.visits.entry(node.id.clone()).or_default();
        *visits += 1;
        let visits = *visits;
        for effect in &node.on_enter {
            effect.apply(&mut self.state.variables);
        }
        if self.state.history.len() >= MAX_HISTORY {
            self.state.history.remove(0);
        }
        self.state.history.push(Step {
            node: node.id.clone(),
            entered_ms: now_ms,
            via: via.clone(),
            by,
        });
        if self.state.paused_at_ms.is_some() {
            // Entered by an operator during a pause: the new window's
            // pause starts now.
            self.state.paused_at_ms = Some(now_ms);
        }
        self.events.push_back(StoryEvent::NodeEntered {
            node: node.id.clone(),
            scene: node.scene.clone(),
            host_lines: node.host_lines.clone(),
            via,
            by,
            visits,
            at_ms: now_ms,
        });
        self.open(index, now_ms, chained);
    }

    fn open(&mut self, index: usize, now_ms: u64, chained: usize) {
        let graph = Arc::clone(&self.graph);
        let node = &graph.nodes[index];
        self.state.window = None;
        self.tallies.clear();
        self.progress_owed = false;
        let number = self.state.windows_opened + 1;
        let (kind, closes_ms, opened) = match &node.trigger {
            Trigger::End => return self.end(now_ms),
            Trigger::Vote {
                window_ms,
                allow_change,
                ..
            } => {
                let offered = self.offered(index);
                match offered.as_slice() {
                    [] => return self.end(now_ms),
                    [only] => return self.take(*only, Decision::OnlyOption, now_ms, chained + 1),
                    _ => {}
                }
                let closes_ms = now_ms.saturating_add(*window_ms);
                let options: Vec<VoteOption> = offered
                    .iter()
                    .map(|&i| VoteOption {
                        id: node.choices[i].id.clone(),
                        label: node.choices[i].label.clone(),
                    })
                    .collect();
                self.tallies = vec![0; options.len()];
                let event = StoryEvent::VoteOpened {
                    window: number,
                    options: options.clone(),
                    closes_ms,
                    allow_change: *allow_change,
                };
                let kind = WindowKind::Vote {
                    options: options.into_iter().map(|o| o.id).collect(),
                    ballots: BTreeMap::new(),
                    allow_change: *allow_change,
                };
                (kind, Some(closes_ms), event)
            }
            Trigger::GiftGoal {
                coins, window_ms, ..
            } => {
                let closes_ms = now_ms.saturating_add(*window_ms);
                let event = opened_event(number, TriggerKind::GiftGoal, *coins, Some(closes_ms));
                (WindowKind::GiftGoal { coins: 0 }, Some(closes_ms), event)
            }
            Trigger::Keyword {
                users, window_ms, ..
            } => {
                let closes_ms = now_ms.saturating_add(*window_ms);
                let event = opened_event(
                    number,
                    TriggerKind::Keyword,
                    u64::from(*users),
                    Some(closes_ms),
                );
                (
                    WindowKind::Keyword {
                        users: BTreeSet::new(),
                    },
                    Some(closes_ms),
                    event,
                )
            }
            Trigger::Timer { after_ms, choice } => {
                if *after_ms == 0 {
                    return self.take(*choice, Decision::Timer, now_ms, chained + 1);
                }
                let closes_ms = now_ms.saturating_add(*after_ms);
                let event = opened_event(number, TriggerKind::Timer, 0, Some(closes_ms));
                (WindowKind::Timer, Some(closes_ms), event)
            }
            Trigger::Operator => {
                let event = opened_event(number, TriggerKind::Operator, 0, None);
                (WindowKind::Operator, None, event)
            }
        };
        self.state.windows_opened = number;
        self.state.window = Some(Window {
            number,
            opened_ms: now_ms,
            closes_ms,
            kind,
        });
        self.events.push_back(opened);
    }

    /// The window's time is up.
    fn close(&mut self, now_ms: u64) {
        let graph = Arc::clone(&self.graph);
        let node = &graph.nodes[self.current()];
        match node.trigger {
            Trigger::Vote { default, .. } => {
                let (winner, tie_break) = self.winner(default);
                let chosen = node.choices.iter().position(|c| c.id == winner);
                self.close_vote(Some(winner), tie_break);
                match chosen {
                    Some(index) => self.take(index, Decision::Vote, now_ms, 0),
                    None => self.end(now_ms),
                }
            }
            Trigger::GiftGoal { missed, .. } => {
                self.decide(missed, Decision::GiftGoalMissed, now_ms)
            }
            Trigger::Keyword { missed, .. } => self.decide(missed, Decision::KeywordMissed, now_ms),
            Trigger::Timer { choice, .. } => self.decide(choice, Decision::Timer, now_ms),
            Trigger::Operator | Trigger::End => {}
        }
    }

    /// The open vote's winner and how it was chosen.
    fn winner(&self, default: Option<usize>) -> (String, TieBreak) {
        let graph = &self.graph;
        let node = &graph.nodes[self.current()];
        let options = match &self.state.window {
            Some(Window {
                kind: WindowKind::Vote { options, .. },
                ..
            }) => options.clone(),
            _ => Vec::new(),
        };
        let most = self.tallies.iter().copied().max().unwrap_or(0);
        let tied: Vec<&String> = options
            .iter()
            .zip(&self.tallies)
            .filter(|(_, votes)| **votes == most)
            .map(|(option, _)| option)
            .collect();
        if let [only] = tied.as_slice() {
            return ((*only).clone(), TieBreak::None);
        }
        let default = default.map(|i| node.choices[i].id.as_str());
        if let Some(default) = default
            && tied.iter().any(|o| o.as_str() == default)
        {
            return (default.to_owned(), TieBreak::Default);
        }
        let number = self.state.window.as_ref().map_or(0, |w| w.number);
        let seed = draw_seed(self.state.seed, number);
        let pick = (splitmix64(seed) % tied.len().max(1) as u64) as usize;
        let winner = tied.get(pick).map(|s| (*s).clone()).unwrap_or_default();
        (winner, TieBreak::Draw { seed })
    }

    /// Emits `VoteClosed` when a vote is open (and forgets it).
    fn close_vote(&mut self, winner: Option<String>, tie_break: TieBreak) {
        let Some(Window {
            number,
            kind: WindowKind::Vote { ballots, .. },
            ..
        }) = &self.state.window
        else {
            return;
        };
        self.events.push_back(StoryEvent::VoteClosed {
            window: *number,
            tallies: self.tallies(),
            voters: ballots.len() as u64,
            winner,
            tie_break,
        });
        self.state.window = None;
    }

    /// Takes the trigger's choice, or (its condition failing) the first
    /// choice on offer; ends when none is.
    fn decide(&mut self, choice: usize, by: Decision, now_ms: u64) {
        let index = self.current();
        let graph = Arc::clone(&self.graph);
        let offered = |i: &usize| {
            graph.nodes[index].choices[*i]
                .condition
                .as_ref()
                .is_none_or(|c| c.holds(&self.state))
        };
        let pick = Some(choice)
            .filter(offered)
            .or_else(|| self.offered(index).first().copied());
        match pick {
            Some(pick) => self.take(pick, by, now_ms, 0),
            None => self.end(now_ms),
        }
    }

    fn take(&mut self, choice: usize, by: Decision, now_ms: u64, chained: usize) {
        if chained > MAX_CHAINED_MOVES {
            return self.end(now_ms);
        }
        let graph = Arc::clone(&self.graph);
        let choice = &graph.nodes[self.current()].choices[choice];
        for effect in &choice.effects {
            effect.apply(&mut self.state.variables);
        }
        self.enter(choice.next, Some(choice.id.clone()), by, now_ms, chained);
    }

    fn end(&mut self, now_ms: u64) {
        self.state.window = None;
        self.state.ended = true;
        self.events.push_back(StoryEvent::Ended {
            node: self.state.node.clone(),
            at_ms: now_ms,
        });
    }

    /// The node's choices whose conditions hold now.
    fn offered(&self, index: usize) -> Vec<usize> {
        self.graph.nodes[index]
            .choices
            .iter()
            .enumerate()
            .filter(|(_, c)| c.condition.as_ref().is_none_or(|c| c.holds(&self.state)))
            .map(|(i, _)| i)
            .collect()
    }

    /// Tallies from the ballots (after a restore).
    fn recount(&mut self) {
        self.tallies.clear();
        if let Some(Window {
            kind: WindowKind::Vote {
                options, ballots, ..
            },
            ..
        }) = &self.state.window
        {
            self.tallies = options
                .iter()
                .map(|option| ballots.values().filter(|b| *b == option).count() as u64)
                .collect();
        }
    }

    /// Sends the open window's tallies or progress when owed and the
    /// interval allows (or `now`, at a decision).
    fn send_progress(&mut self, now_ms: u64, now: bool) {
        if !now
            && (!self.progress_owed
                || now_ms < self.last_progress_ms.saturating_add(TALLY_INTERVAL_MS))
        {
            return;
        }
        let Some(window) = &self.state.window else {
            return;
        };
        let node = &self.graph.nodes[self.current()];
        let event = match (&window.kind, &node.trigger) {
            (WindowKind::Vote { ballots, .. }, _) => StoryEvent::VoteTally {
                window: window.number,
                tallies: self.tallies(),
                voters: ballots.len() as u64,
            },
            (WindowKind::GiftGoal { coins }, Trigger::GiftGoal { coins: target, .. }) => {
                StoryEvent::TriggerProgress {
                    window: window.number,
                    trigger: TriggerKind::GiftGoal,
                    count: *coins,
                    target: *target,
                }
            }
            (WindowKind::Keyword { users }, Trigger::Keyword { users: target, .. }) => {
                StoryEvent::TriggerProgress {
                    window: window.number,
                    trigger: TriggerKind::Keyword,
                    count: users.len() as u64,
                    target: u64::from(*target),
                }
            }
            _ => return,
        };
        self.progress_owed = false;
        self.last_progress_ms = now_ms;
        self.events.push_back(event);
    }
}

fn opened_event(
    window: u64,
    trigger: TriggerKind,
    target: u64,
    closes_ms: Option<u64>,
) -> StoryEvent {
    StoryEvent::TriggerOpened {
        window,
        trigger,
        target,
        closes_ms,
    }
}

impl Scope for StoryState {
    fn var(&self, name: &str) -> Option<Value> {
        self.variables.get(name).copied()
    }

    fn visits(&self, node: &str) -> u32 {
        self.visits.get(node).copied().unwrap_or(0)
    }
}

/// The seed of window `number`'s draw.
pub fn draw_seed(run_seed: u64, number: u64) -> u64 {
    splitmix64(run_seed ^ number.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// SplitMix64: a fixed, documented mixing function, so a logged seed
/// replays the same draw anywhere.
pub fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
