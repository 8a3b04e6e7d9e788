//! WebRTC peers built on webrtc-rs, an implementation independent of the
//! engine's str0m: a [`Publisher`] that sends a real encoded test pattern
//! (VP8 or H.264 from libvpx/libx264) plus an Opus tone over WHIP, and
//! [`Subscriber`]s that play a stream over WHEP, reassemble frames and
//! optionally decode them. The engine's integration tests and the
//! `sfu-fanout` benchmark use the same peers.
//!
//! Signalling is non-trickle: the offer (or, for a server that offers
//! itself, the answer) goes out once ICE gathering is complete, with its
//! one host candidate on 127.0.0.1 (peers bind there only and have mDNS
//! off: a loopback-only namespace has no multicast). A peer of a server
//! that will not use loopback (Janus, in its own network namespace) binds
//! the address the runner reaches that server from instead
//! ([`Subscriber::answer`]).

mod keyframe_requests;
mod publisher;
mod subscriber;

use std::net::{IpAddr, SocketAddr, UdpSocket};
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

/// How often the peers send ICE connectivity checks.
const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(50);

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

/// The local address this machine sends from toward the host of `base`:
/// the one a peer must bind so that its host candidate is reachable from
/// that server (127.0.0.1 for a server on loopback, the runner's end of
/// the veth pair for one in a namespace). A connected UDP socket asks the
/// kernel's routing without sending anything.
pub async fn local_address_toward(base: &str) -> anyhow::Result<IpAddr> {
    let url = reqwest::Url::parse(base).with_context(|| format!("bad URL {base}"))?;
    let host = url
        .host_str()
        .with_context(|| format!("no host in {base}"))?
        .trim_matches(['[', ']']);
    let port = url.port_or_known_default().unwrap_or(80);
    let remote = tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("cannot resolve {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))?;
    let unspecified: SocketAddr = if remote.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let socket = UdpSocket::bind(unspecified).context("cannot open a UDP socket")?;
    socket
        .connect(remote)
        .with_context(|| format!("no route to {remote}"))?;
    Ok(socket.local_addr()?.ip())
}

/// A peer connection whose only ICE socket (hence only host candidate) is
/// on `bind`, with the default interceptors (NACK, RTCP reports, TWCC)
/// plus, for publishers, keyframe requests delivered to the application.
async fn peer_connection_on(
    bind: IpAddr,
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
                // Connectivity checks every 50 ms, RFC 8445's Ta and what
                // browsers pace at (webrtc-rs waits 200 ms): an ICE-lite
                // server that waits for nomination, as RFC 8445 asks,
                // would otherwise be charged webrtc-rs's pacing on every
                // join.
                .with_ice_connection_attempts(Some(ICE_CHECK_INTERVAL), None)
                .build(),
        )
        .with_interceptor_registry(registry)
        .with_handler(handler)
        .with_udp_addrs(vec![SocketAddr::new(bind, 0)])
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
    let offer = with_candidates(pc, offer, gathered).await?;
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

/// Applies `description` (an offer or answer made here) and returns its
/// SDP once ICE gathering is complete, candidates included: signalling is
/// non-trickle, so the peer learns every candidate from this one SDP.
async fn with_candidates(
    pc: &impl PeerConnection,
    description: RTCSessionDescription,
    gathered: &AtomicBool,
) -> anyhow::Result<String> {
    pc.set_local_description(description)
        .await
        .context("applying the local description")?;
    wait_for(|| gathered.load(Ordering::Relaxed), Duration::from_secs(10))
        .await
        .context("ICE gathering did not complete")?;
    Ok(pc
        .local_description()
        .await
        .context("no local description after gathering")?
        .sdp)
}

/// Answers a remote offer (a server that offers, as Janus's streaming
/// plugin does) and returns the complete answer SDP.
async fn answer_offer(
    pc: &impl PeerConnection,
    offer_sdp: &str,
    gathered: &AtomicBool,
) -> anyhow::Result<String> {
    let offer =
        RTCSessionDescription::offer(offer_sdp.to_owned()).context("the offer is not SDP")?;
    pc.set_remote_description(offer)
        .await
        .context("applying the remote offer")?;
    let answer = pc.create_answer(None).await.context("creating an answer")?;
    with_candidates(pc, answer, gathered).await
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
