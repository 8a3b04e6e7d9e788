//! Headless Chromium driven through chromedriver's W3C HTTP API: pages,
//! scripts, elements, and a screenshot when a wait fails.

use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// One Chromium, driven by its own chromedriver.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Its own process group, so that a test that fails (and never
        // reaches `quit`) still takes chromedriver and every Chromium
        // process with it when the Browser is dropped.
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver must be installed (apt-get install chromium-driver; scripts/test does it)");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get(format!("{base}/status")).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
            "--autoplay-policy=no-user-gesture-required",
            // Without it Chromium gathers no candidate when only loopback exists.
            "--allow-loopback-in-peer-connection",
        ];
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args }
        }}});
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_owned();
        Self {
            driver,
            base,
            session,
            http,
            _profile: profile,
        }
    }

    /// One W3C WebDriver command on this session: `POST` with `body`, or
    /// `GET` when there is none; returns the reply's `value`.
    async fn command(&self, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}/{path}", self.base, self.session);
        let request = match body {
            Some(body) => self.http.post(url).json(&body),
            None => self.http.get(url),
        };
        let reply: Value = request.send().await.unwrap().json().await.unwrap();
        reply["value"].clone()
    }

    /// One Chrome DevTools Protocol command (chromedriver passes it on).
    pub async fn cdp(&self, command: &str, params: Value) -> Value {
        let body = json!({ "cmd": command, "params": params });
        self.command("goog/cdp/execute", Some(body)).await
    }

    /// Takes WebRTC away from every page opened after this, as in a
    /// browser or network where it does not work.
    pub async fn disable_webrtc(&self) {
        let source = "delete window.RTCPeerConnection;";
        let reply = self
            .cdp(
                "Page.addScriptToEvaluateOnNewDocument",
                json!({ "source": source }),
            )
            .await;
        assert!(reply["identifier"].is_string(), "CDP: {reply}");
    }

    /// Sizes the window (CSS pixels), e.g. to a phone's width.
    pub async fn resize(&self, width: u32, height: u32) {
        self.command(
            "window/rect",
            Some(json!({ "width": width, "height": height })),
        )
        .await;
    }

    pub async fn open(&self, url: &str) {
        let reply = self.command("url", Some(json!({ "url": url }))).await;
        assert!(reply.is_null(), "navigate: {reply}");
    }

    /// `window.state` of the page.
    pub async fn state(&self) -> Value {
        self.eval("return window.state || null;", json!([])).await
    }

    pub async fn wait_for(&self, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let state = self.state().await;
            if ready(&state) {
                return state;
            }
            assert!(
                !matches!(state["phase"].as_str(), Some("failed" | "refused")),
                "{what}: {state}"
            );
            assert!(Instant::now() < deadline, "{what}: timed out at {state}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn quit(self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send()
            .await;
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    pub async fn eval(&self, script: &str, args: Value) -> Value {
        let body = json!({ "script": script, "args": args });
        self.command("execute/sync", Some(body)).await
    }

    async fn element(&self, css: &str) -> String {
        let found = self
            .command(
                "element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        found
            .as_object()
            .and_then(|found| found.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_owned()
    }

    /// Types into the element `css` (after clearing it).
    pub async fn fill(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.command(&format!("element/{id}/clear"), Some(json!({})))
            .await;
        self.command(
            &format!("element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    pub async fn click(&self, css: &str) {
        let id = self.element(css).await;
        let reply = self
            .command(&format!("element/{id}/click"), Some(json!({})))
            .await;
        // A stale or hidden element answers with an error: say so here
        // rather than as a later wait that times out.
        assert!(reply.is_null(), "click {css}: {reply}");
    }

    /// Waits until `script` (a function body returning a value) returns
    /// something `ready` accepts; on timeout saves a screenshot as
    /// `target/screenshots/<name>.png` and fails with the last value.
    pub async fn wait_until(
        &self,
        name: &str,
        what: &str,
        script: &str,
        ready: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let value = self.eval(script, json!([])).await;
            if ready(&value) {
                return value;
            }
            if Instant::now() > deadline {
                let path = self.screenshot(name).await;
                panic!("{what}: timed out at {value} (screenshot: {path})");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Saves the page as a PNG under target/screenshots; returns the path.
    pub async fn screenshot(&self, name: &str) -> String {
        let png = self.command("screenshot", None).await;
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/screenshots");
        let path = format!("{dir}/{name}.png");
        let bytes = png
            .as_str()
            .and_then(|png| base64::engine::general_purpose::STANDARD.decode(png).ok())
            .unwrap_or_default();
        let _ = std::fs::create_dir_all(dir);
        let _ = std::fs::write(&path, bytes);
        path
    }
}

impl Drop for Browser {
    /// Kills chromedriver's process group: the driver and the browsers it
    /// started, however the test ended.
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).output();
        let _ = self.driver.wait();
    }
}
