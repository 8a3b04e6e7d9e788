//! The outbox table: events inserted by the domain writes, drained by the
//! relay in position order.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rusqlite::{Connection, params};

use super::sql_limit;
use crate::{OutboxEvent, OutboxRow, Result};

/// Inserts `event` on the caller's savepoint, so it commits or rolls back
/// with the change it announces. A reused event id fails the whole command:
/// ids are what the bus deduplicates on, and a reused one would be dropped.
pub(crate) fn insert(conn: &Connection, event: &OutboxEvent) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO outbox (id, subject, payload, created_ms) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        event.id,
        event.subject,
        event.payload.as_ref(),
        stored_at_ms()
    ])?;
    Ok(())
}

/// When the row was stored, for an operator judging relay lag. It decides
/// nothing, which is why the store may read the clock here and nowhere else.
fn stored_at_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(crate) fn pending(conn: &Connection, limit: usize) -> Result<Vec<OutboxRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT position, id, subject, payload FROM outbox ORDER BY position LIMIT ?1",
    )?;
    let rows = stmt.query_map([sql_limit(limit)], |row| {
        Ok(OutboxRow {
            position: row.get(0)?,
            event: OutboxEvent {
                id: row.get(1)?,
                subject: row.get(2)?,
                payload: Bytes::from(row.get::<_, Vec<u8>>(3)?),
            },
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(crate) fn remove(conn: &Connection, positions: &[u64]) -> Result<()> {
    let mut stmt = conn.prepare_cached("DELETE FROM outbox WHERE position = ?1")?;
    for position in positions {
        stmt.execute([position])?;
    }
    Ok(())
}

pub(crate) fn depth(conn: &Connection) -> Result<u64> {
    Ok(conn
        .prepare_cached("SELECT COUNT(*) FROM outbox")?
        .query_row([], |row| row.get(0))?)
}
