use ffmpeg::format::Pixel;
use ffmpeg::{Dictionary, Packet, codec, picture};
use ffmpeg_next as ffmpeg;

use crate::CodecError;

/// The video codecs the media plane negotiates with WebRTC peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    Vp8,
    /// Constrained Baseline, Annex B access units with in-band SPS/PPS on
    /// every keyframe (what packetization-mode 1 carries).
    H264,
}

impl VideoCodec {
    fn id(self) -> codec::Id {
        match self {
            Self::Vp8 => codec::Id::VP8,
            Self::H264 => codec::Id::H264,
        }
    }

    /// The software encoder used when no hardware encoder is chosen.
    fn software_encoder(self) -> &'static str {
        match self {
            Self::Vp8 => "libvpx",
            Self::H264 => "libx264",
        }
    }

    /// Encoder options for real-time use: no lookahead, no B-frames, the
    /// fastest settings, so a frame leaves the encoder as soon as it enters.
    fn realtime_options(self) -> Dictionary<'static> {
        let mut options = Dictionary::new();
        match self {
            Self::Vp8 => {
                options.set("deadline", "realtime");
                options.set("cpu-used", "8");
                options.set("lag-in-frames", "0");
            }
            Self::H264 => {
                options.set("preset", "veryfast");
                options.set("tune", "zerolatency");
                options.set("profile", "baseline");
                options.set("forced-idr", "1");
            }
        }
        options
    }
}

/// Which H.264 encoder this machine will use, and why: NVENC when a usable
/// NVIDIA GPU answers (opening `h264_nvenc` succeeds), libx264 otherwise.
/// Decided by trying, not by looking for a device file: a driver that is
/// present but unusable (no `libcuda.so.1`, no free session) fails here
/// and falls back, instead of failing a live transcode later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncoderChoice {
    pub name: &'static str,
    pub hardware: bool,
    /// One line for the log: what was tried and what happened.
    pub reason: String,
}

/// Probes for a usable hardware H.264 encoder (see [`EncoderChoice`]).
pub fn choose_h264_encoder() -> EncoderChoice {
    crate::init();
    let Some(nvenc) = ffmpeg::encoder::find_by_name("h264_nvenc") else {
        return EncoderChoice {
            name: "libx264",
            hardware: false,
            reason: "this FFmpeg build has no h264_nvenc".into(),
        };
    };
    // The probe's failure is expected on most machines: keep FFmpeg's own
    // error line ("Cannot load libcuda.so.1") out of the logs; the reason
    // below carries it.
    ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Quiet);
    let probe = codec::context::Context::new_with_codec(nvenc)
        .encoder()
        .video()
        .and_then(|mut encoder| {
            encoder.set_width(256);
            encoder.set_height(144);
            encoder.set_format(Pixel::YUV420P);
            encoder.set_time_base((1, 30));
            encoder.open_as(nvenc)
        });
    ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Error);
    match probe {
        Ok(_) => EncoderChoice {
            name: "h264_nvenc",
            hardware: true,
            reason: "h264_nvenc opened a test session".into(),
        },
        Err(error) => EncoderChoice {
            name: "libx264",
            hardware: false,
            reason: format!("h264_nvenc is built in but could not open: {error}"),
        },
    }
}

/// One uncompressed picture in planar YUV 4:2:0.
pub struct RawVideo(ffmpeg::frame::Video);

impl RawVideo {
    /// A blank picture of the given size.
    pub fn new(width: u32, height: u32) -> Self {
        Self(ffmpeg::frame::Video::new(Pixel::YUV420P, width, height))
    }

    pub fn width(&self) -> u32 {
        self.0.width()
    }

    pub fn height(&self) -> u32 {
        self.0.height()
    }

    /// The luma value at a pixel, for checks on decoded pictures.
    pub fn luma(&self, x: u32, y: u32) -> u8 {
        self.0.data(0)[y as usize * self.0.stride(0) + x as usize]
    }

    pub(crate) fn inner_mut(&mut self) -> &mut ffmpeg::frame::Video {
        &mut self.0
    }
}

/// What an encoder is asked to produce.
#[derive(Debug, Clone, Copy)]
pub struct VideoEncoderConfig {
    pub codec: VideoCodec,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate_bps: u32,
    /// Frames between keyframes.
    pub keyframe_interval: u32,
}

/// One encoded frame: a VP8 frame or an H.264 access unit (Annex B).
#[derive(Debug, Clone)]
pub struct EncodedFrame {
    pub data: Vec<u8>,
    pub keyframe: bool,
    /// Presentation time in frames since the encoder opened.
    pub pts: i64,
}

