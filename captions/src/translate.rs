//! Machine translation of caption lines, behind one [`Translator`]
//! interface: [`Apertium`] (offline, Debian's `apertium` and its language
//! pairs, kept running), [`LibreTranslate`] (any LibreTranslate-compatible
//! HTTP API), and [`Cached`], which remembers repeated phrases in front of
//! either.
//!
//! Apertium is kept running as one persistent null-flush pipeline per
//! language pair: a line goes in followed by NUL, its translation comes
//! out followed by NUL. Starting Apertium costs ~100 ms (it loads its
//! transducers); a line through a warm pipeline costs a few ms. Two facts
//! seen here shape [`ApertiumPipe`]: the `apertium` wrapper script does not
//! flush per line in `-z` mode (its txt deformatter has no null-flush), so
//! the pipeline is built from the pair's mode file with `-z` on every
//! stage; and `lt-proc -b` (lttoolbox 3.7.1) buffers its output even with
//! `-z`, so every stage runs under `stdbuf -o0`.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// A language, as Apertium and BCP 47 share it for the pairs used here:
/// two or three lowercase letters (`en`, `es`, `ca`).
pub type Lang = String;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TranslateError {
    /// No backend translates between these languages.
    #[error("no translation from {from} to {to}")]
    Unsupported { from: String, to: String },
    /// The backend failed (its process died, its API answered an error).
    #[error("translation failed: {0}")]
    Backend(String),
    /// The backend took longer than it may.
    #[error("translation timed out")]
    Timeout,
}

/// Translates caption lines.
#[async_trait]
pub trait Translator: Send + Sync {
    /// The `(from, to)` pairs it translates.
    fn pairs(&self) -> Vec<(Lang, Lang)>;

    async fn translate(&self, text: &str, from: &str, to: &str) -> Result<String, TranslateError>;
}

/// How long one line may take before it is given up (the caption goes out
/// untranslated in that language rather than late).
pub const LINE_TIMEOUT: Duration = Duration::from_secs(2);

/// Apertium's language codes (ISO 639-3) for the BCP 47 codes captions
/// use, for the pairs Debian ships that matter here.
const APERTIUM_CODES: [(&str, &str); 8] = [
    ("en", "eng"),
    ("es", "spa"),
    ("ca", "cat"),
    ("fr", "fra"),
    ("pt", "por"),
    ("it", "ita"),
    ("gl", "glg"),
    ("eo", "epo"),
];

fn apertium_code(lang: &str) -> Option<&'static str> {
    APERTIUM_CODES
        .iter()
        .find(|(bcp47, _)| *bcp47 == lang)
        .map(|(_, code)| *code)
}

/// Translation with Apertium, one warm pipeline per installed pair.
pub struct Apertium {
    pipes: HashMap<(Lang, Lang), tokio::sync::Mutex<ApertiumPipe>>,
}

impl Apertium {
    /// The pairs of `wanted` (`("en", "es")`, ...) installed under
    /// `modes_dir` (Debian: `/usr/share/apertium/modes`), each started
    /// now. A pair that is not installed is left out (and logged): the
    /// caller lists what is available.
    pub fn start(modes_dir: &Path, wanted: &[(&str, &str)]) -> Self {
        let mut pipes = HashMap::new();
        for (from, to) in wanted {
            let (Some(a), Some(b)) = (apertium_code(from), apertium_code(to)) else {
                tracing::warn!(%from, %to, "no Apertium code for this pair");
                continue;
            };
            let mode = modes_dir.join(format!("{a}-{b}.mode"));
            match ApertiumPipe::start(&mode) {
                Ok(pipe) => {
                    pipes.insert(
                        ((*from).to_owned(), (*to).to_owned()),
                        tokio::sync::Mutex::new(pipe),
                    );
                }
                Err(error) => {
                    tracing::warn!(mode = %mode.display(), %error, "Apertium pair not available")
                }
            }
        }
        Self { pipes }
    }
}

#[async_trait]
impl Translator for Apertium {
    fn pairs(&self) -> Vec<(Lang, Lang)> {
        let mut pairs: Vec<_> = self.pipes.keys().cloned().collect();
        pairs.sort();
        pairs
    }

