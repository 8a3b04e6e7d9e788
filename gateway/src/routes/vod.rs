//! Recordings as VOD: the assets the VOD role built, their playlists
//! (signed URLs, as for live HLS) and the danmaku replayed over them.
//!
//! Access follows the room: whoever may watch a room live (subscribe
//! grant) may watch its recordings.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use protocol::v1::DanmakuItem;
use serde::{Deserialize, Serialize};
use storage::{VOD_DANMAKU_SEGMENT_MS, VodAsset, VodStatus};

use crate::auth::{Grant, Principal};
use crate::error::{ApiError, check_room_id};
use crate::routes::hls::{serve_recording_file, sign, url_expiry, verify};
use crate::state::AppState;

/// Most assets one listing returns.
const MAX_LIST: usize = 100;

#[derive(Debug, Serialize)]
pub struct Rendition {
    name: String,
    width: u32,
    height: u32,
    bitrate_bps: u32,
}

#[derive(Debug, Serialize)]
pub struct Vod {
    id: String,
    room_id: String,
    stream: String,
    /// `recording` while the stream is live, then `ready`.
    status: &'static str,
    /// Wall-clock time of media time 0 (ms since the epoch).
    started_at_ms: u64,
    duration_ms: u64,
    segments: u64,
    renditions: Vec<Rendition>,
    publisher: String,
    finished_at_ms: Option<u64>,
    /// Why the recording stopped before the stream did; absent if it did not.
    #[serde(skip_serializing_if = "String::is_empty")]
    error: String,
    /// How many 6-minute danmaku segments the timeline has.
    danmaku_segments: u64,
    /// How many 1-minute segments of avatar motion it has.
    avatar_segments: u64,
    playlist_url: String,
    poster_url: String,
    /// When the signed URLs stop working (seconds since the epoch).
    urls_expire_at: u64,
}

fn vod_json(app: &AppState, asset: VodAsset, expires: u64) -> Vod {
    let signature = sign(app, &format!("vod/{}", asset.vod_id), expires);
    let base = format!("/vod/signed/{expires}/{signature}/{}", asset.vod_id);
    Vod {
        status: asset.status.as_str(),
        started_at_ms: asset.media_origin_ms,
        duration_ms: asset.duration_ms,
        segments: asset.segments,
        renditions: asset
            .renditions
            .into_iter()
            .map(|r| Rendition {
                name: r.name,
                width: r.width,
                height: r.height,
                bitrate_bps: r.bitrate_bps,
            })
            .collect(),
        publisher: asset.publisher,
        finished_at_ms: asset.finished_ms,
        error: asset.error,
        danmaku_segments: asset.duration_ms.div_ceil(VOD_DANMAKU_SEGMENT_MS).max(1),
        avatar_segments: asset.duration_ms.div_ceil(VOD_AVATAR_SEGMENT_MS).max(1),
        playlist_url: format!("{base}/master.m3u8"),
        poster_url: format!("{base}/poster.jpg"),
        urls_expire_at: expires,
        id: asset.vod_id,
        room_id: asset.room_id,
        stream: asset.stream,
    }
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// Required unless the caller is an admin.
    room: Option<String>,
    limit: Option<usize>,
    #[serde(default, rename = "token")]
    _token: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct VodList {
    items: Vec<Vod>,
}

/// `GET /v1/vod?room={room}&limit=N`: a room's recordings, newest first.
pub async fn list(
    State(app): State<AppState>,
    principal: Principal,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<VodList>, ApiError> {
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(20);
    if limit == 0 || limit > MAX_LIST {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_LIST}"
        )));
    }
    match &query.room {
        Some(room) => {
            check_room_id(room)?;
            principal.require(Grant::Subscribe, room)?;
        }
        None => principal
            .require_admin()
            .map_err(|_| ApiError::bad_request("room is required: GET /v1/vod?room={room}"))?,
    }
    let assets = app.store.vod_assets(query.room.as_deref(), limit).await?;
    Ok(Json(VodList {
        items: assets
            .into_iter()
            .map(|a| vod_json(&app, a, url_expiry(&principal)))
            .collect(),
    }))
}

