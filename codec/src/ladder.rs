//! The transcoder: one publisher's frames in, an ABR ladder out.
//!
//! ```text
//!  VP8/H.264 frame ─► decoder ─► picture ─┬─ scaler ─► H.264 encoder ─┬─► frame for WebRTC subscribers
//!                                         │  (per rendition)          └─► HLS writer (CMAF segments)
//!  Opus packet ────► decoder ─► PCM ─► AAC encoder ───────────────────────► every HLS writer
//! ```
//!
//! Sans-thread: the caller owns the loop, the queue in front of it and the
//! clock. Everything runs on the media timeline: time 0 is the first
//! keyframe that decoded, video timestamps are the publisher's RTP times
//! relative to it (90 kHz), audio is placed on the same timeline by its
//! first packet's arrival and then follows its own RTP clock.
//!
//! What it survives: a stream that starts without a keyframe (frames are
//! skipped until one comes), a frame that does not decode (counted; frames
//! are skipped until the next keyframe), a resolution change (the scalers
//! adapt; renditions keep their size so segments stay compatible).

use std::path::PathBuf;
use std::time::Instant;

use crate::audio::{AacEncoder, AudioPacket};
use crate::hls::{AUDIO_CLOCK_HZ, HlsSegment, HlsWriter, VIDEO_CLOCK_HZ};
use crate::scale::Scaler;
use crate::video::h264_codec_string;
use crate::{
    CodecError, EncodedFrame, EncoderSetup, OpusDecoder, RawVideo, VideoCodec, VideoDecoder,
    VideoEncoder, VideoEncoderConfig,
};

/// The master playlist of a recording, beside one directory per rendition.
pub const MASTER_PLAYLIST: &str = "master.m3u8";
/// The poster frame of a recording: its first picture, as a JPEG.
pub const POSTER: &str = "poster.jpg";

/// The directory of a recording's subtitle track in `lang` (its playlist
/// is `index.m3u8` there, written by the captions pipeline).
pub fn subtitle_dir(lang: &str) -> String {
    format!("subs-{lang}")
}

/// The master playlist's group of subtitle tracks.
const SUBTITLES_GROUP: &str = "subs";

const AUDIO_BITRATE_BPS: u32 = 128_000;

/// A jump of the source's RTP time this large, either way, starts a new
/// timeline rather than being late or early frames.
const DISCONTINUITY_TICKS: u64 = 5 * VIDEO_CLOCK_HZ as u64;

/// One step of the ladder as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenditionSpec {
    pub name: String,
    pub height: u32,
    pub bitrate_bps: u32,
}

#[derive(Debug, Clone)]
pub struct LadderConfig {
    /// Best first. Steps taller than the input are left out.
    pub renditions: Vec<RenditionSpec>,
    /// FFmpeg's H.264 encoder name (`libx264`, `h264_nvenc`).
    pub encoder: String,
    /// The frame rate the rate control plans for (WebRTC is variable).
    pub fps: u32,
    /// Target segment length; keyframes are forced on this grid, aligned
    /// across renditions.
    pub segment_seconds: u32,
    /// Where the HLS recording goes; `None` makes renditions for WebRTC only.
    pub recording_dir: Option<PathBuf>,
    /// The stream has an audio track (HLS renditions get AAC).
    pub audio: bool,
    /// Languages of the WebVTT subtitle tracks the master playlist names
    /// (written beside the renditions by the captions pipeline).
    pub subtitles: Vec<String>,
}

/// A rendition as opened for the input it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendition {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub bitrate_bps: u32,
}

/// What the transcoder produced.
#[derive(Debug)]
pub enum TranscodeOutput {
    /// The first keyframe decoded: the ladder is open and media time 0 is
    /// that frame's arrival.
    Opened {
        renditions: Vec<Rendition>,
        origin: Instant,
        input_width: u32,
        input_height: u32,
    },
    /// An encoded frame of a rendition, stamped with the source frame's
    /// RTP time (90 kHz) so it can stand in for the source on the wire.
    Frame {
        rendition: usize,
        data: Vec<u8>,
        keyframe: bool,
        source_time: u64,
    },
    /// A rendition's HLS segment is complete.
    Segment {
        rendition: usize,
        segment: HlsSegment,
    },
}

/// A publisher's video frame as it arrived.
#[derive(Debug, Clone, Copy)]
pub struct VideoInput<'a> {
    pub codec: VideoCodec,
    pub data: &'a [u8],
    pub keyframe: bool,
    /// RTP time (90 kHz), extended past wrap-around.
    pub time: u64,
    pub received: Instant,
}

