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
        let mut samples = 0;
        self.decode_with(packet, |frame| samples += frame.samples())?;
        Ok(samples)
    }

    /// Decodes one Opus packet into interleaved 16-bit stereo at 48 kHz,
    /// appended to `out` (a mono stream is doubled).
    pub fn decode_interleaved(
        &mut self,
        packet: &[u8],
        out: &mut Vec<i16>,
    ) -> Result<(), CodecError> {
        self.decode_with(packet, |frame| {
            let left = frame.plane::<f32>(0);
            let right = if frame.planes() > 1 {
                frame.plane::<f32>(1)
            } else {
                left
            };
            let to_i16 = |sample: f32| (sample.clamp(-1.0, 1.0) * f32::from(i16::MAX)) as i16;
            for (l, r) in left.iter().zip(right) {
                out.extend([to_i16(*l), to_i16(*r)]);
            }
        })
    }

    /// Decodes one Opus packet and hands each decoded frame (planar
    /// float, 48 kHz) to `sink`.
    pub(crate) fn decode_with(
        &mut self,
        packet: &[u8],
        mut sink: impl FnMut(&ffmpeg::frame::Audio),
    ) -> Result<(), CodecError> {
        self.decoder
            .send_packet(&Packet::copy(packet))
            .map_err(CodecError::ffmpeg("decoding an Opus packet"))?;
        while self.decoder.receive_frame(&mut self.frame).is_ok() {
            sink(&self.frame);
        }
        Ok(())
    }
}

/// Speech recognizers hear 16 kHz mono.
pub const SPEECH_SAMPLE_RATE: u32 = 16_000;

/// Turns a stream's Opus packets into what a speech recognizer hears:
/// 16 kHz mono float samples in [-1, 1] (FFmpeg's resampler, which
/// filters before it decimates, so nothing above 8 kHz folds back as
/// noise).
pub struct SpeechDecoder {
    opus: OpusDecoder,
    resampler: Option<ffmpeg::software::resampling::Context>,
}

impl SpeechDecoder {
    pub fn open() -> Result<Self, CodecError> {
        Ok(Self {
            opus: OpusDecoder::open()?,
            resampler: None,
        })
    }

    /// Decodes one Opus packet, appending its samples to `out` (about a
    /// third as many as the packet held at 48 kHz; the resampler keeps a
    /// few back until the next packet). Returns the packet's duration in
    /// 48 kHz samples, the unit of its RTP clock.
    pub fn decode(&mut self, packet: &[u8], out: &mut Vec<f32>) -> Result<usize, CodecError> {
        let Self { opus, resampler } = self;
        let mut failure = None;
        let mut duration = 0;
        opus.decode_with(packet, |frame| {
            duration += frame.samples();
            if failure.is_some() {
                return;
            }
            if let Err(error) = to_speech(resampler, frame, out) {
                failure = Some(error);
            }
        })?;
        failure.map_or(Ok(duration), Err)
    }
}

fn to_speech(
    resampler: &mut Option<ffmpeg::software::resampling::Context>,
    frame: &ffmpeg::frame::Audio,
    out: &mut Vec<f32>,
) -> Result<(), CodecError> {
    let context = match resampler {
        Some(context) => context,
        None => resampler.insert(
            ffmpeg::software::resampling::Context::get(
                frame.format(),
                crate::clip::layout_of(frame),
                frame.rate(),
                Sample::F32(Type::Packed),
                ChannelLayout::MONO,
                SPEECH_SAMPLE_RATE,
            )
            .map_err(CodecError::ffmpeg("creating the speech resampler"))?,
        ),
    };
    let room = frame.samples() * SPEECH_SAMPLE_RATE as usize / frame.rate().max(1) as usize + 256;
    let mut converted =
        ffmpeg::frame::Audio::new(Sample::F32(Type::Packed), room, ChannelLayout::MONO);
    converted.set_rate(SPEECH_SAMPLE_RATE);
    context
        .run(frame, &mut converted)
        .map_err(CodecError::ffmpeg("resampling speech"))?;
    let samples = converted.samples();
    out.extend(
        converted.data(0)[..samples * 4]
            .chunks_exact(4)
            .map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]])),
    );
    Ok(())
}

