//! The router between real str0m peers on an in-memory network, in
//! simulated time: a publisher sends VP8 and Opus, subscribers receive
//! every frame; bad offers and noise are refused without harm.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sfu::{LayerChoice, RenditionLayer, Role, Router, RouterConfig, SfuError, SfuEvent, StreamKey};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{
    Direction, Frequency, KeyframeRequestKind, MediaKind, MediaTime, Mid, Rid, Simulcast,
    SimulcastLayer,
};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

const ROUTER: &str = "192.0.2.1:5000";

/// A browser-like peer (full ICE, not lite) with its own address.
struct Client {
    addr: SocketAddr,
    rtc: Rtc,
    pending: Option<SdpPendingOffer>,
    connected: bool,
    video: Vec<Vec<u8>>,
    /// The codec of each frame in `video`.
    video_codecs: Vec<Codec>,
    audio: usize,
    mids: Vec<(Mid, MediaKind)>,
    /// When keyframe requests (PLI/FIR) reached this peer.
    keyframe_requests: Vec<Instant>,
}

impl Client {
    fn new(port: u16, direction: Direction, now: Instant) -> (Self, String) {
        Self::offer(port, direction, None, now)
    }

    /// A publisher whose video goes out in simulcast layers.
    fn simulcast(port: u16, rids: &[&str], now: Instant) -> (Self, String) {
        let mut layers = Simulcast::new();
        for rid in rids {
            layers.add_send_layer(SimulcastLayer::new(rid));
        }
        Self::offer(port, Direction::SendOnly, Some(layers), now)
    }

    fn offer(
        port: u16,
        direction: Direction,
        simulcast: Option<Simulcast>,
        now: Instant,
    ) -> (Self, String) {
        sfu::install_crypto();
        let addr: SocketAddr = format!("192.0.2.{}:{port}", port % 200).parse().unwrap();
        let mut rtc = Rtc::new(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        let mut change = rtc.sdp_api();
        let video = change.add_media(MediaKind::Video, direction, None, None, simulcast);
        let audio = change.add_media(MediaKind::Audio, direction, None, None, None);
        let (offer, pending) = change.apply().unwrap();
        let client = Self {
            addr,
            rtc,
            pending: Some(pending),
            connected: false,
            video: Vec::new(),
            video_codecs: Vec::new(),
            audio: 0,
            mids: vec![(video, MediaKind::Video), (audio, MediaKind::Audio)],
            keyframe_requests: Vec::new(),
        };
        (client, offer.to_sdp_string())
    }

    /// Writes one video frame on one simulcast layer.
    fn send_layer(&mut self, rid: &str, frame: u64, data: &[u8], now: Instant) {
        if !self.connected {
            return;
        }
        let writer = self
            .rtc
            .writer(self.mid(MediaKind::Video))
            .unwrap()
            .rid(Rid::from(rid));
        let pt = writer.payload_params().next().unwrap().pt();
        writer
            .write(
                pt,
                now,
                MediaTime::new(frame * 3000, Frequency::NINETY_KHZ),
                data.to_vec(),
            )
            .unwrap();
    }

    fn accept(&mut self, answer: &str) {
        let answer = SdpAnswer::from_sdp_string(answer).unwrap();
        self.rtc
            .sdp_api()
            .accept_answer(self.pending.take().unwrap(), answer)
            .unwrap();
    }

    fn mid(&self, kind: MediaKind) -> Mid {
        self.mids.iter().find(|(_, k)| *k == kind).unwrap().0
    }

    /// Writes one frame of `kind` if connected.
    fn send(&mut self, kind: MediaKind, frame: u64, data: &[u8], now: Instant) {
        if !self.connected {
            return;
        }
        let mid = self.mid(kind);
        let writer = self.rtc.writer(mid).unwrap();
        let pt = writer.payload_params().next().unwrap().pt();
        let time = match kind {
            MediaKind::Video => MediaTime::new(frame * 3000, Frequency::NINETY_KHZ),
            MediaKind::Audio => MediaTime::new(frame * 960, Frequency::FORTY_EIGHT_KHZ),
        };
        writer.write(pt, now, time, data.to_vec()).unwrap();
    }
}

/// Shuttles datagrams between the clients and the router until all are idle.
fn step(router: &mut Router, clients: &mut [&mut Client], now: Instant) {
    let router_addr: SocketAddr = ROUTER.parse().unwrap();
    for _ in 0..50 {
        let mut moved = false;
        for client in clients.iter_mut() {
            let _ = client.rtc.handle_input(Input::Timeout(now));
            while let Ok(output) = client.rtc.poll_output() {
                match output {
                    Output::Timeout(_) => break,
                    Output::Transmit(t) => {
                        moved = true;
                        router.handle_datagram(now, client.addr, router_addr, &t.contents);
                    }
                    Output::Event(Event::Connected) => client.connected = true,
                    Output::Event(Event::KeyframeRequest(_)) => client.keyframe_requests.push(now),
                    Output::Event(Event::MediaData(data)) => {
                        moved = true;
                        match client
                            .mids
                            .iter()
                            .find(|(m, _)| *m == data.mid)
                            .map(|(_, k)| *k)
                        {
                            Some(MediaKind::Video) => {
                                client.video.push(data.data.to_vec());
                                client.video_codecs.push(data.params.spec().codec);
                            }
                            Some(MediaKind::Audio) => client.audio += 1,
                            None => {}
                        }
                    }
                    Output::Event(_) => {}
                }
            }
        }
        router.handle_timeout(now);
        while let Some(t) = router.poll_transmit() {
            moved = true;
            if let Some(client) = clients.iter_mut().find(|c| c.addr == t.destination) {
                let contents = t.contents.as_slice().try_into().unwrap();
                let input = Input::Receive(
                    now,
                    Receive {
                        proto: Protocol::Udp,
                        source: router_addr,
                        destination: client.addr,
                        contents,
                    },
                );
                let _ = client.rtc.handle_input(input);
            }
        }
        if !moved {
            break;
        }
    }
}

/// A VP8 keyframe payload header (320x240) followed by filler.
fn vp8_frame(n: u64) -> Vec<u8> {
    let mut frame = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00];
    frame.extend((0..600).map(|i| ((i as u64 + n) % 251) as u8));
    frame
}

