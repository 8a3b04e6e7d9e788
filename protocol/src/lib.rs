//! # protocol: the engine's wire and event types
//!
//! Everything that crosses a process boundary is declared once in `proto/`:
//!
//! - `frames.proto`: WebSocket frames between a client and the room. Encoded
//!   as protobuf when the client offers the `live.v1.pb` subprotocol, as JSON
//!   text objects tagged by `"type"` otherwise. The JSON form is derived by
//!   serde attributes that `build.rs` adds to the prost types.
//! - `events.proto`: the bus [`v1::Envelope`] and its payloads.
//!
//! This crate holds no behaviour beyond encoding and decoding. It sits at the
//! bottom of the house: every other crate may depend on it, it depends on none.

pub mod json;

/// Generated types of package `live.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/live.v1.rs"));
}

use bytes::Bytes;
use prost::Message;
use v1::{client_frame, server_frame};

/// The WebSocket subprotocol that selects protobuf binary frames.
pub const SUBPROTOCOL_PROTOBUF: &str = "live.v1.pb";
/// The WebSocket subprotocol that selects JSON text frames (the default).
pub const SUBPROTOCOL_JSON: &str = "live.v1.json";

/// How a session's frames are encoded on its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Protobuf,
}

/// Why an inbound frame could not be decoded. The message is meant for the
/// client: it names the field or the byte offset that was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

/// Frames as one: the frame itself when there is one, else a `batch`.
pub fn batch_frame(mut frames: Vec<server_frame::Frame>) -> server_frame::Frame {
    if frames.len() == 1 {
        return frames.remove(0);
    }
    let items = frames
        .into_iter()
        .map(|frame| v1::ServerFrame { frame: Some(frame) })
        .collect();
    server_frame::Frame::Batch(v1::Batch { items })
}

/// Committed danmaku as one frame: `danmaku` for one item, `batch` for more.
pub fn danmaku_frame(items: Vec<v1::DanmakuItem>) -> server_frame::Frame {
    batch_frame(
        items
            .into_iter()
            .map(server_frame::Frame::Danmaku)
            .collect(),
    )
}

/// Decodes a client frame from JSON text (`{"type": ...}`).
pub fn decode_client_json(text: &str) -> Result<client_frame::Frame, DecodeError> {
    serde_json::from_str(text).map_err(|e| DecodeError(e.to_string()))
}

/// Decodes a client frame from protobuf bytes.
pub fn decode_client_protobuf(bytes: &[u8]) -> Result<client_frame::Frame, DecodeError> {
    let frame = v1::ClientFrame::decode(bytes).map_err(|e| DecodeError(e.to_string()))?;
    frame
        .frame
        .ok_or_else(|| DecodeError("client frame has no case set".into()))
}

/// Encodes a server frame as JSON text.
pub fn encode_server_json(frame: &server_frame::Frame) -> Bytes {
    // Serializing generated structs into a Vec cannot fail: no maps with
    // non-string keys, no custom serializers that error.
    Bytes::from(serde_json::to_vec(frame).expect("server frames serialize to JSON"))
}

/// Encodes a server frame as protobuf bytes.
pub fn encode_server_protobuf(frame: &server_frame::Frame) -> Bytes {
    let wrapped = v1::ServerFrame {
        frame: Some(frame.clone()),
    };
    Bytes::from(wrapped.encode_to_vec())
}

/// Encodes a server frame in the session's encoding.
pub fn encode_server(frame: &server_frame::Frame, encoding: Encoding) -> Bytes {
    match encoding {
        Encoding::Json => encode_server_json(frame),
        Encoding::Protobuf => encode_server_protobuf(frame),
    }
}

/// Encodes a client frame as JSON text (used by clients, load tests and tests).
pub fn encode_client_json(frame: &client_frame::Frame) -> String {
    serde_json::to_string(frame).expect("client frames serialize to JSON")
}

/// Decodes a server frame from JSON text (used by clients, load tests and tests).
pub fn decode_server_json(text: &str) -> Result<server_frame::Frame, DecodeError> {
    serde_json::from_str(text).map_err(|e| DecodeError(e.to_string()))
}

/// Decodes a server frame from protobuf bytes (used by clients and tests).
pub fn decode_server_protobuf(bytes: &[u8]) -> Result<server_frame::Frame, DecodeError> {
    let frame = v1::ServerFrame::decode(bytes).map_err(|e| DecodeError(e.to_string()))?;
    frame
        .frame
        .ok_or_else(|| DecodeError("server frame has no case set".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use v1::{DanmakuItem, DanmakuMode, SendDanmaku};

    #[test]
    fn client_danmaku_json_uses_type_tag_and_mode_names() {
        let frame = decode_client_json(
            r#"{"type":"danmaku","text":"hi","mode":"top","color":16777215,"client_msg_id":"c1"}"#,
        )
        .unwrap();
        assert_eq!(
            frame,
            client_frame::Frame::Danmaku(SendDanmaku {
                text: "hi".into(),
                mode: DanmakuMode::Top as i32,
                color: 0xFF_FF_FF,
                client_msg_id: "c1".into(),
            })
        );
    }

    #[test]
    fn missing_fields_take_proto3_defaults() {
        let frame = decode_client_json(r#"{"type":"danmaku","text":"hi"}"#).unwrap();
        let client_frame::Frame::Danmaku(d) = frame else {
            panic!("expected danmaku, got {frame:?}");
        };
        assert_eq!(d.mode, DanmakuMode::Scroll as i32);
        assert_eq!(d.color, 0);
    }

    #[test]
    fn unknown_type_and_mode_are_named_in_the_error() {
        let err = decode_client_json(r#"{"type":"shout","text":"hi"}"#).unwrap_err();
        assert!(err.0.contains("shout"), "{err}");
        let err =
            decode_client_json(r#"{"type":"danmaku","text":"hi","mode":"diagonal"}"#).unwrap_err();
        assert!(err.0.contains("diagonal"), "{err}");
        assert!(decode_client_json("{not json").is_err());
        assert!(decode_client_json(r#"{"text":"no type"}"#).is_err());
    }

    #[test]
    fn server_frames_round_trip_in_both_encodings() {
        let item = DanmakuItem {
            seq: 7,
            user_id: "u1".into(),
            name: "Ann".into(),
            text: "hello".into(),
            mode: DanmakuMode::Bottom as i32,
            color: 0x00_FF_00,
            ts_ms: 1_700_000_000_000,
            client_msg_id: "m1".into(),
            count: 3,
        };
        let batch = server_frame::Frame::Batch(v1::Batch {
            items: vec![v1::ServerFrame {
                frame: Some(server_frame::Frame::Danmaku(item.clone())),
            }],
        });
        let json = encode_server_json(&batch);
        let text = std::str::from_utf8(&json).unwrap();
        assert!(
            text.starts_with(r#"{"type":"batch","items":[{"type":"danmaku","seq":7"#),
            "{text}"
        );
        assert!(text.contains(r#""mode":"bottom""#), "{text}");
        assert_eq!(decode_server_json(text).unwrap(), batch);
        let pb = encode_server_protobuf(&batch);
        assert_eq!(decode_server_protobuf(&pb).unwrap(), batch);
    }

    #[test]
    fn count_of_one_is_left_out_of_json() {
        let item = server_frame::Frame::Danmaku(DanmakuItem {
            seq: 1,
            count: 1,
            ..Default::default()
        });
        let json = encode_server_json(&item);
        assert!(!std::str::from_utf8(&json).unwrap().contains("count"));
    }
}