/// A gap in the audio longer than this is filled with silence; a longer
/// one (a publisher muted for minutes) restarts the timeline instead.
const MAX_SILENCE_FILL: i64 = 5 * OPUS_SAMPLE_RATE as i64;

/// One encoded AAC frame, stamped in samples at 48 kHz.
#[derive(Debug, Clone)]
pub struct AudioPacket {
    pub data: Vec<u8>,
    pub pts: i64,
}

/// A stereo AAC-LC encoder (FFmpeg's own) fed decoded Opus: the audio of
/// HLS renditions. AAC takes 1024-sample frames, Opus gives 960, so
/// samples queue here until a whole frame is there.
pub struct AacEncoder {
    encoder: ffmpeg::encoder::Audio,
    frame_size: usize,
    /// Queued samples per channel (left, right).
    pending: [Vec<f32>; 2],
    /// Media position of the first queued sample, in samples.
    pending_pts: i64,
    /// Samples have arrived: later ones are placed relative to them.
    started: bool,
    frame: ffmpeg::frame::Audio,
    packet: Packet,
}

impl AacEncoder {
    pub fn open(bitrate_bps: u32) -> Result<Self, CodecError> {
        crate::init();
        let found = ffmpeg::encoder::find(codec::Id::AAC).ok_or(CodecError::Unavailable {
            kind: "encoder",
            name: "aac",
        })?;
        let mut encoder = codec::context::Context::new_with_codec(found)
            .encoder()
            .audio()
            .map_err(CodecError::ffmpeg("AAC encoder context"))?;
        encoder.set_rate(OPUS_SAMPLE_RATE as i32);
        encoder.set_format(Sample::F32(Type::Planar));
        encoder.set_channel_layout(ChannelLayout::STEREO);
        encoder.set_time_base((1, OPUS_SAMPLE_RATE as i32));
        encoder.set_bit_rate(bitrate_bps as usize);
        // MP4 wants the AudioSpecificConfig in the stream header.
        encoder.set_flags(codec::Flags::GLOBAL_HEADER);
        let encoder = encoder
            .open_as(found)
            .map_err(CodecError::ffmpeg("opening the AAC encoder"))?;
        let frame_size = encoder.frame_size().max(1) as usize;
        let frame =
            ffmpeg::frame::Audio::new(Sample::F32(Type::Planar), frame_size, ChannelLayout::STEREO);
        Ok(Self {
            encoder,
            frame_size,
            pending: [Vec::new(), Vec::new()],
            pending_pts: 0,
            started: false,
            frame,
            packet: Packet::empty(),
        })
    }

    pub(crate) fn parameters(&self) -> codec::Parameters {
        codec::Parameters::from(&self.encoder)
    }

    /// Queues decoded samples that belong at media position `pts` (in
    /// samples) and encodes every whole frame. A gap since the last
    /// samples (packets lost, DTX silence) is filled with silence so the
    /// audio stays on the media timeline; samples that would go back in
    /// time are dropped.
    pub(crate) fn push(
        &mut self,
        pcm: &ffmpeg::frame::Audio,
        pts: i64,
    ) -> Result<Vec<AudioPacket>, CodecError> {
        if pcm.format() != Sample::F32(Type::Planar) || pcm.channels() == 0 {
            return Err(CodecError::Input(format!(
                "AAC takes planar float samples, got {:?} x{}",
                pcm.format(),
                pcm.channels()
            )));
        }
        let queued_end = self.pending_pts + self.pending[0].len() as i64;
        let slack = OPUS_FRAME_SAMPLES as i64;
        if !self.started || pts - queued_end > MAX_SILENCE_FILL {
            self.started = true;
            self.pending = [Vec::new(), Vec::new()];
            self.pending_pts = pts;
        } else if pts > queued_end + slack {
            let gap = (pts - queued_end) as usize;
            for channel in &mut self.pending {
                channel.resize(channel.len() + gap, 0.0);
            }
        } else if pts + slack < queued_end {
            return Ok(Vec::new());
        }
        let samples = pcm.samples();
        let left = &pcm.plane::<f32>(0)[..samples];
        let right = &pcm.plane::<f32>(if pcm.channels() > 1 { 1 } else { 0 })[..samples];
        self.pending[0].extend_from_slice(left);
        self.pending[1].extend_from_slice(right);
        self.drain()
    }

