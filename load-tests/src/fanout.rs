//! The `sfu-fanout` scenario: one publisher, N subscribers, one engine.
//!
//! ```text
//!   health -> room -> tokens -> publisher (WHIP, real encoder) connected
//!   -> subscribers join over WHEP (bounded concurrency), join time taken
//!      from POST to first whole frame -> settle
//!   -> snapshot (subscribers, engine counters, CPU) -> --duration
//!   -> snapshot -> close everything -> report
//! ```
//!
//! Received bitrate, loss and jitter come from the subscribers themselves;
//! outgoing packets/s and the forwarding latency from the engine's /metrics
//! (`live_media_packets_total{direction="out"}`, `live_media_forward_seconds`);
//! CPU from /proc with `--engine-pid`. Every wait has a deadline.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::bail;
use codec::VideoEncoderConfig;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::admin::{Admin, counter_deltas, parse_buckets, parse_counters, window_quantile};
use crate::cli::FanoutArgs;
use crate::proc_stats::{ProcReader, ProcSample};
use crate::report::Latency;
use crate::rtc::{
    Endpoint, PublishOptions, Publisher, Subscriber, SubscriberStats, delete_session,
};
use crate::scenario::note;

/// How long the publisher gets to connect.
const CONNECT: Duration = Duration::from_secs(15);
/// The engine's forwarding-latency histogram.
const FORWARD_METRIC: &str = "live_media_forward_seconds";
/// After the last join, before measuring: first frames land, rates settle.
const SETTLE: Duration = Duration::from_secs(3);

