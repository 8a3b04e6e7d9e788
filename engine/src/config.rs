//! Configuration: defaults, then a TOML file (`--config`), then `LIVE_*`
//! environment variables, each layer overriding the one before.
//!
//! Top-level keys map to `LIVE_<KEY>` (`http_addr` <- `LIVE_HTTP_ADDR`);
//! keys in a section use a double underscore (`danmaku.max_chars` <-
//! `LIVE_DANMAKU__MAX_CHARS`). Every key, with its default, is documented in
//! docs/operations.md and in `deploy/live-engine.sample.toml`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the HTTP API and WebSockets listen.
    pub http_addr: SocketAddr,
    /// The embedded store and the generated admin key live here.
    pub data_dir: PathBuf,
    /// The built web app served at `/`; empty: none.
    pub web_dir: PathBuf,
    /// Signs access tokens and authorizes admin calls. Generated (and kept
    /// in `<data_dir>/admin.key`) when absent.
    pub admin_key: Option<String>,
    /// NATS server with JetStream; unset or empty: the in-process bus.
    pub nats_url: Option<String>,
    /// UDP address of the media plane (WHIP/WHEP media).
    pub media_udp_addr: SocketAddr,
    /// The address peers send media to, when it differs from
    /// `media_udp_addr` (NAT, wildcard bind). Put in ICE candidates.
    pub media_advertised_addr: Option<SocketAddr>,
    /// Media peers (publishers and subscribers) this node serves at once;
    /// beyond it WHIP/WHEP answer 503 with Retry-After.
    pub media_max_peers: usize,
    /// Subscribers of one stream at once; beyond it WHEP answers 503.
    pub media_max_subscribers_per_stream: usize,
    pub danmaku: DanmakuSection,
    pub gifts: GiftsSection,
    pub billing: BillingSection,
    pub vod: VodSection,
    pub ws: WsSection,
    pub store: StoreSection,
    pub transcode: TranscodeSection,
    pub avatar: AvatarSection,
    pub story: StorySection,
    pub captions: CaptionsSection,
    /// How long a graceful shutdown may take before it gives up waiting.
    pub shutdown_timeout_s: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DanmakuSection {
    pub max_chars: usize,
    pub rate_limit: u32,
    pub rate_window_s: u64,
    pub batch_window_ms: u64,
    pub merge_window_ms: u64,
    pub batch_max_items: usize,
    pub recovery_limit: usize,
    pub history_limit: usize,
    pub presence_interval_ms: u64,
    /// Blocked terms applied in every room, on top of those managed through
    /// the API.
    pub blocked_terms: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GiftsSection {
    /// The creator's share of every gift, in percent (the platform keeps
    /// the rest).
    pub creator_share_percent: u32,
    /// Same sender, same gift within this long: one combo.
    pub combo_window_ms: u64,
    /// Gifters in a room's `leaderboard` frame.
    pub leaderboard_size: usize,
    /// The creator's share per creator tier, in percent (`partner = 80`).
    pub tier_share_percent: BTreeMap<String, u32>,
    /// Creators in a tier (`alice = "partner"`).
    pub creator_tiers: BTreeMap<String, String>,
    /// The creator's share for gifts from viewers in a region (the token's
    /// `region` claim), replacing the tier's or the default.
    pub region_share_percent: BTreeMap<String, u32>,
    /// Every room's gift goal in coins; 0: no goal.
    pub goal_coins: u64,
    pub goal_window_s: u64,
    /// Gifts added to the default catalog, or replacing one with the same id.
    pub catalog: Vec<GiftEntry>,
}

/// A virtual host's motion (VMC). The WebSocket ingest
/// (`/v1/rooms/{room}/avatar`) needs nothing here.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AvatarSection {
    /// Where to listen for VMC over UDP (senders use port 39539 by
    /// convention); unset: no UDP ingest.
    pub vmc_udp_addr: Option<SocketAddr>,
    /// The room that motion arriving over UDP goes to.
    pub vmc_udp_room: String,
}

