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
    pub fn software_encoder(self) -> &'static str {
        match self {
            Self::Vp8 => "libvpx",
            Self::H264 => "libx264",
        }
    }
}

/// Encoder options for real-time use: no lookahead, no B-frames, the
/// fastest settings, so a frame leaves the encoder as soon as it enters.
/// The same settings serve the transcoder and the ffmpeg CLI it is
/// benchmarked against (see [`realtime_cli_args`]).
fn realtime_options(encoder: &str) -> Dictionary<'static> {
    let mut options = Dictionary::new();
    for (key, value) in realtime_settings(encoder) {
        options.set(key, value);
    }
    options
}

fn realtime_settings(encoder: &str) -> &'static [(&'static str, &'static str)] {
    match encoder {
        "libvpx" => &[
            ("deadline", "realtime"),
            ("cpu-used", "8"),
            ("lag-in-frames", "0"),
        ],
        // One thread per encoder: libx264 would start sliced threads on
        // every core for each rendition, which costs ~15 % more CPU per
        // frame than one thread; the engine gets its parallelism from
        // running many encoders (renditions, streams) at once.
        "libx264" => &[
            ("preset", "veryfast"),
            ("tune", "zerolatency"),
            ("profile", "baseline"),
            ("forced-idr", "1"),
            ("threads", "1"),
        ],
        "h264_nvenc" => &[
            ("preset", "p1"),
            ("tune", "ull"),
            ("zerolatency", "1"),
            ("profile", "baseline"),
            ("rc", "cbr"),
            ("forced-idr", "1"),
        ],
        _ => &[],
    }
}

/// The encoder's real-time settings as ffmpeg CLI arguments
/// (`-preset veryfast -tune zerolatency ...`), for the benchmark that runs
/// the same ladder through the CLI.
pub fn realtime_cli_args(encoder: &str) -> Vec<String> {
    realtime_settings(encoder)
        .iter()
        .flat_map(|(key, value)| {
            // `-profile` alone is ambiguous to the CLI (audio or video).
            let flag = if *key == "profile" {
                "-profile:v".to_owned()
            } else {
                format!("-{key}")
            };
            [flag, (*value).to_owned()]
        })
        .collect()
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
    // below carries it. The probe opens the encoder exactly as the
    // transcoder will, options included.
    ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Quiet);
    let probe = VideoEncoder::open_with(
        VideoEncoderConfig {
            codec: VideoCodec::H264,
            width: 256,
            height: 144,
            fps: 30,
            bitrate_bps: 300_000,
            keyframe_interval: 60,
        },
        EncoderSetup {
            name: nvenc.name(),
            clock_hz: 30,
            global_header: true,
        },
    );
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
pub struct RawVideo(pub(crate) ffmpeg::frame::Video);

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

/// How an encoder is opened, beyond what it produces.
#[derive(Debug, Clone, Copy)]
pub struct EncoderSetup<'a> {
    /// FFmpeg's encoder name: `libvpx`, `libx264`, `h264_nvenc`.
    pub name: &'a str,
    /// The clock of the timestamps given to [`VideoEncoder::encode_at`]:
    /// 90 000 for RTP video time, the frame rate for frame counts.
    pub clock_hz: u32,
    /// Also put the parameter sets (SPS/PPS) in the codec's extradata, as
    /// MP4 muxers want. Keyframes still carry them in-band (RTP receivers
    /// need them there): the encoder prepends them where it would not.
    pub global_header: bool,
}

/// A real-time video encoder.
pub struct VideoEncoder {
    encoder: ffmpeg::encoder::Video,
    config: VideoEncoderConfig,
    name: String,
    next_pts: i64,
    packet: Packet,
    /// Annex B parameter sets to put in front of keyframes that lack them.
    in_band_headers: Option<Vec<u8>>,
}

impl VideoEncoder {
    /// Opens the software encoder for the codec (libvpx or libx264),
    /// timestamps counted in frames.
    pub fn open(config: VideoEncoderConfig) -> Result<Self, CodecError> {
        Self::open_with(
            config,
            EncoderSetup {
                name: config.codec.software_encoder(),
                clock_hz: config.fps,
                global_header: false,
            },
        )
    }

