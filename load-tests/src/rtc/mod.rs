//! WebRTC peers built on webrtc-rs, an implementation independent of the
//! engine's str0m: a [`Publisher`] that sends a real encoded test pattern
//! (VP8 or H.264 from libvpx/libx264) plus an Opus tone over WHIP, and
//! [`Subscriber`]s that play a stream over WHEP, reassemble frames and
//! optionally decode them. The engine's integration tests and the
//! `sfu-fanout` benchmark use the same peers.
//!
//! Signalling is non-trickle: the offer goes out once ICE gathering is
//! complete, with its host candidate on 127.0.0.1 (peers bind there only and
//! have mDNS off: a loopback-only namespace has no multicast).

mod keyframe_requests;
mod publisher;
mod subscriber;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::Registry;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCSessionDescription, SettingEngineBuilder,
    register_default_interceptors,
};

pub use codec::VideoCodec;
pub use publisher::{PublishOptions, Publisher, PublisherStats};
pub use subscriber::{Subscriber, SubscriberStats};

/// The payload types the peers offer; any values work, these are Chrome's.
const VP8_PT: u8 = 96;
const H264_PT: u8 = 102;
const OPUS_PT: u8 = 111;

fn codec_parameters(
    mime_type: &str,
    clock_rate: u32,
    channels: u16,
    fmtp: &str,
    payload_type: u8,
) -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime_type.to_owned(),
            clock_rate,
            channels,
            sdp_fmtp_line: fmtp.to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type,
    }
}

/// The RTP codec for a video codec: VP8, or H.264 Constrained Baseline
/// with packetization-mode 1 (what browsers and the engine agree on).
pub fn video_codec(codec: VideoCodec) -> RTCRtpCodecParameters {
    match codec {
        VideoCodec::Vp8 => codec_parameters("video/VP8", 90_000, 0, "", VP8_PT),
        VideoCodec::H264 => codec_parameters(
            "video/H264",
            90_000,
            0,
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
            H264_PT,
        ),
    }
}

pub fn opus_codec() -> RTCRtpCodecParameters {
    codec_parameters(
        "audio/opus",
        48_000,
        2,
        "minptime=10;useinbandfec=1",
        OPUS_PT,
    )
}

/// The codec a received track carries, from its MIME type.
fn codec_of_mime(mime: &str) -> Option<VideoCodec> {
    match mime.to_ascii_lowercase().as_str() {
        "video/vp8" => Some(VideoCodec::Vp8),
        "video/h264" => Some(VideoCodec::H264),
        _ => None,
    }
}

/// A peer connection on 127.0.0.1 with the default interceptors (NACK,
/// RTCP reports, TWCC) plus, for publishers, keyframe requests delivered to
/// the application.
async fn peer_connection(
    mut media_engine: MediaEngine,
    handler: Arc<dyn PeerConnectionEventHandler>,
    deliver_keyframe_requests: bool,
) -> anyhow::Result<impl PeerConnection> {
    let mut registry = register_default_interceptors(Registry::new(), &mut media_engine)
        .context("registering interceptors")?;
    if deliver_keyframe_requests {
        registry = keyframe_requests::register(registry);
    }
    PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media_engine)
        .with_setting_engine(
            SettingEngineBuilder::new()
                .with_multicast_dns_mode(MulticastDnsMode::Disabled)
                .build(),
        )
        .with_interceptor_registry(registry)
        .with_handler(handler)
        .with_udp_addrs(vec!["127.0.0.1:0"])
        .build()
        .await
        .context("building a webrtc-rs peer connection")
}

/// Where a WHIP or WHEP session lives and how to reach it.
pub struct Endpoint<'a> {
    pub http: &'a reqwest::Client,
    /// `http://host:port`
    pub base: &'a str,
    /// `/whip/{room}/{stream}` or `/whep/{room}/{stream}[?layer=…]`
    pub path: &'a str,
    pub token: &'a str,
}

/// A refused offer: the engine's status and JSON error body.
#[derive(Debug, thiserror::Error)]
#[error("{path} answered {status}: {body}")]
pub struct Refused {
    pub path: String,
    pub status: u16,
    pub body: String,
}

/// Posts the complete offer once ICE gathering is done, applies the answer
/// and returns the session's `Location`.
async fn negotiate(
    pc: &impl PeerConnection,
    gathered: &AtomicBool,
    endpoint: &Endpoint<'_>,
) -> anyhow::Result<String> {
    let offer = pc.create_offer(None).await.context("creating an offer")?;
    pc.set_local_description(offer)
        .await
        .context("applying the local offer")?;
    wait_for(|| gathered.load(Ordering::Relaxed), Duration::from_secs(10))
        .await
        .context("ICE gathering did not complete")?;
    let offer = pc
        .local_description()
        .await
        .context("no local description after gathering")?
        .sdp;
    let response = endpoint
        .http
        .post(format!("{}{}", endpoint.base, endpoint.path))
        .bearer_auth(endpoint.token)
        .header("content-type", "application/sdp")
        .body(offer)
        .send()
        .await
        .with_context(|| format!("POST {}", endpoint.path))?;
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = response.text().await.unwrap_or_default();
    if status != 201 {
        return Err(Refused {
            path: endpoint.path.to_owned(),
            status,
            body,
        }
        .into());
    }
    let Some(location) = location else {
        bail!("{} answered 201 without a Location", endpoint.path);
    };
    let answer = RTCSessionDescription::answer(body).context("the answer is not SDP")?;
    pc.set_remote_description(answer)
        .await
        .context("applying the engine's answer")?;
    Ok(location)
}

/// Ends a session: `DELETE` on its `Location`; returns the status.
pub async fn delete_session(endpoint: &Endpoint<'_>, location: &str) -> anyhow::Result<u16> {
    let response = endpoint
        .http
        .delete(format!("{}{location}", endpoint.base))
        .bearer_auth(endpoint.token)
        .send()
        .await
        .with_context(|| format!("DELETE {location}"))?;
    Ok(response.status().as_u16())
}

/// Polls `condition` every 10 ms until it holds or `limit` passes.
pub async fn wait_for(condition: impl Fn() -> bool, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !condition() {
        if Instant::now() >= deadline {
            bail!("still not true after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

fn media_engine_with(
    codecs: &[(RTCRtpCodecParameters, RtpCodecKind)],
) -> anyhow::Result<MediaEngine> {
    let mut media_engine = MediaEngine::default();
    for (codec, kind) in codecs {
        media_engine
            .register_codec(codec.clone(), *kind)
            .context("registering a codec")?;
    }
    Ok(media_engine)
}