    async fn translate(&self, text: &str, from: &str, to: &str) -> Result<String, TranslateError> {
        let pipe = self
            .pipes
            .get(&(from.to_owned(), to.to_owned()))
            .ok_or_else(|| TranslateError::Unsupported {
                from: from.to_owned(),
                to: to.to_owned(),
            })?;
        let mut pipe = pipe.lock().await;
        match tokio::time::timeout(LINE_TIMEOUT, pipe.line(text)).await {
            Ok(Ok(line)) => Ok(line),
            Ok(Err(error)) => {
                // A dead or confused pipeline is started again for the
                // next line.
                pipe.restart();
                Err(TranslateError::Backend(error.to_string()))
            }
            Err(_) => {
                pipe.restart();
                Err(TranslateError::Timeout)
            }
        }
    }
}

/// One pair's running pipeline.
pub struct ApertiumPipe {
    command: String,
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl ApertiumPipe {
    /// Builds the null-flush pipeline from a mode file (`eng-spa.mode`:
    /// programs joined by `|`, `$1` the generator's option, `$2` the
    /// tagger's) and starts it.
    pub fn start(mode: &Path) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(mode)?;
        Self::spawn(null_flush_pipeline(&text))
    }

    fn spawn(command: String) -> std::io::Result<Self> {
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(&command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let input = child.stdin.take().ok_or_else(broken)?;
        let output = BufReader::new(child.stdout.take().ok_or_else(broken)?);
        Ok(Self {
            command,
            child,
            input,
            output,
        })
    }

    fn restart(&mut self) {
        let _ = self.child.start_kill();
        match Self::spawn(self.command.clone()) {
            Ok(fresh) => *self = fresh,
            Err(error) => tracing::warn!(%error, "Apertium did not restart"),
        }
    }

    /// One line through the pipeline.
    async fn line(&mut self, text: &str) -> std::io::Result<String> {
        // A newline before the NUL keeps the last sentence's punctuation.
        let mut block = escape(&text.replace(['\n', '\0'], " ")).into_bytes();
        block.extend_from_slice(b"\n\0");
        self.input.write_all(&block).await?;
        self.input.flush().await?;
        let mut out = Vec::new();
        if self.output.read_until(0, &mut out).await? == 0 {
            return Err(broken());
        }
        if out.last() == Some(&0) {
            out.pop();
        }
        Ok(unescape(String::from_utf8_lossy(&out).trim()))
    }
}

fn broken() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::BrokenPipe,
        "the Apertium pipeline ended",
    )
}

/// A mode file's pipeline with every stage null-flushing and unbuffered,
/// unknown words unmarked.
fn null_flush_pipeline(mode: &str) -> String {
    mode.trim()
        .split('|')
        .map(|stage| {
            let stage = stage.trim().replace("$1", "-n").replace("$2", "");
            let (program, args) = stage.split_once(' ').unwrap_or((&stage, ""));
            format!("stdbuf -o0 {program} -z {args}")
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Characters Apertium's stream format reserves.
const RESERVED: &[char] = &[
    '\\', '^', '$', '/', '<', '>', '[', ']', '{', '}', '@', '*', '#',
];

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if RESERVED.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Drops escapes, and the marks Apertium leaves on words it could not
/// generate (`#`) or transfer (`@`).
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            '#' | '@' => {}
            c => out.push(c),
        }
    }
    out
}

/// A LibreTranslate-compatible HTTP API (`POST {url}/translate` with
/// `{q, source, target, format, api_key}`, answering `{translatedText}`).
/// DeepL and OpenAI-compatible services are reached through a
/// LibreTranslate-compatible proxy (docs/captions.md).
pub struct LibreTranslate {
    url: String,
    api_key: Option<String>,
    pairs: Vec<(Lang, Lang)>,
    http: reqwest::Client,
}

impl LibreTranslate {
    pub fn new(url: &str, api_key: Option<String>, pairs: Vec<(Lang, Lang)>) -> Self {
        Self {
            url: url.trim_end_matches('/').to_owned(),
            api_key,
            pairs,
            http: reqwest::Client::new(),
        }
    }
}

