use ffmpeg::format::{Sample, sample::Type};
use ffmpeg::{ChannelLayout, Packet, codec};
use ffmpeg_next as ffmpeg;

use crate::CodecError;

/// Opus in WebRTC always runs at 48 kHz.
pub const OPUS_SAMPLE_RATE: u32 = 48_000;
/// Samples per channel in one 20 ms Opus frame.
pub const OPUS_FRAME_SAMPLES: usize = 960;

/// A stereo sine tone, 20 ms at a time, as interleaved 16-bit samples.
pub struct ToneSource {
    frequency_hz: f32,
    sample_index: u64,
}

impl ToneSource {
    pub fn new(frequency_hz: f32) -> Self {
        Self {
            frequency_hz,
            sample_index: 0,
        }
    }

    /// The next 20 ms: `OPUS_FRAME_SAMPLES` stereo pairs.
    pub fn next_frame(&mut self) -> Vec<i16> {
        let mut samples = Vec::with_capacity(OPUS_FRAME_SAMPLES * 2);
        for _ in 0..OPUS_FRAME_SAMPLES {
            let t = self.sample_index as f32 / OPUS_SAMPLE_RATE as f32;
            let value = (t * self.frequency_hz * std::f32::consts::TAU).sin() * 8000.0;
            samples.extend([value as i16, value as i16]);
            self.sample_index += 1;
        }
        samples
    }
}

/// A stereo Opus encoder (libopus), 20 ms frames.
pub struct OpusEncoder {
    encoder: ffmpeg::encoder::Audio,
    frame: ffmpeg::frame::Audio,
    packet: Packet,
    next_pts: i64,
}

impl OpusEncoder {
    pub fn open(bitrate_bps: u32) -> Result<Self, CodecError> {
        crate::init();
        let found = ffmpeg::encoder::find_by_name("libopus").ok_or(CodecError::Unavailable {
            kind: "encoder",
            name: "libopus",
        })?;
        let mut encoder = codec::context::Context::new_with_codec(found)
            .encoder()
            .audio()
            .map_err(CodecError::ffmpeg("audio encoder context"))?;
        encoder.set_rate(OPUS_SAMPLE_RATE as i32);
        encoder.set_format(Sample::I16(Type::Packed));
        encoder.set_channel_layout(ChannelLayout::STEREO);
        encoder.set_time_base((1, OPUS_SAMPLE_RATE as i32));
        encoder.set_bit_rate(bitrate_bps as usize);
        let encoder = encoder
            .open_as(found)
            .map_err(CodecError::ffmpeg("opening the Opus encoder"))?;
        let frame = ffmpeg::frame::Audio::new(
            Sample::I16(Type::Packed),
            OPUS_FRAME_SAMPLES,
            ChannelLayout::STEREO,
        );
        Ok(Self {
            encoder,
            frame,
            packet: Packet::empty(),
            next_pts: 0,
        })
    }

    /// Encodes 20 ms of interleaved stereo samples into Opus packets.
    pub fn encode(&mut self, interleaved: &[i16]) -> Result<Vec<Vec<u8>>, CodecError> {
        if interleaved.len() != OPUS_FRAME_SAMPLES * 2 {
            return Err(CodecError::Input(format!(
                "an Opus frame takes {} interleaved samples, got {}",
                OPUS_FRAME_SAMPLES * 2,
                interleaved.len()
            )));
        }
        self.frame.set_rate(OPUS_SAMPLE_RATE);
        self.frame.plane_mut::<(i16, i16)>(0).copy_from_slice(
            &interleaved
                .chunks_exact(2)
                .map(|pair| (pair[0], pair[1]))
                .collect::<Vec<_>>(),
        );
        self.frame.set_pts(Some(self.next_pts));
        self.next_pts += OPUS_FRAME_SAMPLES as i64;
        self.encoder
            .send_frame(&self.frame)
            .map_err(CodecError::ffmpeg("sending samples to the Opus encoder"))?;
        let mut out = Vec::new();
        while self.encoder.receive_packet(&mut self.packet).is_ok() {
            out.push(self.packet.data().unwrap_or_default().to_vec());
        }
        Ok(out)
    }
}

/// An Opus decoder (FFmpeg's own); reports how many samples each packet held.
pub struct OpusDecoder {
    decoder: ffmpeg::decoder::Audio,
    frame: ffmpeg::frame::Audio,
}

impl OpusDecoder {
    pub fn open() -> Result<Self, CodecError> {
        crate::init();
        let found = ffmpeg::decoder::find(codec::Id::OPUS).ok_or(CodecError::Unavailable {
            kind: "decoder",
            name: "opus",
        })?;
        let mut context = codec::context::Context::new_with_codec(found);
        // The RTP payload carries no header: say what the stream is.
        // SAFETY: the context was just allocated for this decoder and is
        // not yet opened; these are plain fields FFmpeg reads on open.
        unsafe {
            let raw = context.as_mut_ptr();
            (*raw).sample_rate = OPUS_SAMPLE_RATE as i32;
            ffmpeg::ffi::av_channel_layout_default(&mut (*raw).ch_layout, 2);
        }
        let decoder = context
            .decoder()
            .audio()
            .map_err(CodecError::ffmpeg("opening the Opus decoder"))?;
        Ok(Self {
            decoder,
            frame: ffmpeg::frame::Audio::empty(),
        })
    }

    /// Decodes one Opus packet; returns samples per channel decoded.
    pub fn decode(&mut self, packet: &[u8]) -> Result<usize, CodecError> {
        self.decoder
            .send_packet(&Packet::copy(packet))
            .map_err(CodecError::ffmpeg("decoding an Opus packet"))?;
        let mut samples = 0;
        while self.decoder.receive_frame(&mut self.frame).is_ok() {
            samples += self.frame.samples();
        }
        Ok(samples)
    }
}
