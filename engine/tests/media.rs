//! WHIP and WHEP against a real engine, with str0m peers on real UDP
//! sockets on 127.0.0.1 (their only ICE candidates). The webrtc-rs,
//! GStreamer and Chromium peers have their own test files.

mod common;

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{ADMIN_KEY, TestEngine};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

/// A peer with its own UDP socket, driven by its own thread.
struct Peer {
    socket: UdpSocket,
    rtc: Rtc,
    pending: Option<SdpPendingOffer>,
    mids: Vec<(Mid, MediaKind)>,
}

/// What a running peer reports.
#[derive(Default)]
struct Counters {
    connected: AtomicBool,
    video_frames: AtomicUsize,
    audio_frames: AtomicUsize,
}

impl Peer {
    fn offer(direction: Direction) -> (Self, String) {
        sfu::install_crypto();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut rtc = Rtc::new(Instant::now());
        rtc.add_local_candidate(Candidate::host(socket.local_addr().unwrap(), "udp").unwrap());
        let mut change = rtc.sdp_api();
        let video = change.add_media(MediaKind::Video, direction, None, None, None);
        let audio = change.add_media(MediaKind::Audio, direction, None, None, None);
        let (offer, pending) = change.apply().unwrap();
        let peer = Self {
            socket,
            rtc,
            pending: Some(pending),
            mids: vec![(video, MediaKind::Video), (audio, MediaKind::Audio)],
        };
        (peer, offer.to_sdp_string())
    }

    /// Accepts the answer and runs the peer until `stop`; a publisher
    /// sends 30 fps VP8-shaped frames and 50 Opus-shaped frames a second.
    fn run(
        mut self,
        answer: &str,
        publish: bool,
        stop: Arc<AtomicBool>,
    ) -> (Arc<Counters>, JoinHandle<()>) {
        let answer = SdpAnswer::from_sdp_string(answer).unwrap();
        self.rtc
            .sdp_api()
            .accept_answer(self.pending.take().unwrap(), answer)
            .unwrap();
        let counters = Arc::new(Counters::default());
        let report = counters.clone();
        let handle = std::thread::spawn(move || {
            let local = self.socket.local_addr().unwrap();
            let start = Instant::now();
            let (mut next_video, mut next_audio) = (start, start);
            let (mut video_n, mut audio_n) = (0u64, 0u64);
            let mut buf = vec![0u8; 2000];
            while !stop.load(Ordering::Relaxed) {
                let timeout = loop {
                    match self.rtc.poll_output().unwrap() {
                        Output::Timeout(at) => break at,
                        Output::Transmit(t) => {
                            let _ = self.socket.send_to(&t.contents, t.destination);
                        }
                        Output::Event(Event::Connected) => {
                            counters.connected.store(true, Ordering::Relaxed)
                        }
                        Output::Event(Event::MediaData(data)) => {
                            let kind = self
                                .mids
                                .iter()
                                .find(|(m, _)| *m == data.mid)
                                .map(|(_, k)| *k);
                            let counter = if kind == Some(MediaKind::Video) {
                                &counters.video_frames
                            } else {
                                &counters.audio_frames
                            };
                            counter.fetch_add(1, Ordering::Relaxed);
                        }
                        Output::Event(_) => {}
                    }
                };
                let now = Instant::now();
                if publish && counters.connected.load(Ordering::Relaxed) {
                    if now >= next_video {
                        video_n += 1;
                        self.write(
                            MediaKind::Video,
                            MediaTime::new(video_n * 3000, Frequency::NINETY_KHZ),
                            vp8_frame(video_n),
                            now,
                        );
                        next_video += Duration::from_millis(33);
                    }
                    if now >= next_audio {
                        audio_n += 1;
                        self.write(
                            MediaKind::Audio,
                            MediaTime::new(audio_n * 960, Frequency::FORTY_EIGHT_KHZ),
                            vec![0xfc; 80],
                            now,
                        );
                        next_audio += Duration::from_millis(20);
                    }
                }
                let wait = timeout
                    .saturating_duration_since(now)
                    .clamp(Duration::from_millis(1), Duration::from_millis(5));
                self.socket.set_read_timeout(Some(wait)).unwrap();
                match self.socket.recv_from(&mut buf) {
                    Ok((n, source)) => {
                        if let Ok(contents) = buf[..n].try_into() {
                            let input = Input::Receive(
                                Instant::now(),
                                Receive {
                                    proto: Protocol::Udp,
                                    source,
                                    destination: local,
                                    contents,
                                },
                            );
                            let _ = self.rtc.handle_input(input);
                        }
                    }
                    Err(_) => {
                        let _ = self.rtc.handle_input(Input::Timeout(Instant::now()));
                    }
                }
            }
        });
        (report, handle)
    }

