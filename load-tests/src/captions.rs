//! `load-tests captions`: a streamer speaks (espeak-ng sentences, published
//! over WHIP as the stream's Opus beside a small VP8 picture), one viewer
//! keeps the spoken language and one chooses Spanish; every caption frame
//! is timed against the end of the speech it covers (`end_ms`, the
//! engine's clock of the sound's arrival, on this machine). Reports speech
//! end -> final caption and -> translated caption at the viewers, the word
//! error rate of the final lines, and the recognizer's own figures from
//! /metrics (seconds and real-time factor per utterance).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use codec::{VideoCodec, VideoEncoderConfig};
use futures_util::{SinkExt, StreamExt};
use protocol::v1::Caption;
use protocol::v1::server_frame::Frame;
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

use crate::admin::Admin;
use crate::cli::{CaptionsArgs, Target};
use crate::progress::note;
use crate::rtc::{Endpoint, PublishOptions, Publisher};

/// What the streamer says, one utterance each (a launch stream's lines).
pub const SENTENCES: [&str; 8] = [
    "Welcome everyone to the show tonight.",
    "Today we are going to look at the new phone.",
    "The screen is bright and the camera is very good.",
    "Orders open at midnight and delivery takes three days.",
    "Thank you all for watching and for the gifts.",
    "Send your questions in the chat and we will answer them.",
    "The price will be announced at the end of the stream.",
    "See you again next week.",
];

/// The pause between sentences: long enough to end an utterance.
const PAUSE_MS: usize = 1_200;

/// `text` spoken by espeak-ng (US English, 150 words a minute), as 48 kHz
/// stereo.
pub fn say(text: &str) -> anyhow::Result<Vec<i16>> {
    let output = std::process::Command::new("espeak-ng")
        .args(["--stdout", "-v", "en-us", "-s", "150", text])
        .output()
        .context("espeak-ng runs (scripts/install-deps installs it)")?;
    anyhow::ensure!(output.status.success(), "espeak-ng failed");
    Ok(codec::clip::wav_to_stereo_48k(&output.stdout)?)
}

/// `lines` sentences (the list, cycled) one after another with pauses,
/// after a second of silence (the publisher connects while it plays).
pub fn speech(lines: usize) -> anyhow::Result<(Vec<&'static str>, Arc<[i16]>)> {
    let said: Vec<&str> = SENTENCES.iter().copied().cycle().take(lines).collect();
    let pause = vec![0i16; PAUSE_MS * 48 * 2];
    let mut sound = vec![0i16; 1_000 * 48 * 2];
    for sentence in &said {
        sound.extend(say(sentence)?);
        sound.extend(&pause);
    }
    Ok((said, sound.into()))
}

/// Word error rate of `heard` against `said`: word edits (substitutions,
/// insertions, deletions) over the words said, ignoring case and
/// punctuation.
pub fn word_error_rate(said: &str, heard: &str) -> f64 {
    let words = |text: &str| -> Vec<String> {
        text.split_whitespace()
            .map(|w| {
                w.chars()
                    .filter(|c| c.is_alphanumeric() || *c == '\'')
                    .collect::<String>()
                    .to_lowercase()
            })
            .filter(|w| !w.is_empty())
            .collect()
    };
    let (a, b) = (words(said), words(heard));
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut diagonal = row[0];
        row[0] = i;
        for j in 1..=b.len() {
            let substitution = diagonal + usize::from(a[i - 1] != b[j - 1]);
            diagonal = row[j];
            row[j] = substitution.min(row[j] + 1).min(row[j - 1] + 1);
        }
    }
    row[b.len()] as f64 / a.len().max(1) as f64
}

/// A caption frame as a viewer got it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub caption: Caption,
    /// Wall clock at receipt less the end of the speech it covers.
    pub delay_ms: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spread {
    pub samples: usize,
    pub p50: f64,
    pub p95: f64,
    pub max: f64,
}