fn router() -> Router {
    Router::new(RouterConfig::new(ROUTER.parse().unwrap()))
}

#[test]
fn a_publisher_reaches_every_subscriber_and_its_removal_ends_them() {
    let start = Instant::now();
    let mut now = start;
    let mut router = router();
    let stream = StreamKey::new("r1", "main");

    let (mut publisher, offer) = Client::new(1001, Direction::SendOnly, now);
    let (publisher_id, answer) = router.publish(stream.clone(), &offer, now).unwrap();
    publisher.accept(&answer);
    assert!(router.is_live(&stream));

    let (mut alice, offer) = Client::new(1002, Direction::RecvOnly, now);
    let (_, answer) = router
        .subscribe(stream.clone(), &offer, LayerChoice::Auto, now)
        .unwrap();
    alice.accept(&answer);
    let (mut bob, offer) = Client::new(1003, Direction::RecvOnly, now);
    let (bob_id, answer) = router
        .subscribe(stream.clone(), &offer, LayerChoice::Auto, now)
        .unwrap();
    bob.accept(&answer);
    assert_eq!(router.subscriber_count(&stream), 2);

    let mut sent_video = Vec::new();
    for tick in 0..3000u64 {
        now = start + Duration::from_millis(tick);
        if tick % 33 == 0 && tick > 0 {
            let frame = vp8_frame(tick);
            publisher.send(MediaKind::Video, tick / 33, &frame, now);
            if publisher.connected {
                sent_video.push(frame);
            }
        }
        if tick % 20 == 0 {
            publisher.send(MediaKind::Audio, tick / 20, &[0xfc; 80], now);
        }
        step(
            &mut router,
            &mut [&mut publisher, &mut alice, &mut bob],
            now,
        );
    }
    assert!(
        publisher.connected && alice.connected && bob.connected,
        "ICE and DTLS complete through the router"
    );
    assert!(
        sent_video.len() > 60,
        "the publisher sent {} frames",
        sent_video.len()
    );
    for (name, viewer) in [("alice", &alice), ("bob", &bob)] {
        assert!(
            viewer.video.len() + 5 >= sent_video.len(),
            "{name} received {} of {} video frames",
            viewer.video.len(),
            sent_video.len()
        );
        let last = viewer.video.last().unwrap();
        assert!(
            sent_video.contains(last),
            "{name}'s frames are the publisher's bytes"
        );
        assert!(
            viewer.audio > 100,
            "{name} received {} audio frames",
            viewer.audio
        );
    }
    let connected: Vec<_> = std::iter::from_fn(|| router.poll_event())
        .filter(|e| matches!(e, SfuEvent::Connected { .. }))
        .collect();
    assert_eq!(connected.len(), 3);

    router.remove(publisher_id, now).unwrap();
    let closed: Vec<_> = std::iter::from_fn(|| router.poll_event()).collect();
    assert!(closed.contains(&SfuEvent::Closed {
        peer: publisher_id,
        role: Role::Publisher,
        stream: stream.clone()
    }));
    assert!(closed.contains(&SfuEvent::Closed {
        peer: bob_id,
        role: Role::Subscriber,
        stream: stream.clone()
    }));
    assert!(!router.is_live(&stream));
    assert_eq!(router.subscriber_count(&stream), 0);
    assert_eq!(router.remove(publisher_id, now), Err(SfuError::UnknownPeer));
    // The router says goodbye (RTCP BYE, DTLS close_notify): the viewers'
    // connections end now rather than at an ICE timeout.
    let (alice_alive, bob_alive) = (alice.rtc.is_alive(), bob.rtc.is_alive());
    assert!(alice_alive && bob_alive, "alive until the goodbye arrives");
    for tick in 1..=20 {
        step(
            &mut router,
            &mut [&mut publisher, &mut alice, &mut bob],
            now + Duration::from_millis(tick),
        );
    }
    assert!(!alice.rtc.is_alive(), "alice saw the session close");
    assert!(!bob.rtc.is_alive(), "bob saw the session close");
    assert_eq!(router.poll_timeout(), None, "nothing left to drain");
}