#[derive(serde::Deserialize)]
struct Translated {
    #[serde(rename = "translatedText")]
    translated_text: String,
}

#[async_trait]
impl Translator for LibreTranslate {
    fn pairs(&self) -> Vec<(Lang, Lang)> {
        self.pairs.clone()
    }

    async fn translate(&self, text: &str, from: &str, to: &str) -> Result<String, TranslateError> {
        if !self.pairs.iter().any(|(a, b)| a == from && b == to) {
            return Err(TranslateError::Unsupported {
                from: from.to_owned(),
                to: to.to_owned(),
            });
        }
        let body = serde_json::json!({
            "q": text,
            "source": from,
            "target": to,
            "format": "text",
            "api_key": self.api_key.clone().unwrap_or_default(),
        });
        let request = self
            .http
            .post(format!("{}/translate", self.url))
            .timeout(LINE_TIMEOUT)
            .json(&body)
            .send();
        let response = request.await.map_err(|e| {
            if e.is_timeout() {
                TranslateError::Timeout
            } else {
                TranslateError::Backend(e.to_string())
            }
        })?;
        let status = response.status();
        if !status.is_success() {
            let detail = response.text().await.unwrap_or_default();
            return Err(TranslateError::Backend(format!("{status}: {detail}")));
        }
        let answer: Translated = response
            .json()
            .await
            .map_err(|e| TranslateError::Backend(format!("unreadable answer: {e}")))?;
        Ok(answer.translated_text)
    }
}

/// Remembers recent translations: a live host repeats phrases ("thank
/// you", a product's name), and each costs a backend call once.
pub struct Cached<T> {
    inner: T,
    cache: Mutex<lru::LruCache<(Lang, Lang, String), String>>,
}

impl<T: Translator> Cached<T> {
    pub fn new(inner: T, capacity: usize) -> Self {
        let capacity = NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        Self {
            inner,
            cache: Mutex::new(lru::LruCache::new(capacity)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, lru::LruCache<(Lang, Lang, String), String>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl<T: Translator> Translator for Cached<T> {
    fn pairs(&self) -> Vec<(Lang, Lang)> {
        self.inner.pairs()
    }

    async fn translate(&self, text: &str, from: &str, to: &str) -> Result<String, TranslateError> {
        let key = (from.to_owned(), to.to_owned(), text.trim().to_owned());
        if let Some(hit) = self.lock().get(&key).cloned() {
            metrics::counter!("live_caption_translations_total", "outcome" => "cached")
                .increment(1);
            return Ok(hit);
        }
        let translated = self.inner.translate(text, from, to).await?;
        metrics::counter!("live_caption_translations_total", "outcome" => "translated")
            .increment(1);
        self.lock().put(key, translated.clone());
        Ok(translated)
    }
}

/// Where Debian installs Apertium's modes.
pub fn debian_modes_dir() -> PathBuf {
    PathBuf::from("/usr/share/apertium/modes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mode_becomes_a_null_flushing_unbuffered_pipeline() {
        let mode = "lt-proc '/d/eng-spa.automorf.bin' | apertium-tagger -g $2 '/d/eng-spa.prob' | lt-proc $1 '/d/eng-spa.autogen.bin'\n";
        assert_eq!(
            null_flush_pipeline(mode),
            "stdbuf -o0 lt-proc -z '/d/eng-spa.automorf.bin' | \
             stdbuf -o0 apertium-tagger -z -g  '/d/eng-spa.prob' | \
             stdbuf -o0 lt-proc -z -n '/d/eng-spa.autogen.bin'"
        );
    }

    #[test]
    fn reserved_characters_go_in_escaped_and_marks_come_out_dropped() {
        assert_eq!(escape("5$ <b> [x] a/b ^"), "5\\$ \\<b\\> \\[x\\] a\\/b \\^");
        assert_eq!(
            unescape("5\\$ \\<b\\> #ir @desconocido"),
            "5$ <b> ir desconocido"
        );
    }
}
