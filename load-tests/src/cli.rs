//! Flags. Every count, rate and time has an upper bound so that a typo
//! (`--viewers 1000000`) fails at once instead of exhausting the machine.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Parser, Subcommand};

/// Upper bounds, checked before anything connects.
pub const MAX_VIEWERS: u32 = 100_000;
pub const MAX_SENDERS: u32 = 1_000;
pub const MAX_RATE: u32 = 100_000;
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
pub const MAX_GRACE: Duration = Duration::from_secs(60);

#[derive(Debug, Parser)]
#[command(
    name = "load-tests",
    version,
    about = "Load generator for a running live-engine (loopback benchmarks)"
)]
pub struct Cli {
    /// Runtime worker threads (default: one per core). Lower it to leave
    /// cores to an engine on the same machine.
    #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
    /// The engine binary the runner starts when there is no --url
    /// (default: `live-engine` beside this executable).
    #[arg(long, global = true)]
    pub engine_bin: Option<PathBuf>,
    /// CPUs (`taskset -c` list) for the servers the runner starts, engine
    /// and peers alike (default: 0, when there is more than one core).
    #[arg(long, global = true)]
    pub server_cpus: Option<String>,
    /// Write a CPU profile (flame graph and hottest functions, from `perf
    /// record`) of every server the runner starts into this directory.
    #[arg(long, global = true)]
    pub profile: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// N viewers watch one room while M senders post danmaku at a fixed
    /// total rate; reports delivery ratio, end-to-end latency and, with
    /// --engine-pid, the engine's CPU and memory per connection.
    Danmaku(DanmakuArgs),
    /// One WHIP publisher sends a real encoded test pattern; N webrtc-rs
    /// subscribers play it over WHEP. Reports received bitrate, loss and
    /// jitter, join -> first frame, and the engine's outgoing packets/s,
    /// forwarding latency and CPU.
    SfuFanout(FanoutArgs),
    /// Viewers join one after another while a stream plays: join -> first
    /// frame, per viewer (the sfu-fanout flags; --join-concurrency is 1).
    Join(FanoutArgs),
    /// A gift storm over HTTP: every gift sent --retries times at once with
    /// one Idempotency-Key. Reports committed gifts/s, ack latency, and
    /// whether every key was charged exactly once (exits 1 if not).
    Gifts(GiftsArgs),
    /// The engine's transcoder and the ffmpeg CLI on the same clip, ladder
    /// and encoder settings: fps and CPU side by side, then how many
    /// ladders run in real time at once. Needs no engine.
    Transcode(TranscodeArgs),
    /// A streamer speaks known sentences (espeak-ng) into a WHIP stream;
    /// two viewers read its captions, one in the spoken language, one in
    /// Spanish. Reports speech end -> final and -> translated caption,
    /// the word error rate and the recognizer's real-time factor.
    Captions(CaptionsArgs),
    /// Every scenario against its peer, one after the other, into one
    /// report (JSON, markdown, and the generated part of
    /// docs/benchmarks.md).
    All(SuiteArgs),
}

#[derive(Debug, Clone, Args)]
pub struct SuiteArgs {
    /// Tiny loads for a few seconds each: shows that every scenario runs
    /// and yields numbers (CI's smoke test); the figures mean nothing.
    #[arg(long)]
    pub quick: bool,
    /// The JSON report; the markdown goes beside it (`.md`).
    #[arg(long, default_value = "target/bench/report.json")]
    pub out: PathBuf,
    /// A markdown file whose generated section (between the markers) is
    /// replaced by the results; default docs/benchmarks.md, none in --quick.
    #[arg(long)]
    pub docs: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct TranscodeArgs {
    /// Frames in the input clip.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(30..=3000))]
    pub frames: u32,
    #[arg(long, default_value_t = 1280, value_parser = clap::value_parser!(u32).range(64..=3840))]
    pub width: u32,
    #[arg(long, default_value_t = 720, value_parser = clap::value_parser!(u32).range(64..=2160))]
    pub height: u32,
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=60))]
    pub fps: u32,
    /// Renditions as `height:kbps`, best first.
    #[arg(long, default_value = "720:2500,480:1200,360:700")]
    pub ladder: String,
    /// `libx264` or `h264_nvenc`.
    #[arg(long, default_value = "libx264")]
    pub encoder: String,
    /// Most ladders tried at once.
    #[arg(long, visible_alias = "n", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=32))]
    pub max_concurrent: u16,
    #[command(flatten)]
    pub out: OutArgs,
}