/// A room's program: the stream its story plays clips and speaks host
/// lines into (see docs/story.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorySection {
    /// Where `clip` scenes' files are; empty: `<data_dir>/clips`.
    pub clips_dir: PathBuf,
    /// The stream name a room's program publishes under.
    pub program_stream: String,
    /// Speak host lines into the program's audio.
    pub voice_enabled: bool,
    /// The text-to-speech command: reads text on stdin, writes a WAV to
    /// stdout with `--stdout -v <voice> -s <speed>` (espeak-ng's flags).
    pub voice_command: String,
    pub voice: String,
    /// Words per minute.
    pub voice_speed: u32,
}

impl Default for StorySection {
    fn default() -> Self {
        Self {
            clips_dir: PathBuf::new(),
            program_stream: "program".into(),
            voice_enabled: true,
            voice_command: "espeak-ng".into(),
            voice: "en-us".into(),
            voice_speed: 165,
        }
    }
}

/// Live captions (see docs/captions.md): speech recognized on streams,
/// lines sent as text, translated per viewer language, WebVTT in
/// recordings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptionsSection {
    /// Captions at all: frames, translation, subtitles in recordings.
    pub enabled: bool,
    /// Recognize speech on live streams (needs the model).
    pub asr: bool,
    /// The Whisper model final lines are written with, CTranslate2 format
    /// (scripts/install-models); missing: recognition is off, with a
    /// warning.
    pub model_dir: PathBuf,
    /// A smaller model for partial lines (they are replaced within a
    /// second); empty or unusable: `model_dir`'s writes them too.
    pub partial_model_dir: PathBuf,
    /// The language streams are spoken in (BCP 47 short).
    pub spoken: String,
    /// Recognize speech straight into English (Whisper's translate task):
    /// for streams in a language the translator has no pair from; the
    /// English lines are then translated like any. Needs a multilingual
    /// `model_dir` (partial lines then use it too).
    pub asr_into_english: bool,
    /// CPU threads one recognition uses.
    pub asr_threads: usize,
    /// Beam width for final lines (partial lines are greedy).
    pub final_beam: usize,
    /// `apertium`, `libretranslate` or `none`.
    pub translator: String,
    /// The languages offered besides the one spoken.
    pub translate_to: Vec<String>,
    /// Where Apertium's pair modes are.
    pub apertium_modes_dir: PathBuf,
    /// A LibreTranslate-compatible API (translator = "libretranslate").
    pub libretranslate_url: String,
    pub libretranslate_api_key: String,
    /// Recently translated lines kept (repeated phrases are not
    /// translated twice).
    pub cache_lines: usize,
    /// Languages recordings carry subtitles in besides the one spoken.
    pub recorded: Vec<String>,
}

