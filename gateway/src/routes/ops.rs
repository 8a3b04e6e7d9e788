//! Liveness and metrics for operators.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use crate::state::AppState;

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Prometheus text exposition of every metric in docs/operations.md.
pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    if let Ok(depth) = app.store.outbox_depth().await {
        metrics::gauge!("live_outbox_depth").set(depth as f64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}
