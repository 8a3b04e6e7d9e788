//! The runtime and validation against graphs an author would write.

use std::sync::Arc;

use serde_json::json;

use super::Value;
use super::graph::{Problem, StoryGraph};
use super::runtime::*;

const T0: u64 = 1_700_000_000_000;
const BRAND_LAUNCH: &str = include_str!("../../../examples/brand-launch.json");

fn graph(json: serde_json::Value) -> Arc<StoryGraph> {
    Arc::new(StoryGraph::from_json(&json.to_string()).expect("a valid graph"))
}

fn problems(json: serde_json::Value) -> Vec<Problem> {
    StoryGraph::from_json(&json.to_string()).expect_err("an invalid graph")
}

fn events(runtime: &mut StoryRuntime) -> Vec<StoryEvent> {
    std::iter::from_fn(|| runtime.poll_event()).collect()
}

fn node_entered(events: &[StoryEvent]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            StoryEvent::NodeEntered { node, .. } => Some(node.as_str()),
            _ => None,
        })
        .collect()
}

/// A `VoteClosed`: winner, tie-break, tallies, voters.
type Closed = (Option<String>, TieBreak, Vec<(String, u64)>, u64);

fn vote_closed(events: &[StoryEvent]) -> Option<Closed> {
    events.iter().find_map(|e| match e {
        StoryEvent::VoteClosed {
            winner,
            tie_break,
            tallies,
            voters,
            ..
        } => Some((winner.clone(), *tie_break, tallies.clone(), *voters)),
        _ => None,
    })
}

/// A vote among `options` (each leading to an ending of the same name).
fn vote_graph(options: &[&str], default: Option<&str>, allow_change: bool) -> Arc<StoryGraph> {
    let choices: Vec<_> = options
        .iter()
        .map(|o| json!({ "id": o, "label": o.to_uppercase(), "next": format!("end-{o}") }))
        .collect();
    let mut nodes = vec![json!({
        "id": "ask", "scene": {"live": "main"}, "choices": choices,
        "trigger": {"vote": {"window_ms": 30_000, "default": default, "allow_change": allow_change}}
    })];
    nodes.extend(
        options
            .iter()
            .map(|o| json!({ "id": format!("end-{o}"), "scene": {"clip": format!("{o}.webm")} })),
    );
    graph(json!({ "id": "vote", "version": 1, "start": "ask", "nodes": nodes }))
}

#[test]
fn the_brand_launch_sample_is_valid_and_runs_to_its_end() {
    let graph = Arc::new(StoryGraph::from_json(BRAND_LAUNCH).expect("the sample validates"));
    let mut run = StoryRuntime::start(graph, 7, T0);
    assert_eq!(node_entered(&events(&mut run)), ["intro"]);
    assert_eq!(run.poll_timeout(), Some(T0 + 20_000));
    run.handle_timeout(T0 + 20_000);
    let seen = events(&mut run);
    assert_eq!(node_entered(&seen), ["pick-colour"]);
    assert!(
        seen.iter()
            .any(|e| matches!(e, StoryEvent::VoteOpened { options, .. } if options.len() == 2))
    );
    run.vote("ann", None, "aurora", T0 + 21_000).unwrap();
    run.handle_timeout(T0 + 50_000);
    let seen = events(&mut run);
    assert_eq!(vote_closed(&seen).unwrap().0.as_deref(), Some("aurora"));
    assert_eq!(node_entered(&seen), ["reveal-aurora"]);
    run.gift(600, T0 + 51_000);
    run.gift(400, T0 + 52_000);
    assert_eq!(node_entered(&events(&mut run)), ["bonus"]);
    assert_eq!(run.state().variables["hype"], Value::Int(11));
    assert_eq!(run.state().variables["bonus_unlocked"], Value::Bool(true));
    run.handle_timeout(T0 + 82_000);
    assert_eq!(node_entered(&events(&mut run)), ["qa"]);
    run.handle_timeout(T0 + 202_000);
    let seen = events(&mut run);
    assert_eq!(node_entered(&seen), ["outro"]);
    assert!(matches!(seen.last(), Some(StoryEvent::Ended { node, .. }) if node == "outro"));
    assert!(run.state().ended);
    let path: Vec<(&str, Decision)> = run
        .state()
        .history
        .iter()
        .map(|s| (s.node.as_str(), s.by))
        .collect();
    assert_eq!(
        path,
        [
            ("intro", Decision::Start),
            ("pick-colour", Decision::Timer),
            ("reveal-aurora", Decision::Vote),
            ("bonus", Decision::GiftGoalReached),
            ("qa", Decision::Timer),
            ("outro", Decision::KeywordMissed),
        ]
    );
}