impl Default for CaptionsSection {
    fn default() -> Self {
        Self {
            enabled: true,
            asr: true,
            model_dir: PathBuf::from(".models/whisper-base"),
            partial_model_dir: PathBuf::from(".models/whisper-tiny.en"),
            spoken: "en".into(),
            asr_into_english: false,
            asr_threads: 2,
            final_beam: 1,
            translator: "apertium".into(),
            translate_to: vec!["es".into()],
            apertium_modes_dir: PathBuf::from("/usr/share/apertium/modes"),
            libretranslate_url: String::new(),
            libretranslate_api_key: String::new(),
            cache_lines: 1000,
            recorded: vec!["es".into()],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VodSection {
    /// Run the VOD role (assets and danmaku replay from recording events)
    /// in this process.
    pub enabled: bool,
}

impl Default for VodSection {
    fn default() -> Self {
        Self { enabled: true }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BillingSection {
    /// Run the billing role in this process.
    pub enabled: bool,
    /// In-process bus only: how often gifts without a settlement are swept.
    pub sweep_interval_ms: u64,
    /// NATS only: how long JetStream waits for an ack before redelivering.
    pub ack_wait_s: u64,
}

impl Default for BillingSection {
    fn default() -> Self {
        Self {
            enabled: true,
            sweep_interval_ms: 5000,
            ack_wait_s: 30,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GiftEntry {
    pub id: String,
    pub name: String,
    pub price: u64,
    pub tier: u8,
    #[serde(default)]
    pub combo: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WsSection {
    pub max_message_bytes: usize,
    pub write_timeout_ms: u64,
    pub keepalive_s: u64,
    pub session_queue: usize,
    pub broadcast_capacity: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// fsync every commit (durable against power loss). `false` survives a
    /// process crash only.
    pub synchronous_full: bool,
    pub max_group: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            web_dir: PathBuf::from("web/dist"),
            admin_key: None,
            nats_url: None,
            media_udp_addr: SocketAddr::from(([127, 0, 0, 1], 7882)),
            media_advertised_addr: None,
            media_max_peers: 5000,
            media_max_subscribers_per_stream: 2000,
            danmaku: DanmakuSection::default(),
            gifts: GiftsSection::default(),
            billing: BillingSection::default(),
            vod: VodSection::default(),
            avatar: AvatarSection::default(),
            story: StorySection::default(),
            captions: CaptionsSection::default(),
            ws: WsSection::default(),
            store: StoreSection::default(),
            transcode: TranscodeSection::default(),
            shutdown_timeout_s: 10,
        }
    }
}

impl Default for DanmakuSection {
    fn default() -> Self {
        Self {
            max_chars: 100,
            rate_limit: 20,
            rate_window_s: 30,
            batch_window_ms: 50,
            merge_window_ms: 1000,
            batch_max_items: 256,
            recovery_limit: 1000,
            history_limit: 1000,
            presence_interval_ms: 5000,
            blocked_terms: Vec::new(),
        }
    }
}

impl GiftEntry {
    fn gift(&self) -> interactive::gifts::Gift {
        interactive::gifts::Gift {
            id: self.id.clone(),
            name: self.name.clone(),
            price: self.price,
            tier: self.tier,
            combo: self.combo,
        }
    }
}

impl Default for GiftsSection {
    fn default() -> Self {
        Self {
            creator_share_percent: 70,
            combo_window_ms: 3000,
            leaderboard_size: 10,
            tier_share_percent: BTreeMap::new(),
            creator_tiers: BTreeMap::new(),
            region_share_percent: BTreeMap::new(),
            goal_coins: 0,
            goal_window_s: 600,
            catalog: Vec::new(),
        }
    }
}

impl Default for WsSection {
    fn default() -> Self {
        Self {
            max_message_bytes: 16 * 1024,
            write_timeout_ms: 10_000,
            keepalive_s: 20,
            session_queue: 256,
            broadcast_capacity: 1024,
        }
    }
}

/// Transcoding, HLS and recording of live streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TranscodeSection {
    /// Transcode (ABR ladder, HLS, recording) every stream with video.
    pub enabled: bool,
    /// Streams transcoded at once; a stream beyond it is forwarded only.
    pub max_concurrent: usize,
    /// `auto` (h264_nvenc when a usable NVIDIA GPU answers, else
    /// libx264), `libx264` or `h264_nvenc`.
    pub encoder: String,
    /// HLS segment length; renditions get a keyframe on this grid.
    pub segment_seconds: u32,
    /// The frame rate the encoders' rate control plans for.
    pub fps: u32,
    /// Renditions, best first; steps taller than the input are skipped.
    pub ladder: Vec<RenditionEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenditionEntry {
    /// Directory and playlist name: `A-Z a-z 0-9 _ -`.
    pub name: String,
    pub height: u32,
    pub bitrate_kbps: u32,
}

impl Default for TranscodeSection {
    fn default() -> Self {
        let step = |name: &str, height, bitrate_kbps| RenditionEntry {
            name: name.into(),
            height,
            bitrate_kbps,
        };
        Self {
            enabled: true,
            max_concurrent: 2,
            encoder: "auto".into(),
            segment_seconds: 2,
            fps: 30,
            ladder: vec![
                step("720p", 720, 2500),
                step("480p", 480, 1200),
                step("360p", 360, 700),
            ],
        }
    }
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            synchronous_full: true,
            max_group: 1024,
        }
    }
}

/// The sections and keys the environment may set; anything else with the
/// `LIVE_` prefix is ignored rather than rejected, so unrelated variables
/// cannot stop the engine.
const ENV_KEYS: &[&str] = &[
    "http_addr",
    "data_dir",
    "web_dir",
    "admin_key",
    "nats_url",
    "media_udp_addr",
    "media_advertised_addr",
    "media_max_peers",
    "media_max_subscribers_per_stream",
    "danmaku",
    "gifts",
    "billing",
    "vod",
    "ws",
    "store",
    "transcode",
    "shutdown_timeout_s",
];

impl Config {
    /// Loads the layers; `file` must exist when given.
    pub fn load(file: Option<&Path>) -> Result<Self, String> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(format!("config file {} does not exist", path.display()));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(Env::prefixed("LIVE_").split("__").filter(|key| {
            let section = key
                .as_str()
                .split('.')
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            ENV_KEYS.contains(&section.as_str())
        }));
        let mut config: Config = figment.extract().map_err(|e| e.to_string())?;
        if config
            .nats_url
            .as_deref()
            .is_some_and(|u| u.trim().is_empty())
        {
            config.nats_url = None;
        }
        if config
            .admin_key
            .as_deref()
            .is_some_and(|k| k.trim().is_empty())
        {
            config.admin_key = None;
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let d = &self.danmaku;
        let checks = [
            (d.max_chars == 0, "danmaku.max_chars must be at least 1"),
            (
                d.rate_window_s == 0,
                "danmaku.rate_window_s must be at least 1",
            ),
            (
                d.batch_max_items == 0,
                "danmaku.batch_max_items must be at least 1",
            ),
            (
                d.history_limit == 0,
                "danmaku.history_limit must be at least 1",
            ),
            (
                d.presence_interval_ms == 0,
                "danmaku.presence_interval_ms must be at least 1",
            ),
            (
                self.ws.max_message_bytes < 256,
                "ws.max_message_bytes must be at least 256",
            ),
            (
                self.ws.session_queue == 0,
                "ws.session_queue must be at least 1",
            ),
            (
                self.ws.broadcast_capacity == 0,
                "ws.broadcast_capacity must be at least 1",
            ),
            (
                self.ws.keepalive_s == 0,
                "ws.keepalive_s must be at least 1",
            ),
            (
                self.store.max_group == 0,
                "store.max_group must be at least 1",
            ),
            (
                self.admin_key.as_deref().is_some_and(|k| k.len() < 16),
                "admin_key must be at least 16 characters",
            ),
            (
                !valid_room_id(&self.story.program_stream),
                "story.program_stream must be a stream name (1-64 of A-Z a-z 0-9 - _)",
            ),
            (
                !(80..=450).contains(&self.story.voice_speed),
                "story.voice_speed must be 80 to 450 words per minute",
            ),
            (
                self.avatar.vmc_udp_addr.is_some() && !valid_room_id(&self.avatar.vmc_udp_room),
                "avatar.vmc_udp_room must name a room (1-64 of A-Z a-z 0-9 - _) when avatar.vmc_udp_addr is set",
            ),
        ];
        if let Some((_, message)) = checks.iter().find(|(bad, _)| *bad) {
            return Err((*message).to_owned());
        }
        self.validate_gifts()?;
        self.validate_captions()?;
        self.validate_transcode()
    }

    fn validate_captions(&self) -> Result<(), String> {
        if self.captions.asr_into_english && self.captions.spoken == "en" {
            return Err(
                "captions.asr_into_english is for streams not spoken in English (captions.spoken)"
                    .into(),
            );
        }
        let c = &self.captions;
        let lang =
            |l: &String| (2..=3).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_lowercase());
        if !lang(&c.spoken) {
            return Err(format!(
                "captions.spoken `{}` must be a language code like `en`",
                c.spoken
            ));
        }
        if let Some(bad) = c.translate_to.iter().chain(&c.recorded).find(|l| !lang(l)) {
            return Err(format!(
                "captions.translate_to and captions.recorded hold language codes like `es`, not `{bad}`"
            ));
        }
        if !["apertium", "libretranslate", "none"].contains(&c.translator.as_str()) {
            return Err(format!(
                "captions.translator `{}` is not one of apertium, libretranslate, none",
                c.translator
            ));
        }
        if c.translator == "libretranslate" && c.libretranslate_url.is_empty() {
            return Err(
                "captions.libretranslate_url is needed with translator = \"libretranslate\"".into(),
            );
        }
        if !(1..=16).contains(&c.asr_threads) || !(1..=8).contains(&c.final_beam) {
            return Err(
                "captions.asr_threads must be 1 to 16 and captions.final_beam 1 to 8".into(),
            );
        }
        Ok(())
    }

    fn validate_transcode(&self) -> Result<(), String> {
        let t = &self.transcode;
        if !["auto", "libx264", "h264_nvenc"].contains(&t.encoder.as_str()) {
            return Err(format!(
                "transcode.encoder `{}` is not one of auto, libx264, h264_nvenc",
                t.encoder
            ));
        }
        if !(1..=10).contains(&t.segment_seconds) {
            return Err("transcode.segment_seconds must be 1 to 10".into());
        }
        if !(1..=120).contains(&t.fps) {
            return Err("transcode.fps must be 1 to 120".into());
        }
        if t.enabled && t.ladder.is_empty() {
            return Err("transcode.ladder needs at least one rendition".into());
        }
        let mut names = std::collections::HashSet::new();
        for step in &t.ladder {
            let plain = !step.name.is_empty()
                && step.name.len() <= 32
                && step
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !plain || !names.insert(step.name.as_str()) {
                return Err(format!(
                    "transcode.ladder: `{}` must be a unique name of 1 to 32 characters of A-Z, a-z, 0-9, `_` or `-`",
                    step.name
                ));
            }
            if !(16..=4320).contains(&step.height) || step.bitrate_kbps == 0 {
                return Err(format!(
                    "transcode.ladder: `{}` needs a height of 16 to 4320 and a bitrate above 0",
                    step.name
                ));
            }
        }
        Ok(())
    }

    /// The ladder every transcode runs, with the encoder resolved: `auto`
    /// probes for NVENC once, logs the choice and why, and exports it as
    /// `live_transcode_encoder_info`.
    pub fn ladder(&self) -> codec::ladder::LadderConfig {
        let t = &self.transcode;
        let (encoder, hardware, reason) = match t.encoder.as_str() {
            "auto" => {
                let choice = codec::choose_h264_encoder();
                (choice.name.to_owned(), choice.hardware, choice.reason)
            }
            fixed => (
                fixed.to_owned(),
                fixed == "h264_nvenc",
                "set by transcode.encoder".to_owned(),
            ),
        };
        tracing::info!(%encoder, hardware, %reason, "transcode encoder");
        metrics::gauge!(
            "live_transcode_encoder_info",
            "encoder" => encoder.clone(),
            "hardware" => hardware.to_string(),
            "reason" => reason
        )
        .set(1.0);
        codec::ladder::LadderConfig {
            renditions: t
                .ladder
                .iter()
                .map(|step| codec::ladder::RenditionSpec {
                    name: step.name.clone(),
                    height: step.height,
                    bitrate_bps: step.bitrate_kbps * 1000,
                })
                .collect(),
            encoder,
            fps: t.fps,
            segment_seconds: t.segment_seconds,
            recording_dir: None,
            audio: false,
            subtitles: Vec::new(),
        }
    }

    fn validate_gifts(&self) -> Result<(), String> {
        let g = &self.gifts;
        let shares = std::iter::once(("creator_share_percent", &g.creator_share_percent))
            .chain(
                g.tier_share_percent
                    .values()
                    .map(|p| ("tier_share_percent", p)),
            )
            .chain(
                g.region_share_percent
                    .values()
                    .map(|p| ("region_share_percent", p)),
            );
        for (key, percent) in shares {
            if *percent > 100 {
                return Err(format!("gifts.{key}: a share must be 0 to 100 percent"));
            }
        }
        for (creator, tier) in &g.creator_tiers {
            if !g.tier_share_percent.contains_key(tier) {
                return Err(format!(
                    "gifts.creator_tiers: `{creator}` is in tier `{tier}`, which tier_share_percent does not define"
                ));
            }
        }
        if g.leaderboard_size == 0 {
            return Err("gifts.leaderboard_size must be at least 1".into());
        }
        if g.goal_coins > 0 && g.goal_window_s == 0 {
            return Err("gifts.goal_window_s must be at least 1 when goal_coins is set".into());
        }
        for entry in &g.catalog {
            entry
                .gift()
                .validate()
                .map_err(|reason| format!("gifts.catalog: {reason}"))?;
        }
        Ok(())
    }

    pub fn actors(&self) -> actors::ActorsConfig {
        let d = &self.danmaku;
        actors::ActorsConfig {
            danmaku: actors::DanmakuConfig {
                max_chars: d.max_chars,
                rate_limit: d.rate_limit,
                rate_window: Duration::from_secs(d.rate_window_s),
                batch: interactive_batch(d),
                recovery_limit: d.recovery_limit,
                dedupe_capacity: 1024,
            },
            gifts: self.gifts(),
            presence_interval: Duration::from_millis(d.presence_interval_ms),
            broadcast_capacity: self.ws.broadcast_capacity,
            session_queue: self.ws.session_queue,
            ..actors::ActorsConfig::default()
        }
    }

    fn gifts(&self) -> actors::GiftsConfig {
        let g = &self.gifts;
        let mut catalog = interactive::gifts::Catalog::default_gifts();
        for entry in &g.catalog {
            catalog.upsert(entry.gift());
        }
        actors::GiftsConfig {
            catalog: actors::SharedCatalog::new(catalog),
            split: interactive::gifts::SplitPolicy {
                default_bps: g.creator_share_percent * 100,
                tier_bps: percent_map(&g.tier_share_percent),
                creator_tier: g.creator_tiers.clone().into_iter().collect(),
                region_bps: percent_map(&g.region_share_percent),
            },
            combo_window_ms: g.combo_window_ms,
            leaderboard_size: g.leaderboard_size,
            goal: (g.goal_coins > 0).then(|| (g.goal_coins, Duration::from_secs(g.goal_window_s))),
            ..actors::GiftsConfig::default()
        }
    }

    pub fn billing(&self) -> actors::billing::BillingConfig {
        actors::billing::BillingConfig {
            sweep_interval: Duration::from_millis(self.billing.sweep_interval_ms.max(1)),
            ack_wait: Duration::from_secs(self.billing.ack_wait_s.max(1)),
        }
    }

    /// Where clips are read from.
    pub fn clips_dir(&self) -> PathBuf {
        if self.story.clips_dir.as_os_str().is_empty() {
            self.data_dir.join("clips")
        } else {
            self.story.clips_dir.clone()
        }
    }

    /// The host's voice, when enabled.
    pub fn voice(&self) -> Option<sfu::Voice> {
        let s = &self.story;
        s.voice_enabled.then(|| sfu::Voice {
            command: s.voice_command.clone(),
            voice: s.voice.clone(),
            speed: s.voice_speed,
        })
    }

    pub fn media_limits(&self) -> sfu::Limits {
        sfu::Limits {
            max_peers: self.media_max_peers,
            max_subscribers_per_stream: self.media_max_subscribers_per_stream,
            max_transcodes: if self.transcode.enabled {
                self.transcode.max_concurrent
            } else {
                0
            },
        }
    }

    pub fn gateway(&self) -> gateway::GatewayConfig {
        gateway::GatewayConfig {
            max_message_bytes: self.ws.max_message_bytes,
            write_timeout: Duration::from_millis(self.ws.write_timeout_ms),
            keepalive: Duration::from_secs(self.ws.keepalive_s),
            history_limit: self.danmaku.history_limit,
            recovery_limit: self.danmaku.recovery_limit,
            session_queue: self.ws.session_queue,
            web_dir: self.web_dir(),
        }
    }

    /// The web app's directory, if it was built; the engine serves the API
    /// alone (and says so) otherwise.
    fn web_dir(&self) -> Option<PathBuf> {
        if self.web_dir.as_os_str().is_empty() {
            return None;
        }
        if self.web_dir.join("index.html").is_file() {
            return Some(self.web_dir.clone());
        }
        tracing::warn!(
            web_dir = %self.web_dir.display(),
            "the web app is not built there (npm ci && npm run build in web/; scripts/run does it): serving the API only"
        );
        None
    }
}

fn percent_map(percents: &BTreeMap<String, u32>) -> std::collections::HashMap<String, u32> {
    percents
        .iter()
        .map(|(key, percent)| (key.clone(), percent * 100))
        .collect()
}

fn interactive_batch(d: &DanmakuSection) -> interactive::BatchConfig {
    interactive::BatchConfig {
        window: Duration::from_millis(d.batch_window_ms),
        merge_window: Duration::from_millis(d.merge_window_ms),
        max_items: d.batch_max_items,
    }
}

/// The gateway's room id rule (`check_room_id`), for configured rooms.
fn valid_room_id(room_id: &str) -> bool {
    !room_id.is_empty()
        && room_id.len() <= 64
        && room_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail API returns its own large error
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn defaults_file_and_environment_layer_in_that_order() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "live.toml",
                "http_addr = \"127.0.0.1:9000\"\n[danmaku]\nmax_chars = 50\nrate_limit = 5\n",
            )?;
            jail.set_env("LIVE_DANMAKU__RATE_LIMIT", "7");
            jail.set_env("LIVE_DATA_DIR", "/tmp/x");
            jail.set_env("LIVE_UNRELATED", "ignored");
            jail.set_env("LIVE_MEDIA_ADVERTISED_ADDR", "203.0.113.10:7882");
            jail.set_env("LIVE_MEDIA_MAX_SUBSCRIBERS_PER_STREAM", "3");
            let config =
                Config::load(Some(Path::new("live.toml"))).map_err(figment::Error::from)?;
            assert_eq!(config.http_addr.port(), 9000);
            assert_eq!(config.danmaku.max_chars, 50);
            assert_eq!(config.danmaku.rate_limit, 7);
            assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
            assert_eq!(config.nats_url, None);
            assert_eq!(
                config.media_advertised_addr,
                Some("203.0.113.10:7882".parse().unwrap())
            );
            assert_eq!(config.media_max_subscribers_per_stream, 3);
            Ok(())
        });
    }