impl TranscodeArgs {
    pub fn validate(&self) -> anyhow::Result<()> {
        if !self.width.is_multiple_of(2) || !self.height.is_multiple_of(2) {
            bail!("--width and --height must be even (4:2:0 video)");
        }
        if !["libx264", "h264_nvenc"].contains(&self.encoder.as_str()) {
            bail!("--encoder must be libx264 or h264_nvenc");
        }
        if self.ladder_specs().is_empty() {
            bail!("--ladder takes height:kbps pairs, e.g. 720:2500,480:1200");
        }
        Ok(())
    }

    /// The `--ladder` steps (malformed pairs are left out; validate
    /// refuses an empty result).
    pub fn ladder_specs(&self) -> Vec<codec::ladder::RenditionSpec> {
        self.ladder
            .split(',')
            .filter_map(|pair| {
                let (height, kbps) = pair.trim().split_once(':')?;
                let height: u32 = height.parse().ok().filter(|h| (16..=4320).contains(h))?;
                let kbps: u32 = kbps.parse().ok().filter(|k| *k > 0)?;
                Some(codec::ladder::RenditionSpec {
                    name: format!("{height}p"),
                    height,
                    bitrate_bps: kbps * 1000,
                })
            })
            .collect()
    }
}

#[derive(Debug, Clone, Args)]
pub struct GiftsArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[arg(long, default_value = "gifts")]
    pub room: String,
    /// Users sending gifts, each with its own funded wallet.
    #[arg(long, visible_alias = "n", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub senders: u32,
    /// Distinct gifts per second, in total.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rate: u32,
    /// Concurrent sends per gift, all with its key (1: no retries).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub retries: u32,
    /// How gifts travel: the room socket (as the web app sends them) or
    /// the HTTP API.
    #[arg(long, value_enum, default_value_t = GiftTransport::Ws)]
    pub transport: GiftTransport,
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    #[command(flatten)]
    pub out: OutArgs,
}

impl GiftsArgs {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            bail!(
                "--duration must be between 1ms and {}s",
                MAX_DURATION.as_secs()
            );
        }
        self.target.validate(&self.room)
    }
}

#[derive(Debug, Clone, Args)]
pub struct CaptionsArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[arg(long, default_value = "captions")]
    pub room: String,
    /// Sentences said (the scenario's eight, cycled), about 4 s each.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=200))]
    pub lines: u32,
    /// With the runner's engine: transcode and record the stream too (the
    /// recognizer then shares the CPU with a ladder).
    #[arg(long)]
    pub transcoding: bool,
    /// Where scripts/install-models put the Whisper models (the runner's
    /// engine loads them from there).
    #[arg(long, default_value = ".models")]
    pub models: PathBuf,
    #[command(flatten)]
    pub out: OutArgs,
}

impl CaptionsArgs {
    pub fn validate(&self) -> anyhow::Result<()> {
        self.target.validate(&self.room)
    }
}

/// Upper bound on subscribers in one generator process.
pub const MAX_SUBSCRIBERS: u32 = 2_000;

/// How the gifts scenario sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GiftTransport {
    /// `gift` frames on one room socket per sender.
    Ws,
    /// `POST /v1/rooms/{room}/gifts`, one request per send.
    Http,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CodecArg {
    Vp8,
    H264,
}

