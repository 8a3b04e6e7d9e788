//! `POST /v1/tokens`: the admin mints access tokens.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{Claims, Grant, Principal, unix_now};
use crate::error::{ApiError, check_room_id};
use crate::routes::ApiJson;
use crate::state::AppState;

const MAX_TTL_S: u64 = 7 * 24 * 3600;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    user_id: String,
    #[serde(default)]
    name: String,
    room: String,
    #[serde(default)]
    grants: Vec<Grant>,
    #[serde(default = "default_ttl")]
    ttl_s: u64,
    #[serde(default)]
    region: String,
}

fn default_ttl() -> u64 {
    3600
}

pub async fn issue(
    State(app): State<AppState>,
    principal: Principal,
    ApiJson(req): ApiJson<TokenRequest>,
) -> Result<Json<Value>, ApiError> {
    if principal != Principal::Admin {
        return Err(ApiError::forbidden("only the admin key can mint tokens"));
    }
    if req.user_id.is_empty() || req.user_id.len() > 128 {
        return Err(ApiError::bad_request("user_id must be 1 to 128 bytes"));
    }
    if req.name.chars().count() > 64 {
        return Err(ApiError::bad_request("name must be at most 64 characters"));
    }
    if req.room != "*" {
        check_room_id(&req.room)?;
    }
    if req.ttl_s == 0 || req.ttl_s > MAX_TTL_S {
        return Err(ApiError::bad_request(format!(
            "ttl_s must be 1 to {MAX_TTL_S}"
        )));
    }
    let now = unix_now();
    let name = if req.name.is_empty() {
        req.user_id.clone()
    } else {
        req.name
    };
    let claims = Claims {
        user_id: req.user_id,
        name,
        room: req.room,
        grants: req.grants,
        exp: now + req.ttl_s,
        iat: now,
        region: req.region,
    };
    let token = app.auth.issue(&claims)?;
    Ok(Json(json!({ "token": token, "expires_at": claims.exp })))
}
