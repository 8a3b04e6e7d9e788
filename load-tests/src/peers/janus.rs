//! Janus 1.1 (the Debian `janus` package) as the comparison's other SFU:
//! a private configuration that loads only what the comparison uses
//! ([`write_config`], [`launch_args`]), and [`JanusViewer`]s that watch
//! its streaming mountpoint with the same webrtc-rs [`Subscriber`] that
//! watches the engine over WHEP, so both sides are counted alike.
//!
//! Janus runs in its own network namespace (see [`super::netns`]): it
//! gathers no loopback candidates, so its HTTP API, its ICE candidates and
//! the mountpoint's RTP ports all sit on the namespace's veth address, and
//! the viewers bind the runner's end of the pair. The mountpoint is fed
//! plain RTP by ffmpeg ([`super::rtp_feed`]).
//!
//! Signalling is Janus's REST API, as its docs describe: create a session,
//! attach the streaming plugin, `watch` (Janus offers), `start` with the
//! viewer's answer; events arrive by long-polling the session.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::netns::Namespace;
use super::process::{Launch, Server};
use super::rtp_feed::{AUDIO_PAYLOAD_TYPE, VIDEO_PAYLOAD_TYPE};
use crate::rtc::{Subscriber, SubscriberStats};

/// Where the Debian package keeps Janus's plugins and transports.
const SYSTEM_PLUGINS: &str = "/usr/lib/x86_64-linux-gnu/janus/plugins";
const SYSTEM_TRANSPORTS: &str = "/usr/lib/x86_64-linux-gnu/janus/transports";

/// The one plugin and the one transport the comparison uses. Janus loads
/// every library in its folders, so the private folders link only these:
/// no other plugin's threads or ports take part in the measurement.
const STREAMING_PLUGIN: &str = "libjanus_streaming.so";
const HTTP_TRANSPORT: &str = "libjanus_http.so";

/// The mountpoint every viewer watches.
pub const MOUNTPOINT_ID: u64 = 1;

/// Seconds without a request after which Janus drops a session. Viewers
/// keep theirs alive by long-polling; this only has to outlast a stall.
const SESSION_TIMEOUT_S: u32 = 120;

/// Janus answers a long poll with a keepalive after 30 s of no events;
/// a poll that takes longer than this has lost Janus.
const LONG_POLL_LIMIT: Duration = Duration::from_secs(35);
/// How long a viewer waits for Janus's offer after `watch`.
const OFFER_WAIT: Duration = Duration::from_secs(15);
/// Any other request (create, attach, message, destroy).
const REQUEST_LIMIT: Duration = Duration::from_secs(10);

/// One Janus instance's configuration: where its files go and the
/// addresses it uses.
#[derive(Debug, Clone)]
pub struct JanusSetup {
    /// A private folder for the configuration tree (written by
    /// [`write_config`]).
    pub dir: PathBuf,
    /// The HTTP API's address, the namespace's address: Janus's ICE
    /// candidates and the mountpoint's RTP ports use the same IP.
    pub http: SocketAddr,
    /// Where the feed sends VP8 and Opus RTP.
    pub video_port: u16,
    pub audio_port: u16,
    /// Janus's ports for viewers' WebRTC media (min, max). Every viewer
    /// takes one (each handle has its own ICE agent and socket, ICE lite
    /// or not): size the range for the number of viewers.
    pub rtp_port_range: (u16, u16),
}

impl JanusSetup {
    /// The API's base URL, `http://ip:port` (viewers add `/janus`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.http)
    }
}

