//! A story graph: what authors upload (JSON, schema in docs/story.md) and
//! the validated, immutable form the runtime follows.
//!
//! [`StoryGraph::from_json`] either returns a graph in which every edge
//! lands, every condition parses and type-checks, every node is reachable
//! and every cycle has a way out, or the full list of [`Problem`]s, each
//! naming its node: an author fixes everything in one round.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::expr::{self, Effect, Expr, Kind, Names, Value};
use super::faq::{Faq, FaqEntry, MAX_ANSWER_CHARS, MAX_FAQ_ENTRIES};

/// Bounds an audience vote must stay within.
pub const MIN_VOTE_WINDOW_MS: u64 = 15_000;
pub const MAX_VOTE_WINDOW_MS: u64 = 30 * 60_000;
pub const MIN_VOTE_OPTIONS: usize = 2;
pub const MAX_VOTE_OPTIONS: usize = 5;
/// Bounds that keep a graph a script rather than a data dump.
pub const MAX_NODES: usize = 1_000;
pub const MAX_CHOICES: usize = 16;
/// Ids: what node and choice ids may look like (they travel in frames,
/// events and `visits(...)`).
const MAX_ID_LEN: usize = 64;

// ---- The uploaded form -------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphSpec {
    pub id: String,
    pub version: u32,
    #[serde(default)]
    pub title: String,
    pub start: String,
    #[serde(default)]
    pub variables: BTreeMap<String, Value>,
    pub nodes: Vec<NodeSpec>,
    /// What the virtual host answers when the chat asks (see [`super::faq`]).
    #[serde(default)]
    pub faq: Vec<FaqEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub id: String,
    pub scene: Scene,
    /// What the virtual host says on entering the node, in order.
    #[serde(default)]
    pub host_lines: Vec<String>,
    /// How long the scene runs, when it is known (a clip's length); the
    /// playout loops a shorter clip until the node is left.
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// Effects applied each time the node is entered.
    #[serde(default)]
    pub on_enter: Vec<String>,
    #[serde(default)]
    pub choices: Vec<ChoiceSpec>,
    /// How a choice gets made; none for an ending.
    #[serde(default)]
    pub trigger: Option<TriggerSpec>,
}

/// What viewers see during a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scene {
    /// A pre-encoded clip in the data directory's `clips/`, played into
    /// the room as a server-side publisher.
    Clip(String),
    /// A live stream of the room, by name.
    Live(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChoiceSpec {
    pub id: String,
    #[serde(default)]
    pub label: String,
    pub next: String,
    /// Offered only while this holds (see [`super::expr`]).
    #[serde(default)]
    pub condition: Option<String>,
    /// Applied when the choice is taken, before entering `next`.
    #[serde(default)]
    pub effects: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TriggerSpec {
    /// The audience votes among the node's choices.
    Vote {
        window_ms: u64,
        /// The tie-break (and the outcome of a window nobody voted in).
        #[serde(default)]
        default: Option<String>,
        /// Whether a voter may move their vote while the window is open.
        #[serde(default)]
        allow_change: bool,
    },
    /// Coins given in the room within the window.
    GiftGoal {
        coins: u64,
        window_ms: u64,
        reached: String,
        missed: String,
    },
    /// `users` distinct viewers send a danmaku containing one of `words`
    /// within the window.
    Keyword {
        words: Vec<String>,
        users: u32,
        window_ms: u64,
        matched: String,
        missed: String,
    },
    /// The choice is taken after a fixed time.
    Timer { after_ms: u64, choice: String },
    /// Only an operator moves the story on.
    Operator,
}

// ---- The validated form ------------------------------------------------

/// A validated graph; nodes and choices refer to each other by index.
#[derive(Debug, Clone)]
pub struct StoryGraph {
    pub id: String,
    pub version: u32,
    pub title: String,
    pub start: usize,
    pub variables: BTreeMap<String, Value>,
    pub nodes: Vec<Node>,
    pub faq: Faq,
    index: HashMap<String, usize>,
    spec: GraphSpec,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub id: String,
    pub scene: Scene,
    pub host_lines: Vec<String>,
    pub duration_ms: Option<u64>,
    pub on_enter: Vec<Effect>,
    pub choices: Vec<Choice>,
    pub trigger: Trigger,
}

#[derive(Debug, Clone)]
pub struct Choice {
    pub id: String,
    pub label: String,
    pub next: usize,
    pub condition: Option<Expr>,
    pub effects: Vec<Effect>,
}

/// A trigger with its choices resolved to indices into the node's choices.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    Vote {
        window_ms: u64,
        default: Option<usize>,
        allow_change: bool,
    },
    GiftGoal {
        coins: u64,
        window_ms: u64,
        reached: usize,
        missed: usize,
    },
    Keyword {
        /// Lower-cased.
        words: Vec<String>,
        users: u32,
        window_ms: u64,
        matched: usize,
        missed: usize,
    },
    Timer {
        after_ms: u64,
        choice: usize,
    },
    Operator,
    /// No choices: the story ends here.
    End,
}

