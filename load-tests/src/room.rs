//! The engine's room as a [`Protocol`]: every viewer and sender opens the
//! room's WebSocket with its token and counts as connected at its
//! `welcome` ([`wire::open`]); a send is a danmaku client frame as JSON
//! text; a viewer counts what arrives with [`viewer::on_text`], a sender
//! the answers to its own sends with [`sender::on_text`].

use std::future::Future;
use std::sync::Arc;

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use crate::scenario::Shared;
use crate::sender;
use crate::session::{Incoming, Protocol, Role, Session};
use crate::tally::Tally;
use crate::{viewer, wire};

/// One room's URLs, one per token.
pub struct Room {
    /// Viewer `i` opens `viewers[i % len]` (one shared token, or one each).
    viewers: Vec<Arc<str>>,
    /// Sender `i` opens `senders[i]`.
    senders: Vec<Arc<str>>,
}

impl Room {
    /// `room` on the engine at `base` (its `http://` URL).
    pub fn new(base: &str, room: &str, viewer_tokens: &[String], sender_tokens: &[String]) -> Self {
        let urls = |tokens: &[String]| {
            tokens
                .iter()
                .map(|token| Arc::from(wire::room_url(base, room, token)))
                .collect()
        };
        Self {
            viewers: urls(viewer_tokens),
            senders: urls(sender_tokens),
        }
    }
}

/// One session in the room.
pub struct RoomSession {
    ws: wire::Ws,
    /// A sender's [`wire::sender_prefix`]; `None` for a viewer.
    own_prefix: Option<String>,
    shared: Arc<Shared>,
}

impl Protocol for Room {
    type Session = RoomSession;
    const ACKS: bool = true;
    const PEER: Option<&'static str> = None;

    fn open(
        &self,
        role: Role,
        shared: &Arc<Shared>,
    ) -> impl Future<Output = Result<RoomSession, String>> + Send + 'static {
        let (url, own_prefix) = match role {
            Role::Viewer(n) => (&self.viewers[n as usize % self.viewers.len()], None),
            Role::Sender(plan) => (
                &self.senders[plan.index as usize],
                Some(wire::sender_prefix(&shared.run_tag, plan.index)),
            ),
        };
        let (url, shared) = (url.clone(), shared.clone());
        async move {
            let ws = wire::open(&url, shared.connect_timeout).await?;
            Ok(RoomSession {
                ws,
                own_prefix,
                shared,
            })
        }
    }
}

impl Session for RoomSession {
    fn socket(&mut self) -> &mut wire::Ws {
        &mut self.ws
    }

    async fn on_read(&mut self, read: Incoming, tally: &mut Tally) -> Result<(), String> {
        match wire::read(&read) {
            wire::Read::Text(text) => match &self.own_prefix {
                Some(prefix) => sender::on_text(tally, &self.shared, prefix, text),
                None => viewer::on_text(tally, &self.shared, text),
            },
            wire::Read::Other => {}
            wire::Read::Ended(reason) => return Err(reason),
        }
        Ok(())
    }

    async fn send(&mut self, payload: String) -> Result<(), String> {
        self.ws
            .send(Message::Text(payload.into()))
            .await
            .map_err(|error| wire::describe(&error))
    }
}