/// The asset, if the caller may watch its room.
async fn visible_asset(
    app: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<VodAsset, ApiError> {
    let asset = app
        .store
        .vod_asset(id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such recording"))?;
    principal.require(Grant::Subscribe, &asset.room_id)?;
    Ok(asset)
}

/// `GET /v1/vod/{id}`.
pub async fn get(
    State(app): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Vod>, ApiError> {
    let asset = visible_asset(&app, &principal, &id).await?;
    Ok(Json(vod_json(&app, asset, url_expiry(&principal))))
}

#[derive(Debug, Deserialize)]
pub struct DanmakuQuery {
    segment: Option<u32>,
    #[serde(default, rename = "token")]
    _token: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Replayed {
    /// Milliseconds from the start of the recording.
    offset_ms: u64,
    #[serde(flatten)]
    item: DanmakuItem,
}

#[derive(Debug, Serialize)]
pub struct DanmakuSegment {
    vod_id: String,
    segment: u32,
    segment_ms: u64,
    items: Vec<Replayed>,
}

/// `GET /v1/vod/{id}/danmaku?segment=N`: the danmaku of the 6-minute
/// segment N (offsets N*360000 to (N+1)*360000), by offset.
pub async fn danmaku(
    State(app): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    query: Result<Query<DanmakuQuery>, QueryRejection>,
) -> Result<Json<DanmakuSegment>, ApiError> {
    let Query(query) = query?;
    let segment = query.segment.unwrap_or(0);
    let asset = visible_asset(&app, &principal, &id).await?;
    check_segment(&asset, segment, VOD_DANMAKU_SEGMENT_MS)?;
    let placed = app.store.vod_danmaku(&id, segment).await?;
    // Copied when the recording finished; a moderator may have deleted
    // some since, and a deletion reaches the replay too.
    let seqs = placed.iter().map(|p| p.item.seq);
    let deleted = match (seqs.clone().min(), seqs.max()) {
        (Some(first), Some(last)) => {
            app.store
                .deleted_danmaku(&asset.room_id, first, last)
                .await?
        }
        _ => Vec::new(),
    };
    let items = placed
        .into_iter()
        .filter(|placed| deleted.binary_search(&placed.item.seq).is_err())
        .map(|placed| Replayed {
            offset_ms: placed.offset_ms,
            item: placed.item,
        })
        .collect();
    Ok(Json(DanmakuSegment {
        vod_id: id,
        segment,
        segment_ms: VOD_DANMAKU_SEGMENT_MS,
        items,
    }))
}

/// A finished recording's segments end with it (a live one's grow).
fn check_segment(asset: &VodAsset, segment: u32, segment_ms: u64) -> Result<(), ApiError> {
    let segments = asset.duration_ms.div_ceil(segment_ms).max(1);
    if u64::from(segment) >= segments && asset.status == VodStatus::Ready {
        return Err(ApiError::bad_request(format!(
            "segment must be 0 to {} for a recording of {} ms",
            segments - 1,
            asset.duration_ms
        ))
        .with_field("segments", segments));
    }
    Ok(())
}

/// Avatar motion is served a minute at a time: up to 3 600 frames.
pub const VOD_AVATAR_SEGMENT_MS: u64 = 60_000;

#[derive(Debug, Serialize)]
pub struct ReplayedMotion {
    /// Milliseconds from the start of the recording.
    offset_ms: u64,
    #[serde(flatten)]
    motion: protocol::v1::AvatarMotion,
}

#[derive(Debug, Serialize)]
pub struct AvatarSegment {
    vod_id: String,
    segment: u32,
    segment_ms: u64,
    frames: Vec<ReplayedMotion>,
}

/// `GET /v1/vod/{id}/avatar?segment=N`: the virtual host's motion during
/// minute N of the recording (the room's motion, whichever stream was
/// recorded), by offset. Frames are deltas with a full pose every second:
/// a player that seeks starts from the first `full` frame.
pub async fn avatar(
    State(app): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    query: Result<Query<DanmakuQuery>, QueryRejection>,
) -> Result<Json<AvatarSegment>, ApiError> {
    let Query(query) = query?;
    let segment = query.segment.unwrap_or(0);
    let asset = visible_asset(&app, &principal, &id).await?;
    check_segment(&asset, segment, VOD_AVATAR_SEGMENT_MS)?;
    let origin = asset.media_origin_ms;
    let from = origin + u64::from(segment) * VOD_AVATAR_SEGMENT_MS;
    let frames = match app.motion.clone() {
        Some(log) => {
            let room = asset.room_id.clone();
            tokio::task::spawn_blocking(move || log.read(&room, from, from + VOD_AVATAR_SEGMENT_MS))
                .await
                .map_err(|e| ApiError::internal(format!("reading avatar motion: {e}")))?
                .map_err(|e| ApiError::internal(format!("reading avatar motion: {e}")))?
        }
        None => Vec::new(),
    };
    Ok(Json(AvatarSegment {
        vod_id: id,
        segment,
        segment_ms: VOD_AVATAR_SEGMENT_MS,
        frames: frames
            .into_iter()
            .map(|motion| ReplayedMotion {
                offset_ms: motion.at_ms.saturating_sub(origin),
                motion,
            })
            .collect(),
    }))
}

/// `GET /vod/signed/{expires}/{signature}/{id}/{*file}`: a recording's
/// playlists, segments and poster.
pub async fn signed_file(
    State(app): State<AppState>,
    Path((expires, signature, id, file)): Path<(u64, String, String, String)>,
) -> Result<Response, ApiError> {
    verify(&app, &format!("vod/{id}"), expires, &signature)?;
    serve_recording_file(&app, &id, &file).await
}