#[test]
fn each_subscriber_gets_its_simulcast_layer_and_switches_on_request() {
    let start = Instant::now();
    let mut now = start;
    let mut router = router();
    let stream = StreamKey::new("r1", "main");
    let (mut publisher, offer) = Client::simulcast(1001, &["l", "m", "h"], now);
    let (_, answer) = router.publish(stream.clone(), &offer, now).unwrap();
    publisher.accept(&answer);
    let (mut low, offer) = Client::new(1002, Direction::RecvOnly, now);
    let (low_id, answer) = router
        .subscribe(stream.clone(), &offer, LayerChoice::Low, now)
        .unwrap();
    low.accept(&answer);
    let (mut auto, offer) = Client::new(1003, Direction::RecvOnly, now);
    let (auto_id, answer) = router
        .subscribe(stream.clone(), &offer, LayerChoice::Auto, now)
        .unwrap();
    auto.accept(&answer);

    // Each layer's frames carry its name after the VP8 header; higher
    // layers are bigger, as real encodings are.
    let layered = |rid: &str, n: u64| {
        let mut frame = vp8_frame(n);
        frame[10] = rid.as_bytes()[0];
        let size = match rid {
            "l" => 200,
            "m" => 600,
            _ => 1000,
        };
        frame.resize(size, 7);
        frame
    };
    let mut run = |router: &mut Router,
                   publisher: &mut Client,
                   low: &mut Client,
                   auto: &mut Client,
                   from: u64,
                   to: u64| {
        for tick in from..to {
            now = start + Duration::from_millis(tick);
            if tick % 33 == 0 && tick > 0 {
                for rid in ["l", "m", "h"] {
                    publisher.send_layer(rid, tick / 33, &layered(rid, tick), now);
                }
            }
            step(router, &mut [&mut *publisher, &mut *low, &mut *auto], now);
        }
        now
    };
    let now = run(&mut router, &mut publisher, &mut low, &mut auto, 0, 3000);
    let markers = |client: &Client| client.video.iter().map(|f| f[10]).collect::<Vec<u8>>();
    assert!(
        low.video.len() > 30 && auto.video.len() > 30,
        "{} {}",
        low.video.len(),
        auto.video.len()
    );
    assert!(
        markers(&low).iter().all(|m| *m == b'l'),
        "low gets only the low layer"
    );
    // Before the publisher's three layers are all known, auto may start on
    // the first one seen; it moves up on the next keyframe and stays.
    let auto_markers = markers(&auto);
    let first_high = auto_markers
        .iter()
        .position(|m| *m == b'h')
        .expect("auto reaches the high layer");
    assert!(
        first_high <= 2,
        "auto upgrades at once: {}",
        String::from_utf8_lossy(&auto_markers)
    );
    assert!(
        auto_markers[first_high..].iter().all(|m| *m == b'h'),
        "{}",
        String::from_utf8_lossy(&auto_markers)
    );
    assert_eq!(router.current_layer(low_id), Some(Rid::from("l")));
    assert_eq!(router.current_layer(auto_id), Some(Rid::from("h")));

    router.set_layer(low_id, LayerChoice::High, now).unwrap();
    let received = low.video.len();
    run(&mut router, &mut publisher, &mut low, &mut auto, 3000, 4000);
    let after: Vec<u8> = low.video[received..].iter().map(|f| f[10]).collect();
    assert!(after.len() > 10, "frames keep coming across the switch");
    assert!(
        after.iter().skip(1).all(|m| *m == b'h'),
        "switched to the high layer: {after:?}"
    );
    assert_eq!(router.current_layer(low_id), Some(Rid::from("h")));
}

