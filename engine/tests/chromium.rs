//! End to end in headless Chromium (libwebrtc): one page publishes the fake
//! camera and microphone over WHIP with three simulcast layers, two pages
//! play it over WHEP, one asking for the high layer and one for the low;
//! and hls.js (from `web/node_modules`) plays a recording's HLS.
//! Chromium is driven through chromedriver's W3C HTTP API.

mod common;

use std::time::{Duration, Instant};

use axum::response::Html;
use axum::routing::get;
use common::TestEngine;
use common::browser::Browser;
use serde_json::{Value, json};

/// Serves the test pages from http://127.0.0.1 (a secure context, so
/// getUserMedia works).
async fn serve_pages() -> String {
    let app = axum::Router::new()
        .route(
            "/publish.html",
            get(|| async { Html(include_str!("pages/publish.html")) }),
        )
        .route(
            "/view.html",
            get(|| async { Html(include_str!("pages/view.html")) }),
        )
        .route(
            "/hls.html",
            get(|| async { Html(include_str!("pages/hls.html")) }),
        )
        .route("/hls.min.js", get(hls_js));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// hls.js as `scripts/test` installed it (`npm ci` in `web/`).
async fn hls_js() -> impl axum::response::IntoResponse {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../web/node_modules/hls.js/dist/hls.min.js"
    );
    let script = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e} (scripts/test runs npm ci in web/)"));
    ([("content-type", "text/javascript")], script)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_js_plays_a_live_stream_and_its_recording_in_chromium() {
    let t = common::recording::transcoding_engine(|_| {}).await;
    t.create_room("r1").await;
    let publish_token = t.token("streamer", "r1", &["publish"]).await;
    let viewer_token = t.token("viewer", "r1", &["subscribe"]).await;
    let publisher = common::recording::publish(&t, "/whip/r1/main", &publish_token).await;
    let live = common::recording::live_hls(&t, "main", &viewer_token, None).await;
    let recording = live["recording_id"].as_str().unwrap().to_owned();
    let pages = serve_pages().await;
    let play = |url: &str| {
        format!(
            "{pages}/hls.html?src={}",
            urlencode(&format!("{}{url}", t.base))
        )
    };

    // Live: hls.js follows the growing EVENT playlist.
    let browser = Browser::start().await;
    browser.open(&play(live["url"].as_str().unwrap())).await;
    let state = browser
        .wait_for("hls.js plays the live stream", |s| {
            s["currentTime"].as_f64().unwrap_or(0.0) >= 1.0
                && s["videoWidth"].as_u64().unwrap_or(0) > 0
        })
        .await;
    eprintln!("hls.js live: {state}");
    assert_eq!(state["errors"], Value::Null, "no error, fatal or not");

    common::recording::unpublish(&t, publisher, "/whip/r1/main", &publish_token).await;

    // The recording, from the start.
    let vod = common::recording::ready_vod(&t, &recording, &viewer_token).await;
    browser
        .open(&play(vod["playlist_url"].as_str().unwrap()))
        .await;
    let state = browser
        .wait_for("hls.js plays the recording past 2 s", |s| {
            s["currentTime"].as_f64().unwrap_or(0.0) >= 2.0
                && s["videoWidth"].as_u64().unwrap_or(0) > 0
        })
        .await;
    eprintln!("hls.js recording: {state}");
    assert_eq!(state["levels"], json!(["320x180", "640x360"]), "{state}");
    assert_eq!(state["errors"], Value::Null, "no error, fatal or not");
    assert_eq!(
        state["audioTracks"],
        json!(0),
        "audio is muxed into each rendition"
    );
    let duration = state["duration"].as_f64().unwrap();
    let recorded = vod["duration_ms"].as_f64().unwrap() / 1000.0;
    assert!(
        (duration - recorded).abs() < 1.0,
        "the player sees the recording's length: {duration} vs {recorded}"
    );
    browser.quit().await;
    t.shutdown().await;
}

/// Percent-encodes a URL for a query parameter.
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_publishes_simulcast_over_whip_and_chromium_plays_each_layer_over_whep() {
    let t = TestEngine::start().await;
    t.create_room("r1").await;
    let pages = serve_pages().await;
    let publish = t.token("streamer", "r1", &["publish"]).await;

    let publisher = Browser::start().await;
    publisher
        .open(&format!(
            "{pages}/publish.html?base={}&token={publish}",
            t.base
        ))
        .await;
    publisher
        .wait_for("the publisher connects", |s| s["connection"] == "connected")
        .await;

    let mut viewers = Vec::new();
    for layer in ["high", "low"] {
        let token = t
            .token(&format!("viewer-{layer}"), "r1", &["subscribe"])
            .await;
        let viewer = Browser::start().await;
        viewer
            .open(&format!(
                "{pages}/view.html?base={}&token={token}&layer={layer}",
                t.base
            ))
            .await;
        viewers.push((layer, viewer));
    }
    for (layer, viewer) in &viewers {
        let state = viewer
            .wait_for(&format!("{layer} frames decoded"), |s| {
                s["framesDecoded"].as_u64().unwrap_or(0) >= 30
                    && s["videoWidth"].as_u64().unwrap_or(0) > 0
            })
            .await;
        eprintln!(
            "chromium {layer}: WHEP POST -> first decoded frame {} ms",
            state["firstFrameMs"]
        );
    }
    // Chromium starts simulcast on its lowest layers and turns the higher
    // ones on as its bandwidth estimate grows: wait for the high viewer to
    // be served a wider picture than the low one.
    let deadline = Instant::now() + Duration::from_secs(30);
    let widths = loop {
        let high = viewers[0].1.state().await["width"].as_u64().unwrap_or(0);
        let low = viewers[1].1.state().await["width"].as_u64().unwrap_or(0);
        if high > low && low > 0 {
            break (high, low);
        }
        assert!(
            Instant::now() < deadline,
            "the high layer never got wider than the low one: {high} vs {low}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("chromium widths: high {} px, low {} px", widths.0, widths.1);

    for (_, viewer) in viewers {
        viewer.quit().await;
    }
    publisher.quit().await;
    t.shutdown().await;
}
