//! Transcoding and recording end to end: a webrtc-rs publisher sends a
//! VP8 test pattern; the engine transcodes it into an H.264 ladder, serves
//! live HLS that ffprobe reads, hands a weak viewer (`layer=low`) the
//! transcoded rendition over WHEP, and when the publisher leaves closes the
//! recording and announces it on the bus (a real nats-server).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bus::testing::NatsServer;
use common::read_stream;
use common::recording::{live_hls, publish, ready_vod, transcoding_engine, unpublish};
use load_tests::rtc::{Endpoint, Subscriber, SubscriberStats, wait_for};
use prost::Message as _;
use protocol::v1::{RecordingFinished, RecordingSegment, RecordingStarted};

const WAIT: Duration = Duration::from_secs(20);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The distinct `codec,width,height` lines ffprobe reports for a URL.
fn ffprobe_streams(url: &str) -> Vec<String> {
    let output = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height",
            "-of",
            "csv=p=0",
            url,
        ])
        .output()
        .expect("ffprobe runs (scripts/install-deps --test installs ffmpeg)");
    assert!(
        output.status.success(),
        "ffprobe {url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: std::collections::BTreeSet<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    lines.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_transcoded_served_as_hls_and_recorded() {
    let nats = NatsServer::start();
    let url = nats.url();
    let t = transcoding_engine(|c| c.nats_url = Some(url.clone())).await;
    t.create_room("r1").await;
    let publish_token = t.token("streamer", "r1", &["publish"]).await;
    let viewer_token = t.token("viewer", "r1", &["subscribe", "chat"]).await;
    let mut chat = common::Client::connect(&t.ws_url("r1"), &viewer_token, None).await;
    chat.send_danmaku("before the stream", "d0").await;
    assert_eq!(chat.next_items(1).await[0].text, "before the stream");
    let outsider_token = t.token("outsider", "r2", &["subscribe"]).await;

    // Before anyone publishes there is nothing to play.
    let early = t
        .http
        .get(format!("{}/v1/rooms/r1/streams/main/hls", t.base))
        .bearer_auth(&viewer_token)
        .send()
        .await
        .unwrap();
    assert_eq!(early.status(), 404);

    let publisher = publish(&t, "/whip/r1/main", &publish_token).await;
    let published = Instant::now();
    let published_wall = now_ms();

    // The playlist URL exists once the transcoder opened its ladder.
    let signed = live_hls(&t, "main", &viewer_token, None).await;
    let master_url = format!("{}{}", t.base, signed["url"].as_str().unwrap());
    let recording_id = signed["recording_id"].as_str().unwrap().to_owned();
    let forbidden = t
        .http
        .get(format!("{}/v1/rooms/r1/streams/main/hls", t.base))
        .bearer_auth(&outsider_token)
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), 403, "a grant for another room");

    // A weak viewer asks for `low`: the 180p rendition, in H.264.
    let whep = Endpoint {
        http: &t.http,
        base: &t.base,
        path: "/whep/r1/main?layer=low",
        token: &viewer_token,
    };
    let low = Subscriber::start(&whep, true).await.unwrap();
    let stats = low.stats().clone();
    if wait_for(|| SubscriberStats::get(&stats.decoded_frames) >= 20, WAIT)
        .await
        .is_err()
    {
        panic!("the low viewer decodes frames: {}", stats.summary());
    }
    assert_eq!(stats.dimensions(), (320, 180), "{}", stats.summary());
    assert!(
        stats.mime_types().contains(&"video/h264".to_owned()),
        "{}",
        stats.summary()
    );
    assert_eq!(
        SubscriberStats::get(&stats.decode_errors),
        0,
        "{}",
        stats.summary()
    );

    // Danmaku at known moments while the stream is recorded.
    let mut sent = Vec::new();
    for (index, at) in [1500u64, 2500, 3500].into_iter().enumerate() {
        while published.elapsed() < Duration::from_millis(at) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let text = format!("at {at} ms");
        sent.push((text.clone(), now_ms()));
        chat.send_danmaku(&text, &format!("d{}", index + 1)).await;
    }
    assert_eq!(chat.next_items(3).await.len(), 3);

    // Live HLS: a master playlist with both renditions, each readable by
    // ffprobe through the signed URL (segments resolve under it).
    while published.elapsed() < Duration::from_secs(4) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let master = t.http.get(&master_url).send().await.unwrap();
    assert_eq!(master.status(), 200);
    assert_eq!(
        master.headers()["content-type"],
        "application/vnd.apple.mpegurl"
    );
    let master = master.text().await.unwrap();
    assert!(
        master.contains("RESOLUTION=640x360") && master.contains("RESOLUTION=320x180"),
        "{master}"
    );
    let base_url = master_url.trim_end_matches("master.m3u8");
    for (name, size) in [("360p", "640,360"), ("180p", "320,180")] {
        let streams = ffprobe_streams(&format!("{base_url}{name}/index.m3u8"));
        assert_eq!(
            streams,
            vec!["aac".to_owned(), format!("h264,{size}")],
            "{name}"
        );
    }
    // A tampered signature or a climb out of the recording is refused.
    let tampered = master_url.replacen("/signed/", "/signed/1", 1);
    assert_eq!(t.http.get(&tampered).send().await.unwrap().status(), 401);
    let climb = format!("{base_url}..%2F..%2Fadmin.key");
    assert_eq!(t.http.get(&climb).send().await.unwrap().status(), 404);

    // The publisher leaves: the recording closes with the stream's length.
    let ended = Instant::now();
    let duration = published.elapsed();
    unpublish(&t, publisher, "/whip/r1/main", &publish_token).await;
    low.close().await;
    let playlist = t
        .dir
        .path()
        .join("recordings")
        .join(&recording_id)
        .join("180p/index.m3u8");
    let closed =
        || std::fs::read_to_string(&playlist).is_ok_and(|text| text.contains("#EXT-X-ENDLIST"));
    wait_for(closed, WAIT)
        .await
        .expect("the playlist is closed");
    eprintln!(
        "recording closed {:?} after the publisher left",
        ended.elapsed()
    );
    let segments = codec::hls::read_segments(&playlist).unwrap();
    let recorded: u64 = segments.iter().map(|s| s.duration_ms).sum();
    let published_ms = duration.as_millis() as u64;
    // A transcoder that falls behind real time drops frames (by design, and
    // counted): on a starved machine those are missing from the recording.
    let mut lost = 0.0;
    for stage in ["dropped", "incomplete"] {
        let name = format!("live_transcode_frames_total{{stage=\"{stage}\"}}");
        lost += t.metric(&name).await.unwrap_or(0.0);
    }
    let slack = 1000 + lost as u64 * 1000 / 30;
    assert!(
        recorded.abs_diff(published_ms) <= slack,
        "recorded {recorded} ms of {published_ms} ms published (one segment of slack, \
         and {lost} frames the transcoder did not get)"
    );
    assert!(Path::new(&playlist).with_file_name("init.mp4").exists());
    let mut status = 0;
    for _ in 0..50 {
        status = t
            .http
            .get(format!("{}/v1/rooms/r1/streams/main/hls", t.base))
            .bearer_auth(&viewer_token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status == 404 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 404, "no live HLS after the stream ended");

    // recording.started, a segment per rendition and second, finished.
    let mut events = Vec::new();
    for _ in 0..50 {
        events = read_stream(&url, "LIVE_RECORDINGS").await;
        if events.iter().any(|e| e.kind == "recording.finished") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started: Vec<RecordingStarted> = events
        .iter()
        .filter(|e| e.kind == "recording.started")
        .map(|e| RecordingStarted::decode(e.payload.clone()).unwrap())
        .collect();
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].recording_id, recording_id);
    assert_eq!(started[0].renditions.len(), 2);
    assert_eq!(started[0].encoder, "libx264", "no GPU here: the fallback");
    let segment_events: Vec<RecordingSegment> = events
        .iter()
        .filter(|e| e.kind == "recording.segment")
        .map(|e| RecordingSegment::decode(e.payload.clone()).unwrap())
        .collect();
    assert_eq!(
        segment_events
            .iter()
            .filter(|s| s.rendition == "180p")
            .count(),
        segments.len(),
        "one event per segment"
    );
    let finished: Vec<RecordingFinished> = events
        .iter()
        .filter(|e| e.kind == "recording.finished")
        .map(|e| RecordingFinished::decode(e.payload.clone()).unwrap())
        .collect();
    assert_eq!(finished.len(), 1);
    assert!(finished[0].error.is_empty(), "{:?}", finished[0]);
    assert!(finished[0].duration_ms.abs_diff(published_ms) <= 1000);

    let metrics = t.metrics_text().await;
    let info = metrics
        .lines()
        .find(|l| l.starts_with("live_transcode_encoder_info{"))
        .expect("the encoder choice is a metric");
    assert!(
        info.contains("encoder=\"libx264\"") && info.contains("reason="),
        "{info}"
    );
    assert!(metrics.contains("live_transcode_frames_total{stage=\"encoded\"}"));

    // The VOD role built the asset from those events.
    let vod = ready_vod(&t, &recording_id, &viewer_token).await;
    assert_eq!(vod["room_id"], "r1");
    let origin = vod["started_at_ms"].as_u64().unwrap();
    assert!(
        (published_wall..published_wall + 1000).contains(&origin),
        "media time 0 is the first recorded frame, just after publishing began: {origin} vs {published_wall}"
    );
    let vod_ms = vod["duration_ms"].as_u64().unwrap();
    assert!(vod_ms.abs_diff(published_ms) <= 1000, "{vod}");
    assert_eq!(vod["renditions"].as_array().unwrap().len(), 2);
    let listed = t.get_json_as("/v1/vod?room=r1", &viewer_token).await;
    assert_eq!(listed["items"][0]["id"], recording_id.as_str(), "{listed}");
    let vod_master = format!("{}{}", t.base, vod["playlist_url"].as_str().unwrap());
    assert_eq!(
        ffprobe_streams(&vod_master),
        vec![
            "aac".to_owned(),
            "h264,320,180".to_owned(),
            "h264,640,360".to_owned()
        ]
    );
    let poster = t
        .http
        .get(format!("{}{}", t.base, vod["poster_url"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(poster.headers()["content-type"], "image/jpeg");

    // Danmaku replay: each where it was sent on the media timeline.
    let replay = t
        .get_json_as(
            &format!("/v1/vod/{recording_id}/danmaku?segment=0"),
            &viewer_token,
        )
        .await;
    let items = replay["items"].as_array().unwrap();
    assert_eq!(
        items.len(),
        3,
        "the danmaku before the stream is not replayed: {replay}"
    );
    for ((text, sent_ms), item) in sent.iter().zip(items) {
        assert_eq!(item["text"], text.as_str());
        let offset = item["offset_ms"].as_u64().unwrap();
        let expected = sent_ms - origin;
        assert!(
            offset.abs_diff(expected) <= 100,
            "{text}: replayed at {offset} ms, sent at {expected} ms"
        );
    }
    // A moderator deletes one afterwards: the replay leaves it out too.
    let seq = items[1]["seq"].as_u64().unwrap();
    let deleted = t
        .delete(&format!("/v1/rooms/r1/danmaku/{seq}"), common::ADMIN_KEY)
        .await;
    assert_eq!(deleted, 204);
    let replay = t
        .get_json_as(
            &format!("/v1/vod/{recording_id}/danmaku?segment=0"),
            &viewer_token,
        )
        .await;
    let texts: Vec<&str> = replay["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, [sent[0].0.as_str(), sent[2].0.as_str()]);
    let beyond = t
        .http
        .get(format!(
            "{}/v1/vod/{recording_id}/danmaku?segment=3",
            t.base
        ))
        .bearer_auth(&viewer_token)
        .send()
        .await
        .unwrap();
    assert_eq!(beyond.status(), 400);
    let outsider = t
        .http
        .get(format!("{}/v1/vod/{recording_id}", t.base))
        .bearer_auth(&outsider_token)
        .send()
        .await
        .unwrap();
    assert_eq!(outsider.status(), 403);
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_transcode_restarts_as_a_new_recording_and_the_cap_holds() {
    let t = transcoding_engine(|c| c.transcode.max_concurrent = 1).await;
    t.create_room("r1").await;
    let publish_token = t.token("streamer", "r1", &["publish"]).await;
    let viewer_token = t.token("viewer", "r1", &["subscribe"]).await;
    let main = publish(&t, "/whip/r1/main", &publish_token).await;
    let first = live_hls(&t, "main", &viewer_token, None).await;
    let first = first["recording_id"].as_str().unwrap().to_owned();

    // A second stream beyond the cap of one transcode: forwarded only.
    let second = publish(&t, "/whip/r1/second", &publish_token).await;
    let mut refused = None;
    for _ in 0..50 {
        refused = t.metric("live_transcodes_refused_total").await;
        if refused.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(refused, Some(1.0));
    let status = t
        .http
        .get(format!("{}/v1/rooms/r1/streams/second/hls", t.base))
        .bearer_auth(&viewer_token)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);

    // The first stream's transcoder fails once it has written segments:
    // its recording is closed as it stands and the StreamActor starts a
    // new one on the freed slot.
    let sealed = t
        .dir
        .path()
        .join("recordings")
        .join(&first)
        .join("360p/index.m3u8");
    let written = || codec::hls::read_segments(&sealed).is_ok_and(|s| s.len() >= 2);
    wait_for(written, WAIT).await.expect("segments are written");
    let key = sfu::StreamKey::new("r1", "main");
    assert!(t.engine().media().inject_transcode_failure(key).await);
    let next = live_hls(&t, "main", &viewer_token, Some(&first)).await;
    let next = next["recording_id"].as_str().unwrap().to_owned();
    let failed = ready_vod(&t, &first, &viewer_token).await;
    assert!(
        failed["error"].as_str().unwrap().contains("injected"),
        "{failed}"
    );
    let text = std::fs::read_to_string(&sealed).unwrap();
    assert!(text.contains("#EXT-X-ENDLIST"), "{text}");
    // The VOD role hears of the new recording a moment after it opened.
    let mut ids = Vec::new();
    for _ in 0..100 {
        let listed = t.get_json_as("/v1/vod?room=r1", &viewer_token).await;
        ids = listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>();
        if ids.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ids, [next, first], "newest first");

    main.close().await;
    second.close().await;
    t.shutdown().await;
}
