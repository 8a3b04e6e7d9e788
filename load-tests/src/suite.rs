//! Comparisons the runner sets up itself: it starts a fresh engine and the
//! scenario's peer (one after the other, pinned to the same CPUs, fed the
//! same load), runs the same scenario against each, stops them, and puts
//! the figures side by side ([`compare`]). `load-tests all` runs every
//! scenario this way and writes one report.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;

use crate::cli::{
    CaptionsArgs, Cli, Command, DanmakuArgs, FanoutArgs, GiftTransport, GiftsArgs, OutArgs,
    SuiteArgs, TranscodeArgs,
};
use crate::compare::{self, Better, Comparison, Machine, Row, SuiteReport};
use crate::fanout;
use crate::peers::engine::{self, EngineSetup, RunningEngine};
use crate::peers::janus;
use crate::peers::nats_ws;
use crate::peers::netns::Namespace;
use crate::peers::process::{Launch, Server};
use crate::peers::rtp_feed;
use crate::progress::{self, note};

/// `load-tests all`: each scenario's command line, as a user would type
/// it, so the suite runs exactly what the single commands run.
const FULL: &[&str] = &[
    "transcode",
    "sfu-fanout --n 50 --duration 15s",
    "sfu-fanout --n 100 --duration 15s",
    "join --n 20 --duration 1s",
    "danmaku --n 1000 --senders 10 --rate 200 --duration 15s",
    "danmaku --n 5000 --senders 10 --rate 100 --duration 15s",
    "gifts --rate 4500 --retries 10 --duration 10s",
    "gifts --rate 500 --retries 10 --duration 10s --transport http",
    "captions --lines 16",
    "captions --lines 16 --transcoding",
];

/// `load-tests all --quick`: the same scenarios, tiny and short.
const QUICK: &[&str] = &[
    "transcode --frames 30 --width 320 --height 180 --ladder 180:300 --max-concurrent 1",
    "sfu-fanout --n 3 --width 320 --height 180 --video-kbps 300 --duration 3s",
    "join --n 2 --width 320 --height 180 --video-kbps 300 --duration 1s",
    "danmaku --n 20 --senders 2 --rate 20 --duration 2s --grace 1s",
    "gifts --senders 5 --rate 20 --retries 3 --duration 2s",
    "captions --lines 2",
];

/// Runs every scenario of the plan, keeps going past a failed one (its
/// reason goes into the report), writes the report, and fails at the end
/// if any scenario did.
pub async fn all(bench: &Bench, args: &SuiteArgs) -> anyhow::Result<()> {
    let plan = if args.quick { QUICK } else { FULL };
    let mut report = SuiteReport {
        date: compare::first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        quick: args.quick,
        machine: Machine::detect(),
        versions: versions(),
        comparisons: Vec::new(),
        failures: Vec::new(),
    };
    progress::start(plan.len() as u64);
    for line in plan {
        let name = line.to_string();
        progress::step(&name);
        match scenario(bench, line).await {
            Ok(comparison) => report.comparisons.push(comparison),
            Err(error) => {
                note(&format!("{name} failed: {error:#}"));
                report.failures.push((name, format!("{error:#}")));
            }
        }
        progress::advance();
    }
    progress::finish();
    let markdown = report.markdown();
    println!("{markdown}");
    write_outputs(
        &OutArgs {
            out: Some(args.out.clone()),
        },
        &report,
        Some(&markdown),
    )?;
    let docs = match (&args.docs, args.quick) {
        (Some(docs), _) => Some(docs.clone()),
        (None, false) => Some(PathBuf::from("docs/benchmarks.md")),
        (None, true) => None,
    };
    if let Some(docs) = docs {
        compare::splice_file(&docs, &markdown)?;
        note(&format!("updated {}", docs.display()));
    }
    if !report.failures.is_empty() {
        bail!(
            "{} of {} scenarios failed",
            report.failures.len(),
            plan.len()
        );
    }
    Ok(())
}

