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
            .json(&json!({ "room_id": room, "title": "load-tests benchmark" }))
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

    /// Credits a wallet (idempotent by `key`).
    pub async fn top_up(&self, user_id: &str, amount: u64, key: &str) -> anyhow::Result<()> {
        let response = self
            .http
            .post(format!("{}/v1/wallets/{user_id}/topup", self.base))
            .bearer_auth(&self.key)
            .header("Idempotency-Key", key)
            .json(&json!({ "amount": amount }))
            .send()
            .await
            .context("POST /v1/wallets/{user}/topup")?;
        if !response.status().is_success() {
            return Err(api_error("POST /v1/wallets/{user}/topup", response).await);
        }
        Ok(())
    }

    pub async fn balance(&self, user_id: &str) -> anyhow::Result<u64> {
        let response = self
            .http
            .get(format!("{}/v1/wallets/{user_id}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .context("GET /v1/wallets/{user}")?;
        if !response.status().is_success() {
            return Err(api_error("GET /v1/wallets/{user}", response).await);
        }
        let body: serde_json::Value = response.json().await.context("reading the wallet")?;
        body["balance"]
            .as_u64()
            .context("the wallet has no balance")
    }

    /// The engine's counters (`*_total` series), for before/after deltas.
    /// `None` when /metrics cannot be read: the run does not depend on it.
    pub async fn counters(&self) -> Option<BTreeMap<String, f64>> {
        Some(parse_counters(&self.metrics().await?))
    }

    /// The engine's /metrics page, or `None` when it cannot be read.
    pub async fn metrics(&self) -> Option<String> {
        let response = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.text().await.ok()
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn base(&self) -> &str {
        &self.base
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

/// A summary's quantile (`name{kind="final",quantile="0.5"} 2.9`) for the
/// series with `labels`; `None` when the engine has not recorded it.
pub fn quantile(text: &str, name: &str, labels: &[(&str, &str)], q: &str) -> Option<f64> {
    let wanted: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{v}\""))
        .chain(std::iter::once(format!("quantile=\"{q}\"")))
        .collect();
    text.lines().find_map(|line| {
        let (series, value) = line
            .strip_prefix(name)?
            .strip_prefix('{')?
            .split_once("} ")?;
        let parts: Vec<&str> = series.split(',').collect();
        wanted
            .iter()
            .all(|w| parts.contains(&w.as_str()))
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

/// The cumulative buckets of a Prometheus histogram without labels
/// (`name_bucket{le="0.001"} 12`), as (upper bound, count), `+Inf` last.
pub fn parse_buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    text.lines()
        .filter_map(|line| {
            let (bound, rest) = line.strip_prefix(prefix.as_str())?.split_once('"')?;
            let bound = if bound == "+Inf" {
                f64::INFINITY
            } else {
                bound.parse().ok()?
            };
            Some((bound, rest.rsplit_once(' ')?.1.parse().ok()?))
        })
        .collect()
}

/// The `q` quantile of what a histogram recorded between two scrapes,
/// interpolated linearly inside its bucket (as PromQL's
/// `histogram_quantile` does); `None` when nothing was recorded. A
/// quantile in the `+Inf` bucket reports the highest finite bound.
pub fn window_quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let count_before = |bound: f64| {
        before
            .iter()
            .find(|(b, _)| *b == bound)
            .map_or(0.0, |(_, c)| *c)
    };
    let window: Vec<(f64, f64)> = after
        .iter()
        .map(|(bound, count)| (*bound, count - count_before(*bound)))
        .collect();
    let total = window.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (bound, cumulative) in window {
        if cumulative >= rank {
            if bound.is_infinite() {
                return Some(lower);
            }
            let inside = cumulative - below;
            let fraction = if inside > 0.0 {
                (rank - below) / inside
            } else {
                1.0
            };
            return Some(lower + (bound - lower) * fraction);
        }
        (lower, below) = (bound, cumulative);
    }
    Some(lower)
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

    #[test]
    fn histogram_windows_give_their_own_quantiles() {
        let scrape = |a: u32, b: u32, c: u32| {
            format!(
                "h_bucket{{le=\"0.001\"}} {a}\nh_bucket{{le=\"0.01\"}} {b}\nh_bucket{{le=\"+Inf\"}} {c}\nh_sum 1\nh_count {c}\n"
            )
        };
        let before = parse_buckets(&scrape(100, 100, 200), "h");
        assert_eq!(
            before,
            vec![(0.001, 100.0), (0.01, 100.0), (f64::INFINITY, 200.0)]
        );
        // In the window: 90 samples under 1 ms, 10 between 1 and 10 ms.
        let after = parse_buckets(&scrape(190, 200, 300), "h");
        let p50 = window_quantile(&before, &after, 0.5).unwrap();
        assert!((p50 - 0.001 * 50.0 / 90.0).abs() < 1e-9, "{p50}");
        let p95 = window_quantile(&before, &after, 0.95).unwrap();
        assert!((p95 - (0.001 + 0.009 * 0.5)).abs() < 1e-9, "{p95}");
        assert_eq!(window_quantile(&before, &before, 0.5), None);
    }
}