impl Spread {
    fn of(mut values: Vec<f64>) -> Self {
        values.sort_by(f64::total_cmp);
        let at = |q: f64| {
            values
                .get(((values.len() as f64 * q).ceil() as usize).clamp(1, values.len().max(1)) - 1)
                .copied()
                .unwrap_or(0.0)
        };
        Self {
            samples: values.len(),
            p50: at(0.5),
            p95: at(0.95),
            max: values.last().copied().unwrap_or(0.0),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct CaptionsReport {
    pub lines_said: usize,
    pub speech_s: f64,
    pub final_lines: usize,
    pub partial_lines: usize,
    pub translated_lines: usize,
    pub word_error_rate: f64,
    /// Speech end -> final caption at the viewer (ms).
    pub final_ms: Spread,
    /// Speech end -> Spanish caption at the viewer (ms).
    pub translated_ms: Spread,
    /// The recognizer, from /metrics (p50 over the run).
    pub asr_final_s: Option<f64>,
    pub asr_partial_s: Option<f64>,
    pub realtime_factor_final: Option<f64>,
    pub realtime_factor_partial: Option<f64>,
    pub transcoding: bool,
}

impl CaptionsReport {
    pub fn render(&self) -> String {
        format!(
            "captions: {} lines ({:.0} s of speech), {} final + {} partial, {} translated\n  \
             WER {:.1} %\n  speech end -> final caption: p50 {:.0} ms, p95 {:.0} ms\n  \
             speech end -> translated caption: p50 {:.0} ms, p95 {:.0} ms\n  \
             recognizer p50: final {:.2} s (RTF {:.2}), partial {:.2} s (RTF {:.2})",
            self.lines_said,
            self.speech_s,
            self.final_lines,
            self.partial_lines,
            self.translated_lines,
            self.word_error_rate * 100.0,
            self.final_ms.p50,
            self.final_ms.p95,
            self.translated_ms.p50,
            self.translated_ms.p95,
            self.asr_final_s.unwrap_or(f64::NAN),
            self.realtime_factor_final.unwrap_or(f64::NAN),
            self.asr_partial_s.unwrap_or(f64::NAN),
            self.realtime_factor_partial.unwrap_or(f64::NAN),
        )
    }
}

pub async fn run(target: &Target, args: &CaptionsArgs) -> anyhow::Result<CaptionsReport> {
    let admin = Admin::new(&target.url, &target.admin_key)?;
    admin.health().await?;
    admin.ensure_room(&args.room).await?;
    let (said, sound) = tokio::task::spawn_blocking({
        let lines = args.lines as usize;
        move || speech(lines)
    })
    .await??;
    let speech_s = sound.len() as f64 / 96_000.0;
    let viewer = admin
        .mint("captions-viewer", "viewer", &args.room, &["subscribe"])
        .await?;
    let spoken = watch(&admin, &args.room, &viewer, "").await?;
    let spanish = watch(&admin, &args.room, &viewer, "es").await?;

    let publisher_token = admin
        .mint("captions-host", "host", &args.room, &["publish"])
        .await?;
    let stream = format!("captions-{:x}", crate::wire::unix_nanos() & 0xffff_ffff);
    let whip_path = format!("/whip/{}/{stream}", args.room);
    let whip = Endpoint {
        http: admin.http(),
        base: admin.base(),
        path: &whip_path,
        token: &publisher_token,
    };
    let options = PublishOptions {
        video: VideoEncoderConfig {
            codec: VideoCodec::Vp8,
            width: 320,
            height: 180,
            fps: 15,
            bitrate_bps: 300_000,
            keyframe_interval: 30,
        },
        audio_bitrate_bps: 48_000,
        speech: Some(sound),
    };
    let publisher = Publisher::start(&whip, options).await?;
    if crate::rtc::wait_for(|| publisher.stats().connected(), Duration::from_secs(20))
        .await
        .is_err()
    {
        publisher.close().await;
        bail!("the publisher did not connect");
    }
    note(&format!("speaking {} lines ({speech_s:.0} s)", said.len()));
    // The speech, then time for its last line to be recognized.
    let until = Instant::now() + Duration::from_secs_f64(speech_s + 12.0);
    let (spoken, spanish) = tokio::join!(collect(spoken, until), collect(spanish, until));
    let metrics = admin.metrics().await.unwrap_or_default();
    publisher.close().await;
    let (spoken, spanish) = (spoken?, spanish?);

    let finals: Vec<&Seen> = spoken.iter().filter(|s| s.caption.r#final).collect();
    let translated: Vec<&Seen> = spanish
        .iter()
        .filter(|s| s.caption.r#final && s.caption.lang == "es")
        .collect();
    let heard: Vec<&str> = finals.iter().map(|s| s.caption.text.as_str()).collect();
    let delays = |seen: &[&Seen]| Spread::of(seen.iter().map(|s| s.delay_ms as f64).collect());
    let quantile =
        |name: &str, kind: &str| crate::admin::quantile(&metrics, name, &[("kind", kind)], "0.5");
    Ok(CaptionsReport {
        lines_said: said.len(),
        speech_s,
        final_lines: finals.len(),
        partial_lines: spoken.len() - finals.len(),
        translated_lines: translated.len(),
        word_error_rate: word_error_rate(&said.join(" "), &heard.join(" ")),
        final_ms: delays(&finals),
        translated_ms: delays(&translated),
        asr_final_s: quantile("live_caption_asr_seconds", "final"),
        asr_partial_s: quantile("live_caption_asr_seconds", "partial"),
        realtime_factor_final: quantile("live_caption_asr_realtime_factor", "final"),
        realtime_factor_partial: quantile("live_caption_asr_realtime_factor", "partial"),
        transcoding: args.transcoding,
    })
}

/// A room socket whose session chose `lang` ("": the spoken language).
async fn watch(
    admin: &Admin,
    room: &str,
    token: &str,
    lang: &str,
) -> anyhow::Result<crate::wire::Ws> {
    let url = crate::wire::room_url(admin.base(), room, token);
    let mut ws = crate::wire::open(&url, Duration::from_secs(10))
        .await
        .map_err(|e| anyhow::anyhow!("room socket: {e}"))?;
    if !lang.is_empty() {
        let choose = serde_json::json!({ "type": "captions", "lang": lang }).to_string();
        ws.send(Message::text(choose)).await?;
    }
    Ok(ws)
}

/// Every caption frame until `until`, timed at receipt.
async fn collect(mut ws: crate::wire::Ws, until: Instant) -> anyhow::Result<Vec<Seen>> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::from_std(until);
    loop {
        let message = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) | Ok(None) => break,
            Ok(Some(message)) => message?,
        };
        let Message::Text(text) = message else {
            continue;
        };
        match protocol::decode_server_json(text.as_str()) {
            Ok(Frame::Caption(caption)) => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis() as u64;
                seen.push(Seen {
                    delay_ms: now.saturating_sub(caption.end_ms),
                    caption,
                });
            }
            Ok(Frame::Error(error)) => {
                bail!("the engine refused: {} {}", error.code, error.message)
            }
            _ => {}
        }
    }
    let _ = ws.close(None).await;
    Ok(seen)
}
