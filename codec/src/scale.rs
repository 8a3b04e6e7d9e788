use ffmpeg::format::Pixel;
use ffmpeg::software::scaling;
use ffmpeg_next as ffmpeg;

use crate::{CodecError, RawVideo};

/// Scales pictures of any size and pixel format to one output size in
/// planar YUV 4:2:0 (what the encoders take).
///
/// The scaling context is made for the input's size and format and made
/// again when they change: a publisher may change resolution mid-stream
/// (a browser adapting to CPU or bandwidth) and the output keeps its size.
pub struct Scaler {
    width: u32,
    height: u32,
    format: Pixel,
    context: Option<(Pixel, u32, u32, scaling::Context)>,
    output: RawVideo,
}

impl Scaler {
    pub fn new(width: u32, height: u32) -> Self {
        Self::with_format(width, height, Pixel::YUV420P)
    }

    pub(crate) fn with_format(width: u32, height: u32, format: Pixel) -> Self {
        Self {
            width,
            height,
            format,
            context: None,
            output: RawVideo(ffmpeg::frame::Video::new(format, width, height)),
        }
    }

    /// The size it scales to.
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Scales `input`; the result is borrowed until the next call.
    pub fn scale(&mut self, input: &RawVideo) -> Result<&mut RawVideo, CodecError> {
        let source = (input.0.format(), input.width(), input.height());
        let stale = self
            .context
            .as_ref()
            .is_none_or(|(format, width, height, _)| (*format, *width, *height) != source);
        if stale {
            let context = scaling::Context::get(
                source.0,
                source.1,
                source.2,
                self.format,
                self.width,
                self.height,
                scaling::Flags::BILINEAR,
            )
            .map_err(CodecError::ffmpeg("making a scaling context"))?;
            self.context = Some((source.0, source.1, source.2, context));
        }
        let (_, _, _, context) = self.context.as_mut().expect("made above");
        context
            .run(&input.0, &mut self.output.0)
            .map_err(CodecError::ffmpeg("scaling a picture"))?;
        Ok(&mut self.output)
    }
}
