//! nats-server over its WebSocket listener as the danmaku fan-out peer: the
//! same N WebSocket viewers, M senders, total rate and payload as the
//! engine's `danmaku` scenario, run by the same code
//! ([`crate::scenario::fan_out`]), so that the two reports can be set side
//! by side.
//!
//! What is the same as the engine run: everything but the wire. The
//! payload (byte for byte the JSON an engine sender writes,
//! [`crate::sender::danmaku_payload`]), the open-loop schedule
//! ([`crate::sender::Plan`], senders on a runtime of their own), the
//! per-task [`crate::tally::Tally`] (no lock per message, merged once),
//! latency from the send time carried in `client_msg_id`, the phases
//! (ramp, settle, send, grace, close) and the server's CPU and RSS from
//! /proc.
//!
//! What differs, because NATS is not a chat room: a viewer is "connected"
//! once the server has answered the PING sent after its SUB (NATS handles a
//! connection's protocol in order, so the subscription is in place); there
//! is no per-send ack, so `expected` is *sent* × connected viewers (the
//! engine's is *accepted* × viewers); a slow consumer is disconnected by the
//! server, which shows as a viewer that ended early plus the messages it
//! missed, i.e. loss, exactly as the engine's 1013 closes count.
//!
//! The client speaks the NATS text protocol itself (`protocol`: CONNECT,
//! SUB, PUB, PING/PONG; INFO, MSG, +OK, -ERR parsed) over
//! tokio-tungstenite (`conn`): a client library would add its own
//! buffering and reconnect logic, which is not what is being compared.
//! `report` is what a run reports.

mod conn;
mod protocol;
mod report;

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;

pub use self::report::NatsFanoutReport;
use crate::cli::{MAX_SENDERS, MAX_VIEWERS};
use crate::proc_stats::ProcReader;
use crate::scenario::{Load, fan_out, note};
use crate::wire;

// ---------------------------------------------------------------------------
// Server configuration
// ---------------------------------------------------------------------------

/// The engine's largest WebSocket message (`GatewayConfig::max_message_bytes`),
/// so both servers refuse the same oversized sends.
pub const DEFAULT_MAX_PAYLOAD: u32 = 16 * 1024;
/// nats-server's default is 64 Ki connections; a run may open
/// [`MAX_VIEWERS`] + [`MAX_SENDERS`], so the limit is set above that and
/// the fd limit (`ulimit -n`, inherited from the runner) is what binds.
const MAX_CONNECTIONS: u32 = MAX_VIEWERS + MAX_SENDERS + 1_000;
/// Bytes the server may hold for one client before it calls it a slow
/// consumer and disconnects it (default 64 MiB). The engine closes a
/// session that falls 1024 broadcast frames behind; a danmaku MSG is
/// ~200 bytes, so 1 MiB lets a NATS viewer fall a few thousand messages
/// behind: a little more slack than the engine gets, never less. It also
/// bounds the server's memory at 10 000 stalled viewers to ~10 GiB instead
/// of 640 GiB.
const MAX_PENDING: u32 = 1024 * 1024;
/// A write to a client that does not finish in this time makes it a slow
/// consumer: the engine's `write_timeout` (10 s).
const WRITE_DEADLINE: &str = "10s";
/// Server PINGs (answered by every connection here), like the engine's
/// 20 s keepalive; two unanswered ones close the connection.
const PING_INTERVAL: &str = "20s";

/// A nats-server configuration: clients on 127.0.0.1:`client_port` (unused
/// by the benchmark, but nats-server always listens for plain clients),
/// WebSocket without TLS or compression on 127.0.0.1:`ws_port`, no
/// JetStream (fan-out only, nothing stored, as the engine's hot path), and
/// the limits above. `max_payload` defaults to [`DEFAULT_MAX_PAYLOAD`].
pub fn config(ws_port: u16, client_port: u16, max_payload: Option<u32>) -> String {
    let max_payload = max_payload.unwrap_or(DEFAULT_MAX_PAYLOAD);
    // nats-server refuses a max_payload above max_pending.
    let max_pending = MAX_PENDING.max(max_payload);
    format!(
        "# Written by load-tests (load-tests/src/peers/nats_ws/mod.rs).\n\
         listen: 127.0.0.1:{client_port}\n\
         max_connections: {MAX_CONNECTIONS}\n\
         max_payload: {max_payload}\n\
         max_pending: {max_pending}\n\
         write_deadline: \"{WRITE_DEADLINE}\"\n\
         ping_interval: \"{PING_INTERVAL}\"\n\
         ping_max: 2\n\
         websocket {{\n\
         \x20 listen: \"127.0.0.1:{ws_port}\"\n\
         \x20 no_tls: true\n\
         \x20 compression: false\n\
         \x20 handshake_timeout: \"10s\"\n\
         }}\n"
    )
}

// ---------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------