    /// Opens the named encoder with its real-time settings.
    pub fn open_with(config: VideoEncoderConfig, setup: EncoderSetup) -> Result<Self, CodecError> {
        crate::init();
        let found = ffmpeg::encoder::find_by_name(setup.name).ok_or(CodecError::Unavailable {
            kind: "encoder",
            name: static_name(setup.name),
        })?;
        let mut encoder = codec::context::Context::new_with_codec(found)
            .encoder()
            .video()
            .map_err(CodecError::ffmpeg("video encoder context"))?;
        encoder.set_width(config.width);
        encoder.set_height(config.height);
        encoder.set_format(Pixel::YUV420P);
        encoder.set_time_base((1, setup.clock_hz as i32));
        encoder.set_frame_rate(Some((config.fps as i32, 1)));
        encoder.set_bit_rate(config.bitrate_bps as usize);
        encoder.set_max_b_frames(0);
        encoder.set_gop(config.keyframe_interval);
        if setup.global_header {
            encoder.set_flags(codec::Flags::GLOBAL_HEADER);
        }
        let encoder = encoder
            .open_as_with(found, realtime_options(setup.name))
            .map_err(CodecError::ffmpeg("opening the video encoder"))?;
        let in_band_headers = setup
            .global_header
            .then(|| extradata(&encoder).to_vec())
            .filter(|headers| !headers.is_empty());
        Ok(Self {
            encoder,
            config,
            name: setup.name.to_owned(),
            next_pts: 0,
            packet: Packet::empty(),
            in_band_headers,
        })
    }

    pub fn config(&self) -> &VideoEncoderConfig {
        &self.config
    }

    /// FFmpeg's name of the encoder in use.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The codec's extradata (H.264: Annex B SPS and PPS when opened with
    /// a global header), empty when it has none.
    pub fn extradata(&self) -> &[u8] {
        extradata(&self.encoder)
    }

    pub(crate) fn parameters(&self) -> codec::Parameters {
        codec::Parameters::from(&self.encoder)
    }

    /// Encodes one picture stamped with the next frame count.
    pub fn encode(
        &mut self,
        picture: &mut RawVideo,
        keyframe: bool,
    ) -> Result<Vec<EncodedFrame>, CodecError> {
        let pts = self.next_pts;
        self.encode_at(picture, pts, keyframe)
    }

    /// Encodes one picture with the given timestamp (in the setup's
    /// clock); `keyframe` forces a keyframe (answering a PLI, starting a
    /// segment). Real-time settings make the encoder return the frame at
    /// once, but the result is a list because an encoder may hold or split
    /// output.
    pub fn encode_at(
        &mut self,
        picture: &mut RawVideo,
        pts: i64,
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
        frame.set_pts(Some(pts));
        frame.set_kind(if keyframe {
            picture::Type::I
        } else {
            picture::Type::None
        });
        self.next_pts = pts + 1;
        self.encoder
            .send_frame(frame)
            .map_err(CodecError::ffmpeg("sending a frame to the encoder"))?;
        let mut out = Vec::new();
        while self.encoder.receive_packet(&mut self.packet).is_ok() {
            let keyframe = self.packet.is_key();
            let payload = self.packet.data().unwrap_or_default();
            let data = match &self.in_band_headers {
                Some(headers) if keyframe && !has_parameter_sets(payload) => {
                    [headers.as_slice(), payload].concat()
                }
                _ => payload.to_vec(),
            };
            out.push(EncodedFrame {
                data,
                keyframe,
                pts: self.packet.pts().unwrap_or_default(),
            });
        }
        Ok(out)
    }
}

fn extradata(encoder: &ffmpeg::encoder::Video) -> &[u8] {
    // SAFETY: the context is open; FFmpeg owns `extradata` for the
    // context's lifetime, which the returned slice borrows.
    unsafe {
        let raw = encoder.as_ptr();
        if (*raw).extradata.is_null() || (*raw).extradata_size <= 0 {
            return &[];
        }
        std::slice::from_raw_parts((*raw).extradata, (*raw).extradata_size as usize)
    }
}

/// The NAL units of an Annex B H.264 access unit: each one's type and
/// the bytes from its header to the end of the access unit.
pub(crate) fn nal_types(access_unit: &[u8]) -> impl Iterator<Item = (u8, &[u8])> + '_ {
    let mut index = 0;
    std::iter::from_fn(move || {
        while index + 3 <= access_unit.len() {
            if access_unit[index..index + 3] == [0, 0, 1] {
                index += 3;
                let nal = &access_unit[index..];
                return nal.first().map(|header| (header & 0x1f, nal));
            }
            index += 1;
        }
        None
    })
}

/// Whether an access unit carries an SPS (type 7) in-band.
fn has_parameter_sets(access_unit: &[u8]) -> bool {
    nal_types(access_unit).any(|(kind, _)| kind == 7)
}

/// The RFC 6381 `avc1.PPCCLL` codec string of an H.264 stream, from the
/// SPS in its extradata or a keyframe.
pub fn h264_codec_string(annex_b: &[u8]) -> Option<String> {
    let (_, sps) = nal_types(annex_b).find(|(kind, _)| *kind == 7)?;
    let profile = sps.get(1..4)?;
    Some(format!(
        "avc1.{:02x}{:02x}{:02x}",
        profile[0], profile[1], profile[2]
    ))
}

/// Encoder names are few and known; errors carry them as `'static`.
fn static_name(name: &str) -> &'static str {
    match name {
        "libvpx" => "libvpx",
        "libx264" => "libx264",
        "h264_nvenc" => "h264_nvenc",
        _ => "the requested encoder",
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
