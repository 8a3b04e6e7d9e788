//! Story graphs in a room, end to end: upload with every problem listed, a
//! run started by a moderator, 50 viewers voting over their sockets, the
//! window closing on time with the winner, the events on JetStream, and a
//! room restart in the middle of a vote.

mod common;

use std::time::{Duration, Instant};

use bus::testing::NatsServer;
use common::{ADMIN_KEY, Client, TestEngine, demo_clips, read_stream};
use prost::Message;
use protocol::v1::server_frame::Frame;
use serde_json::{Value, json};

/// A vote of 15 s (the shortest allowed) between two endings.
fn poll_graph(version: u32) -> Value {
    json!({
        "id": "poll", "version": version, "start": "ask",
        "nodes": [
            {"id": "ask", "scene": {"live": "main"}, "host_lines": ["Red or blue?"],
             "choices": [
                {"id": "red", "label": "Red", "next": "red-end"},
                {"id": "blue", "label": "Blue", "next": "blue-end"}
             ],
             "trigger": {"vote": {"window_ms": 15000, "default": "red", "allow_change": true}}},
            {"id": "red-end", "scene": {"clip": "midnight.mp4"}},
            {"id": "blue-end", "scene": {"clip": "aurora.mp4"}, "host_lines": ["Blue wins!"]}
        ]
    })
}

