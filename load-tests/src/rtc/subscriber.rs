//! A subscriber: receives a stream, reassembles frames, and (when asked)
//! decodes them with real decoders, recording what it saw. It offers over
//! WHEP to the engine ([`Subscriber::start`]) or answers a server's offer
//! (Janus: [`Subscriber::answer`]); either way the counters mean the same.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use anyhow::Context;
use codec::{OpusDecoder, VideoCodec, VideoDecoder};
use rtc::media::io::sample_builder::SampleBuilder;
use rtc::rtp::codec::h264::H264Packet;
use rtc::rtp::codec::vp8::Vp8Packet;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState,
};

use super::{
    Endpoint, VideoCodec as Codec, answer_offer, codec_of_mime, local_address_toward,
    media_engine_with, negotiate, opus_codec, peer_connection_on, video_codec,
};

/// What a subscriber has received so far; counters only, read any time.
#[derive(Default)]
pub struct SubscriberStats {
    gathered: AtomicBool,
    connected: AtomicBool,
    /// The connection left `Connected` after having been there.
    disconnected: AtomicBool,
    pub video_packets: AtomicU64,
    pub video_bytes: AtomicU64,
    /// Sequence numbers skipped (after reordering, counted once).
    pub video_packets_lost: AtomicU64,
    /// Whole frames reassembled from RTP.
    pub video_frames: AtomicU64,
    /// Frames the decoder turned into pictures (decoding subscribers only).
    pub decoded_frames: AtomicU64,
    pub decode_errors: AtomicU64,
    width: AtomicU32,
    height: AtomicU32,
    /// RFC 3550 interarrival jitter of the video packets, microseconds.
    pub video_jitter_us: AtomicU64,
    pub audio_packets: AtomicU64,
    pub audio_samples: AtomicU64,
    /// Tracks whose stream ended (the engine closed or removed them).
    pub tracks_ended: AtomicU64,
    /// When ICE and DTLS were done, the first video packet came, and the
    /// first whole frame: where a join's time goes.
    connected_at: OnceLock<Instant>,
    first_packet: OnceLock<Instant>,
    first_frame: OnceLock<Instant>,
    mime_types: Mutex<Vec<String>>,
}

