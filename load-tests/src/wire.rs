//! The WebSocket side shared by viewers and senders: how to connect, how a
//! send time travels in `client_msg_id`, and how to walk a server frame.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use protocol::v1::server_frame::Frame;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The `ws://` URL of a room for `token`, from the engine's `http://` URL.
pub fn room_url(base: &str, room: &str, token: &str) -> String {
    let base = base.trim_end_matches('/');
    let base = match base.strip_prefix("https://") {
        Some(rest) => format!("wss://{rest}"),
        None => format!("ws://{}", base.strip_prefix("http://").unwrap_or(base)),
    };
    format!("{base}/v1/rooms/{room}/ws?token={token}")
}

/// tungstenite allocates a 128 KiB read buffer and a 128 KiB write buffer
/// per socket by default: 2.5 GiB at 10 000 viewers, in the generator. A
/// viewer reads frames of a few KiB and writes almost nothing, so small
/// buffers cost nothing in throughput.
pub(crate) fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(4 << 20))
        .max_frame_size(Some(4 << 20))
}

/// Opens a session and waits for its `welcome`: a connection counts as
/// made only when the room has admitted it. The error is a short reason
/// meant to be grouped and counted (`http 401`, `io ConnectionRefused`).
pub async fn open(url: &str, timeout: Duration) -> Result<Ws, String> {
    let attempt = async {
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config()), true)
            .await
            .map_err(|e| describe(&e))?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    return match protocol::decode_server_json(text.as_str()) {
                        Ok(Frame::Welcome(_)) => Ok(ws),
                        Ok(Frame::Error(error)) => Err(format!("error {}", error.code)),
                        Ok(_) => Err("first frame was not a welcome".into()),
                        Err(_) => Err("undecodable first frame".into()),
                    };
                }
                Some(Ok(Message::Close(frame))) => return Err(close_reason(frame.as_ref())),
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(describe(&error)),
                None => return Err("closed before welcome".into()),
            }
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| Err("timeout".into()))
}

/// A transport error as a short, groupable reason.
pub fn describe(error: &WsError) -> String {
    match error {
        WsError::Http(response) => format!("http {}", response.status().as_u16()),
        WsError::Io(io) => format!("io {:?}", io.kind()),
        WsError::ConnectionClosed | WsError::AlreadyClosed => "connection closed".into(),
        WsError::Protocol(p) => format!("protocol: {p}"),
        WsError::Capacity(c) => format!("capacity: {c}"),
        other => other.to_string(),
    }
}

/// What one read from a session's socket means to its loop.
pub enum Read<'a> {
    Text(&'a str),
    /// Not a text frame (ping, pong, binary): nothing to count.
    Other,
    /// The session is over, and why.
    Ended(String),
}

/// Classifies one `ws.next()` result.
pub fn read(
    message: &Option<Result<tokio_tungstenite::tungstenite::Message, WsError>>,
) -> Read<'_> {
    use tokio_tungstenite::tungstenite::Message;
    match message {
        Some(Ok(Message::Text(text))) => Read::Text(text.as_str()),
        Some(Ok(Message::Close(frame))) => Read::Ended(close_reason(frame.as_ref())),
        Some(Ok(_)) => Read::Other,
        Some(Err(error)) => Read::Ended(describe(error)),
        None => Read::Ended("connection closed".into()),
    }
}

/// A close frame as a short reason: `close 1013 slow consumer`.
pub fn close_reason(frame: Option<&CloseFrame>) -> String {
    match frame {
        Some(frame) => format!("close {} {}", u16::from(frame.code), frame.reason.as_str())
            .trim_end()
            .to_owned(),
        None => "close (no code)".into(),
    }
}

/// Nanoseconds since the Unix epoch: the clock both ends of a measurement
/// read. Wall-clock rather than `Instant` because the time has to travel
/// inside a message; sender and viewer share one machine and one clock.
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A fresh tag for a run's `client_msg_id`s: six hex digits of the clock.
pub fn run_tag() -> String {
    format!("{:06x}", (unix_nanos() / 1000) & 0xff_ffff)
}

/// `client_msg_id` of the `n`th danmaku of `sender` in run `run`:
/// `<run>.s<sender>-<n>-<sent unix nanos>`. The run tag keeps a viewer from
/// timing another run's (or a real user's) items in a reused room.
pub fn msg_id(run: &str, sender: u32, n: u64, sent_ns: u64) -> String {
    format!("{run}.s{sender}-{n}-{sent_ns}")
}

/// The prefix every `client_msg_id` of one sender starts with.
pub fn sender_prefix(run: &str, sender: u32) -> String {
    format!("{run}.s{sender}-")
}

/// The send time in a `client_msg_id` of run `run`; `None` for anything else.
pub fn sent_ns(client_msg_id: &str, run: &str) -> Option<u64> {
    let rest = client_msg_id.strip_prefix(run)?.strip_prefix('.')?;
    rest.rsplit_once('-')?.1.parse().ok()
}

/// Calls `f` on every frame a server frame carries: itself, or each item of
/// a `batch` (recursively, though the engine does not nest batches).
pub fn for_each_leaf<'a>(frame: &'a Frame, f: &mut impl FnMut(&'a Frame)) {
    match frame {
        Frame::Batch(batch) => {
            for item in &batch.items {
                if let Some(inner) = &item.frame {
                    for_each_leaf(inner, f);
                }
            }
        }
        other => f(other),
    }
}