/// Counters, for metrics and the end-of-stream summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TranscodeStats {
    pub frames_in: u64,
    pub frames_decoded: u64,
    /// Pictures encoded, summed over renditions.
    pub frames_encoded: u64,
    pub decode_errors: u64,
    /// Frames skipped while waiting for a keyframe (start, after an error).
    pub frames_skipped: u64,
    pub audio_packets: u64,
    pub audio_errors: u64,
    /// The media time of the last video frame, in milliseconds.
    pub duration_ms: u64,
    /// Jumps of the source's RTP time bridged (a new timeline).
    pub discontinuities: u64,
}

struct Step {
    rendition: Rendition,
    scaler: Scaler,
    encoder: VideoEncoder,
    hls: Option<HlsWriter>,
}

/// Where media time 0 is, in arrival time and in each track's RTP clock.
struct Origin {
    received: Instant,
    /// Source RTP time minus media time (90 kHz): moves when the source's
    /// timeline jumps, so media time goes on where it was.
    video_offset: i64,
    /// RTP time of audio at media time 0 (set by the first audio packet).
    audio_time: Option<i64>,
}

pub struct Transcoder {
    config: LadderConfig,
    decoder: Option<(VideoCodec, VideoDecoder)>,
    awaiting_keyframe: bool,
    steps: Vec<Step>,
    origin: Option<Origin>,
    last_pts: Option<i64>,
    next_keyframe_pts: i64,
    opus: Option<OpusDecoder>,
    aac: Option<AacEncoder>,
    stats: TranscodeStats,
}

impl Transcoder {
    pub fn new(config: LadderConfig) -> Self {
        Self {
            config,
            decoder: None,
            awaiting_keyframe: true,
            steps: Vec::new(),
            origin: None,
            last_pts: None,
            next_keyframe_pts: 0,
            opus: None,
            aac: None,
            stats: TranscodeStats::default(),
        }
    }

    pub fn stats(&self) -> TranscodeStats {
        self.stats
    }

    /// One video frame of the publisher; `force_keyframe` asks every
    /// rendition for a keyframe (a subscriber switched to one).
    pub fn push_video(
        &mut self,
        frame: VideoInput,
        force_keyframe: bool,
        out: &mut Vec<TranscodeOutput>,
    ) -> Result<(), CodecError> {
        let VideoInput {
            codec,
            data,
            keyframe,
            time,
            received,
        } = frame;
        self.stats.frames_in += 1;
        if self.awaiting_keyframe && !keyframe {
            self.stats.frames_skipped += 1;
            return Ok(());
        }
        if self.decoder.as_ref().is_none_or(|(open, _)| *open != codec) {
            self.decoder = Some((codec, VideoDecoder::open(codec)?));
        }
        let (_, decoder) = self.decoder.as_mut().expect("opened above");
        let pictures = match decoder.decode(data) {
            Ok(pictures) => pictures,
            Err(_) => {
                // Damaged or undecodable: later delta frames would refer to
                // it, so wait for the next keyframe.
                self.stats.decode_errors += 1;
                self.awaiting_keyframe = true;
                return Ok(());
            }
        };
        self.awaiting_keyframe = false;
        for picture in pictures {
            self.stats.frames_decoded += 1;
            if self.origin.is_none() {
                self.open(&picture, time, received, out)?;
            }
            self.encode(&picture, time, force_keyframe, out)?;
        }
        Ok(())
    }

    /// One Opus packet of the publisher: `time` is its RTP time (48 kHz).
    /// Audio before the first video keyframe has no place on the timeline
    /// and is dropped.
    pub fn push_audio(
        &mut self,
        data: &[u8],
        time: u64,
        received: Instant,
    ) -> Result<(), CodecError> {
        let (Some(origin), Some(aac)) = (self.origin.as_mut(), self.aac.as_mut()) else {
            return Ok(());
        };
        let audio_origin = *origin.audio_time.get_or_insert_with(|| {
            let since = received.saturating_duration_since(origin.received);
            time as i64 - (since.as_secs_f64() * f64::from(AUDIO_CLOCK_HZ)) as i64
        });
        let pts = time as i64 - audio_origin;
        let Some(opus) = self.opus.as_mut() else {
            return Ok(());
        };
        let mut packets: Vec<AudioPacket> = Vec::new();
        let mut failure = None;
        let decoded = opus.decode_with(data, |pcm| match aac.push(pcm, pts) {
            Ok(encoded) => packets.extend(encoded),
            Err(error) => failure = Some(error),
        });
        if decoded.is_err() {
            self.stats.audio_errors += 1;
            return Ok(());
        }
        if let Some(error) = failure {
            return Err(error);
        }
        self.stats.audio_packets += 1;
        for step in &mut self.steps {
            if let Some(hls) = step.hls.as_mut() {
                for packet in &packets {
                    hls.write_audio(packet)?;
                }
            }
        }
        Ok(())
    }

