//! Danmaku: partition `(room_id, bucket)`, clustered by `seq`, plus the
//! per-room head that bounds every bucket walk.
//!
//! Reads walk buckets one partition at a time, exactly as the Scylla backend
//! must: a catch-up read starts at the bucket of `after_seq + 1` and moves
//! forward until it has `limit` rows or passes the head; a backlog read
//! starts at the head's bucket and moves back.

use prost::Message;
use protocol::v1::DanmakuItem;
use rusqlite::{Connection, OptionalExtension, params};

use super::outbox;
use super::sql_limit;
use super::writer::Written;
use crate::{OutboxEvent, Result, StoreError, danmaku_bucket};

pub(crate) fn append(
    conn: &Connection,
    room_id: &str,
    items: &[DanmakuItem],
    event: &OutboxEvent,
) -> Result<Written<()>> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO danmaku (room_id, bucket, seq, deleted, item) VALUES (?1, ?2, ?3, 0, ?4)",
    )?;
    for item in items {
        // A plain INSERT: a duplicate (room, seq) violates the primary key
        // and fails this command, which the writer rolls back alone.
        insert.execute(params![
            room_id,
            danmaku_bucket(item.seq),
            item.seq,
            item.encode_to_vec()
        ])?;
    }
    if let Some(last) = items.iter().map(|item| item.seq).max() {
        conn.prepare_cached(
            "INSERT INTO danmaku_head (room_id, last_seq) VALUES (?1, ?2)
             ON CONFLICT (room_id) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)",
        )?
        .execute(params![room_id, last])?;
    }
    outbox::insert(conn, event)?;
    Ok(Written::announced(()))
}

/// The highest seq ever appended; deletes leave it alone.
pub(crate) fn last_seq(conn: &Connection, room_id: &str) -> Result<u64> {
    Ok(conn
        .prepare_cached("SELECT last_seq FROM danmaku_head WHERE room_id = ?1")?
        .query_row([room_id], |row| row.get(0))
        .optional()?
        .unwrap_or(0))
}

pub(crate) fn after(
    conn: &Connection,
    room_id: &str,
    after_seq: u64,
    limit: usize,
) -> Result<Vec<DanmakuItem>> {
    let last = last_seq(conn, room_id)?;
    let Some(first) = after_seq.checked_add(1) else {
        return Ok(Vec::new());
    };
    if limit == 0 || first > last {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare_cached(
        "SELECT seq, item FROM danmaku
         WHERE room_id = ?1 AND bucket = ?2 AND seq >= ?3 AND deleted = 0
         ORDER BY seq LIMIT ?4",
    )?;
    let mut out = Vec::with_capacity(limit.min(1024));
    for bucket in danmaku_bucket(first)..=danmaku_bucket(last) {
        let remaining = limit - out.len();
        let rows = stmt.query_map(
            params![room_id, bucket, first, sql_limit(remaining)],
            |row| Ok((row.get::<_, u64>(0)?, row.get::<_, Vec<u8>>(1)?)),
        )?;
        for row in rows {
            let (seq, bytes) = row?;
            out.push(decode(room_id, seq, &bytes)?);
        }
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

/// Seqs in `first..=last` that moderators deleted: the buckets of the
/// range, one partition at a time.
pub(crate) fn deleted_between(
    conn: &Connection,
    room_id: &str,
    first: u64,
    last: u64,
) -> Result<Vec<u64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq FROM danmaku
         WHERE room_id = ?1 AND bucket = ?2 AND seq BETWEEN ?3 AND ?4 AND deleted = 1
         ORDER BY seq",
    )?;
    let mut out = Vec::new();
    if first > last {
        return Ok(out);
    }
    for bucket in danmaku_bucket(first)..=danmaku_bucket(last) {
        let rows = stmt.query_map(params![room_id, bucket, first, last], |row| {
            row.get::<_, u64>(0)
        })?;
        for seq in rows {
            out.push(seq?);
        }
    }
    Ok(out)
}

pub(crate) fn recent(conn: &Connection, room_id: &str, limit: usize) -> Result<Vec<DanmakuItem>> {
    let last = last_seq(conn, room_id)?;
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare_cached(
        "SELECT seq, item FROM danmaku
         WHERE room_id = ?1 AND bucket = ?2 AND deleted = 0
         ORDER BY seq DESC LIMIT ?3",
    )?;
    let mut newest_first = Vec::with_capacity(limit.min(1024));
    for bucket in (0..=danmaku_bucket(last)).rev() {
        let remaining = limit - newest_first.len();
        let rows = stmt.query_map(params![room_id, bucket, sql_limit(remaining)], |row| {
            Ok((row.get::<_, u64>(0)?, row.get::<_, Vec<u8>>(1)?))
        })?;
        for row in rows {
            let (seq, bytes) = row?;
            newest_first.push(decode(room_id, seq, &bytes)?);
        }
        if newest_first.len() >= limit {
            break;
        }
    }
    newest_first.reverse();
    Ok(newest_first)
}

pub(crate) fn delete(
    conn: &Connection,
    room_id: &str,
    seq: u64,
    event: &OutboxEvent,
) -> Result<Written<bool>> {
    let deleted = conn
        .prepare_cached(
            "UPDATE danmaku SET deleted = 1
             WHERE room_id = ?1 AND bucket = ?2 AND seq = ?3 AND deleted = 0",
        )?
        .execute(params![room_id, danmaku_bucket(seq), seq])?;
    if deleted == 0 {
        return Ok(Written::silent(false));
    }
    outbox::insert(conn, event)?;
    Ok(Written::announced(true))
}

/// The key column is the authority on `seq`; the body carries the rest.
fn decode(room_id: &str, seq: u64, bytes: &[u8]) -> Result<DanmakuItem> {
    let mut item = DanmakuItem::decode(bytes)
        .map_err(|e| StoreError::Corrupt(format!("danmaku {room_id}/{seq}: {e}")))?;
    item.seq = seq;
    Ok(item)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_undecodable_body_is_corrupt_not_a_panic() {
        let err = decode("r1", 5, &[0xff, 0xff, 0xff]).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(m) if m.contains("r1/5")));
    }

    #[test]
    fn the_key_seq_wins_over_the_body() {
        let body = DanmakuItem {
            seq: 1,
            text: "hi".into(),
            ..Default::default()
        }
        .encode_to_vec();
        let item = decode("r1", 9, &body).unwrap();
        assert_eq!((item.seq, item.text.as_str()), (9, "hi"));
    }
}
