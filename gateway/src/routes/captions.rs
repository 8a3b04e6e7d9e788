//! Captions sent as text: the publisher (or an operator) types what is
//! said, for when speech recognition is off or wrong. The line goes through
//! the stream's captioner like a recognized one: to the room, translated
//! into the languages watched, into the recording's subtitles.

use actors::captions::Line;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use protocol::v1::Caption;
use serde::Deserialize;

use crate::auth::{Grant, Principal};
use crate::error::{ApiError, check_room_id};
use crate::routes::ApiJson;
use crate::state::AppState;

/// Longest line, in characters.
const MAX_CHARS: usize = 500;
/// How long a line is shown when the request does not say.
const DEFAULT_SHOWN_MS: u64 = 4_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendCaption {
    stream: String,
    text: String,
    /// Default: the language streams are spoken in.
    #[serde(default)]
    lang: Option<String>,
    /// Default: a final line.
    #[serde(default)]
    r#final: Option<bool>,
    /// Shown from (wall clock ms; default now) for `duration_ms`.
    #[serde(default)]
    start_ms: Option<u64>,
    #[serde(default)]
    duration_ms: Option<u64>,
}

/// `POST /v1/rooms/{room}/captions`: 202 with the line as sent.
pub async fn send(
    State(app): State<AppState>,
    principal: Principal,
    Path(room_id): Path<String>,
    ApiJson(input): ApiJson<SendCaption>,
) -> Result<(StatusCode, ApiJson<Caption>), ApiError> {
    check_room_id(&room_id)?;
    if !principal.has(Grant::Moderate, &room_id) {
        principal.require(Grant::Publish, &room_id)?;
    }
    let Some(captions) = &app.captions else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "captions are off on this server",
        ));
    };
    let text = input.text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() || text.chars().count() > MAX_CHARS {
        return Err(ApiError::bad_request(format!(
            "text must be 1 to {MAX_CHARS} characters"
        )));
    }
    let lang = input.lang.unwrap_or_else(|| captions.spoken().to_owned());
    if !(2..=3).contains(&lang.len()) || !lang.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err(ApiError::bad_request(format!(
            "lang `{lang}` must be a language code like `en`"
        )));
    }
    let live = app
        .media
        .streams(&room_id)
        .await?
        .into_iter()
        .any(|s| s.stream == input.stream);
    if !live {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "stream_not_live",
            format!("stream `{}` is not live in room `{room_id}`", input.stream),
        ));
    }
    let start_ms = input.start_ms.unwrap_or_else(actors::now_ms);
    let caption = Caption {
        stream: input.stream.clone(),
        lang,
        start_ms,
        end_ms: start_ms + input.duration_ms.unwrap_or(DEFAULT_SHOWN_MS),
        text,
        r#final: input.r#final.unwrap_or(true),
        source: "text".into(),
        translated_from: String::new(),
    };
    let hub = app.acquire(&room_id).await?;
    let key = sfu::StreamKey::new(&room_id, &input.stream);
    let line = Line {
        caption: caption.clone(),
        recognized: None,
    };
    captions.lines(&key, &hub).send(line).map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the stream's captions ended",
        )
    })?;
    Ok((StatusCode::ACCEPTED, ApiJson(caption)))
}
