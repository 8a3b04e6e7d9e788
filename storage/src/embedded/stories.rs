//! Story graphs (partition graph_id, clustered by version; immutable once
//! written) and each room's story run (partition room_id: the runtime's
//! state as one JSON document, replaced whole).

use rusqlite::{Connection, OptionalExtension, params};

use super::outbox;
use super::writer::Written;
use crate::model::{OutboxEvent, StoryGraphPut};
use crate::{Result, StoreError};

fn version(version: u32) -> i64 {
    i64::from(version)
}

/// Insert-if-absent (an LWT in Scylla): a version is written once.
pub(crate) fn put_graph(
    conn: &Connection,
    graph_id: &str,
    graph_version: u32,
    spec: &str,
    created_ms: u64,
) -> Result<Written<StoryGraphPut>> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO story_graphs (graph_id, version, spec, created_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (graph_id, version) DO NOTHING",
        )?
        .execute(params![graph_id, version(graph_version), spec, created_ms])?;
    if inserted == 1 {
        return Ok(Written::silent(StoryGraphPut::Created));
    }
    let existing = graph(conn, graph_id, graph_version)?.ok_or_else(|| {
        StoreError::Corrupt(format!("story graph {graph_id} v{graph_version} vanished"))
    })?;
    Ok(Written::silent(if existing == spec {
        StoryGraphPut::Unchanged
    } else {
        StoryGraphPut::Conflict
    }))
}

pub(crate) fn graph(
    conn: &Connection,
    graph_id: &str,
    graph_version: u32,
) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT spec FROM story_graphs WHERE graph_id = ?1 AND version = ?2")?
        .query_row(params![graph_id, version(graph_version)], |row| row.get(0))
        .optional()?)
}

/// Replaces the room's run state, with the events its change produced, in
/// one transaction.
pub(crate) fn save_run(
    conn: &Connection,
    room_id: &str,
    state: &str,
    updated_ms: u64,
    events: &[OutboxEvent],
) -> Result<Written<()>> {
    conn.prepare_cached(
        "INSERT INTO story_runs (room_id, state, updated_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (room_id) DO UPDATE SET state = excluded.state, updated_ms = excluded.updated_ms",
    )?
    .execute(params![room_id, state, updated_ms])?;
    for event in events {
        outbox::insert(conn, event)?;
    }
    Ok(if events.is_empty() {
        Written::silent(())
    } else {
        Written::announced(())
    })
}

pub(crate) fn run(conn: &Connection, room_id: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT state FROM story_runs WHERE room_id = ?1")?
        .query_row(params![room_id], |row| row.get(0))
        .optional()?)
}

pub(crate) fn delete_run(conn: &Connection, room_id: &str) -> Result<Written<bool>> {
    let deleted = conn
        .prepare_cached("DELETE FROM story_runs WHERE room_id = ?1")?
        .execute(params![room_id])?;
    Ok(Written::silent(deleted == 1))
}