/// One NATS fan-out run.
#[derive(Debug, Clone)]
pub struct NatsFanoutArgs {
    /// `ws://127.0.0.1:<ws_port>`.
    pub ws_url: String,
    /// Subject every viewer subscribes to and every sender publishes on.
    pub subject: String,
    pub viewers: u32,
    pub senders: u32,
    /// Messages per second, in total across all senders.
    pub rate: u32,
    pub duration: Duration,
    pub grace: Duration,
    /// Connections opened per second while ramping up.
    pub ramp: u32,
    pub connect_timeout: Duration,
    /// nats-server's pid, to sample its CPU and RSS.
    pub server_pid: Option<u32>,
}

/// NATS subjects have no hard limit; this keeps a typo from becoming a
/// control line the server refuses.
const MAX_SUBJECT: usize = 256;

impl NatsFanoutArgs {
    /// The bounds the engine scenario's flags enforce ([`Load::validate`]),
    /// and a subject one can publish to (no wildcards, no whitespace).
    pub fn validate(&self) -> anyhow::Result<()> {
        self.load().validate()?;
        if !(self.ws_url.starts_with("ws://") || self.ws_url.starts_with("wss://")) {
            bail!("the NATS URL must start with ws:// (or wss://)");
        }
        let subject_ok = !self.subject.is_empty()
            && self.subject.len() <= MAX_SUBJECT
            && self.subject.split('.').all(|token| !token.is_empty())
            && self
                .subject
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'*' && b != b'>');
        if !subject_ok {
            bail!(
                "the subject must be 1 to {MAX_SUBJECT} printable characters, dot-separated, without wildcards"
            );
        }
        Ok(())
    }

    /// Messages the senders are scheduled to send in total.
    pub fn planned_sends(&self) -> u64 {
        self.load().planned_sends()
    }

    /// The fan-out these arguments ask for.
    pub fn load(&self) -> Load {
        Load {
            viewers: self.viewers,
            senders: self.senders,
            rate: self.rate,
            ramp: self.ramp,
            duration: self.duration,
            grace: self.grace,
            connect_timeout: self.connect_timeout,
        }
    }
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

/// One run against a running nats-server: ramp → settle → send → grace →
/// close ([`fan_out`]). Failed connections are counted, not fatal; the run
/// fails only if no viewer or no sender could connect.
pub async fn run(args: &NatsFanoutArgs) -> anyhow::Result<NatsFanoutReport> {
    args.validate()?;
    let server = args.server_pid.map(ProcReader::new).transpose()?;
    let load = args.load();
    let run_tag = wire::run_tag();
    note(&format!(
        "nats {} subject {}, run {run_tag}: {load}",
        args.ws_url, args.subject
    ));
    let nats = conn::Nats {
        url: Arc::from(args.ws_url.as_str()),
        subject: Arc::from(args.subject.as_str()),
    };
    let (measured, ()) = fan_out(nats, &load, run_tag, server, async || ()).await?;
    Ok(NatsFanoutReport::new(args, &load, measured))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{MAX_GRACE, MAX_RATE};

    #[test]
    fn the_config_has_the_listeners_and_limits() {
        let text = config(8443, 4333, None);
        assert!(text.contains("listen: 127.0.0.1:4333\n"));
        assert!(text.contains("listen: \"127.0.0.1:8443\""));
        assert!(text.contains("no_tls: true"));
        assert!(text.contains("max_payload: 16384\n"));
        assert!(text.contains(&format!("max_connections: {MAX_CONNECTIONS}\n")));
        assert!(!text.contains("jetstream"));
        assert!(config(1, 2, Some(4 << 20)).contains("max_pending: 4194304\n"));
    }

    pub(super) fn args() -> NatsFanoutArgs {
        NatsFanoutArgs {
            ws_url: "ws://127.0.0.1:1".into(),
            subject: "live.bench".into(),
            viewers: 10,
            senders: 2,
            rate: 100,
            duration: Duration::from_secs(3),
            grace: Duration::from_secs(3),
            ramp: 1000,
            connect_timeout: Duration::from_secs(5),
            server_pid: None,
        }
    }

    #[test]
    fn bounds_are_enforced() {
        args().validate().unwrap();
        assert_eq!(args().planned_sends(), 300);
        let bad = [
            NatsFanoutArgs {
                viewers: MAX_VIEWERS + 1,
                ..args()
            },
            NatsFanoutArgs {
                senders: 0,
                ..args()
            },
            NatsFanoutArgs {
                rate: MAX_RATE + 1,
                ..args()
            },
            NatsFanoutArgs {
                duration: Duration::ZERO,
                ..args()
            },
            NatsFanoutArgs {
                grace: MAX_GRACE * 2,
                ..args()
            },
            NatsFanoutArgs {
                subject: "a.*".into(),
                ..args()
            },
            NatsFanoutArgs {
                subject: "a b".into(),
                ..args()
            },
            NatsFanoutArgs {
                subject: "a..b".into(),
                ..args()
            },
            NatsFanoutArgs {
                ws_url: "http://x".into(),
                ..args()
            },
        ];
        for a in bad {
            assert!(a.validate().is_err(), "{a:?}");
        }
    }
}
