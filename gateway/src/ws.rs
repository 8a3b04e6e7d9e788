//! The room WebSocket: one connection task per session.
//!
//! The task owns the socket and nothing else. Inbound frames are decoded
//! and handed to the session's UserActor; outbound it reads three sources:
//! the room's broadcast (bytes encoded once for everyone), the session's
//! direct queue (errors, acks) and the engine's shutdown signal.
//!
//! Recovery: the task subscribes to the room before it reads history, so a
//! frame committed in between is either in the history or in the
//! subscription, and the seq ranges on broadcasts let it skip the overlap.

use std::sync::Arc;

use actors::hub::{CaptionWatch, HubClosed, error_frame};
use actors::{Broadcast, Grants, RoomHub, SessionInfo, SessionSupervisorMsg, SessionTx, UserMsg};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::Response;
use bytes::Bytes;
use futures_util::SinkExt;
use protocol::v1::{
    Batch, CaptionChoice as CaptionChoiceFrame, Welcome, client_frame, server_frame::Frame,
};
use protocol::{Encoding, SUBPROTOCOL_JSON, SUBPROTOCOL_PROTOBUF};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use crate::auth::{Grant, Principal};
use crate::error::{ApiError, check_room_id};
use crate::state::AppState;

/// Read buffer per socket: enough for a few typical frames; larger ones are
/// still read, in several calls.
const READ_BUFFER_BYTES: usize = 4 * 1024;

#[derive(Debug, Deserialize)]
pub struct WsQuery {
    after_seq: Option<u64>,
    /// Read by the auth layer; declared so it is not an unknown parameter.
    #[serde(default, rename = "token")]
    _token: Option<String>,
}

pub async fn connect(
    State(app): State<AppState>,
    principal: Principal,
    Path(room_id): Path<String>,
    query: Result<Query<WsQuery>, axum::extract::rejection::QueryRejection>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    check_room_id(&room_id)?;
    let Query(query) = query?;
    principal.require(Grant::Subscribe, &room_id)?;
    let offered: Vec<String> = upgrade
        .requested_protocols()
        .filter_map(|p| p.to_str().ok())
        .flat_map(|p| p.split(',').map(|s| s.trim().to_owned()))
        .collect();
    let encoding = if offered.iter().any(|p| p == SUBPROTOCOL_PROTOBUF) {
        Encoding::Protobuf
    } else {
        Encoding::Json
    };
    if !offered.is_empty()
        && !offered
            .iter()
            .any(|p| p == SUBPROTOCOL_PROTOBUF || p == SUBPROTOCOL_JSON)
    {
        // Browsers drop a connection whose offered subprotocols were all
        // ignored; say why instead.
        return Err(ApiError::bad_request(format!(
            "offer `{SUBPROTOCOL_JSON}` or `{SUBPROTOCOL_PROTOBUF}` alongside other subprotocols"
        )));
    }
    let hub = app.acquire(&room_id).await?;
    let limit = app.config.max_message_bytes;
    // tungstenite's default 128 KiB read and write buffers per socket would
    // dominate the memory of an idle session; frames here are small.
    let upgrade = upgrade
        .protocols([SUBPROTOCOL_PROTOBUF, SUBPROTOCOL_JSON])
        .max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0);
    let tracker = app.sessions.clone();
    let session = Session {
        app,
        hub,
        principal,
        encoding,
        after_seq: query.after_seq,
        captions: std::sync::Mutex::new(CaptionChoice::Spoken),
    };
    let mut response = upgrade.on_upgrade(move |socket| tracker.track_future(session.run(socket)));
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

struct Session {
    app: AppState,
    hub: Arc<RoomHub>,
    principal: Principal,
    encoding: Encoding,
    after_seq: Option<u64>,
    /// The caption lines this session gets.
    captions: std::sync::Mutex<CaptionChoice>,
}

/// Which `caption` frames a session gets (`{"type":"captions"}`).
enum CaptionChoice {
    /// Lines in the language they were said in (the default).
    Spoken,
    Off,
    /// Lines in this language; counted, so the room translates into it.
    In(CaptionWatch),
}

impl CaptionChoice {
    fn wants(&self, caption: &protocol::v1::Caption) -> bool {
        match self {
            Self::Spoken => caption.translated_from.is_empty(),
            Self::Off => false,
            Self::In(watch) => caption.lang == watch.lang(),
        }
    }
}

