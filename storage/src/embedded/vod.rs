//! VOD assets and their danmaku replay: `vod_assets` partitioned by the
//! vod id, `vod_danmaku` by `(vod_id, segment)` clustered by offset.

use prost::Message;
use protocol::v1::DanmakuItem;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::writer::Written;
use crate::{Result, StoreError, VodAsset, VodDanmaku, VodRendition, VodStatus};

/// Renditions as one text column, `name:width:height:bitrate` joined by
/// commas (a list of a user type in CQL). Names are `[A-Za-z0-9_-]`.
fn renditions_text(renditions: &[VodRendition]) -> String {
    renditions
        .iter()
        .map(|r| format!("{}:{}:{}:{}", r.name, r.width, r.height, r.bitrate_bps))
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_renditions(text: &str) -> Vec<VodRendition> {
    text.split(',')
        .filter_map(|entry| {
            let mut fields = entry.split(':');
            Some(VodRendition {
                name: fields.next()?.to_owned(),
                width: fields.next()?.parse().ok()?,
                height: fields.next()?.parse().ok()?,
                bitrate_bps: fields.next()?.parse().ok()?,
            })
        })
        .collect()
}

/// An upsert that never goes back: a `ready` asset is not made `recording`
/// again and its final duration stands, and while recording, segment
/// counts and durations only grow. Two VOD instances applying events for
/// one asset at once (or one applying a stale redelivery) cannot undo each
/// other. Scylla: the same as a conditional update
/// (`... IF status = 'recording'`).
pub(crate) fn put_asset(conn: &Connection, asset: &VodAsset) -> Result<Written<()>> {
    conn.prepare_cached(
        "INSERT INTO vod_assets (vod_id, room_id, stream, status, media_origin_ms,
             duration_ms, segments, renditions, danmaku_seq_start, publisher, finished_ms, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
         ON CONFLICT (vod_id) DO UPDATE SET
             status = excluded.status,
             duration_ms = CASE WHEN excluded.status = 'ready' THEN excluded.duration_ms
                                ELSE max(duration_ms, excluded.duration_ms) END,
             segments = max(segments, excluded.segments),
             finished_ms = excluded.finished_ms,
             error = excluded.error
         WHERE vod_assets.status = 'recording'",
    )?
    .execute(params![
        asset.vod_id,
        asset.room_id,
        asset.stream,
        asset.status.as_str(),
        asset.media_origin_ms,
        asset.duration_ms,
        asset.segments,
        renditions_text(&asset.renditions),
        asset.danmaku_seq_start,
        asset.publisher,
        asset.finished_ms,
        asset.error,
    ])?;
    Ok(Written::silent(()))
}

const ASSET_COLUMNS: &str = "vod_id, room_id, stream, status, media_origin_ms, duration_ms,
    segments, renditions, danmaku_seq_start, publisher, finished_ms, error";

fn asset_of(row: &Row) -> rusqlite::Result<VodAsset> {
    let status: String = row.get(3)?;
    let renditions: String = row.get(7)?;
    Ok(VodAsset {
        vod_id: row.get(0)?,
        room_id: row.get(1)?,
        stream: row.get(2)?,
        status: VodStatus::parse(&status).unwrap_or(VodStatus::Recording),
        media_origin_ms: row.get(4)?,
        duration_ms: row.get(5)?,
        segments: row.get(6)?,
        renditions: parse_renditions(&renditions),
        danmaku_seq_start: row.get(8)?,
        publisher: row.get(9)?,
        finished_ms: row.get(10)?,
        error: row.get(11)?,
    })
}

pub(crate) fn asset(conn: &Connection, vod_id: &str) -> Result<Option<VodAsset>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {ASSET_COLUMNS} FROM vod_assets WHERE vod_id = ?1"
        ))?
        .query_row([vod_id], asset_of)
        .optional()?)
}

pub(crate) fn assets(
    conn: &Connection,
    room_id: Option<&str>,
    limit: usize,
) -> Result<Vec<VodAsset>> {
    let limit = super::sql_limit(limit);
    let rows = match room_id {
        Some(room) => conn
            .prepare_cached(&format!(
                "SELECT {ASSET_COLUMNS} FROM vod_assets WHERE room_id = ?1
                 ORDER BY media_origin_ms DESC LIMIT ?2"
            ))?
            .query_map(params![room, limit], asset_of)?
            .collect::<rusqlite::Result<Vec<_>>>()?,
        None => conn
            .prepare_cached(&format!(
                "SELECT {ASSET_COLUMNS} FROM vod_assets ORDER BY media_origin_ms DESC LIMIT ?1"
            ))?
            .query_map(params![limit], asset_of)?
            .collect::<rusqlite::Result<Vec<_>>>()?,
    };
    Ok(rows)
}

pub(crate) fn put_danmaku(
    conn: &Connection,
    vod_id: &str,
    items: &[VodDanmaku],
) -> Result<Written<usize>> {
    let mut insert = conn.prepare_cached(
        "INSERT OR IGNORE INTO vod_danmaku (vod_id, segment, offset_ms, seq, item)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let mut added = 0;
    for placed in items {
        added += insert.execute(params![
            vod_id,
            placed.segment,
            placed.offset_ms,
            placed.item.seq,
            placed.item.encode_to_vec()
        ])?;
    }
    Ok(Written::silent(added))
}

pub(crate) fn danmaku(conn: &Connection, vod_id: &str, segment: u32) -> Result<Vec<VodDanmaku>> {
    let mut stmt = conn.prepare_cached(
        "SELECT offset_ms, item FROM vod_danmaku WHERE vod_id = ?1 AND segment = ?2
         ORDER BY offset_ms, seq",
    )?;
    let rows = stmt.query_map(params![vod_id, segment], |row| {
        Ok((row.get::<_, u64>(0)?, row.get::<_, Vec<u8>>(1)?))
    })?;
    rows.map(|row| {
        let (offset_ms, bytes) = row?;
        let item = DanmakuItem::decode(bytes.as_slice())
            .map_err(|e| StoreError::Corrupt(format!("vod danmaku item: {e}")))?;
        Ok(VodDanmaku {
            segment,
            offset_ms,
            item,
        })
    })
    .collect()
}
