//! Pre-encoded clips for a room's program stream, and speech for its host.
//!
//! A clip's video is never decoded: its H.264 access units go out as they
//! are (Annex B, the parameter sets in front of every keyframe), so playing
//! a clip to any number of viewers costs a demux, not an encode. Its audio
//! is decoded to 48 kHz stereo, because the program mixes the host's voice
//! over it and encodes the mix to Opus once.
//!
//! What a clip must be (checked when it is opened, with a precise error):
//! H.264 video without B-frames (WebRTC receivers decode in arrival order)
//! in any container FFmpeg reads (MP4, Matroska, MPEG-TS); audio optional,
//! any codec. Keyframes every second or two: a viewer joins on one.

use std::path::Path;

use ffmpeg::format::{Sample, sample::Type};
use ffmpeg::software::resampling;
use ffmpeg::{ChannelLayout, Packet, Rational, codec, media};
use ffmpeg_next as ffmpeg;

use crate::{CodecError, OPUS_SAMPLE_RATE};

/// What a clip holds, as checked on opening.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClipInfo {
    pub width: u32,
    pub height: u32,
    /// From the container; 0 when it does not say.
    pub duration_ms: u64,
    pub has_audio: bool,
}

/// One H.264 access unit of a clip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClipVideo {
    /// Annex B, with SPS and PPS in front of a keyframe.
    pub data: Vec<u8>,
    pub keyframe: bool,
    /// Presentation time from the clip's first frame, microseconds.
    pub time_us: u64,
}

/// What reading a clip yields, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClipItem {
    Video(ClipVideo),
    /// Decoded audio: interleaved stereo, 48 kHz.
    Audio(Vec<i16>),
}

/// Reads a clip from its start to its end (open it again to loop).
pub struct ClipReader {
    input: ffmpeg::format::context::Input,
    video_index: usize,
    video_time_base: Rational,
    first_pts: Option<i64>,
    parameter_sets: ParameterSets,
    audio: Option<(usize, AudioDecoder)>,
    info: ClipInfo,
    packet: Packet,
}

impl ClipReader {
    pub fn open(path: &Path) -> Result<Self, CodecError> {
        crate::init();
        let input = ffmpeg::format::input(path).map_err(|source| {
            CodecError::Input(format!("cannot read {}: {source}", path.display()))
        })?;
        let video = input
            .streams()
            .best(media::Type::Video)
            .ok_or_else(|| CodecError::Input(format!("{} has no video stream", path.display())))?;
        let parameters = video.parameters();
        if parameters.id() != codec::Id::H264 {
            return Err(CodecError::Input(format!(
                "{} is {:?} video; clips must be H.264 (ffmpeg -i in -c:v libx264 -bf 0 -g 50 -c:a libopus out.mp4)",
                path.display(),
                parameters.id()
            )));
        }
        // SAFETY: the parameters belong to a stream of the open input and
        // are only read here.
        let (width, height, delay, extradata) = unsafe {
            let raw = &*parameters.as_ptr();
            let extradata = if raw.extradata.is_null() || raw.extradata_size <= 0 {
                Vec::new()
            } else {
                std::slice::from_raw_parts(raw.extradata, raw.extradata_size as usize).to_vec()
            };
            (raw.width, raw.height, raw.video_delay, extradata)
        };
        if delay > 0 {
            return Err(CodecError::Input(format!(
                "{} has B-frames, which WebRTC receivers cannot reorder; re-encode with -bf 0",
                path.display()
            )));
        }
        let video_index = video.index();
        let video_time_base = video.time_base();
        let parameter_sets = ParameterSets::from_extradata(&extradata)?;
        let audio = match input.streams().best(media::Type::Audio) {
            Some(stream) => Some((stream.index(), AudioDecoder::open(stream.parameters())?)),
            None => None,
        };
        let duration = input.duration();
        let info = ClipInfo {
            width: width.max(0) as u32,
            height: height.max(0) as u32,
            duration_ms: if duration > 0 {
                (duration / 1000) as u64
            } else {
                0
            },
            has_audio: audio.is_some(),
        };
        Ok(Self {
            input,
            video_index,
            video_time_base,
            first_pts: None,
            parameter_sets,
            audio,
            info,
            packet: Packet::empty(),
        })
    }

    pub fn info(&self) -> &ClipInfo {
        &self.info
    }