/// Why the task ends, and what it tells the peer.
enum End {
    /// The peer went away or closed first: nothing to send.
    Gone,
    Close(u16, &'static str),
}

impl Session {
    async fn run(self, mut socket: WebSocket) {
        let _connected = ConnectionGauge::new();
        let _viewer = self.hub.join();
        // Subscribe before anything else: see the module docs.
        let mut frames = self.hub.subscribe();
        let (tx, mut direct, slow) = SessionTx::new(self.app.config.session_queue);
        let session_id = uuid::Uuid::now_v7().to_string();
        let info = SessionInfo {
            session_id: session_id.clone(),
            user_id: self.principal.user_id().to_owned(),
            name: self.principal.name().to_owned(),
            grants: Grants {
                chat: self.principal.has(Grant::Chat, self.hub.room_id()),
                moderate: self.principal.has(Grant::Moderate, self.hub.room_id()),
                gift: self.principal.has(Grant::Gift, self.hub.room_id()),
            },
            region: self.principal.region().to_owned(),
        };
        let started = ractor::call_t!(
            self.app.actors.sessions(),
            |reply| SessionSupervisorMsg::Start {
                info,
                hub: self.hub.clone(),
                tx: tx.clone(),
                reply
            },
            10_000
        );
        let user = match started {
            Ok(Ok(user)) => user,
            _ => return close(&mut socket, 1011, "could not start the session").await,
        };
        let end = match self.recover(&mut socket, &session_id).await {
            Ok(skip_upto) => {
                self.pump(
                    &mut socket,
                    &user,
                    &mut frames,
                    &mut direct,
                    &slow,
                    skip_upto,
                )
                .await
            }
            Err(end) => end,
        };
        user.stop(None);
        if let End::Close(code, reason) = end {
            if code == 1013 {
                metrics::counter!("live_ws_slow_consumers_closed_total").increment(1);
            }
            close(&mut socket, code, reason).await;
        }
    }

    /// Sends the welcome and, with `after_seq`, what the client missed.
    /// Returns the highest seq already sent.
    async fn recover(&self, socket: &mut WebSocket, session_id: &str) -> Result<u64, End> {
        let room_id = self.hub.room_id();
        let mut history = Vec::new();
        let mut recovered = true;
        if let Some(after) = self.after_seq {
            let limit = self.app.config.recovery_limit;
            history = self
                .app
                .store
                .danmaku_after(room_id, after, limit + 1)
                .await
                .map_err(|_| End::Close(1011, "history unavailable"))?;
            if history.len() > limit {
                history.truncate(limit);
                recovered = false;
            }
        }
        let skip_upto = history.last().map_or(0, |item| item.seq);
        let welcome = Frame::Welcome(Welcome {
            session_id: session_id.to_owned(),
            room_id: room_id.to_owned(),
            user_id: self.principal.user_id().to_owned(),
            last_seq: self.hub.last_broadcast_seq().max(skip_upto),
            recovered,
        });
        self.send_frame(socket, &welcome).await?;
        for chunk in history.chunks(100) {
            self.send_frame(socket, &protocol::danmaku_frame(chunk.to_vec()))
                .await?;
        }
        Ok(skip_upto)
    }