/// One scenario of the plan, parsed as its command line would be.
async fn scenario(bench: &Bench, line: &str) -> anyhow::Result<Comparison> {
    let cli = Cli::try_parse_from(std::iter::once("load-tests").chain(line.split_whitespace()))
        .context("the suite's own command line")?;
    match cli.command {
        Command::Transcode(args) => {
            args.validate()?;
            transcode(&args).await
        }
        Command::SfuFanout(args) => {
            args.validate()?;
            sfu_fanout(bench, &args).await
        }
        Command::Join(args) => {
            args.validate()?;
            join(bench, &args).await
        }
        Command::Danmaku(args) => {
            args.validate()?;
            danmaku(bench, &args).await
        }
        Command::Gifts(args) => {
            args.validate()?;
            gifts(bench, &args).await
        }
        Command::Captions(args) => {
            args.validate()?;
            captions(bench, &args).await
        }
        Command::All(_) => bail!("`all` inside `all`"),
    }
}

/// The versions of everything compared.
fn versions() -> Vec<(String, String)> {
    let git = compare::first_line("git", &["rev-parse", "--short", "HEAD"]);
    vec![
        ("engine (git)".into(), git),
        ("rustc".into(), compare::first_line("rustc", &["--version"])),
        ("Janus".into(), compare::first_line("janus", &["--version"])),
        (
            "nats-server".into(),
            compare::first_line("nats-server", &["--version"]),
        ),
        (
            "ffmpeg".into(),
            compare::first_line("ffmpeg", &["-hide_banner", "-version"]),
        ),
    ]
}

/// Writes `report` as JSON to `--out` and `markdown` (if any) beside it.
pub fn write_outputs(
    out: &OutArgs,
    report: &impl serde::Serialize,
    markdown: Option<&str>,
) -> anyhow::Result<()> {
    let Some(path) = &out.out else {
        return Ok(());
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    crate::report::write_json_file(report, path)?;
    note(&format!("wrote {}", path.display()));
    if let Some(markdown) = markdown {
        let md = path.with_extension("md");
        std::fs::write(&md, markdown).with_context(|| format!("writing {}", md.display()))?;
        note(&format!("wrote {}", md.display()));
    }
    Ok(())
}

/// Prints a single scenario's comparison and writes it.
pub fn write_comparison(out: &OutArgs, comparison: Comparison) -> anyhow::Result<()> {
    let markdown = comparison.markdown();
    println!("{markdown}");
    write_outputs(out, &comparison, Some(&markdown))
}

/// What every comparison shares: the engine binary, where servers run, a
/// scratch directory for their data and logs.
pub struct Bench {
    pub engine_bin: PathBuf,
    /// `taskset -c` list for the servers (engine and peers alike).
    pub server_cpus: Option<String>,
    pub work: tempfile::TempDir,
    next_port: std::sync::atomic::AtomicU16,
}

impl Bench {
    pub fn new(engine_bin: Option<PathBuf>, server_cpus: Option<String>) -> anyhow::Result<Self> {
        let engine_bin = match engine_bin {
            Some(path) => path,
            None => engine::default_binary()?,
        };
        let server_cpus = server_cpus.or_else(default_server_cpus);
        Ok(Self {
            engine_bin,
            server_cpus,
            work: tempfile::tempdir().context("a scratch directory")?,
            next_port: std::sync::atomic::AtomicU16::new(18_100),
        })
    }

    /// Two fresh ports (HTTP, media) per server, so a server that is slow
    /// to release its ports does not stall the next.
    pub fn ports(&self) -> (u16, u16) {
        let port = self
            .next_port
            .fetch_add(2, std::sync::atomic::Ordering::Relaxed);
        (port, port + 1)
    }

    pub fn cpus(&self) -> Option<&str> {
        self.server_cpus.as_deref()
    }

    /// A fresh engine on `ip` (127.0.0.1 or `namespace`'s address),
    /// pinned to the servers' CPUs.
    pub async fn engine(
        &self,
        namespace: Option<&Namespace>,
        env: Vec<(String, String)>,
    ) -> anyhow::Result<RunningEngine> {
        self.engine_on(self.cpus(), namespace, env).await
    }

    /// [`Self::engine`] on `cpus` (none: unpinned).
    pub async fn engine_on(
        &self,
        cpus: Option<&str>,
        namespace: Option<&Namespace>,
        env: Vec<(String, String)>,
    ) -> anyhow::Result<RunningEngine> {
        let (http_port, media_port) = self.ports();
        let ip = namespace.map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |ns| IpAddr::V4(ns.ns_ip));
        let work = self.work.path().join(format!("engine-{http_port}"));
        std::fs::create_dir_all(&work)?;
        engine::start(EngineSetup {
            binary: &self.engine_bin,
            ip,
            http_port,
            media_port,
            cpus,
            namespace,
            work: &work,
            env,
        })
        .await
    }
}

