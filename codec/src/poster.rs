use ffmpeg::format::Pixel;
use ffmpeg::{Packet, codec};
use ffmpeg_next as ffmpeg;

use crate::scale::Scaler;
use crate::{CodecError, RawVideo};

/// Encodes one picture as a JPEG (FFmpeg's MJPEG encoder), scaled to the
/// given size: a recording's poster frame.
pub fn encode_jpeg(picture: &RawVideo, width: u32, height: u32) -> Result<Vec<u8>, CodecError> {
    crate::init();
    let found = ffmpeg::encoder::find(codec::Id::MJPEG).ok_or(CodecError::Unavailable {
        kind: "encoder",
        name: "mjpeg",
    })?;
    let mut encoder = codec::context::Context::new_with_codec(found)
        .encoder()
        .video()
        .map_err(CodecError::ffmpeg("JPEG encoder context"))?;
    encoder.set_width(width);
    encoder.set_height(height);
    // Full-range 4:2:0 is what JPEG means by YUV.
    encoder.set_format(Pixel::YUVJ420P);
    encoder.set_time_base((1, 1));
    let mut encoder = encoder
        .open_as(found)
        .map_err(CodecError::ffmpeg("opening the JPEG encoder"))?;
    let mut scaler = Scaler::with_format(width, height, Pixel::YUVJ420P);
    let frame = scaler.scale(picture)?;
    frame.0.set_pts(Some(0));
    encoder
        .send_frame(&frame.0)
        .map_err(CodecError::ffmpeg("encoding the JPEG"))?;
    encoder
        .send_eof()
        .map_err(CodecError::ffmpeg("finishing the JPEG"))?;
    let mut packet = Packet::empty();
    encoder
        .receive_packet(&mut packet)
        .map_err(CodecError::ffmpeg("receiving the JPEG"))?;
    Ok(packet.data().unwrap_or_default().to_vec())
}
