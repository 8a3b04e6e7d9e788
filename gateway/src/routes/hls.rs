//! HLS: the live playlists and segments of a stream's recording, and the
//! signed URLs that let a player fetch them without a header.
//!
//! A player resolves every playlist entry relative to the playlist's URL,
//! so a credential must live in the path, not the query (a `?token=` on
//! the master playlist does not reach the segments). A signed URL is
//! `/hls/signed/{expires}/{signature}/{room}/{stream}/master.m3u8`: the
//! signature (HMAC-SHA256 with the node's key) covers the room, the stream
//! and the expiry, and every relative URL below it carries it along.
//! Callers that can set headers (hls.js's `xhrSetup`) may instead use
//! `/hls/{room}/{stream}/master.m3u8` with a bearer token holding the
//! subscribe grant.

use std::path::PathBuf;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::auth::{Grant, Principal, unix_now};
use crate::error::{ApiError, check_room_id};
use crate::routes::media::check_stream_name;
use crate::state::AppState;

/// How long a signed playlist URL stays valid.
pub const SIGNED_URL_TTL_S: u64 = 6 * 3600;

/// The key that signs playlist URLs, derived from the node's secret (an
/// HMAC of a label under it), so URL signatures and token signatures never
/// share a key.
pub fn url_signing_key(secret: &str) -> ring::hmac::Key {
    let root = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let derived = ring::hmac::sign(&root, b"live-engine/url-signing/v1");
    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, derived.as_ref())
}

/// When a signed URL minted for `principal` expires: [`SIGNED_URL_TTL_S`]
/// from now, but never after the token that asked for it.
pub(crate) fn url_expiry(principal: &Principal) -> u64 {
    let ttl = unix_now() + SIGNED_URL_TTL_S;
    match principal {
        Principal::User(claims) => ttl.min(claims.exp),
        Principal::Admin => ttl,
    }
}

/// What a signature covers: the kind of resource, its path and expiry.
fn signed_message(scope: &str, expires: u64) -> String {
    format!("{scope}\n{expires}")
}

/// Signs `scope` (`hls/{room}/{stream}` or `vod/{id}`) until `expires`.
pub fn sign(app: &AppState, scope: &str, expires: u64) -> String {
    let tag = ring::hmac::sign(&app.url_key, signed_message(scope, expires).as_bytes());
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn verify(
    app: &AppState,
    scope: &str,
    expires: u64,
    signature: &str,
) -> Result<(), ApiError> {
    if expires < unix_now() {
        return Err(ApiError::unauthorized(
            "url_expired",
            "this signed URL has expired: ask for a new one",
        ));
    }
    let hex = signature.len() == 64 && signature.bytes().all(|b| b.is_ascii_hexdigit());
    let bytes: Option<Vec<u8>> = hex
        .then(|| {
            (0..signature.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&signature[i..i + 2], 16).ok())
                .collect()
        })
        .flatten();
    let valid = bytes.is_some_and(|bytes| {
        ring::hmac::verify(
            &app.url_key,
            signed_message(scope, expires).as_bytes(),
            &bytes,
        )
        .is_ok()
    });
    if valid {
        Ok(())
    } else {
        Err(ApiError::unauthorized(
            "invalid_signature",
            "the URL's signature does not match",
        ))
    }
}

#[derive(Debug, Serialize)]
pub struct SignedUrl {
    pub url: String,
    pub expires_at: u64,
    pub recording_id: String,
}

/// `GET /v1/rooms/{room}/streams/{stream}/hls`: a signed URL of the live
/// stream's master playlist (subscribe grant).
pub async fn live_url(
    State(app): State<AppState>,
    principal: Principal,
    Path((room, stream)): Path<(String, String)>,
) -> Result<axum::Json<SignedUrl>, ApiError> {
    check_room_id(&room)?;
    check_stream_name(&stream)?;
    principal.require(Grant::Subscribe, &room)?;
    let recording_id = app
        .recordings
        .get(&room, &stream)
        .ok_or_else(not_recording)?;
    let expires_at = url_expiry(&principal);
    let signature = sign(&app, &format!("hls/{room}/{stream}"), expires_at);
    Ok(axum::Json(SignedUrl {
        url: format!("/hls/signed/{expires_at}/{signature}/{room}/{stream}/master.m3u8"),
        expires_at,
        recording_id,
    }))
}

