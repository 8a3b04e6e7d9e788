//! The web app (web/dist, served by the engine at `/`) in headless
//! Chromium with a fake camera: the studio goes live over WHIP, two
//! viewers watch over WHEP, a viewer's danmaku reaches the studio and the
//! other viewer's overlay, a gift moves the balance and the leaderboard,
//! and refusals (stream not live, blocked word, rate limit, no coins,
//! expired sign-in) are shown as sentences; HLS carries the stream where
//! WebRTC is missing; the page rides out a cut network; the recordings
//! page replays danmaku in step with playback. Controls have names and the
//! pages fit a phone. A failed wait saves a screenshot under
//! target/screenshots/.

mod common;

use std::path::PathBuf;

use common::browser::Browser;
use common::network::FlakyPath;
use common::{ADMIN_KEY, TestEngine};
use serde_json::{Value, json};

fn web_dist() -> PathBuf {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../web/dist"));
    assert!(
        dir.join("index.html").is_file(),
        "web/dist is not built (scripts/test runs npm run build in web/)"
    );
    dir
}

/// Signs a page in through its dev-mode form (the admin key mints a token).
async fn sign_in(browser: &Browser, user: &str) {
    browser.click("#signin details summary").await;
    browser.fill("#admin-key", ADMIN_KEY).await;
    browser.fill("#dev-user", user).await;
    browser.fill("#dev-room", "r1").await;
    browser.click("#dev-form button").await;
    browser
        .wait_until(
            &format!("{user}-signin"),
            &format!("{user} signs in"),
            "return !document.getElementById('app').classList.contains('hidden');",
            |v| v == &json!(true),
        )
        .await;
}

/// Every visible control has a name a screen reader can say (a label,
/// `aria-label` or text), and the page is no wider than the window.
async fn assert_usable(browser: &Browser, page: &str) {
    let unnamed = browser
        .eval(
            "return [...document.querySelectorAll('input, select, button, textarea, video')]
                .filter(e => e.offsetParent !== null)
                .filter(e => !(e.labels?.length || e.getAttribute('aria-label') || e.textContent.trim()))
                .map(e => e.id || e.outerHTML.slice(0, 80));",
            json!([]),
        )
        .await;
    assert_eq!(unnamed, json!([]), "{page}: controls without a name");
    let widths = browser
        .eval(
            "return [document.documentElement.scrollWidth, window.innerWidth];",
            json!([]),
        )
        .await;
    assert!(
        widths[0].as_u64() <= widths[1].as_u64(),
        "{page} scrolls sideways: {widths}"
    );
}

fn text_of(id: &str) -> String {
    format!("return document.getElementById('{id}').textContent;")
}