    #[test]
    fn bad_values_and_unknown_keys_are_named() {
        Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "http_addr = \"not an address\"\n")?;
            let error = Config::load(Some(Path::new("bad.toml"))).unwrap_err();
            assert!(error.contains("http_addr"), "{error}");
            jail.create_file("typo.toml", "[danmaku]\nmax_char = 3\n")?;
            let error = Config::load(Some(Path::new("typo.toml"))).unwrap_err();
            assert!(error.contains("max_char"), "{error}");
            jail.set_env("LIVE_DANMAKU__MAX_CHARS", "0");
            let error = Config::load(None).unwrap_err();
            assert!(error.contains("danmaku.max_chars"), "{error}");
            Ok(())
        });
        assert!(
            Config::load(Some(Path::new("/no/such/file.toml")))
                .unwrap_err()
                .contains("does not exist")
        );
    }

    #[test]
    fn the_sample_config_documents_exactly_the_defaults() {
        let sample = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/live-engine.sample.toml"
        ));
        Jail::expect_with(|_| {
            assert_eq!(
                Config::load(Some(sample)).map_err(figment::Error::from)?,
                Config::default()
            );
            Ok(())
        });
    }

    #[test]
    fn empty_nats_url_means_the_in_process_bus() {
        Jail::expect_with(|jail| {
            jail.set_env("LIVE_NATS_URL", "");
            assert_eq!(
                Config::load(None).map_err(figment::Error::from)?.nats_url,
                None
            );
            Ok(())
        });
    }
}
