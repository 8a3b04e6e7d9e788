//! Video and audio codecs for the media plane, through FFmpeg's libraries
//! (`ffmpeg-next` against the system's libavcodec).
//!
//! Everything here works on whole frames: an encoder turns a [`RawVideo`]
//! into codec frames (one VP8 frame or one H.264 access unit in Annex B), a
//! decoder turns those back into pictures. Packetization belongs to the
//! WebRTC stacks on either side; this crate never sees RTP.
//!
//! The same types serve the transcoder (decode, scale, encode a ladder) and
//! the tests and benchmarks that need real media (a generated test pattern
//! encoded by real encoders, decoded by real decoders, dimensions checked).

mod audio;
pub mod clip;
mod error;
pub mod hls;
pub mod ladder;
mod pattern;
mod poster;
mod scale;
mod video;

pub use audio::{
    AacEncoder, AudioPacket, OPUS_FRAME_SAMPLES, OPUS_SAMPLE_RATE, OpusDecoder, OpusEncoder,
    SPEECH_SAMPLE_RATE, SpeechDecoder, ToneSource,
};
pub use error::CodecError;
pub use pattern::TestPattern;
pub use poster::encode_jpeg;
pub use scale::Scaler;
pub use video::{
    EncodedFrame, EncoderChoice, EncoderSetup, RawVideo, VideoCodec, VideoDecoder, VideoEncoder,
    VideoEncoderConfig, choose_h264_encoder, h264_codec_string, realtime_cli_args,
};

/// Initialises FFmpeg once per process and quiets its logging to errors, so
/// a decoder meeting a damaged frame does not flood stderr.
fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        // `init` only registers devices and formats on old FFmpeg versions;
        // it cannot fail on the 5.x libraries this crate builds against.
        let _ = ffmpeg_next::init();
        ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Error);
    });
}