#[test]
fn one_publisher_per_stream_and_no_viewers_before_it() {
    let now = Instant::now();
    let mut router = router();
    let stream = StreamKey::new("r1", "main");
    let (_, offer) = Client::new(1002, Direction::RecvOnly, now);
    assert_eq!(
        router
            .subscribe(stream.clone(), &offer, LayerChoice::Auto, now)
            .unwrap_err(),
        SfuError::StreamNotLive
    );
    let (_, offer) = Client::new(1001, Direction::SendOnly, now);
    router.publish(stream.clone(), &offer, now).unwrap();
    let (_, offer) = Client::new(1003, Direction::SendOnly, now);
    assert_eq!(
        router.publish(stream, &offer, now).unwrap_err(),
        SfuError::StreamLive
    );
}

#[test]
fn limits_refuse_peers_beyond_them() {
    let now = Instant::now();
    let mut router = Router::new(RouterConfig {
        max_peers: 3,
        max_subscribers_per_stream: 1,
        ..RouterConfig::new(ROUTER.parse().unwrap())
    });
    let main = StreamKey::new("r1", "main");
    let (_, offer) = Client::new(1001, Direction::SendOnly, now);
    router.publish(main.clone(), &offer, now).unwrap();
    let (_, offer) = Client::new(1002, Direction::RecvOnly, now);
    router
        .subscribe(main.clone(), &offer, LayerChoice::Auto, now)
        .unwrap();
    let (_, offer) = Client::new(1003, Direction::RecvOnly, now);
    assert!(matches!(
        router.subscribe(main, &offer, LayerChoice::Auto, now),
        Err(SfuError::Full(_))
    ));
    let (_, offer) = Client::new(1004, Direction::SendOnly, now);
    router
        .publish(StreamKey::new("r1", "second"), &offer, now)
        .unwrap();
    let (_, offer) = Client::new(1005, Direction::SendOnly, now);
    assert!(matches!(
        router.publish(StreamKey::new("r1", "third"), &offer, now),
        Err(SfuError::Full(_))
    ));
}

#[test]
fn bad_offers_are_refused_with_their_reason() {
    let now = Instant::now();
    let mut router = router();
    let stream = StreamKey::new("r1", "main");
    assert!(matches!(
        router.publish(stream.clone(), "this is not sdp", now),
        Err(SfuError::BadSdp(_))
    ));
    assert!(matches!(
        router.publish(stream.clone(), "", now),
        Err(SfuError::BadSdp(_))
    ));

    // Only a data channel: no audio or video.
    sfu::install_crypto();
    let mut rtc = Rtc::new(now);
    rtc.add_local_candidate(Candidate::host("192.0.2.9:9".parse().unwrap(), "udp").unwrap());
    let mut change = rtc.sdp_api();
    change.add_channel("chat".into());
    let (offer, _) = change.apply().unwrap();
    assert_eq!(
        router
            .publish(stream.clone(), &offer.to_sdp_string(), now)
            .unwrap_err(),
        SfuError::NoMedia
    );

    // Codecs the engine does not forward, only.
    let (_, offer) = Client::new(1004, Direction::SendOnly, now);
    let offer = offer
        .replace("VP8/90000", "VP7/90000")
        .replace("H264/90000", "H263/90000")
        .replace("opus/48000", "SILK/48000");
    assert_eq!(
        router.publish(stream.clone(), &offer, now).unwrap_err(),
        SfuError::NoCodec
    );
    assert!(
        !router.is_live(&stream),
        "a refused offer leaves nothing behind"
    );
}