#[test]
fn a_thousand_voters_with_duplicates_and_changes_count_once_each() {
    let mut run = StoryRuntime::start(
        vote_graph(&["red", "blue", "green"], Some("red"), true),
        1,
        T0,
    );
    events(&mut run);
    let options = ["red", "blue", "green"];
    for n in 0..1000u64 {
        let user = format!("viewer-{n}");
        let first = options[(n % 3) as usize];
        run.vote(&user, Some(1), first, T0 + n).unwrap();
        // A double tap: the same vote again changes nothing.
        let again = run.vote(&user, Some(1), first, T0 + n).unwrap();
        assert_eq!(again.changed_from, None);
        // Every fourth viewer changes their mind to blue.
        if n % 4 == 0 && first != "blue" {
            let moved = run.vote(&user, Some(1), "blue", T0 + n).unwrap();
            assert_eq!(moved.changed_from.as_deref(), Some(first));
        }
    }
    let tallies = run.tallies();
    let total: u64 = tallies.iter().map(|(_, n)| n).sum();
    assert_eq!(total, 1000, "one counted vote per user: {tallies:?}");
    // Counted by hand: red and green lose their n % 4 == 0 voters.
    let expected = |colour: usize| {
        (0..1000u64)
            .filter(|n| {
                let first = (n % 3) as usize;
                let moved = n % 4 == 0 && first != 1;
                (if moved { 1 } else { first }) == colour
            })
            .count() as u64
    };
    assert_eq!(
        tallies,
        vec![
            ("red".to_owned(), expected(0)),
            ("blue".to_owned(), expected(1)),
            ("green".to_owned(), expected(2)),
        ]
    );
    run.handle_timeout(T0 + 30_000);
    let seen = events(&mut run);
    let (winner, tie_break, closed_tallies, voters) = vote_closed(&seen).unwrap();
    assert_eq!(
        (winner.as_deref(), tie_break, voters),
        (Some("blue"), TieBreak::None, 1000)
    );
    assert_eq!(closed_tallies, tallies);
    assert_eq!(node_entered(&seen), ["end-blue"]);
}

#[test]
fn tallies_go_out_a_few_times_a_second_not_per_vote() {
    let mut run = StoryRuntime::start(vote_graph(&["a", "b"], None, false), 1, T0);
    events(&mut run);
    for n in 0..1000u64 {
        // 1000 votes over one second.
        run.vote(
            &format!("u{n}"),
            None,
            if n % 2 == 0 { "a" } else { "b" },
            T0 + n,
        )
        .unwrap();
        if let Some(at) = run.poll_timeout().filter(|at| *at <= T0 + n) {
            run.handle_timeout(at);
        }
    }
    run.handle_timeout(T0 + 1_250);
    let tallies: Vec<_> = events(&mut run)
        .into_iter()
        .filter_map(|e| match e {
            StoryEvent::VoteTally { voters, .. } => Some(voters),
            _ => None,
        })
        .collect();
    assert!((4..=6).contains(&tallies.len()), "{tallies:?}");
    assert_eq!(tallies.last(), Some(&1000), "the last tally has every vote");
}

