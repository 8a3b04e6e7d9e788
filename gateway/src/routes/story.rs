//! Story graphs and a room's story run (docs/story.md, docs/protocol.md).
//!
//! Graphs are uploaded by admins, validated whole (every problem listed
//! with its node), and stored per version, immutable. Moderators run one
//! in a room and steer it; anyone in the room reads where it stands.

use std::sync::Arc;

use actors::{RoomMsg, StoryCommand, StoryView};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use interactive::story::StoryGraph;
use serde::Deserialize;
use serde_json::{Value, json};
use storage::StoryGraphPut;

use crate::auth::{Grant, Principal};
use crate::error::ApiError;
use crate::routes::ApiJson;
use crate::routes::moderation::room_actor;
use crate::state::AppState;

/// `POST /v1/stories`: the graph's JSON as the body.
pub async fn upload(
    State(app): State<AppState>,
    principal: Principal,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    principal.require_admin()?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("the graph must be UTF-8 JSON"))?;
    let graph = StoryGraph::from_json(text).map_err(|problems| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_story",
            format!("the graph has {} problem(s)", problems.len()),
        )
        .with_field("problems", json!(problems))
    })?;
    let (id, version) = (graph.id.clone(), graph.version);
    let spec = serde_json::to_string(graph.spec())
        .map_err(|e| ApiError::internal(format!("re-encoding the graph: {e}")))?;
    let status = match app
        .store
        .put_story_graph(&id, version, spec, actors::now_ms())
        .await?
    {
        StoryGraphPut::Created => StatusCode::CREATED,
        StoryGraphPut::Unchanged => StatusCode::OK,
        StoryGraphPut::Conflict => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "version_exists",
                format!("{id} v{version} exists with other content: upload it as a new version"),
            ));
        }
    };
    let nodes = graph.nodes.len();
    Ok((
        status,
        Json(json!({ "id": id, "version": version, "nodes": nodes })),
    ))
}

/// `GET /v1/stories/{id}/{version}`: the graph as stored.
pub async fn get(
    State(app): State<AppState>,
    principal: Principal,
    Path((id, version)): Path<(String, u32)>,
) -> Result<Json<Value>, ApiError> {
    principal.require_admin()?;
    let spec = app
        .store
        .story_graph(&id, version)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no story {id} v{version}")))?;
    let spec: Value = serde_json::from_str(&spec)
        .map_err(|e| ApiError::internal(format!("stored graph unreadable: {e}")))?;
    Ok(Json(spec))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartBody {
    graph_id: String,
    version: u32,
    /// The tie-break draws' seed; a random one when absent (it is in every
    /// `vote_closed` that used it).
    #[serde(default)]
    seed: Option<u64>,
}

/// `POST /v1/rooms/{room}/story`: starts (or restarts) a run.
pub async fn start(
    State(app): State<AppState>,
    principal: Principal,
    Path(room_id): Path<String>,
    ApiJson(body): ApiJson<StartBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let actor = room_actor(&app, &principal, &room_id, Grant::Moderate).await?;
    let spec = app
        .store
        .story_graph(&body.graph_id, body.version)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!("no story {} v{}", body.graph_id, body.version))
        })?;
    let graph = StoryGraph::from_json(&spec).map_err(|problems| {
        ApiError::internal(format!("a stored graph no longer validates: {problems:?}"))
    })?;
    let graph = playable(&app, graph).await?;
    let seed = body.seed.unwrap_or_else(rand::random);
    let command = StoryCommand::Start {
        graph: Arc::new(graph),
        seed,
    };
    let view = ractor::call_t!(actor, |reply| RoomMsg::Story(command, reply), 10_000)??;
    Ok((StatusCode::CREATED, Json(view_json(view))))
}

/// The graph back if every clip it plays can be played here. Clips may
/// arrive after the graph, so they are checked at each start, all of them,
/// off the async workers (each is opened and probed).
async fn playable(app: &AppState, graph: StoryGraph) -> Result<StoryGraph, ApiError> {
    let Some(programs) = app.programs.clone() else {
        return Ok(graph);
    };
    let (graph, problems) = tokio::task::spawn_blocking(move || {
        let problems = programs.check(&graph);
        (graph, problems)
    })
    .await
    .map_err(|e| ApiError::internal(format!("checking clips: {e}")))?;
    if problems.is_empty() {
        return Ok(graph);
    }
    Err(ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "clips_unplayable",
        format!("{} clip(s) cannot be played", problems.len()),
    )
    .with_field("problems", json!(problems)))
}

/// `GET /v1/rooms/{room}/story`: where the run stands, for viewers and
/// moderators of the room.
pub async fn show(
    State(app): State<AppState>,
    principal: Principal,
    Path(room_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let grant = if principal.has(Grant::Moderate, &room_id) {
        Grant::Moderate
    } else {
        Grant::Subscribe
    };
    let actor = room_actor(&app, &principal, &room_id, grant).await?;
    steer(actor, StoryCommand::Show).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChooseBody {
    choice: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JumpBody {
    node: String,
}

/// `POST /v1/rooms/{room}/story/pause`.
pub async fn pause(
    State(app): State<AppState>,
    principal: Principal,
    Path(room_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let actor = room_actor(&app, &principal, &room_id, Grant::Moderate).await?;
    steer(actor, StoryCommand::Pause).await
}

/// `POST /v1/rooms/{room}/story/resume`.
pub async fn resume(
    State(app): State<AppState>,
    principal: Principal,
    Path(room_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let actor = room_actor(&app, &principal, &room_id, Grant::Moderate).await?;
    steer(actor, StoryCommand::Resume).await
}

/// `POST /v1/rooms/{room}/story/choose` `{"choice"}`: takes a choice now.
pub async fn choose(
    State(app): State<AppState>,
    principal: Principal,
    Path(room_id): Path<String>,
    ApiJson(body): ApiJson<ChooseBody>,
) -> Result<Json<Value>, ApiError> {
    let actor = room_actor(&app, &principal, &room_id, Grant::Moderate).await?;
    steer(actor, StoryCommand::Choose(body.choice)).await
}

/// `POST /v1/rooms/{room}/story/jump` `{"node"}`: moves to any node.
pub async fn jump(
    State(app): State<AppState>,
    principal: Principal,
    Path(room_id): Path<String>,
    ApiJson(body): ApiJson<JumpBody>,
) -> Result<Json<Value>, ApiError> {
    let actor = room_actor(&app, &principal, &room_id, Grant::Moderate).await?;
    steer(actor, StoryCommand::Jump(body.node)).await
}

/// `DELETE /v1/rooms/{room}/story`: stops the run and forgets it.
pub async fn stop(
    State(app): State<AppState>,
    principal: Principal,
    Path(room_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let actor = room_actor(&app, &principal, &room_id, Grant::Moderate).await?;
    ractor::call_t!(
        actor,
        |reply| RoomMsg::Story(StoryCommand::Stop, reply),
        10_000
    )??;
    Ok(StatusCode::NO_CONTENT)
}

async fn steer(
    actor: ractor::ActorRef<RoomMsg>,
    command: StoryCommand,
) -> Result<Json<Value>, ApiError> {
    let view = ractor::call_t!(actor, |reply| RoomMsg::Story(command, reply), 10_000)??;
    Ok(Json(view_json(view)))
}

fn view_json(view: Option<StoryView>) -> Value {
    view.map_or(Value::Null, |view| json!(view))
}