    /// Ends the audio at media position `end` (samples): silence fills
    /// from the last samples up to it (and to a whole frame), then the
    /// encoder gives up what it holds. A recording's audio thus reaches its
    /// last video frame, so its last segment carries both tracks (players
    /// such as hls.js treat a segment without one of its tracks as empty).
    /// Audio that never started stays absent.
    pub(crate) fn finish_at(&mut self, end: i64) -> Result<Vec<AudioPacket>, CodecError> {
        if !self.started {
            return Ok(Vec::new());
        }
        let queued_end = self.pending_pts + self.pending[0].len() as i64;
        let gap = (end - queued_end).clamp(0, MAX_SILENCE_FILL) as usize;
        let partial = (self.pending[0].len() + gap) % self.frame_size;
        let fill = gap
            + if partial == 0 {
                0
            } else {
                self.frame_size - partial
            };
        for channel in &mut self.pending {
            channel.resize(channel.len() + fill, 0.0);
        }
        let mut out = self.drain()?;
        self.encoder
            .send_eof()
            .map_err(CodecError::ffmpeg("flushing the AAC encoder"))?;
        while self.encoder.receive_packet(&mut self.packet).is_ok() {
            out.push(AudioPacket {
                data: self.packet.data().unwrap_or_default().to_vec(),
                pts: self.packet.pts().unwrap_or_default(),
            });
        }
        Ok(out)
    }

    fn drain(&mut self) -> Result<Vec<AudioPacket>, CodecError> {
        let mut out = Vec::new();
        while self.pending[0].len() >= self.frame_size {
            for (channel, queued) in self.pending.iter_mut().enumerate() {
                self.frame
                    .plane_mut::<f32>(channel)
                    .copy_from_slice(&queued[..self.frame_size]);
                queued.drain(..self.frame_size);
            }
            self.frame.set_pts(Some(self.pending_pts));
            self.frame.set_rate(OPUS_SAMPLE_RATE);
            self.pending_pts += self.frame_size as i64;
            self.encoder
                .send_frame(&self.frame)
                .map_err(CodecError::ffmpeg("sending samples to the AAC encoder"))?;
            while self.encoder.receive_packet(&mut self.packet).is_ok() {
                out.push(AudioPacket {
                    data: self.packet.data().unwrap_or_default().to_vec(),
                    pts: self.packet.pts().unwrap_or_default(),
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 440 Hz tone through Opus comes out at 16 kHz mono: a third of
    /// the samples, the same pitch (zero crossings), the same loudness.
    #[test]
    fn speech_decoder_gives_16k_mono_of_the_same_sound() {
        let mut tone = ToneSource::new(440.0);
        let mut encoder = OpusEncoder::open(64_000).unwrap();
        let mut decoder = SpeechDecoder::open().unwrap();
        let mut speech = Vec::new();
        for _ in 0..50 {
            for packet in encoder.encode(&tone.next_frame()).unwrap() {
                assert_eq!(decoder.decode(&packet, &mut speech).unwrap(), 960);
            }
        }
        // 50 frames of 20 ms at 16 kHz, less the codec's and the
        // resampler's delay.
        assert!(
            (15_000..=16_000).contains(&speech.len()),
            "{}",
            speech.len()
        );
        let steady = &speech[4_000..];
        let crossings = steady
            .windows(2)
            .filter(|pair| (pair[0] < 0.0) != (pair[1] < 0.0))
            .count();
        let seconds = steady.len() as f32 / SPEECH_SAMPLE_RATE as f32;
        let pitch = crossings as f32 / 2.0 / seconds;
        assert!((430.0..450.0).contains(&pitch), "{pitch} Hz");
        let peak = steady.iter().fold(0f32, |m, s| m.max(s.abs()));
        // ToneSource's amplitude is 8000 / 32767 in each channel; FFmpeg
        // downmixes (L + R) / sqrt(2).
        let expected = 8000.0 / 32767.0 * std::f32::consts::SQRT_2;
        assert!((peak - expected).abs() < 0.03, "{peak}");
    }
}