    /// The next video frame or piece of audio; `None` at the end.
    pub fn read(&mut self) -> Result<Option<ClipItem>, CodecError> {
        loop {
            match self.packet.read(&mut self.input) {
                Ok(()) => {}
                Err(ffmpeg::Error::Eof) => return Ok(None),
                Err(source) => {
                    return Err(CodecError::Ffmpeg {
                        context: "reading a clip",
                        source,
                    });
                }
            }
            let index = self.packet.stream();
            if index == self.video_index {
                let Some(data) = self.packet.data() else {
                    continue;
                };
                let keyframe = self.packet.is_key();
                let pts = self.packet.pts().or(self.packet.dts()).unwrap_or(0);
                let first = *self.first_pts.get_or_insert(pts);
                let ticks = pts.saturating_sub(first).max(0) as i128;
                let time_us = ticks * i128::from(self.video_time_base.numerator()) * 1_000_000
                    / i128::from(self.video_time_base.denominator().max(1));
                return Ok(Some(ClipItem::Video(ClipVideo {
                    data: self.parameter_sets.annex_b(data, keyframe),
                    keyframe,
                    time_us: time_us as u64,
                })));
            }
            if let Some((audio_index, decoder)) = self.audio.as_mut()
                && index == *audio_index
            {
                let samples = decoder.decode(&self.packet)?;
                if !samples.is_empty() {
                    return Ok(Some(ClipItem::Audio(samples)));
                }
            }
        }
    }
}

/// Checks that a clip can be played, and says what it holds.
pub fn probe(path: &Path) -> Result<ClipInfo, CodecError> {
    ClipReader::open(path).map(|reader| reader.info)
}

/// How a clip's H.264 is framed: length-prefixed (MP4, Matroska: SPS and
/// PPS in the `avcC` extradata) or already Annex B (MPEG-TS).
enum ParameterSets {
    /// Annex B SPS and PPS to put in front of keyframes, and the size of
    /// each NAL unit's length prefix.
    LengthPrefixed {
        headers: Vec<u8>,
        length_size: usize,
    },
    AnnexB,
}

const START_CODE: [u8; 4] = [0, 0, 0, 1];

impl ParameterSets {
    fn from_extradata(extradata: &[u8]) -> Result<Self, CodecError> {
        if extradata.first() != Some(&1) {
            return Ok(Self::AnnexB);
        }
        let malformed = || CodecError::Input("malformed avcC extradata".into());
        let length_size = usize::from(extradata.get(4).ok_or_else(malformed)? & 0x03) + 1;
        let mut headers = Vec::new();
        let mut at = 5;
        // SPS count (low 5 bits), then each; then the PPS count and each.
        for mask in [0x1f, 0xff] {
            let count = extradata.get(at).ok_or_else(malformed)? & mask;
            at += 1;
            for _ in 0..count {
                let size = usize::from(u16::from_be_bytes([
                    *extradata.get(at).ok_or_else(malformed)?,
                    *extradata.get(at + 1).ok_or_else(malformed)?,
                ]));
                let unit = extradata.get(at + 2..at + 2 + size).ok_or_else(malformed)?;
                headers.extend_from_slice(&START_CODE);
                headers.extend_from_slice(unit);
                at += 2 + size;
            }
        }
        Ok(Self::LengthPrefixed {
            headers,
            length_size,
        })
    }

    /// One access unit in Annex B.
    fn annex_b(&self, data: &[u8], keyframe: bool) -> Vec<u8> {
        let Self::LengthPrefixed {
            headers,
            length_size,
        } = self
        else {
            return data.to_vec();
        };
        let mut out = Vec::with_capacity(data.len() + headers.len() + 16);
        if keyframe {
            out.extend_from_slice(headers);
        }
        let mut rest = data;
        while rest.len() > *length_size {
            let size = rest[..*length_size]
                .iter()
                .fold(0usize, |size, byte| (size << 8) | usize::from(*byte));
            let Some(unit) = rest.get(*length_size..*length_size + size) else {
                // A truncated unit: keep what is whole.
                break;
            };
            out.extend_from_slice(&START_CODE);
            out.extend_from_slice(unit);
            rest = &rest[*length_size + size..];
        }
        out
    }
}

/// Any audio decoder, resampled to interleaved 48 kHz stereo.
struct AudioDecoder {
    decoder: ffmpeg::decoder::Audio,
    frame: ffmpeg::frame::Audio,
    resampler: Option<Resampler>,
}

