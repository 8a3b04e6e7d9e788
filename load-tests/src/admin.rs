//! The HTTP side of a run: health check, room, tokens and /metrics. Only
//! setup and before/after snapshots go through here, never the hot path.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::json;

/// Admin calls against one engine.
#[derive(Clone)]
pub struct Admin {
    http: reqwest::Client,
    base: String,
    key: String,
}

/// Whether [`Admin::ensure_room`] made the room or found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomStatus {
    Created,
    Reused,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

#[derive(Deserialize)]
struct TokenBody {
    token: String,
}

impl Admin {
    pub fn new(base: &str, key: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(64)
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            key: key.to_owned(),
        })
    }

    /// Fails fast, with the URL in the message, when nothing listens.
    pub async fn health(&self) -> anyhow::Result<()> {
        let url = format!("{}/healthz", self.base);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("is the engine running? GET {url}"))?;
        if !response.status().is_success() {
            bail!("GET {url}: {}", response.status());
        }
        Ok(())
    }

    /// Creates the room; an existing one (409) is reused as it is.
    pub async fn ensure_room(&self, room: &str) -> anyhow::Result<RoomStatus> {
        let response = self
            .http
            .post(format!("{}/v1/rooms", self.base))
            .bearer_auth(&self.key)
            .json(&json!({ "room_id": room, "title": "live-load benchmark" }))
            .send()
            .await
            .context("POST /v1/rooms")?;
        match response.status().as_u16() {
            201 => Ok(RoomStatus::Created),
            409 => Ok(RoomStatus::Reused),
            _ => Err(api_error("POST /v1/rooms", response).await),
        }
    }

    /// Mints an access token for `room`.
    pub async fn mint(
        &self,
        user_id: &str,
        name: &str,
        room: &str,
        grants: &[&str],
    ) -> anyhow::Result<String> {
        let response = self
            .http
            .post(format!("{}/v1/tokens", self.base))
            .bearer_auth(&self.key)
            .json(&json!({ "user_id": user_id, "name": name, "room": room, "grants": grants, "ttl_s": 3600 }))
            .send()
            .await
            .context("POST /v1/tokens")?;
        if !response.status().is_success() {
            return Err(api_error("POST /v1/tokens", response).await);
        }
        let body: TokenBody = response
            .json()
            .await
            .context("POST /v1/tokens: reading the token")?;
        Ok(body.token)
    }

    /// The engine's counters (`*_total` series), for before/after deltas.
    /// `None` when /metrics cannot be read: the run does not depend on it.
    pub async fn counters(&self) -> Option<BTreeMap<String, f64>> {
        let response = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        Some(parse_counters(&response.text().await.ok()?))
    }
}

/// Turns an error response into `context: code: message (status)`.
async fn api_error(context: &str, response: reqwest::Response) -> anyhow::Error {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => anyhow::anyhow!(
            "{context}: {}: {} ({status})",
            body.error.code,
            body.error.message
        ),
        Err(_) => anyhow::anyhow!(
            "{context}: {status}: {}",
            text.chars().take(200).collect::<String>()
        ),
    }
}

/// Counter series (`name{labels} value`) whose name ends in `_total`, from
/// Prometheus text.
pub fn parse_counters(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.trim().rsplit_once(' ')?;
            let name = series.split('{').next()?;
            if !name.ends_with("_total") {
                return None;
            }
            Some((series.trim().to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Series that changed between two scrapes, with their increase.
pub fn counter_deltas(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter_map(|(series, value)| {
            let delta = value - before.get(series).copied().unwrap_or(0.0);
            (delta != 0.0).then(|| (series.clone(), delta))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_parsed_and_diffed() {
        let before = parse_counters(
            "# TYPE live_danmaku_in_total counter\nlive_danmaku_in_total 10\nlive_ws_connections 3\nlive_danmaku_rejected_total{reason=\"blocked\"} 1\n",
        );
        assert_eq!(before.len(), 2);
        assert_eq!(before["live_danmaku_in_total"], 10.0);
        let after = parse_counters(
            "live_danmaku_in_total 25\nlive_danmaku_rejected_total{reason=\"blocked\"} 1\nlive_new_total 2\n",
        );
        let deltas = counter_deltas(&before, &after);
        assert_eq!(deltas.len(), 2);
        assert_eq!(deltas["live_danmaku_in_total"], 15.0);
        assert_eq!(deltas["live_new_total"], 2.0);
    }
}