/// Writes Janus's configuration tree into `setup.dir`: `janus.jcfg`, the
/// HTTP transport's and the streaming plugin's configuration, and
/// `plugins/` and `transports/` holding links to the one plugin and the
/// one transport used.
pub fn write_config(setup: &JanusSetup) -> anyhow::Result<()> {
    let dir = &setup.dir;
    link_only(&dir.join("plugins"), SYSTEM_PLUGINS, STREAMING_PLUGIN)?;
    link_only(&dir.join("transports"), SYSTEM_TRANSPORTS, HTTP_TRANSPORT)?;
    // Event handlers and loggers: none (empty folders, so Janus finds
    // nothing to load rather than the system's).
    for folder in ["events", "loggers"] {
        std::fs::create_dir_all(dir.join(folder))
            .with_context(|| format!("cannot create {}", dir.join(folder).display()))?;
    }
    for (name, text) in [
        ("janus.jcfg", core_config(setup)),
        ("janus.transport.http.jcfg", http_config(setup)),
        ("janus.plugin.streaming.jcfg", streaming_config(setup)),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Writes `setup`'s configuration and starts Janus in `namespace`, pinned
/// to `cpus`, logging into `setup.dir`; returns once its HTTP API answers.
pub async fn start(
    setup: &JanusSetup,
    namespace: &Namespace,
    cpus: Option<&str>,
) -> anyhow::Result<Server> {
    write_config(setup)?;
    let mut server = Server::spawn(Launch {
        name: "janus",
        program: "janus",
        args: launch_args(setup),
        env: vec![],
        cpus,
        namespace: Some(namespace),
        log_dir: &setup.dir,
        profile: true,
    })?;
    let info = format!("{}/janus/info", setup.base_url());
    let http = reqwest::Client::new();
    server
        .wait_ready(Duration::from_secs(20), || {
            let request = http.get(&info).timeout(Duration::from_secs(1)).send();
            async move { request.await.is_ok_and(|r| r.status().is_success()) }
        })
        .await?;
    Ok(server)
}

/// Janus's command line for `setup`: its configuration and folder, logging
/// to stdout (the server's log file) without colour codes.
pub fn launch_args(setup: &JanusSetup) -> Vec<String> {
    vec![
        "-C".into(),
        setup.dir.join("janus.jcfg").display().to_string(),
        "-F".into(),
        setup.dir.display().to_string(),
        "--disable-colors".into(),
    ]
}

/// Makes `folder` hold exactly one link, to `system/library`.
fn link_only(folder: &Path, system: &str, library: &str) -> anyhow::Result<()> {
    if folder.exists() {
        std::fs::remove_dir_all(folder)
            .with_context(|| format!("cannot clear {}", folder.display()))?;
    }
    std::fs::create_dir_all(folder)
        .with_context(|| format!("cannot create {}", folder.display()))?;
    let target = Path::new(system).join(library);
    if !target.exists() {
        bail!(
            "{} is missing (the comparison needs the `janus` package)",
            target.display()
        );
    }
    std::os::unix::fs::symlink(&target, folder.join(library))
        .with_context(|| format!("cannot link {} into {}", target.display(), folder.display()))
}

/// The core: private folders, log level 4 (startup, sessions and ICE
/// progress; no per-packet lines), no admin secret, no STUN or TURN.
///
/// `nat`: ICE lite, as the engine runs it, so both SFUs answer
/// connectivity checks rather than make their own; candidates only on
/// the namespace's address (the only one a viewer can reach).
fn core_config(setup: &JanusSetup) -> String {
    let dir = setup.dir.display();
    let ip = setup.http.ip();
    let (first_port, last_port) = setup.rtp_port_range;
    format!(
        r#"general: {{
	configs_folder = "{dir}"
	plugins_folder = "{dir}/plugins"
	transports_folder = "{dir}/transports"
	events_folder = "{dir}/events"
	loggers_folder = "{dir}/loggers"
	log_to_stdout = true
	debug_level = 4
	debug_colors = false
	interface = "{ip}"
	server_name = "load-tests"
	session_timeout = {SESSION_TIMEOUT_S}
}}
media: {{
	rtp_port_range = "{first_port}-{last_port}"
}}
nat: {{
	nice_debug = false
	ice_lite = true
	ice_enforce_list = "{ip}"
}}
events: {{
	broadcast = false
}}
"#
    )
}

/// Plain HTTP on the setup's address, API under `/janus`, no admin API.
fn http_config(setup: &JanusSetup) -> String {
    let ip = setup.http.ip();
    let port = setup.http.port();
    format!(
        r#"general: {{
	json = "compact"
	base_path = "/janus"
	http = true
	ip = "{ip}"
	port = {port}
	https = false
}}
admin: {{
	admin_http = false
	admin_https = false
}}
"#
    )
}