/// `GET /v1/rooms/r1/story`: status and body.
async fn get_story(t: &TestEngine, token: &str) -> (u16, Value) {
    let response = t
        .http
        .get(format!("{}/v1/rooms/r1/story", t.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn story(t: &TestEngine, token: &str) -> Value {
    t.get_json_as("/v1/rooms/r1/story", token).await
}

/// The next story frame a client gets (batches flattened, chat skipped).
async fn next_story_frame(client: &mut Client) -> Frame {
    loop {
        match client.next_leaf().await {
            frame @ (Frame::Scene(_)
            | Frame::VoteOpen(_)
            | Frame::VoteTally(_)
            | Frame::VoteClosed(_)
            | Frame::VoteReceipt(_)
            | Frame::StoryStatus(_)
            | Frame::StoryTrigger(_)
            | Frame::Error(_)) => return frame,
            _ => continue,
        }
    }
}

async fn vote(client: &mut Client, window: u64, option: &str) -> Frame {
    client
        .send_json(json!({ "type": "vote", "window": window, "option": option }))
        .await;
    loop {
        match next_story_frame(client).await {
            frame @ (Frame::VoteReceipt(_) | Frame::Error(_)) => return frame,
            _ => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_viewers_vote_and_the_window_closes_on_the_winner() {
    let nats = NatsServer::start();
    let url = nats.url();
    let t = TestEngine::start_with(|c| {
        c.nats_url = Some(url.clone());
        c.story.clips_dir = demo_clips();
    })
    .await;
    t.create_room("r1").await;

    // Uploads: every problem at once; then the graph; then idempotence.
    let mut broken = poll_graph(1);
    broken["nodes"][0]["choices"][1]["next"] = json!("nowhere");
    broken["nodes"][0]["choices"][0]["condition"] = json!("score >");
    let (status, body) = t.post_json("/v1/stories", ADMIN_KEY, &broken).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_story");
    let problems = body["error"]["problems"].as_array().unwrap();
    assert!(problems.iter().any(|p| {
        p["node"] == "ask"
            && p["message"]
                .as_str()
                .unwrap()
                .contains("`nowhere`, which does not exist")
    }));
    assert!(problems.iter().any(|p| {
        p["node"] == "ask"
            && p["message"]
                .as_str()
                .unwrap()
                .contains("condition `score >`")
    }));
    assert!(
        problems
            .iter()
            .any(|p| p["node"] == "blue-end"
                && p["message"].as_str().unwrap().contains("unreachable"))
    );
    let (status, body) = t.post_json("/v1/stories", ADMIN_KEY, &poll_graph(1)).await;
    assert_eq!((status, &body["id"]), (201, &json!("poll")), "{body}");
    assert_eq!(
        t.post_json("/v1/stories", ADMIN_KEY, &poll_graph(1))
            .await
            .0,
        200
    );
    let mut changed = poll_graph(1);
    changed["nodes"][0]["host_lines"] = json!(["Another line"]);
    let (status, body) = t.post_json("/v1/stories", ADMIN_KEY, &changed).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("version_exists"))
    );
    let viewer_token = t.token("viewer", "r1", &["subscribe"]).await;
    assert_eq!(
        t.post_json("/v1/stories", &viewer_token, &poll_graph(2))
            .await
            .0,
        403,
        "uploads are for admins"
    );

    // A moderator starts it; a watcher sees the scene and the vote open.
    let mut watcher = t.chatter("watcher", "r1").await;
    let operator = t.token("op", "r1", &["moderate"]).await;
    let start = json!({ "graph_id": "poll", "version": 1, "seed": 7 });
    assert_eq!(
        t.post_json("/v1/rooms/r1/story", &viewer_token, &start)
            .await
            .0,
        403
    );
    let (status, view) = t.post_json("/v1/rooms/r1/story", &operator, &start).await;
    assert_eq!(status, 201, "{view}");
    assert_eq!(view["node"], "ask");
    let Frame::Scene(scene) = next_story_frame(&mut watcher).await else {
        panic!("the scene first");
    };
    assert_eq!((scene.node.as_str(), scene.by.as_str()), ("ask", "start"));
    assert_eq!(scene.host_lines, ["Red or blue?"]);
    let Frame::VoteOpen(open) = next_story_frame(&mut watcher).await else {
        panic!("then the vote");
    };
    let options: Vec<&str> = open.options.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(options, ["red", "blue"]);
    let window = open.window;

    // 50 viewers: 30 blue, 20 red; five reds change to blue, a double vote
    // changes nothing; wrong options and windows are refused by name.
    let mut voters = Vec::new();
    for n in 0..50 {
        let token = t.token(&format!("v{n}"), "r1", &["subscribe"]).await;
        voters.push(Client::connect(&t.ws_url("r1"), &token, None).await);
    }
    for (n, voter) in voters.iter_mut().enumerate() {
        let option = if n < 30 { "blue" } else { "red" };
        let Frame::VoteReceipt(receipt) = vote(voter, window, option).await else {
            panic!("voter {n} got no receipt");
        };
        assert_eq!((receipt.window, receipt.option.as_str()), (window, option));
    }
    let Frame::VoteReceipt(again) = vote(&mut voters[0], window, "blue").await else {
        panic!("a repeated vote is answered");
    };
    assert_eq!(again.changed_from, "");
    for voter in &mut voters[30..35] {
        let Frame::VoteReceipt(moved) = vote(voter, 0, "blue").await else {
            panic!("a change is answered");
        };
        assert_eq!(moved.changed_from, "red");
    }
    let Frame::Error(error) = vote(&mut voters[40], window, "green").await else {
        panic!("an unknown option is an error");
    };
    assert_eq!(error.code, "unknown_option");
    assert!(error.message.contains("red, blue"), "{}", error.message);
    let Frame::Error(error) = vote(&mut voters[41], window + 5, "red").await else {
        panic!("another window is an error");
    };
    assert_eq!(error.code, "vote_closed");
    let tallies = story(&t, &viewer_token).await["tallies"].clone();
    assert_eq!(tallies, json!([["red", 15], ["blue", 35]]));

    // The window closes on time: the winner, then the scene it leads to.
    let closed = tokio::time::timeout(Duration::from_secs(25), async {
        loop {
            if let Frame::VoteClosed(closed) = next_story_frame(&mut watcher).await {
                return closed;
            }
        }
    })
    .await
    .expect("the vote closes within its window");
    assert_eq!(
        (
            closed.winner.as_str(),
            closed.tie_break.as_str(),
            closed.voters
        ),
        ("blue", "none", 50)
    );
    let Frame::Scene(scene) = next_story_frame(&mut watcher).await else {
        panic!("the winner's scene follows");
    };
    assert_eq!(
        (
            scene.node.as_str(),
            scene.scene_kind.as_str(),
            scene.scene_source.as_str()
        ),
        ("blue-end", "clip", "aurora.mp4")
    );
    assert_eq!((scene.via.as_str(), scene.by.as_str()), ("blue", "vote"));
    let Frame::StoryStatus(status) = next_story_frame(&mut watcher).await else {
        panic!("an ending says so");
    };
    assert_eq!(
        (status.status.as_str(), status.node.as_str()),
        ("ended", "blue-end")
    );
    assert_eq!(
        vote(&mut voters[1], window, "red").await,
        Frame::Error(protocol::v1::Error {
            code: "story_ended".into(),
            message: "the story has ended".into(),
            ..Default::default()
        })
    );

    // On the bus: both moves and the vote's result, once each.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let moves = read_stream(&url, "LIVE_STORIES").await;
        let votes = read_stream(&url, "LIVE_VOTES").await;
        if moves.len() >= 2 && !votes.is_empty() {
            let nodes: Vec<String> = moves
                .iter()
                .map(|e| {
                    protocol::v1::StoryNodeEntered::decode(e.payload.clone())
                        .unwrap()
                        .node
                })
                .collect();
            assert_eq!(nodes, ["ask", "blue-end"]);
            assert_eq!(votes.len(), 1);
            assert_eq!(votes[0].kind, "vote.closed");
            let closed = protocol::v1::StoryVoteClosed::decode(votes[0].payload.clone()).unwrap();
            let result = closed.result.unwrap();
            assert_eq!((result.winner.as_str(), result.voters), ("blue", 50));
            break;
        }
        assert!(Instant::now() < deadline, "story events reached JetStream");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_restarted_mid_vote_keeps_every_acknowledged_ballot() {
    let t = TestEngine::start_with(|c| c.story.clips_dir = demo_clips()).await;
    t.create_room("r1").await;
    assert_eq!(
        t.post_json("/v1/stories", ADMIN_KEY, &poll_graph(1))
            .await
            .0,
        201
    );
    let operator = t.token("op", "r1", &["moderate"]).await;
    let start = json!({ "graph_id": "poll", "version": 1 });
    assert_eq!(
        t.post_json("/v1/rooms/r1/story", &operator, &start).await.0,
        201
    );
    let mut voters = Vec::new();
    for n in 0..6 {
        let token = t.token(&format!("v{n}"), "r1", &["subscribe"]).await;
        let mut voter = Client::connect(&t.ws_url("r1"), &token, None).await;
        let option = if n < 4 { "red" } else { "blue" };
        // The receipt comes after the write that holds the ballot.
        assert!(matches!(
            vote(&mut voter, 0, option).await,
            Frame::VoteReceipt(_)
        ));
        voters.push(voter);
    }
    let before = story(&t, &operator).await;
    t.crash_room("r1");
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let (status, view) = get_story(&t, &operator).await;
        if status == 200 && view["tallies"] == before["tallies"] {
            break view;
        }
        assert!(
            Instant::now() < deadline,
            "the run came back with its ballots"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(after["tallies"], json!([["red", 4], ["blue", 2]]));
    assert_eq!(
        after["window"], before["window"],
        "same window, same close time"
    );
    // The sockets were closed by the restart (1012): a voter reconnects and
    // moves their vote; the restored ballot moves with it.
    let token = t.token("v0", "r1", &["subscribe"]).await;
    let mut again = Client::connect(&t.ws_url("r1"), &token, None).await;
    let Frame::VoteReceipt(moved) = vote(&mut again, 0, "blue").await else {
        panic!("a vote after the restart is answered");
    };
    assert_eq!(moved.changed_from, "red");
    assert_eq!(
        story(&t, &operator).await["tallies"],
        json!([["red", 3], ["blue", 3]])
    );

    // The operator steers: pause refuses votes, choose decides now.
    let (status, view) = t
        .post_json("/v1/rooms/r1/story/pause", &operator, &json!({}))
        .await;
    assert_eq!((status, &view["paused"]), (200, &json!(true)));
    let Frame::Error(paused) = vote(&mut again, 0, "red").await else {
        panic!("votes are refused while paused");
    };
    assert_eq!(paused.code, "story_paused");
    let (status, body) = t
        .post_json(
            "/v1/rooms/r1/story/choose",
            &operator,
            &json!({"choice": "purple"}),
        )
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("story_refused"))
    );
    let (status, view) = t
        .post_json(
            "/v1/rooms/r1/story/choose",
            &operator,
            &json!({"choice": "red"}),
        )
        .await;
    assert_eq!(
        (status, &view["node"], &view["ended"]),
        (200, &json!("red-end"), &json!(true))
    );
    let response = t
        .http
        .delete(format!("{}/v1/rooms/r1/story", t.base))
        .bearer_auth(&operator)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(get_story(&t, &operator).await.0, 404);
    t.shutdown().await;
}

/// Gifts and danmaku reach the run: a gift goal met by real gifts, then a
/// keyword said by enough distinct viewers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gifts_and_danmaku_in_the_room_drive_goal_and_keyword_triggers() {
    let t = TestEngine::start_with(|c| c.story.clips_dir = demo_clips()).await;
    t.create_room("r1").await;
    let graph = json!({
        "id": "hype", "version": 1, "start": "goal",
        "nodes": [
            {"id": "goal", "scene": {"live": "main"},
             "choices": [{"id": "met", "next": "chant"}, {"id": "missed", "next": "quiet"}],
             "trigger": {"gift_goal": {"coins": 100, "window_ms": 60000, "reached": "met", "missed": "missed"}}},
            {"id": "chant", "scene": {"live": "main"},
             "choices": [{"id": "yes", "next": "encore"}, {"id": "no", "next": "quiet"}],
             "trigger": {"keyword": {"words": ["encore"], "users": 2, "window_ms": 60000, "matched": "yes", "missed": "no"}}},
            {"id": "encore", "scene": {"clip": "bonus.mp4"}},
            {"id": "quiet", "scene": {"live": "main"}}
        ]
    });
    assert_eq!(t.post_json("/v1/stories", ADMIN_KEY, &graph).await.0, 201);
    let operator = t.token("op", "r1", &["moderate"]).await;
    let start = json!({ "graph_id": "hype", "version": 1 });
    assert_eq!(
        t.post_json("/v1/rooms/r1/story", &operator, &start).await.0,
        201
    );

    let topup = json!({ "amount": 1000 });
    let response = t
        .http
        .post(format!("{}/v1/wallets/fan/topup", t.base))
        .bearer_auth(ADMIN_KEY)
        .header("Idempotency-Key", "fund-fan")
        .json(&topup)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let fan = t.token("fan", "r1", &["gift"]).await;
    for n in 0..2 {
        // Two flowers of 50 coins: the second one meets the goal.
        let response = t
            .http
            .post(format!("{}/v1/rooms/r1/gifts", t.base))
            .bearer_auth(&fan)
            .header("Idempotency-Key", format!("g{n}"))
            .json(&json!({ "gift_id": "flower", "count": 1, "to": "streamer" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    let view = story(&t, &operator).await;
    assert_eq!(view["node"], "chant", "100 coins met the goal: {view}");
    assert_eq!(view["history"][1]["by"], "gift_goal_reached");

    let mut ann = t.chatter("ann", "r1").await;
    let mut bob = t.chatter("bob", "r1").await;
    let said = |text: &str| json!({ "type": "danmaku", "text": text, "client_msg_id": text });
    ann.send_json(said("ENCORE!")).await;
    ann.send_json(said("encore again")).await;
    let view = story(&t, &operator).await;
    assert_eq!(view["node"], "chant", "one fan, twice, is not two: {view}");
    bob.send_json(said("we want an encore")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let view = story(&t, &operator).await;
        if view["node"] == "encore" {
            assert_eq!(view["history"][2]["by"], "keyword_matched");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "two distinct fans said it: {view}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t.shutdown().await;
}

/// The virtual host answers a question from the chat that the event's FAQ
/// covers, once per cooldown; the time from the danmaku to the answer is
/// printed (measured here, judged in docs/benchmarks.md, never asserted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_answers_the_chat_from_the_faq() {
    let t = TestEngine::start_with(|c| c.story.clips_dir = demo_clips()).await;
    t.create_room("r1").await;
    let sample = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/brand-launch.json"
    ))
    .unwrap();
    let sample: Value = serde_json::from_str(&sample).unwrap();
    assert_eq!(t.post_json("/v1/stories", ADMIN_KEY, &sample).await.0, 201);
    let operator = t.token("op", "r1", &["moderate"]).await;
    let start = json!({ "graph_id": "brand-launch", "version": 1 });
    assert_eq!(
        t.post_json("/v1/rooms/r1/story", &operator, &start).await.0,
        201
    );
    let mut asker = t.chatter("ann", "r1").await;
    let mut watcher = t.chatter("bob", "r1").await;
    let ask =
        |text: &str, id: &str| json!({ "type": "danmaku", "text": text, "client_msg_id": id });

    let sent = Instant::now();
    asker.send_json(ask("How much does it cost?", "q1")).await;
    let line = loop {
        if let Frame::HostLine(line) = watcher.next_leaf().await {
            break line;
        }
    };
    println!("danmaku -> host answer broadcast: {:?}", sent.elapsed());
    assert_eq!(
        (line.faq_id.as_str(), line.reply_to_user.as_str()),
        ("price", "ann")
    );
    assert!(line.text.contains("799 euros"), "{}", line.text);
    assert!(line.reply_to_seq > 0);

    // The same question again within the cooldown: no second answer; a
    // different one is answered.
    asker.send_json(ask("price???", "q2")).await;
    asker
        .send_json(ask("when can I get one delivered", "q3"))
        .await;
    let line = loop {
        if let Frame::HostLine(line) = watcher.next_leaf().await {
            break line;
        }
    };
    assert_eq!(
        line.faq_id, "shipping",
        "the repeated price question was not answered again"
    );
    t.shutdown().await;
}
