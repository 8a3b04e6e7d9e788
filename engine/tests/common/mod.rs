//! A real engine on an ephemeral port, and real WebSocket clients.

#![allow(dead_code)]

pub mod browser;
pub mod network;
pub mod recording;

use std::time::Duration;

use async_nats::jetstream;
use engine::{Config, Engine};
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use protocol::v1::server_frame::Frame;
use protocol::v1::{DanmakuItem, Envelope, SendDanmaku, client_frame};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const ADMIN_KEY: &str = "test-admin-key-0123456789";
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestEngine {
    pub engine: Option<Engine>,
    pub base: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
}

pub fn test_config(dir: &std::path::Path) -> Config {
    Config {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        media_udp_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_owned(),
        admin_key: Some(ADMIN_KEY.into()),
        // Transcoding costs a core per stream: only the tests about it
        // turn it on.
        transcode: engine::config::TranscodeSection {
            enabled: false,
            ..Default::default()
        },
        // Recognition and translation processes: only the caption tests
        // start them.
        captions: engine::config::CaptionsSection {
            asr: false,
            translator: "none".into(),
            ..Default::default()
        },
        ..Config::default()
    }
}

/// The clips `examples/brand-launch.json` plays, written once per build
/// (by `scripts/make-demo-clips`, the ffmpeg CLI) and shared by the tests
/// that play stories: `intro`, `bonus`, `outro` 640x360, `midnight`
/// 480x270, `aurora` 320x180, `offer` 640x360 bars; 6 s each.
pub fn demo_clips() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("demo-clips");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-demo-clips");
    let status = std::process::Command::new(script)
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .status()
        .expect(
            "scripts/make-demo-clips runs (the ffmpeg CLI comes with scripts/install-deps --test)",
        );
    assert!(status.success(), "scripts/make-demo-clips");
    dir
}

/// Where the Whisper models captions recognize speech with are (base for
/// final lines, tiny.en for partial ones), installed by
/// `scripts/install-models` into the repository's `.models/` when missing.
pub fn whisper_models() -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = std::process::Command::new(root.join("scripts/install-models"))
        .stdout(std::process::Stdio::null())
        .status()
        .expect("scripts/install-models runs");
    assert!(status.success(), "scripts/install-models");
    root.join(".models")
}

