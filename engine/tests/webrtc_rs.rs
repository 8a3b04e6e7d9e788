//! WHIP and WHEP against a real engine with webrtc-rs peers, an
//! implementation independent of the engine's own str0m: one publisher
//! sends VP8 and Opus, two subscribers receive both, on 127.0.0.1 only.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::TestEngine;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::Registry;
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp::codec::vp8::Vp8Packet;
use rtc::rtp::packetizer::Depacketizer;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription,
    SettingEngineBuilder, register_default_interceptors,
};

const VIDEO_SSRC: u32 = 0x5eed_0001;
const AUDIO_SSRC: u32 = 0x5eed_0002;

/// The frame the publisher sends 30 times a second: a VP8 keyframe header
/// (frame tag, start code, 320x240) and filler.
fn vp8_frame() -> Vec<u8> {
    let mut frame = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00];
    frame.extend((0..800).map(|i| (i % 251) as u8));
    frame
}

fn opus_frame() -> Vec<u8> {
    vec![0xfc; 80]
}

/// What a peer's callbacks and track readers report.
#[derive(Default)]
struct Counters {
    gathered: AtomicBool,
    connected: AtomicBool,
    video_packets: AtomicUsize,
    /// Packets with the marker bit: ends of frames.
    video_frames: AtomicUsize,
    /// Frames reassembled from contiguous packets that equal what was sent.
    intact_frames: AtomicUsize,
    /// Frames reassembled from contiguous packets that differ from it.
    broken_frames: AtomicUsize,
    audio_packets: AtomicUsize,
    broken_audio: AtomicUsize,
    /// The MIME type of each track the peer received.
    mime_types: std::sync::Mutex<Vec<String>>,
}

impl Counters {
    fn get(counter: &AtomicUsize) -> usize {
        counter.load(Ordering::Relaxed)
    }

    fn summary(&self) -> String {
        format!(
            "video packets {} frames {} intact {} broken {}, audio packets {} broken {}, tracks {:?}",
            Self::get(&self.video_packets),
            Self::get(&self.video_frames),
            Self::get(&self.intact_frames),
            Self::get(&self.broken_frames),
            Self::get(&self.audio_packets),
            Self::get(&self.broken_audio),
            self.mime_types.lock().unwrap(),
        )
    }
}

struct Handler(Arc<Counters>);

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.0.gathered.store(true, Ordering::Relaxed);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if state == RTCPeerConnectionState::Connected {
            self.0.connected.store(true, Ordering::Relaxed);
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        // Callbacks run on the connection's driver: read the track elsewhere.
        tokio::spawn(read_track(track, self.0.clone()));
    }
}

/// Counts a remote track's packets and reassembles its VP8 frames.
async fn read_track(track: Arc<dyn TrackRemote>, counters: Arc<Counters>) {
    let kind = track.kind().await;
    let mut mime = None;
    let expected = vp8_frame();
    let mut frame: Option<Vec<u8>> = None;
    let mut last_sequence: Option<u16> = None;
    while let Some(event) = track.poll().await {
        let TrackRemoteEvent::OnRtpPacket(packet) = event else {
            continue;
        };
        if mime.is_none() {
            let codec = track.codec(packet.header.ssrc).await;
            let name = codec.map_or_else(|| "?".to_owned(), |c| c.mime_type.to_lowercase());
            counters.mime_types.lock().unwrap().push(name.clone());
            mime = Some(name);
        }
        if kind != RtpCodecKind::Video {
            counters.audio_packets.fetch_add(1, Ordering::Relaxed);
            if packet.payload[..] != opus_frame()[..] {
                counters.broken_audio.fetch_add(1, Ordering::Relaxed);
            }
            continue;
        }
        counters.video_packets.fetch_add(1, Ordering::Relaxed);
        let sequence = packet.header.sequence_number;
        if last_sequence.is_some_and(|last| last.wrapping_add(1) != sequence) {
            frame = None; // a gap: skip this frame rather than misjudge it
        }
        last_sequence = Some(sequence);
        let mut descriptor = Vp8Packet::default();
        match descriptor.depacketize(&packet.payload) {
            Ok(data) => {
                if descriptor.s == 1 && descriptor.pid == 0 {
                    frame = Some(Vec::new());
                }
                if let Some(frame) = frame.as_mut() {
                    frame.extend_from_slice(&data);
                }
            }
            Err(_) => {
                frame = None;
                counters.broken_frames.fetch_add(1, Ordering::Relaxed);
            }
        }
        if packet.header.marker {
            counters.video_frames.fetch_add(1, Ordering::Relaxed);
            if let Some(frame) = frame.take() {
                let verdict = if frame == expected {
                    &counters.intact_frames
                } else {
                    &counters.broken_frames
                };
                verdict.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn codec(
    mime_type: &str,
    clock_rate: u32,
    channels: u16,
    payload_type: u8,
) -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime_type.to_owned(),
            clock_rate,
            channels,
            sdp_fmtp_line: if channels == 2 {
                "minptime=10;useinbandfec=1".to_owned()
            } else {
                String::new()
            },
            rtcp_feedback: vec![],
        },
        payload_type,
    }
}

fn vp8() -> RTCRtpCodecParameters {
    codec("video/VP8", 90000, 0, 96)
}

fn opus() -> RTCRtpCodecParameters {
    codec("audio/opus", 48000, 2, 111)
}

/// A webrtc-rs peer bound to 127.0.0.1, with no ICE servers and no mDNS
/// (a loopback-only namespace has no multicast interface).
async fn peer(mut media_engine: MediaEngine, counters: Arc<Counters>) -> impl PeerConnection {
    let registry = register_default_interceptors(Registry::new(), &mut media_engine).unwrap();
    PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media_engine)
        .with_setting_engine(
            SettingEngineBuilder::new()
                .with_multicast_dns_mode(MulticastDnsMode::Disabled)
                .build(),
        )
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(Handler(counters)))
        .with_udp_addrs(vec!["127.0.0.1:0"])
        .build()
        .await
        .expect("a webrtc-rs peer connection")
}