    fn write(&mut self, kind: MediaKind, time: MediaTime, data: Vec<u8>, now: Instant) {
        let mid = self.mids.iter().find(|(_, k)| *k == kind).unwrap().0;
        let Some(writer) = self.rtc.writer(mid) else {
            return;
        };
        let Some(pt) = writer.payload_params().next().map(|p| p.pt()) else {
            return;
        };
        let _ = writer.write(pt, now, time, data);
    }
}

fn vp8_frame(n: u64) -> Vec<u8> {
    let mut frame = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00];
    frame.extend((0..800).map(|i| ((i as u64 + n) % 251) as u8));
    frame
}

struct Created {
    status: u16,
    location: Option<String>,
    etag: Option<String>,
    body: String,
}

async fn post_sdp(
    t: &TestEngine,
    path: &str,
    token: &str,
    content_type: &str,
    sdp: &str,
) -> Created {
    let response = t
        .http
        .post(format!("{}{path}", t.base))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(sdp.to_owned())
        .send()
        .await
        .unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (status, location, etag) = (
        response.status().as_u16(),
        header("location"),
        header("etag"),
    );
    Created {
        status,
        location,
        etag,
        body: response.text().await.unwrap(),
    }
}

/// Waits until a counter reaches `at_least` (the media thread counts
/// asynchronously).
async fn until_metric(t: &TestEngine, name: &str, at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.metric(name).await.unwrap_or(0.0) < at_least {
        assert!(Instant::now() < deadline, "{name} never reached {at_least}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn until(condition: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_publisher_reaches_whep_subscribers_until_it_deletes_its_session() {
    let t = TestEngine::start().await;
    t.create_room("r1").await;
    // Noise on the media port first: ignored, nothing breaks.
    let noise = UdpSocket::bind("127.0.0.1:0").unwrap();
    for payload in [&b"hello"[..], &[0u8; 1200][..], &[0x80, 0x60, 0, 1][..]] {
        noise.send_to(payload, t.engine().media_addr()).unwrap();
    }

    until_metric(&t, "live_media_ignored_datagrams_total", 3.0).await;
    // A chat session in the room hears about the stream starting and ending.
    let mut chat = t.chatter("watcher", "r1").await;
    let publish_token = t.token("streamer", "r1", &["publish"]).await;
    let (publisher, offer) = Peer::offer(Direction::SendOnly);
    let created = post_sdp(
        &t,
        "/whip/r1/main",
        &publish_token,
        "application/sdp",
        &offer,
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let location = created.location.expect("Location");
    assert!(
        location.starts_with("/whip/r1/main/") && location.len() > "/whip/r1/main/".len() + 30,
        "unguessable: {location}"
    );
    assert!(created.etag.is_some_and(|e| e.starts_with('"')));
    assert!(created.body.starts_with("v=0"), "an SDP answer");
    let stop = Arc::new(AtomicBool::new(false));
    let (publishing, publisher_thread) = publisher.run(&created.body, true, stop.clone());

    let mut viewers = Vec::new();
    for user in ["v1", "v2"] {
        let token = t.token(user, "r1", &["subscribe"]).await;
        let (viewer, offer) = Peer::offer(Direction::RecvOnly);
        let created = post_sdp(&t, "/whep/r1/main", &token, "application/sdp", &offer).await;
        assert_eq!(created.status, 201, "{}", created.body);
        assert!(
            created
                .location
                .as_deref()
                .is_some_and(|l| l.starts_with("/whep/r1/main/"))
        );
        viewers.push(viewer.run(&created.body, false, stop.clone()));
    }
    until(
        || publishing.connected.load(Ordering::Relaxed),
        "the publisher to connect",
    )
    .await;
    for (counters, _) in &viewers {
        until(
            || counters.video_frames.load(Ordering::Relaxed) >= 30,
            "30 video frames at a viewer",
        )
        .await;
        until(
            || counters.audio_frames.load(Ordering::Relaxed) >= 30,
            "30 audio frames at a viewer",
        )
        .await;
    }

    match chat.next_control().await {
        protocol::v1::server_frame::Frame::StreamStarted(started) => {
            assert_eq!(started.stream, "main");
            assert_eq!(started.tracks, vec!["video", "audio"]);
            assert_eq!(started.publisher_user_id, "streamer");
        }
        other => panic!("expected stream_started, got {other:?}"),
    }
    // Per-stream counters from the media thread, and the forwarding delay.
    until_metric(&t, "live_media_forward_seconds_count", 30.0).await;
    for direction in ["in", "out"] {
        let series = format!(
            "live_media_bytes_total{{room=\"r1\",stream=\"main\",direction=\"{direction}\",kind=\"video\"}}"
        );
        until_metric(&t, &series, 10_000.0).await;
    }
    let listed = t.get_json("/v1/rooms/r1/streams").await;
    let stream = &listed["streams"][0];
    assert_eq!(stream["stream"], "main", "{listed}");
    assert_eq!(stream["subscribers"], 2, "{listed}");
    assert_eq!(stream["connected"], true, "{listed}");
    assert_eq!(stream["publisher_user_id"], "streamer", "{listed}");
    assert_eq!(
        stream["tracks"],
        serde_json::json!(["video", "audio"]),
        "{listed}"
    );

    let viewer_token = t.token("v1", "r1", &["subscribe"]).await;
    assert_eq!(
        t.delete(&location, &viewer_token).await,
        403,
        "only the owner ends a session"
    );
    assert_eq!(t.delete(&location, &publish_token).await, 200);
    assert_eq!(t.delete(&location, &publish_token).await, 404, "gone");
    let (_, offer) = Peer::offer(Direction::RecvOnly);
    let late = post_sdp(
        &t,
        "/whep/r1/main",
        &viewer_token,
        "application/sdp",
        &offer,
    )
    .await;
    assert_eq!(
        late.status, 404,
        "the stream ended with its publisher: {}",
        late.body
    );
    match chat.next_control().await {
        protocol::v1::server_frame::Frame::StreamEnded(ended) => assert_eq!(ended.stream, "main"),
        other => panic!("expected stream_ended, got {other:?}"),
    }
    let listed = t.get_json("/v1/rooms/r1/streams").await;
    assert_eq!(listed["streams"], serde_json::json!([]), "{listed}");
    stop.store(true, Ordering::Relaxed);
    publisher_thread.join().unwrap();
    for (_, thread) in viewers {
        thread.join().unwrap();
    }
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_and_whep_refuse_bad_requests_with_clear_errors() {
    let t = TestEngine::start_with(|c| c.media_max_subscribers_per_stream = 1).await;
    t.create_room("r1").await;
    let publish = t.token("streamer", "r1", &["publish"]).await;
    let subscribe = t.token("viewer", "r1", &["subscribe"]).await;
    let (_, offer) = Peer::offer(Direction::SendOnly);

    let check = |created: Created, status: u16, code: &str| {
        assert_eq!(created.status, status, "{}", created.body);
        let body: serde_json::Value = serde_json::from_str(&created.body).unwrap();
        assert_eq!(body["error"]["code"], code, "{body}");
        body["error"]["message"].as_str().unwrap().to_owned()
    };
    check(
        post_sdp(&t, "/whip/r1/main", &publish, "application/json", &offer).await,
        415,
        "unsupported_media_type",
    );
    let reason = check(
        post_sdp(
            &t,
            "/whip/r1/main",
            &publish,
            "application/sdp",
            "v=0\r\nnonsense",
        )
        .await,
        400,
        "bad_sdp",
    );
    assert!(reason.contains("SDP"), "{reason}");
    let unsupported = offer
        .replace("VP8/90000", "VP7/90000")
        .replace("H264/90000", "H263/90000")
        .replace("opus/48000", "SILK/48000");
    check(
        post_sdp(
            &t,
            "/whip/r1/main",
            &publish,
            "application/sdp",
            &unsupported,
        )
        .await,
        422,
        "no_codec",
    );
    let anywhere = t.token("streamer", "*", &["publish"]).await;
    check(
        post_sdp(&t, "/whip/nope/main", &anywhere, "application/sdp", &offer).await,
        404,
        "not_found",
    );
    check(
        post_sdp(&t, "/whip/r1/main", &subscribe, "application/sdp", &offer).await,
        403,
        "forbidden",
    );
    check(
        post_sdp(&t, "/whip/r1/main", "garbage", "application/sdp", &offer).await,
        401,
        "invalid_token",
    );
    let (_, whep_offer) = Peer::offer(Direction::RecvOnly);
    check(
        post_sdp(
            &t,
            "/whep/r1/main",
            &subscribe,
            "application/sdp",
            &whep_offer,
        )
        .await,
        404,
        "not_found",
    );

    assert_eq!(
        post_sdp(&t, "/whip/r1/main", &publish, "application/sdp", &offer)
            .await
            .status,
        201
    );
    let (_, second) = Peer::offer(Direction::SendOnly);
    check(
        post_sdp(&t, "/whip/r1/main", &publish, "application/sdp", &second).await,
        409,
        "conflict",
    );

    let (_, first_viewer) = Peer::offer(Direction::RecvOnly);
    assert_eq!(
        post_sdp(
            &t,
            "/whep/r1/main",
            &subscribe,
            "application/sdp",
            &first_viewer
        )
        .await
        .status,
        201
    );
    let (_, second_viewer) = Peer::offer(Direction::RecvOnly);
    let response = t
        .http
        .post(format!("{}/whep/r1/main", t.base))
        .bearer_auth(&subscribe)
        .header("content-type", "application/sdp")
        .body(second_viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "full");

    // The layer a viewer asks for: on WHEP, or later over the room socket.
    let (_, offer_layer) = Peer::offer(Direction::RecvOnly);
    check(
        post_sdp(
            &t,
            "/whep/r1/main?layer=huge",
            &subscribe,
            "application/sdp",
            &offer_layer,
        )
        .await,
        400,
        "bad_request",
    );
    let mut viewer_chat = t.chatter("viewer", "r1").await;
    viewer_chat
        .send_json(serde_json::json!({"type": "layer", "layer": "low"}))
        .await;
    viewer_chat
        .send_json(serde_json::json!({"type": "ping", "nonce": 1}))
        .await;
    assert!(
        matches!(
            viewer_chat.next_control().await,
            protocol::v1::server_frame::Frame::Pong(_)
        ),
        "a valid layer for the viewer's WHEP session is accepted silently"
    );
    viewer_chat
        .send_json(serde_json::json!({"type": "layer", "layer": "tiny"}))
        .await;
    assert!(
        matches!(viewer_chat.next_control().await, protocol::v1::server_frame::Frame::Error(e) if e.code == "bad_request")
    );
    let mut stranger = t.chatter("stranger", "r1").await;
    stranger
        .send_json(serde_json::json!({"type": "layer", "layer": "low"}))
        .await;
    assert!(
        matches!(stranger.next_control().await, protocol::v1::server_frame::Frame::Error(e) if e.code == "not_found")
    );

    let patch = t
        .http
        .patch(format!("{}/whip/r1/main/abc", t.base))
        .bearer_auth(&publish)
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), 405);
    let preflight = t
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/whip/r1/main", t.base))
        .header("origin", "https://studio.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(
        preflight
            .headers()
            .contains_key("access-control-allow-origin"),
        "CORS for pages on other origins"
    );
    assert_eq!(
        t.delete("/whip/r1/main/0123456789abcdef", ADMIN_KEY).await,
        404
    );
    t.shutdown().await;
}

/// A publisher that goes silent (no DELETE, no DTLS close: a laptop lid
/// shut, a network gone) ends its stream at the ICE consent timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_that_vanishes_ends_its_stream_at_the_ice_timeout() {
    let t = TestEngine::start().await;
    t.create_room("r1").await;
    let mut chat = t.chatter("watcher", "r1").await;
    let token = t.token("streamer", "r1", &["publish"]).await;
    let (publisher, offer) = Peer::offer(Direction::SendOnly);
    let created = post_sdp(&t, "/whip/r1/main", &token, "application/sdp", &offer).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let silent = Arc::new(AtomicBool::new(false));
    let (publishing, thread) = publisher.run(&created.body, true, silent.clone());
    until(
        || publishing.connected.load(Ordering::Relaxed),
        "the publisher to connect",
    )
    .await;
    match chat.next_control().await {
        protocol::v1::server_frame::Frame::StreamStarted(started) => {
            assert_eq!(started.stream, "main")
        }
        other => panic!("expected stream_started, got {other:?}"),
    }

    // Stop driving the peer: no more packets of any kind.
    silent.store(true, Ordering::Relaxed);
    thread.join().unwrap();
    let vanished = Instant::now();
    let deadline = vanished + Duration::from_secs(40);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match chat.next_frame_within(left).await {
            Some(protocol::v1::server_frame::Frame::StreamEnded(ended)) => {
                assert_eq!(ended.stream, "main");
                break;
            }
            Some(protocol::v1::server_frame::Frame::Presence(_)) => continue,
            other => panic!("expected stream_ended within 40 s, got {other:?}"),
        }
    }
    eprintln!(
        "stream ended {:?} after the publisher went silent",
        vanished.elapsed()
    );
    let listed = t.get_json("/v1/rooms/r1/streams").await;
    assert_eq!(listed["streams"], serde_json::json!([]), "{listed}");
    assert_eq!(
        t.delete(created.location.as_deref().unwrap(), &token).await,
        404,
        "the session is gone with it"
    );
    t.shutdown().await;
}
