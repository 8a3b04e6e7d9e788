//! Blocked terms (partition: scope) and mutes (partition: room_id).

use rusqlite::{Connection, params};

use super::outbox;
use super::writer::Written;
use crate::{Mute, OutboxEvent, Result, TermScope};

pub(crate) fn terms(conn: &Connection, scope: &TermScope) -> Result<Vec<String>> {
    let mut stmt =
        conn.prepare_cached("SELECT term FROM blocked_terms WHERE scope = ?1 ORDER BY term")?;
    let terms = stmt.query_map([scope.partition_key()], |row| row.get(0))?;
    Ok(terms.collect::<rusqlite::Result<_>>()?)
}

pub(crate) fn add_term(
    conn: &Connection,
    scope: &TermScope,
    term: &str,
    event: &OutboxEvent,
) -> Result<Written<bool>> {
    let added = conn
        .prepare_cached(
            "INSERT INTO blocked_terms (scope, term) VALUES (?1, ?2)
             ON CONFLICT (scope, term) DO NOTHING",
        )?
        .execute([scope.partition_key(), term])?;
    announce_if(conn, added > 0, event)
}

pub(crate) fn remove_term(
    conn: &Connection,
    scope: &TermScope,
    term: &str,
    event: &OutboxEvent,
) -> Result<Written<bool>> {
    let removed = conn
        .prepare_cached("DELETE FROM blocked_terms WHERE scope = ?1 AND term = ?2")?
        .execute([scope.partition_key(), term])?;
    announce_if(conn, removed > 0, event)
}

fn announce_if(conn: &Connection, changed: bool, event: &OutboxEvent) -> Result<Written<bool>> {
    if !changed {
        return Ok(Written::silent(false));
    }
    outbox::insert(conn, event)?;
    Ok(Written::announced(true))
}

/// Expired rows are filtered, not deleted: an expiry needs no write, and the
/// Scylla table lets them go by TTL.
pub(crate) fn mutes(conn: &Connection, room_id: &str, now_ms: u64) -> Result<Vec<Mute>> {
    let mut stmt = conn.prepare_cached(
        "SELECT user_id, until_ms FROM mutes
         WHERE room_id = ?1 AND until_ms > ?2 ORDER BY user_id",
    )?;
    let mutes = stmt.query_map(params![room_id, now_ms], |row| {
        Ok(Mute {
            user_id: row.get(0)?,
            until_ms: row.get(1)?,
        })
    })?;
    Ok(mutes.collect::<rusqlite::Result<_>>()?)
}

pub(crate) fn set_mute(
    conn: &Connection,
    room_id: &str,
    user_id: &str,
    until_ms: Option<u64>,
    event: &OutboxEvent,
) -> Result<Written<()>> {
    match until_ms {
        Some(until_ms) => conn
            .prepare_cached(
                "INSERT INTO mutes (room_id, user_id, until_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (room_id, user_id) DO UPDATE SET until_ms = excluded.until_ms",
            )?
            .execute(params![room_id, user_id, until_ms])?,
        None => conn
            .prepare_cached("DELETE FROM mutes WHERE room_id = ?1 AND user_id = ?2")?
            .execute([room_id, user_id])?,
    };
    outbox::insert(conn, event)?;
    Ok(Written::announced(()))
}
