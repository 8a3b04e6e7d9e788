//! Authentication: HS256 JWTs with LiveKit-style grants, and the admin key.
//!
//! A token names one room (or `*`), a user and the grants they hold there.
//! The admin key signs tokens (like a LiveKit API secret) and is itself
//! accepted as a bearer credential with every grant.
//!
//! The [`authenticate`] layer reads the credential once per request (the
//! `Authorization` header, else `?token=`, else a `Sec-WebSocket-Protocol`
//! entry `access_token.<jwt>` for browsers that cannot set headers) and
//! leaves the verdict in the request; handlers only authorize, through the
//! [`Principal`] extractor and [`Principal::require`].

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::state::AppState;

/// The prefix of a token carried in `Sec-WebSocket-Protocol`.
pub const WS_TOKEN_PREFIX: &str = "access_token.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Grant {
    Publish,
    Subscribe,
    Chat,
    Gift,
    Moderate,
    Admin,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub user_id: String,
    #[serde(default)]
    pub name: String,
    /// A room id, or `*` for every room.
    pub room: String,
    #[serde(default)]
    pub grants: Vec<Grant>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    #[serde(default)]
    pub iat: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region: String,
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The holder of the admin key: every grant, every room.
    Admin,
    User(Claims),
}

impl Principal {
    pub fn user_id(&self) -> &str {
        match self {
            Principal::Admin => "admin",
            Principal::User(claims) => &claims.user_id,
        }
    }

    /// The viewer's region claim; empty for the admin key.
    pub fn region(&self) -> &str {
        match self {
            Principal::Admin => "",
            Principal::User(claims) => &claims.region,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Principal::Admin => "admin",
            Principal::User(claims) => &claims.name,
        }
    }

    pub fn has(&self, grant: Grant, room_id: &str) -> bool {
        match self {
            Principal::Admin => true,
            Principal::User(claims) => {
                let in_room = claims.room == "*" || claims.room == room_id;
                in_room && (claims.grants.contains(&grant) || claims.grants.contains(&Grant::Admin))
            }
        }
    }

    /// Authorizes `grant` in `room_id` (`*` for engine-wide actions).
    pub fn require(&self, grant: Grant, room_id: &str) -> Result<(), ApiError> {
        if self.has(grant, room_id) {
            Ok(())
        } else {
            let grant = serde_json::to_value(grant)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            Err(ApiError::forbidden(format!(
                "this token has no `{grant}` grant for room `{room_id}`"
            )))
        }
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        self.require(Grant::Admin, "*")
    }
}

