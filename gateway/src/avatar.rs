//! Avatar motion ingest for a virtual host: VMC packets (OSC) from a
//! performer's tracking app, over a WebSocket (`GET
//! /v1/rooms/{room}/avatar`, `publish` grant, each binary message one OSC
//! packet) or over UDP (`avatar.vmc_udp_addr`, VMC's usual transport, for
//! the room `avatar.vmc_udp_room`), relayed to the room's viewers as
//! `avatar_motion` frames at most 60 a second. Each frame is encoded once
//! and its bytes shared by every session, and it goes straight to the
//! room's hub: a 200 Hz sender costs the room actor nothing.

use std::sync::Arc;
use std::time::Duration;

use actors::{Broadcast, RoomHub};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use interactive::avatar::{MAX_PACKET_BYTES, MotionIngest, PoseFrame};
use protocol::v1::server_frame::Frame;
use protocol::v1::{AvatarBlend, AvatarBone, AvatarMotion};
use tokio::net::UdpSocket;

use crate::auth::{Grant, Principal};
use crate::error::{ApiError, check_room_id};
use crate::state::AppState;

/// `GET /v1/rooms/{room}/avatar`: a performer's motion source.
pub async fn connect(
    State(app): State<AppState>,
    principal: Principal,
    Path(room_id): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    check_room_id(&room_id)?;
    principal.require(Grant::Publish, &room_id)?;
    let hub = app.acquire(&room_id).await?;
    let recorder = Recorder::of(&app, room_id);
    let tracker = app.sessions.clone();
    let shutdown = app.shutdown.clone();
    Ok(upgrade
        .max_message_size(MAX_PACKET_BYTES)
        .on_upgrade(move |socket| {
            tracker.track_future(relay(binary_messages(socket), hub, recorder, shutdown))
        }))
}

/// The binary messages of a socket, until it closes.
fn binary_messages(socket: WebSocket) -> impl Stream<Item = Bytes> + Unpin {
    Box::pin(socket.filter_map(|message| async move {
        match message {
            Ok(Message::Binary(bytes)) => Some(bytes),
            Ok(Message::Text(_)) => {
                refused("text_message");
                None
            }
            _ => None,
        }
    }))
}

/// Relays VMC datagrams arriving on `socket` to `room_id` until the
/// engine stops. Until the room exists, datagrams are dropped (counted as
/// `no_room`) and the room is looked up again every second.
pub async fn listen_udp(app: AppState, socket: UdpSocket, room_id: String) -> std::io::Result<()> {
    tracing::info!(addr = ?socket.local_addr(), room = %room_id, "VMC avatar motion over UDP");
    let mut buf = vec![0u8; MAX_PACKET_BYTES + 1];
    let hub = loop {
        match app.acquire(&room_id).await {
            Ok(hub) => break hub,
            Err(error) => {
                tracing::debug!(room = %room_id, error = %error.message, "VMC room not there yet")
            }
        }
        let retry = tokio::time::sleep(Duration::from_secs(1));
        tokio::pin!(retry);
        loop {
            tokio::select! {
                () = &mut retry => break,
                () = app.shutdown.cancelled() => return Ok(()),
                received = socket.recv_from(&mut buf) => if received.is_ok() { refused("no_room") },
            }
        }
    };
    let datagrams = futures_util::stream::unfold((socket, buf), |(socket, mut buf)| async move {
        loop {
            match socket.recv_from(&mut buf).await {
                Ok((n, _)) => return Some((Bytes::copy_from_slice(&buf[..n]), (socket, buf))),
                Err(error) => tracing::debug!(%error, "VMC socket read failed"),
            }
        }
    });
    let recorder = Recorder::of(&app, room_id);
    relay(Box::pin(datagrams), hub, recorder, app.shutdown.clone()).await;
    Ok(())
}

/// Where a room's relayed frames are kept for VOD, when this node keeps
/// them.
struct Recorder {
    log: Option<actors::MotionLog>,
    room_id: String,
}

impl Recorder {
    fn of(app: &AppState, room_id: String) -> Self {
        Self {
            log: app.motion.clone(),
            room_id,
        }
    }
}

/// Folds packets into poses and publishes frames at the relay rate (each
/// also recorded for VOD), until the source ends or the engine stops.
async fn relay(
    mut packets: impl Stream<Item = Bytes> + Unpin,
    hub: Arc<RoomHub>,
    recorder: Recorder,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut ingest = MotionIngest::new();
    loop {
        let wait = ingest
            .next_frame_ms()
            .map(|at| Duration::from_millis(at.saturating_sub(actors::now_ms())));
        tokio::select! {
            packet = packets.next() => {
                let Some(packet) = packet else { break };
                match ingest.packet(&packet) {
                    Ok(applied) => {
                        metrics::counter!("live_avatar_messages_total", "use" => "applied")
                            .increment(applied.used as u64);
                        metrics::counter!("live_avatar_messages_total", "use" => "ignored")
                            .increment(applied.ignored as u64);
                    }
                    Err(error) => refused(error.reason()),
                }
            }
            () = tokio::time::sleep(wait.unwrap_or_default()), if wait.is_some() => {}
            () = shutdown.cancelled() => break,
        }
        let now = actors::now_ms();
        if let Some(frame) = ingest.poll(now) {
            metrics::counter!("live_avatar_frames_total").increment(1);
            let frame = motion(frame, now);
            if let Some(log) = &recorder.log {
                log.append(&recorder.room_id, frame.clone());
            }
            hub.publish(Broadcast::new(Frame::AvatarMotion(frame), None));
        }
    }
}

fn refused(reason: &'static str) {
    metrics::counter!("live_avatar_packets_refused_total", "reason" => reason).increment(1);
}

fn motion(frame: PoseFrame, at_ms: u64) -> AvatarMotion {
    AvatarMotion {
        full: frame.full,
        root: frame.root.map(Vec::from).unwrap_or_default(),
        bones: frame
            .bones
            .into_iter()
            .map(|(name, transform)| AvatarBone {
                name,
                transform: transform.to_vec(),
            })
            .collect(),
        blendshapes: frame
            .blendshapes
            .into_iter()
            .map(|(name, value)| AvatarBlend { name, value })
            .collect(),
        at_ms,
    }
}