/// `GET /hls/{room}/{stream}/{*file}` with a subscribe grant.
pub async fn live_file(
    State(app): State<AppState>,
    principal: Principal,
    Path((room, stream, file)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    check_room_id(&room)?;
    check_stream_name(&stream)?;
    principal.require(Grant::Subscribe, &room)?;
    serve_live(&app, &room, &stream, &file).await
}

/// `GET /hls/signed/{expires}/{signature}/{room}/{stream}/{*file}`.
pub async fn signed_live_file(
    State(app): State<AppState>,
    Path((expires, signature, room, stream, file)): Path<(u64, String, String, String, String)>,
) -> Result<Response, ApiError> {
    check_room_id(&room)?;
    check_stream_name(&stream)?;
    verify(&app, &format!("hls/{room}/{stream}"), expires, &signature)?;
    serve_live(&app, &room, &stream, &file).await
}

async fn serve_live(
    app: &AppState,
    room: &str,
    stream: &str,
    file: &str,
) -> Result<Response, ApiError> {
    let recording = app.recordings.get(room, stream).ok_or_else(not_recording)?;
    serve_recording_file(app, &recording, file).await
}

fn not_recording() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_recording",
        "the stream is not live or has no HLS output yet",
    )
}

/// Serves one file of a recording's directory: playlists, init and media
/// segments, the poster. Playlists must not be cached (a live one grows;
/// a finished one gains its end); everything else never changes once it
/// exists.
pub(crate) async fn serve_recording_file(
    app: &AppState,
    recording: &str,
    file: &str,
) -> Result<Response, ApiError> {
    let path = recording_path(&app.recordings_root, recording, file)?;
    let content_type = content_type(file).ok_or_else(|| ApiError::not_found("no such file"))?;
    let bytes = match tokio::fs::read(&path).await {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::not_found("no such file"));
        }
        Err(error) => return Err(ApiError::internal(format!("reading {file}: {error}"))),
    };
    let cache = if file.ends_with(".m3u8") {
        "no-cache"
    } else {
        "public, max-age=31536000, immutable"
    };
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    Ok(response)
}

/// The file's path under the recordings root. Only plain names made of
/// `A-Z a-z 0-9 . _ -`, one directory deep at most, are served: nothing
/// can climb out of the recording.
fn recording_path(
    root: &std::path::Path,
    recording: &str,
    file: &str,
) -> Result<PathBuf, ApiError> {
    let plain = |part: &str| {
        !part.is_empty()
            && !part.starts_with('.')
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    let parts: Vec<&str> = file.split('/').collect();
    if !plain(recording) || parts.len() > 2 || !parts.iter().all(|p| plain(p)) {
        return Err(ApiError::not_found("no such file"));
    }
    Ok(parts
        .iter()
        .fold(root.join(recording), |path, part| path.join(part)))
}

fn content_type(file: &str) -> Option<&'static str> {
    let extension = file.rsplit('.').next()?;
    Some(match extension {
        "m3u8" => "application/vnd.apple.mpegurl",
        "m4s" => "video/iso.segment",
        "mp4" => "video/mp4",
        "jpg" => "image/jpeg",
        "vtt" => "text/vtt",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_inside_the_recording_are_served() {
        let root = std::path::Path::new("/data/recordings");
        assert_eq!(
            recording_path(root, "abc", "360p/seg_00001.m4s").unwrap(),
            PathBuf::from("/data/recordings/abc/360p/seg_00001.m4s")
        );
        for bad in [
            "../x.m3u8",
            "360p/../../etc",
            ".hidden",
            "a/b/c.m4s",
            "",
            "360p//x",
        ] {
            assert!(recording_path(root, "abc", bad).is_err(), "{bad}");
        }
        assert!(recording_path(root, "..", "master.m3u8").is_err());
        assert_eq!(
            content_type("master.m3u8"),
            Some("application/vnd.apple.mpegurl")
        );
        assert_eq!(content_type("secret.key"), None);
    }
}