    async fn pump(
        &self,
        socket: &mut WebSocket,
        user: &ractor::ActorRef<UserMsg>,
        frames: &mut tokio::sync::broadcast::Receiver<Arc<Broadcast>>,
        direct: &mut tokio::sync::mpsc::Receiver<Frame>,
        slow: &tokio_util::sync::CancellationToken,
        skip_upto: u64,
    ) -> End {
        let delivered = metrics::counter!("live_danmaku_delivered_total");
        let mut keepalive = tokio::time::interval(self.app.config.keepalive);
        keepalive.reset();
        // Created once, not per loop turn: each fresh `cancelled()` would
        // register a new waiter on every frame.
        let shutdown = self.app.shutdown.cancelled();
        let room_closed = self.hub.closed();
        let slow = slow.cancelled();
        tokio::pin!(shutdown, room_closed, slow);
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => return End::Close(1001, "server shutting down"),
                reason = &mut room_closed => {
                    // The room's last frames (`room_closed`) precede the close.
                    while let Ok(broadcast) = frames.try_recv() {
                        if self.send_bytes(socket, broadcast.bytes(self.encoding)).await.is_err() {
                            break;
                        }
                    }
                    return match reason {
                        HubClosed::RoomClosed => End::Close(1000, "room closed"),
                        HubClosed::Unavailable => End::Close(1012, "room restarting, reconnect"),
                    };
                }
                _ = &mut slow => return End::Close(1013, "slow consumer"),
                // Answers to this client before its next request or the
                // room's broadcasts: under a flood of its own requests a
                // later arm would starve them until the queue overflowed.
                Some(frame) = direct.recv() => if let Err(end) = self.send_direct(socket, frame, direct).await { return end },
                inbound = socket.recv() => match inbound {
                    None => return End::Gone,
                    Some(Err(error)) => return close_for(error),
                    Some(Ok(message)) => if let Some(end) = self.inbound(socket, message, user).await { return end },
                },
                received = frames.recv() => match received {
                    Ok(broadcast) => {
                        if !self.wants(&broadcast.frame) {
                            continue;
                        }
                        let sent = match broadcast.seqs {
                            Some((_, last)) if last <= skip_upto => Ok(0),
                            Some((first, _)) if first <= skip_upto => self.send_frame(socket, &without_seen(&broadcast.frame, skip_upto)).await.map(|_| 1),
                            _ => self.send_bytes(socket, broadcast.bytes(self.encoding)).await.map(|_| 1),
                        };
                        match sent {
                            Ok(n) if broadcast.seqs.is_some() => delivered.increment(n * item_count(&broadcast.frame)),
                            Ok(_) => {}
                            Err(end) => return end,
                        }
                    }
                    Err(RecvError::Lagged(_)) => return End::Close(1013, "slow consumer: fell behind the room"),
                    Err(RecvError::Closed) => return End::Close(1012, "room restarting, reconnect"),
                },
                _ = keepalive.tick() => if let Err(end) = self.send(socket, Message::Ping(Bytes::new())).await { return end },
            }
        }
    }

    /// Handles one inbound message; `Some` ends the session.
    async fn inbound(
        &self,
        socket: &mut WebSocket,
        message: Message,
        user: &ractor::ActorRef<UserMsg>,
    ) -> Option<End> {
        let decoded = match (&message, self.encoding) {
            (Message::Text(text), Encoding::Json) => protocol::decode_client_json(text.as_str()),
            (Message::Binary(bytes), Encoding::Protobuf) => protocol::decode_client_protobuf(bytes),
            (Message::Text(_), Encoding::Protobuf) => Err(protocol::DecodeError(
                "this session speaks protobuf: send binary frames".into(),
            )),
            (Message::Binary(_), Encoding::Json) => Err(protocol::DecodeError(
                "this session speaks JSON: send text frames".into(),
            )),
            (Message::Close(_), _) => return Some(End::Gone),
            (Message::Ping(_) | Message::Pong(_), _) => return None,
        };
        match decoded {
            Ok(client_frame::Frame::Layer(request)) => {
                return self.set_layer(socket, &request.layer).await;
            }
            Ok(client_frame::Frame::Captions(request)) => {
                let answer = self.choose_captions(&request.lang);
                return self.send_frame(socket, &answer).await.err();
            }
            Ok(frame) => {
                if user.cast(UserMsg::Inbound(frame)).is_err() {
                    return Some(End::Close(1011, "session failed"));
                }
            }
            Err(error) => {
                // The frame is refused; the session and the room go on.
                metrics::counter!("live_ws_bad_frames_total").increment(1);
                let frame = error_frame(
                    "bad_request",
                    error.to_string(),
                    &client_msg_id_of(&message),
                    0,
                );
                return self.send_frame(socket, &frame).await.err();
            }
        }
        None
    }

    /// `{"type":"layer"}`: a command for the media plane, about this
    /// user's WHEP sessions in the room.
    async fn set_layer(&self, socket: &mut WebSocket, layer: &str) -> Option<End> {
        let refusal = match layer.parse::<sfu::LayerChoice>() {
            Err(reason) => Some(error_frame("bad_request", reason, "", 0)),
            Ok(choice) => match self
                .app
                .media
                .set_layer(self.principal.user_id(), self.hub.room_id(), choice)
                .await
            {
                Ok(0) => Some(error_frame(
                    "not_found",
                    "you have no WHEP session in this room",
                    "",
                    0,
                )),
                Ok(_) => None,
                Err(error) => Some(error_frame("unavailable", error.to_string(), "", 0)),
            },
        };
        match refusal {
            Some(frame) => self.send_frame(socket, &frame).await.err(),
            None => None,
        }
    }

    /// Whether a room frame is for this session: caption lines only in
    /// the language it chose.
    fn wants(&self, frame: &Frame) -> bool {
        match frame {
            Frame::Caption(caption) => self
                .captions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .wants(caption),
            _ => true,
        }
    }

    /// `{"type":"captions"}`: the languages this session's caption lines
    /// are in. Answered with `caption_choice`, or an error listing what is
    /// offered.
    fn choose_captions(&self, lang: &str) -> Frame {
        let Some(captions) = &self.app.captions else {
            return error_frame("unavailable", "captions are off on this server", "", 0);
        };
        let offered = captions.offered();
        let choice = match lang {
            "" => CaptionChoice::Spoken,
            "off" => CaptionChoice::Off,
            spoken if spoken == captions.spoken() => CaptionChoice::Spoken,
            lang if offered.iter().any(|o| o == lang) => {
                CaptionChoice::In(self.hub.watch_captions(lang))
            }
            lang => {
                return error_frame(
                    "unsupported_language",
                    format!(
                        "no captions in `{lang}`: captions are offered in {}",
                        offered.join(", ")
                    ),
                    "",
                    0,
                );
            }
        };
        *self.captions.lock().unwrap_or_else(|e| e.into_inner()) = choice;
        Frame::CaptionChoice(CaptionChoiceFrame {
            lang: lang.to_owned(),
            available: offered,
        })
    }

    async fn send_frame(&self, socket: &mut WebSocket, frame: &Frame) -> Result<(), End> {
        self.send_bytes(socket, &protocol::encode_server(frame, self.encoding))
            .await
    }

    async fn send_bytes(&self, socket: &mut WebSocket, bytes: &Bytes) -> Result<(), End> {
        self.send(socket, self.message(bytes.clone())?).await
    }

    /// Sends `first` and what else the direct queue already holds (up to
    /// [`MAX_COALESCED`] frames) with one flush: a burst of answers (a
    /// client retrying a gift ten times gets ten receipts) costs one write,
    /// not one each. A lone frame still leaves at once.
    async fn send_direct(
        &self,
        socket: &mut WebSocket,
        first: Frame,
        direct: &mut tokio::sync::mpsc::Receiver<Frame>,
    ) -> Result<(), End> {
        let write = async {
            let mut next = Some(first);
            let mut fed = 0;
            while let Some(frame) = next {
                let message = self.message(protocol::encode_server(&frame, self.encoding))?;
                socket.feed(message).await.map_err(|_| End::Gone)?;
                fed += 1;
                next = if fed < MAX_COALESCED {
                    direct.try_recv().ok()
                } else {
                    None
                };
            }
            SinkExt::flush(socket).await.map_err(|_| End::Gone)
        };
        match tokio::time::timeout(self.app.config.write_timeout, write).await {
            Ok(written) => written,
            Err(_) => Err(End::Close(1013, "slow consumer: write timed out")),
        }
    }

    /// An encoded frame as the message this session's encoding sends.
    fn message(&self, bytes: Bytes) -> Result<Message, End> {
        Ok(match self.encoding {
            Encoding::Protobuf => Message::Binary(bytes),
            // Encoded by serde_json: valid UTF-8 by construction.
            Encoding::Json => match Utf8Bytes::try_from(bytes) {
                Ok(text) => Message::Text(text),
                Err(_) => return Err(End::Close(1011, "internal encoding error")),
            },
        })
    }

    async fn send(&self, socket: &mut WebSocket, message: Message) -> Result<(), End> {
        match tokio::time::timeout(self.app.config.write_timeout, socket.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Gone),
            Err(_) => Err(End::Close(1013, "slow consumer: write timed out")),
        }
    }
}

