//! Danmaku history (for reconnects, late joiners and VOD) and deletion.

use actors::RoomMsg;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use protocol::v1::{ServerFrame, server_frame::Frame};
use serde::Deserialize;

use crate::auth::{Grant, Principal};
use crate::error::{ApiError, check_room_id};
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    #[serde(default)]
    after_seq: u64,
    limit: Option<usize>,
}

/// `{"items":[...]}`: each item has the shape of a `danmaku` frame.
#[derive(Debug, serde::Serialize)]
pub struct History {
    items: Vec<ServerFrame>,
}

pub async fn history(
    State(app): State<AppState>,
    principal: Principal,
    Path(room_id): Path<String>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<History>, ApiError> {
    check_room_id(&room_id)?;
    principal.require(Grant::Subscribe, &room_id)?;
    let Query(query) = query?;
    let max = app.config.history_limit;
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > max {
        return Err(ApiError::bad_request(format!("limit must be 1 to {max}")));
    }
    if app.store.room(&room_id).await?.is_none() {
        return Err(ApiError::not_found("room not found"));
    }
    let items = app
        .store
        .danmaku_after(&room_id, query.after_seq, limit)
        .await?;
    let items = items
        .into_iter()
        .map(|item| ServerFrame {
            frame: Some(Frame::Danmaku(item)),
        })
        .collect();
    Ok(Json(History { items }))
}

pub async fn delete(
    State(app): State<AppState>,
    principal: Principal,
    Path((room_id, seq)): Path<(String, u64)>,
) -> Result<StatusCode, ApiError> {
    check_room_id(&room_id)?;
    principal.require(Grant::Moderate, &room_id)?;
    let actor = app
        .acquire(&room_id)
        .await?
        .actor()
        .ok_or_else(|| ApiError::unavailable("the room is restarting"))?;
    let by = principal.user_id().to_owned();
    ractor::call_t!(
        actor,
        |reply| RoomMsg::DeleteDanmaku { seq, by, reply },
        10_000
    )??;
    Ok(StatusCode::NO_CONTENT)
}
