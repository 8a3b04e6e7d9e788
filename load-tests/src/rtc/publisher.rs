//! A WHIP publisher: a real encoder on its own thread, a webrtc-rs peer
//! that packetizes and sends, keyframes on the SFU's request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use codec::{OpusEncoder, TestPattern, ToneSource, VideoEncoder, VideoEncoderConfig};
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionEventHandler, RTCIceGatheringState, RTCPeerConnectionState,
};

use super::{
    Endpoint, local_address_toward, media_engine_with, negotiate, opus_codec, peer_connection_on,
    video_codec,
};

const VIDEO_SSRC: u32 = 0x5eed_0001;
const AUDIO_SSRC: u32 = 0x5eed_0002;

/// What the publisher sends.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    pub video: VideoEncoderConfig,
    pub audio_bitrate_bps: u32,
    /// Sound to say (interleaved 48 kHz stereo), sent once and followed by
    /// silence; none: a 440 Hz tone throughout.
    pub speech: Option<Arc<[i16]>>,
}

/// What the publisher has done so far.
#[derive(Default)]
pub struct PublisherStats {
    gathered: AtomicBool,
    connected: AtomicBool,
    pub video_frames: AtomicU64,
    pub keyframes: AtomicU64,
    pub video_bytes: AtomicU64,
    pub audio_packets: AtomicU64,
    /// PLI/FIR packets received from the SFU.
    pub keyframe_requests: AtomicU64,
    pub write_errors: AtomicU64,
}

impl PublisherStats {
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

struct Handler(Arc<PublisherStats>);

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.0.gathered.store(true, Ordering::Relaxed);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.0.connected.store(
            state == RTCPeerConnectionState::Connected,
            Ordering::Relaxed,
        );
    }
}

enum Encoded {
    Video(codec::EncodedFrame),
    Audio(Vec<u8>),
}

/// A live WHIP session; dropping it without [`Publisher::close`] leaves the
/// engine to notice the peer going away.
pub struct Publisher {
    pc: Box<dyn PeerConnection>,
    location: String,
    stats: Arc<PublisherStats>,
    stop: Arc<AtomicBool>,
    encoder_thread: Option<std::thread::JoinHandle<()>>,
}

impl Publisher {
    /// Negotiates over WHIP and starts sending once connected.
    pub async fn start(endpoint: &Endpoint<'_>, options: PublishOptions) -> anyhow::Result<Self> {
        let video = video_codec(options.video.codec);
        let audio = opus_codec();
        let media_engine = media_engine_with(&[
            (video.clone(), RtpCodecKind::Video),
            (audio.clone(), RtpCodecKind::Audio),
        ])?;
        let stats = Arc::new(PublisherStats::default());
        let bind = local_address_toward(endpoint.base).await?;
        let handler = Arc::new(Handler(stats.clone()));
        let pc = peer_connection_on(bind, media_engine, handler, true).await?;
        let video_track = local_track(RtpCodecKind::Video, VIDEO_SSRC, video.clone())?;
        let audio_track = local_track(RtpCodecKind::Audio, AUDIO_SSRC, audio.clone())?;
        pc.add_track(video_track.clone() as Arc<dyn TrackLocal>)
            .await
            .context("adding the video track")?;
        pc.add_track(audio_track.clone() as Arc<dyn TrackLocal>)
            .await
            .context("adding the audio track")?;
        let location = negotiate(&pc, &stats.gathered, endpoint).await?;

        let stop = Arc::new(AtomicBool::new(false));
        let keyframe_wanted = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel(64);
        let frame_duration = Duration::from_secs(1) / options.video.fps;
        let encoder_thread = std::thread::Builder::new()
            .name("publisher-encoder".into())
            .spawn({
                let (stop, keyframe_wanted) = (stop.clone(), keyframe_wanted.clone());
                move || encode_loop(options, &stop, &keyframe_wanted, &tx)
            })
            .context("starting the encoder thread")?;
        tokio::spawn(send_loop(
            rx,
            video_track.clone(),
            audio_track,
            (video.payload_type, audio.payload_type),
            frame_duration,
            stats.clone(),
        ));
        tokio::spawn(watch_keyframe_requests(
            video_track,
            keyframe_wanted,
            stats.clone(),
        ));
        Ok(Self {
            pc: Box::new(pc),
            location,
            stats,
            stop,
            encoder_thread: Some(encoder_thread),
        })
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    pub fn stats(&self) -> &Arc<PublisherStats> {
        &self.stats
    }

    /// Stops encoding and closes the peer connection (the session itself
    /// ends with [`super::delete_session`], or when the engine sees the
    /// peer go).
    pub async fn close(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.encoder_thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        let _ = self.pc.close().await;
    }
}

fn local_track(
    kind: RtpCodecKind,
    ssrc: u32,
    codec: rtc::rtp_transceiver::rtp_sender::RTCRtpCodecParameters,
) -> anyhow::Result<Arc<TrackLocalStaticSample>> {
    let track = MediaStreamTrack::new(
        "load-tests".to_owned(),
        format!("load-tests-{kind}"),
        format!("load-tests {kind}"),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: codec.rtp_codec,
            ..Default::default()
        }],
    );
    Ok(Arc::new(
        TrackLocalStaticSample::new(Instant::now(), track).context("a local track")?,
    ))
}