/// One RTP mountpoint, [`MOUNTPOINT_ID`] "bench": VP8 and Opus received
/// on the namespace's address, in Janus 1.x's multistream form (one
/// `media` entry per m-line the viewers get).
///
/// `bufferkf`: Janus keeps the latest keyframe and sends it to each new
/// viewer first. The engine starts every viewer on a keyframe (it asks the
/// publisher for one); Janus cannot ask an RTP feed, and without this it
/// relays from wherever the stream is, so a viewer that joins mid-GOP
/// gets frames it cannot decode until the next keyframe.
fn streaming_config(setup: &JanusSetup) -> String {
    let ip = setup.http.ip();
    let (video, audio) = (setup.video_port, setup.audio_port);
    format!(
        r#"general: {{
	events = false
}}
bench: {{
	type = "rtp"
	id = {MOUNTPOINT_ID}
	description = "load-tests feed"
	media = (
		{{ type = "video"; mid = "v"; port = {video}; pt = {VIDEO_PAYLOAD_TYPE}; codec = "vp8"; bufferkf = true; iface = "{ip}" }},
		{{ type = "audio"; mid = "a"; port = {audio}; pt = {AUDIO_PAYLOAD_TYPE}; codec = "opus"; iface = "{ip}" }}
	)
}}
"#
    )
}

/// Janus's answer to a request when it is an error (`"janus": "error"`
/// or a plugin's `error`): its code and reason.
#[derive(Debug, thiserror::Error)]
#[error("Janus error {code}: {reason}")]
pub struct JanusError {
    pub code: i64,
    pub reason: String,
}

/// Janus's code for a session it does not know (destroyed or timed out).
const NO_SUCH_SESSION: i64 = 458;

/// Janus's REST API at one base URL.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    /// `http://ip:port`
    base: String,
}

impl Api {
    /// POSTs `request` (a transaction id added) to `/janus{path}` and
    /// returns Janus's reply: `success` or `ack`.
    async fn post(&self, path: &str, mut request: Value) -> anyhow::Result<Value> {
        request["transaction"] = json!(transaction());
        let what = request["janus"].as_str().unwrap_or("?").to_owned();
        let request_line = format!("Janus {what} (POST /janus{path})");
        let response = self
            .http
            .post(format!("{}/janus{path}", self.base))
            .timeout(REQUEST_LIMIT)
            .json(&request)
            .send()
            .await
            .context(request_line.clone())?;
        let reply = json_reply(response).await.context(request_line.clone())?;
        match reply["janus"].as_str() {
            Some("success" | "ack") => Ok(reply),
            _ => Err(refusal(&reply).context(request_line)),
        }
    }

    /// One long poll of `session`: the events Janus had, none when it
    /// answered with a keepalive.
    async fn poll(&self, session: u64) -> anyhow::Result<Vec<Value>> {
        let response = self
            .http
            .get(format!("{}/janus/{session}?maxev=1", self.base))
            .timeout(LONG_POLL_LIMIT)
            .send()
            .await
            .context("Janus long poll")?;
        let reply = json_reply(response).await.context("Janus long poll")?;
        // One event comes as an object, several (maxev > 1) as an array.
        let events = match reply {
            Value::Array(events) => events,
            event => vec![event],
        };
        let mut kept = Vec::new();
        for event in events {
            match event["janus"].as_str() {
                Some("keepalive") => {}
                Some("error") => return Err(refusal(&event).context("Janus long poll")),
                _ => kept.push(event),
            }
        }
        Ok(kept)
    }
}

/// A reply's JSON; when it is not JSON, an error with the HTTP status and
/// what Janus sent instead.
async fn json_reply(response: reqwest::Response) -> anyhow::Result<Value> {
    let status = response.status();
    let body = response.text().await.context("reading Janus's reply")?;
    serde_json::from_str(&body).with_context(|| {
        let excerpt: String = body.chars().take(200).collect();
        format!("Janus answered {status} with something not JSON: {excerpt}")
    })
}

/// A reply that is not the success expected: the error Janus gave, or the
/// whole reply when it names none.
fn refusal(reply: &Value) -> anyhow::Error {
    match janus_error(reply) {
        Some(error) => error.into(),
        None => anyhow::anyhow!("unexpected reply from Janus: {reply}"),
    }
}

/// The error in a Janus reply or plugin event, if it carries one.
fn janus_error(reply: &Value) -> Option<JanusError> {
    if let Some(error) = reply.get("error") {
        return Some(JanusError {
            code: error["code"].as_i64().unwrap_or(0),
            reason: error["reason"].as_str().unwrap_or("").to_owned(),
        });
    }
    let data = &reply["plugindata"]["data"];
    data.get("error").map(|reason| JanusError {
        code: data["error_code"].as_i64().unwrap_or(0),
        reason: reason
            .as_str()
            .map_or_else(|| reason.to_string(), str::to_owned),
    })
}