/// The few fields of a server frame a viewer counts, borrowed from the
/// text: the `type` tag, `client_msg_id`, `count`, an error's `code`, a
/// gift answer's `id` and `idempotency_key`, and a batch's `items`;
/// everything else is skipped unread.
///
/// Why not [`protocol::decode_server_json`]: a viewer decodes every item of
/// every broadcast, and 10 000 viewers at 1 000 danmaku/s are 10 million
/// items a second. The full decode allocates five strings per item (about
/// 1.4 µs); this view allocates none (about 0.26 µs), which keeps the
/// generator from becoming what the run measures. Senders and the welcome
/// still use the full decode. The test below holds the view to what
/// `protocol` encodes, so the two cannot drift apart unnoticed.
#[derive(Debug, Deserialize)]
pub struct FrameView<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(default, borrow)]
    pub client_msg_id: Option<Cow<'a, str>>,
    #[serde(default)]
    pub count: Option<u32>,
    #[serde(default, borrow)]
    pub code: Option<Cow<'a, str>>,
    /// A gift receipt's id.
    #[serde(default, borrow)]
    pub id: Option<Cow<'a, str>>,
    /// The key a gift receipt or a gift's error answers.
    #[serde(default, borrow)]
    pub idempotency_key: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub items: Vec<FrameView<'a>>,
}

impl<'a> FrameView<'a> {
    pub fn parse(text: &'a str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Calls `f` on this frame, or on each item of a batch.
    pub fn for_each_leaf(&self, f: &mut impl FnMut(&FrameView<'a>)) {
        if self.kind == "batch" {
            self.items.iter().for_each(|item| item.for_each_leaf(f));
        } else {
            f(self);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_urls_follow_the_http_scheme() {
        assert_eq!(
            room_url("http://127.0.0.1:8080/", "bench", "t.k.s"),
            "ws://127.0.0.1:8080/v1/rooms/bench/ws?token=t.k.s"
        );
        assert_eq!(
            room_url("https://live.example", "r", "t"),
            "wss://live.example/v1/rooms/r/ws?token=t"
        );
    }

    #[test]
    fn send_times_round_trip_through_client_msg_id() {
        let id = msg_id("a1b2", 7, 42, 1_700_000_000_123_456_789);
        assert!(id.starts_with(&sender_prefix("a1b2", 7)));
        assert_eq!(sent_ns(&id, "a1b2"), Some(1_700_000_000_123_456_789));
        assert_eq!(
            sent_ns(&id, "a1b"),
            None,
            "a run tag that is a prefix of another is not a match"
        );
        assert_eq!(sent_ns("web-123", "a1b2"), None);
        assert_eq!(sent_ns("", "a1b2"), None);
    }

    #[test]
    fn batches_are_walked_item_by_item() {
        let json = r#"{"type":"batch","items":[
            {"type":"danmaku","seq":1,"text":"a","client_msg_id":"x"},
            {"type":"presence","viewers":3},
            {"type":"danmaku","seq":2,"text":"b","count":4}]}"#;
        let frame = protocol::decode_server_json(json).unwrap();
        let mut seen = Vec::new();
        for_each_leaf(&frame, &mut |leaf| seen.push(leaf.clone()));
        assert_eq!(seen.len(), 3);
        assert!(matches!(&seen[2], Frame::Danmaku(d) if d.count == 4 && d.seq == 2));
    }

    #[test]
    fn the_view_reads_what_protocol_encodes() {
        use protocol::v1::{Batch, DanmakuItem, Error, Presence, ServerFrame};
        let item = |seq: u64, id: &str, count: u32| ServerFrame {
            frame: Some(Frame::Danmaku(DanmakuItem {
                seq,
                user_id: "u".into(),
                name: "n \"quoted\"".into(),
                text: "t\\x".into(),
                client_msg_id: id.into(),
                count,
                ..DanmakuItem::default()
            })),
        };
        let frame = Frame::Batch(Batch {
            items: vec![
                item(1, "r.s0-0-1", 1),
                item(2, "r.s0-1-2", 5),
                ServerFrame {
                    frame: Some(Frame::Presence(Presence { viewers: 9 })),
                },
                ServerFrame {
                    frame: Some(Frame::Error(Error {
                        code: "muted".into(),
                        ..Error::default()
                    })),
                },
            ],
        });
        let text = String::from_utf8(protocol::encode_server_json(&frame).to_vec()).unwrap();
        let view = FrameView::parse(&text).unwrap();
        let mut leaves = Vec::new();
        view.for_each_leaf(&mut |leaf| {
            leaves.push((
                leaf.kind.to_string(),
                leaf.client_msg_id.as_deref().map(str::to_owned),
                leaf.count,
                leaf.code.as_deref().map(str::to_owned),
            ))
        });
        assert_eq!(
            leaves,
            vec![
                ("danmaku".into(), Some("r.s0-0-1".into()), None, None),
                ("danmaku".into(), Some("r.s0-1-2".into()), Some(5), None),
                ("presence".into(), None, None, None),
                (
                    "error".into(),
                    Some(String::new()),
                    None,
                    Some("muted".into())
                ),
            ]
        );
        let single = String::from_utf8(
            protocol::encode_server_json(&item(3, "x", 1).frame.unwrap()).to_vec(),
        )
        .unwrap();
        let view = FrameView::parse(&single).unwrap();
        assert_eq!(
            (view.kind.as_ref(), view.client_msg_id.as_deref()),
            ("danmaku", Some("x"))
        );
    }
}