/// Most direct frames written before one flush.
const MAX_COALESCED: usize = 64;

/// Maps a read error to the close code RFC 6455 assigns it.
fn close_for(error: axum::Error) -> End {
    use tungstenite::error::{CapacityError, Error};
    match error.into_inner().downcast::<Error>().map(|e| *e) {
        Ok(Error::Capacity(CapacityError::MessageTooLong { .. })) => {
            End::Close(1009, "message too big")
        }
        Ok(Error::Capacity(_)) => End::Close(1009, "frame too big"),
        Ok(Error::Utf8(_)) => End::Close(1007, "invalid UTF-8 in a text frame"),
        Ok(Error::Protocol(_)) => End::Close(1002, "protocol error"),
        _ => End::Gone,
    }
}

async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

/// The part of a broadcast the session has not already sent from history.
fn without_seen(frame: &Frame, skip_upto: u64) -> Frame {
    match frame {
        Frame::Batch(batch) => Frame::Batch(Batch {
            items: batch
                .items
                .iter()
                .filter(
                    |item| !matches!(&item.frame, Some(Frame::Danmaku(d)) if d.seq <= skip_upto),
                )
                .cloned()
                .collect(),
        }),
        other => other.clone(),
    }
}

fn item_count(frame: &Frame) -> u64 {
    match frame {
        Frame::Batch(batch) => batch.items.len() as u64,
        _ => 1,
    }
}

/// Best effort: the `client_msg_id` of a frame that failed to decode, so
/// the client can match the error to what it sent.
fn client_msg_id_of(message: &Message) -> String {
    let Message::Text(text) = message else {
        return String::new();
    };
    serde_json::from_str::<serde_json::Value>(text.as_str())
        .ok()
        .and_then(|v| {
            v.get("client_msg_id")
                .and_then(|c| c.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

/// Counts open WebSocket sessions while alive.
struct ConnectionGauge;

impl ConnectionGauge {
    fn new() -> Self {
        metrics::gauge!("live_ws_connections").increment(1.0);
        metrics::counter!("live_ws_sessions_total").increment(1);
        Self
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        metrics::gauge!("live_ws_connections").decrement(1.0);
    }
}
