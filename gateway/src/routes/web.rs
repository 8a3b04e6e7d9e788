//! The web app (`web/dist`: studio, watch and recordings pages), served at
//! `/` beside the API by the same server, so a new user needs nothing but
//! the engine. Paths of the API keep their JSON 404s.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::ServeDir;

use crate::error::ApiError;
use crate::state::AppState;

/// Paths that belong to the API: never looked up among the pages.
const API_PREFIXES: &[&str] = &[
    "/v1/", "/whip/", "/whep/", "/hls/", "/vod/", "/metrics", "/healthz",
];

/// The router's fallback: a page of the web app, or a JSON 404.
pub async fn page(State(app): State<AppState>, request: Request) -> Response {
    let path = request.uri().path();
    let api = API_PREFIXES.iter().any(|prefix| path.starts_with(prefix));
    let Some(dir) = app.config.web_dir.as_ref().filter(|_| !api) else {
        return ApiError::not_found("no such route").into_response();
    };
    let served = ServeDir::new(dir)
        .append_index_html_on_directories(true)
        .oneshot(request)
        .await;
    // Everything ServeDir answers passes (200, 206 ranges, 304 for a
    // cached page, redirects to a directory's slash) but its bare 404.
    match served {
        Ok(response) if response.status() != StatusCode::NOT_FOUND => {
            response.map(axum::body::Body::new)
        }
        _ => ApiError::not_found("no such page").into_response(),
    }
}
