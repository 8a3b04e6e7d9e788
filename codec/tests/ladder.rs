//! The transcoder end to end with real codecs: a test pattern encoded by
//! libx264/libvpx goes through the ladder, the HLS output is checked by
//! ffprobe, and damaged input is survived.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use codec::hls::read_segments;
use codec::ladder::{
    LadderConfig, MASTER_PLAYLIST, POSTER, RenditionSpec, TranscodeOutput, Transcoder, VideoInput,
    ladder_for,
};
use codec::{
    OpusEncoder, TestPattern, ToneSource, VideoCodec, VideoDecoder, VideoEncoder,
    VideoEncoderConfig,
};

const FPS: u32 = 30;

fn spec(name: &str, height: u32, kbps: u32) -> RenditionSpec {
    RenditionSpec {
        name: name.into(),
        height,
        bitrate_bps: kbps * 1000,
    }
}

fn config(dir: Option<&Path>, audio: bool) -> LadderConfig {
    LadderConfig {
        renditions: vec![
            spec("720p", 720, 2500),
            spec("360p", 360, 700),
            spec("180p", 180, 250),
        ],
        encoder: "libx264".into(),
        fps: FPS,
        segment_seconds: 1,
        recording_dir: dir.map(Path::to_path_buf),
        audio,
        subtitles: vec!["en".into(), "es".into()],
    }
}

/// Encoded source frames: (data, keyframe, RTP time at 90 kHz).
fn source(codec: VideoCodec, width: u32, height: u32, frames: u32) -> Vec<(Vec<u8>, bool, u64)> {
    let mut encoder = VideoEncoder::open(VideoEncoderConfig {
        codec,
        width,
        height,
        fps: FPS,
        bitrate_bps: 800_000,
        keyframe_interval: 60,
    })
    .unwrap();
    let mut pattern = TestPattern::new(width, height);
    let mut out = Vec::new();
    for index in 0..frames {
        let mut picture = pattern.next_frame();
        for frame in encoder.encode(&mut picture, false).unwrap() {
            out.push((
                frame.data,
                frame.keyframe,
                1_000_000 + u64::from(index) * 3000,
            ));
        }
    }
    out
}

/// The distinct lines ffprobe prints (an HLS input lists its streams once
/// per program and once more on their own).
fn video(
    codec: VideoCodec,
    data: &[u8],
    keyframe: bool,
    time: u64,
    received: Instant,
) -> VideoInput<'_> {
    VideoInput {
        codec,
        data,
        keyframe,
        time,
        received,
    }
}