impl TestEngine {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        adjust(&mut config);
        let engine = Engine::start(config).await.expect("engine starts");
        let base = format!("http://{}", engine.http_addr());
        Self {
            engine: Some(engine),
            base,
            http: reqwest::Client::new(),
            dir,
        }
    }

    pub fn engine(&self) -> &Engine {
        self.engine.as_ref().unwrap()
    }

    pub fn ws_url(&self, room: &str) -> String {
        format!(
            "{}/v1/rooms/{room}/ws",
            self.base.replace("http://", "ws://")
        )
    }

    pub async fn create_room(&self, room: &str) {
        let response = self
            .http
            .post(format!("{}/v1/rooms", self.base))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({ "room_id": room, "title": room }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
    }

    pub async fn token(&self, user: &str, room: &str, grants: &[&str]) -> String {
        let response = self
            .http
            .post(format!("{}/v1/tokens", self.base))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({ "user_id": user, "name": user.to_uppercase(), "room": room, "grants": grants }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// A viewer that may chat.
    pub async fn chatter(&self, user: &str, room: &str) -> Client {
        let token = self.token(user, room, &["subscribe", "chat"]).await;
        Client::connect(&self.ws_url(room), &token, None).await
    }

    pub async fn history(&self, room: &str, token: &str, after: u64) -> Vec<DanmakuItem> {
        let response = self
            .http
            .get(format!(
                "{}/v1/rooms/{room}/danmaku?after_seq={after}&limit=1000",
                self.base
            ))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(
                |item| match protocol::decode_server_json(&item.to_string()).unwrap() {
                    Frame::Danmaku(d) => d,
                    other => panic!("history item is not a danmaku: {other:?}"),
                },
            )
            .collect()
    }

    /// The whole `/metrics` page.
    pub async fn metrics_text(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of an unlabelled metric from `/metrics`.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = self.metrics_text().await;
        text.lines()
            .find(|line| line.split_whitespace().next() == Some(name))
            .and_then(|line| line.split_whitespace().last())
            .and_then(|value| value.parse().ok())
    }

    /// `POST` a JSON body with a bearer token: the status and the JSON
    /// answer (null when there is none).
    pub async fn post_json(&self, path: &str, token: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `GET` a JSON document with a bearer token.
    pub async fn get_json_as(&self, path: &str, token: &str) -> Value {
        let request = self.http.get(format!("{}{path}", self.base));
        request_json(request.bearer_auth(token)).await
    }

    /// `GET` a JSON document without credentials.
    pub async fn get_json(&self, path: &str) -> Value {
        request_json(self.http.get(format!("{}{path}", self.base))).await
    }

    /// Fault injection: the room's actor panics and is restarted.
    pub fn crash_room(&self, room: &str) {
        self.engine()
            .actors()
            .rooms()
            .cast(actors::RoomSupervisorMsg::Crash {
                room_id: room.into(),
            })
            .unwrap();
    }

    /// `DELETE` with a bearer token; returns the status.
    pub async fn delete(&self, path: &str, token: &str) -> u16 {
        self.http
            .delete(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    pub async fn shutdown(mut self) {
        self.engine.take().unwrap().shutdown().await.unwrap();
    }
}

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct Client {
    pub socket: Socket,
    pub welcome: protocol::v1::Welcome,
    /// Danmaku received but not yet taken by `next_items`.
    pending: std::collections::VecDeque<DanmakuItem>,
    /// Non-danmaku frames received while waiting for danmaku.
    pub others: Vec<Frame>,
    /// Frames of a batch [`Self::next_leaf`] has not returned yet.
    leaves: std::collections::VecDeque<Frame>,
}

impl Client {
    pub async fn connect(url: &str, token: &str, after_seq: Option<u64>) -> Self {
        let url = match after_seq {
            Some(after) => format!("{url}?token={token}&after_seq={after}"),
            None => format!("{url}?token={token}"),
        };
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        let mut client = Self {
            socket,
            welcome: Default::default(),
            pending: Default::default(),
            others: Vec::new(),
            leaves: Default::default(),
        };
        match client.next_frame().await {
            Frame::Welcome(welcome) => client.welcome = welcome,
            other => panic!("first frame must be welcome, got {other:?}"),
        }
        client
    }

    /// Tries to connect and returns the HTTP status of a refused upgrade.
    pub async fn refused_status(url: &str, token: &str) -> u16 {
        let request = format!("{url}?token={token}")
            .into_client_request()
            .unwrap();
        match tokio_tungstenite::connect_async(request).await {
            Ok(_) => panic!("upgrade unexpectedly accepted"),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                response.status().as_u16()
            }
            Err(other) => panic!("unexpected error {other}"),
        }
    }

    pub async fn send_json(&mut self, value: Value) {
        self.socket
            .send(Message::text(value.to_string()))
            .await
            .unwrap();
    }

    pub async fn send_danmaku(&mut self, text: &str, cmid: &str) {
        let frame = client_frame::Frame::Danmaku(SendDanmaku {
            text: text.into(),
            mode: 0,
            color: 0xFFFFFF,
            client_msg_id: cmid.into(),
        });
        self.socket
            .send(Message::text(protocol::encode_client_json(&frame)))
            .await
            .unwrap();
    }

    /// The next application frame (pings are answered by the library).
    pub async fn next_frame(&mut self) -> Frame {
        self.next_frame_within(WAIT)
            .await
            .expect("a frame within the timeout")
    }

    /// The next application frame, or `None` after `wait`.
    pub async fn next_frame_within(&mut self, wait: Duration) -> Option<Frame> {
        loop {
            let message = tokio::time::timeout(wait, self.socket.next())
                .await
                .ok()?
                .expect("socket open")
                .expect("frame reads");
            match message {
                Message::Text(text) => {
                    return Some(
                        protocol::decode_server_json(text.as_str()).expect("server frame decodes"),
                    );
                }
                Message::Close(frame) => panic!("socket closed: {frame:?}"),
                _ => continue,
            }
        }
    }

    /// The next frame, a batch's items one by one (gift broadcasts travel
    /// in batches under load, with the goal's progress).
    pub async fn next_leaf(&mut self) -> Frame {
        self.next_leaf_within(WAIT)
            .await
            .expect("a frame within the timeout")
    }

    /// [`Self::next_leaf`], or `None` when nothing came for `wait`.
    pub async fn next_leaf_within(&mut self, wait: Duration) -> Option<Frame> {
        loop {
            if let Some(frame) = self.leaves.pop_front() {
                return Some(frame);
            }
            match self.next_frame_within(wait).await? {
                Frame::Batch(batch) => self
                    .leaves
                    .extend(batch.items.into_iter().filter_map(|item| item.frame)),
                frame => return Some(frame),
            }
        }
    }

    /// The next `n` danmaku items, flattening batches; other frames are kept
    /// in `others`.
    pub async fn next_items(&mut self, n: usize) -> Vec<DanmakuItem> {
        while self.pending.len() < n {
            match self.next_frame().await {
                Frame::Danmaku(item) => self.pending.push_back(item),
                Frame::Batch(batch) => {
                    for item in batch.items {
                        match item.frame {
                            Some(Frame::Danmaku(d)) => self.pending.push_back(d),
                            Some(other) => self.others.push(other),
                            None => {}
                        }
                    }
                }
                Frame::Presence(_) => {}
                other => self.others.push(other),
            }
        }
        self.pending.drain(..n).collect()
    }

    /// The next frame that is not a danmaku, presence or batch.
    pub async fn next_control(&mut self) -> Frame {
        if !self.others.is_empty() {
            return self.others.remove(0);
        }
        loop {
            match self.next_frame().await {
                Frame::Danmaku(item) => self.pending.push_back(item),
                Frame::Batch(batch) => {
                    for item in batch.items.into_iter().filter_map(|i| i.frame) {
                        match item {
                            Frame::Danmaku(d) => self.pending.push_back(d),
                            other => return other,
                        }
                    }
                }
                Frame::Presence(_) => {}
                other => return other,
            }
        }
    }

    /// Reads until the server closes; returns the close code.
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            match tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("close within the timeout")
            {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }
}

pub fn seqs(items: &[DanmakuItem]) -> Vec<u64> {
    items.iter().map(|i| i.seq).collect()
}

/// Every message of a stream, decoded, read with an ephemeral consumer.
pub async fn read_stream(url: &str, stream: &str) -> Vec<Envelope> {
    let client = async_nats::connect(url).await.unwrap();
    let js = jetstream::new(client);
    let mut stream = js.get_stream(stream).await.unwrap();
    let count = stream.info().await.unwrap().state.messages as usize;
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer
        .fetch()
        .max_messages(count.max(1))
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .unwrap();
    let mut envelopes = Vec::new();
    while envelopes.len() < count {
        let message = messages.next().await.expect("message").unwrap();
        let envelope = Envelope::decode(message.payload.clone()).unwrap();
        assert_eq!(
            message
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.as_str().to_owned()),
            Some(envelope.id.clone()),
            "Nats-Msg-Id is the event id"
        );
        envelopes.push(envelope);
    }
    envelopes
}

async fn request_json(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}