impl SubscriberStats {
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub fn disconnected(&self) -> bool {
        self.disconnected.load(Ordering::Relaxed)
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// The size of the last decoded picture.
    pub fn dimensions(&self) -> (u32, u32) {
        (
            self.width.load(Ordering::Relaxed),
            self.height.load(Ordering::Relaxed),
        )
    }

    /// When the first whole video frame arrived.
    pub fn first_frame_at(&self) -> Option<Instant> {
        self.first_frame.get().copied()
    }

    /// When the peer connection first reached `Connected`.
    pub fn connected_at(&self) -> Option<Instant> {
        self.connected_at.get().copied()
    }

    /// When the first video packet arrived.
    pub fn first_packet_at(&self) -> Option<Instant> {
        self.first_packet.get().copied()
    }

    /// The MIME type of each track received, lower-cased.
    pub fn mime_types(&self) -> Vec<String> {
        self.mime_types.lock().unwrap().clone()
    }

    pub fn summary(&self) -> String {
        let (width, height) = self.dimensions();
        format!(
            "video: {} packets ({} lost), {} frames, {} decoded at {width}x{height} ({} errors); \
             audio: {} packets, {} samples; tracks {:?}, {} ended",
            Self::get(&self.video_packets),
            Self::get(&self.video_packets_lost),
            Self::get(&self.video_frames),
            Self::get(&self.decoded_frames),
            Self::get(&self.decode_errors),
            Self::get(&self.audio_packets),
            Self::get(&self.audio_samples),
            self.mime_types(),
            Self::get(&self.tracks_ended),
        )
    }
}

struct Handler {
    stats: Arc<SubscriberStats>,
    decode: bool,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.stats.gathered.store(true, Ordering::Relaxed);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if state == RTCPeerConnectionState::Connected {
            self.stats.connected_at.get_or_init(Instant::now);
            self.stats.connected.store(true, Ordering::Relaxed);
        } else if self.stats.connected() {
            self.stats.disconnected.store(true, Ordering::Relaxed);
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        // Callbacks run on the connection's driver: read the track elsewhere.
        tokio::spawn(read_track(track, self.stats.clone(), self.decode));
    }
}

/// A live receiving session: a WHEP session, or one answered for Janus.
pub struct Subscriber {
    pc: Box<dyn PeerConnection>,
    location: String,
    stats: Arc<SubscriberStats>,
}

/// What a subscriber can receive: VP8, H.264 and Opus.
fn receive_codecs() -> anyhow::Result<MediaEngine> {
    media_engine_with(&[
        (video_codec(Codec::Vp8), RtpCodecKind::Video),
        (video_codec(Codec::H264), RtpCodecKind::Video),
        (opus_codec(), RtpCodecKind::Audio),
    ])
}

/// The handler every subscriber's connection reports to, and the stats
/// it fills.
fn handler_with_stats(decode: bool) -> (Arc<Handler>, Arc<SubscriberStats>) {
    let stats = Arc::new(SubscriberStats::default());
    let handler = Handler {
        stats: stats.clone(),
        decode,
    };
    (Arc::new(handler), stats)
}

impl Subscriber {
    /// Offers to receive video (VP8 and H.264) and Opus, negotiates over
    /// WHEP and returns once the answer is applied; media follows. With
    /// `decode`, every frame goes through a real decoder (costly: the
    /// benchmark decodes on a sample of its subscribers).
    pub async fn start(endpoint: &Endpoint<'_>, decode: bool) -> anyhow::Result<Self> {
        let (handler, stats) = handler_with_stats(decode);
        let bind = local_address_toward(endpoint.base).await?;
        let pc = peer_connection_on(bind, receive_codecs()?, handler, false).await?;
        for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
            pc.add_transceiver_from_kind(
                kind,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    ..Default::default()
                }),
            )
            .await
            .context("adding a receive-only transceiver")?;
        }
        let location = negotiate(&pc, &stats.gathered, endpoint).await?;
        Ok(Self {
            pc: Box::new(pc),
            location,
            stats,
        })
    }

    /// Answers a server's offer to send (Janus's streaming plugin offers;
    /// the viewer answers) and returns the subscriber with its complete
    /// answer SDP, to be sent back by the caller's signalling. The
    /// connection's one ICE socket is on `bind`, an address the server can
    /// reach (loopback will not do for Janus). The session has no
    /// `Location`. `decode` as for [`Subscriber::start`].
    pub async fn answer(
        offer_sdp: &str,
        bind: IpAddr,
        decode: bool,
    ) -> anyhow::Result<(Self, String)> {
        let (handler, stats) = handler_with_stats(decode);
        let pc = peer_connection_on(bind, receive_codecs()?, handler, false).await?;
        // The offer's m-lines make the transceivers (receive-only, since
        // the server only sends).
        let answer = answer_offer(&pc, offer_sdp, &stats.gathered).await?;
        let subscriber = Self {
            pc: Box::new(pc),
            location: String::new(),
            stats,
        };
        Ok((subscriber, answer))
    }

    /// The WHEP session's `Location`; empty for an answered session.
    pub fn location(&self) -> &str {
        &self.location
    }

    pub fn stats(&self) -> &Arc<SubscriberStats> {
        &self.stats
    }

    pub async fn close(self) {
        let _ = self.pc.close().await;
    }
}

