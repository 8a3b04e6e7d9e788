//! One viewer or sender, whatever the server it loads: the engine's room
//! ([`crate::room`]) or a peer ([`crate::peers::nats_ws`]).
//!
//! A [`Protocol`] says only what differs from one server to another: how a
//! session is opened (a viewer subscribed), how a send is framed, what an
//! incoming message counts as. [`run`] is everything else, the same for
//! every server: report the connection outcome at once, follow the run's
//! [`Phase`], send on the sender's open-loop [`Plan`], count what arrives
//! into the session's own [`Tally`], close.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::time::Interval;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::scenario::{Phase, Shared};
use crate::sender::{Plan, danmaku_payload};
use crate::tally::Tally;
use crate::wire;

/// What one read from a session's socket returned.
pub type Incoming = Option<Result<Message, WsError>>;

/// Which session to open.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    /// The `n`th viewer the ramp opens (from 0).
    Viewer(u32),
    /// The sender of this plan.
    Sender(Plan),
}

/// How a run reaches one kind of server.
pub trait Protocol: Send + Sync + 'static {
    type Session: Session;
    /// Whether the server answers every send (the engine: the sender's own
    /// item back, or an `ack`). Then a run expects *accepted* sends ×
    /// viewers and its grace period waits for every answer; without, it
    /// expects *sent* × viewers.
    const ACKS: bool;
    /// The server as progress notes and errors name it; `None` for the
    /// engine.
    const PEER: Option<&'static str>;

    /// Opens a session of run `shared`: `Ok` only once the server has
    /// admitted it (a viewer subscribed), within `shared.connect_timeout`.
    fn open(
        &self,
        role: Role,
        shared: &Arc<Shared>,
    ) -> impl Future<Output = Result<Self::Session, String>> + Send + 'static;
}

/// One open connection of a [`Protocol`], counting for the run it was
/// opened for.
pub trait Session: Send + 'static {
    /// The socket [`run`] reads from.
    fn socket(&mut self) -> &mut wire::Ws;

    /// Counts what one read brought into `tally`. `Err`: the session is
    /// over, and why.
    fn on_read(
        &mut self,
        read: Incoming,
        tally: &mut Tally,
    ) -> impl Future<Output = Result<(), String>> + Send;

    /// Writes one danmaku ([`danmaku_payload`]) as the protocol frames a
    /// send. `Err`: the session is over, and why.
    fn send(&mut self, payload: String) -> impl Future<Output = Result<(), String>> + Send;
}

/// Runs one session: a viewer without a `plan`, a sender with one. The
/// connection outcome goes to `ready` as soon as it is known; the tally
/// comes back when the run stops, or when the server ends the session.
///
/// A sender's schedule is open-loop: the `n`th send is due at `start +
/// offset + n * period` whatever happened to the previous one, and late
/// ticks are sent at once (tokio's `Burst`), so a slow server cannot
/// quietly lower the rate it is offered.
pub async fn run<S: Session>(
    shared: Arc<Shared>,
    open: impl Future<Output = Result<S, String>>,
    plan: Option<Plan>,
    mut phase: watch::Receiver<Phase>,
    ready: mpsc::UnboundedSender<Result<(), String>>,
) -> Tally {
    let opened = open.await;
    let _ = ready.send(opened.as_ref().map(|_| ()).map_err(Clone::clone));
    drop(ready);
    let mut session = match opened {
        Ok(session) => session,
        Err(reason) => return Tally::failed(reason),
    };
    let (index, quota) = plan.map_or((0, 0), |p| (p.index, p.quota));
    let mut tally = Tally::default();
    let mut ticker: Option<Interval> = None;
    loop {
        tokio::select! {
            biased;
            changed = phase.changed() => {
                if changed.is_err() {
                    break;
                }
                match *phase.borrow_and_update() {
                    Phase::Connecting => {}
                    Phase::Sending { start } => {
                        ticker = plan.map(|p| tokio::time::interval_at(start + p.offset, p.period));
                    }
                    Phase::Draining => ticker = None,
                    Phase::Stopping => break,
                }
            }
            () = next_tick(&mut ticker), if tally.sent < quota => {
                let payload = danmaku_payload(&shared.run_tag, index, tally.sent, wire::unix_nanos());
                if let Err(reason) = session.send(payload).await {
                    tally.ended_early = Some(reason);
                    return tally;
                }
                tally.sent += 1;
                shared.progress.sent.fetch_add(1, Ordering::Relaxed);
            }
            read = session.socket().next() => {
                if let Err(reason) = session.on_read(read, &mut tally).await {
                    tally.ended_early = Some(reason);
                    return tally;
                }
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), session.socket().close(None)).await;
    tally
}

async fn next_tick(ticker: &mut Option<Interval>) {
    match ticker {
        Some(ticker) => {
            ticker.tick().await;
        }
        None => std::future::pending().await,
    }
}