#[test]
fn ties_go_to_the_default_else_to_a_draw_that_replays_from_its_seed() {
    // A tie including the default.
    let mut run = StoryRuntime::start(vote_graph(&["a", "b", "c"], Some("b"), false), 1, T0);
    run.vote("u1", None, "a", T0).unwrap();
    run.vote("u2", None, "b", T0).unwrap();
    run.handle_timeout(T0 + 30_000);
    let (winner, tie_break, ..) = vote_closed(&events(&mut run)).unwrap();
    assert_eq!(
        (winner.as_deref(), tie_break),
        (Some("b"), TieBreak::Default)
    );

    // Nobody voted: the default.
    let mut run = StoryRuntime::start(vote_graph(&["a", "b"], Some("a"), false), 1, T0);
    run.handle_timeout(T0 + 30_000);
    let (winner, tie_break, ..) = vote_closed(&events(&mut run)).unwrap();
    assert_eq!(
        (winner.as_deref(), tie_break),
        (Some("a"), TieBreak::Default)
    );

    // A tie without the default: a seeded draw, the same for the same
    // seed, and across seeds both tied options win sometimes.
    let draw = |seed: u64| {
        let mut run = StoryRuntime::start(vote_graph(&["a", "b", "c"], Some("c"), false), seed, T0);
        run.vote("u1", None, "a", T0).unwrap();
        run.vote("u2", None, "b", T0).unwrap();
        run.handle_timeout(T0 + 30_000);
        let (winner, tie_break, ..) = vote_closed(&events(&mut run)).unwrap();
        (winner.unwrap(), tie_break)
    };
    let (first, tie_break) = draw(42);
    let TieBreak::Draw { seed } = tie_break else {
        panic!("a draw, got {tie_break:?}");
    };
    assert_eq!(seed, draw_seed(42, 1), "the logged seed is the window's");
    assert_eq!(draw(42).0, first, "same seed, same winner");
    let winners: std::collections::BTreeSet<String> = (0..64).map(|s| draw(s).0).collect();
    assert_eq!(
        winners,
        ["a".to_owned(), "b".to_owned()].into(),
        "c had no votes and never wins"
    );
}

#[test]
fn votes_outside_an_open_window_or_for_unknown_options_are_refused_clearly() {
    let mut run = StoryRuntime::start(vote_graph(&["a", "b"], None, false), 1, T0);
    assert_eq!(
        run.vote("u", Some(1), "zzz", T0),
        Err(VoteError::UnknownOption {
            option: "zzz".into(),
            options: vec!["a".into(), "b".into()]
        })
    );
    assert_eq!(
        run.vote("u", Some(7), "a", T0),
        Err(VoteError::WindowClosed { window: 7 })
    );
    run.vote("u", Some(1), "a", T0).unwrap();
    assert_eq!(
        run.vote("u", Some(1), "b", T0),
        Err(VoteError::AlreadyVoted { option: "a".into() }),
        "changes are off in this window"
    );
    assert_eq!(run.tallies(), [("a".to_owned(), 1), ("b".to_owned(), 0)]);
    // At the close time the window is over, even before the timer ran.
    assert_eq!(
        run.vote("late", Some(1), "b", T0 + 30_000),
        Err(VoteError::Ended),
        "the vote closed and led to an ending"
    );
    assert_eq!(VoteError::WindowClosed { window: 1 }.code(), "vote_closed");
}

#[test]
fn conditions_decide_what_is_offered_and_effects_carry_across_nodes() {
    let graph = graph(json!({
        "id": "cond", "version": 1, "start": "a",
        "variables": {"score": 0, "vip": false},
        "nodes": [
            {"id": "a", "scene": {"live": "main"}, "on_enter": ["score += 1"],
             "choices": [
                {"id": "again", "next": "a", "condition": "visits(a) < 3"},
                {"id": "vip-door", "next": "vip", "condition": "vip"},
                {"id": "leave", "next": "out", "condition": "score >= 3 and not vip", "effects": ["vip = true"]}
             ],
             "trigger": {"vote": {"window_ms": 15000}}},
            {"id": "vip", "scene": {"live": "main"}},
            {"id": "out", "scene": {"live": "main"}}
        ]
    }));
    let mut run = StoryRuntime::start(graph, 1, T0);
    // Visit 1: only `again` holds -> taken at once; visit 2: same; visit 3:
    // `again` fails, `leave` holds (score 3) -> taken at once.
    let seen = events(&mut run);
    assert_eq!(node_entered(&seen), ["a", "a", "a", "out"]);
    let state = run.state();
    assert_eq!(state.variables["score"], Value::Int(3));
    assert_eq!(
        state.variables["vip"],
        Value::Bool(true),
        "the choice's effect"
    );
    assert_eq!(state.visits["a"], 3);
    assert!(
        state
            .history
            .iter()
            .skip(1)
            .all(|s| s.by == Decision::OnlyOption)
    );
}