struct Created {
    status: u16,
    location: Option<String>,
    body: String,
}

async fn post_sdp(t: &TestEngine, path: &str, token: &str, sdp: &str) -> Created {
    let response = t
        .http
        .post(format!("{}{path}", t.base))
        .bearer_auth(token)
        .header("content-type", "application/sdp")
        .body(sdp.to_owned())
        .send()
        .await
        .unwrap();
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Created {
        status: response.status().as_u16(),
        location,
        body: response.text().await.unwrap(),
    }
}

/// Non-trickle signalling: the whole offer, candidates included, in one
/// POST; the answer applied. Returns the session's `Location`.
async fn negotiate(
    t: &TestEngine,
    pc: &impl PeerConnection,
    counters: &Counters,
    path: &str,
    token: &str,
) -> String {
    let offer = pc.create_offer(None).await.unwrap();
    pc.set_local_description(offer).await.unwrap();
    until(
        || counters.gathered.load(Ordering::Relaxed),
        "ICE gathering",
    )
    .await;
    let offer = pc.local_description().await.expect("a local offer").sdp;
    assert!(
        offer.contains("127.0.0.1"),
        "a host candidate on 127.0.0.1:\n{offer}"
    );
    let created = post_sdp(t, path, token, &offer).await;
    assert_eq!(
        created.status, 201,
        "{path} refused the webrtc-rs offer: {}\n{offer}",
        created.body
    );
    let answer = RTCSessionDescription::answer(created.body).unwrap();
    pc.set_remote_description(answer)
        .await
        .expect("webrtc-rs accepts the engine's answer");
    created.location.expect("Location")
}