#[test]
fn noise_on_the_media_port_is_ignored_and_counted() {
    let now = Instant::now();
    let mut router = router();
    let (mut publisher, offer) = Client::new(1001, Direction::SendOnly, now);
    let (_, answer) = router
        .publish(StreamKey::new("r", "s"), &offer, now)
        .unwrap();
    publisher.accept(&answer);
    let from: SocketAddr = "198.51.100.7:4444".parse().unwrap();
    for noise in [
        &b""[..],
        b"\x00",
        b"GET / HTTP/1.1\r\n\r\n",
        &[0x80u8; 1200][..],
        &[0x16u8, 0xfe, 0xfd, 0, 0][..],
    ] {
        assert!(!router.handle_datagram(now, from, ROUTER.parse().unwrap(), noise));
    }
    assert_eq!(router.ignored_datagrams, 5);
}

/// A VP8 interframe: the frame tag's lowest bit set, no start code.
fn vp8_delta_frame(n: u64) -> Vec<u8> {
    let mut frame = vec![0x11, 0x02, 0x00];
    frame.extend((0..300).map(|i| ((i as u64 + n) % 251) as u8));
    frame
}

#[test]
fn a_viewer_of_a_single_layer_stream_starts_on_a_keyframe() {
    let start = Instant::now();
    let mut now = start;
    let mut router = router();
    let stream = StreamKey::new("r1", "main");
    let (mut publisher, offer) = Client::new(1011, Direction::SendOnly, now);
    let (_, answer) = router.publish(stream.clone(), &offer, now).unwrap();
    publisher.accept(&answer);
    let (mut viewer, offer) = Client::new(1012, Direction::RecvOnly, now);
    let (_, answer) = router
        .subscribe(stream.clone(), &offer, LayerChoice::Auto, now)
        .unwrap();
    viewer.accept(&answer);

    // Every tenth frame is a keyframe, the first at frame 45: long after the
    // viewer connected, so delta frames reach the router first.
    let mut keyframes_sent = 0;
    for tick in 0..3000u64 {
        now = start + Duration::from_millis(tick);
        if tick % 33 == 0 && tick > 0 {
            let n = tick / 33;
            let keyframe = n >= 45 && n % 10 == 5;
            let frame = if keyframe {
                vp8_frame(n)
            } else {
                vp8_delta_frame(n)
            };
            publisher.send(MediaKind::Video, n, &frame, now);
            keyframes_sent += usize::from(keyframe && publisher.connected);
        }
        step(&mut router, &mut [&mut publisher, &mut viewer], now);
    }
    assert!(viewer.connected && keyframes_sent >= 3);
    let first = viewer
        .video
        .first()
        .expect("video after the first keyframe");
    assert_eq!(first[0] & 1, 0, "the first frame forwarded is a keyframe");
    let deltas = viewer.video.iter().filter(|f| f[0] & 1 == 1).count();
    assert!(deltas > 20, "delta frames follow once started ({deltas})");
}

/// Two seconds of a single-layer stream whose viewers join at 300 and 400
/// ms (inside one keyframe-request throttle interval, 250 ms); every 33 ms the
/// publisher sends `frame(publisher, n, now)`. Returns the publisher and
/// the viewers as they ended.
fn two_viewers_join(
    port: u16,
    mut frame: impl FnMut(&Client, u64, Instant) -> Vec<u8>,
) -> (Client, Vec<Client>) {
    let start = Instant::now();
    let mut router = router();
    let stream = StreamKey::new("r1", "main");
    let (mut publisher, offer) = Client::new(port, Direction::SendOnly, start);
    let (_, answer) = router.publish(stream.clone(), &offer, start).unwrap();
    publisher.accept(&answer);
    let mut viewers: Vec<Client> = Vec::new();
    for tick in 0..2000u64 {
        let now = start + Duration::from_millis(tick);
        if tick == 300 || tick == 400 {
            let (mut viewer, offer) = Client::new(port + tick as u16, Direction::RecvOnly, now);
            let (_, answer) = router
                .subscribe(stream.clone(), &offer, LayerChoice::Auto, now)
                .unwrap();
            viewer.accept(&answer);
            viewers.push(viewer);
        }
        if tick % 33 == 0 && tick > 0 {
            let data = frame(&publisher, tick / 33, now);
            publisher.send(MediaKind::Video, tick / 33, &data, now);
        }
        let mut clients: Vec<&mut Client> = vec![&mut publisher];
        clients.extend(viewers.iter_mut());
        step(&mut router, &mut clients, now);
    }
    (publisher, viewers)
}

