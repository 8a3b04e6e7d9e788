//! The VOD role: builds VOD assets from recording events and places the
//! room's danmaku on each recording's timeline.
//!
//! ```text
//!  LIVE_RECORDINGS (durable consumer "vod", explicit ack)
//!     recording.started  ─> asset (recording), renditions, media origin
//!     recording.segment  ─> segments, duration so far (max: redeliveries and
//!                           reordering change nothing)
//!     recording.finished ─> danmaku import, then asset ready
//! ```
//!
//! Danmaku replay maps each danmaku's receive time (`ts_ms`, stamped by its
//! room when accepted) onto the media timeline: offset = ts_ms − the
//! recording's media origin, the arrival of its first recorded frame on the
//! same clock. Nothing is guessed from wall clocks on either side of the
//! network. Items are read from the room's danmaku after the seq the
//! recording started at, and stored by `(vod, 6-minute segment)`.
//!
//! Every step is idempotent, so at-least-once delivery is enough: an event
//! is acked only after its effect is stored; an event that arrives before
//! the `recording.started` it depends on is left unacked and comes again.

use std::sync::Arc;
use std::time::Duration;

use bus::{ConsumerSpec, EventBus};
use prost::Message;
use protocol::v1::{Envelope, RecordingFinished, RecordingSegment, RecordingStarted};
use storage::{
    Store, StoreError, VOD_DANMAKU_SEGMENT_MS, VodAsset, VodDanmaku, VodRendition, VodStatus,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::events;

/// The durable consumer's name: every VOD instance shares it.
pub const CONSUMER: &str = "vod";

/// Danmaku read from the room per round trip during an import.
const IMPORT_PAGE: usize = 1000;

/// An event deferred (its recording.started not seen yet) comes back after
/// this, at most this many times.
const RETRY_DELAY: Duration = Duration::from_secs(2);
const MAX_DEFERRALS: u64 = 30;

pub fn spawn(
    store: Arc<dyn Store>,
    bus: Arc<dyn EventBus>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(run(store, bus, stop))
}

async fn run(store: Arc<dyn Store>, bus: Arc<dyn EventBus>, stop: CancellationToken) {
    let spec = ConsumerSpec {
        name: CONSUMER.into(),
        stream: "LIVE_RECORDINGS".into(),
        filter_subject: "live.recording.>".into(),
        ack_wait: Duration::from_secs(30),
    };
    let mut consumer = match bus.consumer(spec).await {
        Ok(consumer) => consumer,
        Err(error) => {
            tracing::error!(%error, "the VOD service cannot consume recording events");
            return;
        }
    };
    tracing::info!(bus = bus.name(), "VOD service started");
    let mut backoff = Duration::from_millis(100);
    loop {
        let delivery = tokio::select! {
            _ = stop.cancelled() => break,
            delivery = consumer.next() => delivery,
        };
        match delivery {
            Ok(delivery) => {
                backoff = Duration::from_millis(100);
                match apply(store.as_ref(), &delivery.event.payload).await {
                    Ok(Applied::Done) => {
                        if let Err(error) = delivery.ack().await {
                            tracing::debug!(%error, "VOD ack failed; the event comes again");
                        }
                    }
                    Ok(Applied::Later) => {
                        metrics::counter!("live_vod_events_total", "outcome" => "deferred")
                            .increment(1);
                        // Waiting for its recording.started; one that never
                        // comes must not hold a place in the consumer's
                        // unacknowledged window forever.
                        let reply = if delivery.deliveries() >= MAX_DEFERRALS {
                            tracing::error!(
                                "the VOD service gave up on a recording event whose recording.started never came"
                            );
                            delivery.give_up().await
                        } else {
                            delivery.retry_later(RETRY_DELAY).await
                        };
                        if let Err(error) = reply {
                            tracing::debug!(%error, "VOD nak failed; the event comes again");
                        }
                    }
                    Err(error) => {
                        metrics::counter!("live_vod_events_total", "outcome" => "error")
                            .increment(1);
                        tracing::warn!(%error, "the VOD service could not apply an event");
                    }
                }
            }
            Err(error) => {
                tracing::debug!(%error, ?backoff, "VOD consumer unavailable");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    tracing::info!("VOD service stopped");
}

/// What became of an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// Stored (or nothing to do): ack it.
    Done,
    /// Depends on an event not seen yet: leave it for redelivery.
    Later,
}

/// Applies one recording event to the VOD store. Payloads that do not
/// decode are logged and acknowledged: retrying cannot help.
pub async fn apply(store: &dyn Store, payload: &[u8]) -> Result<Applied, StoreError> {
    let Ok(envelope) = Envelope::decode(payload) else {
        tracing::error!("the VOD service skipped an event that is not an envelope");
        return Ok(Applied::Done);
    };
    let applied = match envelope.kind.as_str() {
        events::RECORDING_STARTED => match RecordingStarted::decode(envelope.payload) {
            Ok(started) => on_started(store, started).await?,
            Err(_) => undecodable(&envelope.id),
        },
        events::RECORDING_SEGMENT => match RecordingSegment::decode(envelope.payload) {
            Ok(segment) => on_segment(store, segment).await?,
            Err(_) => undecodable(&envelope.id),
        },
        events::RECORDING_FINISHED => match RecordingFinished::decode(envelope.payload) {
            Ok(finished) => on_finished(store, finished).await?,
            Err(_) => undecodable(&envelope.id),
        },
        _ => Applied::Done,
    };
    if applied == Applied::Done {
        metrics::counter!("live_vod_events_total", "outcome" => "applied").increment(1);
    }
    Ok(applied)
}

fn undecodable(id: &str) -> Applied {
    tracing::error!(%id, "the VOD service skipped an event it cannot decode");
    Applied::Done
}

async fn on_started(store: &dyn Store, started: RecordingStarted) -> Result<Applied, StoreError> {
    if store.vod_asset(&started.recording_id).await?.is_some() {
        // A redelivery: what later events added stays.
        return Ok(Applied::Done);
    }
    let asset = VodAsset {
        vod_id: started.recording_id,
        room_id: started.room_id,
        stream: started.stream,
        status: VodStatus::Recording,
        media_origin_ms: started.media_origin_ms,
        duration_ms: 0,
        segments: 0,
        renditions: started
            .renditions
            .into_iter()
            .map(|r| VodRendition {
                name: r.name,
                width: r.width,
                height: r.height,
                bitrate_bps: r.bitrate_bps,
            })
            .collect(),
        danmaku_seq_start: started.danmaku_seq_start,
        publisher: started.publisher_user_id,
        finished_ms: None,
        error: String::new(),
    };
    store.put_vod_asset(asset).await?;
    Ok(Applied::Done)
}

async fn on_segment(store: &dyn Store, segment: RecordingSegment) -> Result<Applied, StoreError> {
    let Some(mut asset) = store.vod_asset(&segment.recording_id).await? else {
        return Ok(Applied::Later);
    };
    // The top rendition speaks for the asset; the others have the same cuts.
    let top = asset.renditions.first().map(|r| r.name.as_str());
    if top != Some(segment.rendition.as_str()) || asset.status == VodStatus::Ready {
        return Ok(Applied::Done);
    }
    let segments = asset.segments.max(segment.sequence + 1);
    let duration_ms = asset
        .duration_ms
        .max(segment.start_ms + segment.duration_ms);
    if (segments, duration_ms) != (asset.segments, asset.duration_ms) {
        asset.segments = segments;
        asset.duration_ms = duration_ms;
        store.put_vod_asset(asset).await?;
    }
    Ok(Applied::Done)
}

async fn on_finished(
    store: &dyn Store,
    finished: RecordingFinished,
) -> Result<Applied, StoreError> {
    let Some(mut asset) = store.vod_asset(&finished.recording_id).await? else {
        return Ok(Applied::Later);
    };
    if asset.status == VodStatus::Ready {
        return Ok(Applied::Done);
    }
    let end_ms = asset.media_origin_ms + finished.duration_ms;
    let placed = import_danmaku(store, &asset, end_ms).await?;
    asset.status = VodStatus::Ready;
    asset.duration_ms = finished.duration_ms;
    asset.finished_ms = Some(finished.finished_ms);
    asset.error = finished.error;
    store.put_vod_asset(asset.clone()).await?;
    tracing::info!(vod = %asset.vod_id, room = %asset.room_id, duration_ms = asset.duration_ms, danmaku = placed, "VOD ready");
    Ok(Applied::Done)
}

/// Places the room's danmaku received during the recording on its
/// timeline; returns how many. Redoing it after a crash adds nothing.
async fn import_danmaku(
    store: &dyn Store,
    asset: &VodAsset,
    end_ms: u64,
) -> Result<usize, StoreError> {
    let mut after = asset.danmaku_seq_start;
    let mut placed = 0;
    loop {
        let page = store
            .danmaku_after(&asset.room_id, after, IMPORT_PAGE)
            .await?;
        let Some(last) = page.last() else {
            break;
        };
        after = last.seq;
        let past_end = last.ts_ms > end_ms;
        let on_timeline: Vec<VodDanmaku> = page
            .into_iter()
            .filter(|item| (asset.media_origin_ms..=end_ms).contains(&item.ts_ms))
            .map(|item| {
                let offset_ms = item.ts_ms - asset.media_origin_ms;
                VodDanmaku {
                    segment: (offset_ms / VOD_DANMAKU_SEGMENT_MS) as u32,
                    offset_ms,
                    item,
                }
            })
            .collect();
        placed += on_timeline.len();
        store.put_vod_danmaku(&asset.vod_id, on_timeline).await?;
        if past_end {
            break;
        }
    }
    Ok(placed)
}