/// A real-time video encoder.
pub struct VideoEncoder {
    encoder: ffmpeg::encoder::Video,
    config: VideoEncoderConfig,
    next_pts: i64,
    packet: Packet,
}

impl VideoEncoder {
    /// Opens the software encoder for the codec (libvpx or libx264).
    pub fn open(config: VideoEncoderConfig) -> Result<Self, CodecError> {
        crate::init();
        let name = config.codec.software_encoder();
        let found = ffmpeg::encoder::find_by_name(name).ok_or(CodecError::Unavailable {
            kind: "encoder",
            name,
        })?;
        let mut encoder = codec::context::Context::new_with_codec(found)
            .encoder()
            .video()
            .map_err(CodecError::ffmpeg("video encoder context"))?;
        encoder.set_width(config.width);
        encoder.set_height(config.height);
        encoder.set_format(Pixel::YUV420P);
        encoder.set_time_base((1, config.fps as i32));
        encoder.set_frame_rate(Some((config.fps as i32, 1)));
        encoder.set_bit_rate(config.bitrate_bps as usize);
        encoder.set_max_b_frames(0);
        encoder.set_gop(config.keyframe_interval);
        let encoder = encoder
            .open_as_with(found, config.codec.realtime_options())
            .map_err(CodecError::ffmpeg("opening the video encoder"))?;
        Ok(Self {
            encoder,
            config,
            next_pts: 0,
            packet: Packet::empty(),
        })
    }

    pub fn config(&self) -> &VideoEncoderConfig {
        &self.config
    }

    /// Encodes one picture; `keyframe` forces a keyframe (answering a PLI).
    /// Real-time settings make the encoder return the frame at once, but
    /// the result is a list because an encoder may hold or split output.
    pub fn encode(
        &mut self,
        picture: &mut RawVideo,
        keyframe: bool,
    ) -> Result<Vec<EncodedFrame>, CodecError> {
        if (picture.width(), picture.height()) != (self.config.width, self.config.height) {
            return Err(CodecError::Input(format!(
                "picture is {}x{}, the encoder was opened for {}x{}",
                picture.width(),
                picture.height(),
                self.config.width,
                self.config.height
            )));
        }
        let frame = picture.inner_mut();
        frame.set_pts(Some(self.next_pts));
        frame.set_kind(if keyframe {
            picture::Type::I
        } else {
            picture::Type::None
        });
        self.next_pts += 1;
        self.encoder
            .send_frame(frame)
            .map_err(CodecError::ffmpeg("sending a frame to the encoder"))?;
        let mut out = Vec::new();
        while self.encoder.receive_packet(&mut self.packet).is_ok() {
            out.push(EncodedFrame {
                data: self.packet.data().unwrap_or_default().to_vec(),
                keyframe: self.packet.is_key(),
                pts: self.packet.pts().unwrap_or_default(),
            });
        }
        Ok(out)
    }
}

/// A video decoder: codec frames in, pictures out.
pub struct VideoDecoder {
    decoder: ffmpeg::decoder::Video,
    frame: ffmpeg::frame::Video,
}

impl VideoDecoder {
    pub fn open(codec: VideoCodec) -> Result<Self, CodecError> {
        crate::init();
        let found = ffmpeg::decoder::find(codec.id()).ok_or(CodecError::Unavailable {
            kind: "decoder",
            name: match codec {
                VideoCodec::Vp8 => "vp8",
                VideoCodec::H264 => "h264",
            },
        })?;
        let decoder = codec::context::Context::new_with_codec(found)
            .decoder()
            .video()
            .map_err(CodecError::ffmpeg("opening the video decoder"))?;
        Ok(Self {
            decoder,
            frame: ffmpeg::frame::Video::empty(),
        })
    }

    /// Decodes one codec frame and returns the pictures it completes
    /// (none while the decoder waits for a keyframe or more data).
    pub fn decode(&mut self, data: &[u8]) -> Result<Vec<RawVideo>, CodecError> {
        self.decoder
            .send_packet(&Packet::copy(data))
            .map_err(CodecError::ffmpeg("decoding a video frame"))?;
        let mut out = Vec::new();
        while self.decoder.receive_frame(&mut self.frame).is_ok() {
            let decoded = std::mem::replace(&mut self.frame, ffmpeg::frame::Video::empty());
            out.push(RawVideo(decoded));
        }
        Ok(out)
    }
}
