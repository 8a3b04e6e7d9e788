//! `load-tests transcode`: the engine's transcoder against the ffmpeg CLI
//! on the same input, the same ladder and the same encoder settings, side
//! by side in one run; then how many ladders this machine keeps in real
//! time at once.
//!
//! The engine side runs `codec::ladder::Transcoder`, the code a StreamActor
//! runs, in this process (no network: this measures transcoding, not
//! WebRTC). Both sides decode one H.264 clip made here from the test
//! pattern, scale it bilinearly to every rendition and encode each with the
//! encoder's real-time settings (`codec::realtime_cli_args`), one thread per
//! codec (the engine's choice: one predictable core per ladder), keyframes
//! every two seconds, and write nothing (`-f null`). The CLI's own
//! `-benchmark` figures (user+system CPU, transcode wall time) exclude its
//! start-up.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use codec::ladder::{LadderConfig, RenditionSpec, Transcoder, VideoInput, ladder_for};
use codec::{TestPattern, VideoCodec, VideoEncoder, VideoEncoderConfig, realtime_cli_args};
use serde::Serialize;

use crate::cli::TranscodeArgs;
use crate::proc_stats::ProcReader;

/// Seconds between keyframes on both sides (the engine's segment grid).
const KEYFRAME_SECONDS: u32 = 2;

#[derive(Debug, Serialize)]
pub struct Side {
    pub fps: f64,
    /// CPU seconds per second of video, i.e. cores one ladder keeps busy
    /// when it runs in real time.
    pub cores_per_stream: f64,
    pub cpu_ms_per_frame: f64,
}

#[derive(Debug, Serialize)]
pub struct TranscodeReport {
    pub input: String,
    pub frames: u32,
    pub encoder: String,
    pub ladder: Vec<String>,
    pub engine: Side,
    pub ffmpeg_cli: Side,
    /// Engine fps / CLI fps (the target is >= 0.95).
    pub fps_ratio: f64,
    /// Concurrent ladders tried and the slowest one's fps at each count.
    pub concurrency: Vec<(usize, f64)>,
    /// The most ladders that all ran at or above the input frame rate.
    pub realtime_ladders: usize,
}

pub fn run(args: &TranscodeArgs) -> anyhow::Result<TranscodeReport> {
    let ffmpeg = which("ffmpeg")?;
    let clip = make_clip(args)?;
    let dir = ScratchDir::new()?;
    let input = dir.0.join("input.h264");
    std::fs::File::create(&input)
        .and_then(|mut file| clip.iter().try_for_each(|(data, _)| file.write_all(data)))
        .with_context(|| format!("writing {}", input.display()))?;
    let specs = args.ladder_specs();
    let ladder = ladder_for(&specs, args.width, args.height);

    eprintln!(
        "engine: {} frames through {} renditions",
        clip.len(),
        ladder.len()
    );
    let engine = engine_side(args, &clip, &specs)?;
    eprintln!("ffmpeg CLI: the same");
    let cli = cli_side(args, &ffmpeg, &input, &ladder)?;

    let mut concurrency = Vec::new();
    let mut realtime_ladders = 0;
    for streams in 1..=usize::from(args.max_concurrent) {
        eprintln!("{streams} ladders at once");
        let slowest = concurrent_fps(args, &clip, &specs, streams)?;
        concurrency.push((streams, slowest));
        if slowest < f64::from(args.fps) {
            break;
        }
        realtime_ladders = streams;
    }
    Ok(TranscodeReport {
        input: format!("H.264 {}x{} {} fps", args.width, args.height, args.fps),
        frames: args.frames,
        encoder: args.encoder.clone(),
        ladder: ladder
            .iter()
            .map(|r| {
                format!(
                    "{} {}x{} {} kbit/s",
                    r.name,
                    r.width,
                    r.height,
                    r.bitrate_bps / 1000
                )
            })
            .collect(),
        fps_ratio: engine.fps / cli.fps,
        engine,
        ffmpeg_cli: cli,
        concurrency,
        realtime_ladders,
    })
}

