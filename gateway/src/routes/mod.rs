//! HTTP routes, one module per resource. Handlers are thin: extract,
//! authorize, call the actor tree or a repository, map the result.

pub mod captions;
pub mod danmaku;
pub mod gifts;
pub mod hls;
pub mod media;
pub mod moderation;
pub mod ops;
pub mod rooms;
pub mod story;
pub mod tokens;
pub mod vod;
pub mod web;

use axum::extract::FromRequest;

use crate::error::ApiError;

/// `Json` whose rejections use the engine's error shape.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

impl<T: serde::Serialize> axum::response::IntoResponse for ApiJson<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}