impl From<CodecArg> for codec::VideoCodec {
    fn from(value: CodecArg) -> Self {
        match value {
            CodecArg::Vp8 => Self::Vp8,
            CodecArg::H264 => Self::H264,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Room to publish in (created if missing).
    #[arg(long, default_value = "fanout")]
    pub room: String,
    /// WHEP subscribers.
    #[arg(long, visible_alias = "n", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_SUBSCRIBERS)))]
    pub subscribers: u32,
    /// Subscribers that also decode every frame (the rest reassemble only).
    #[arg(long, default_value_t = 1)]
    pub decoders: u32,
    #[arg(long, value_enum, default_value_t = CodecArg::Vp8)]
    pub codec: CodecArg,
    #[arg(long, default_value_t = 1280, value_parser = clap::value_parser!(u32).range(16..=3840))]
    pub width: u32,
    #[arg(long, default_value_t = 720, value_parser = clap::value_parser!(u32).range(16..=2160))]
    pub height: u32,
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=60))]
    pub fps: u32,
    /// Target video bitrate of the publisher's encoder, kbit/s.
    #[arg(long, default_value_t = 1500, value_parser = clap::value_parser!(u32).range(50..=20_000))]
    pub video_kbps: u32,
    /// Measuring window, after every subscriber joined.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,
    /// WHEP joins in flight at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub join_concurrency: u16,
    /// Each viewer joins only once the one before it shows its first frame
    /// (what `join` measures: a viewer arriving alone).
    #[arg(long)]
    pub serial_joins: bool,
    #[command(flatten)]
    pub out: OutArgs,
}

impl FanoutArgs {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            bail!(
                "--duration must be between 1ms and {}s",
                MAX_DURATION.as_secs()
            );
        }
        if !self.width.is_multiple_of(2) || !self.height.is_multiple_of(2) {
            bail!("--width and --height must be even (4:2:0 video)");
        }
        if self.decoders > self.subscribers {
            bail!("--decoders cannot exceed --subscribers");
        }
        self.target.validate(&self.room)
    }
}

#[derive(Debug, Clone, Args)]
pub struct DanmakuArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Room to load (created if missing, reused if it exists).
    #[arg(long, default_value = "bench")]
    pub room: String,
    /// Viewers: sessions that only watch.
    #[arg(long, visible_alias = "n", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_VIEWERS)))]
    pub viewers: u32,
    /// Senders: moderator sessions (exempt from the per-user rate limit)
    /// that share the send rate between them.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_SENDERS)))]
    pub senders: u32,
    /// Danmaku per second, in total across all senders.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_RATE)))]
    pub rate: u32,
    /// How long to send: `30`, `30s`, `2m`, `500ms`.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// After sending stops, how long to wait for deliveries still in flight.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub grace: Duration,
    /// Connections opened per second while ramping up.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub ramp: u32,
    /// Give up on one connection (handshake plus welcome) after this long.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Mint one token per viewer (64 requests in flight) instead of one
    /// shared viewer token; tokens are not bound to a connection, so the
    /// shared one measures the same thing faster.
    #[arg(long)]
    pub unique_viewer_tokens: bool,
    #[command(flatten)]
    pub out: OutArgs,
}

impl DanmakuArgs {
    /// Checks what clap's per-flag parsers cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            bail!(
                "--duration must be between 1ms and {}s",
                MAX_DURATION.as_secs()
            );
        }
        if self.grace > MAX_GRACE {
            bail!("--grace must be at most {}s", MAX_GRACE.as_secs());
        }
        if self.connect_timeout.is_zero() || self.connect_timeout > Duration::from_secs(120) {
            bail!("--connect-timeout must be between 1ms and 120s");
        }
        self.target.validate(&self.room)
    }

    /// Danmaku the senders are scheduled to send in total.
    pub fn planned_sends(&self) -> u64 {
        (f64::from(self.rate) * self.duration.as_secs_f64()).round() as u64
    }
}

