//! The Janus side of the comparison, end to end: Janus 1.1 in its own
//! network namespace with the private configuration, fed VP8 and Opus RTP
//! by the ffmpeg CLI, watched by two webrtc-rs viewers from the runner's
//! namespace, one of them decoding. Needs root (`ip netns`), `janus` and
//! `ffmpeg`; CI runs it as root inside `unshare -n` (scripts/test).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use load_tests::peers::janus::{self, JanusSetup, JanusViewer, MOUNTPOINT_ID};
use load_tests::peers::netns::Namespace;
use load_tests::peers::rtp_feed::{self, FeedSpec};
use load_tests::rtc::SubscriberStats;

/// Far from the indices a benchmark run uses.
const NAMESPACE_INDEX: u8 = 200;

const FEED: FeedSpec = FeedSpec {
    width: 320,
    height: 240,
    fps: 15,
    video_kbps: 300,
    // A keyframe every second: a viewer that joins mid-stream decodes
    // within a second.
    keyframe_interval: 15,
    seconds: 20,
};

/// How long the feed runs before the viewers join: half a GOP past its
/// second keyframe.
const JOIN_AFTER: Duration = Duration::from_millis(1_500);

/// Frames the decoding viewer must decode: a second and a half of video.
const FRAMES_TO_DECODE: u64 = 22;

/// A scratch folder for Janus's configuration and the servers' logs,
/// removed when the test ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("load-tests-janus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn janus_relays_an_rtp_feed_to_webrtc_viewers() -> anyhow::Result<()> {
    if !is_root() {
        // scripts/test runs the suite unprivileged where it cannot be
        // root; there is no namespace to put Janus in.
        eprintln!("skipped: needs root for a network namespace");
        return Ok(());
    }
    let started = Instant::now();
    let scratch = Scratch::new()?;
    let namespace = Namespace::create(NAMESPACE_INDEX)?;
    let setup = JanusSetup {
        dir: scratch.0.join("janus"),
        http: SocketAddr::new(namespace.ns_ip.into(), 8088),
        video_port: 5004,
        audio_port: 5002,
        rtp_port_range: (20_000, 20_100),
    };
    std::fs::create_dir_all(&setup.dir)?;
    let mut janus = janus::start(&setup, &namespace, None).await?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    let base = setup.base_url();
    let mut feed = rtp_feed::start(
        namespace.ns_ip,
        setup.video_port,
        setup.audio_port,
        FEED,
        &scratch.0,
    )?;

    // Viewers join a stream that is already running, mid-GOP, as a
    // benchmark's viewers do: they must still start on a keyframe.
    tokio::time::sleep(JOIN_AFTER).await;
    let result = watch(&http, &base).await;
    let outcome = result.and_then(|_| {
        feed.check_running()?;
        janus.check_running()
    });
    if outcome.is_err() {
        eprintln!("janus log:\n{}", janus.log_tail(40));
        eprintln!("ffmpeg log:\n{}", feed.log_tail(20));
    }
    feed.stop();
    janus.stop();
    eprintln!("took {:?}", started.elapsed());
    outcome
}

/// Two viewers join; both must receive video and audio, the decoding one
/// must decode the feed's pictures without an error. A viewer of a
/// mountpoint that does not exist fails with Janus's reason.
async fn watch(http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let missing = JanusViewer::join(http, base, MOUNTPOINT_ID + 98, false).await;
    let refusal = format!(
        "{:#}",
        missing.err().context("joined a missing mountpoint")?
    );
    ensure!(refusal.contains("No such mountpoint"), "{refusal}");
    let (plain, decoding) = tokio::join!(
        JanusViewer::join(http, base, MOUNTPOINT_ID, false),
        JanusViewer::join(http, base, MOUNTPOINT_ID, true),
    );
    let (plain, decoding) = (
        plain.context("plain viewer")?,
        decoding.context("decoding viewer")?,
    );
    let received = load_tests::rtc::wait_for(
        || {
            let plain = plain.stats();
            let decoding = decoding.stats();
            SubscriberStats::get(&plain.video_packets) > 0
                && SubscriberStats::get(&plain.audio_packets) > 0
                && SubscriberStats::get(&decoding.audio_packets) > 0
                && SubscriberStats::get(&decoding.decoded_frames) >= FRAMES_TO_DECODE
        },
        Duration::from_secs(10),
    )
    .await;
    let report = format!(
        "plain: {} (hangup: {:?})\ndecoding: {} (hangup: {:?})",
        plain.stats().summary(),
        plain.hangup_reason(),
        decoding.stats().summary(),
        decoding.hangup_reason(),
    );
    eprintln!("{report}");
    let checks = received.context("media did not arrive").and_then(|_| {
        let stats = decoding.stats();
        ensure!(
            stats.dimensions() == (FEED.width, FEED.height),
            "decoded at {:?}",
            stats.dimensions()
        );
        ensure!(
            SubscriberStats::get(&stats.decode_errors) == 0,
            "decode errors"
        );
        ensure!(
            plain.stats().connected() && stats.connected(),
            "not connected"
        );
        Ok(())
    });
    plain.close().await;
    decoding.close().await;
    checks.with_context(|| report)
}