/// The input clip: the moving test pattern through libx264, as H.264
/// access units with their keyframe flags.
fn make_clip(args: &TranscodeArgs) -> anyhow::Result<Vec<(Vec<u8>, bool)>> {
    let mut encoder = VideoEncoder::open(VideoEncoderConfig {
        codec: VideoCodec::H264,
        width: args.width,
        height: args.height,
        fps: args.fps,
        bitrate_bps: 4_000_000,
        keyframe_interval: args.fps * KEYFRAME_SECONDS,
    })?;
    let mut pattern = TestPattern::new(args.width, args.height);
    let mut clip = Vec::new();
    for _ in 0..args.frames {
        let mut picture = pattern.next_frame();
        for frame in encoder.encode(&mut picture, false)? {
            clip.push((frame.data, frame.keyframe));
        }
    }
    Ok(clip)
}

fn ladder_config(args: &TranscodeArgs, specs: &[RenditionSpec]) -> LadderConfig {
    LadderConfig {
        renditions: specs.to_vec(),
        encoder: args.encoder.clone(),
        fps: args.fps,
        segment_seconds: KEYFRAME_SECONDS,
        recording_dir: None,
        audio: false,
        subtitles: Vec::new(),
    }
}

/// Runs the clip through one transcoder as fast as it goes; returns the
/// wall time.
fn transcode_clip(
    args: &TranscodeArgs,
    clip: &[(Vec<u8>, bool)],
    specs: &[RenditionSpec],
) -> anyhow::Result<Duration> {
    let mut transcoder = Transcoder::new(ladder_config(args, specs));
    let mut out = Vec::new();
    let tick = 90_000 / u64::from(args.fps);
    let started = Instant::now();
    for (index, (data, keyframe)) in clip.iter().enumerate() {
        let input = VideoInput {
            codec: VideoCodec::H264,
            data,
            keyframe: *keyframe,
            time: index as u64 * tick,
            received: started,
        };
        transcoder.push_video(input, false, &mut out)?;
        out.clear();
    }
    let elapsed = started.elapsed();
    let stats = transcoder.finish(&mut out)?;
    if stats.decode_errors > 0 || stats.frames_decoded != clip.len() as u64 {
        bail!("the transcoder lost frames: {stats:?}");
    }
    Ok(elapsed)
}

fn engine_side(
    args: &TranscodeArgs,
    clip: &[(Vec<u8>, bool)],
    specs: &[RenditionSpec],
) -> anyhow::Result<Side> {
    let me = ProcReader::new(std::process::id())?;
    let before = me.sample()?;
    let wall = transcode_clip(args, clip, specs)?;
    let after = me.sample()?;
    Ok(side(
        clip.len(),
        wall.as_secs_f64(),
        after.cpu_s - before.cpu_s,
        args.fps,
    ))
}

fn side(frames: usize, wall_s: f64, cpu_s: f64, fps: u32) -> Side {
    let rate = frames as f64 / wall_s;
    Side {
        fps: rate,
        cores_per_stream: cpu_s / wall_s * f64::from(fps) / rate,
        cpu_ms_per_frame: cpu_s * 1000.0 / frames as f64,
    }
}