/// One thing wrong with an uploaded graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The node it is about, when it is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.node {
            Some(node) => write!(f, "node `{node}`: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl StoryGraph {
    /// Parses and validates an uploaded graph.
    pub fn from_json(json: &str) -> Result<Self, Vec<Problem>> {
        let spec: GraphSpec = serde_json::from_str(json).map_err(|error| {
            vec![Problem {
                node: None,
                message: format!("not a story graph: {error}"),
            }]
        })?;
        Self::from_spec(spec)
    }

    /// Validates a graph; every problem found, or the graph.
    pub fn from_spec(spec: GraphSpec) -> Result<Self, Vec<Problem>> {
        let mut problems = Problems::default();
        if !valid_id(&spec.id) {
            problems.graph(format!("graph id `{}` {ID_RULE}", spec.id));
        }
        if spec.nodes.is_empty() || spec.nodes.len() > MAX_NODES {
            problems.graph(format!("a graph has 1 to {MAX_NODES} nodes"));
        }
        for name in spec.variables.keys() {
            if !valid_id(name) || is_keyword(name) {
                problems.graph(format!(
                    "variable name `{name}` {ID_RULE}, and not a keyword"
                ));
            }
        }
        let mut index = HashMap::new();
        for (i, node) in spec.nodes.iter().enumerate() {
            if !valid_id(&node.id) {
                problems.node(&node.id, format!("id {ID_RULE}"));
            }
            if index.insert(node.id.clone(), i).is_some() {
                problems.node(&node.id, "the id is used by another node too".into());
            }
        }
        let start = index.get(&spec.start).copied();
        if start.is_none() {
            problems.graph(format!("start node `{}` does not exist", spec.start));
        }
        let node_ids: HashSet<&str> = index.keys().map(String::as_str).collect();
        let names = Names {
            variables: &spec.variables,
            nodes: &node_ids,
        };
        let nodes: Vec<Node> = spec
            .nodes
            .iter()
            .map(|node| build_node(node, &index, &names, &mut problems))
            .collect();
        if let Some(start) = start {
            check_shape(&nodes, start, &mut problems);
        }
        check_faq(&spec.faq, &mut problems);
        if !problems.is_empty() {
            return Err(problems.0);
        }
        Ok(Self {
            id: spec.id.clone(),
            version: spec.version,
            title: spec.title.clone(),
            start: start.unwrap_or_default(),
            variables: spec.variables.clone(),
            nodes,
            faq: Faq::new(spec.faq.clone()),
            index,
            spec,
        })
    }

    /// The node with `id`.
    pub fn node_index(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// The graph as uploaded (for storing and serving it back).
    pub fn spec(&self) -> &GraphSpec {
        &self.spec
    }
}

const ID_RULE: &str =
    "must be 1-64 characters of letters, digits, `_` and `-`, starting with a letter";

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id.starts_with(|c: char| c.is_ascii_alphabetic())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn is_keyword(name: &str) -> bool {
    matches!(name, "and" | "or" | "not" | "true" | "false" | "visits")
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn graph(&mut self, message: String) {
        self.0.push(Problem {
            node: None,
            message,
        });
    }

    fn node(&mut self, node: &str, message: String) {
        self.0.push(Problem {
            node: Some(node.to_owned()),
            message,
        });
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn build_node(
    spec: &NodeSpec,
    index: &HashMap<String, usize>,
    names: &Names<'_>,
    problems: &mut Problems,
) -> Node {
    let here = spec.id.as_str();
    let on_enter = effects(&spec.on_enter, names, here, "on_enter", problems);
    if spec.choices.len() > MAX_CHOICES {
        problems.node(here, format!("at most {MAX_CHOICES} choices"));
    }
    let mut seen = HashSet::new();
    let choices: Vec<Choice> = spec
        .choices
        .iter()
        .map(|choice| {
            let what = format!("choice `{}`", choice.id);
            if !valid_id(&choice.id) {
                problems.node(here, format!("{what}: id {ID_RULE}"));
            }
            if !seen.insert(choice.id.as_str()) {
                problems.node(here, format!("{what}: the id is used twice"));
            }
            let next = index.get(&choice.next).copied().unwrap_or_else(|| {
                problems.node(
                    here,
                    format!("{what} leads to `{}`, which does not exist", choice.next),
                );
                usize::MAX
            });
            let condition = choice.condition.as_deref().and_then(|source| {
                match expr::parse_condition(source) {
                    Err(error) => {
                        problems.node(here, format!("{what}: condition `{source}`: {error}"));
                        None
                    }
                    Ok(condition) => {
                        match condition.check(names) {
                            Ok(Kind::Bool) => {}
                            Ok(kind) => problems.node(
                                here,
                                format!("{what}: condition `{source}` is {kind}, not a boolean"),
                            ),
                            Err(reason) => problems
                                .node(here, format!("{what}: condition `{source}`: {reason}")),
                        }
                        Some(condition)
                    }
                }
            });
            Choice {
                id: choice.id.clone(),
                label: choice.label.clone(),
                next,
                condition,
                effects: effects(&choice.effects, names, here, &what, problems),
            }
        })
        .collect();
    let trigger = build_trigger(spec, &choices, problems);
    Node {
        id: spec.id.clone(),
        scene: spec.scene.clone(),
        host_lines: spec.host_lines.clone(),
        duration_ms: spec.duration_ms,
        on_enter,
        choices,
        trigger,
    }
}

fn effects(
    sources: &[String],
    names: &Names<'_>,
    node: &str,
    what: &str,
    problems: &mut Problems,
) -> Vec<Effect> {
    sources
        .iter()
        .filter_map(|source| {
            let effect = expr::parse_effect(source)
                .map_err(|e| e.to_string())
                .and_then(|effect| effect.check(names.variables).map(|()| effect));
            effect
                .map_err(|reason| {
                    problems.node(node, format!("{what}: effect `{source}`: {reason}"))
                })
                .ok()
        })
        .collect()
}

fn build_trigger(spec: &NodeSpec, choices: &[Choice], problems: &mut Problems) -> Trigger {
    let here = spec.id.as_str();
    let mut choice = |id: &str, role: &str| {
        choices.iter().position(|c| c.id == id).unwrap_or_else(|| {
            problems.node(
                here,
                format!("the trigger's {role} `{id}` is not a choice of this node"),
            );
            usize::MAX
        })
    };
    let Some(trigger) = &spec.trigger else {
        if !choices.is_empty() {
            problems.node(
                here,
                "has choices but no trigger (vote, gift_goal, keyword, timer or operator)".into(),
            );
        }
        return Trigger::End;
    };
    let trigger = match trigger {
        TriggerSpec::Vote {
            window_ms,
            default,
            allow_change,
        } => Trigger::Vote {
            window_ms: *window_ms,
            default: default.as_deref().map(|id| choice(id, "default")),
            allow_change: *allow_change,
        },
        TriggerSpec::GiftGoal {
            coins,
            window_ms,
            reached,
            missed,
        } => Trigger::GiftGoal {
            coins: *coins,
            window_ms: *window_ms,
            reached: choice(reached, "`reached` choice"),
            missed: choice(missed, "`missed` choice"),
        },
        TriggerSpec::Keyword {
            words,
            users,
            window_ms,
            matched,
            missed,
        } => Trigger::Keyword {
            words: words.iter().map(|w| w.trim().to_lowercase()).collect(),
            users: *users,
            window_ms: *window_ms,
            matched: choice(matched, "`matched` choice"),
            missed: choice(missed, "`missed` choice"),
        },
        TriggerSpec::Timer {
            after_ms,
            choice: c,
        } => Trigger::Timer {
            after_ms: *after_ms,
            choice: choice(c, "choice"),
        },
        TriggerSpec::Operator => Trigger::Operator,
    };
    match &trigger {
        Trigger::Vote { window_ms, .. } => {
            if !(MIN_VOTE_WINDOW_MS..=MAX_VOTE_WINDOW_MS).contains(window_ms) {
                problems.node(
                    here,
                    "a vote window lasts 15 s to 30 min (window_ms 15000..=1800000)".into(),
                );
            }
            if !(MIN_VOTE_OPTIONS..=MAX_VOTE_OPTIONS).contains(&choices.len()) {
                problems.node(
                    here,
                    format!("a vote offers {MIN_VOTE_OPTIONS} to {MAX_VOTE_OPTIONS} choices, this node has {}", choices.len()),
                );
            }
        }
        Trigger::GiftGoal {
            coins, window_ms, ..
        } => {
            if *coins == 0 || *window_ms == 0 {
                problems.node(here, "a gift goal needs coins and window_ms above 0".into());
            }
        }
        Trigger::Keyword {
            words,
            users,
            window_ms,
            ..
        } => {
            if words.is_empty() || words.iter().any(String::is_empty) {
                problems.node(
                    here,
                    "a keyword trigger needs words, none of them blank".into(),
                );
            }
            if *users == 0 || *window_ms == 0 {
                problems.node(
                    here,
                    "a keyword trigger needs users and window_ms above 0".into(),
                );
            }
        }
        Trigger::Timer { .. } | Trigger::End => {}
        Trigger::Operator => {
            if choices.is_empty() {
                problems.node(
                    here,
                    "an operator trigger needs choices to pick from".into(),
                );
            }
        }
    }
    if matches!(trigger, Trigger::End) {
        return trigger;
    }
    if choices.is_empty() {
        problems.node(here, "has a trigger but no choices".into());
    }
    trigger
}

fn check_faq(entries: &[FaqEntry], problems: &mut Problems) {
    if entries.len() > MAX_FAQ_ENTRIES {
        problems.graph(format!("at most {MAX_FAQ_ENTRIES} FAQ entries"));
    }
    let mut seen = HashSet::new();
    for entry in entries {
        let what = format!("FAQ entry `{}`", entry.id);
        if !valid_id(&entry.id) || !seen.insert(entry.id.as_str()) {
            problems.graph(format!("{what}: ids {ID_RULE}, each used once"));
        }
        if entry.keywords.is_empty() || entry.keywords.iter().any(|k| k.trim().is_empty()) {
            problems.graph(format!("{what}: needs keywords, none of them blank"));
        }
        let chars = entry.answer.trim().chars().count();
        if chars == 0 || chars > MAX_ANSWER_CHARS {
            problems.graph(format!(
                "{what}: the answer has 1 to {MAX_ANSWER_CHARS} characters"
            ));
        }
    }
}

/// Reachability from the start and a way out of every cycle: the checks
/// that need the whole graph. Edges that do not land (already reported)
/// are left out, and a node with one is not also called stuck.
fn check_shape(nodes: &[Node], start: usize, problems: &mut Problems) {
    let edges = |node: &Node| -> Vec<usize> {
        node.choices
            .iter()
            .map(|c| c.next)
            .filter(|&next| next < nodes.len())
            .collect()
    };
    let reachable = {
        let mut seen = vec![false; nodes.len()];
        let mut queue = VecDeque::from([start]);
        seen[start] = true;
        while let Some(i) = queue.pop_front() {
            for next in edges(&nodes[i]) {
                if !seen[next] {
                    seen[next] = true;
                    queue.push_back(next);
                }
            }
        }
        seen
    };
    for (node, reached) in nodes.iter().zip(&reachable) {
        if !reached {
            problems.node(
                &node.id,
                format!("unreachable from the start node `{}`", nodes[start].id),
            );
        }
    }
    // Nodes from which some ending can be reached, walking edges backwards
    // from the endings; a reachable node outside that set is stuck in a
    // cycle with no exit.
    let mut incoming: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, node) in nodes.iter().enumerate() {
        for next in edges(node) {
            incoming[next].push(i);
        }
    }
    let mut exits = vec![false; nodes.len()];
    let mut queue: VecDeque<usize> = nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.trigger == Trigger::End)
        .map(|(i, _)| i)
        .collect();
    for &i in &queue {
        exits[i] = true;
    }
    while let Some(i) = queue.pop_front() {
        for &from in &incoming[i] {
            if !exits[from] {
                exits[from] = true;
                queue.push_back(from);
            }
        }
    }
    for (i, node) in nodes.iter().enumerate() {
        let dangling = edges(node).len() < node.choices.len();
        if reachable[i] && !exits[i] && !dangling {
            problems.node(
                &node.id,
                "is in a cycle with no exit: no ending can be reached from it".into(),
            );
        }
    }
}
