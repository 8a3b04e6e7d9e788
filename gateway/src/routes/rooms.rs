//! Rooms: create, list, inspect, delete.

use actors::RoomSupervisorMsg;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use storage::Room;

use crate::auth::Principal;
use crate::error::{ApiError, check_room_id};
use crate::routes::ApiJson;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRoom {
    room_id: String,
    #[serde(default)]
    title: String,
}

fn room_json(room: &Room, viewers: Option<u64>) -> Value {
    json!({
        "room_id": room.room_id,
        "title": room.title,
        "created_ms": room.created_ms,
        "closed_ms": room.closed_ms,
        "live": viewers.is_some(),
        "viewers": viewers.unwrap_or(0),
    })
}

pub async fn create(
    State(app): State<AppState>,
    principal: Principal,
    ApiJson(req): ApiJson<CreateRoom>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    principal.require_admin()?;
    check_room_id(&req.room_id)?;
    if req.title.chars().count() > 200 {
        return Err(ApiError::bad_request(
            "title must be at most 200 characters",
        ));
    }
    let CreateRoom { room_id, title } = req;
    let room = ractor::call_t!(
        app.actors.rooms(),
        |reply| RoomSupervisorMsg::Create {
            room_id,
            title,
            reply
        },
        10_000
    )??;
    Ok((StatusCode::CREATED, Json(room_json(&room, None))))
}

pub async fn list(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    let rooms = app.store.open_rooms().await?;
    let running = ractor::call_t!(app.actors.rooms(), RoomSupervisorMsg::Running, 10_000)?;
    let rooms: Vec<Value> = rooms
        .iter()
        .map(|room| room_json(room, running.get(&room.room_id).copied()))
        .collect();
    Ok(Json(json!({ "rooms": rooms })))
}

pub async fn get(
    State(app): State<AppState>,
    Path(room_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_room_id(&room_id)?;
    let room = app
        .store
        .room(&room_id)
        .await?
        .ok_or_else(|| ApiError::not_found("room not found"))?;
    let running = ractor::call_t!(app.actors.rooms(), RoomSupervisorMsg::Running, 10_000)?;
    Ok(Json(room_json(&room, running.get(&room_id).copied())))
}

pub async fn delete(
    State(app): State<AppState>,
    principal: Principal,
    Path(room_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    principal.require_admin()?;
    check_room_id(&room_id)?;
    ractor::call_t!(
        app.actors.rooms(),
        |reply| RoomSupervisorMsg::Close { room_id, reply },
        15_000
    )??;
    Ok(StatusCode::NO_CONTENT)
}
