//! Transcoding engines and the media helpers their tests share: a
//! webrtc-rs publisher, the live HLS URL, a finished VOD.

use std::time::Duration;

use codec::{VideoCodec, VideoEncoderConfig};
use engine::config::RenditionEntry;
use load_tests::rtc::{Endpoint, PublishOptions, Publisher, wait_for};

use super::TestEngine;

const WAIT: Duration = Duration::from_secs(20);

/// An engine that transcodes into 360p and 180p in 1 s segments.
pub async fn transcoding_engine(adjust: impl FnOnce(&mut engine::Config)) -> TestEngine {
    TestEngine::start_with(|c| {
        c.transcode.enabled = true;
        c.transcode.encoder = "auto".into();
        c.transcode.segment_seconds = 1;
        c.transcode.ladder = vec![
            RenditionEntry {
                name: "360p".into(),
                height: 360,
                bitrate_kbps: 600,
            },
            RenditionEntry {
                name: "180p".into(),
                height: 180,
                bitrate_kbps: 200,
            },
        ];
        adjust(c);
    })
    .await
}

/// A connected webrtc-rs publisher of a 640x360 VP8 pattern and Opus.
pub async fn publish(t: &TestEngine, path: &str, token: &str) -> Publisher {
    publish_speaking(t, path, token, None).await
}

/// [`publish`], saying `speech` (48 kHz stereo) instead of a tone.
pub async fn publish_speaking(
    t: &TestEngine,
    path: &str,
    token: &str,
    speech: Option<std::sync::Arc<[i16]>>,
) -> Publisher {
    let whip = Endpoint {
        http: &t.http,
        base: &t.base,
        path,
        token,
    };
    let options = PublishOptions {
        video: VideoEncoderConfig {
            codec: VideoCodec::Vp8,
            width: 640,
            height: 360,
            fps: 30,
            bitrate_bps: 600_000,
            keyframe_interval: 60,
        },
        audio_bitrate_bps: 48_000,
        speech,
    };
    let publisher = Publisher::start(&whip, options).await.unwrap();
    wait_for(|| publisher.stats().connected(), WAIT)
        .await
        .expect("the publisher connects");
    publisher
}

/// Ends a publisher's WHIP session (as its page's Stop does) and closes it.
pub async fn unpublish(t: &TestEngine, publisher: Publisher, path: &str, token: &str) {
    let whip = Endpoint {
        http: &t.http,
        base: &t.base,
        path,
        token,
    };
    let status = load_tests::rtc::delete_session(&whip, publisher.location())
        .await
        .unwrap();
    assert_eq!(status, 200, "DELETE of the WHIP session");
    publisher.close().await;
}

/// The signed live HLS URL of `r1/{stream}` once its recording is other
/// than `not`: waits for a recording to open (or to be replaced).
pub async fn live_hls(
    t: &TestEngine,
    stream: &str,
    token: &str,
    not: Option<&str>,
) -> serde_json::Value {
    for _ in 0..150 {
        let response = t
            .http
            .get(format!("{}/v1/rooms/r1/streams/{stream}/hls", t.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            let signed: serde_json::Value = response.json().await.unwrap();
            if not != signed["recording_id"].as_str() {
                return signed;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no live HLS for r1/{stream}");
}

/// The VOD asset of a recording once the VOD role marked it ready.
pub async fn ready_vod(t: &TestEngine, id: &str, token: &str) -> serde_json::Value {
    let mut vod = serde_json::Value::Null;
    for _ in 0..100 {
        vod = t.get_json_as(&format!("/v1/vod/{id}"), token).await;
        if vod["status"] == "ready" {
            return vod;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the VOD of {id} never became ready: {vod}");
}