pub struct Auth {
    admin_key: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl Auth {
    pub fn new(admin_key: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_exp = true;
        validation.required_spec_claims = ["exp"].into_iter().map(String::from).collect();
        Self {
            admin_key: admin_key.to_owned(),
            encoding: EncodingKey::from_secret(admin_key.as_bytes()),
            decoding: DecodingKey::from_secret(admin_key.as_bytes()),
            validation,
        }
    }

    pub fn issue(&self, claims: &Claims) -> Result<String, ApiError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| ApiError::internal(format!("signing token: {e}")))
    }

    pub fn verify(&self, credential: &str) -> Result<Principal, ApiError> {
        if constant_time_eq(credential.as_bytes(), self.admin_key.as_bytes()) {
            return Ok(Principal::Admin);
        }
        match jsonwebtoken::decode::<Claims>(credential, &self.decoding, &self.validation) {
            Ok(data) => Ok(Principal::User(data.claims)),
            Err(error) => Err(match error.kind() {
                ErrorKind::ExpiredSignature => {
                    ApiError::unauthorized("token_expired", "the token has expired")
                }
                ErrorKind::InvalidSignature => {
                    ApiError::unauthorized("invalid_token", "the token signature does not match")
                }
                _ => ApiError::unauthorized(
                    "invalid_token",
                    format!("the token is malformed: {error}"),
                ),
            }),
        }
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The verdict of [`authenticate`], left in the request's extensions.
#[derive(Debug, Clone)]
enum Credential {
    Missing,
    Valid(Principal),
    Invalid(ApiError),
}

/// Tower layer (via `axum::middleware::from_fn_with_state`): reads and
/// verifies the request's credential, if any.
pub async fn authenticate(
    State(app): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let verdict = match find_credential(request.headers(), request.uri().query()) {
        None => Credential::Missing,
        Some(token) => match app.auth.verify(&token) {
            Ok(principal) => Credential::Valid(principal),
            Err(error) => Credential::Invalid(error),
        },
    };
    request.extensions_mut().insert(verdict);
    next.run(request).await
}

fn find_credential(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .unwrap_or(value);
        return Some(token.trim().to_owned());
    }
    if let Some(query) = query {
        let token = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("token="));
        if let Some(token) = token {
            return Some(token.to_owned());
        }
    }
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix(WS_TOKEN_PREFIX).map(str::to_owned))
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        match parts.extensions.get::<Credential>() {
            Some(Credential::Valid(principal)) => Ok(principal.clone()),
            Some(Credential::Invalid(error)) => Err(error.clone()),
            Some(Credential::Missing) | None => Err(ApiError::unauthorized(
                "unauthorized",
                "a bearer token is required (Authorization header, `token` query parameter, or `access_token.<jwt>` WebSocket subprotocol)",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(room: &str, grants: Vec<Grant>, exp: u64) -> Claims {
        Claims {
            user_id: "u1".into(),
            name: "Ann".into(),
            room: room.into(),
            grants,
            exp,
            iat: 0,
            region: String::new(),
        }
    }

    #[test]
    fn issued_tokens_verify_and_carry_their_grants() {
        let auth = Auth::new("secret");
        let token = auth
            .issue(&claims("r1", vec![Grant::Chat], unix_now() + 60))
            .unwrap();
        let principal = auth.verify(&token).unwrap();
        assert!(principal.has(Grant::Chat, "r1"));
        assert!(!principal.has(Grant::Chat, "r2"));
        assert!(!principal.has(Grant::Moderate, "r1"));
        assert_eq!(
            principal.require(Grant::Moderate, "r1").unwrap_err().status,
            403
        );
    }

    #[test]
    fn tampered_expired_and_foreign_tokens_are_refused_with_their_reason() {
        let auth = Auth::new("secret");
        let token = auth
            .issue(&claims("*", vec![Grant::Admin], unix_now() + 60))
            .unwrap();
        let mut tampered = token.clone();
        tampered.pop();
        tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(auth.verify(&tampered).unwrap_err().code, "invalid_token");
        let expired = auth.issue(&claims("*", vec![], unix_now() - 1)).unwrap();
        assert_eq!(auth.verify(&expired).unwrap_err().code, "token_expired");
        let foreign = Auth::new("other")
            .issue(&claims("*", vec![], unix_now() + 60))
            .unwrap();
        assert_eq!(auth.verify(&foreign).unwrap_err().code, "invalid_token");
        assert_eq!(auth.verify("garbage").unwrap_err().status, 401);
    }

    #[test]
    fn admin_key_is_a_credential_with_every_grant() {
        let auth = Auth::new("secret");
        let admin = auth.verify("secret").unwrap();
        assert!(admin.require_admin().is_ok());
        assert!(admin.has(Grant::Moderate, "any"));
        assert!(auth.verify("secreT").is_err());
    }

    #[test]
    fn credential_is_found_in_header_query_or_subprotocol() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            find_credential(&headers, Some("after_seq=3&token=abc")),
            Some("abc".into())
        );
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            "live.v1.json, access_token.xyz".parse().unwrap(),
        );
        assert_eq!(find_credential(&headers, None), Some("xyz".into()));
        headers.insert(header::AUTHORIZATION, "Bearer hdr".parse().unwrap());
        assert_eq!(
            find_credential(&headers, Some("token=abc")),
            Some("hdr".into())
        );
    }
}