fn contains(needle: &str) -> impl Fn(&Value) -> bool + '_ {
    move |v| v.as_str().is_some_and(|text| text.contains(needle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn studio_and_viewers_meet_in_the_web_app() {
    let dist = web_dist();
    let t = TestEngine::start_with(|c| {
        c.web_dir = dist;
        // Five danmaku per 30 s per viewer, so that a burst meets it.
        c.danmaku.rate_limit = 5;
    })
    .await;
    t.create_room("r1").await;
    let admin = ADMIN_KEY;
    let topup = t
        .http
        .post(format!("{}/v1/wallets/ann/topup", t.base))
        .bearer_auth(admin)
        .header("Idempotency-Key", "web-test-topup")
        .json(&json!({ "amount": 100 }))
        .send()
        .await
        .unwrap();
    assert_eq!(topup.status(), 201);

    // A viewer who arrives before the stream is told so, kindly.
    let ann = Browser::start().await;
    ann.open(&format!("{}/watch.html?room=r1", t.base)).await;
    sign_in(&ann, "ann").await;
    ann.wait_until(
        "ann-not-live",
        "not live yet",
        &text_of("status"),
        contains("not live"),
    )
    .await;

    let studio = Browser::start().await;
    studio
        .open(&format!("{}/studio.html?room=r1", t.base))
        .await;
    sign_in(&studio, "streamer").await;
    studio
        .wait_until(
            "studio-preview",
            "the camera preview plays",
            "return document.getElementById('preview').readyState;",
            |v| v.as_u64().unwrap_or(0) >= 2,
        )
        .await;
    studio.click("#go-live").await;
    studio
        .wait_until(
            "studio-live",
            "the studio goes live",
            &text_of("state"),
            |v| v == "live",
        )
        .await;

    // Ann's page hears stream_started and plays; Bob joins after.
    let decoded = "return Number(document.getElementById('video').dataset.framesDecoded || 0);";
    ann.wait_until("ann-frames", "ann decodes frames", decoded, |v| {
        v.as_u64().unwrap_or(0) >= 30
    })
    .await;
    // Bob is on a phone.
    let bob = Browser::start().await;
    bob.resize(390, 844).await;
    bob.open(&format!("{}/watch.html?room=r1", t.base)).await;
    sign_in(&bob, "bob").await;
    bob.wait_until("bob-frames", "bob decodes frames", decoded, |v| {
        v.as_u64().unwrap_or(0) >= 30
    })
    .await;
    assert_usable(&bob, "watch, phone width").await;
    assert_usable(&ann, "watch").await;
    assert_usable(&studio, "studio").await;

    // Ann's danmaku: in the studio's feed and over Bob's video.
    // Sent from the keyboard: Enter in the text field.
    ann.fill("#text", "hello from ann\u{E007}").await;
    studio
        .wait_until(
            "studio-chat",
            "the studio sees ann's danmaku",
            &text_of("chat"),
            contains("ann: hello from ann"),
        )
        .await;
    bob.wait_until(
        "bob-overlay",
        "ann's danmaku flies over bob's video",
        "return [...document.querySelectorAll('#overlay .danmaku')].map(e => e.textContent).join('|');",
        contains("hello from ann"),
    )
    .await;

    // A gift: Ann's balance drops, the studio's leaderboard shows her.
    ann.wait_until("ann-balance", "ann's wallet", &text_of("balance"), |v| {
        v == "100"
    })
    .await;
    ann.click("#gifts button[data-gift='heart']").await;
    ann.wait_until(
        "ann-balance-after",
        "the heart is paid",
        &text_of("balance"),
        |v| v == "90",
    )
    .await;
    studio
        .wait_until(
            "studio-leaderboard",
            "the leaderboard",
            &text_of("leaderboard"),
            contains("ann · 10"),
        )
        .await;

    // Refusals, as sentences: a blocked word, too many danmaku, then a gift
    // beyond the balance.
    studio.fill("#term", "spoiler").await;
    studio.click("#term-form button").await;
    studio
        .wait_until(
            "studio-blocked",
            "the word is blocked",
            &text_of("status"),
            contains("blocked"),
        )
        .await;
    ann.fill("#text", "a spoiler here").await;
    ann.click("#send-form button").await;
    ann.wait_until(
        "ann-blocked",
        "ann is told",
        &text_of("status"),
        contains("blocked word"),
    )
    .await;
    // A burst of danmaku meets the rate limit.
    for n in 0..6 {
        ann.fill("#text", &format!("again {n}\u{E007}")).await;
    }
    ann.wait_until(
        "ann-rate",
        "ann is told to slow down",
        &text_of("status"),
        contains("Slow down"),
    )
    .await;
    ann.click("#gifts button[data-gift='rocket']").await;
    ann.wait_until(
        "ann-funds",
        "ann is told",
        &text_of("status"),
        contains("Not enough coins"),
    )
    .await;

    // An expired sign-in is not used: the page asks to sign in again.
    bob.eval(
        "localStorage.setItem('live-engine.token', arguments[0]); location.reload();",
        json!([expired_token()]),
    )
    .await;
    bob.wait_until(
        "bob-expired",
        "bob is asked to sign in again",
        &text_of("status"),
        contains("expired"),
    )
    .await;

    studio.click("#stop").await;
    ann.wait_until(
        "ann-ended",
        "the end is shown",
        &text_of("status"),
        contains("ended"),
    )
    .await;
    for browser in [ann, bob, studio] {
        browser.quit().await;
    }
    t.shutdown().await;
}

#[tokio::test]
async fn pages_are_served_beside_the_api_with_caching_and_json_404s() {
    let t = TestEngine::start_with(|c| c.web_dir = web_dist()).await;
    let page = t
        .http
        .get(format!("{}/watch.html", t.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let modified = page.headers()["last-modified"].clone();
    // A browser revalidating its cached copy gets 304, not a 404.
    let cached = t
        .http
        .get(format!("{}/watch.html", t.base))
        .header("if-modified-since", modified)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304);
    for (path, message) in [
        ("/nope.html", "no such page"),
        ("/v1/nope", "no such route"),
    ] {
        let missing = t
            .http
            .get(format!("{}{path}", t.base))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404, "{path}");
        let body: Value = missing.json().await.unwrap();
        assert_eq!(body["error"]["message"], message, "{path}: {body}");
    }
    t.shutdown().await;
}

/// A token whose `exp` has passed (signed by the engine's key, so only its
/// age is wrong).
fn expired_token() -> String {
    let auth = gateway::Auth::new(ADMIN_KEY);
    let claims = gateway::Claims {
        user_id: "bob".into(),
        name: "bob".into(),
        room: "r1".into(),
        grants: vec![gateway::Grant::Subscribe],
        exp: 1_000_000,
        iat: 999_000,
        region: String::new(),
    };
    auth.issue(&claims).unwrap()
}

/// What the recordings page's overlay shows: `(text, offset_ms, playhead_ms)`
/// of each replayed comment on screen.
const REPLAYED: &str = "return [...document.querySelectorAll('#overlay .danmaku')]
    .map(e => [e.textContent, Number(e.dataset.offsetMs), Number(e.dataset.playheadMs)]);";

fn replayed(value: &Value) -> Vec<(String, u64, u64)> {
    serde_json::from_value(value.clone()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_carries_the_live_stream_without_webrtc_and_the_recording_replays_its_danmaku_and_avatar()
 {
    let dist = web_dist();
    let t = common::recording::transcoding_engine(|c| c.web_dir = dist).await;
    t.create_room("r1").await;
    let publish_token = t.token("streamer", "r1", &["publish"]).await;
    let viewer_token = t.token("viewer", "r1", &["subscribe", "chat"]).await;
    let publisher = common::recording::publish(&t, "/whip/r1/main", &publish_token).await;
    let live = common::recording::live_hls(&t, "main", &viewer_token, None).await;
    let recording = live["recording_id"].as_str().unwrap().to_owned();

    // A viewer whose browser has no WebRTC watches over HLS instead.
    let bob = Browser::start().await;
    bob.disable_webrtc().await;
    bob.open(&format!("{}/watch.html?room=r1", t.base)).await;
    sign_in(&bob, "bob").await;
    bob.wait_until(
        "hls-fallback",
        "bob's page plays the stream over HLS",
        "const v = document.getElementById('video');
         return [v.dataset.transport, v.currentTime > 1 && v.videoWidth > 0];",
        |v| v == &json!(["hls", true]),
    )
    .await;
    let said = bob.eval(&text_of("status"), json!([])).await;
    assert!(contains("WebRTC failed")(&said), "{said}");
    bob.quit().await;

    // Three comments a second apart while the stream is recorded, and
    // the virtual host moving all along.
    let avatar_url = format!("{}/avatar", t.ws_url("r1").trim_end_matches("/ws"));
    let (mut tracker, _) =
        tokio_tungstenite::connect_async(format!("{avatar_url}?token={publish_token}"))
            .await
            .unwrap();
    let moving = tokio::spawn(async move {
        for _ in 0..60 {
            let pose = tokio_tungstenite::tungstenite::Message::binary(vmc_pose());
            futures_util::SinkExt::send(&mut tracker, pose)
                .await
                .unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    });
    let mut chat = common::Client::connect(&t.ws_url("r1"), &viewer_token, None).await;
    for (index, text) in ["first", "second", "third"].into_iter().enumerate() {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        chat.send_danmaku(text, &format!("d{index}")).await;
    }
    assert_eq!(chat.next_items(3).await.len(), 3);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    moving.await.unwrap();
    common::recording::unpublish(&t, publisher, "/whip/r1/main", &publish_token).await;
    common::recording::ready_vod(&t, &recording, &viewer_token).await;
    let stored = t
        .get_json_as(
            &format!("/v1/vod/{recording}/danmaku?segment=0"),
            &viewer_token,
        )
        .await;
    let offset = |text: &str| {
        stored["items"]
            .as_array()
            .and_then(|items| items.iter().find(|i| i["text"] == text))
            .and_then(|i| i["offset_ms"].as_u64())
            .unwrap_or_else(|| panic!("{text} is not in the replay: {stored}"))
    };

    // The page plays the recording; each comment shows as the playhead
    // passes its offset (within a few frames: it is checked every frame).
    let ann = Browser::start().await;
    ann.open(&format!("{}/vod.html?room=r1&vod={recording}", t.base))
        .await;
    sign_in(&ann, "ann").await;
    let all_three = |v: &Value| replayed(v).len() == 3;
    let shown = replayed(
        &ann.wait_until(
            "vod-replay",
            "the three comments replay",
            REPLAYED,
            all_three,
        )
        .await,
    );
    eprintln!("replayed (text, offset, playhead): {shown:?}");
    for (text, offset_ms, playhead_ms) in &shown {
        assert_eq!(*offset_ms, offset(text), "{shown:?}");
        assert!(
            (*offset_ms..=offset_ms + 250).contains(playhead_ms),
            "{text} belongs at {offset_ms} ms and was shown at {playhead_ms} ms: {shown:?}"
        );
    }

    // The host's recorded motion plays with it.
    avatar_drawn(
        &ann,
        "vod-avatar",
        "the recorded avatar moves with the playback",
    )
    .await;
    assert_usable(&ann, "recordings").await;

    // A seek back to just before the second: the second and third come
    // again at their moments, the first (behind the playhead) does not.
    let seek_to = offset("second") - 400;
    ann.eval(
        "const v = document.getElementById('video'); v.currentTime = arguments[0] / 1000; v.play();",
        json!([seek_to]),
    )
    .await;
    let after_seek = replayed(
        &ann.wait_until(
            "vod-seek",
            "the second and third comments replay after the seek",
            REPLAYED,
            |v| {
                replayed(v)
                    .iter()
                    .filter(|(_, _, at)| *at >= seek_to)
                    .count()
                    == 2
            },
        )
        .await,
    );
    eprintln!("after the seek to {seek_to} ms: {after_seek:?}");
    let texts: Vec<&str> = after_seek.iter().map(|(text, ..)| text.as_str()).collect();
    assert_eq!(texts, ["second", "third"], "{after_seek:?}");
    for (text, offset_ms, playhead_ms) in &after_seek {
        assert!(
            (*offset_ms..=offset_ms + 250).contains(playhead_ms),
            "after the seek {text} was shown at {playhead_ms} ms: {after_seek:?}"
        );
    }
    ann.quit().await;
    t.shutdown().await;
}

/// Waits until the page's avatar canvas shows the three bones of
/// [`vmc_pose`].
async fn avatar_drawn(page: &Browser, name: &str, what: &str) {
    page.wait_until(
        name,
        what,
        "const c = document.getElementById('avatar');
         return c.classList.contains('hidden') ? 0 : Number(c.dataset.bones || 0);",
        |v| v.as_u64() == Some(3),
    )
    .await;
}

/// An engine serving the web app with the demo clips, and room `r1`.
async fn story_engine() -> TestEngine {
    let dist = web_dist();
    let t = TestEngine::start_with(|c| {
        c.web_dir = dist;
        c.story.clips_dir = common::demo_clips();
    })
    .await;
    t.create_room("r1").await;
    t
}

/// A story of one long vote: go left (the `midnight` clip) or right
/// (`aurora`); with `lines`, the host asks and names the way taken.
fn two_way_story(id: &str, version: u32, lines: bool) -> Value {
    let say = |line: &str| if lines { json!([line]) } else { json!([]) };
    json!({
        "id": id, "version": version, "start": "ask",
        "nodes": [
            {"id": "ask", "scene": {"live": "main"}, "host_lines": say("Which way now?"),
             "choices": [
                {"id": "left", "label": "Go left", "next": "left-end"},
                {"id": "right", "label": "Go right", "next": "right-end"}
             ],
             "trigger": {"vote": {"window_ms": 600000, "allow_change": true}}},
            {"id": "left-end", "scene": {"clip": "midnight.mp4"}, "host_lines": say("Left it is.")},
            {"id": "right-end", "scene": {"clip": "aurora.mp4"}, "host_lines": say("Right it is.")}
        ]
    })
}

/// A VMC bundle of three bones (hips, spine, chest): what a tracking app
/// sends for a standing figure.
fn vmc_pose() -> Vec<u8> {
    let bone = |name: &str, y: f32| {
        let mut args = vec![rosc::OscType::String(name.into())];
        args.extend([0.0, y, 0.0, 0.0, 0.0, 0.0, 1.0].map(rosc::OscType::Float));
        rosc::OscPacket::Message(rosc::OscMessage {
            addr: "/VMC/Ext/Bone/Pos".into(),
            args,
        })
    };
    let packet = rosc::OscPacket::Bundle(rosc::OscBundle {
        timetag: rosc::OscTime::from((0, 1)),
        content: vec![bone("Hips", 1.0), bone("Spine", 0.2), bone("Chest", 0.2)],
    });
    rosc::encoder::encode(&packet).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_rides_out_a_network_drop() {
    let dist = web_dist();
    let mut path = FlakyPath::bind().await;
    let media_addr = path.media_addr;
    let t = TestEngine::start_with(|c| {
        c.web_dir = dist;
        c.media_advertised_addr = Some(media_addr);
    })
    .await;
    path.start(t.engine().http_addr(), t.engine().media_addr());
    t.create_room("r1").await;
    let publish_token = t.token("streamer", "r1", &["publish"]).await;
    let publisher = common::recording::publish(&t, "/whip/r1/main", &publish_token).await;
    let spared = path.media_clients();
    assert!(!spared.is_empty(), "the publisher's media takes the path");

    let ann = Browser::start().await;
    ann.open(&format!("{}/watch.html?room=r1", path.http_base))
        .await;
    sign_in(&ann, "ann").await;
    let decoded = "return Number(document.getElementById('video').dataset.framesDecoded || 0);";
    ann.wait_until("drop-frames", "ann decodes frames", decoded, |v| {
        v.as_u64().unwrap_or(0) >= 30
    })
    .await;

    // Ann's network goes (the publisher's stays): the room socket notices
    // at once, the media connection once ICE hears nothing more.
    path.cut(&spared);
    let cut = std::time::Instant::now();
    ann.wait_until(
        "drop-socket",
        "the page says it reconnects to the room",
        &text_of("status"),
        contains("Reconnecting"),
    )
    .await;
    let viewer_token = t.token("bob", "r1", &["subscribe", "chat"]).await;
    let mut bob = common::Client::connect(&t.ws_url("r1"), &viewer_token, None).await;
    bob.send_danmaku("while you were away", "away").await;
    ann.wait_until(
        "drop-media",
        "the page notices the media connection is gone",
        &text_of("playback"),
        |v| v == "reconnecting…",
    )
    .await;

    // The network comes back: a new WHEP session plays, and the room
    // socket catches up on what was said meanwhile.
    eprintln!(
        "the page noticed the media drop {:?} after the cut",
        cut.elapsed()
    );
    path.heal();
    let healed = std::time::Instant::now();
    ann.wait_until(
        "drop-frames-again",
        "ann decodes frames again",
        decoded,
        |v| v.as_u64().unwrap_or(0) >= 30,
    )
    .await;
    ann.wait_until(
        "drop-caught-up",
        "the comment sent during the drop arrives",
        &text_of("chat"),
        contains(": while you were away"),
    )
    .await;
    eprintln!(
        "playing and caught up {:?} after the network came back",
        healed.elapsed()
    );
    ann.quit().await;
    common::recording::unpublish(&t, publisher, "/whip/r1/main", &publish_token).await;
    t.shutdown().await;
}

/// The watch page's story panel: a viewer arriving mid-vote sees the scene,
/// the host's line and the options with a countdown; a click votes (the
/// button shows it and the count moves for everyone); an operator's
/// decision shows the result and the next scene, whose clip plays in the
/// page (the room's program); the host's tracker sends VMC and the avatar
/// appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_votes_from_the_story_panel() {
    let t = story_engine().await;
    let graph = two_way_story("panel", 1, true);
    assert_eq!(t.post_json("/v1/stories", ADMIN_KEY, &graph).await.0, 201);
    let operator = t.token("op", "r1", &["moderate"]).await;
    let start = json!({ "graph_id": "panel", "version": 1 });
    assert_eq!(
        t.post_json("/v1/rooms/r1/story", &operator, &start).await.0,
        201
    );

    let ann = Browser::start().await;
    ann.open(&format!("{}/watch.html?room=r1", t.base)).await;
    sign_in(&ann, "ann").await;
    let panel = "const s = document.getElementById('story');
        return s.classList.contains('hidden') ? null : s.innerText;";
    ann.wait_until(
        "story-panel",
        "the story panel shows the open vote",
        panel,
        |v| {
            v.as_str().is_some_and(|text| {
                text.contains("Which way now?")
                    && text.contains("Go left")
                    && text.contains("Go right")
                    && text.contains("closes in")
            })
        },
    )
    .await;
    assert_usable(&ann, "watch with a story").await;
    ann.click("button[data-option='right']").await;
    ann.wait_until(
        "story-voted",
        "the vote is counted and shown",
        "const b = document.querySelector(\"button[data-option='right']\");
         return [b.getAttribute('aria-pressed'), b.textContent];",
        |v| v[0] == json!("true") && v[1].as_str().is_some_and(|t| t.contains("100% (1)")),
    )
    .await;
    let view = t.get_json_as("/v1/rooms/r1/story", &operator).await;
    assert_eq!(view["tallies"], json!([["left", 0], ["right", 1]]));

    let choose = json!({"choice": "left"});
    assert_eq!(
        t.post_json("/v1/rooms/r1/story/choose", &operator, &choose)
            .await
            .0,
        200
    );
    ann.wait_until(
        "story-result",
        "the result and the next scene show",
        panel,
        |v| {
            v.as_str().is_some_and(|text| {
                text.contains("Result: Go left (decided by the host)")
                    && text.contains("Left it is.")
            })
        },
    )
    .await;
    // The page follows the room's program: the chosen scene's clip
    // (480x270) plays in its WebRTC session, decoded by Chromium.
    ann.wait_until(
        "story-program",
        "the chosen clip plays in the page",
        "const v = document.getElementById('video');
         return [v.videoWidth, v.videoHeight, v.dataset.transport];",
        |v| *v == json!([480, 270, "webrtc"]),
    )
    .await;
    ann.wait_until(
        "story-caption",
        "the host's line shows as a caption over the program",
        "return document.getElementById('caption').dataset.last || null;",
        |v| v == "Left it is.",
    )
    .await;

    // The host's tracker sends VMC: the avatar appears with its bones.
    let performer = t.token("host", "r1", &["publish"]).await;
    let avatar_url = format!("{}/avatar", t.ws_url("r1").trim_end_matches("/ws"));
    let (mut tracker, _) =
        tokio_tungstenite::connect_async(format!("{avatar_url}?token={performer}"))
            .await
            .unwrap();
    futures_util::SinkExt::send(
        &mut tracker,
        tokio_tungstenite::tungstenite::Message::binary(vmc_pose()),
    )
    .await
    .unwrap();
    avatar_drawn(&ann, "avatar", "the avatar appears with its bones").await;
    assert_usable(&ann, "watch with an avatar").await;
    ann.quit().await;
    t.shutdown().await;
}

/// The studio's story controls: a moderator starts a graph by name, sees
/// where it stands, pauses and resumes it, and takes a choice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moderator_runs_a_story_from_the_studio() {
    let t = story_engine().await;
    let graph = two_way_story("show", 2, false);
    assert_eq!(t.post_json("/v1/stories", ADMIN_KEY, &graph).await.0, 201);

    let studio = Browser::start().await;
    studio
        .open(&format!("{}/studio.html?room=r1", t.base))
        .await;
    sign_in(&studio, "streamer").await;
    studio.fill("#story-graph", "show").await;
    studio.fill("#story-version", "2").await;
    studio.click("#story-form button").await;
    let state = text_of("story-state");
    studio
        .wait_until(
            "studio-story",
            "the run shows in the studio",
            &state,
            contains("show: at ask"),
        )
        .await;
    assert_usable(&studio, "studio with a story").await;
    studio.click("#story-pause").await;
    studio
        .wait_until("studio-paused", "pausing shows", &state, contains("paused"))
        .await;
    studio.click("#story-resume").await;
    studio
        .wait_until("studio-resumed", "resuming shows", &state, |v| {
            v.as_str()
                .is_some_and(|s| s.contains("at ask") && !s.contains("paused"))
        })
        .await;
    studio.click("#story-choices button:nth-child(2)").await;
    studio
        .wait_until(
            "studio-chosen",
            "the choice is taken",
            &state,
            contains("at right-end · ended"),
        )
        .await;
    let view = t.get_json_as("/v1/rooms/r1/story", ADMIN_KEY).await;
    assert_eq!(view["history"][1]["by"], "operator");
    studio.quit().await;
    t.shutdown().await;
}
