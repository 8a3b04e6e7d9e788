//! Program clips as the engine plays them: the demo clips written by
//! `scripts/make-demo-clips` (the ffmpeg CLI, MP4 with H.264 + AAC) read
//! back as Annex B access units a real decoder takes, and 48 kHz audio;
//! clips a WebRTC viewer could not play are refused by name.

use std::path::{Path, PathBuf};
use std::process::Command;

use codec::clip::{ClipItem, ClipReader, probe};
use codec::{VideoCodec, VideoDecoder};

fn demo_clips(dir: &Path) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-demo-clips");
    let status = Command::new(script).arg(dir).status().expect(
        "scripts/make-demo-clips runs (the ffmpeg CLI comes with scripts/install-deps --test)",
    );
    assert!(status.success());
    dir.to_path_buf()
}

/// A second of test pattern encoded by the ffmpeg CLI with `codec` options.
fn one_second(out: &Path, codec: &[&str]) {
    let status = Command::new("ffmpeg")
        .args([
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=s=160x90:r=10:d=1",
        ])
        .args(codec)
        .arg(out)
        .status()
        .expect("the ffmpeg CLI runs");
    assert!(status.success(), "ffmpeg {codec:?}");
}

#[test]
fn a_demo_clip_reads_as_decodable_annex_b_and_48k_stereo_audio() {
    let dir = tempfile::tempdir().unwrap();
    let clips = demo_clips(dir.path());
    let path = clips.join("aurora.mp4");
    let info = probe(&path).unwrap();
    assert_eq!((info.width, info.height, info.has_audio), (320, 180, true));
    assert!(
        (5_900..=6_100).contains(&info.duration_ms),
        "{}",
        info.duration_ms
    );

    let mut reader = ClipReader::open(&path).unwrap();
    let mut decoder = VideoDecoder::open(VideoCodec::H264).unwrap();
    let (mut frames, mut keyframes, mut pictures, mut audio) = (0, Vec::new(), 0, 0usize);
    let mut last_time = None;
    while let Some(item) = reader.read().unwrap() {
        match item {
            ClipItem::Video(video) => {
                assert!(video.data.starts_with(&[0, 0, 0, 1]), "Annex B");
                if video.keyframe {
                    keyframes.push(video.time_us);
                }
                assert!(last_time < Some(video.time_us), "times only grow");
                last_time = Some(video.time_us);
                frames += 1;
                for picture in decoder.decode(&video.data).unwrap() {
                    assert_eq!((picture.width(), picture.height()), (320, 180));
                    pictures += 1;
                }
            }
            ClipItem::Audio(samples) => audio += samples.len() / 2,
        }
    }
    assert_eq!(frames, 150, "6 s at 25 fps");
    assert_eq!(pictures, 150, "every access unit decodes on its own stream");
    assert_eq!(keyframes.len(), 6, "a keyframe a second: {keyframes:?}");
    assert_eq!(keyframes[0], 0);
    assert_eq!(last_time, Some(5_960_000));
    assert!(
        (6 * 48_000 - 4_800..=6 * 48_000 + 4_800).contains(&audio),
        "about 6 s of 48 kHz audio, got {audio} samples"
    );
}

#[test]
fn clips_a_webrtc_viewer_could_not_play_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let vp8 = dir.path().join("vp8.webm");
    one_second(&vp8, &["-c:v", "libvpx"]);
    let error = probe(&vp8).unwrap_err().to_string();
    assert!(error.contains("must be H.264"), "{error}");

    let b_frames = dir.path().join("b.mp4");
    one_second(
        &b_frames,
        &["-c:v", "libx264", "-profile:v", "main", "-bf", "2"],
    );
    let error = probe(&b_frames).unwrap_err().to_string();
    assert!(error.contains("B-frames"), "{error}");

    let text = dir.path().join("notes.mp4");
    std::fs::write(&text, "not a clip").unwrap();
    let error = probe(&text).unwrap_err().to_string();
    assert!(error.contains("cannot read"), "{error}");
    let error = probe(&dir.path().join("missing.mp4"))
        .unwrap_err()
        .to_string();
    assert!(error.contains("cannot read"), "{error}");
}