fn ffprobe(path: &Path, entries: &str) -> Vec<String> {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", entries, "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe runs (scripts/install-deps --test installs ffmpeg)");
    assert!(
        output.status.success(),
        "ffprobe {}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: std::collections::BTreeSet<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect();
    lines.into_iter().collect()
}

#[test]
fn ladder_never_exceeds_the_input_and_keeps_its_aspect() {
    let configured = config(None, false).renditions;
    let steps = ladder_for(&configured, 640, 360);
    let sizes: Vec<_> = steps
        .iter()
        .map(|s| (s.name.as_str(), s.width, s.height))
        .collect();
    assert_eq!(sizes, vec![("360p", 640, 360), ("180p", 320, 180)]);
    let tiny = ladder_for(&configured, 160, 90);
    assert_eq!(
        (tiny[0].width, tiny[0].height),
        (160, 90),
        "one step at the input size"
    );
    let portrait = ladder_for(&configured, 720, 1280);
    assert_eq!((portrait[0].width, portrait[0].height), (404, 720));
}

#[test]
fn h264_source_becomes_hls_renditions_that_ffprobe_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let mut transcoder = Transcoder::new(config(Some(dir.path()), true));
    let start = Instant::now();
    let mut out = Vec::new();
    let mut opus = OpusEncoder::open(64_000).unwrap();
    let mut tone = ToneSource::new(440.0);
    let frames = source(VideoCodec::H264, 640, 360, 75);
    for (index, (data, keyframe, time)) in frames.iter().enumerate() {
        let received = start + Duration::from_millis(index as u64 * 1000 / u64::from(FPS));
        transcoder
            .push_video(
                video(VideoCodec::H264, data, *keyframe, *time, received),
                false,
                &mut out,
            )
            .unwrap();
        // 20 ms Opus frames alongside: 1.5 per video frame.
        for part in 0..2 {
            let audio_index = index as u64 * 3 / 2 + part;
            if part == 1 && index % 2 == 1 {
                continue;
            }
            for packet in opus.encode(&tone.next_frame()).unwrap() {
                let at = start + Duration::from_millis(audio_index * 20);
                transcoder
                    .push_audio(&packet, 5_000 + audio_index * 960, at)
                    .unwrap();
            }
        }
    }
    let stats = transcoder.finish(&mut out).unwrap();
    assert_eq!(stats.frames_in, 75);
    assert_eq!(stats.decode_errors, 0);
    assert_eq!(stats.frames_encoded, 150, "two renditions, every frame");
    assert!(stats.audio_packets > 100, "{stats:?}");

    let opened: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            TranscodeOutput::Opened { renditions, .. } => Some(renditions.len()),
            _ => None,
        })
        .collect();
    assert_eq!(opened, vec![2]);
    let keyframes: Vec<u64> = out
        .iter()
        .filter_map(|o| match o {
            TranscodeOutput::Frame {
                rendition: 1,
                keyframe: true,
                source_time,
                ..
            } => Some(*source_time),
            _ => None,
        })
        .collect();
    assert_eq!(
        keyframes,
        vec![1_000_000, 1_090_000, 1_180_000],
        "keyframes on the 1 s grid, stamped with the source's RTP time"
    );

    let master = std::fs::read_to_string(dir.path().join(MASTER_PLAYLIST)).unwrap();
    assert!(master.contains("RESOLUTION=640x360"), "{master}");
    assert!(master.contains("RESOLUTION=320x180"), "{master}");
    assert!(
        master.contains("CODECS=\"avc1.42c0"),
        "constrained baseline: {master}"
    );
    assert!(master.contains(",mp4a.40.2\""), "{master}");
    // The captions' subtitle tracks, none on by default.
    assert!(
        master.contains("TYPE=SUBTITLES,URI=\"subs-en/index.m3u8\",GROUP-ID=\"subs\",LANGUAGE=\"en\",NAME=\"en\",AUTOSELECT=YES"),
        "{master}"
    );
    assert!(
        master.contains("LANGUAGE=\"es\",NAME=\"es\",AUTOSELECT=YES"),
        "{master}"
    );
    assert!(master.contains("SUBTITLES=\"subs\""), "{master}");
    assert!(dir.path().join(POSTER).metadata().unwrap().len() > 1000);

    for (name, size) in [("360p", "640,360"), ("180p", "320,180")] {
        let playlist = dir.path().join(name).join("index.m3u8");
        let text = std::fs::read_to_string(&playlist).unwrap();
        assert!(text.contains("#EXT-X-ENDLIST"), "{text}");
        assert!(text.contains("#EXT-X-MAP:URI=\"init.mp4\""), "{text}");
        let segments = read_segments(&playlist).unwrap();
        assert_eq!(segments.len(), 3, "2.5 s in 1 s segments: {text}");
        let total: u64 = segments.iter().map(|s| s.duration_ms).sum();
        assert!((2400..=2600).contains(&total), "total {total} ms");
        assert_eq!(
            ffprobe(&playlist, "stream=codec_name,width,height"),
            vec!["aac".to_owned(), format!("h264,{size}")],
        );
        let announced = out
            .iter()
            .filter(|o| matches!(o, TranscodeOutput::Segment { rendition, .. } if stats.frames_in > 0 && *rendition == usize::from(name == "180p")))
            .count();
        assert_eq!(announced, 3, "each segment announced once");
    }
}

#[test]
fn rendition_frames_decode_at_their_size() {
    let mut transcoder = Transcoder::new(config(None, false));
    let mut out = Vec::new();
    let start = Instant::now();
    for (data, keyframe, time) in source(VideoCodec::Vp8, 640, 360, 20) {
        transcoder
            .push_video(
                video(VideoCodec::Vp8, &data, keyframe, time, start),
                false,
                &mut out,
            )
            .unwrap();
    }
    let mut decoder = VideoDecoder::open(VideoCodec::H264).unwrap();
    let mut sizes = Vec::new();
    for output in &out {
        if let TranscodeOutput::Frame {
            rendition: 1, data, ..
        } = output
        {
            for picture in decoder.decode(data).unwrap() {
                sizes.push((picture.width(), picture.height()));
            }
        }
    }
    assert_eq!(sizes.len(), 20);
    assert!(sizes.iter().all(|size| *size == (320, 180)));
}

