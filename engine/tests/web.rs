//! The web app (web/dist, served by the engine at `/`) in headless
//! Chromium with a fake camera: the studio goes live over WHIP, two
//! viewers watch over WHEP, a viewer's danmaku reaches the studio and the
//! other viewer's overlay, a gift moves the balance and the leaderboard,
//! and refusals (stream not live, blocked word, no coins, expired sign-in)
//! are shown as sentences. A failed wait saves a screenshot under
//! target/screenshots/.

mod common;

use std::path::PathBuf;

use common::browser::Browser;
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

fn text_of(id: &str) -> String {
    format!("return document.getElementById('{id}').textContent;")
}

fn contains(needle: &str) -> impl Fn(&Value) -> bool + '_ {
    move |v| v.as_str().is_some_and(|text| text.contains(needle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn studio_and_viewers_meet_in_the_web_app() {
    let dist = web_dist();
    let t = TestEngine::start_with(|c| c.web_dir = dist).await;
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
    ann.open(&format!("{}/watch.html?room=r1&to=streamer", t.base))
        .await;
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
    let bob = Browser::start().await;
    bob.open(&format!("{}/watch.html?room=r1&to=streamer", t.base))
        .await;
    sign_in(&bob, "bob").await;
    bob.wait_until("bob-frames", "bob decodes frames", decoded, |v| {
        v.as_u64().unwrap_or(0) >= 30
    })
    .await;

    // Ann's danmaku: in the studio's feed and over Bob's video.
    ann.fill("#text", "hello from ann").await;
    ann.click("#send-form button").await;
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

    // Refusals, as sentences: a blocked word, then a gift beyond the balance.
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
