//! A virtual host's motion, end to end: VMC (OSC) packets from a tracking
//! app over the avatar WebSocket and over UDP reach a viewer's room socket
//! as `avatar_motion` frames at most 60 a second; garbage is refused,
//! counted and changes nothing.

mod common;

use std::time::{Duration, Instant};

use common::{Client, TestEngine};
use futures_util::SinkExt;
use protocol::v1::server_frame::Frame;
use rosc::{OscBundle, OscMessage, OscPacket, OscTime, OscType};
use tokio_tungstenite::tungstenite::Message;

fn bone(name: &str, x: f32) -> OscPacket {
    let mut args = vec![OscType::String(name.into())];
    args.extend([x, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0].map(OscType::Float));
    OscPacket::Message(OscMessage {
        addr: "/VMC/Ext/Bone/Pos".into(),
        args,
    })
}

fn pose(x: f32) -> Vec<u8> {
    let packet = OscPacket::Bundle(OscBundle {
        timetag: OscTime::from((0, 1)),
        content: vec![
            bone("Hips", x),
            bone("Head", x + 1.0),
            OscPacket::Message(OscMessage {
                addr: "/VMC/Ext/OK".into(),
                args: vec![OscType::Int(1)],
            }),
        ],
    });
    rosc::encoder::encode(&packet).unwrap()
}