async fn until(condition: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn local_track(kind: RtpCodecKind, ssrc: u32, codec: RTCRtpCodec) -> Arc<TrackLocalStaticSample> {
    let track = MediaStreamTrack::new(
        "webrtc-rs".to_owned(),
        format!("webrtc-rs-{kind}"),
        format!("webrtc-rs {kind}"),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    );
    Arc::new(TrackLocalStaticSample::new(Instant::now(), track).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_rs_publisher_reaches_webrtc_rs_subscribers_over_whip_and_whep() {
    let t = TestEngine::start().await;
    t.create_room("r1").await;
    let publish_token = t.token("streamer", "r1", &["publish"]).await;

    // The publisher offers VP8 and Opus only, so the engine cannot pick a
    // codec the tracks do not carry.
    let mut media_engine = MediaEngine::default();
    media_engine
        .register_codec(vp8(), RtpCodecKind::Video)
        .unwrap();
    media_engine
        .register_codec(opus(), RtpCodecKind::Audio)
        .unwrap();
    let publishing = Arc::new(Counters::default());
    let publisher = peer(media_engine, publishing.clone()).await;
    let video = local_track(RtpCodecKind::Video, VIDEO_SSRC, vp8().rtp_codec);
    let audio = local_track(RtpCodecKind::Audio, AUDIO_SSRC, opus().rtp_codec);
    let video_sender = publisher
        .add_track(video.clone() as Arc<dyn TrackLocal>)
        .await
        .unwrap();
    let audio_sender = publisher
        .add_track(audio.clone() as Arc<dyn TrackLocal>)
        .await
        .unwrap();
    let location = negotiate(&t, &publisher, &publishing, "/whip/r1/main", &publish_token).await;
    assert!(location.starts_with("/whip/r1/main/"), "{location}");
    until(
        || publishing.connected.load(Ordering::Relaxed),
        "the publisher to connect",
    )
    .await;
    let mut payload_types = Vec::new();
    for sender in [&video_sender, &audio_sender] {
        let parameters = sender.get_parameters().await.unwrap();
        let codec = parameters.rtp_parameters.codecs.first().expect("a codec");
        payload_types.push(codec.payload_type);
    }
    let (video_pt, audio_pt) = (payload_types[0], payload_types[1]);

    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut video_tick = tokio::time::interval(Duration::from_millis(33));
            let mut audio_tick = tokio::time::interval(Duration::from_millis(20));
            let mut errors = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let (track, ssrc, pt, data, duration) = tokio::select! {
                    _ = video_tick.tick() => (&video, VIDEO_SSRC, video_pt, vp8_frame(), 33),
                    _ = audio_tick.tick() => (&audio, AUDIO_SSRC, audio_pt, opus_frame(), 20),
                };
                let sample = Sample {
                    data: data.into(),
                    duration: Duration::from_millis(duration),
                    ..Sample::new(Instant::now())
                };
                if track
                    .sample_writer(ssrc, pt)
                    .write_sample(&sample)
                    .await
                    .is_err()
                {
                    errors += 1;
                }
            }
            errors
        }
    });

    // Subscribers accept every default codec, so the engine must pick VP8
    // for them and map the payload types.
    let mut viewers = Vec::new();
    for user in ["v1", "v2"] {
        let token = t.token(user, "r1", &["subscribe"]).await;
        let mut media_engine = MediaEngine::default();
        media_engine.register_default_codecs().unwrap();
        let counters = Arc::new(Counters::default());
        let viewer = peer(media_engine, counters.clone()).await;
        for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
            viewer
                .add_transceiver_from_kind(
                    kind,
                    Some(RTCRtpTransceiverInit {
                        direction: RTCRtpTransceiverDirection::Recvonly,
                        ..Default::default()
                    }),
                )
                .await
                .unwrap();
        }
        let location = negotiate(&t, &viewer, &counters, "/whep/r1/main", &token).await;
        assert!(location.starts_with("/whep/r1/main/"), "{location}");
        viewers.push((viewer, counters));
    }
    for (_, counters) in &viewers {
        until(
            || {
                Counters::get(&counters.intact_frames) >= 30
                    && Counters::get(&counters.audio_packets) >= 30
            },
            "30 intact video frames and 30 audio packets at a viewer",
        )
        .await;
        eprintln!("viewer: {}", counters.summary());
        assert!(Counters::get(&counters.video_frames) >= 30);
        assert_eq!(
            Counters::get(&counters.broken_frames),
            0,
            "{}",
            counters.summary()
        );
        assert_eq!(
            Counters::get(&counters.broken_audio),
            0,
            "{}",
            counters.summary()
        );
        let mime_types = counters.mime_types.lock().unwrap().clone();
        assert!(
            mime_types.contains(&"video/vp8".to_owned()),
            "{mime_types:?}"
        );
        assert!(
            mime_types.contains(&"audio/opus".to_owned()),
            "{mime_types:?}"
        );
    }

    assert_eq!(t.delete(&location, &publish_token).await, 200);
    let late_token = t.token("v3", "r1", &["subscribe"]).await;
    let mut media_engine = MediaEngine::default();
    media_engine.register_default_codecs().unwrap();
    let late_counters = Arc::new(Counters::default());
    let late = peer(media_engine, late_counters.clone()).await;
    late.add_transceiver_from_kind(
        RtpCodecKind::Video,
        Some(RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Recvonly,
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    let offer = late.create_offer(None).await.unwrap();
    late.set_local_description(offer).await.unwrap();
    let offer = late.local_description().await.unwrap().sdp;
    let refused = post_sdp(&t, "/whep/r1/main", &late_token, &offer).await;
    assert_eq!(
        refused.status, 404,
        "the stream ended with its publisher: {}",
        refused.body
    );
    let error: serde_json::Value = serde_json::from_str(&refused.body).unwrap();
    assert_eq!(error["error"]["code"], "not_found", "{error}");

    stop.store(true, Ordering::Relaxed);
    let write_errors = writer.await.unwrap();
    eprintln!("publisher: {write_errors} failed sample writes");
    late.close().await.unwrap();
    for (viewer, _) in viewers {
        viewer.close().await.unwrap();
    }
    publisher.close().await.unwrap();
    t.shutdown().await;
}