/// The same ladder through the ffmpeg CLI: split, bilinear scale, one
/// encoder per rendition with the same settings, one thread each.
fn cli_side(
    args: &TranscodeArgs,
    ffmpeg: &Path,
    input: &Path,
    ladder: &[codec::ladder::Rendition],
) -> anyhow::Result<Side> {
    let outputs: Vec<String> = (0..ladder.len()).map(|i| format!("[v{i}]")).collect();
    let mut graph = format!(
        "[0:v]split={}{}",
        ladder.len(),
        outputs.concat().replace('v', "s")
    );
    for (index, rendition) in ladder.iter().enumerate() {
        graph.push_str(&format!(
            ";[s{index}]scale={}:{}:flags=bilinear[v{index}]",
            rendition.width, rendition.height
        ));
    }
    let mut command = Command::new(ffmpeg);
    command
        .args([
            "-hide_banner",
            "-nostdin",
            "-nostats",
            "-benchmark",
            "-loglevel",
            "info",
        ])
        .args(["-threads", "1", "-f", "h264", "-framerate"])
        .arg(args.fps.to_string())
        .arg("-i")
        .arg(input)
        .args(["-filter_complex_threads", "1", "-filter_complex"])
        .arg(graph);
    for (index, rendition) in ladder.iter().enumerate() {
        command
            .args(["-map", &outputs[index], "-c:v", &args.encoder])
            .args(realtime_cli_args(&args.encoder))
            .args(["-bf", "0"])
            .args(["-b:v", &format!("{}", rendition.bitrate_bps)])
            .args(["-g", &(args.fps * KEYFRAME_SECONDS * 2).to_string()])
            .args([
                "-force_key_frames",
                &format!("expr:gte(t,n_forced*{KEYFRAME_SECONDS})"),
            ])
            .args(["-f", "null", "-"]);
    }
    let output = command.output().context("running ffmpeg")?;
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!("ffmpeg failed: {text}");
    }
    let (utime, stime, rtime) = parse_benchmark(&text)
        .with_context(|| format!("no `bench:` line in ffmpeg's output: {text}"))?;
    Ok(side(args.frames as usize, rtime, utime + stime, args.fps))
}

/// `bench: utime=1.234s stime=0.056s rtime=1.300s`
fn parse_benchmark(text: &str) -> Option<(f64, f64, f64)> {
    let line = text.lines().find(|l| l.contains("bench: utime="))?;
    let field = |name: &str| -> Option<f64> {
        let start = line.find(&format!("{name}="))? + name.len() + 1;
        line[start..]
            .split(|c: char| c == 's' || c.is_whitespace())
            .next()?
            .parse()
            .ok()
    };
    Some((field("utime")?, field("stime")?, field("rtime")?))
}

/// `streams` transcoders at once, each on its own thread; the slowest
/// one's fps.
fn concurrent_fps(
    args: &TranscodeArgs,
    clip: &[(Vec<u8>, bool)],
    specs: &[RenditionSpec],
    streams: usize,
) -> anyhow::Result<f64> {
    let walls: Vec<anyhow::Result<Duration>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..streams)
            .map(|_| scope.spawn(|| transcode_clip(args, clip, specs)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| bail!("a transcoder panicked")))
            .collect()
    });
    let mut slowest = f64::INFINITY;
    for wall in walls {
        slowest = slowest.min(clip.len() as f64 / wall?.as_secs_f64());
    }
    Ok(slowest)
}

fn which(program: &str) -> anyhow::Result<std::path::PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .with_context(|| {
            format!("`{program}` is not installed (scripts/install-deps --test installs it)")
        })
}

/// A directory for the input clip, removed however the run ends.
struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("load-tests-transcode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl TranscodeReport {
    pub fn render(&self) -> String {
        let row = |name: &str, side: &Side| {
            format!(
                "| {name} | {:.1} | {:.2} | {:.2} |\n",
                side.fps, side.cpu_ms_per_frame, side.cores_per_stream
            )
        };
        let mut text = format!(
            "transcode: {} frames of {}, {} ladder: {}\n\n\
             | | fps | CPU ms/frame | cores per real-time stream |\n|---|---|---|---|\n",
            self.frames,
            self.input,
            self.encoder,
            self.ladder.join(", ")
        );
        text += &row("engine (codec::ladder)", &self.engine);
        text += &row("ffmpeg CLI", &self.ffmpeg_cli);
        text += &format!("\nengine / CLI fps: {:.2}x\n", self.fps_ratio);
        let counts: Vec<String> = self
            .concurrency
            .iter()
            .map(|(n, fps)| format!("{n}: {fps:.1} fps"))
            .collect();
        text += &format!(
            "concurrent ladders (slowest stream): {}; in real time: {}\n",
            counts.join(", "),
            self.realtime_ladders
        );
        text
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_ffmpegs_benchmark_line() {
        let text = "frame=  300\nbench: utime=3.210s stime=0.120s rtime=3.400s\n";
        assert_eq!(super::parse_benchmark(text), Some((3.21, 0.12, 3.4)));
        assert_eq!(super::parse_benchmark("nothing"), None);
    }
}
