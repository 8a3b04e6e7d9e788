//! The `gifts` scenario: a sustained gift storm in which every gift is sent
//! `--retries` times at once with the same idempotency key (a client that
//! retries aggressively), against the embedded store. Over the room socket
//! (`--transport ws`, what the web app does: one socket per sender, `gift`
//! frames) or the HTTP API (`--transport http`: one POST per send).
//!
//! ```text
//!   health -> room -> fund each sender's wallet -> tokens (-> sockets)
//!   -> for --duration: gifts at --rate in total, each one as --retries
//!      concurrent sends with one key; the first receipt is its ack
//!   -> wait for stragglers -> read every sender's balance back
//! ```
//!
//! What it proves besides speed: every key got exactly one gift id
//! (`duplicates` counts keys answered with two ids), none was lost, and the
//! wallets were charged once per key (`overcharged_coins` compares the
//! balance drop with acknowledged gifts × price).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::future::join_all;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::json;
use tokio::sync::{Mutex, Semaphore};

use crate::admin::Admin;
use crate::cli::{GiftTransport, GiftsArgs, Target};
use crate::gift_socket::GiftSocket;
use crate::proc_stats::{ProcReader, ProcSample};
use crate::report::Latency;
use crate::scenario::note;

/// The gift every send carries: a flower, 50 coins.
const GIFT: &str = "flower";
const PRICE: u64 = 50;
/// Whom every gift goes to.
const RECIPIENT: &str = "bench-streamer";
/// Sends in flight at once, across all senders: over HTTP each one holds
/// a connection; over the sockets a frame costs no more than its bytes,
/// and the cap only keeps a stalled engine from piling up unbounded work.
const HTTP_IN_FLIGHT: usize = 512;
const WS_IN_FLIGHT: usize = 20_000;

#[derive(Debug, Serialize)]
pub struct GiftsReport {
    pub scenario: &'static str,
    pub url: String,
    pub senders: u32,
    pub rate: u32,
    pub retries: u32,
    pub transport: GiftTransport,
    pub window_s: f64,
    /// Distinct gifts acknowledged during the storm, per second of it.
    pub committed_per_s: f64,
    pub requests_per_s: f64,
    pub acknowledged: u64,
    pub planned: u64,
    /// Keys never acknowledged, even by a final retry after the storm.
    pub lost: u64,
    /// Keys answered with more than one gift id.
    pub duplicates: u64,
    /// Balance drop beyond acknowledged gifts × price (0: charged once).
    pub overcharged_coins: i128,
    /// Each key's first acknowledgement, from its first request.
    pub ack_latency_ms: Latency,
    /// Sends not answered with a receipt, by reason (`http 409`, an error
    /// frame's code, `timeout`).
    pub refused: HashMap<String, u64>,
    pub engine_cpu_percent: Option<f64>,
    pub generator_cpu_percent: Option<f64>,
}

#[derive(Default)]
struct Outcome {
    /// Per key: the gift ids answered.
    ids: HashMap<String, Vec<String>>,
    latency: Option<Histogram<u64>>,
    refused: HashMap<String, u64>,
}