/// Motion frames a viewer gets within `window`.
async fn motion_frames(viewer: &mut Client, window: Duration) -> Vec<protocol::v1::AvatarMotion> {
    let mut frames = Vec::new();
    let end = Instant::now() + window;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match viewer.next_frame_within(left).await {
            Some(Frame::AvatarMotion(motion)) => frames.push(motion),
            Some(Frame::Batch(batch)) => {
                frames.extend(batch.items.into_iter().filter_map(|i| match i.frame {
                    Some(Frame::AvatarMotion(motion)) => Some(motion),
                    _ => None,
                }))
            }
            Some(_) => {}
            None => break,
        }
    }
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn motion_over_the_websocket_reaches_viewers_at_most_sixty_times_a_second() {
    let t = TestEngine::start().await;
    t.create_room("r1").await;
    let mut viewer = t.chatter("viewer", "r1").await;
    let viewer_token = t.token("viewer", "r1", &["subscribe"]).await;
    let avatar_url = format!("{}/avatar", t.ws_url("r1").trim_end_matches("/ws"));
    assert_eq!(
        Client::refused_status(&avatar_url, &viewer_token).await,
        403,
        "a viewer cannot drive the avatar"
    );
    let performer = t.token("host", "r1", &["publish"]).await;
    let (mut source, _) =
        tokio_tungstenite::connect_async(format!("{avatar_url}?token={performer}"))
            .await
            .unwrap();
    // Garbage first: refused and counted, the socket stays open.
    source
        .send(Message::binary(b"not osc at all".to_vec()))
        .await
        .unwrap();
    source.send(Message::text("{\"bone\":1}")).await.unwrap();
    // Then 200 packets a second for one second.
    let sender = tokio::spawn(async move {
        for n in 0..200 {
            source.send(Message::binary(pose(n as f32))).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        source
    });
    let frames = motion_frames(&mut viewer, Duration::from_millis(1_300)).await;
    let _source = sender.await.unwrap();
    assert!(
        frames.len() >= 20,
        "motion arrives: {} frames",
        frames.len()
    );
    assert!(
        frames.len() <= 80,
        "at most 60 a second: {} frames in ~1.1 s",
        frames.len()
    );
    let first = &frames[0];
    assert!(first.full, "the first frame is the whole pose");
    let names: Vec<&str> = first.bones.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["Head", "Hips"]);
    assert_eq!(first.bones[1].transform.len(), 7);
    let metrics = t.metrics_text().await;
    assert!(
        metrics.contains("live_avatar_packets_refused_total{reason=\"not_osc\"} 1"),
        "garbage counted: {}",
        metrics
            .lines()
            .filter(|l| l.contains("avatar"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(metrics.contains("live_avatar_packets_refused_total{reason=\"text_message\"} 1"));
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn motion_over_udp_goes_to_the_configured_room() {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = udp.local_addr().unwrap();
    drop(udp);
    let t = TestEngine::start_with(|c| {
        c.avatar.vmc_udp_addr = Some(addr);
        c.avatar.vmc_udp_room = "stage".into();
    })
    .await;
    t.create_room("stage").await;
    let mut viewer = t.chatter("viewer", "stage").await;
    // The room is created after the engine started: the listener finds it
    // on its next look (within a second); the tracker keeps sending.
    let sender = tokio::spawn(async move {
        let tracker = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for n in 0..250 {
            tracker.send_to(&pose(n as f32), addr).await.unwrap();
            tracker.send_to(b"\x00garbage", addr).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let frames = motion_frames(&mut viewer, Duration::from_millis(3_500)).await;
    sender.await.unwrap();
    assert!(!frames.is_empty(), "UDP motion reaches the room");
    let last = frames.last().unwrap();
    let hips = last.bones.iter().find(|b| b.name == "Hips").unwrap();
    assert_eq!(hips.transform[0], 249.0, "the latest pose wins");
    let metrics = t.metrics_text().await;
    assert!(
        metrics.contains("live_avatar_packets_refused_total{reason=\"not_osc\"}"),
        "garbage counted"
    );
    t.shutdown().await;
}

/// Motion during a recording replays with its VOD: the frames a viewer got
/// live come back from `/v1/vod/{id}/avatar`, placed by offset from the
/// recording's start, beginning with a whole pose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn motion_during_a_recording_replays_with_its_vod() {
    let t = common::recording::transcoding_engine(|_| {}).await;
    t.create_room("r1").await;
    let host = t.token("host", "r1", &["publish"]).await;
    let publisher = common::recording::publish(&t, "/whip/r1/main", &host).await;
    let viewer = t.token("viewer", "r1", &["subscribe"]).await;
    let recording = common::recording::live_hls(&t, "main", &viewer, None).await["recording_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut watcher = t.chatter("watcher", "r1").await;
    let avatar_url = format!("{}/avatar", t.ws_url("r1").trim_end_matches("/ws"));
    let (mut source, _) = tokio_tungstenite::connect_async(format!("{avatar_url}?token={host}"))
        .await
        .unwrap();
    let sender = tokio::spawn(async move {
        for n in 0..100 {
            source.send(Message::binary(pose(n as f32))).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        source
    });
    let live = motion_frames(&mut watcher, Duration::from_millis(2_500)).await;
    let _source = sender.await.unwrap();
    common::recording::unpublish(&t, publisher, "/whip/r1/main", &host).await;
    let vod = common::recording::ready_vod(&t, &recording, &viewer).await;
    assert_eq!(vod["avatar_segments"], 1, "{vod}");

    let segment = t
        .get_json_as(&format!("/v1/vod/{recording}/avatar?segment=0"), &viewer)
        .await;
    let frames = segment["frames"].as_array().unwrap();
    assert_eq!(
        frames.len(),
        live.len(),
        "every frame viewers got live: {segment}"
    );
    assert_eq!(frames[0]["full"], true, "it starts with a whole pose");
    let origin = vod["started_at_ms"].as_u64().unwrap();
    for (replayed, live) in frames.iter().zip(&live) {
        assert_eq!(replayed["offset_ms"].as_u64().unwrap(), live.at_ms - origin);
        assert_eq!(
            replayed["bones"].as_array().unwrap().len(),
            live.bones.len()
        );
    }
    let duration = vod["duration_ms"].as_u64().unwrap();
    assert!(
        frames
            .iter()
            .all(|f| f["offset_ms"].as_u64().unwrap() <= duration + 1_000)
    );
    let past_the_end = t
        .get_json_as(&format!("/v1/vod/{recording}/avatar?segment=5"), &viewer)
        .await;
    assert_eq!(
        past_the_end["error"]["code"], "bad_request",
        "{past_the_end}"
    );
    t.shutdown().await;
}
