//! Media counters as Prometheus metrics, kept on the media thread.
//!
//! str0m reports cumulative counters per peer and track every second; this
//! turns them into per-stream counters (the delta since the peer's last
//! report), so a stream with ten thousand viewers is a handful of series,
//! not one per viewer.

use std::collections::HashMap;
use std::time::Duration;

use str0m::media::MediaKind;

use crate::{PeerId, Role, TrackStats};

#[derive(Default)]
pub(crate) struct Meter {
    last: HashMap<(PeerId, MediaKind), [u64; 5]>,
}

impl Meter {
    pub fn track(&mut self, stats: &TrackStats) {
        let now = [
            stats.bytes,
            stats.packets,
            stats.nacks,
            stats.plis,
            stats.firs,
        ];
        let before = self
            .last
            .insert((stats.peer, stats.kind), now)
            .unwrap_or_default();
        let delta: Vec<u64> = now
            .iter()
            .zip(before)
            .map(|(n, b)| n.saturating_sub(b))
            .collect();
        let direction = match stats.role {
            Role::Publisher => "in",
            Role::Subscriber => "out",
        };
        let kind = if stats.kind.is_audio() {
            "audio"
        } else {
            "video"
        };
        let labels = [
            ("room", stats.stream.room.clone()),
            ("stream", stats.stream.stream.clone()),
            ("direction", direction.to_owned()),
            ("kind", kind.to_owned()),
        ];
        metrics::counter!("live_media_bytes_total", &labels).increment(delta[0]);
        metrics::counter!("live_media_packets_total", &labels).increment(delta[1]);
        metrics::counter!("live_media_nacks_total", &labels).increment(delta[2]);
        metrics::counter!("live_media_plis_total", &labels).increment(delta[3]);
        metrics::counter!("live_media_firs_total", &labels).increment(delta[4]);
        if let (Role::Publisher, Some(loss)) = (stats.role, stats.loss) {
            metrics::gauge!("live_media_ingress_loss_ratio", &labels).set(f64::from(loss));
        }
    }

    pub fn forwarded(&mut self, latency: Duration) {
        metrics::histogram!("live_media_forward_seconds").record(latency.as_secs_f64());
    }

    pub fn forget(&mut self, peer: PeerId) {
        self.last.retain(|(p, _), _| *p != peer);
    }
}
