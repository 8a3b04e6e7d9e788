//! Gifts against a real engine: catalog, top-ups, sends over WebSocket and
//! HTTP with Stripe-style idempotency, combos, the leaderboard (also after
//! a RoomActor restart), and every refusal leaving the wallet untouched.

mod common;

use common::{ADMIN_KEY, Client, TestEngine};
use protocol::v1::server_frame::Frame;
use serde_json::{Value, json};

struct Posted {
    status: u16,
    body: Value,
}

async fn post(t: &TestEngine, path: &str, token: &str, key: Option<&str>, body: Value) -> Posted {
    let mut request = t
        .http
        .post(format!("{}{path}", t.base))
        .bearer_auth(token)
        .json(&body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.unwrap();
    Posted {
        status: response.status().as_u16(),
        body: response.json().await.unwrap_or(Value::Null),
    }
}

async fn top_up(t: &TestEngine, user: &str, amount: i64, key: &str) -> Posted {
    let path = format!("/v1/wallets/{user}/topup");
    post(t, &path, ADMIN_KEY, Some(key), json!({ "amount": amount })).await
}

async fn balance(t: &TestEngine, user: &str) -> u64 {
    let response = t
        .http
        .get(format!("{}/v1/wallets/{user}", t.base))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    body["balance"].as_u64().unwrap()
}

async fn gift(t: &TestEngine, token: &str, key: Option<&str>, body: Value) -> Posted {
    post(t, "/v1/rooms/r1/gifts", token, key, body).await
}

/// The next frame that is not presence or a leaderboard/goal update.
async fn next_gift_frame(client: &mut Client) -> Frame {
    loop {
        match client.next_leaf().await {
            Frame::Presence(_) | Frame::Leaderboard(_) | Frame::GiftGoal(_) => continue,
            frame => return frame,
        }
    }
}

async fn next_leaderboard(client: &mut Client) -> Vec<(String, u64)> {
    loop {
        if let Frame::Leaderboard(board) = client.next_leaf().await {
            return board
                .entries
                .into_iter()
                .map(|e| (e.user_id, e.coins))
                .collect();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_lists_the_default_gifts_without_a_token() {
    let t = TestEngine::start().await;
    let catalog = t.get_json("/v1/gifts").await;
    let gifts = catalog["gifts"].as_array().unwrap();
    assert!(gifts.len() >= 5, "{catalog}");
    let heart = gifts.iter().find(|g| g["id"] == "heart").unwrap();
    assert_eq!(heart["price"], 10);
    assert_eq!(heart["combo"], true);
    assert!(heart["tier"].as_u64().is_some() && heart["name"].is_string());
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_ups_are_admin_only_idempotent_and_wallets_private() {
    let t = TestEngine::start().await;
    let credited = top_up(&t, "alice", 1_000, "pay-1").await;
    assert_eq!(credited.status, 201, "{}", credited.body);
    assert_eq!(credited.body["balance"], 1_000);
    let replayed = top_up(&t, "alice", 1_000, "pay-1").await;
    assert_eq!(replayed.status, 200, "{}", replayed.body);
    assert_eq!(replayed.body["replayed"], true);
    let conflict = top_up(&t, "alice", 5, "pay-1").await;
    assert_eq!(conflict.status, 409);
    assert_eq!(conflict.body["error"]["code"], "idempotency_conflict");
    let missing = post(
        &t,
        "/v1/wallets/alice/topup",
        ADMIN_KEY,
        None,
        json!({ "amount": 5 }),
    )
    .await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.body["error"]["code"], "invalid_idempotency_key");
    for amount in [0, -5] {
        let refused = top_up(&t, "alice", amount, &format!("bad-{amount}")).await;
        assert_eq!(refused.status, 400, "{}", refused.body);
        assert_eq!(refused.body["error"]["code"], "invalid_amount");
    }
    assert_eq!(balance(&t, "alice").await, 1_000);

    let alice = t.token("alice", "r1", &["gift"]).await;
    let by_user = post(
        &t,
        "/v1/wallets/alice/topup",
        &alice,
        Some("k"),
        json!({ "amount": 5 }),
    )
    .await;
    assert_eq!(by_user.status, 403, "only the admin tops up");
    let own = t
        .http
        .get(format!("{}/v1/wallets/alice", t.base))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    let other = t
        .http
        .get(format!("{}/v1/wallets/bob", t.base))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 403, "another user's wallet is private");
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gift_over_websocket_is_charged_once_broadcast_and_combos() {
    let t = TestEngine::start().await;
    t.create_room("r1").await;
    assert_eq!(top_up(&t, "alice", 1_000, "pay-1").await.status, 201);
    let watcher = t.chatter("watcher", "r1").await;
    let alice_token = t.token("alice", "r1", &["subscribe", "gift"]).await;
    let mut alice = Client::connect(&t.ws_url("r1"), &alice_token, None).await;
    let mut watcher = watcher;

    let send = |key: &str, count: i64| json!({ "type": "gift", "gift_id": "heart", "count": count, "to": "streamer", "idempotency_key": key });
    alice.send_json(send("g-1", 2)).await;
    let receipt = match next_gift_frame(&mut alice).await {
        Frame::GiftReceipt(receipt) => receipt,
        Frame::Gift(_) => match next_gift_frame(&mut alice).await {
            Frame::GiftReceipt(receipt) => receipt,
            other => panic!("expected a receipt, got {other:?}"),
        },
        other => panic!("expected a receipt, got {other:?}"),
    };
    assert_eq!(receipt.idempotency_key, "g-1");
    assert_eq!(receipt.balance, 980);
    assert!(!receipt.replayed);
    let Frame::Gift(first) = next_gift_frame(&mut watcher).await else {
        panic!("the room sees the gift");
    };
    assert_eq!(
        (first.user_id.as_str(), first.name.as_str()),
        ("alice", "ALICE")
    );
    assert_eq!(
        (first.gift_id.as_str(), first.count, first.coins),
        ("heart", 2, 20)
    );
    assert_eq!(first.to, "streamer");
    assert_eq!(first.id, receipt.id);
    assert_eq!(
        (first.combo_id.clone(), first.combo_count),
        (first.id.clone(), 2)
    );

    // The same key again (a client retry): the same receipt, no charge, no
    // broadcast. Then a new send continues the combo.
    alice.send_json(send("g-1", 2)).await;
    let retried = loop {
        if let Frame::GiftReceipt(r) = next_gift_frame(&mut alice).await {
            break r;
        }
    };
    assert!(retried.replayed);
    assert_eq!(
        (retried.id.as_str(), retried.balance),
        (receipt.id.as_str(), 980)
    );
    alice.send_json(send("g-2", 3)).await;
    let Frame::Gift(second) = next_gift_frame(&mut watcher).await else {
        panic!("the second gift is broadcast (the retry was not)");
    };
    assert_eq!(second.combo_id, first.id, "within 3 s: the same combo");
    assert_eq!(second.combo_count, 5);
    assert_eq!(balance(&t, "alice").await, 950);
    assert_eq!(
        next_leaderboard(&mut watcher).await.first(),
        Some(&("alice".to_owned(), 50))
    );

    // A refusal names the key and changes nothing.
    alice.send_json(send("g-3", 0)).await;
    let error = loop {
        if let Frame::Error(error) = next_gift_frame(&mut alice).await {
            break error;
        }
    };
    assert_eq!(
        (error.code.as_str(), error.idempotency_key.as_str()),
        ("invalid_count", "g-3")
    );
    let viewer = t.chatter("viewer", "r1").await;
    let mut viewer = viewer;
    viewer.send_json(send("v-1", 1)).await;
    let Frame::Error(error) = next_gift_frame(&mut viewer).await else {
        panic!("no gift grant, no gift");
    };
    assert_eq!(error.code, "forbidden");
    assert_eq!(balance(&t, "alice").await, 950);
    t.shutdown().await;
}

/// A client hammering retry on one socket: every send gets its answer,
/// all name one gift, it is charged and broadcast once. (Retries that
/// arrive while the first is with the room join it in the session; later
/// ones are replayed by the room: either way one receipt is the original.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_retries_on_one_socket_gets_one_answer_each_and_one_charge() {
    let t = TestEngine::start().await;
    t.create_room("r1").await;
    assert_eq!(top_up(&t, "alice", 1_000, "pay-1").await.status, 201);
    let alice_token = t.token("alice", "r1", &["subscribe", "gift"]).await;
    let mut alice = Client::connect(&t.ws_url("r1"), &alice_token, None).await;
    let mut watcher = t.chatter("watcher", "r1").await;

    const SENDS: usize = 10;
    for _ in 0..SENDS {
        alice
            .send_json(json!({ "type": "gift", "gift_id": "heart", "count": 1, "to": "streamer", "idempotency_key": "burst-1" }))
            .await;
    }
    let mut receipts = Vec::new();
    let mut broadcasts = 0;
    while receipts.len() < SENDS {
        match next_gift_frame(&mut alice).await {
            Frame::GiftReceipt(receipt) => receipts.push(receipt),
            Frame::Gift(_) => broadcasts += 1,
            other => panic!("expected receipts, got {other:?}"),
        }
    }
    assert!(receipts.iter().all(|r| r.idempotency_key == "burst-1"));
    assert!(
        receipts.iter().all(|r| r.id == receipts[0].id),
        "one gift id for every send: {receipts:?}"
    );
    assert_eq!(
        receipts.iter().filter(|r| !r.replayed).count(),
        1,
        "one original, the rest replays: {receipts:?}"
    );
    assert!(receipts.iter().all(|r| r.balance == 990));
    assert_eq!(balance(&t, "alice").await, 990, "charged once");

    // The room saw one gift: the next gift broadcast is the next key's.
    alice
        .send_json(json!({ "type": "gift", "gift_id": "heart", "count": 1, "to": "streamer", "idempotency_key": "burst-2" }))
        .await;
    let mut seen = Vec::new();
    loop {
        if let Frame::Gift(gift) = next_gift_frame(&mut watcher).await {
            seen.push(gift.id);
            if seen.len() == 2 {
                break;
            }
        }
    }
    assert_eq!(seen[0], receipts[0].id);
    assert_ne!(seen[1], receipts[0].id, "the burst was broadcast once");
    assert!(
        broadcasts <= 1,
        "the sender saw the burst broadcast at most once"
    );
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_gifts_refuse_bad_input_and_insufficient_funds_without_writing() {
    let t = TestEngine::start().await;
    t.create_room("r1").await;
    assert_eq!(top_up(&t, "alice", 100, "pay-1").await.status, 201);
    let alice = t.token("alice", "r1", &["gift"]).await;
    let body = |gift_id: &str, count: i64, to: &str| json!({ "gift_id": gift_id, "count": count, "to": to });

    let sent = gift(&t, &alice, Some("k-1"), body("flower", 1, "streamer")).await;
    assert_eq!(sent.status, 201, "{}", sent.body);
    assert_eq!(
        (sent.body["coins"].as_u64(), sent.body["balance"].as_u64()),
        (Some(50), Some(50))
    );
    let again = gift(&t, &alice, Some("k-1"), body("flower", 1, "streamer")).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["id"], sent.body["id"]);
    assert_eq!(again.body["replayed"], true);

    let cases = [
        (
            Some("k-1"),
            body("flower", 2, "streamer"),
            409,
            "idempotency_conflict",
        ),
        (
            Some("k-2"),
            body("castle", 1, "streamer"),
            402,
            "insufficient_funds",
        ),
        (
            Some("k-3"),
            body("flower", 0, "streamer"),
            400,
            "invalid_count",
        ),
        (
            Some("k-4"),
            body("flower", -3, "streamer"),
            400,
            "invalid_count",
        ),
        (
            Some("k-5"),
            body("flower", 100_000, "streamer"),
            400,
            "invalid_count",
        ),
        (
            Some("k-6"),
            body("unicorn", 1, "streamer"),
            422,
            "unknown_gift",
        ),
        (Some("k-7"), body("flower", 1, "alice"), 400, "gift_to_self"),
        (Some("k-8"), body("flower", 1, ""), 400, "invalid_recipient"),
        (
            None,
            body("flower", 1, "streamer"),
            400,
            "invalid_idempotency_key",
        ),
    ];
    for (key, request, status, code) in cases {
        let refused = gift(&t, &alice, key, request.clone()).await;
        assert_eq!(refused.status, status, "{request}: {}", refused.body);
        assert_eq!(refused.body["error"]["code"], code, "{request}");
    }
    let poor = gift(&t, &alice, Some("k-2"), body("castle", 1, "streamer")).await;
    assert_eq!(
        poor.body["error"]["balance"], 50,
        "the refusal says what the wallet holds"
    );
    let no_grant = t.token("bob", "r1", &["chat"]).await;
    let refused = gift(&t, &no_grant, Some("k-9"), body("flower", 1, "streamer")).await;
    assert_eq!(refused.status, 403);
    let as_admin = post(
        &t,
        "/v1/rooms/nope/gifts",
        ADMIN_KEY,
        Some("k"),
        body("heart", 1, "s"),
    )
    .await;
    assert_eq!(as_admin.status, 403, "the admin key sends no gifts");
    assert_eq!(
        balance(&t, "alice").await,
        50,
        "only the one send was charged"
    );
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leaderboard_survives_a_room_actor_restart() {
    let t = TestEngine::start().await;
    t.create_room("r1").await;
    for (user, coins) in [("alice", 500), ("bob", 500)] {
        assert_eq!(
            top_up(&t, user, coins, &format!("pay-{user}")).await.status,
            201
        );
    }
    let gifts = [
        ("alice", "flower", 3),
        ("bob", "cake", 1),
        ("alice", "heart", 1),
    ];
    for (n, (user, gift_id, count)) in gifts.into_iter().enumerate() {
        let token = t.token(user, "r1", &["gift"]).await;
        let body = json!({ "gift_id": gift_id, "count": count, "to": "streamer" });
        let sent = gift(&t, &token, Some(&format!("k-{n}")), body).await;
        assert_eq!(sent.status, 201, "{}", sent.body);
    }
    let expected = json!({ "entries": [
        { "user_id": "bob", "coins": 200 },
        { "user_id": "alice", "coins": 160 },
    ]});
    assert_eq!(t.get_json("/v1/rooms/r1/leaderboard").await, expected);
    t.crash_room("r1");
    // The restarted actor rebuilds the board from the stored gifts.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let response = t
            .http
            .get(format!("{}/v1/rooms/r1/leaderboard", t.base))
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            let board: Value = response.json().await.unwrap();
            if board == expected {
                break;
            }
        }
        assert!(std::time::Instant::now() < deadline, "the board came back");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_split_follows_the_viewers_region_then_the_creators_tier() {
    let t = TestEngine::start_with(|config| {
        let gifts = &mut config.gifts;
        gifts.tier_share_percent.insert("partner".into(), 80);
        gifts.creator_tiers.insert("star".into(), "partner".into());
        gifts.region_share_percent.insert("JP".into(), 60);
    })
    .await;
    t.create_room("r1").await;
    assert_eq!(top_up(&t, "alice", 1_000, "pay").await.status, 201);
    let token = |region: &str| {
        let body =
            json!({ "user_id": "alice", "room": "r1", "grants": ["gift"], "region": region });
        let http = t.http.clone();
        let base = t.base.clone();
        async move {
            let response = http
                .post(format!("{base}/v1/tokens"))
                .bearer_auth(ADMIN_KEY)
                .json(&body)
                .send()
                .await
                .unwrap();
            response.json::<Value>().await.unwrap()["token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let (home, japan) = (token("FR").await, token("JP").await);
    // Two flowers: 100 coins per send, so the share in percent is the coins.
    let sends = [
        (&home, "star", 80),
        (&japan, "star", 60),
        (&home, "plain", 70),
    ];
    for (n, (token, to, _)) in sends.iter().enumerate() {
        let body = json!({ "gift_id": "flower", "count": 2, "to": to });
        let sent = gift(&t, token, Some(&format!("k-{n}")), body).await;
        assert_eq!(sent.status, 201, "{}", sent.body);
    }
    for (creator, coins) in [("star", 80 + 60), ("plain", 70)] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let path = format!("/v1/creators/{creator}/earnings");
            let earnings = t.get_json_as(&path, ADMIN_KEY).await;
            if earnings["coins"] == coins {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{creator}: {earnings}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_changes_the_catalog_and_the_change_survives_a_restart() {
    let t = TestEngine::start().await;
    t.create_room("r1").await;
    assert_eq!(top_up(&t, "alice", 1_000, "pay").await.status, 201);
    let put = |id: &str, body: Value, token: &str| {
        let request = t
            .http
            .put(format!("{}/v1/gifts/{id}", t.base))
            .bearer_auth(token)
            .json(&body);
        async move { request.send().await.unwrap() }
    };
    let lantern = json!({ "name": "Lantern", "price": 88, "tier": 2, "combo": true });
    let alice = t.token("alice", "r1", &["gift"]).await;
    assert_eq!(put("lantern", lantern.clone(), &alice).await.status(), 403);
    assert_eq!(put("lantern", lantern, ADMIN_KEY).await.status(), 200);
    let bad = put(
        "Bad Id",
        json!({ "name": "x", "price": 1, "tier": 1 }),
        ADMIN_KEY,
    )
    .await;
    assert_eq!(bad.status(), 400);
    let bad = put(
        "x",
        json!({ "name": "x", "price": 1, "tier": 9 }),
        ADMIN_KEY,
    )
    .await;
    assert_eq!(bad.status(), 400);
    let retired = t
        .http
        .delete(format!("{}/v1/gifts/heart", t.base))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(retired.status(), 204);

    let sent = gift(
        &t,
        &alice,
        Some("k-1"),
        json!({ "gift_id": "lantern", "count": 1, "to": "streamer" }),
    )
    .await;
    assert_eq!(
        (sent.status, sent.body["coins"].as_u64()),
        (201, Some(88)),
        "{}",
        sent.body
    );
    let refused = gift(
        &t,
        &alice,
        Some("k-2"),
        json!({ "gift_id": "heart", "count": 1, "to": "streamer" }),
    )
    .await;
    assert_eq!(refused.status, 422);
    assert_eq!(refused.body["error"]["code"], "unknown_gift");
    // A price that overflows when multiplied is refused by name.
    let moon = json!({ "name": "Moon", "price": 4_611_686_018_427_387_904_u64, "tier": 5 });
    assert_eq!(put("moon", moon, ADMIN_KEY).await.status(), 200);
    let body = json!({ "gift_id": "moon", "count": 3, "to": "streamer" });
    let refused = gift(&t, &alice, Some("k-3"), body).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(refused.body["error"]["code"], "amount_overflow");
    assert_eq!(balance(&t, "alice").await, 1_000 - 88);

    // A restart on the same data directory keeps both changes.
    let dir = t.dir.path().to_owned();
    let TestEngine {
        engine,
        dir: tempdir,
        ..
    } = t;
    engine.unwrap().shutdown().await.unwrap();
    let engine = engine::Engine::start(common::test_config(&dir))
        .await
        .unwrap();
    let base = format!("http://{}", engine.http_addr());
    let catalog: Value = reqwest::get(format!("{base}/v1/gifts"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = catalog["gifts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"lantern") && !ids.contains(&"heart"),
        "{ids:?}"
    );
    engine.shutdown().await.unwrap();
    drop(tempdir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rooms_own_goal_is_set_by_a_moderator_and_survives_a_restart() {
    let t = TestEngine::start().await;
    t.create_room("r1").await;
    assert_eq!(top_up(&t, "alice", 1_000, "pay").await.status, 201);
    let goal = json!({ "coins": 100, "window_s": 600 });
    let viewer = t.token("viewer", "r1", &["subscribe"]).await;
    let refused = t
        .http
        .put(format!("{}/v1/rooms/r1/gift_goal", t.base))
        .bearer_auth(&viewer)
        .json(&goal)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let moderator = t.token("mod", "r1", &["moderate"]).await;
    for (body, status) in [
        (json!({ "coins": 0, "window_s": 600 }), 400),
        (json!({ "coins": 100, "window_s": 0 }), 400),
        (goal, 200),
    ] {
        let response = t
            .http
            .put(format!("{}/v1/rooms/r1/gift_goal", t.base))
            .bearer_auth(&moderator)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{body}");
    }
    let mut watcher = t.chatter("watcher", "r1").await;
    let alice = t.token("alice", "r1", &["gift"]).await;
    let flower = || json!({ "gift_id": "flower", "count": 1, "to": "streamer" });
    for n in 0..2 {
        assert_eq!(
            gift(&t, &alice, Some(&format!("k-{n}")), flower())
                .await
                .status,
            201
        );
    }
    let reached = loop {
        if let Frame::GiftGoal(goal) = watcher.next_leaf().await
            && goal.coins == 100
        {
            break goal;
        }
    };
    assert!(reached.reached && reached.target == 100);

    // The restarted room picks the goal and its progress back up.
    t.crash_room("r1");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let sent = gift(&t, &alice, Some("k-after"), flower()).await;
        if sent.status == 201 || sent.status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", sent.body);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let resumed = loop {
        if let Frame::GiftGoal(goal) = watcher.next_leaf().await
            && goal.coins > 100
        {
            break goal;
        }
    };
    assert_eq!((resumed.coins, resumed.reached), (150, true));
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_of_one_key_with_different_gifts_charge_one_of_them() {
    let t = TestEngine::start().await;
    t.create_room("r1").await;
    assert_eq!(top_up(&t, "alice", 10_000, "pay").await.status, 201);
    let alice = t.token("alice", "r1", &["gift"]).await;
    let mut sends = Vec::new();
    for n in 0..20 {
        let gift_id = if n % 2 == 0 { "flower" } else { "cake" };
        let body = json!({ "gift_id": gift_id, "count": 1, "to": "streamer" });
        let (t_http, base, token) = (t.http.clone(), t.base.clone(), alice.clone());
        sends.push(tokio::spawn(async move {
            let response = t_http
                .post(format!("{base}/v1/rooms/r1/gifts"))
                .bearer_auth(token)
                .header("Idempotency-Key", "one-key")
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            (gift_id, status, body["id"].as_str().map(str::to_owned))
        }));
    }
    let mut results = Vec::new();
    for send in sends {
        results.push(send.await.unwrap());
    }
    let winner = results
        .iter()
        .find(|(_, status, _)| *status == 201)
        .map(|(gift, _, id)| (*gift, id.clone()))
        .expect("one send is charged");
    for (gift, status, id) in &results {
        if *gift == winner.0 {
            assert!(*status == 201 || *status == 200, "{results:?}");
            assert_eq!(
                id, &winner.1,
                "every request of the charged gift answers with it"
            );
        } else {
            assert_eq!(*status, 409, "{results:?}");
        }
    }
    let price = if winner.0 == "flower" { 50 } else { 200 };
    assert_eq!(balance(&t, "alice").await, 10_000 - price);
    t.shutdown().await;
}