pub async fn run(target: &Target, args: &GiftsArgs) -> anyhow::Result<GiftsReport> {
    let admin = Admin::new(&target.url, &target.admin_key)?;
    admin.health().await?;
    let engine = target.engine_pid.map(ProcReader::new).transpose()?;
    let generator = ProcReader::new(std::process::id()).ok();
    admin.ensure_room(&args.room).await?;
    let run_tag = format!("{:x}", crate::wire::unix_nanos() & 0xff_ffff);
    let funds = PRICE * u64::from(args.rate) * args.duration.as_secs().max(1) * 2;
    let mut senders = Vec::new();
    for n in 0..args.senders {
        let user = format!("gifter-{run_tag}-{n}");
        admin
            .top_up(&user, funds, &format!("fund-{user}"))
            .await
            .with_context(|| format!("funding {user}"))?;
        let token = admin
            .mint(&user, &user, &args.room, &["subscribe", "gift"])
            .await?;
        senders.push((user, token));
    }
    let channels = open_channels(&admin, args, &senders).await?;
    let balances_before = balances(&admin, &senders).await?;
    note(&format!(
        "{} senders, {} gifts/s in total, each sent {} times with one key, for {:?}",
        args.senders, args.rate, args.retries, args.duration
    ));

    let outcome = Arc::new(Mutex::new(Outcome {
        latency: Some(Histogram::new(3).expect("valid precision")),
        ..Outcome::default()
    }));
    let requests = Arc::new(AtomicU64::new(0));
    let permits = Arc::new(Semaphore::new(match args.transport {
        GiftTransport::Http => HTTP_IN_FLIGHT,
        GiftTransport::Ws => WS_IN_FLIGHT,
    }));
    let before = (sample(&engine), sample(&generator), Instant::now());
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let planned = (args.duration.as_secs_f64() * f64::from(args.rate)) as u64;
    let mut tasks = Vec::with_capacity(planned as usize);
    let mut keys = Vec::with_capacity(planned as usize);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for n in 0..planned {
        tick.tick().await;
        let sender = (n % u64::from(args.senders)) as usize;
        let key = format!("{run_tag}-{}-{n}", senders[sender].0);
        keys.push((key.clone(), sender));
        let send = Send {
            channel: channels[sender].clone(),
            key,
            retries: args.retries,
            permits: permits.clone(),
            requests: requests.clone(),
            outcome: outcome.clone(),
        };
        tasks.push(tokio::spawn(send.run()));
    }
    // Stragglers: bounded by the per-request timeout.
    let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
    let _ = tokio::time::timeout(Duration::from_secs(20), join_all(tasks)).await;
    aborts.iter().for_each(tokio::task::AbortHandle::abort);
    let after = (sample(&engine), sample(&generator), Instant::now());
    // From the first send to the last acknowledgement of the storm: a rate
    // the engine sustained, not the rate the generator asked for.
    let window = after.2.duration_since(before.2).as_secs_f64().max(1e-9);
    // Measured: what was acknowledged in the storm. Then, as a client
    // would, retry every key that got no answer, so the books can be
    // compared with every key settled one way or the other.
    let acknowledged = outcome.lock().await.ids.len() as u64;
    let unanswered: Vec<(String, usize)> = {
        let outcome = outcome.lock().await;
        keys.into_iter()
            .filter(|(key, _)| !outcome.ids.contains_key(key))
            .collect()
    };
    if !unanswered.is_empty() {
        note(&format!(
            "retrying {} keys that got no answer",
            unanswered.len()
        ));
    }
    // A client whose socket was closed under it retries on a new one.
    let channels = match args.transport {
        GiftTransport::Ws if !unanswered.is_empty() => {
            open_channels(&admin, args, &senders).await?
        }
        _ => channels,
    };
    // One by one as a client would, not all at once: a burst of every
    // unanswered key would be a storm of its own.
    let retry_permits = Arc::new(Semaphore::new(HTTP_IN_FLIGHT));
    let retries = unanswered.into_iter().map(|(key, sender)| {
        Send {
            channel: channels[sender].clone(),
            key,
            retries: 1,
            permits: retry_permits.clone(),
            requests: Arc::new(AtomicU64::new(0)),
            outcome: outcome.clone(),
        }
        .run_recording(false)
    });
    let _ = tokio::time::timeout(Duration::from_secs(60), join_all(retries)).await;

    let balances_after = balances(&admin, &senders).await?;
    let mut outcome = outcome.lock().await;
    let answered = outcome.ids.len() as u64;
    let duplicates = outcome
        .ids
        .values()
        .filter(|ids| {
            let mut ids: Vec<&String> = ids.iter().collect();
            ids.sort();
            ids.dedup();
            ids.len() > 1
        })
        .count() as u64;
    let spent: i128 = balances_before
        .iter()
        .zip(&balances_after)
        .map(|(b, a)| i128::from(*b) - i128::from(*a))
        .sum();
    let latency = outcome.latency.take().expect("set above");
    Ok(GiftsReport {
        scenario: "gifts",
        url: target.url.clone(),
        senders: args.senders,
        rate: args.rate,
        retries: args.retries,
        transport: args.transport,
        window_s: window,
        committed_per_s: acknowledged as f64 / window,
        requests_per_s: requests.load(Ordering::Relaxed) as f64 / window,
        acknowledged,
        planned,
        lost: planned.saturating_sub(answered),
        duplicates,
        overcharged_coins: spent - i128::from(answered) * i128::from(PRICE),
        ack_latency_ms: Latency::from_us(&latency),
        refused: std::mem::take(&mut outcome.refused),
        engine_cpu_percent: cpu(&before.0, &after.0),
        generator_cpu_percent: cpu(&before.1, &after.1),
    })
}

/// One channel per sender: its HTTP client, or its own room socket.
async fn open_channels(
    admin: &Admin,
    args: &GiftsArgs,
    senders: &[(String, String)],
) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(senders.len());
    for (_, token) in senders {
        channels.push(match args.transport {
            GiftTransport::Http => Channel::Http {
                http: admin.http().clone(),
                path: format!("{}/v1/rooms/{}/gifts", admin.base(), args.room),
                token: token.clone(),
            },
            GiftTransport::Ws => {
                let url = crate::wire::room_url(admin.base(), &args.room, token);
                Channel::Ws(Arc::new(GiftSocket::open(&url).await?))
            }
        });
    }
    Ok(channels)
}

/// How one sender's gifts travel.
#[derive(Clone)]
enum Channel {
    Http {
        http: reqwest::Client,
        path: String,
        token: String,
    },
    Ws(Arc<GiftSocket>),
}