    /// Ends the recording: audio up to the last video frame, the last
    /// segments, `#EXT-X-ENDLIST`.
    pub fn finish(mut self, out: &mut Vec<TranscodeOutput>) -> Result<TranscodeStats, CodecError> {
        if let (Some(aac), Some(last)) = (self.aac.as_mut(), self.last_pts) {
            let frame = i64::from(VIDEO_CLOCK_HZ) / i64::from(self.config.fps.max(1));
            let end = (last + frame) * i64::from(AUDIO_CLOCK_HZ) / i64::from(VIDEO_CLOCK_HZ);
            let packets = aac.finish_at(end)?;
            for step in &mut self.steps {
                if let Some(hls) = step.hls.as_mut() {
                    for packet in &packets {
                        hls.write_audio(packet)?;
                    }
                }
            }
        }
        for (index, step) in self.steps.into_iter().enumerate() {
            if let Some(hls) = step.hls {
                for segment in hls.finish()? {
                    out.push(TranscodeOutput::Segment {
                        rendition: index,
                        segment,
                    });
                }
            }
        }
        Ok(self.stats)
    }

    /// Opens the ladder for the first picture: its size decides the steps.
    fn open(
        &mut self,
        picture: &RawVideo,
        time: u64,
        received: Instant,
        out: &mut Vec<TranscodeOutput>,
    ) -> Result<(), CodecError> {
        let (width, height) = (picture.width(), picture.height());
        let renditions = ladder_for(&self.config.renditions, width, height);
        if self.config.audio && self.config.recording_dir.is_some() {
            self.opus = Some(OpusDecoder::open()?);
            self.aac = Some(AacEncoder::open(AUDIO_BITRATE_BPS)?);
        }
        let keyframe_interval = self.config.fps * self.config.segment_seconds;
        for rendition in &renditions {
            let encoder = VideoEncoder::open_with(
                VideoEncoderConfig {
                    codec: VideoCodec::H264,
                    width: rendition.width,
                    height: rendition.height,
                    fps: self.config.fps,
                    bitrate_bps: rendition.bitrate_bps,
                    // Keyframes come from the segment grid; this is a cap.
                    keyframe_interval: keyframe_interval * 2,
                },
                EncoderSetup {
                    name: &self.config.encoder,
                    clock_hz: VIDEO_CLOCK_HZ as u32,
                    global_header: self.config.recording_dir.is_some(),
                },
            )?;
            let hls = match &self.config.recording_dir {
                Some(dir) => Some(HlsWriter::create(
                    &dir.join(&rendition.name),
                    self.config.segment_seconds,
                    &encoder,
                    self.aac.as_ref(),
                )?),
                None => None,
            };
            self.steps.push(Step {
                rendition: rendition.clone(),
                scaler: Scaler::new(rendition.width, rendition.height),
                encoder,
                hls,
            });
        }
        if let Some(dir) = &self.config.recording_dir {
            write_master_playlist(
                dir,
                &self.steps,
                self.config.fps,
                self.aac.is_some(),
                &self.config.subtitles,
            )?;
            let top = &renditions[0];
            let poster = crate::poster::encode_jpeg(picture, top.width, top.height)?;
            std::fs::write(dir.join(POSTER), poster)
                .map_err(|error| CodecError::Input(format!("cannot write the poster: {error}")))?;
        }
        self.origin = Some(Origin {
            received,
            video_offset: time as i64,
            audio_time: None,
        });
        out.push(TranscodeOutput::Opened {
            renditions,
            origin: received,
            input_width: width,
            input_height: height,
        });
        Ok(())
    }