#[test]
fn a_gift_goal_is_reached_by_coins_in_its_window_or_missed_at_its_close() {
    let goal = |coins: &[(u64, u64)]| {
        let mut run = StoryRuntime::start(
            graph(json!({
                "id": "goal", "version": 1, "start": "g",
                "nodes": [
                    {"id": "g", "scene": {"live": "main"},
                     "choices": [{"id": "yes", "next": "won"}, {"id": "no", "next": "lost"}],
                     "trigger": {"gift_goal": {"coins": 500, "window_ms": 60000, "reached": "yes", "missed": "no"}}},
                    {"id": "won", "scene": {"live": "main"}},
                    {"id": "lost", "scene": {"live": "main"}}
                ]
            })),
            1,
            T0,
        );
        for (at, amount) in coins {
            run.gift(*amount, T0 + at);
        }
        run.handle_timeout(T0 + 60_000);
        let seen = events(&mut run);
        (node_entered(&seen).last().map(|s| s.to_string()), seen)
    };
    let (reached, seen) = goal(&[(1_000, 200), (2_000, 300)]);
    assert_eq!(reached.as_deref(), Some("won"));
    assert!(seen.iter().any(|e| matches!(
        e,
        StoryEvent::TriggerProgress {
            count: 500,
            target: 500,
            ..
        }
    )));
    assert_eq!(goal(&[(1_000, 499)]).0.as_deref(), Some("lost"));
    assert_eq!(
        goal(&[(1_000, 400), (61_000, 400)]).0.as_deref(),
        Some("lost"),
        "coins after the close do not count"
    );
}

#[test]
fn a_keyword_needs_distinct_users_within_its_window() {
    let mut run = StoryRuntime::start(
        graph(json!({
            "id": "kw", "version": 1, "start": "k",
            "nodes": [
                {"id": "k", "scene": {"live": "main"},
                 "choices": [{"id": "hit", "next": "encore"}, {"id": "miss", "next": "bye"}],
                 "trigger": {"keyword": {"words": ["Encore"], "users": 3, "window_ms": 30000, "matched": "hit", "missed": "miss"}}},
                {"id": "encore", "scene": {"live": "main"}},
                {"id": "bye", "scene": {"live": "main"}}
            ]
        })),
        1,
        T0,
    );
    events(&mut run);
    run.danmaku("ann", 0, "ENCORE!!", T0 + 1);
    run.danmaku("ann", 0, "encore encore", T0 + 2);
    run.danmaku("bob", 0, "nice show", T0 + 3);
    run.danmaku("bob", 0, "one more? encore", T0 + 4);
    assert!(
        node_entered(&events(&mut run)).is_empty(),
        "two distinct users so far"
    );
    run.danmaku("cy", 0, "Encore", T0 + 5);
    assert_eq!(node_entered(&events(&mut run)), ["encore"]);
    assert_eq!(
        run.state().history.last().unwrap().by,
        Decision::KeywordMatched
    );
}

#[test]
fn a_run_restored_mid_vote_keeps_its_ballots_and_closes_on_time() {
    let graph = vote_graph(&["a", "b"], None, true);
    let mut run = StoryRuntime::start(Arc::clone(&graph), 9, T0);
    for n in 0..10 {
        run.vote(
            &format!("u{n}"),
            Some(1),
            if n < 7 { "a" } else { "b" },
            T0 + 1,
        )
        .unwrap();
    }
    // Persisted as JSON, as the room does, and read back by a new process.
    let saved = serde_json::to_string(run.state()).unwrap();
    let state: StoryState = serde_json::from_str(&saved).unwrap();
    let mut restored = StoryRuntime::restore(Arc::clone(&graph), state).unwrap();
    assert_eq!(restored.tallies(), run.tallies());
    assert_eq!(restored.poll_timeout(), Some(T0 + 30_000));
    // A voter who voted before the restart moves; one who did not votes.
    restored.vote("u0", Some(1), "b", T0 + 2).unwrap();
    restored.vote("late", Some(1), "b", T0 + 3).unwrap();
    assert_eq!(
        restored.tallies(),
        [("a".to_owned(), 6), ("b".to_owned(), 5)]
    );
    // The window closed while the engine was down: the next timeout closes it.
    restored.handle_timeout(T0 + 45_000);
    let (winner, _, tallies, voters) = vote_closed(&events(&mut restored)).unwrap();
    assert_eq!((winner.as_deref(), voters), (Some("a"), 11));
    assert_eq!(tallies, [("a".to_owned(), 6), ("b".to_owned(), 5)]);

    let other = vote_graph(&["x", "y"], None, true);
    let mut foreign: StoryState = serde_json::from_str(&saved).unwrap();
    foreign.graph_version = 2;
    assert!(matches!(
        StoryRuntime::restore(other, foreign),
        Err(RestoreError::OtherGraph { .. })
    ));
}

