//! One connection to nats-server's WebSocket listener, and nats-server as
//! a [`Protocol`]: a viewer subscribes to the subject, a sender publishes
//! on it; every MSG payload is counted as an engine viewer counts a frame.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::protocol::{Event, Reader, hello, publish};
use crate::scenario::Shared;
use crate::session::{Incoming, Protocol, Role, Session};
use crate::tally::Tally;
use crate::{viewer, wire};

/// How long one write may take before the connection is given up: the
/// server's own write deadline.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

/// A transport error as a short, groupable reason; running out of file
/// descriptors says what to do about it, since at 10 000 viewers that is
/// the usual cause of failed connections.
fn describe(error: &WsError) -> String {
    match error {
        WsError::Io(io) if io.raw_os_error() == Some(EMFILE) => {
            "too many open files (EMFILE): raise `ulimit -n`".into()
        }
        WsError::Io(io) if io.raw_os_error() == Some(ENFILE) => {
            "system file table full (ENFILE)".into()
        }
        other => wire::describe(other),
    }
}

/// nats-server at `url`, every session on `subject`.
pub(super) struct Nats {
    pub(super) url: Arc<str>,
    pub(super) subject: Arc<str>,
}

impl Protocol for Nats {
    type Session = NatsSession;
    /// NATS acknowledges nothing.
    const ACKS: bool = false;
    const PEER: Option<&'static str> = Some("nats-server");

    fn open(
        &self,
        role: Role,
        shared: &Arc<Shared>,
    ) -> impl Future<Output = Result<NatsSession, String>> + Send + 'static {
        let subscribe = matches!(role, Role::Viewer(_));
        let (url, subject, shared) = (self.url.clone(), self.subject.clone(), shared.clone());
        async move {
            let subscription = subscribe.then_some(&*subject);
            let conn = Conn::open(&url, subscription, shared.connect_timeout).await?;
            Ok(NatsSession {
                conn,
                subject,
                shared,
            })
        }
    }
}

/// A viewer (subscribed to `subject`) or a sender (publishing on it).
pub(super) struct NatsSession {
    conn: Conn,
    subject: Arc<str>,
    shared: Arc<Shared>,
}

impl Session for NatsSession {
    fn socket(&mut self) -> &mut wire::Ws {
        &mut self.conn.ws
    }

    async fn on_read(&mut self, read: Incoming, tally: &mut Tally) -> Result<(), String> {
        let shared = &self.shared;
        self.conn
            .handle(read, &mut |event| on_event(tally, shared, event))
            .await
    }

    /// One `PUB <subject> <len>` with its payload, as one WebSocket message.
    async fn send(&mut self, payload: String) -> Result<(), String> {
        self.conn.write(publish(&self.subject, &payload)).await
    }
}

/// One connection: the handshake, reading items (and answering the
/// server's PINGs), writing.
struct Conn {
    ws: wire::Ws,
    reader: Reader,
}

impl Conn {
    /// Connects, waits for INFO, sends [`hello`] (with a SUB to
    /// `subscribe`, if any) and waits for its PONG: only then does the
    /// connection count as made.
    async fn open(url: &str, subscribe: Option<&str>, timeout: Duration) -> Result<Self, String> {
        let attempt = async {
            let (ws, _) =
                tokio_tungstenite::connect_async_with_config(url, Some(wire::config()), true)
                    .await
                    .map_err(|e| describe(&e))?;
            let mut conn = Self {
                ws,
                reader: Reader::default(),
            };
            conn.wait_for(|e| matches!(e, Event::Info)).await?;
            conn.write(hello(subscribe).into_bytes()).await?;
            conn.wait_for(|e| matches!(e, Event::Pong)).await?;
            Ok(conn)
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .unwrap_or_else(|_| Err("timeout".into()))
    }

    /// Reads until an item `wanted` says yes to; an `-ERR` first fails.
    /// Only for the handshake, where nothing else is expected.
    async fn wait_for(&mut self, wanted: fn(&Event<'_>) -> bool) -> Result<(), String> {
        loop {
            let message = self.ws.next().await;
            let (mut seen, mut refused) = (false, None);
            self.handle(message, &mut |event| {
                if let Event::Err(text) = &event {
                    refused = Some(format!("-ERR {text}"));
                }
                seen |= wanted(&event);
            })
            .await?;
            if let Some(reason) = refused {
                return Err(reason);
            }
            if seen {
                return Ok(());
            }
        }
    }

    /// Feeds one read from the socket to the parser: items go to `on`,
    /// server PINGs are answered (or the server closes the connection).
    /// `Err`: the connection is over, and why.
    async fn handle(
        &mut self,
        message: Incoming,
        on: &mut impl FnMut(Event<'_>),
    ) -> Result<(), String> {
        let data: &[u8] = match &message {
            Some(Ok(Message::Binary(bytes))) => bytes,
            Some(Ok(Message::Text(text))) => text.as_bytes(),
            Some(Ok(Message::Close(frame))) => return Err(wire::close_reason(frame.as_ref())),
            Some(Ok(_)) => return Ok(()),
            Some(Err(error)) => return Err(describe(error)),
            None => return Err("connection closed".into()),
        };
        let mut pings = 0;
        self.reader
            .feed(data, &mut |event| match event {
                Event::Ping => pings += 1,
                other => on(other),
            })
            .map_err(|e| format!("protocol: {e}"))?;
        if pings > 0 {
            self.write("PONG\r\n".repeat(pings).into_bytes()).await?;
        }
        Ok(())
    }

    async fn write(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        match tokio::time::timeout(SEND_TIMEOUT, self.ws.send(Message::Binary(bytes.into()))).await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(describe(&error)),
            Err(_) => Err("write timed out".into()),
        }
    }
}

/// Counts one item for a viewer or sender: a MSG's payload is read exactly
/// as an engine viewer reads a frame ([`viewer::on_text`]: delivery,
/// latency, progress); `-ERR`s are counted by text.
fn on_event(tally: &mut Tally, shared: &Shared, event: Event<'_>) {
    match event {
        Event::Msg(payload) => match std::str::from_utf8(payload) {
            Ok(text) => viewer::on_text(tally, shared, text),
            Err(_) => {
                tally.frames += 1;
                tally.undecodable += 1;
            }
        },
        Event::Err(text) => tally.count_error(text),
        Event::Info | Event::Ping | Event::Pong | Event::Ok => {}
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::sender::danmaku_payload;

    #[test]
    fn a_msg_is_timed_as_an_engine_viewer_times_a_frame() {
        let sent = wire::unix_nanos() - 3_000_000;
        let payload = danmaku_payload("r1", 4, 17, sent);
        let shared = Shared::new("r1".into(), Duration::from_secs(1));
        let mut tally = Tally::default();
        on_event(&mut tally, &shared, Event::Msg(payload.as_bytes()));
        on_event(&mut tally, &shared, Event::Err("Slow Consumer"));
        assert_eq!(tally.deliveries, 1);
        assert!(tally.latency.min() >= 2_900);
        assert_eq!(tally.errors["Slow Consumer"], 1);
        assert_eq!(shared.progress.delivered.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn running_out_of_descriptors_says_so() {
        let error = WsError::Io(std::io::Error::from_raw_os_error(EMFILE));
        assert!(describe(&error).contains("ulimit -n"));
    }
}