    fn encode(
        &mut self,
        picture: &RawVideo,
        time: u64,
        force_keyframe: bool,
        out: &mut Vec<TranscodeOutput>,
    ) -> Result<(), CodecError> {
        let fps = i64::from(self.config.fps.max(1));
        let Some(origin) = self.origin.as_mut() else {
            return Ok(());
        };
        let mut pts = time as i64 - origin.video_offset;
        match self.last_pts {
            Some(last) if (pts - last).unsigned_abs() > DISCONTINUITY_TICKS => {
                // The source started a new timeline (its SSRC changed, a
                // simulcast layer switched): media time goes on from the
                // last frame, and audio finds its place again.
                let next = last + i64::from(VIDEO_CLOCK_HZ) / fps;
                origin.video_offset = time as i64 - next;
                origin.audio_time = None;
                pts = next;
                self.stats.discontinuities += 1;
            }
            // Older than what was encoded (or than the first keyframe):
            // not on the timeline.
            Some(last) if pts <= last => return Ok(()),
            None if pts < 0 => return Ok(()),
            _ => {}
        }
        let offset = origin.video_offset;
        self.last_pts = Some(pts);
        self.stats.duration_ms = (pts * 1000 / i64::from(VIDEO_CLOCK_HZ)) as u64;
        let segment = i64::from(self.config.segment_seconds.max(1) * VIDEO_CLOCK_HZ as u32);
        let on_grid = pts >= self.next_keyframe_pts;
        if on_grid {
            self.next_keyframe_pts = (pts / segment + 1) * segment;
        }
        for (index, step) in self.steps.iter_mut().enumerate() {
            let scaled = step.scaler.scale(picture)?;
            for frame in step
                .encoder
                .encode_at(scaled, pts, on_grid || force_keyframe)?
            {
                self.stats.frames_encoded += 1;
                if let Some(hls) = step.hls.as_mut() {
                    for segment in hls.write_video(&frame)? {
                        out.push(TranscodeOutput::Segment {
                            rendition: index,
                            segment,
                        });
                    }
                }
                let EncodedFrame {
                    data,
                    keyframe,
                    pts,
                } = frame;
                out.push(TranscodeOutput::Frame {
                    rendition: index,
                    data,
                    keyframe,
                    source_time: (pts + offset) as u64,
                });
            }
        }
        Ok(())
    }
}

/// The steps of `configured` that fit an input of `width` x `height`:
/// never taller than the input, widths keeping its aspect (even, as 4:2:0
/// needs). An input shorter than every step gets one step at its own size.
pub fn ladder_for(configured: &[RenditionSpec], width: u32, height: u32) -> Vec<Rendition> {
    let even = |value: u32| (value / 2 * 2).max(2);
    let mut steps: Vec<Rendition> = configured
        .iter()
        .filter(|spec| spec.height <= height)
        .map(|spec| Rendition {
            name: spec.name.clone(),
            width: even((u64::from(width) * u64::from(spec.height) / u64::from(height)) as u32),
            height: even(spec.height),
            bitrate_bps: spec.bitrate_bps,
        })
        .collect();
    if steps.is_empty() {
        let bitrate = configured.last().map_or(500_000, |spec| spec.bitrate_bps);
        steps.push(Rendition {
            name: format!("{}p", even(height)),
            width: even(width),
            height: even(height),
            bitrate_bps: bitrate,
        });
    }
    steps
}

fn write_master_playlist(
    dir: &std::path::Path,
    steps: &[Step],
    fps: u32,
    audio: bool,
    subtitles: &[String],
) -> Result<(), CodecError> {
    let group = (!subtitles.is_empty()).then(|| SUBTITLES_GROUP.to_owned());
    let variants = steps
        .iter()
        .map(|step| {
            let video = h264_codec_string(step.encoder.extradata())
                .unwrap_or_else(|| "avc1.42e01f".to_owned());
            let codecs = if audio {
                format!("{video},mp4a.40.2")
            } else {
                video
            };
            let audio_bps = if audio { AUDIO_BITRATE_BPS } else { 0 };
            m3u8_rs::VariantStream {
                uri: format!("{}/{}", step.rendition.name, crate::hls::MEDIA_PLAYLIST),
                // Peak: the encoders' rate control overshoots on keyframes.
                bandwidth: u64::from(step.rendition.bitrate_bps + audio_bps) * 5 / 4,
                average_bandwidth: Some(u64::from(step.rendition.bitrate_bps + audio_bps)),
                codecs: Some(codecs),
                resolution: Some(m3u8_rs::Resolution {
                    width: u64::from(step.rendition.width),
                    height: u64::from(step.rendition.height),
                }),
                frame_rate: Some(f64::from(fps)),
                subtitles: group.clone(),
                ..Default::default()
            }
        })
        .collect();
    let alternatives = subtitles
        .iter()
        .map(|lang| m3u8_rs::AlternativeMedia {
            media_type: m3u8_rs::AlternativeMediaType::Subtitles,
            uri: Some(format!("{}/index.m3u8", subtitle_dir(lang))),
            group_id: SUBTITLES_GROUP.to_owned(),
            language: Some(lang.clone()),
            name: lang.clone(),
            // None is on by default: the viewer picks one (the watch
            // page shows the room socket's caption frames instead).
            default: false,
            autoselect: true,
            ..Default::default()
        })
        .collect();
    let playlist = m3u8_rs::MasterPlaylist {
        version: Some(7),
        independent_segments: true,
        variants,
        alternatives,
        ..Default::default()
    };
    let mut bytes = Vec::new();
    playlist
        .write_to(&mut bytes)
        .and_then(|()| std::fs::write(dir.join(MASTER_PLAYLIST), bytes))
        .map_err(|error| CodecError::Input(format!("cannot write the master playlist: {error}")))
}
