//! One error shape for every route: `{"error":{"code","message"}}` with the
//! matching HTTP status. Every failure is mapped here, once.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// More fields of the error object, e.g. `balance` with
    /// `insufficient_funds`.
    pub fields: Vec<(&'static str, serde_json::Value)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            fields: Vec::new(),
        }
    }

    pub fn with_field(mut self, name: &'static str, value: impl Into<serde_json::Value>) -> Self {
        self.fields.push((name, value.into()));
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, "request failed");
        }
        let mut error = json!({ "code": self.code, "message": self.message });
        for (name, value) in self.fields {
            error[name] = value;
        }
        (self.status, Json(json!({ "error": error }))).into_response()
    }
}

impl From<actors::RoomError> for ApiError {
    fn from(error: actors::RoomError) -> Self {
        use actors::RoomError::*;
        match error {
            NotFound => Self::not_found("room not found"),
            AlreadyExists => Self::new(StatusCode::CONFLICT, "conflict", "room already exists"),
            ItemNotFound(what) => Self::not_found(format!("{what} not found")),
            Unavailable(why) => Self::unavailable(why),
            Storage(why) => Self::internal(format!("storage: {why}")),
            NoStory => Self::new(
                StatusCode::NOT_FOUND,
                "no_story",
                "no story is running in this room",
            ),
            StoryRefused(why) => Self::new(StatusCode::CONFLICT, "story_refused", why),
        }
    }
}

impl From<storage::StoreError> for ApiError {
    fn from(error: storage::StoreError) -> Self {
        Self::internal(format!("storage: {error}"))
    }
}

impl<T> From<ractor::RactorErr<T>> for ApiError {
    fn from(error: ractor::RactorErr<T>) -> Self {
        Self::unavailable(format!("engine busy: {error}"))
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            _ => "bad_request",
        };
        Self::new(status, code, rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request(rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::bad_request(rejection.body_text())
    }
}

/// Room ids become NATS subject tokens and storage partition keys: keep
/// them to `[A-Za-z0-9_-]{1,64}`.
pub fn check_room_id(room_id: &str) -> Result<(), ApiError> {
    let valid = !room_id.is_empty()
        && room_id.len() <= 64
        && room_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "room_id must be 1 to 64 characters of A-Z, a-z, 0-9, `-` or `_`",
        ))
    }
}
