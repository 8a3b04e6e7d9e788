//! Interop with GStreamer's webrtcbin (Debian's GStreamer 1.22), driven by
//! `tests/clients/gst_whip.py`: a third WebRTC implementation with the
//! quirks GStreamer's whipsink shows. Its max-bundle offer makes the audio
//! m-line bundle-only (port 0), offers no `sdes:mid` extension (packets
//! are told apart by SSRC), lists TCP, IPv6 and link-local candidates, and
//! its DTLS certificate is RSA. A webrtc-rs viewer decodes what it sends.
//!
//! libnice gathers no loopback candidates, so the engine's media socket
//! sits on the namespace's veth address that `scripts/test` creates
//! (10.203.0.1 on live0, a pair that leads nowhere but itself).

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::TestEngine;
use load_tests::rtc::{Endpoint, Subscriber, SubscriberStats, wait_for};
use tokio::io::{AsyncBufReadExt, BufReader};

const VETH_ADDR: &str = "10.203.0.1";
const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gstreamer_webrtcbin_publisher_reaches_a_webrtc_rs_viewer() {
    assert!(
        std::net::UdpSocket::bind((VETH_ADDR, 0)).is_ok(),
        "{VETH_ADDR} is not an address here: run the suite through scripts/test, \
         which creates it in a private network namespace"
    );
    let t = TestEngine::start_with(|config| {
        config.media_udp_addr = format!("{VETH_ADDR}:0").parse().unwrap();
    })
    .await;
    t.create_room("g1").await;
    let publish_token = t.token("gst", "g1", &["publish"]).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/gst_whip.py");
    let mut gst = tokio::process::Command::new("/usr/bin/python3")
        .arg(script)
        .arg(format!("{}/whip/g1/main", t.base))
        .arg(&publish_token)
        .arg("6")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 with GStreamer's introspection bindings (scripts/install-deps --test)");
    let mut lines = BufReader::new(gst.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("the GStreamer publisher answers within 20 s")
        .unwrap()
        .unwrap_or_default();
    assert!(
        first.starts_with("location /whip/g1/main/"),
        "the engine accepted GStreamer's offer: {first}"
    );

    let streams = t.get_json("/v1/rooms/g1/streams").await;
    assert_eq!(
        streams["streams"][0]["tracks"],
        serde_json::json!(["video", "audio"]),
        "{streams}"
    );

    let token = t.token("viewer", "g1", &["subscribe"]).await;
    let whep = Endpoint {
        http: &t.http,
        base: &t.base,
        path: "/whep/g1/main",
        token: &token,
    };
    let viewer = Subscriber::start(&whep, true).await.unwrap();
    let stats = viewer.stats().clone();
    let enough = || {
        SubscriberStats::get(&stats.decoded_frames) >= 30
            && SubscriberStats::get(&stats.audio_samples) >= 25 * 960
    };
    if wait_for(enough, WAIT).await.is_err() {
        panic!(
            "GStreamer's media decoded at the viewer: {}",
            stats.summary()
        );
    }
    eprintln!("viewer: {}", stats.summary());
    assert_eq!(stats.dimensions(), (320, 240), "{}", stats.summary());
    assert_eq!(
        SubscriberStats::get(&stats.decode_errors),
        0,
        "{}",
        stats.summary()
    );

    // The script DELETEs its session when it is done.
    let deleted = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("the publisher finishes")
        .unwrap()
        .unwrap_or_default();
    assert_eq!(deleted, "deleted 200");
    let status = tokio::time::timeout(WAIT, gst.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    let ended = || stats.disconnected() || SubscriberStats::get(&stats.tracks_ended) >= 2;
    if wait_for(ended, WAIT).await.is_err() {
        panic!(
            "the viewer's session outlived the stream: {}",
            stats.summary()
        );
    }
    viewer.close().await;
    t.shutdown().await;
}