#[test]
fn operators_pause_resume_choose_and_jump() {
    let graph = vote_graph(&["a", "b"], None, false);
    let mut run = StoryRuntime::start(Arc::clone(&graph), 1, T0);
    run.vote("u", None, "a", T0).unwrap();
    run.pause(T0 + 10_000).unwrap();
    assert_eq!(run.pause(T0 + 10_001), Err(OperatorError::AlreadyPaused));
    assert_eq!(
        run.vote("v", None, "b", T0 + 11_000),
        Err(VoteError::Paused)
    );
    assert_eq!(run.poll_timeout(), None, "nothing closes while paused");
    run.handle_timeout(T0 + 60_000);
    assert!(vote_closed(&events(&mut run)).is_none());
    run.resume(T0 + 70_000).unwrap();
    // 20 s were left when it paused: the window now closes at +90 s.
    assert_eq!(run.poll_timeout(), Some(T0 + 90_000));
    assert_eq!(
        run.choose("zzz", T0 + 71_000),
        Err(OperatorError::UnknownChoice {
            choice: "zzz".into(),
            choices: vec!["a".into(), "b".into()]
        })
    );
    run.choose("b", T0 + 71_000).unwrap();
    let seen = events(&mut run);
    let (winner, tie_break, tallies, _) = vote_closed(&seen).unwrap();
    assert_eq!(
        (winner.as_deref(), tie_break),
        (Some("b"), TieBreak::Operator)
    );
    assert_eq!(tallies, [("a".to_owned(), 1), ("b".to_owned(), 0)]);
    assert_eq!(node_entered(&seen), ["end-b"]);
    assert!(run.state().ended);
    run.jump("ask", T0 + 80_000).unwrap();
    assert!(!run.state().ended);
    assert!(matches!(
        events(&mut run).as_slice(),
        [
            StoryEvent::NodeEntered {
                by: Decision::Jump,
                ..
            },
            StoryEvent::VoteOpened { window: 2, .. }
        ]
    ));
    assert_eq!(
        run.jump("nowhere", T0),
        Err(OperatorError::UnknownNode {
            node: "nowhere".into()
        })
    );
}

#[test]
fn validation_lists_every_problem_with_its_node() {
    let found = problems(json!({
        "id": "broken", "version": 1, "start": "a",
        "variables": {"score": 0},
        "nodes": [
            {"id": "a", "scene": {"live": "main"},
             "choices": [
                {"id": "x", "next": "b", "condition": "score >="},
                {"id": "y", "next": "ghost"},
                {"id": "z", "next": "c", "condition": "mood > 1", "effects": ["score = true"]}
             ],
             "trigger": {"vote": {"window_ms": 5000, "default": "w"}}},
            {"id": "b", "scene": {"live": "main"}},
            {"id": "c", "scene": {"live": "main"},
             "choices": [{"id": "loop", "next": "d"}],
             "trigger": {"timer": {"after_ms": 1000, "choice": "loop"}}},
            {"id": "d", "scene": {"live": "main"},
             "choices": [{"id": "back", "next": "c"}],
             "trigger": "operator"},
            {"id": "island", "scene": {"clip": "x.webm"}},
            {"id": "island", "scene": {"clip": "x.webm"}},
            {"id": "chatty", "scene": {"live": "main"}, "choices": [{"id": "go", "next": "b"}]}
        ]
    }));
    let text: Vec<String> = found.iter().map(ToString::to_string).collect();
    let has = |node: &str, words: &str| {
        assert!(
            found
                .iter()
                .any(|p| p.node.as_deref() == Some(node) && p.message.contains(words)),
            "expected `{node}`: {words} in {text:#?}"
        );
    };
    has("island", "used by another node");
    has("a", "condition `score >=`");
    has("a", "`ghost`, which does not exist");
    has("a", "unknown variable `mood`");
    has("a", "cannot be set to a boolean");
    has("a", "15 s to 30 min");
    has("a", "default `w` is not a choice");
    has("c", "cycle with no exit");
    has("d", "cycle with no exit");
    has("island", "unreachable");
    has("chatty", "no trigger");
    has("chatty", "unreachable");
    assert!(
        !found.iter().any(|p| p.node.as_deref() == Some("b")),
        "b is fine: {text:#?}"
    );
}