/// Where the engine is. Without `--url` the runner starts an engine of
/// its own (and the scenario's peer, to compare with) and stops it after.
#[derive(Debug, Clone, Default, Args)]
pub struct TargetArgs {
    /// Engine base URL (HTTP API; WebSockets use the same host). Without
    /// it: a fresh engine started by the runner, beside the peer.
    #[arg(long)]
    pub url: Option<String>,
    /// Admin key, to create rooms and mint tokens (with --url).
    #[arg(long, env = "LIVE_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// Engine process to sample for CPU and RSS (/proc; with --url). Memory
    /// per connection is only meaningful against a freshly started engine:
    /// memory freed by earlier sessions stays in its RSS.
    #[arg(long)]
    pub engine_pid: Option<u32>,
}

/// A resolved engine to drive: given on the command line or started by
/// the runner.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub admin_key: String,
    pub engine_pid: Option<u32>,
}

impl TargetArgs {
    /// Checks the flags shared by every scenario that drives an engine.
    fn validate(&self, room: &str) -> anyhow::Result<()> {
        let room_ok = !room.is_empty()
            && room.len() <= 64
            && room
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !room_ok {
            bail!("--room must be 1 to 64 characters of A-Z, a-z, 0-9, `-` or `_`");
        }
        let Some(url) = &self.url else {
            return Ok(());
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!("--url must start with http:// (or https://)");
        }
        if self
            .admin_key
            .as_deref()
            .is_none_or(|k| k.trim().is_empty())
        {
            bail!("--admin-key (or LIVE_ADMIN_KEY) is needed with --url");
        }
        Ok(())
    }

    /// The engine given with `--url`, if any.
    pub fn given(&self) -> Option<Target> {
        Some(Target {
            url: self.url.clone()?,
            admin_key: self.admin_key.clone()?,
            engine_pid: self.engine_pid,
        })
    }
}

/// Where the report goes besides stdout.
#[derive(Debug, Clone, Default, Args)]
pub struct OutArgs {
    /// Also write the report as JSON to this file, and as a markdown table
    /// beside it (same name, `.md`).
    #[arg(long, visible_alias = "json")]
    pub out: Option<PathBuf>,
}

/// Parses `30`, `30s`, `1.5s`, `2m`, `1h`, `250ms`. A hand-written parser:
/// four units do not justify a dependency.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (try 30, 30s, 2m, 500ms)"))?;
    let seconds = match unit.trim() {
        "" | "s" | "sec" | "secs" => value,
        "ms" => value / 1000.0,
        "m" | "min" | "mins" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}` (use ms, s, m or h)"
            ));
        }
    };
    if !seconds.is_finite() || seconds > 1e9 {
        return Err(format!("`{text}` is out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_plain_seconds_and_units() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration(" 10s "), Ok(Duration::from_secs(10)));
    }

    #[test]
    fn durations_reject_garbage_and_unknown_units() {
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("10d").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("1.2.3s").is_err());
    }

    fn args(extra: &[&str]) -> Result<DanmakuArgs, clap::Error> {
        let mut argv = vec!["load-tests", "danmaku", "--admin-key", "k"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).map(|cli| match cli.command {
            Command::Danmaku(args) => args,
            _ => {
                unreachable!("parsed a danmaku command line")
            }
        })
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let a = args(&[]).unwrap();
        assert_eq!(
            (a.viewers, a.senders, a.rate, a.ramp),
            (1000, 10, 100, 2000)
        );
        assert_eq!(a.duration, Duration::from_secs(30));
        assert_eq!(a.grace, Duration::from_secs(3));
        assert_eq!(a.planned_sends(), 3000);
        a.validate().unwrap();
    }

    #[test]
    fn bounds_are_enforced() {
        assert!(args(&["--viewers", "0"]).is_err());
        assert!(args(&["--viewers", "100001"]).is_err());
        assert!(args(&["--senders", "0"]).is_err());
        assert!(args(&["--rate", "0"]).is_err());
        assert!(args(&["--duration", "2h"]).unwrap().validate().is_err());
        assert!(args(&["--room", "no spaces"]).unwrap().validate().is_err());
        assert!(
            args(&["--url", "127.0.0.1:8080"])
                .unwrap()
                .validate()
                .is_err()
        );
    }
}