#[test]
fn damaged_input_is_skipped_until_a_keyframe_and_counted() {
    let mut transcoder = Transcoder::new(config(None, false));
    let mut out = Vec::new();
    let start = Instant::now();
    let frames = source(VideoCodec::H264, 320, 180, 70);
    let push = |transcoder: &mut Transcoder, frames: &[(Vec<u8>, bool, u64)], out: &mut Vec<_>| {
        for (data, keyframe, time) in frames {
            let input = video(VideoCodec::H264, data, *keyframe, *time, start);
            transcoder.push_video(input, false, out).unwrap();
        }
    };
    // Starts without a keyframe: frames 1..5 are deltas.
    push(&mut transcoder, &frames[1..5], &mut out);
    assert_eq!(transcoder.stats().frames_skipped, 4);
    assert!(out.is_empty(), "nothing opens before a keyframe");
    // A keyframe of garbage.
    let garbage = vec![(vec![0, 0, 1, 0x65, 0xff, 0x00, 0x13], true, 1)];
    push(&mut transcoder, &garbage, &mut out);
    // Then the real stream from its second keyframe (frame 60) on.
    push(&mut transcoder, &frames[60..], &mut out);
    let stats = transcoder.stats();
    assert!(stats.frames_decoded >= 9, "{stats:?}");
    assert!(
        out.iter()
            .any(|o| matches!(o, TranscodeOutput::Opened { .. }))
    );
}

#[test]
fn resolution_change_mid_stream_keeps_rendition_sizes() {
    let mut transcoder = Transcoder::new(config(None, false));
    let mut out = Vec::new();
    let start = Instant::now();
    let mut frames = source(VideoCodec::Vp8, 640, 360, 10);
    let later = source(VideoCodec::Vp8, 480, 270, 10);
    let offset = frames.last().unwrap().2 + 3000 - later[0].2;
    frames.extend(later.into_iter().map(|(d, k, t)| (d, k, t + offset)));
    for (data, keyframe, time) in frames {
        transcoder
            .push_video(
                video(VideoCodec::Vp8, &data, keyframe, time, start),
                false,
                &mut out,
            )
            .unwrap();
    }
    let stats = transcoder.stats();
    assert_eq!(stats.frames_decoded, 20);
    assert_eq!(stats.frames_encoded, 40);
    let mut decoder = VideoDecoder::open(VideoCodec::H264).unwrap();
    let mut sizes = std::collections::BTreeSet::new();
    for output in &out {
        if let TranscodeOutput::Frame {
            rendition: 0, data, ..
        } = output
        {
            for picture in decoder.decode(data).unwrap() {
                sizes.insert((picture.width(), picture.height()));
            }
        }
    }
    assert_eq!(sizes.into_iter().collect::<Vec<_>>(), vec![(640, 360)]);
}

#[test]
fn a_jump_in_the_sources_time_continues_the_recording_and_keeps_source_times() {
    let dir = tempfile::tempdir().unwrap();
    let mut transcoder = Transcoder::new(config(Some(dir.path()), false));
    let mut out = Vec::new();
    let start = Instant::now();
    let frames = source(VideoCodec::Vp8, 640, 360, 40);
    for (index, (data, keyframe, time)) in frames.iter().enumerate() {
        // Halfway the publisher's RTP time restarts 10 s earlier (a new
        // SSRC after a renegotiation, say).
        let time = if index < 20 { *time } else { *time - 900_000 };
        let input = video(VideoCodec::Vp8, data, *keyframe, time, start);
        transcoder.push_video(input, false, &mut out).unwrap();
    }
    let stats = transcoder.finish(&mut out).unwrap();
    assert_eq!(stats.discontinuities, 1);
    assert_eq!(stats.frames_encoded, 80, "every frame of both renditions");
    assert!(
        (1290..=1340).contains(&stats.duration_ms),
        "media time went on: {} ms",
        stats.duration_ms
    );
    let times: Vec<u64> = out
        .iter()
        .filter_map(|o| match o {
            TranscodeOutput::Frame {
                rendition: 0,
                source_time,
                ..
            } => Some(*source_time),
            _ => None,
        })
        .collect();
    assert_eq!(times[19], frames[19].2);
    assert_eq!(
        times[20],
        frames[20].2 - 900_000,
        "stamped with the new timeline"
    );
    let segments = read_segments(&dir.path().join("360p/index.m3u8")).unwrap();
    let total: u64 = segments.iter().map(|s| s.duration_ms).sum();
    assert!((1200..=1400).contains(&total), "{total} ms in {segments:?}");
}
