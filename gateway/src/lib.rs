//! # gateway: the HTTP and WebSocket edge
//!
//! Translates HTTP and WebSocket traffic into actor messages and back, and
//! nothing more: no domain rule lives here. Routes are listed in
//! [`router`] and documented in docs/protocol.md.
//!
//! Cross-cutting concerns are tower layers on the router: authentication
//! ([`auth::authenticate`]), body limits, tracing, CORS. Handlers extract,
//! authorize, call, and map errors through [`error::ApiError`], the one
//! error shape of the engine.
//!
//! Sits under `engine/` (which builds the [`state::AppState`]) and over
//! `actors/` and `storage/`.

pub mod auth;
pub mod avatar;
pub mod error;
pub mod routes;
pub mod state;
pub mod ws;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use tower_http::cors::CorsLayer;
use tower_http::trace::TraceLayer;

pub use auth::{Auth, Claims, Grant, Principal};
pub use error::ApiError;
pub use routes::hls::url_signing_key;
pub use state::{AppState, GatewayConfig};

use routes::{
    captions, danmaku, gifts, hls, media, moderation, ops, rooms, story, tokens, vod, web,
};

pub fn router(app: AppState) -> Router {
    let body_limit = app.config.max_message_bytes;
    // SDP offers with simulcast and many candidates outgrow the JSON limit.
    let sdp_limit = DefaultBodyLimit::max(media::MAX_SDP_BYTES);
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .route("/v1/tokens", post(tokens::issue))
        .route("/v1/rooms", post(rooms::create).get(rooms::list))
        .route("/v1/rooms/{room}", get(rooms::get).delete(rooms::delete))
        .route("/v1/rooms/{room}/ws", get(ws::connect))
        .route("/v1/rooms/{room}/gifts", post(gifts::send))
        .route("/v1/rooms/{room}/leaderboard", get(gifts::leaderboard))
        .route("/v1/rooms/{room}/captions", post(captions::send))
        .route(
            "/v1/rooms/{room}/gift_goal",
            put(gifts::set_goal).delete(gifts::clear_goal),
        )
        .route("/v1/gifts", get(gifts::catalog))
        .route(
            "/v1/gifts/{gift}",
            put(gifts::put_gift).delete(gifts::retire_gift),
        )
        .route("/v1/wallets/{user}", get(gifts::wallet))
        .route("/v1/wallets/{user}/topup", post(gifts::top_up))
        .route("/v1/creators/{creator}/earnings", get(gifts::earnings))
        .route("/v1/rooms/{room}/streams", get(media::streams))
        .route("/v1/rooms/{room}/streams/{stream}/hls", get(hls::live_url))
        .route("/hls/{room}/{stream}/{*file}", get(hls::live_file))
        .route(
            "/hls/signed/{expires}/{signature}/{room}/{stream}/{*file}",
            get(hls::signed_live_file),
        )
        .route("/v1/vod", get(vod::list))
        .route("/v1/vod/{id}", get(vod::get))
        .route("/v1/vod/{id}/danmaku", get(vod::danmaku))
        .route("/v1/vod/{id}/avatar", get(vod::avatar))
        .route(
            "/vod/signed/{expires}/{signature}/{id}/{*file}",
            get(vod::signed_file),
        )
        .route("/v1/rooms/{room}/avatar", get(avatar::connect))
        .route("/v1/stories", post(story::upload))
        .route("/v1/stories/{id}/{version}", get(story::get))
        .route(
            "/v1/rooms/{room}/story",
            get(story::show).post(story::start).delete(story::stop),
        )
        .route("/v1/rooms/{room}/story/pause", post(story::pause))
        .route("/v1/rooms/{room}/story/resume", post(story::resume))
        .route("/v1/rooms/{room}/story/choose", post(story::choose))
        .route("/v1/rooms/{room}/story/jump", post(story::jump))
        .route("/v1/rooms/{room}/danmaku", get(danmaku::history))
        .route("/v1/rooms/{room}/danmaku/{seq}", delete(danmaku::delete))
        .route(
            "/v1/rooms/{room}/blocked_terms",
            get(moderation::room_terms).post(moderation::add_room_term),
        )
        .route(
            "/v1/rooms/{room}/blocked_terms/{term}",
            delete(moderation::remove_room_term),
        )
        .route(
            "/v1/rooms/{room}/mutes/{user}",
            put(moderation::mute).delete(moderation::unmute),
        )
        .route(
            "/v1/blocked_terms",
            get(moderation::global_terms).post(moderation::add_global_term),
        )
        .route(
            "/v1/blocked_terms/{term}",
            delete(moderation::remove_global_term),
        )
        .route("/whip/{room}/{stream}", post(media::whip).layer(sdp_limit))
        .route(
            "/whip/{room}/{stream}/{session}",
            delete(media::whip_delete).patch(media::patch),
        )
        .route("/whep/{room}/{stream}", post(media::whep).layer(sdp_limit))
        .route(
            "/whep/{room}/{stream}/{session}",
            delete(media::whep_delete).patch(media::patch),
        )
        .fallback(web::page)
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::authenticate,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(CorsLayer::permissive())
        .layer(TraceLayer::new_for_http())
        .with_state(app)
}