/// A transaction id unique within this process.
fn transaction() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("lt{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The `id` in a `success` reply (a new session's or handle's).
fn created_id(reply: &Value) -> anyhow::Result<u64> {
    reply["data"]["id"]
        .as_u64()
        .with_context(|| format!("no id in Janus's reply {reply}"))
}

/// One viewer of a Janus streaming mountpoint: a Janus session with the
/// streaming plugin attached, and a webrtc-rs [`Subscriber`] receiving
/// what the mountpoint relays. A task long-polls the session for as long
/// as the viewer lives, which both keeps the session from timing out and
/// collects Janus's events (a hangup, say).
pub struct JanusViewer {
    api: Api,
    session: u64,
    subscriber: Subscriber,
    hangup: Arc<Mutex<Option<String>>>,
    poll: PollTask,
}

/// The session's long-poll task, stopped when dropped.
struct PollTask(JoinHandle<()>);

impl Drop for PollTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl JanusViewer {
    /// Starts watching `mountpoint` on the Janus at `base`
    /// (`http://ip:port`): session, handle, `watch`, Janus's offer
    /// answered, `start`. Returns once Janus has acknowledged `start`;
    /// media follows. `decode` as for [`Subscriber::start`]. The viewer's
    /// connection binds the local address the kernel routes toward Janus.
    pub async fn join(
        http: &reqwest::Client,
        base: &str,
        mountpoint: u64,
        decode: bool,
    ) -> anyhow::Result<JanusViewer> {
        let api = Api {
            http: http.clone(),
            base: base.trim_end_matches('/').to_owned(),
        };
        let bind = crate::rtc::local_address_toward(&api.base).await?;
        let session = created_id(&api.post("", json!({ "janus": "create" })).await?)?;
        // From here on, a failure destroys the session it made.
        match Self::watch(&api, session, mountpoint, bind, decode).await {
            Ok((subscriber, handle)) => {
                let hangup = Arc::new(Mutex::new(None));
                let poll = PollTask(tokio::spawn(keep_polling(
                    api.clone(),
                    session,
                    handle,
                    hangup.clone(),
                )));
                Ok(JanusViewer {
                    api,
                    session,
                    subscriber,
                    hangup,
                    poll,
                })
            }
            Err(error) => {
                destroy(&api, session).await;
                Err(error)
            }
        }
    }

    /// Attach, `watch`, answer Janus's offer, `start`; returns the
    /// subscriber and the plugin handle.
    async fn watch(
        api: &Api,
        session: u64,
        mountpoint: u64,
        bind: IpAddr,
        decode: bool,
    ) -> anyhow::Result<(Subscriber, u64)> {
        let attach = json!({ "janus": "attach", "plugin": "janus.plugin.streaming" });
        let handle = created_id(&api.post(&format!("/{session}"), attach).await?)?;
        let handle_path = format!("/{session}/{handle}");
        let watch = json!({
            "janus": "message",
            "body": { "request": "watch", "id": mountpoint },
        });
        api.post(&handle_path, watch).await?;
        let offer = tokio::time::timeout(OFFER_WAIT, wait_for_offer(api, session, handle))
            .await
            .map_err(|_| {
                anyhow::anyhow!("Janus sent no offer within {OFFER_WAIT:?} of `watch`")
            })??;
        let (subscriber, answer) = Subscriber::answer(&offer, bind, decode).await?;
        // The answer carries every candidate: no trickle to follow.
        let start = json!({
            "janus": "message",
            "body": { "request": "start" },
            "jsep": { "type": "answer", "sdp": answer, "trickle": false },
        });
        if let Err(error) = api.post(&handle_path, start).await {
            subscriber.close().await;
            return Err(error);
        }
        Ok((subscriber, handle))
    }

    pub fn stats(&self) -> &Arc<SubscriberStats> {
        self.subscriber.stats()
    }

    /// Why Janus hung up on this viewer, if it did (its `hangup` event's
    /// reason: ICE failed, DTLS alert, ...).
    pub fn hangup_reason(&self) -> Option<String> {
        self.hangup.lock().unwrap().clone()
    }

    /// Stops polling, destroys the Janus session (best effort, bounded)
    /// and closes the peer connection.
    pub async fn close(self) {
        drop(self.poll);
        destroy(&self.api, self.session).await;
        self.subscriber.close().await;
    }
}

/// Long-polls until Janus's event for `handle` carries an offer, and
/// returns its SDP; a plugin error or a hangup ends the wait with what
/// Janus said.
async fn wait_for_offer(api: &Api, session: u64, handle: u64) -> anyhow::Result<String> {
    loop {
        for event in api.poll(session).await? {
            if event["sender"].as_u64() != Some(handle) {
                continue;
            }
            if let Some(error) = janus_error(&event) {
                return Err(anyhow::Error::new(error).context("Janus refused `watch`"));
            }
            match event["janus"].as_str() {
                Some("hangup" | "detached") => bail!("Janus ended the handle: {event}"),
                Some("event") => {}
                _ => continue,
            }
            let jsep = &event["jsep"];
            if jsep.is_null() {
                continue;
            }
            if jsep["type"] != "offer" {
                bail!("Janus sent a {} instead of an offer: {event}", jsep["type"]);
            }
            return jsep["sdp"]
                .as_str()
                .map(str::to_owned)
                .with_context(|| format!("Janus's offer has no SDP: {event}"));
        }
    }
}

/// The viewer's background long poll: keeps the session alive and notes
/// a hangup; ends when the session is gone. A failed poll (Janus busy or
/// restarting) is retried after a pause rather than ending the session.
async fn keep_polling(api: Api, session: u64, handle: u64, hangup: Arc<Mutex<Option<String>>>) {
    loop {
        match api.poll(session).await {
            Ok(events) => {
                for event in events {
                    if event["janus"] == "hangup" && event["sender"].as_u64() == Some(handle) {
                        let reason = event["reason"].as_str().unwrap_or("no reason given");
                        *hangup.lock().unwrap() = Some(reason.to_owned());
                    }
                }
            }
            Err(error) => {
                let gone = error
                    .downcast_ref::<JanusError>()
                    .is_some_and(|e| e.code == NO_SUCH_SESSION);
                if gone {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Destroys a session; best effort (Janus drops it on timeout anyway).
async fn destroy(api: &Api, session: u64) {
    let _ = api
        .post(&format!("/{session}"), json!({ "janus": "destroy" }))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> JanusSetup {
        JanusSetup {
            dir: PathBuf::from("/tmp/janus-x"),
            http: "10.77.9.2:8088".parse().unwrap(),
            video_port: 5004,
            audio_port: 5002,
            rtp_port_range: (20000, 20100),
        }
    }

    #[test]
    fn configuration_uses_the_namespace_address_everywhere() {
        let setup = setup();
        assert!(core_config(&setup).contains(r#"ice_enforce_list = "10.77.9.2""#));
        assert!(core_config(&setup).contains(r#"rtp_port_range = "20000-20100""#));
        assert!(core_config(&setup).contains(r#"plugins_folder = "/tmp/janus-x/plugins""#));
        assert!(http_config(&setup).contains(r#"ip = "10.77.9.2""#));
        assert!(http_config(&setup).contains("port = 8088"));
        let streaming = streaming_config(&setup);
        assert!(streaming.contains(
            r#"port = 5004; pt = 96; codec = "vp8"; bufferkf = true; iface = "10.77.9.2""#
        ));
        assert!(streaming.contains(r#"port = 5002; pt = 111; codec = "opus""#));
    }

    #[test]
    fn errors_are_read_from_core_and_plugin_replies() {
        let core = json!({"janus": "error", "error": {"code": 458, "reason": "No such session"}});
        assert_eq!(janus_error(&core).unwrap().code, NO_SUCH_SESSION);
        let plugin = json!({"janus": "event", "plugindata": {"plugin": "janus.plugin.streaming",
            "data": {"error_code": 455, "error": "No such mountpoint/stream 9"}}});
        let error = janus_error(&plugin).unwrap();
        assert_eq!(
            (error.code, error.reason.as_str()),
            (455, "No such mountpoint/stream 9")
        );
        assert!(janus_error(&json!({"janus": "ack"})).is_none());
    }
}