#[test]
fn a_throttled_keyframe_request_is_held_and_sent_not_dropped() {
    // Only delta frames: nothing satisfies a request but the request.
    let (publisher, _) = two_viewers_join(1021, |_, n, _| vp8_delta_frame(n));
    let requests = &publisher.keyframe_requests;
    assert!(
        requests.len() >= 2,
        "each joining viewer's request reaches the publisher: {requests:?}"
    );
    let gap = requests[1].duration_since(requests[0]);
    let throttle = sfu::KEYFRAME_REQUEST_INTERVAL;
    assert!(
        gap >= throttle - Duration::from_millis(50) && gap < throttle + Duration::from_millis(100),
        "the second request waits out the throttle, and no longer ({gap:?})"
    );
}

#[test]
fn a_keyframe_in_time_answers_a_held_request() {
    // A slow encoder: it answers a request 200 ms later, by which time the
    // second viewer has connected and asked too.
    let mut answered = 0;
    let (publisher, viewers) = two_viewers_join(1031, |publisher, n, now| {
        let due = publisher.keyframe_requests.len() > answered
            && publisher
                .keyframe_requests
                .last()
                .is_some_and(|at| now.duration_since(*at) >= Duration::from_millis(200));
        if due {
            answered = publisher.keyframe_requests.len();
            vp8_frame(n)
        } else {
            vp8_delta_frame(n)
        }
    });
    // The second viewer connected before the first request's keyframe
    // arrived, so that keyframe served both: its held request is dropped.
    assert_eq!(
        publisher.keyframe_requests.len(),
        1,
        "{:?}",
        publisher.keyframe_requests
    );
    for viewer in &viewers {
        assert!(viewer.connected);
        let first = viewer.video.first().expect("video reached the viewer");
        assert_eq!(first[0] & 1, 0, "it starts on the keyframe");
    }
}

/// An H.264 access unit standing in for a transcoded frame: parameter sets
/// and an IDR slice on keyframes, a non-IDR slice otherwise; `n` marks it.
fn h264_frame(n: u64, keyframe: bool) -> Vec<u8> {
    let mut unit = Vec::new();
    if keyframe {
        unit.extend([0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80]);
        unit.extend([0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80]);
    }
    unit.extend([0, 0, 0, 1, if keyframe { 0x65 } else { 0x41 }, 0x88]);
    unit.extend((0..400).map(|i| ((i + n) % 200 + 1) as u8));
    unit
}