/// Encodes the test pattern at the configured frame rate and the tone
/// every 20 ms, on its own thread so encoding never stalls the runtime.
fn encode_loop(
    options: PublishOptions,
    stop: &AtomicBool,
    keyframe_wanted: &AtomicBool,
    tx: &mpsc::Sender<Encoded>,
) {
    let config = options.video;
    let (mut video, mut audio) = match (
        VideoEncoder::open(config),
        OpusEncoder::open(options.audio_bitrate_bps),
    ) {
        (Ok(video), Ok(audio)) => (video, audio),
        (Err(error), _) | (_, Err(error)) => {
            eprintln!("publisher: cannot open the encoders: {error}");
            return;
        }
    };
    let mut pattern = TestPattern::new(config.width, config.height);
    let mut sound = Sound::new(options.speech.clone());
    let frame_interval = Duration::from_secs(1) / config.fps;
    let audio_interval = Duration::from_millis(20);
    let start = Instant::now();
    let (mut next_video, mut next_audio) = (start, start);
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= next_video {
            next_video += frame_interval;
            let keyframe = keyframe_wanted.swap(false, Ordering::Relaxed);
            match video.encode(&mut pattern.next_frame(), keyframe) {
                Ok(frames) => {
                    for frame in frames {
                        if tx.blocking_send(Encoded::Video(frame)).is_err() {
                            return;
                        }
                    }
                }
                Err(error) => eprintln!("publisher: video encoding failed: {error}"),
            }
        }
        if now >= next_audio {
            next_audio += audio_interval;
            match audio.encode(&sound.next_frame()) {
                Ok(packets) => {
                    for packet in packets {
                        if tx.blocking_send(Encoded::Audio(packet)).is_err() {
                            return;
                        }
                    }
                }
                Err(error) => eprintln!("publisher: audio encoding failed: {error}"),
            }
        }
        let next = next_video.min(next_audio);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

/// The publisher's sound, 20 ms at a time.
enum Sound {
    Tone(ToneSource),
    Speech { samples: Arc<[i16]>, at: usize },
}

impl Sound {
    fn new(speech: Option<Arc<[i16]>>) -> Self {
        match speech {
            Some(samples) => Self::Speech { samples, at: 0 },
            None => Self::Tone(ToneSource::new(440.0)),
        }
    }

    fn next_frame(&mut self) -> Vec<i16> {
        match self {
            Self::Tone(tone) => tone.next_frame(),
            Self::Speech { samples, at } => {
                let mut frame = vec![0i16; codec::OPUS_FRAME_SAMPLES * 2];
                let rest = samples.get(*at..).unwrap_or_default();
                let taken = rest.len().min(frame.len());
                frame[..taken].copy_from_slice(&rest[..taken]);
                *at += taken;
                frame
            }
        }
    }
}

async fn send_loop(
    mut rx: mpsc::Receiver<Encoded>,
    video: Arc<TrackLocalStaticSample>,
    audio: Arc<TrackLocalStaticSample>,
    (video_pt, audio_pt): (u8, u8),
    frame_duration: Duration,
    stats: Arc<PublisherStats>,
) {
    while let Some(encoded) = rx.recv().await {
        let (track, ssrc, pt, data, duration) = match encoded {
            Encoded::Video(frame) => {
                stats.video_frames.fetch_add(1, Ordering::Relaxed);
                stats
                    .keyframes
                    .fetch_add(u64::from(frame.keyframe), Ordering::Relaxed);
                stats
                    .video_bytes
                    .fetch_add(frame.data.len() as u64, Ordering::Relaxed);
                (&video, VIDEO_SSRC, video_pt, frame.data, frame_duration)
            }
            Encoded::Audio(packet) => {
                stats.audio_packets.fetch_add(1, Ordering::Relaxed);
                (
                    &audio,
                    AUDIO_SSRC,
                    audio_pt,
                    packet,
                    Duration::from_millis(20),
                )
            }
        };
        let sample = Sample {
            data: data.into(),
            duration,
            ..Sample::new(Instant::now())
        };
        if track
            .sample_writer(ssrc, pt)
            .write_sample(&sample)
            .await
            .is_err()
        {
            stats.write_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Turns PLI/FIR from the SFU into a keyframe on the next encoded frame.
async fn watch_keyframe_requests(
    video: Arc<TrackLocalStaticSample>,
    keyframe_wanted: Arc<AtomicBool>,
    stats: Arc<PublisherStats>,
) {
    while let Some(event) = video.poll().await {
        let TrackLocalEvent::OnRtcpPacket(_) = event else {
            continue;
        };
        stats.keyframe_requests.fetch_add(1, Ordering::Relaxed);
        keyframe_wanted.store(true, Ordering::Relaxed);
    }
}