impl AudioDecoder {
    fn open(parameters: codec::Parameters) -> Result<Self, CodecError> {
        let decoder = codec::context::Context::from_parameters(parameters)
            .and_then(|context| context.decoder().audio())
            .map_err(CodecError::ffmpeg("opening a clip's audio decoder"))?;
        Ok(Self {
            decoder,
            frame: ffmpeg::frame::Audio::empty(),
            resampler: None,
        })
    }

    fn decode(&mut self, packet: &Packet) -> Result<Vec<i16>, CodecError> {
        let mut out = Vec::new();
        // A damaged packet loses its own samples, not the clip.
        if self.decoder.send_packet(packet).is_err() {
            return Ok(out);
        }
        while self.decoder.receive_frame(&mut self.frame).is_ok() {
            let resampler = match self.resampler.as_mut() {
                Some(resampler) => resampler,
                None => self.resampler.insert(Resampler::for_frame(&self.frame)?),
            };
            resampler.convert(&self.frame, &mut out)?;
        }
        Ok(out)
    }
}

/// Converts decoded audio to interleaved 48 kHz stereo 16-bit.
struct Resampler {
    context: resampling::Context,
    input_rate: u32,
}

impl Resampler {
    fn for_frame(frame: &ffmpeg::frame::Audio) -> Result<Self, CodecError> {
        Self::new(frame.format(), layout_of(frame), frame.rate())
    }

    fn new(format: Sample, layout: ChannelLayout, rate: u32) -> Result<Self, CodecError> {
        let context = resampling::Context::get(
            format,
            layout,
            rate,
            Sample::I16(Type::Packed),
            ChannelLayout::STEREO,
            OPUS_SAMPLE_RATE,
        )
        .map_err(CodecError::ffmpeg("creating an audio resampler"))?;
        Ok(Self {
            context,
            input_rate: rate.max(1),
        })
    }

    fn convert(
        &mut self,
        input: &ffmpeg::frame::Audio,
        out: &mut Vec<i16>,
    ) -> Result<(), CodecError> {
        // Room for every sample the input makes at 48 kHz, and what the
        // resampler held back from the last call.
        let room = input.samples() * OPUS_SAMPLE_RATE as usize / self.input_rate as usize + 512;
        let mut converted =
            ffmpeg::frame::Audio::new(Sample::I16(Type::Packed), room, ChannelLayout::STEREO);
        converted.set_rate(OPUS_SAMPLE_RATE);
        self.context
            .run(input, &mut converted)
            .map_err(CodecError::ffmpeg("resampling audio"))?;
        let samples = converted.samples();
        let bytes = &converted.data(0)[..samples * 4];
        out.extend(
            bytes
                .chunks_exact(2)
                .map(|pair| i16::from_ne_bytes([pair[0], pair[1]])),
        );
        Ok(())
    }
}

pub(crate) fn layout_of(frame: &ffmpeg::frame::Audio) -> ChannelLayout {
    let layout = frame.channel_layout();
    if layout.bits() == 0 {
        ChannelLayout::default(i32::from(frame.channels().max(1)))
    } else {
        layout
    }
}

/// Decodes a WAV file held in memory (16-bit PCM, any rate and channel
/// count, as `espeak-ng --stdout` writes) to interleaved 48 kHz stereo.
pub fn wav_to_stereo_48k(wav: &[u8]) -> Result<Vec<i16>, CodecError> {
    let malformed = |what: &str| CodecError::Input(format!("not a 16-bit PCM WAV: {what}"));
    if wav.len() < 12 || &wav[..4] != b"RIFF" || &wav[8..12] != b"WAVE" {
        return Err(malformed("no RIFF/WAVE header"));
    }
    let (mut rate, mut channels, mut at) = (0u32, 0u16, 12usize);
    while at + 8 <= wav.len() {
        let id = &wav[at..at + 4];
        let size = u32::from_le_bytes([wav[at + 4], wav[at + 5], wav[at + 6], wav[at + 7]]);
        let body = at + 8;
        if id == b"fmt " {
            let fmt = wav
                .get(body..body + 16)
                .ok_or_else(|| malformed("short fmt"))?;
            let (format, bits) = (
                u16::from_le_bytes([fmt[0], fmt[1]]),
                u16::from_le_bytes([fmt[14], fmt[15]]),
            );
            if format != 1 || bits != 16 {
                return Err(malformed("not 16-bit PCM"));
            }
            channels = u16::from_le_bytes([fmt[2], fmt[3]]);
            rate = u32::from_le_bytes([fmt[4], fmt[5], fmt[6], fmt[7]]);
        } else if id == b"data" {
            if rate == 0 || channels == 0 {
                return Err(malformed("data before fmt"));
            }
            // A WAV written to a pipe says 0 or u32::MAX: the rest is data.
            let size = if size == 0 { u32::MAX } else { size };
            let end = body.saturating_add(size as usize).min(wav.len());
            return pcm_to_stereo_48k(&wav[body..end], rate, channels);
        }
        at = body.saturating_add(size as usize + (size as usize & 1));
    }
    Err(malformed("no data chunk"))
}