#[test]
fn malformed_json_and_wrong_shapes_are_one_clear_problem() {
    let error = StoryGraph::from_json("{ not json").unwrap_err();
    assert_eq!(error.len(), 1);
    assert!(
        error[0].message.starts_with("not a story graph"),
        "{error:?}"
    );
    let error = StoryGraph::from_json(
        r#"{"id":"x","version":1,"start":"a","nodes":[{"id":"a","scene":{"tape":"x"}}]}"#,
    )
    .unwrap_err();
    assert!(
        error[0].message.contains("unknown variant `tape`"),
        "{error:?}"
    );
    let error = problems(json!({"id": "x", "version": 1, "start": "nope", "nodes": []}));
    assert!(error.iter().any(|p| p.message.contains("1 to 1000 nodes")));
    assert!(
        error
            .iter()
            .any(|p| p.message.contains("start node `nope`"))
    );
}

#[test]
fn the_host_answers_faq_questions_once_per_cooldown() {
    // An operator node keeps the story running while the chat asks.
    let graph = graph(json!({
        "id": "faq", "version": 1, "start": "show",
        "nodes": [
            {"id": "show", "scene": {"live": "main"}, "choices": [{"id": "end", "next": "bye"}], "trigger": "operator"},
            {"id": "bye", "scene": {"live": "main"}}
        ],
        "faq": [
            {"id": "price", "keywords": ["price", "how much"], "answer": "799 euros."},
            {"id": "ship", "keywords": ["shipping"], "answer": "From March."}
        ]
    }));
    let mut run = StoryRuntime::start(graph, 1, T0);
    events(&mut run);
    let answers = |run: &mut StoryRuntime| -> Vec<(String, String, u64)> {
        events(run)
            .into_iter()
            .filter_map(|e| match e {
                StoryEvent::HostAnswer {
                    faq,
                    reply_to_user,
                    reply_to_seq,
                    ..
                } => Some((faq, reply_to_user, reply_to_seq)),
                _ => None,
            })
            .collect()
    };
    run.danmaku("ann", 1, "How much is it?", T0);
    run.danmaku("bob", 2, "what's the PRICE", T0 + 1_000);
    run.danmaku("cy", 3, "shipping?", T0 + 2_000);
    run.danmaku("dee", 4, "love it", T0 + 3_000);
    assert_eq!(
        answers(&mut run),
        [
            ("price".into(), "ann".into(), 1),
            ("ship".into(), "cy".into(), 3)
        ],
        "bob asked within the cooldown"
    );
    run.danmaku("eve", 5, "price??", T0 + 10_000);
    assert_eq!(answers(&mut run), [("price".into(), "eve".into(), 5)]);
    run.choose("end", T0 + 11_000).unwrap();
    run.danmaku("fay", 6, "shipping", T0 + 30_000);
    assert!(
        answers(&mut run).is_empty(),
        "an ended story says nothing more"
    );
}

#[test]
fn faq_entries_are_validated_with_the_graph() {
    let found = problems(json!({
        "id": "faq", "version": 1, "start": "a",
        "nodes": [{"id": "a", "scene": {"live": "main"}}],
        "faq": [
            {"id": "x", "keywords": [], "answer": "ok"},
            {"id": "x", "keywords": ["y"], "answer": ""}
        ]
    }));
    let text: Vec<String> = found.iter().map(ToString::to_string).collect();
    assert!(
        text.iter().any(|p| p.contains("needs keywords")),
        "{text:?}"
    );
    assert!(
        text.iter().any(|p| p.contains("each used once")),
        "{text:?}"
    );
    assert!(
        text.iter().any(|p| p.contains("1 to 500 characters")),
        "{text:?}"
    );
}