#[derive(Debug, Serialize)]
pub struct FanoutReport {
    pub scenario: &'static str,
    pub url: String,
    pub room: String,
    pub config: FanoutConfig,
    pub publisher: PublisherReport,
    pub subscribers: SubscribersReport,
    pub engine: EngineMedia,
    /// The load generator's CPU over the window: near its core count × 100 %
    /// means the subscribers, not the engine, were the limit.
    pub generator_cpu_percent: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct FanoutConfig {
    pub subscribers: u32,
    pub codec: String,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub video_kbps: u32,
    pub window_s: f64,
}

#[derive(Debug, Serialize)]
pub struct PublisherReport {
    pub frames: u64,
    pub keyframes: u64,
    pub keyframe_requests: u64,
    /// Encoded video bitrate over the window, kbit/s.
    pub video_kbps: f64,
}

#[derive(Debug, Serialize)]
pub struct SubscribersReport {
    pub joined: u64,
    pub failed: Vec<String>,
    /// WHEP POST -> first whole video frame, ms.
    pub join_to_first_frame_ms: Latency,
    /// Received video payload per subscriber over the window, kbit/s.
    pub kbps_min: f64,
    pub kbps_median: f64,
    pub kbps_max: f64,
    /// Lost / (received + lost) video packets, over all subscribers.
    pub loss_ratio: f64,
    pub loss_ratio_worst: f64,
    pub jitter_ms_median: f64,
    pub jitter_ms_max: f64,
    /// Subscribers that decode (a sample: decoding all would measure the
    /// generator): frames decoded, errors, and the decoded size.
    pub decoded_frames: u64,
    pub decode_errors: u64,
    pub decoded_size: Option<(u32, u32)>,
}

#[derive(Debug, Serialize)]
pub struct EngineMedia {
    pub cpu_percent: Option<f64>,
    pub rss_kb: Option<u64>,
    /// Media packets the engine sent to subscribers per second (video and
    /// audio), from its own counters.
    pub out_packets_per_s: f64,
    /// `out_packets_per_s` divided by the cores the engine used.
    pub out_packets_per_s_per_core: Option<f64>,
    pub out_mbps: f64,
    /// Receive -> last copy sent, per frame, over the window (from the
    /// engine's histogram buckets, interpolated).
    pub forward_ms_p50: Option<f64>,
    pub forward_ms_p99: Option<f64>,
}

/// How a subscriber joined: when its WHEP POST began, whether it decodes.
struct Joined {
    started: Instant,
    decode: bool,
}

struct Snapshot {
    at: Instant,
    per_subscriber: Vec<(u64, u64, u64)>,
    publisher: (u64, u64),
    engine: Option<ProcSample>,
    generator: Option<ProcSample>,
    counters: std::collections::BTreeMap<String, f64>,
    /// `live_media_forward_seconds` buckets.
    forward: Vec<(f64, f64)>,
}

pub async fn run(args: &FanoutArgs) -> anyhow::Result<FanoutReport> {
    let admin = Admin::new(&args.url, &args.admin_key)?;
    admin.health().await?;
    let engine = args.engine_pid.map(ProcReader::new).transpose()?;
    let generator = ProcReader::new(std::process::id()).ok();
    admin.ensure_room(&args.room).await?;
    let publish_token = admin
        .mint("fanout-publisher", "publisher", &args.room, &["publish"])
        .await?;
    let subscribe_token = admin
        .mint("fanout-viewer", "viewer", &args.room, &["subscribe"])
        .await?;
    let stream = format!("fanout-{:x}", crate::wire::unix_nanos() & 0xffff_ffff);
    let whip_path = format!("/whip/{}/{stream}", args.room);
    let whip = Endpoint {
        http: admin.http(),
        base: admin.base(),
        path: &whip_path,
        token: &publish_token,
    };
    let options = PublishOptions {
        video: VideoEncoderConfig {
            codec: args.codec.into(),
            width: args.width,
            height: args.height,
            fps: args.fps,
            bitrate_bps: args.video_kbps * 1000,
            keyframe_interval: args.fps * 4,
        },
        audio_bitrate_bps: 48_000,
    };
    let publisher = Publisher::start(&whip, options).await?;
    let connected = crate::rtc::wait_for(|| publisher.stats().connected(), CONNECT).await;
    if connected.is_err() {
        publisher.close().await;
        bail!("the publisher did not connect within {CONNECT:?}");
    }
    note(&format!(
        "publishing {}x{} {:?} at {} kbit/s; {} subscribers joining, {} at a time",
        args.width,
        args.height,
        args.codec,
        args.video_kbps,
        args.subscribers,
        args.join_concurrency
    ));

    let whep_path = format!("/whep/{}/{stream}", args.room);
    let joins = futures_util::stream::iter(0..args.subscribers)
        .map(|index| {
            let endpoint = Endpoint {
                http: admin.http(),
                base: admin.base(),
                path: &whep_path,
                token: &subscribe_token,
            };
            let decode = index < args.decoders;
            async move {
                let started = Instant::now();
                let joined = Subscriber::start(&endpoint, decode).await;
                (Joined { started, decode }, joined)
            }
        })
        .buffer_unordered(usize::from(args.join_concurrency))
        .collect::<Vec<_>>()
        .await;
    let mut subscribers = Vec::new();
    let mut failed = Vec::new();
    for (join, joined) in joins {
        match joined {
            Ok(subscriber) => subscribers.push((join, subscriber)),
            Err(error) => failed.push(format!("{error:#}")),
        }
    }
    note(&format!(
        "{} joined, {} failed; settling {SETTLE:?}",
        subscribers.len(),
        failed.len()
    ));
    tokio::time::sleep(SETTLE).await;

    let before = snapshot(&admin, &publisher, &subscribers, &engine, &generator).await;
    let mut left = args.duration;
    while !left.is_zero() {
        let step = left.min(Duration::from_secs(5));
        tokio::time::sleep(step).await;
        left -= step;
        let received: u64 = subscribers
            .iter()
            .map(|(_, s)| SubscriberStats::get(&s.stats().video_packets))
            .sum();
        note(&format!(
            "{:.0}s left, {received} video packets received in all",
            left.as_secs_f64()
        ));
    }
    let after = snapshot(&admin, &publisher, &subscribers, &engine, &generator).await;
    let report = build_report(args, &publisher, &subscribers, failed, &before, &after);

    for (_, subscriber) in subscribers {
        subscriber.close().await;
    }
    let _ = delete_session(&whip, publisher.location()).await;
    publisher.close().await;
    Ok(report)
}

async fn snapshot(
    admin: &Admin,
    publisher: &Publisher,
    subscribers: &[(Joined, Subscriber)],
    engine: &Option<ProcReader>,
    generator: &Option<ProcReader>,
) -> Snapshot {
    let get = SubscriberStats::get;
    let p = publisher.stats();
    let metrics = admin.metrics().await.unwrap_or_default();
    Snapshot {
        at: Instant::now(),
        per_subscriber: subscribers
            .iter()
            .map(|(_, s)| {
                let s = s.stats();
                (
                    get(&s.video_bytes),
                    get(&s.video_packets),
                    get(&s.video_packets_lost),
                )
            })
            .collect(),
        publisher: (get(&p.video_bytes), get(&p.video_frames)),
        engine: engine.as_ref().and_then(|e| e.sample().ok()),
        generator: generator.as_ref().and_then(|g| g.sample().ok()),
        counters: parse_counters(&metrics),
        forward: parse_buckets(&metrics, FORWARD_METRIC),
    }
}

fn build_report(
    args: &FanoutArgs,
    publisher: &Publisher,
    subscribers: &[(Joined, Subscriber)],
    failed: Vec<String>,
    before: &Snapshot,
    after: &Snapshot,
) -> FanoutReport {
    let window = after.at.duration_since(before.at).as_secs_f64().max(1e-9);
    let get = SubscriberStats::get;

    let mut join = Histogram::<u64>::new(3).expect("valid histogram precision");
    let mut kbps = Vec::new();
    let (mut received, mut lost, mut worst) = (0u64, 0u64, 0f64);
    let mut jitter_ms = Vec::new();
    let (mut decoded, mut decode_errors, mut decoded_size) = (0, 0, None);
    for (index, (joined, subscriber)) in subscribers.iter().enumerate() {
        let stats = subscriber.stats();
        if let Some(first) = stats.first_frame_at() {
            let _ = join.record(first.duration_since(joined.started).as_micros() as u64);
        }
        let (bytes0, packets0, lost0) = before.per_subscriber[index];
        let (bytes1, packets1, lost1) = after.per_subscriber[index];
        kbps.push((bytes1 - bytes0) as f64 * 8.0 / window / 1000.0);
        let (got, missing) = (packets1 - packets0, lost1 - lost0);
        received += got;
        lost += missing;
        if got + missing > 0 {
            worst = worst.max(missing as f64 / (got + missing) as f64);
        }
        jitter_ms.push(get(&stats.video_jitter_us) as f64 / 1000.0);
        if joined.decode {
            decoded += get(&stats.decoded_frames);
            decode_errors += get(&stats.decode_errors);
            decoded_size = Some(stats.dimensions());
        }
    }
    kbps.sort_by(f64::total_cmp);
    jitter_ms.sort_by(f64::total_cmp);
    let median = |v: &[f64]| v.get(v.len() / 2).copied().unwrap_or(0.0);

    let deltas = counter_deltas(&before.counters, &after.counters);
    let sum_out = |name: &str| -> f64 {
        deltas
            .iter()
            .filter(|(series, _)| series.starts_with(name) && series.contains("direction=\"out\""))
            .map(|(_, value)| value)
            .sum()
    };
    let out_packets_per_s = sum_out("live_media_packets_total") / window;
    let out_mbps = sum_out("live_media_bytes_total") * 8.0 / window / 1e6;
    let cpu_percent = match (&before.engine, &after.engine) {
        (Some(b), Some(a)) => Some(a.cpu_percent_since(b)),
        _ => None,
    };
    let quantile = |q: f64| {
        window_quantile(&before.forward, &after.forward, q).map(|seconds| seconds * 1000.0)
    };
    let stats = publisher.stats();
    FanoutReport {
        scenario: "sfu-fanout",
        url: args.url.clone(),
        room: args.room.clone(),
        config: FanoutConfig {
            subscribers: args.subscribers,
            codec: format!("{:?}", args.codec),
            width: args.width,
            height: args.height,
            fps: args.fps,
            video_kbps: args.video_kbps,
            window_s: window,
        },
        publisher: PublisherReport {
            frames: get(&stats.video_frames),
            keyframes: get(&stats.keyframes),
            keyframe_requests: get(&stats.keyframe_requests),
            video_kbps: (after.publisher.0 - before.publisher.0) as f64 * 8.0 / window / 1000.0,
        },
        subscribers: SubscribersReport {
            joined: subscribers.len() as u64,
            failed,
            join_to_first_frame_ms: Latency::from_us(&join),
            kbps_min: kbps.first().copied().unwrap_or(0.0),
            kbps_median: median(&kbps),
            kbps_max: kbps.last().copied().unwrap_or(0.0),
            loss_ratio: if received + lost == 0 {
                0.0
            } else {
                lost as f64 / (received + lost) as f64
            },
            loss_ratio_worst: worst,
            jitter_ms_median: median(&jitter_ms),
            jitter_ms_max: jitter_ms.last().copied().unwrap_or(0.0),
            decoded_frames: decoded,
            decode_errors,
            decoded_size,
        },
        engine: EngineMedia {
            cpu_percent,
            rss_kb: after.engine.map(|s| s.rss_kb),
            out_packets_per_s,
            out_packets_per_s_per_core: cpu_percent
                .filter(|cpu| *cpu > 1.0)
                .map(|cpu| out_packets_per_s / (cpu / 100.0)),
            out_mbps,
            forward_ms_p50: quantile(0.5),
            forward_ms_p99: quantile(0.99),
        },
        generator_cpu_percent: match (&before.generator, &after.generator) {
            (Some(b), Some(a)) => Some(a.cpu_percent_since(b)),
            _ => None,
        },
    }
}

impl FanoutReport {
    pub fn render(&self) -> String {
        let (c, s, e) = (&self.config, &self.subscribers, &self.engine);
        let opt =
            |v: Option<f64>, unit: &str| v.map_or("n/a".to_owned(), |v| format!("{v:.1}{unit}"));
        let mut out = String::new();
        let _ = writeln!(
            out,
            "live-load sfu-fanout  {} subscribers  {} {}x{}@{} {} kbit/s  window {:.1}s  {}",
            c.subscribers, c.codec, c.width, c.height, c.fps, c.video_kbps, c.window_s, self.url
        );
        let _ = writeln!(
            out,
            "  publisher    {:.0} kbit/s video, {} frames, {} keyframes, {} keyframe requests",
            self.publisher.video_kbps,
            self.publisher.frames,
            self.publisher.keyframes,
            self.publisher.keyframe_requests
        );
        let _ = writeln!(
            out,
            "  subscribers  {} joined, {} failed; join -> first frame ms: {}",
            s.joined,
            s.failed.len(),
            s.join_to_first_frame_ms.line()
        );
        let _ = writeln!(
            out,
            "  received     kbit/s min {:.0} median {:.0} max {:.0}; loss {:.4} (worst {:.4}); jitter ms median {:.2} max {:.2}",
            s.kbps_min,
            s.kbps_median,
            s.kbps_max,
            s.loss_ratio,
            s.loss_ratio_worst,
            s.jitter_ms_median,
            s.jitter_ms_max
        );
        let _ = writeln!(
            out,
            "  decoded      {} frames, {} errors, size {:?}",
            s.decoded_frames, s.decode_errors, s.decoded_size
        );
        let _ = writeln!(
            out,
            "  engine       CPU {}  out {:.0} packets/s ({} per core), {:.1} Mbit/s; forward p50 {} p99 {}",
            opt(e.cpu_percent, "%"),
            e.out_packets_per_s,
            opt(e.out_packets_per_s_per_core, ""),
            e.out_mbps,
            opt(e.forward_ms_p50, " ms"),
            opt(e.forward_ms_p99, " ms"),
        );
        let _ = writeln!(
            out,
            "  generator    CPU {}",
            opt(self.generator_cpu_percent, "%")
        );
        for reason in s.failed.iter().take(3) {
            let _ = writeln!(out, "  failed join: {reason}");
        }
        out
    }
}
