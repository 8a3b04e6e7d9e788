//! Moderation: blocked terms (per room and global) and mutes.
//!
//! Room-scoped changes go through the RoomActor, which persists them and
//! swaps its filter in the same step; global terms go through the
//! RoomSupervisor, which tells every running room.

use actors::{RoomMsg, RoomSupervisorMsg};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use storage::TermScope;

use crate::auth::{Grant, Principal};
use crate::error::{ApiError, check_room_id};
use crate::routes::ApiJson;
use crate::state::AppState;

const MAX_TERM_CHARS: usize = 100;
const MAX_MUTE_S: u64 = 30 * 24 * 3600;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TermBody {
    term: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MuteBody {
    duration_s: u64,
}

fn check_term(term: &str) -> Result<String, ApiError> {
    let term = term.trim();
    let chars = term.chars().count();
    if chars == 0 || chars > MAX_TERM_CHARS {
        return Err(ApiError::bad_request(format!(
            "term must be 1 to {MAX_TERM_CHARS} characters"
        )));
    }
    Ok(term.to_owned())
}

/// The room's actor, for a principal holding `grant` in it.
pub(crate) async fn room_actor(
    app: &AppState,
    principal: &Principal,
    room_id: &str,
    grant: Grant,
) -> Result<ractor::ActorRef<RoomMsg>, ApiError> {
    check_room_id(room_id)?;
    principal.require(grant, room_id)?;
    app.acquire(room_id)
        .await?
        .actor()
        .ok_or_else(|| ApiError::unavailable("the room is restarting"))
}

pub async fn room_terms(
    State(app): State<AppState>,
    principal: Principal,
    Path(room_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let actor = room_actor(&app, &principal, &room_id, Grant::Moderate).await?;
    let terms = ractor::call_t!(actor, RoomMsg::RoomTerms, 10_000)?;
    Ok(Json(json!({ "terms": terms })))
}

pub async fn add_room_term(
    State(app): State<AppState>,
    principal: Principal,
    Path(room_id): Path<String>,
    ApiJson(body): ApiJson<TermBody>,
) -> Result<StatusCode, ApiError> {
    set_room_term(app, principal, room_id, &body.term, true).await
}

pub async fn remove_room_term(
    State(app): State<AppState>,
    principal: Principal,
    Path((room_id, term)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    set_room_term(app, principal, room_id, &term, false).await
}

async fn set_room_term(
    app: AppState,
    principal: Principal,
    room_id: String,
    term: &str,
    add: bool,
) -> Result<StatusCode, ApiError> {
    let term = check_term(term)?;
    let actor = room_actor(&app, &principal, &room_id, Grant::Moderate).await?;
    let by = principal.user_id().to_owned();
    let changed = ractor::call_t!(
        actor,
        |reply| RoomMsg::SetRoomTerm {
            term,
            add,
            by,
            reply
        },
        10_000
    )??;
    term_status(changed, add)
}

pub async fn global_terms(
    State(app): State<AppState>,
    principal: Principal,
) -> Result<Json<Value>, ApiError> {
    principal.require_admin()?;
    let terms = app.store.blocked_terms(&TermScope::Global).await?;
    Ok(Json(json!({ "terms": terms })))
}

pub async fn add_global_term(
    State(app): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<TermBody>,
) -> Result<StatusCode, ApiError> {
    set_global_term(app, principal, &body.term, true).await
}

pub async fn remove_global_term(
    State(app): State<AppState>,
    principal: Principal,
    Path(term): Path<String>,
) -> Result<StatusCode, ApiError> {
    set_global_term(app, principal, &term, false).await
}

async fn set_global_term(
    app: AppState,
    principal: Principal,
    term: &str,
    add: bool,
) -> Result<StatusCode, ApiError> {
    principal.require_admin()?;
    let term = check_term(term)?;
    let by = principal.user_id().to_owned();
    let changed = ractor::call_t!(
        app.actors.rooms(),
        |reply| RoomSupervisorMsg::GlobalTerm {
            term,
            add,
            by,
            reply
        },
        10_000
    )??;
    term_status(changed, add)
}

/// Adding a new term: 201; adding an existing one: 200; removing: 204;
/// removing an absent one: 404.
fn term_status(changed: bool, add: bool) -> Result<StatusCode, ApiError> {
    match (add, changed) {
        (true, true) => Ok(StatusCode::CREATED),
        (true, false) => Ok(StatusCode::OK),
        (false, true) => Ok(StatusCode::NO_CONTENT),
        (false, false) => Err(ApiError::not_found("term not found")),
    }
}

pub async fn mute(
    State(app): State<AppState>,
    principal: Principal,
    Path((room_id, user_id)): Path<(String, String)>,
    ApiJson(body): ApiJson<MuteBody>,
) -> Result<Json<Value>, ApiError> {
    if body.duration_s == 0 || body.duration_s > MAX_MUTE_S {
        return Err(ApiError::bad_request(format!(
            "duration_s must be 1 to {MAX_MUTE_S}"
        )));
    }
    let actor = room_actor(&app, &principal, &room_id, Grant::Moderate).await?;
    let until_ms = actors::now_ms() + body.duration_s * 1000;
    let by = principal.user_id().to_owned();
    ractor::call_t!(
        actor,
        |reply| RoomMsg::Mute {
            user_id,
            until_ms: Some(until_ms),
            by,
            reply
        },
        10_000
    )??;
    Ok(Json(json!({ "until_ms": until_ms })))
}

pub async fn unmute(
    State(app): State<AppState>,
    principal: Principal,
    Path((room_id, user_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let actor = room_actor(&app, &principal, &room_id, Grant::Moderate).await?;
    let by = principal.user_id().to_owned();
    ractor::call_t!(
        actor,
        |reply| RoomMsg::Mute {
            user_id,
            until_ms: None,
            by,
            reply
        },
        10_000
    )??;
    Ok(StatusCode::NO_CONTENT)
}