fn pcm_to_stereo_48k(pcm: &[u8], rate: u32, channels: u16) -> Result<Vec<i16>, CodecError> {
    crate::init();
    let frame_bytes = 2 * usize::from(channels);
    let samples = pcm.len() / frame_bytes;
    if samples == 0 {
        return Ok(Vec::new());
    }
    let whole = samples * frame_bytes;
    let layout = ChannelLayout::default(i32::from(channels));
    let mut input = ffmpeg::frame::Audio::new(Sample::I16(Type::Packed), samples, layout);
    input.set_rate(rate);
    input.data_mut(0)[..whole].copy_from_slice(&pcm[..whole]);
    let mut resampler = Resampler::new(Sample::I16(Type::Packed), layout, rate)?;
    let mut out = Vec::new();
    resampler.convert(&input, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_prefixed_units_become_annex_b_with_parameter_sets_on_keyframes() {
        // avcC: version 1, profile, compat, level, 0xff (4-byte lengths),
        // one SPS [0x67, 0xaa], one PPS [0x68, 0xbb].
        let avcc = [
            1, 0x42, 0, 0x1f, 0xff, 0xe1, 0, 2, 0x67, 0xaa, 1, 0, 2, 0x68, 0xbb,
        ];
        let sets = ParameterSets::from_extradata(&avcc).unwrap();
        let unit = [0, 0, 0, 3, 0x65, 1, 2, 0, 0, 0, 2, 0x06, 9];
        let keyframe = sets.annex_b(&unit, true);
        assert_eq!(
            keyframe,
            [
                0, 0, 0, 1, 0x67, 0xaa, 0, 0, 0, 1, 0x68, 0xbb, 0, 0, 0, 1, 0x65, 1, 2, 0, 0, 0, 1,
                0x06, 9
            ]
        );
        let delta = sets.annex_b(&[0, 0, 0, 2, 0x41, 7], false);
        assert_eq!(delta, [0, 0, 0, 1, 0x41, 7]);
        // A unit whose length runs past the packet is cut, not read past.
        assert_eq!(sets.annex_b(&[0, 0, 0, 9, 0x41], false), Vec::<u8>::new());
        assert!(ParameterSets::from_extradata(&[1, 0x42, 0, 0x1f, 0xff, 0xe1, 0, 9]).is_err());
    }

    #[test]
    fn a_wav_from_a_pipe_is_resampled_to_48k_stereo() {
        // 22.05 kHz mono, 0.1 s, data size unknown (as espeak-ng --stdout).
        let samples: Vec<i16> = (0..2205).map(|i| ((i % 50) * 100) as i16).collect();
        let mut wav = b"RIFF\xff\xff\xff\xffWAVEfmt ".to_vec();
        wav.extend(16u32.to_le_bytes());
        wav.extend(1u16.to_le_bytes());
        wav.extend(1u16.to_le_bytes());
        wav.extend(22_050u32.to_le_bytes());
        wav.extend((22_050u32 * 2).to_le_bytes());
        wav.extend(2u16.to_le_bytes());
        wav.extend(16u16.to_le_bytes());
        wav.extend(b"data\xff\xff\xff\xff");
        wav.extend(samples.iter().flat_map(|s| s.to_le_bytes()));
        let stereo = wav_to_stereo_48k(&wav).unwrap();
        let frames = stereo.len() / 2;
        assert!(
            (4600..=4800).contains(&frames),
            "0.1 s at 48 kHz is about 4800 samples per channel, got {frames}"
        );
        assert!(stereo.iter().any(|s| *s != 0));
        assert!(wav_to_stereo_48k(b"RIFF....WAVEjunk").is_err());
        assert!(wav_to_stereo_48k(b"").is_err());
    }
}