#[test]
fn a_tapped_stream_serves_renditions_to_viewers_who_ask_for_less() {
    let start = Instant::now();
    let mut now = start;
    let mut router = router();
    let stream = StreamKey::new("r1", "main");
    let (mut publisher, offer) = Client::new(1041, Direction::SendOnly, now);
    let (publisher_peer, answer) = router.publish(stream.clone(), &offer, now).unwrap();
    publisher.accept(&answer);
    let (mut low, offer) = Client::new(1042, Direction::RecvOnly, now);
    let (low_peer, answer) = router
        .subscribe(stream.clone(), &offer, LayerChoice::Low, now)
        .unwrap();
    low.accept(&answer);
    let (mut high, offer) = Client::new(1043, Direction::RecvOnly, now);
    let (high_peer, answer) = router
        .subscribe(stream.clone(), &offer, LayerChoice::High, now)
        .unwrap();
    high.accept(&answer);
    router.set_tapped(&stream, true, now).unwrap();
    assert_eq!(
        router.set_tapped(&StreamKey::new("r1", "nobody"), true, now),
        Err(SfuError::StreamNotLive)
    );

    let mut ingested = Vec::new();
    let mut keyframes_wanted = 0;
    let (mut low_switched_at, mut high_switched_at) = (0, 0);
    let (mut wanted_before_pli, mut publisher_requests_before_pli) = (0, 0);
    for tick in 0..3000u64 {
        now = start + Duration::from_millis(tick);
        if tick % 33 == 0 && tick > 0 {
            let n = tick / 33;
            let frame = if n % 10 == 1 {
                vp8_frame(n)
            } else {
                vp8_delta_frame(n)
            };
            publisher.send(MediaKind::Video, n, &frame, now);
            publisher.send(MediaKind::Audio, n, &[0xfc, 0xff, 0xfe], now);
        }
        if tick == 1000 {
            // The transcoder opened a 120p rendition of the 240p source.
            let rendition = RenditionLayer {
                name: "120p".into(),
                width: 160,
                height: 120,
                bitrate_bps: 150_000,
            };
            router.set_renditions(&stream, vec![rendition], 240);
        }
        if tick == 1700 {
            // The low viewer lost a picture: its PLI goes to the
            // transcoder, not to the publisher.
            wanted_before_pli = keyframes_wanted;
            publisher_requests_before_pli = publisher.keyframe_requests.len();
            let mid = low.mid(MediaKind::Video);
            low.rtc
                .writer(mid)
                .unwrap()
                .request_keyframe(None, KeyframeRequestKind::Pli)
                .unwrap();
        }
        if tick == 1800 {
            assert!(
                keyframes_wanted > wanted_before_pli,
                "the PLI reached the transcoder"
            );
            assert_eq!(
                publisher.keyframe_requests.len(),
                publisher_requests_before_pli,
                "and not the publisher"
            );
        }
        if tick == 2000 {
            // The two viewers trade places (the WS `layer` frame).
            router.set_layer(high_peer, LayerChoice::Low, now).unwrap();
            router.set_layer(low_peer, LayerChoice::High, now).unwrap();
            low_switched_at = low.video.len();
            high_switched_at = high.video.len();
        }
        if tick > 1000 && tick % 33 == 5 {
            // Its frames, 5 ms behind their source, keyframes when asked.
            let n = tick / 33;
            let keyframe = keyframes_wanted > 0 && n % 5 == 0;
            router.push_rendition(
                &stream,
                0,
                &h264_frame(n, keyframe),
                keyframe,
                n * 3000,
                now,
            );
        }
        step(&mut router, &mut [&mut publisher, &mut low, &mut high], now);
        while let Some(event) = router.poll_event() {
            match event {
                SfuEvent::Ingest(frame) => ingested.push(frame),
                SfuEvent::RenditionKeyframeWanted(key) if key == stream => keyframes_wanted += 1,
                _ => {}
            }
        }
    }

    let video: Vec<_> = ingested
        .iter()
        .filter(|f| f.kind == MediaKind::Video)
        .collect();
    assert!(
        video.len() > 50,
        "every published frame is copied: {}",
        video.len()
    );
    assert!(
        video
            .iter()
            .all(|f| f.codec == Codec::Vp8 && f.stream == stream)
    );
    assert_eq!(
        video.iter().filter(|f| f.keyframe).count(),
        video.iter().filter(|f| f.data[0] & 1 == 0).count(),
        "keyframes are marked"
    );
    assert!(
        ingested
            .iter()
            .any(|f| f.kind == MediaKind::Audio && f.codec == Codec::Opus)
    );
    assert!(
        keyframes_wanted >= 1,
        "the switch asked the transcoder for a keyframe"
    );

    let first_h264 = low
        .video_codecs
        .iter()
        .position(|c| *c == Codec::H264)
        .expect("the low viewer gets the rendition");
    assert!(
        first_h264 > 0,
        "it watched the source before the rendition existed"
    );
    assert!(
        low.video_codecs[first_h264..low_switched_at]
            .iter()
            .all(|c| *c == Codec::H264)
    );
    assert!(
        low.video[first_h264].windows(2).any(|w| w == [0x65, 0x88]),
        "the switch lands on the rendition's keyframe"
    );
    assert!(
        low_switched_at - first_h264 > 10,
        "rendition frames keep coming"
    );
    assert!(
        high.video_codecs[..high_switched_at]
            .iter()
            .all(|c| *c == Codec::Vp8),
        "high stays on the source"
    );
    // After trading places: each ends on the other's feed, starting on a
    // keyframe of it and never going back.
    let back = &low.video_codecs[low_switched_at..];
    let first_vp8 = back
        .iter()
        .position(|c| *c == Codec::Vp8)
        .expect("low back on the source");
    assert!(back[first_vp8..].iter().all(|c| *c == Codec::Vp8));
    assert_eq!(
        low.video[low_switched_at + first_vp8][0] & 1,
        0,
        "on a VP8 keyframe"
    );
    let down = &high.video_codecs[high_switched_at..];
    let first = down
        .iter()
        .position(|c| *c == Codec::H264)
        .expect("high moved to the rendition");
    assert!(down[first..].iter().all(|c| *c == Codec::H264));
    assert!(high.video.len() > 50);

    // The publisher leaves: the tap and the renditions go with it.
    router.remove(publisher_peer, now).unwrap();
    let closed = std::iter::from_fn(|| router.poll_event())
        .filter(|e| matches!(e, SfuEvent::Closed { .. }))
        .count();
    assert_eq!(closed, 3, "the publisher and both viewers");
    assert_eq!(
        router.set_tapped(&stream, true, now),
        Err(SfuError::StreamNotLive)
    );
}