/// How long one send waits for its answer.
const ANSWER_LIMIT: Duration = Duration::from_secs(10);

/// One gift: `retries` concurrent sends with one key.
struct Send {
    channel: Channel,
    key: String,
    retries: u32,
    permits: Arc<Semaphore>,
    requests: Arc<AtomicU64>,
    outcome: Arc<Mutex<Outcome>>,
}

impl Send {
    async fn run(self) {
        self.run_recording(true).await;
    }

    /// `timed`: record the acknowledgement's latency (the storm's sends;
    /// the final retry pass only settles the books).
    async fn run_recording(self, timed: bool) {
        let started = Instant::now();
        let attempts = (0..self.retries).map(|_| self.attempt());
        let answers: Vec<Result<String, String>> = join_all(attempts).await;
        let first = started.elapsed();
        let mut outcome = self.outcome.lock().await;
        let mut acknowledged = false;
        for answer in answers {
            match answer {
                Ok(id) => {
                    acknowledged = true;
                    outcome.ids.entry(self.key.clone()).or_default().push(id);
                }
                Err(reason) => *outcome.refused.entry(reason).or_default() += 1,
            }
        }
        if acknowledged
            && timed
            && let Some(histogram) = outcome.latency.as_mut()
        {
            let _ = histogram.record(first.as_micros() as u64);
        }
    }

    /// One send: the gift id, or why not.
    async fn attempt(&self) -> Result<String, String> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| "stopped".to_owned())?;
        self.requests.fetch_add(1, Ordering::Relaxed);
        match &self.channel {
            Channel::Http { http, path, token } => {
                let response = http
                    .post(path)
                    .bearer_auth(token)
                    .header("Idempotency-Key", &self.key)
                    .json(&json!({ "gift_id": GIFT, "count": 1, "to": RECIPIENT }))
                    .timeout(ANSWER_LIMIT)
                    .send()
                    .await
                    .map_err(|e| {
                        if e.is_timeout() {
                            "timeout"
                        } else {
                            "http error"
                        }
                        .to_owned()
                    })?;
                let status = response.status().as_u16();
                let refused = || format!("http {status}");
                if status != 200 && status != 201 {
                    return Err(refused());
                }
                let body: serde_json::Value = response.json().await.map_err(|_| refused())?;
                body["id"].as_str().map(str::to_owned).ok_or_else(refused)
            }
            Channel::Ws(socket) => {
                let frame = json!({
                    "type": "gift",
                    "gift_id": GIFT,
                    "count": 1,
                    "to": RECIPIENT,
                    "idempotency_key": self.key,
                });
                socket
                    .send(&self.key, frame.to_string(), ANSWER_LIMIT)
                    .await
            }
        }
    }
}

async fn balances(admin: &Admin, senders: &[(String, String)]) -> anyhow::Result<Vec<u64>> {
    let mut balances = Vec::with_capacity(senders.len());
    for (user, _) in senders {
        balances.push(admin.balance(user).await?);
    }
    Ok(balances)
}

fn sample(reader: &Option<ProcReader>) -> Option<ProcSample> {
    reader.as_ref().and_then(|r| r.sample().ok())
}

fn cpu(before: &Option<ProcSample>, after: &Option<ProcSample>) -> Option<f64> {
    Some(after.as_ref()?.cpu_percent_since(before.as_ref()?))
}

impl GiftsReport {
    pub fn render(&self) -> String {
        let opt = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.1}%"));
        let mut out = String::new();
        let _ = writeln!(
            out,
            "gifts  {} senders  {} gifts/s x {} retries over {:?}  window {:.1}s  {}",
            self.senders, self.rate, self.retries, self.transport, self.window_s, self.url
        );
        let _ = writeln!(
            out,
            "  committed    {:.0} gifts/s ({} of {} acknowledged), {:.0} requests/s",
            self.committed_per_s, self.acknowledged, self.planned, self.requests_per_s
        );
        let _ = writeln!(
            out,
            "  exactly once lost {}, duplicates {}, overcharged coins {}",
            self.lost, self.duplicates, self.overcharged_coins
        );
        let _ = writeln!(out, "  ack ms       {}", self.ack_latency_ms.line());
        if !self.refused.is_empty() {
            let _ = writeln!(out, "  refused      {:?}", self.refused);
        }
        let _ = writeln!(
            out,
            "  cpu          engine {}  generator {}",
            opt(self.engine_cpu_percent),
            opt(self.generator_cpu_percent)
        );
        out
    }

    /// Fails when money was lost or charged twice: the run's verdict.
    pub fn verify(&self) -> anyhow::Result<()> {
        if self.duplicates > 0 || self.overcharged_coins != 0 || self.lost > 0 {
            bail!(
                "exactly-once violated: {} lost, {} duplicates, {} coins overcharged",
                self.lost,
                self.duplicates,
                self.overcharged_coins
            );
        }
        Ok(())
    }
}
