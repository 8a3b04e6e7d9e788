//! Real encoders and decoders, end to end: the test pattern through libvpx
//! and libx264 and back, Opus through libopus and back.

use codec::{
    CodecError, OPUS_FRAME_SAMPLES, OpusDecoder, OpusEncoder, RawVideo, TestPattern, ToneSource,
    VideoCodec, VideoDecoder, VideoEncoder, VideoEncoderConfig,
};

fn config(codec: VideoCodec) -> VideoEncoderConfig {
    VideoEncoderConfig {
        codec,
        width: 320,
        height: 240,
        fps: 30,
        bitrate_bps: 500_000,
        keyframe_interval: 60,
    }
}

fn roundtrip(codec: VideoCodec) {
    let mut encoder = VideoEncoder::open(config(codec)).unwrap();
    let mut decoder = VideoDecoder::open(codec).unwrap();
    let mut pattern = TestPattern::new(320, 240);
    let mut keyframes = Vec::new();
    let mut decoded = Vec::new();
    for index in 0..45 {
        let mut picture = pattern.next_frame();
        let forced = index == 30;
        for frame in encoder.encode(&mut picture, forced).unwrap() {
            assert!(!frame.data.is_empty());
            if frame.keyframe {
                keyframes.push(frame.pts);
            }
            decoded.extend(decoder.decode(&frame.data).unwrap());
        }
    }
    assert_eq!(
        keyframes,
        vec![0, 30],
        "{codec:?}: the first frame and the forced one"
    );
    assert!(
        decoded.len() >= 44,
        "{codec:?}: decoded {} of 45",
        decoded.len()
    );
    for picture in &decoded {
        assert_eq!((picture.width(), picture.height()), (320, 240));
    }
    // The bright square sits in the middle rows; the ramp never reaches 235.
    let last = decoded.last().unwrap();
    let brightest = (0..320).map(|x| last.luma(x, 120)).max().unwrap();
    assert!(
        brightest > 200,
        "{codec:?}: the square survives coding ({brightest})"
    );
}

#[test]
fn vp8_pattern_survives_libvpx_and_back() {
    roundtrip(VideoCodec::Vp8);
}

#[test]
fn h264_pattern_survives_libx264_and_back() {
    roundtrip(VideoCodec::H264);
}

#[test]
fn h264_keyframes_carry_parameter_sets_in_band() {
    let mut encoder = VideoEncoder::open(config(VideoCodec::H264)).unwrap();
    let mut pattern = TestPattern::new(320, 240);
    let frames = encoder.encode(&mut pattern.next_frame(), false).unwrap();
    let nal_types: Vec<u8> = frames[0]
        .data
        .windows(4)
        .filter(|w| w[..3] == [0, 0, 1])
        .map(|w| w[3] & 0x1f)
        .collect();
    for wanted in [7, 8, 5] {
        assert!(
            nal_types.contains(&wanted),
            "SPS, PPS, IDR in {nal_types:?}"
        );
    }
}

#[test]
fn a_picture_of_the_wrong_size_is_refused() {
    let mut encoder = VideoEncoder::open(config(VideoCodec::Vp8)).unwrap();
    let error = encoder
        .encode(&mut RawVideo::new(640, 480), false)
        .unwrap_err();
    assert!(matches!(error, CodecError::Input(_)), "{error}");
    assert!(error.to_string().contains("640x480"), "{error}");
}

#[test]
fn garbage_is_a_decode_error_not_a_crash() {
    let mut decoder = VideoDecoder::open(VideoCodec::H264).unwrap();
    let garbage: Vec<u8> = (0..500).map(|i| (i * 37 % 256) as u8).collect();
    // FFmpeg may reject it or skip it; it must neither panic nor emit a picture.
    if let Ok(pictures) = decoder.decode(&garbage) {
        assert!(pictures.is_empty());
    }
}

#[test]
fn opus_tone_survives_libopus_and_back() {
    let mut encoder = OpusEncoder::open(64_000).unwrap();
    let mut decoder = OpusDecoder::open().unwrap();
    let mut tone = ToneSource::new(440.0);
    let mut packets = 0;
    let mut samples = 0;
    for _ in 0..50 {
        for packet in encoder.encode(&tone.next_frame()).unwrap() {
            packets += 1;
            samples += decoder.decode(&packet).unwrap();
        }
    }
    assert!(packets >= 48, "{packets} packets for 50 frames");
    assert!(samples >= 48 * OPUS_FRAME_SAMPLES, "{samples} samples");
    assert!(encoder.encode(&[0; 10]).is_err());

    // Decoded to interleaved stereo (what the program mixes): the tone's
    // loudness comes back.
    let mut pcm = Vec::new();
    for _ in 0..10 {
        for packet in encoder.encode(&tone.next_frame()).unwrap() {
            decoder.decode_interleaved(&packet, &mut pcm).unwrap();
        }
    }
    assert_eq!(pcm.len() % (2 * OPUS_FRAME_SAMPLES), 0);
    let peak = pcm.iter().map(|s| s.unsigned_abs()).max().unwrap();
    assert!(
        (6_000..=10_000).contains(&peak),
        "the tone peaks near 8000: {peak}"
    );
}

#[test]
fn the_h264_encoder_choice_names_its_reason_and_opens() {
    let choice = codec::choose_h264_encoder();
    eprintln!("encoder: {} ({})", choice.name, choice.reason);
    assert!(!choice.reason.is_empty());
    assert_eq!(choice.hardware, choice.name == "h264_nvenc");
    // On a machine without a usable NVIDIA GPU (this CI) the probe must
    // fall back, saying why; on one with a GPU it picks NVENC.
    let gpu = std::path::Path::new("/dev/nvidia0").exists();
    if !gpu {
        assert_eq!(choice.name, "libx264", "{}", choice.reason);
        assert!(choice.reason.contains("h264_nvenc"), "{}", choice.reason);
    }
}
