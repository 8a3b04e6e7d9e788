//! The VOD role's event handling on the real embedded store: order,
//! redelivery and the mapping of danmaku onto the media timeline.

use actors::events::{RECORDING_FINISHED, RECORDING_SEGMENT, RECORDING_STARTED, outbox_event};
use actors::vod::{Applied, apply};
use bytes::Bytes;
use prost::Message;
use protocol::v1::{
    DanmakuItem, RecordingFinished, RecordingRendition, RecordingSegment, RecordingStarted,
};
use storage::{EmbeddedOptions, EmbeddedStore, OutboxEvent, Store, VodStatus};

const ORIGIN: u64 = 1_700_000_000_000;

fn payload(kind: &str, message: &impl Message) -> Bytes {
    outbox_event(kind, "r1", ORIGIN, message).payload
}

fn started() -> Bytes {
    let rendition = |name: &str, height| RecordingRendition {
        name: name.into(),
        width: height * 16 / 9,
        height,
        bitrate_bps: 1_000_000,
    };
    payload(
        RECORDING_STARTED,
        &RecordingStarted {
            recording_id: "rec1".into(),
            room_id: "r1".into(),
            stream: "main".into(),
            media_origin_ms: ORIGIN,
            renditions: vec![rendition("720p", 720), rendition("360p", 360)],
            danmaku_seq_start: 2,
            encoder: "libx264".into(),
            publisher_user_id: "streamer".into(),
        },
    )
}

fn segment(rendition: &str, sequence: u64) -> Bytes {
    payload(
        RECORDING_SEGMENT,
        &RecordingSegment {
            recording_id: "rec1".into(),
            room_id: "r1".into(),
            stream: "main".into(),
            rendition: rendition.into(),
            sequence,
            uri: format!("seg_{sequence:05}.m4s"),
            duration_ms: 2000,
            start_ms: sequence * 2000,
        },
    )
}

fn finished(duration_ms: u64) -> Bytes {
    payload(
        RECORDING_FINISHED,
        &RecordingFinished {
            recording_id: "rec1".into(),
            room_id: "r1".into(),
            stream: "main".into(),
            duration_ms,
            finished_ms: ORIGIN + duration_ms + 50,
            frames_in: 100,
            decode_errors: 0,
            error: String::new(),
        },
    )
}

fn danmaku(seq: u64, ts_ms: u64) -> DanmakuItem {
    DanmakuItem {
        seq,
        user_id: "u1".into(),
        name: "Ann".into(),
        text: format!("#{seq}"),
        ts_ms,
        count: 1,
        ..Default::default()
    }
}

fn event(id: &str) -> OutboxEvent {
    OutboxEvent {
        id: id.into(),
        subject: "live.test.r1".into(),
        payload: Bytes::new(),
    }
}

#[tokio::test]
async fn recording_events_build_one_asset_whatever_their_order_and_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    // Danmaku: two before the recording (by seq), three during it (one in
    // the second 6-minute segment), one after it ended.
    let items = vec![
        danmaku(1, ORIGIN - 5000),
        danmaku(2, ORIGIN - 10),
        danmaku(3, ORIGIN + 1500),
        danmaku(4, ORIGIN + 4000),
        danmaku(5, ORIGIN + 361_000),
        danmaku(6, ORIGIN + 400_000),
    ];
    store
        .append_danmaku("r1", items, event("e1"))
        .await
        .unwrap();

    // A segment before its recording.started: left for redelivery.
    assert_eq!(
        apply(&store, &segment("720p", 0)).await.unwrap(),
        Applied::Later
    );
    assert_eq!(
        apply(&store, &finished(1000)).await.unwrap(),
        Applied::Later
    );
    assert_eq!(apply(&store, &started()).await.unwrap(), Applied::Done);
    for bytes in [
        segment("720p", 1),
        segment("720p", 0),
        segment("720p", 1),
        segment("360p", 7),
    ] {
        assert_eq!(apply(&store, &bytes).await.unwrap(), Applied::Done);
    }
    let asset = store.vod_asset("rec1").await.unwrap().unwrap();
    assert_eq!(asset.status, VodStatus::Recording);
    assert_eq!(
        (asset.segments, asset.duration_ms),
        (2, 4000),
        "the top rendition's segments, counted once, in any order"
    );
    // A repeated started keeps what the segments added.
    assert_eq!(apply(&store, &started()).await.unwrap(), Applied::Done);
    assert_eq!(
        store.vod_asset("rec1").await.unwrap().unwrap().duration_ms,
        4000
    );

    assert_eq!(
        apply(&store, &finished(362_000)).await.unwrap(),
        Applied::Done
    );
    let asset = store.vod_asset("rec1").await.unwrap().unwrap();
    assert_eq!(asset.status, VodStatus::Ready);
    assert_eq!(asset.duration_ms, 362_000);
    assert_eq!(asset.renditions[0].name, "720p");
    let first = store.vod_danmaku("rec1", 0).await.unwrap();
    let placed: Vec<(u64, u64)> = first.iter().map(|d| (d.item.seq, d.offset_ms)).collect();
    assert_eq!(placed, [(3, 1500), (4, 4000)]);
    let second = store.vod_danmaku("rec1", 1).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!((second[0].item.seq, second[0].offset_ms), (5, 361_000));

    // Redelivered after the asset is ready: nothing changes or doubles.
    assert_eq!(
        apply(&store, &finished(362_000)).await.unwrap(),
        Applied::Done
    );
    assert_eq!(
        apply(&store, &segment("720p", 9)).await.unwrap(),
        Applied::Done
    );
    assert_eq!(store.vod_asset("rec1").await.unwrap().unwrap(), asset);
    assert_eq!(store.vod_danmaku("rec1", 0).await.unwrap().len(), 2);
    // Not an envelope at all: skipped, not retried forever.
    assert_eq!(apply(&store, b"\xff\xff").await.unwrap(), Applied::Done);
    store.close().await.unwrap();
}
