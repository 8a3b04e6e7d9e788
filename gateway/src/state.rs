//! What every handler shares.

use std::sync::Arc;
use std::time::Duration;

use actors::{Actors, RoomHub, RoomSupervisorMsg};
use metrics_exporter_prometheus::PrometheusHandle;
use storage::Store;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Auth;
use crate::error::ApiError;

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Largest WebSocket message (and HTTP JSON body) accepted.
    pub max_message_bytes: usize,
    /// A session whose socket does not take a frame within this time is
    /// closed as a slow consumer.
    pub write_timeout: Duration,
    /// Idle sessions are pinged this often so dead peers are noticed.
    pub keepalive: Duration,
    /// Most items one history request returns.
    pub history_limit: usize,
    /// Most missed items replayed to a reconnecting session.
    pub recovery_limit: usize,
    /// Direct frames (errors, acks) queued per session.
    pub session_queue: usize,
    /// The built web app served at `/` (none: the API alone).
    pub web_dir: Option<std::path::PathBuf>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 16 * 1024,
            write_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(20),
            history_limit: 1000,
            recovery_limit: 1000,
            session_queue: 256,
            web_dir: None,
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub actors: Actors,
    pub store: Arc<dyn Store>,
    /// The media plane (WHIP/WHEP sessions).
    pub media: sfu::MediaPlane,
    /// The gifts on offer (the rooms price sends with the same catalog).
    pub catalog: actors::SharedCatalog,
    pub auth: Arc<Auth>,
    pub config: Arc<GatewayConfig>,
    pub metrics: PrometheusHandle,
    /// Cancelled when the engine stops: sessions close with 1001.
    pub shutdown: CancellationToken,
    /// Every WebSocket session, so shutdown can wait for their close frames.
    pub sessions: TaskTracker,
    /// The recording each live stream writes (what `/hls/…` serves).
    pub recordings: actors::LiveRecordings,
    /// Where recordings are: `<recordings_root>/<recording id>/`.
    pub recordings_root: std::path::PathBuf,
    /// Signs playlist URLs (see `routes::hls`).
    pub url_key: ring::hmac::Key,
    /// Rooms' programs (story clips); none: stories have no program.
    pub programs: Option<actors::Programs>,
    /// Streams' captions; none: captions are off.
    pub captions: Option<actors::Captions>,
    /// Avatar motion kept for VOD; none: not kept.
    pub motion: Option<actors::MotionLog>,
}

impl AppState {
    /// The room's hub, starting its actor on this node if needed.
    pub async fn acquire(&self, room_id: &str) -> Result<Arc<RoomHub>, ApiError> {
        let room_id = room_id.to_owned();
        let hub = ractor::call_t!(
            self.actors.rooms(),
            |reply| RoomSupervisorMsg::Acquire { room_id, reply },
            10_000
        )??;
        Ok(hub)
    }
}
