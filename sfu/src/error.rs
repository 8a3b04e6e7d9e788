//! What the media plane refuses, each mapped to one HTTP status at the
//! gateway (see docs/protocol.md).

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SfuError {
    /// The offer is not valid SDP; the reason names what is wrong. (400)
    #[error("malformed SDP: {0}")]
    BadSdp(String),
    /// The offer has no audio or video media line. (400)
    #[error("the offer has no audio or video")]
    NoMedia,
    /// None of the offered codecs is one the engine forwards. (422)
    #[error("no acceptable codec: the engine takes Opus, VP8 and H.264")]
    NoCodec,
    /// A subscriber of a room's program did not offer H.264, the program's
    /// video codec. (422)
    #[error("the room's program is H.264: offer H.264 (packetization-mode 1)")]
    NeedsH264,
    /// The offer was valid but could not be negotiated. (400)
    #[error("the offer cannot be negotiated: {0}")]
    Negotiation(String),
    /// The stream already has a publisher. (409)
    #[error("the stream is already live")]
    StreamLive,
    /// The stream has no publisher. (404)
    #[error("the stream is not live")]
    StreamNotLive,
    /// A configured limit is reached; retry later or elsewhere. (503 with
    /// Retry-After)
    #[error("{0}")]
    Full(&'static str),
    /// The media thread is gone. (503)
    #[error("the media plane is not running")]
    Unavailable,
    /// The peer is unknown or gone. (404)
    #[error("no such session")]
    UnknownPeer,
}