#[test]
fn a_program_reaches_its_viewers_from_a_keyframe_and_ends_with_them() {
    let start = Instant::now();
    let mut now = start;
    let mut router = router();
    let stream = StreamKey::new("r1", "program");
    let source = router.publish_local(stream.clone()).unwrap();
    assert!(matches!(
        router.poll_event(),
        Some(SfuEvent::Connected {
            role: Role::Publisher,
            ..
        })
    ));
    let (_, offer) = Client::new(1101, Direction::SendOnly, now);
    assert_eq!(
        router.publish(stream.clone(), &offer, now).unwrap_err(),
        SfuError::StreamLive,
        "a publisher cannot take the program's stream"
    );
    assert_eq!(
        router.publish_local(stream.clone()).unwrap_err(),
        SfuError::StreamLive
    );
    assert_eq!(router.streams_in("r1")[0].stream, "program");

    // A viewer that cannot take H.264 is told so before anything starts.
    let mut vp8_only = Rtc::builder()
        .clear_codecs()
        .enable_vp8(true)
        .enable_opus(true, false)
        .build(now);
    let mut change = vp8_only.sdp_api();
    change.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, _) = change.apply().unwrap();
    assert_eq!(
        router
            .subscribe(
                stream.clone(),
                &offer.to_sdp_string(),
                LayerChoice::Auto,
                now
            )
            .unwrap_err(),
        SfuError::NeedsH264
    );
    assert_eq!(router.subscriber_count(&stream), 0);

    let (mut viewer, offer) = Client::new(1102, Direction::RecvOnly, now);
    let (_, answer) = router
        .subscribe(stream.clone(), &offer, LayerChoice::Auto, now)
        .unwrap();
    viewer.accept(&answer);
    let frame = |kind, n: u64, keyframe, source| sfu::LocalFrame {
        stream: stream.clone(),
        source,
        kind,
        data: match kind {
            MediaKind::Video => h264_frame(n, keyframe).into(),
            MediaKind::Audio => vec![0xfc, 0xff, 0xfe].into(),
        },
        keyframe,
        time: match kind {
            MediaKind::Video => n * 3600,
            MediaKind::Audio => n * 960,
        },
    };
    for tick in 0..200u64 {
        now = start + Duration::from_millis(tick * 10);
        if tick % 4 == 0 {
            let n = tick / 4;
            let keyframe = n % 10 == 5;
            router.push_local(frame(MediaKind::Video, n, keyframe, source), now);
            // A replaced program's late frames go nowhere.
            router.push_local(frame(MediaKind::Video, n, true, sfu::PeerId(999)), now);
        }
        if tick % 2 == 0 {
            router.push_local(frame(MediaKind::Audio, tick / 2, false, source), now);
        }
        step(&mut router, &mut [&mut viewer], now);
    }
    assert!(viewer.connected);
    let first = viewer
        .video
        .first()
        .expect("program video reached the viewer");
    assert!(
        first.starts_with(&[0, 0, 0, 1, 0x67]),
        "it starts on a keyframe with its parameter sets"
    );
    assert!(viewer.video_codecs.iter().all(|c| *c == Codec::H264));
    assert!(
        (35..=45).contains(&viewer.video.len()),
        "every frame from the first keyframe on, none of the stale program's: {}",
        viewer.video.len()
    );
    assert!(viewer.audio >= 80, "audio: {}", viewer.audio);

    while router.poll_event().is_some() {}
    router.end_local(&stream, sfu::PeerId(999), now);
    assert!(
        router.is_live(&stream),
        "only the program that runs ends it"
    );
    router.end_local(&stream, source, now);
    let mut closed = Vec::new();
    while let Some(event) = router.poll_event() {
        if let SfuEvent::Closed { role, .. } = event {
            closed.push(role);
        }
    }
    assert_eq!(closed, [Role::Subscriber, Role::Publisher]);
    assert!(!router.is_live(&stream));
}
