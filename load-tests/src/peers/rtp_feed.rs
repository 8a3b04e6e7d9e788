//! The live source for a Janus streaming mountpoint: the ffmpeg CLI sends
//! a moving test pattern (VP8) and a tone (Opus) as plain RTP, the way a
//! mountpoint is fed in production. The video is encoded with the engine's
//! own real-time libvpx settings ([`codec::realtime_cli_args`]), so Janus
//! relays the same kind of stream the engine's publisher sends (no
//! `-error-resilient`, which the engine's encoder does not set either).
//!
//! The runner starts it with [`super::process::Server`], outside any
//! namespace: it sends to the Janus namespace's address over the veth pair.

use std::net::Ipv4Addr;
use std::path::Path;

use super::process::{Launch, Server};

/// Payload types the mountpoint is configured with (Chrome's numbers,
/// as in the engine's peers).
pub const VIDEO_PAYLOAD_TYPE: u8 = 96;
pub const AUDIO_PAYLOAD_TYPE: u8 = 111;

/// Fixed SSRCs: every run sends the same streams, and a stray second
/// sender on a port would show up as a different SSRC in Janus's log.
const VIDEO_SSRC: u32 = 0x1a05_0001;
const AUDIO_SSRC: u32 = 0x1a05_0002;

/// RTP packets no larger than a browser's or the engine's, so that after
/// Janus adds header extensions and the SRTP tag they still fit one
/// Ethernet frame.
const PACKET_SIZE: u32 = 1200;

/// Opus at the rate a WebRTC publisher typically sends speech and music.
const AUDIO_BITRATE: &str = "48k";
const TONE_HZ: u32 = 440;

/// What the feed sends and for how long.
#[derive(Debug, Clone, Copy)]
pub struct FeedSpec {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub video_kbps: u32,
    /// Frames between keyframes.
    pub keyframe_interval: u32,
    /// The feed stops by itself after this long: it can never outlive a
    /// run that forgot it.
    pub seconds: u32,
}

/// ffmpeg arguments (program name not included) for a real-time
/// (`-re`) `testsrc2` pattern, encoded by libvpx with the engine's
/// real-time settings plus its bitrate and keyframe interval, sent as
/// VP8 RTP (payload type 96) to `target:video_port`, and a 440 Hz sine as
/// 48 kbit/s Opus RTP (payload type 111) to `target:audio_port`.
pub fn ffmpeg_rtp_args(
    target: Ipv4Addr,
    video_port: u16,
    audio_port: u16,
    spec: FeedSpec,
) -> Vec<String> {
    let FeedSpec {
        width,
        height,
        fps,
        video_kbps,
        keyframe_interval,
        seconds,
    } = spec;
    let mut args = words("-hide_banner -nostdin -nostats -loglevel warning");
    // Each input is read in real time and ends after `seconds`.
    let inputs = [
        format!("testsrc2=size={width}x{height}:rate={fps}"),
        format!("sine=frequency={TONE_HZ}:sample_rate=48000"),
    ];
    for source in inputs {
        args.extend(words(&format!("-re -t {seconds} -f lavfi -i {source}")));
    }
    args.extend(words("-map 0:v -c:v libvpx"));
    args.extend(codec::realtime_cli_args("libvpx"));
    // One encoder thread, like the engine's encoders (the CLI would
    // otherwise start one per core on a machine the servers share).
    args.extend(words(&format!(
        "-threads 1 -pix_fmt yuv420p -b:v {video_kbps}k -g {keyframe_interval}"
    )));
    args.extend(rtp_output(
        VIDEO_PAYLOAD_TYPE,
        VIDEO_SSRC,
        target,
        video_port,
    ));
    args.extend(words(&format!(
        "-map 1:a -c:a libopus -b:a {AUDIO_BITRATE} -ac 2"
    )));
    args.extend(rtp_output(
        AUDIO_PAYLOAD_TYPE,
        AUDIO_SSRC,
        target,
        audio_port,
    ));
    args
}

/// Starts the feed (unpinned: it is the publisher's counterpart and runs
/// where the load generator does), logging into `log_dir`.
pub fn start(
    target: Ipv4Addr,
    video_port: u16,
    audio_port: u16,
    spec: FeedSpec,
    log_dir: &Path,
) -> anyhow::Result<Server> {
    Server::spawn(Launch {
        name: "ffmpeg-feed",
        program: "ffmpeg",
        args: ffmpeg_rtp_args(target, video_port, audio_port, spec),
        env: vec![],
        cpus: None,
        namespace: None,
        log_dir,
        profile: false,
    })
}

/// The RTP muxer's options for one stream, then its destination.
fn rtp_output(payload_type: u8, ssrc: u32, target: Ipv4Addr, port: u16) -> Vec<String> {
    words(&format!(
        "-payload_type {payload_type} -ssrc {ssrc} -f rtp rtp://{target}:{port}?pkt_size={PACKET_SIZE}"
    ))
}

/// Command-line words from one line (no argument here has a space).
fn words(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uses_the_engine_realtime_settings_and_stops_by_itself() {
        let args = ffmpeg_rtp_args(
            Ipv4Addr::new(10, 77, 1, 2),
            5004,
            5002,
            FeedSpec {
                width: 320,
                height: 240,
                fps: 15,
                video_kbps: 300,
                keyframe_interval: 30,
                seconds: 20,
            },
        );
        let line = args.join(" ");
        for expected in codec::realtime_cli_args("libvpx") {
            assert!(args.contains(&expected), "{expected} missing from {line}");
        }
        assert_eq!(line.matches("-t 20 ").count(), 2, "{line}");
        assert!(line.contains("-payload_type 96"), "{line}");
        assert!(
            line.contains("rtp://10.77.1.2:5004?pkt_size=1200"),
            "{line}"
        );
        assert!(line.contains("-payload_type 111"), "{line}");
        assert!(
            line.contains("rtp://10.77.1.2:5002?pkt_size=1200"),
            "{line}"
        );
    }
}