/// Reads one remote track until it ends.
async fn read_track(track: Arc<dyn TrackRemote>, stats: Arc<SubscriberStats>, decode: bool) {
    let mut video: Option<VideoReader> = None;
    let mut audio: Option<Option<OpusDecoder>> = None;
    while let Some(event) = track.poll().await {
        let packet = match event {
            TrackRemoteEvent::OnRtpPacket(packet) => packet,
            TrackRemoteEvent::OnEnded => break,
            _ => continue,
        };
        if video.is_none() && audio.is_none() {
            let mime = track
                .codec(packet.header.ssrc)
                .await
                .map_or_else(|| "?".to_owned(), |c| c.mime_type.to_ascii_lowercase());
            stats.mime_types.lock().unwrap().push(mime.clone());
            match codec_of_mime(&mime) {
                Some(codec) => video = Some(VideoReader::new(codec, decode)),
                None => audio = Some(decode.then(|| OpusDecoder::open().ok()).flatten()),
            }
        }
        if let Some(reader) = video.as_mut() {
            reader.push(packet, &stats);
        } else if let Some(decoder) = audio.as_mut() {
            stats.audio_packets.fetch_add(1, Ordering::Relaxed);
            if let Some(decoder) = decoder {
                match decoder.decode(&packet.payload) {
                    Ok(samples) => {
                        stats
                            .audio_samples
                            .fetch_add(samples as u64, Ordering::Relaxed);
                    }
                    Err(_) => {
                        stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
    stats.tracks_ended.fetch_add(1, Ordering::Relaxed);
}

/// Loss accounting, frame reassembly and decoding for one video track.
struct VideoReader {
    frames: Frames,
    decoder: Option<VideoDecoder>,
    highest_sequence: Option<u16>,
    jitter: Jitter,
}

/// Interarrival jitter (RFC 3550 section 6.4.1) on the 90 kHz clock.
#[derive(Default)]
struct Jitter {
    origin: Option<Instant>,
    last_transit: Option<u32>,
    /// In 1/16 clock ticks, as the RFC's integer form keeps it.
    scaled: i64,
}

impl Jitter {
    fn update(&mut self, arrival: Instant, rtp_timestamp: u32) -> u64 {
        let origin = *self.origin.get_or_insert(arrival);
        let arrival_ticks = (arrival.duration_since(origin).as_micros() * 9 / 100) as u32;
        // Modular arithmetic keeps the transit continuous across wraps.
        let transit = arrival_ticks.wrapping_sub(rtp_timestamp);
        if let Some(last) = self.last_transit.replace(transit) {
            let d = i64::from((transit.wrapping_sub(last) as i32).unsigned_abs());
            self.scaled += d - ((self.scaled + 8) >> 4);
        }
        // ticks -> microseconds: x / 16 ticks * (100 / 9) µs
        (self.scaled.max(0) as u64) * 100 / (16 * 9)
    }
}

enum Frames {
    Vp8(SampleBuilder<Vp8Packet>),
    H264(SampleBuilder<H264Packet>),
}

impl VideoReader {
    fn new(codec: VideoCodec, decode: bool) -> Self {
        // Up to 256 packets of reordering before a gap is declared lost.
        const MAX_LATE: u16 = 256;
        let frames = match codec {
            VideoCodec::Vp8 => {
                Frames::Vp8(SampleBuilder::new(MAX_LATE, Vp8Packet::default(), 90_000))
            }
            VideoCodec::H264 => {
                Frames::H264(SampleBuilder::new(MAX_LATE, H264Packet::default(), 90_000))
            }
        };
        Self {
            frames,
            decoder: decode.then(|| VideoDecoder::open(codec).ok()).flatten(),
            highest_sequence: None,
            jitter: Jitter::default(),
        }
    }

    fn push(&mut self, packet: rtc::rtp::Packet, stats: &SubscriberStats) {
        stats.first_packet.get_or_init(Instant::now);
        stats.video_packets.fetch_add(1, Ordering::Relaxed);
        stats
            .video_bytes
            .fetch_add(packet.payload.len() as u64, Ordering::Relaxed);
        let sequence = packet.header.sequence_number;
        match self.highest_sequence {
            None => self.highest_sequence = Some(sequence),
            Some(highest) => {
                let ahead = sequence.wrapping_sub(highest);
                if ahead != 0 && ahead < 0x8000 {
                    stats
                        .video_packets_lost
                        .fetch_add(u64::from(ahead - 1), Ordering::Relaxed);
                    self.highest_sequence = Some(sequence);
                }
            }
        }
        let now = Instant::now();
        let jitter = self.jitter.update(now, packet.header.timestamp);
        stats.video_jitter_us.store(jitter, Ordering::Relaxed);
        let mut frames = Vec::new();
        match &mut self.frames {
            Frames::Vp8(builder) => {
                builder.push(now, packet);
                while let Some(sample) = builder.pop(now) {
                    frames.push(sample.data);
                }
            }
            Frames::H264(builder) => {
                builder.push(now, packet);
                while let Some(sample) = builder.pop(now) {
                    frames.push(sample.data);
                }
            }
        }
        for frame in frames {
            if frame.is_empty() {
                continue;
            }
            stats.first_frame.get_or_init(Instant::now);
            stats.video_frames.fetch_add(1, Ordering::Relaxed);
            let Some(decoder) = self.decoder.as_mut() else {
                continue;
            };
            match decoder.decode(&frame) {
                Ok(pictures) => {
                    for picture in pictures {
                        stats.decoded_frames.fetch_add(1, Ordering::Relaxed);
                        stats.width.store(picture.width(), Ordering::Relaxed);
                        stats.height.store(picture.height(), Ordering::Relaxed);
                    }
                }
                Err(_) => {
                    stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}
