//! WHIP (RFC 9725) ingest and WHEP playback: the HTTP side of the media
//! plane. A session is a resource: `POST` creates it from an SDP offer and
//! answers `201 Created` with its `Location`; `DELETE` on that URL ends it.
//! `OPTIONS` (CORS preflight, so studio pages on other origins can publish)
//! is answered by the router's CORS layer.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sfu::{LayerChoice, MediaSession, SfuError, StreamKey};

use crate::auth::{Grant, Principal};
use crate::error::{ApiError, check_room_id};
use crate::state::AppState;

const SDP: &str = "application/sdp";
/// When a full node suggests trying again, in seconds.
const RETRY_AFTER_S: &str = "5";
/// Largest SDP offer accepted.
pub const MAX_SDP_BYTES: usize = 64 * 1024;

/// Which protocol a route serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Whip,
    Whep,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Whip => "whip",
            Kind::Whep => "whep",
        }
    }

    fn grant(self) -> Grant {
        match self {
            Kind::Whip => Grant::Publish,
            Kind::Whep => Grant::Subscribe,
        }
    }
}

impl From<SfuError> for ApiError {
    fn from(error: SfuError) -> Self {
        let status = match error {
            SfuError::BadSdp(_) | SfuError::NoMedia | SfuError::Negotiation(_) => {
                StatusCode::BAD_REQUEST
            }
            SfuError::NoCodec | SfuError::NeedsH264 => StatusCode::UNPROCESSABLE_ENTITY,
            SfuError::StreamLive => StatusCode::CONFLICT,
            SfuError::StreamNotLive | SfuError::UnknownPeer => StatusCode::NOT_FOUND,
            SfuError::Unavailable | SfuError::Full(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        let code = match error {
            SfuError::BadSdp(_) | SfuError::NoMedia | SfuError::Negotiation(_) => "bad_sdp",
            SfuError::NoCodec | SfuError::NeedsH264 => "no_codec",
            SfuError::StreamLive => "conflict",
            SfuError::StreamNotLive | SfuError::UnknownPeer => "not_found",
            SfuError::Unavailable => "unavailable",
            SfuError::Full(_) => "full",
        };
        ApiError::new(status, code, error.to_string())
    }
}

pub async fn whip(
    state: State<AppState>,
    principal: Principal,
    path: Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    open(
        Kind::Whip,
        LayerChoice::Auto,
        state,
        principal,
        path,
        headers,
        body,
    )
    .await
}

pub async fn whep(
    state: State<AppState>,
    principal: Principal,
    path: Path<(String, String)>,
    query: Result<Query<WhepQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let layer = match query.layer.as_deref() {
        None => LayerChoice::Auto,
        Some(name) => name.parse().map_err(ApiError::bad_request)?,
    };
    open(Kind::Whep, layer, state, principal, path, headers, body).await
}

#[derive(Debug, serde::Deserialize)]
pub struct WhepQuery {
    /// `auto` (default), `high`, `medium` or `low`.
    layer: Option<String>,
    /// Read by the auth layer.
    #[serde(default, rename = "token")]
    _token: Option<String>,
}

async fn open(
    kind: Kind,
    layer: LayerChoice,
    State(app): State<AppState>,
    principal: Principal,
    Path((room, stream)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_room_id(&room)?;
    check_stream_name(&stream)?;
    principal.require(kind.grant(), &room)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(SDP))
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be an SDP offer with Content-Type: application/sdp",
        ));
    }
    let offer = String::from_utf8(body.to_vec()).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_sdp",
            "the SDP offer is not valid UTF-8",
        )
    })?;
    match app.store.room(&room).await? {
        Some(found) if found.closed_ms.is_none() => {}
        _ => return Err(ApiError::not_found("room not found")),
    }
    let key = StreamKey::new(room.clone(), stream.clone());
    let owner = principal.user_id().to_owned();
    let opened = match kind {
        Kind::Whip => app.media.publish(key, offer, owner).await,
        Kind::Whep => app.media.subscribe(key, offer, owner, layer).await,
    };
    let (session, answer) = match opened {
        Ok(opened) => opened,
        Err(full @ SfuError::Full(_)) => {
            let mut response = ApiError::from(full).into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_S));
            return Ok(response);
        }
        Err(other) => return Err(other.into()),
    };
    metrics::counter!("live_media_sessions_total", "kind" => kind.path()).increment(1);
    let location = format!("/{}/{room}/{stream}/{}", kind.path(), session.id);
    let mut response = (StatusCode::CREATED, answer).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
    headers.insert(header::LOCATION, header_value(&location)?);
    headers.insert(header::ETAG, header_value(&format!("\"{}\"", session.id))?);
    Ok(response)
}

pub async fn whip_delete(
    state: State<AppState>,
    principal: Principal,
    path: Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    end(Kind::Whip, state, principal, path).await
}

pub async fn whep_delete(
    state: State<AppState>,
    principal: Principal,
    path: Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    end(Kind::Whep, state, principal, path).await
}

async fn end(
    kind: Kind,
    State(app): State<AppState>,
    principal: Principal,
    Path((room, stream, id)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let session = find(&app, kind, &room, &stream, &id).await?;
    if principal != Principal::Admin && principal.user_id() != session.owner {
        return Err(ApiError::forbidden(
            "only the token that created this session can end it",
        ));
    }
    app.media.close(&id).await?;
    Ok(StatusCode::OK)
}

/// The session behind a resource URL, if it belongs to that URL.
async fn find(
    app: &AppState,
    kind: Kind,
    room: &str,
    stream: &str,
    id: &str,
) -> Result<MediaSession, ApiError> {
    let expected_role = match kind {
        Kind::Whip => sfu::Role::Publisher,
        Kind::Whep => sfu::Role::Subscriber,
    };
    match app.media.session(id).await {
        Some(s)
            if s.role == expected_role && s.stream.room == room && s.stream.stream == stream =>
        {
            Ok(s)
        }
        _ => Err(ApiError::not_found("no such session")),
    }
}

/// Trickle ICE and ICE restarts are not supported yet: the engine is
/// ICE-lite with one host candidate, so clients need not trickle.
pub async fn patch() -> Response {
    let error = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "trickle ICE and ICE restart are not supported; send all candidates in the offer",
    );
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("DELETE, OPTIONS"));
    response
}

/// `GET /v1/rooms/{room}/streams`: the room's live streams.
pub async fn streams(
    State(app): State<AppState>,
    Path(room): Path<String>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    check_room_id(&room)?;
    if app.store.room(&room).await?.is_none() {
        return Err(ApiError::not_found("room not found"));
    }
    let streams: Vec<serde_json::Value> = app
        .media
        .streams(&room)
        .await?
        .into_iter()
        .map(|s| {
            let tracks: Vec<&str> = s
                .tracks
                .iter()
                .map(|k| if k.is_audio() { "audio" } else { "video" })
                .collect();
            serde_json::json!({
                "stream": s.stream,
                "connected": s.connected,
                "tracks": tracks,
                "subscribers": s.subscribers,
                "publisher_user_id": s.publisher,
            })
        })
        .collect();
    Ok(axum::Json(serde_json::json!({ "streams": streams })))
}

fn header_value(value: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(value).map_err(|_| ApiError::internal("unrepresentable header"))
}

/// Stream names share the room id alphabet.
pub(crate) fn check_stream_name(stream: &str) -> Result<(), ApiError> {
    check_room_id(stream).map_err(|_| {
        ApiError::bad_request("stream must be 1 to 64 characters of A-Z, a-z, 0-9, `-` or `_`")
    })
}
