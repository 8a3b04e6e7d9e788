//! WHIP and WHEP against a real engine with webrtc-rs peers, an
//! implementation independent of the engine's own str0m: a publisher sends
//! a test pattern encoded by libvpx (VP8) or libx264 (H.264) plus an Opus
//! tone; two subscribers receive, reassemble and decode every frame with
//! FFmpeg's decoders; the publisher's DELETE ends their sessions. All on
//! 127.0.0.1 only.

mod common;

use std::time::Duration;

use codec::{VideoCodec, VideoEncoderConfig};
use common::TestEngine;
use load_tests::rtc::{
    Endpoint, PublishOptions, Publisher, Refused, Subscriber, SubscriberStats, delete_session,
    wait_for,
};

const WAIT: Duration = Duration::from_secs(15);

fn options(codec: VideoCodec) -> PublishOptions {
    PublishOptions {
        video: VideoEncoderConfig {
            codec,
            width: 640,
            height: 360,
            fps: 30,
            bitrate_bps: 600_000,
            keyframe_interval: 300,
        },
        audio_bitrate_bps: 48_000,
        speech: None,
    }
}

async fn publish_and_watch(codec: VideoCodec, mime: &str) {
    let t = TestEngine::start().await;
    t.create_room("r1").await;
    let publish_token = t.token("streamer", "r1", &["publish"]).await;
    let whip = Endpoint {
        http: &t.http,
        base: &t.base,
        path: "/whip/r1/main",
        token: &publish_token,
    };
    let publisher = Publisher::start(&whip, options(codec)).await.unwrap();
    assert!(
        publisher.location().starts_with("/whip/r1/main/"),
        "{}",
        publisher.location()
    );
    wait_for(|| publisher.stats().connected(), WAIT)
        .await
        .expect("the publisher connects");

    // The subscribers offer VP8 and H.264: the engine must answer with the
    // publisher's codec and map payload types.
    let mut viewers = Vec::new();
    for user in ["v1", "v2"] {
        let token = t.token(user, "r1", &["subscribe"]).await;
        let whep = Endpoint {
            http: &t.http,
            base: &t.base,
            path: "/whep/r1/main",
            token: &token,
        };
        let viewer = Subscriber::start(&whep, true).await.unwrap();
        assert!(viewer.location().starts_with("/whep/r1/main/"));
        viewers.push(viewer);
    }
    for viewer in &viewers {
        let stats = viewer.stats().clone();
        let enough = || {
            SubscriberStats::get(&stats.decoded_frames) >= 30
                && SubscriberStats::get(&stats.audio_samples) >= 30 * 960
        };
        if wait_for(enough, WAIT).await.is_err() {
            panic!("30 decoded frames and 0.6 s of audio: {}", stats.summary());
        }
        eprintln!("viewer: {}", stats.summary());
        assert_eq!(stats.dimensions(), (640, 360), "{}", stats.summary());
        assert_eq!(
            SubscriberStats::get(&stats.decode_errors),
            0,
            "{}",
            stats.summary()
        );
        let mime_types = stats.mime_types();
        assert!(mime_types.contains(&mime.to_owned()), "{mime_types:?}");
        assert!(
            mime_types.contains(&"audio/opus".to_owned()),
            "{mime_types:?}"
        );
    }
    // The joiners' keyframe requests reached the publisher's encoder.
    let publishing = publisher.stats();
    assert!(
        SubscriberStats::get(&publishing.keyframe_requests) >= 1,
        "the SFU asked for a keyframe when viewers joined"
    );

    // The publisher leaves: the viewers' sessions end, the stream is gone.
    assert_eq!(
        delete_session(&whip, publisher.location()).await.unwrap(),
        200
    );
    let deleted = std::time::Instant::now();
    for viewer in &viewers {
        let stats = viewer.stats().clone();
        let ended = || stats.disconnected() || SubscriberStats::get(&stats.tracks_ended) >= 2;
        if wait_for(ended, WAIT).await.is_err() {
            panic!(
                "a viewer's session outlived the stream: {}",
                stats.summary()
            );
        }
        eprintln!(
            "viewer ended {:?} after the DELETE: {}",
            deleted.elapsed(),
            stats.summary()
        );
    }
    let late_token = t.token("v3", "r1", &["subscribe"]).await;
    let whep = Endpoint {
        http: &t.http,
        base: &t.base,
        path: "/whep/r1/main",
        token: &late_token,
    };
    let refused = Subscriber::start(&whep, false)
        .await
        .err()
        .expect("no stream to watch after the publisher left");
    let refused = refused.downcast::<Refused>().expect("an HTTP refusal");
    assert_eq!(refused.status, 404, "{refused}");
    let error: serde_json::Value = serde_json::from_str(&refused.body).unwrap();
    assert_eq!(error["error"]["code"], "not_found", "{error}");

    publisher.close().await;
    for viewer in viewers {
        viewer.close().await;
    }
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vp8_from_libvpx_reaches_two_decoding_subscribers() {
    publish_and_watch(VideoCodec::Vp8, "video/vp8").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_from_libx264_reaches_two_decoding_subscribers() {
    publish_and_watch(VideoCodec::H264, "video/h264").await;
}