/// Servers on CPU 0, the generator on the others (scripts/bench pins the
/// runner there): the servers' CPU figures are then out of one core. On a
/// single core machine nothing is pinned.
fn default_server_cpus() -> Option<String> {
    (compare::machine_cores() > 1).then(|| "0".to_owned())
}

fn json(value: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

/// The transcoder against the ffmpeg CLI: the report already holds both.
pub async fn transcode(args: &TranscodeArgs) -> anyhow::Result<Comparison> {
    let run = args.clone();
    let report = tokio::task::spawn_blocking(move || crate::transcode::run(&run)).await??;
    println!("{}", report.render());
    let (e, f) = (&report.engine, &report.ffmpeg_cli);
    let rows = vec![
        Row::new("ladder fps", "fps", Better::Higher).values(Some(e.fps), Some(f.fps)),
        Row::new("CPU per frame", "ms", Better::Lower)
            .values(Some(e.cpu_ms_per_frame), Some(f.cpu_ms_per_frame)),
        // One thread per ladder: what one core keeps in real time.
        Row::new("real-time ladders per core", "", Better::Higher).values(
            Some(1.0 / e.cores_per_stream),
            Some(1.0 / f.cores_per_stream),
        ),
        Row::new(
            "ladders in real time at once on the runner's CPUs",
            "",
            Better::Higher,
        )
        .values(Some(report.realtime_ladders as f64), None),
    ];
    Ok(Comparison {
        scenario: "transcode".into(),
        peer: "ffmpeg CLI".into(),
        setup: format!(
            "{} frames of {} through the ladder {} with {} (the CLI gets the engine's encoder \
             settings, one thread per codec on both sides); fps and CPU from this process's \
             /proc and the CLI's `-benchmark` line.",
            report.frames,
            report.input,
            report.ladder.join(", "),
            report.encoder
        ),
        rows,
        engine_report: json(&report),
        peer_report: serde_json::Value::Null,
    })
}

/// Gifts have no peer: the figures stand alone (exactly-once under a retry
/// storm is the point).
pub async fn gifts(bench: &Bench, args: &GiftsArgs) -> anyhow::Result<Comparison> {
    let engine = bench.engine(None, vec![]).await?;
    note(&format!("engine up at {}", engine.target.url));
    let report = crate::gifts::run(&engine.target, args).await;
    engine.server.stop();
    let report = report?;
    println!("{}", report.render());
    report
        .verify()
        .context("gifts were lost, duplicated or overcharged")?;
    let rows = vec![
        Row::new("committed gifts/s", "/s", Better::Higher)
            .values(Some(report.committed_per_s), None),
        Row::new("sends/s (retries included)", "/s", Better::Higher)
            .values(Some(report.requests_per_s), None),
        Row::new("ack p99", "ms", Better::Lower).values(Some(report.ack_latency_ms.p99), None),
        Row::new("lost", "", Better::Lower).values(Some(report.lost as f64), None),
        Row::new("duplicates", "", Better::Lower).values(Some(report.duplicates as f64), None),
        Row::new("engine CPU", "%", Better::Lower).values(report.engine_cpu_percent, None),
    ];
    Ok(Comparison {
        scenario: "gifts".into(),
        peer: "no peer".into(),
        setup: format!(
            "{} senders, {} gifts/s asked for {:.0} s, each gift sent {} times at once with one \
             idempotency key, {}; the books are checked after (every key charged exactly once).",
            args.senders,
            args.rate,
            args.duration.as_secs_f64(),
            args.retries,
            match args.transport {
                GiftTransport::Ws =>
                    "as `gift` frames on one room socket per sender (the web app's way)",
                GiftTransport::Http => "as HTTP POSTs",
            }
        ),
        rows,
        engine_report: json(&report),
        peer_report: serde_json::Value::Null,
    })
}

/// Captions on the runner's engine, recognizing with the models under
/// `--models`; no peer runs here (the anchors are in the setup
/// line: Ofcom measured 5.6 s live-subtitle delay against a 3 s
/// recommendation, Whisper-Streaming reports 3.3 s).
pub async fn captions(bench: &Bench, args: &CaptionsArgs) -> anyhow::Result<Comparison> {
    let models = std::path::absolute(&args.models).context("the models directory")?;
    // Recognition takes about a core and a half per speaking stream with
    // these models: the engine gets the machine (the runner here only
    // sends a small VP8 picture and reads two sockets), and one
    // recognition every core. Pinned to one core shared with the media
    // thread it falls behind (docs/benchmarks.md).
    let threads = compare::machine_cores();
    let env = vec![
        ("LIVE_CAPTIONS__ASR".to_owned(), "true".to_owned()),
        ("LIVE_CAPTIONS__ASR_THREADS".to_owned(), threads.to_string()),
        (
            "LIVE_CAPTIONS__MODEL_DIR".to_owned(),
            models.join("whisper-base").display().to_string(),
        ),
        (
            "LIVE_CAPTIONS__PARTIAL_MODEL_DIR".to_owned(),
            models.join("whisper-tiny.en").display().to_string(),
        ),
        (
            "LIVE_TRANSCODE__ENABLED".to_owned(),
            args.transcoding.to_string(),
        ),
    ];
    let engine = bench.engine_on(None, None, env).await?;
    note(&format!("engine up at {}", engine.target.url));
    let report = crate::captions::run(&engine.target, args).await;
    engine.server.stop();
    let report = report?;
    println!("{}", report.render());
    let rows = vec![
        Row::new("speech end -> final caption p50", "ms", Better::Lower)
            .values(Some(report.final_ms.p50), None),
        Row::new("speech end -> final caption p95", "ms", Better::Lower)
            .values(Some(report.final_ms.p95), None),
        Row::new("speech end -> translated caption p50", "ms", Better::Lower)
            .values(Some(report.translated_ms.p50), None),
        Row::new("speech end -> translated caption p95", "ms", Better::Lower)
            .values(Some(report.translated_ms.p95), None),
        Row::new("word error rate", "%", Better::Lower)
            .values(Some(report.word_error_rate * 100.0), None),
        Row::new(
            "recognizer real-time factor (final, p50)",
            "",
            Better::Lower,
        )
        .values(report.realtime_factor_final, None),
        Row::new(
            "recognizer real-time factor (partial, p50)",
            "",
            Better::Lower,
        )
        .values(report.realtime_factor_partial, None),
    ];
    Ok(Comparison {
        scenario: if args.transcoding {
            "captions, transcoding too".into()
        } else {
            "captions".into()
        },
        peer: "no peer".into(),
        setup: format!(
            "{} espeak-ng sentences ({:.0} s) into one WHIP stream (VP8 320x180 15 fps + Opus){}; \
             Whisper base for final lines, tiny.en for partial ones (int8, {threads} threads, \
             the engine unpinned); Apertium en->es; two viewers (English, Spanish). Anchors: Ofcom \
             measured 5.6 s against a 3 s recommendation, Whisper-Streaming 3.3 s.",
            report.lines_said,
            report.speech_s,
            if args.transcoding {
                ", transcoded to the ladder and recorded"
            } else {
                ""
            }
        ),
        rows,
        engine_report: json(&report),
        peer_report: serde_json::Value::Null,
    })
}

/// The engine and Janus's streaming plugin, each in its own network
/// namespace behind a veth pair (Janus gathers no loopback candidates; the
/// engine gets the same path to be fair), one after the other, pinned to
/// the same CPUs, the same N webrtc-rs subscribers, the same media: VP8
/// from libvpx with the engine's real-time settings and an Opus tone
/// (the engine's over WHIP from the runner, Janus's over RTP from the
/// ffmpeg CLI with the same settings).
pub async fn sfu_fanout(bench: &Bench, args: &FanoutArgs) -> anyhow::Result<Comparison> {
    let (engine_report, janus_report) = both_sfus(bench, args).await?;
    let (e, j) = (&engine_report, &janus_report);
    let rows = vec![
        Row::new("subscribers per core (loss < 0.5 %)", "", Better::Higher)
            .values(e.server.subscribers_per_core, j.server.subscribers_per_core),
        Row::new("server CPU per subscriber", "% of a core", Better::Lower).values(
            e.server.cpu_percent_per_subscriber,
            j.server.cpu_percent_per_subscriber,
        ),
        Row::new(
            "packets received per s per server core",
            "/s",
            Better::Higher,
        )
        .values(
            e.server.received_packets_per_s_per_core,
            j.server.received_packets_per_s_per_core,
        ),
        Row::new("video loss", "%", Better::Lower).values(
            Some(e.subscribers.loss_ratio * 100.0),
            Some(j.subscribers.loss_ratio * 100.0),
        ),
        Row::new(
            "received video (median subscriber)",
            "kbit/s",
            Better::Higher,
        )
        .values(
            Some(e.subscribers.kbps_median),
            Some(j.subscribers.kbps_median),
        ),
        Row::new("jitter (median subscriber)", "ms", Better::Lower).values(
            Some(e.subscribers.jitter_ms_median),
            Some(j.subscribers.jitter_ms_median),
        ),
        Row::new("join -> first frame p50", "ms", Better::Lower).values(
            Some(e.subscribers.join_to_first_frame_ms.p50),
            Some(j.subscribers.join_to_first_frame_ms.p50),
        ),
        Row::new("join -> first frame p95", "ms", Better::Lower).values(
            Some(e.subscribers.join_to_first_frame_ms.p95),
            Some(j.subscribers.join_to_first_frame_ms.p95),
        ),
        Row::new("engine: outgoing packets/s per core", "/s", Better::Higher)
            .values(e.server.out_packets_per_s_per_core, None),
        Row::new("engine: forwarding p50", "ms", Better::Lower)
            .values(e.server.forward_ms_p50, None),
        Row::new("engine: forwarding p99", "ms", Better::Lower)
            .values(e.server.forward_ms_p99, None),
    ];
    Ok(sfu_comparison(
        format!("sfu-fanout, {} subscribers", args.subscribers),
        bench,
        args,
        rows,
        &engine_report,
        &janus_report,
    ))
}

/// Joins one at a time (nothing else in flight), on both SFUs: what a
/// viewer waits for between pressing play and the first picture.
pub async fn join(bench: &Bench, args: &FanoutArgs) -> anyhow::Result<Comparison> {
    let args = FanoutArgs {
        join_concurrency: 1,
        serial_joins: true,
        ..args.clone()
    };
    let (engine_report, janus_report) = both_sfus(bench, &args).await?;
    let (e, j) = (
        &engine_report.subscribers.join_to_first_frame_ms,
        &janus_report.subscribers.join_to_first_frame_ms,
    );
    let rows = vec![
        Row::new("join -> first frame p50", "ms", Better::Lower).values(Some(e.p50), Some(j.p50)),
        Row::new("join -> first frame p95", "ms", Better::Lower).values(Some(e.p95), Some(j.p95)),
        Row::new("join -> first frame max", "ms", Better::Lower).values(Some(e.max), Some(j.max)),
        Row::new("joins that failed", "", Better::Lower).values(
            Some(engine_report.subscribers.failed.len() as f64),
            Some(janus_report.subscribers.failed.len() as f64),
        ),
    ];
    Ok(sfu_comparison(
        format!("join, {} viewers one after another", args.subscribers),
        bench,
        &args,
        rows,
        &engine_report,
        &janus_report,
    ))
}

fn sfu_comparison(
    scenario: String,
    bench: &Bench,
    args: &FanoutArgs,
    rows: Vec<Row>,
    engine_report: &fanout::FanoutReport,
    janus_report: &fanout::FanoutReport,
) -> Comparison {
    Comparison {
        scenario,
        peer: "Janus 1.1.2 streaming plugin".into(),
        setup: format!(
            "Each SFU alone in its own network namespace behind a veth pair, pinned to CPU {}; \
             {} webrtc-rs subscribers ({} at a time joining, one decoding) in the runner's \
             namespace on the other CPUs; {} {}x{} at {} fps, {} kbit/s, a keyframe every 4 s, \
             plus Opus: the engine's from a WHIP publisher (libvpx, real-time settings), Janus's \
             from the ffmpeg CLI over RTP with the same encoder settings (its mountpoint keeps the \
             last keyframe for new viewers). Join time: first request (WHEP POST, Janus `create`) \
             to the first whole frame. Figures at the subscribers over a {:.0} s window; CPU \
             from /proc.",
            bench.cpus().unwrap_or("any"),
            args.subscribers,
            args.join_concurrency,
            format!("{:?}", args.codec).to_uppercase(),
            args.width,
            args.height,
            args.fps,
            args.video_kbps,
            args.duration.as_secs_f64()
        ),
        rows,
        engine_report: json(engine_report),
        peer_report: json(janus_report),
    }
}

/// The same fan-out on the engine, then on Janus.
async fn both_sfus(
    bench: &Bench,
    args: &FanoutArgs,
) -> anyhow::Result<(fanout::FanoutReport, fanout::FanoutReport)> {
    let engine_report = {
        let namespace = Namespace::create(1)?;
        let engine = bench.engine(Some(&namespace), vec![]).await?;
        note(&format!(
            "engine up at {} (namespace {})",
            engine.target.url,
            namespace.name()
        ));
        let report = fanout::run(fanout::Sfu::Engine(&engine.target), args).await;
        engine.server.stop();
        report?
    };
    println!("{}", engine_report.render());
    let janus_report = {
        let namespace = Namespace::create(2)?;
        let janus = start_janus(bench, &namespace, args.subscribers).await?;
        let feed = start_feed(&namespace, &janus, args)?;
        note(&format!(
            "janus up at {} (namespace {})",
            janus.setup.base_url(),
            namespace.name()
        ));
        let base = janus.setup.base_url();
        let report = fanout::run(
            fanout::Sfu::Janus {
                base: &base,
                mountpoint: janus::MOUNTPOINT_ID,
                pid: Some(janus.server.pid()),
            },
            args,
        )
        .await;
        feed.stop();
        janus.server.stop();
        report?
    };
    println!("{}", janus_report.render());
    Ok((engine_report, janus_report))
}

/// A Janus and its configuration, in `namespace`.
struct RunningJanus {
    server: Server,
    setup: janus::JanusSetup,
}

async fn start_janus(
    bench: &Bench,
    namespace: &Namespace,
    viewers: u32,
) -> anyhow::Result<RunningJanus> {
    let (http_port, _) = bench.ports();
    let dir = bench.work.path().join(format!("janus-{http_port}"));
    std::fs::create_dir_all(&dir)?;
    let setup = janus::JanusSetup {
        dir: dir.clone(),
        http: std::net::SocketAddr::new(IpAddr::V4(namespace.ns_ip), http_port),
        video_port: 5004,
        audio_port: 5006,
        // A port per viewer (each handle has its own ICE socket), twice over.
        rtp_port_range: (20_000, 20_000 + (viewers as u16).saturating_mul(2).max(100)),
    };
    let server = janus::start(&setup, namespace, bench.cpus()).await?;
    Ok(RunningJanus { server, setup })
}

/// The ffmpeg CLI feeding Janus's mountpoint: the same pattern, size,
/// rate, bitrate and keyframe interval as the engine's publisher, and a
/// bounded life (the joins, the window and a margin).
fn start_feed(
    namespace: &Namespace,
    janus: &RunningJanus,
    args: &FanoutArgs,
) -> anyhow::Result<Server> {
    let seconds = (args.duration.as_secs() + 120).min(3600) as u32;
    let spec = rtp_feed::FeedSpec {
        width: args.width,
        height: args.height,
        fps: args.fps,
        video_kbps: args.video_kbps,
        keyframe_interval: args.fps * 4,
        seconds,
    };
    rtp_feed::start(
        namespace.ns_ip,
        janus.setup.video_port,
        janus.setup.audio_port,
        spec,
        &janus.setup.dir,
    )
}

/// The engine's room fan-out against nats-server's WebSocket listener:
/// the same viewers, senders, rate and payload (the JSON a danmaku sender
/// writes), each server fresh on 127.0.0.1 and pinned to the same CPUs.
pub async fn danmaku(bench: &Bench, args: &DanmakuArgs) -> anyhow::Result<Comparison> {
    let engine_report = {
        let engine = bench.engine(None, vec![]).await?;
        note(&format!("engine up at {}", engine.target.url));
        let report = crate::scenario::run(&engine.target, args).await;
        engine.server.stop();
        report?
    };
    println!("{}", engine_report.render());
    let nats_report = {
        let (ws_port, client_port) = bench.ports();
        let dir = bench.work.path().join(format!("nats-{ws_port}"));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("nats.conf");
        std::fs::write(&config, nats_ws::config(ws_port, client_port, None))?;
        let mut server = Server::spawn(Launch {
            name: "nats-server",
            program: "nats-server",
            args: vec!["-c".into(), config.display().to_string()],
            env: vec![],
            cpus: bench.cpus(),
            namespace: None,
            log_dir: &dir,
            profile: true,
        })?;
        let ws = std::net::SocketAddr::from((Ipv4Addr::LOCALHOST, ws_port));
        server
            .wait_ready(std::time::Duration::from_secs(10), || async move {
                tokio::net::TcpStream::connect(ws).await.is_ok()
            })
            .await?;
        let nats_args = nats_ws::NatsFanoutArgs {
            ws_url: format!("ws://{ws}"),
            subject: format!("room.{}", args.room),
            viewers: args.viewers,
            senders: args.senders,
            rate: args.rate,
            duration: args.duration,
            grace: args.grace,
            ramp: args.ramp,
            connect_timeout: args.connect_timeout,
            server_pid: Some(server.pid()),
        };
        nats_args.validate()?;
        let report = nats_ws::run(&nats_args).await;
        server.stop();
        report?
    };
    println!("{}", nats_report.render());
    let (e, n) = (&engine_report, &nats_report);
    let (e_server, n_server) = (e.engine.as_ref(), n.server.as_ref());
    let per_core = e_server
        .map(|s| s.cpu_percent)
        .filter(|cpu| *cpu > 1.0)
        .map(|cpu| e.delivery.per_s / (cpu / 100.0));
    let rows = vec![
        Row::new("deliveries/s", "/s", Better::Higher)
            .values(Some(e.delivery.per_s), Some(n.delivery.per_s)),
        Row::new("deliveries/s per server core", "/s", Better::Higher)
            .values(per_core, n.deliveries_per_s_per_core),
        Row::new("delivered", "%", Better::Higher).values(
            Some(e.delivery.ratio * 100.0),
            Some(n.delivery.ratio * 100.0),
        ),
        Row::new("latency p50", "ms", Better::Lower).values(
            Some(e.delivery.latency_ms.p50),
            Some(n.delivery.latency_ms.p50),
        ),
        Row::new("latency p99", "ms", Better::Lower).values(
            Some(e.delivery.latency_ms.p99),
            Some(n.delivery.latency_ms.p99),
        ),
        Row::new("server CPU", "% of a core", Better::Lower).values(
            e_server.map(|s| s.cpu_percent),
            n_server.map(|s| s.cpu_percent),
        ),
        Row::new("memory per idle connection", "KiB", Better::Lower).values(
            e_server.map(|s| s.kb_per_connection),
            n_server.map(|s| s.kb_per_connection),
        ),
    ];
    Ok(Comparison {
        scenario: format!("danmaku, {} viewers at {}/s", args.viewers, args.rate),
        peer: "nats-server WebSocket".into(),
        setup: format!(
            "{} WebSocket viewers and {} senders posting {} messages/s in total for {:.0} s, \
             each server fresh on 127.0.0.1 and pinned to CPU {}, the generator (tokio tasks, \
             one per socket) on the others. The engine's viewers join a room (JSON frames, its \
             50 ms batching on); nats-server's subscribe to one subject and get each message as \
             its own MSG; the payload is the JSON a danmaku sender writes, so sizes are equal. \
             Latency: the send time in each message to its arrival at every viewer.",
            args.viewers,
            args.senders,
            args.rate,
            args.duration.as_secs_f64(),
            bench.cpus().unwrap_or("any")
        ),
        rows,
        engine_report: json(&engine_report),
        peer_report: json(&nats_report),
    })
}
