//! The room directory: partition `room_id`.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::outbox;
use super::writer::Written;
use crate::{OutboxEvent, Result, Room};

pub(crate) fn create(conn: &Connection, room: &Room, event: &OutboxEvent) -> Result<Written<bool>> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO rooms (room_id, title, created_ms, closed_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (room_id) DO NOTHING",
        )?
        .execute(params![
            room.room_id,
            room.title,
            room.created_ms,
            room.closed_ms
        ])?;
    if inserted == 0 {
        return Ok(Written::silent(false));
    }
    outbox::insert(conn, event)?;
    Ok(Written::announced(true))
}

pub(crate) fn close(
    conn: &Connection,
    room_id: &str,
    closed_ms: u64,
    event: &OutboxEvent,
) -> Result<Written<bool>> {
    let closed = conn
        .prepare_cached("UPDATE rooms SET closed_ms = ?2 WHERE room_id = ?1 AND closed_ms IS NULL")?
        .execute(params![room_id, closed_ms])?;
    if closed == 0 {
        return Ok(Written::silent(false));
    }
    outbox::insert(conn, event)?;
    Ok(Written::announced(true))
}

pub(crate) fn get(conn: &Connection, room_id: &str) -> Result<Option<Room>> {
    Ok(conn
        .prepare_cached(
            "SELECT room_id, title, created_ms, closed_ms FROM rooms WHERE room_id = ?1",
        )?
        .query_row([room_id], room_row)
        .optional()?)
}

pub(crate) fn open(conn: &Connection) -> Result<Vec<Room>> {
    let mut stmt = conn.prepare_cached(
        "SELECT room_id, title, created_ms, closed_ms FROM rooms
         WHERE closed_ms IS NULL ORDER BY created_ms, room_id",
    )?;
    let rooms = stmt.query_map([], room_row)?;
    Ok(rooms.collect::<rusqlite::Result<_>>()?)
}

fn room_row(row: &Row<'_>) -> rusqlite::Result<Room> {
    Ok(Room {
        room_id: row.get(0)?,
        title: row.get(1)?,
        created_ms: row.get(2)?,
        closed_ms: row.get(3)?,
    })
}
