//! Live captions end to end: English sentences spoken by espeak-ng are
//! published as a stream's sound (webrtc-rs, Opus); the engine recognizes
//! them (Whisper tiny.en through CTranslate2), sends English `caption`
//! frames to viewers who kept the spoken language and Spanish ones
//! (Apertium) to a viewer who chose Spanish, and writes both as WebVTT
//! into the stream's live HLS and its VOD. Also: captions sent as text,
//! and what is not speech (silence, noise, music) makes no caption.

mod common;

use std::time::Duration;

use common::recording::{live_hls, publish_speaking, ready_vod, transcoding_engine, unpublish};
use common::{Client, TestEngine, whisper_models};
use load_tests::captions::{speech, word_error_rate};
use protocol::v1::Caption;
use protocol::v1::server_frame::Frame;
use serde_json::json;

/// A caption frame and how long after its sound ended it arrived.
struct Received {
    caption: Caption,
    delay_ms: u64,
}

/// Caption frames until `finals` final ones came (or nothing came for
/// `quiet`).
async fn captions(client: &mut Client, finals: usize, quiet: Duration) -> Vec<Received> {
    let mut received = Vec::new();
    while received
        .iter()
        .filter(|r: &&Received| r.caption.r#final)
        .count()
        < finals
    {
        match client.next_frame_within(quiet).await {
            Some(Frame::Caption(caption)) => received.push(Received {
                delay_ms: actors::now_ms().saturating_sub(caption.end_ms),
                caption,
            }),
            Some(_) => {}
            None => break,
        }
    }
    received
}

fn finals(received: &[Received]) -> Vec<&Received> {
    received.iter().filter(|r| r.caption.r#final).collect()
}

fn percentile(values: &mut [u64], p: f64) -> u64 {
    values.sort_unstable();
    let rank = ((values.len() as f64 * p).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// A viewer of room `r1` on the room socket.
async fn viewer(t: &TestEngine, user: &str) -> Client {
    let token = t.token(user, "r1", &["subscribe"]).await;
    Client::connect(&t.ws_url("r1"), &token, None).await
}

/// `{"type":"captions","lang":...}` from `client`.
async fn choose(client: &mut Client, lang: &str) {
    client
        .send_json(json!({"type": "captions", "lang": lang}))
        .await;
}

/// An engine that transcodes (for HLS and VOD), recognizes speech with
/// Whisper (base for final lines, tiny.en for partial ones) and
/// translates English to Spanish with Apertium.
async fn captioning_engine() -> TestEngine {
    let models = whisper_models();
    transcoding_engine(|c| {
        c.captions.asr = true;
        c.captions.model_dir = models.join("whisper-base");
        c.captions.partial_model_dir = models.join("whisper-tiny.en");
        c.captions.translator = "apertium".into();
        c.captions.translate_to = vec!["es".into()];
        c.captions.recorded = vec!["es".into()];
    })
    .await
}

/// `GET` a file of a signed HLS or VOD base URL, as text.
async fn fetch(t: &TestEngine, base: &str, file: &str) -> (u16, String) {
    let response = t
        .http
        .get(format!("{}{base}/{file}", t.base))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spoken_english_becomes_english_and_spanish_captions_live_and_in_the_recording() {
    let t = captioning_engine().await;
    t.create_room("r1").await;
    let mut spoken = viewer(&t, "v1").await;
    let mut spanish = viewer(&t, "v2").await;
    choose(&mut spanish, "es").await;
    match spanish.next_frame().await {
        Frame::CaptionChoice(choice) => {
            assert_eq!(choice.lang, "es");
            assert_eq!(choice.available, ["en", "es"]);
        }
        other => panic!("expected caption_choice, got {other:?}"),
    }
    // A language nobody translates into is refused by name, with the list.
    choose(&mut spanish, "xx").await;
    match spanish.next_frame().await {
        Frame::Error(error) => {
            assert_eq!(error.code, "unsupported_language");
            assert!(error.message.contains("en, es"), "{}", error.message);
        }
        other => panic!("expected an error, got {other:?}"),
    }

    let host = t.token("host", "r1", &["publish", "subscribe"]).await;
    let (said, speech) = speech(8).unwrap();
    let seconds = speech.len() as f64 / 96_000.0;
    let publisher = publish_speaking(&t, "/whip/r1/main", &host, Some(speech)).await;
    let signed = live_hls(&t, "main", &host, None).await;
    let recording = signed["recording_id"].as_str().unwrap().to_owned();
    let live_base = signed["url"]
        .as_str()
        .unwrap()
        .trim_end_matches("/master.m3u8")
        .to_owned();

    let quiet = Duration::from_secs(20);
    // Both viewers read at once: each frame is timed as it arrives.
    let (english, translated) = tokio::join!(
        captions(&mut spoken, said.len(), quiet),
        captions(&mut spanish, said.len(), quiet)
    );

    let english_finals = finals(&english);
    let heard: Vec<&str> = english_finals
        .iter()
        .map(|r| r.caption.text.as_str())
        .collect();
    let said = said.join(" ");
    let wer = word_error_rate(&said, &heard.join(" "));
    println!(
        "said:  {said}\nheard: {}\nWER {:.1} % over {seconds:.1} s of speech",
        heard.join(" "),
        wer * 100.0
    );
    assert!(
        wer <= 0.20,
        "word error rate {:.1} % above 20 %",
        wer * 100.0
    );
    for r in &english {
        assert_eq!(r.caption.lang, "en");
        assert_eq!(r.caption.source, "asr");
        assert_eq!(r.caption.stream, "main");
        assert!(
            r.caption.translated_from.is_empty(),
            "the spoken-language viewer gets originals only"
        );
        assert!(r.caption.start_ms < r.caption.end_ms);
    }
    assert!(
        english.len() > english_finals.len(),
        "partial lines come while a sentence is spoken"
    );

    // Spanish: every final line, translated by Apertium (the same line
    // through a pipeline of the test's own gives the same text).
    let spanish_finals = finals(&translated);
    assert_eq!(
        spanish_finals.len(),
        english_finals.len(),
        "one Spanish line per English line"
    );
    let apertium =
        captions::Apertium::start(&captions::translate::debian_modes_dir(), &[("en", "es")]);
    for (es, en) in spanish_finals.iter().zip(&english_finals) {
        assert_eq!(es.caption.lang, "es");
        assert_eq!(es.caption.translated_from, "en");
        assert_eq!(
            (es.caption.start_ms, es.caption.end_ms),
            (en.caption.start_ms, en.caption.end_ms)
        );
        let expected = captions::Translator::translate(&apertium, &en.caption.text, "en", "es")
            .await
            .unwrap();
        assert_eq!(es.caption.text, expected);
        assert_ne!(es.caption.text, en.caption.text);
    }
    assert!(
        translated.iter().all(|r| r.caption.lang == "es"),
        "the Spanish viewer gets Spanish only"
    );

    let mut to_english: Vec<u64> = english_finals.iter().map(|r| r.delay_ms).collect();
    let mut to_spanish: Vec<u64> = spanish_finals.iter().map(|r| r.delay_ms).collect();
    println!(
        "speech end -> final caption: p50 {} ms, p95 {} ms; -> translated: p50 {} ms, p95 {} ms ({} lines)",
        percentile(&mut to_english, 0.5),
        percentile(&mut to_english, 0.95),
        percentile(&mut to_spanish, 0.5),
        percentile(&mut to_spanish, 0.95),
        to_english.len(),
    );
    for line in t.metrics_text().await.lines() {
        if line.starts_with("live_caption_")
            && (line.contains("quantile=\"0.5\"")
                || line.contains("quantile=\"0.95\"")
                || line.contains("_total"))
        {
            println!("{line}");
        }
    }

    // Live HLS: the master names both subtitle tracks; the English one
    // already holds cues (segments are cut 10 s behind the live edge).
    let (status, master) = fetch(&t, &live_base, "master.m3u8").await;
    assert_eq!(status, 200);
    assert!(master.contains("TYPE=SUBTITLES"), "{master}");
    assert!(
        master.contains("subs-en/index.m3u8") && master.contains("subs-es/index.m3u8"),
        "{master}"
    );
    let (status, playlist) = fetch(&t, &live_base, "subs-en/index.m3u8").await;
    assert_eq!(status, 200);
    let first = playlist
        .lines()
        .find(|l| l.ends_with(".vtt"))
        .expect("a live subtitle segment");
    let (status, segment) = fetch(&t, &live_base, &format!("subs-en/{first}")).await;
    assert_eq!(status, 200);
    assert!(
        segment.starts_with("WEBVTT") && segment.contains("X-TIMESTAMP-MAP"),
        "{segment}"
    );

    unpublish(&t, publisher, "/whip/r1/main", &host).await;
    let vod = ready_vod(&t, &recording, &host).await;
    let vod_base = vod["playlist_url"]
        .as_str()
        .unwrap()
        .trim_end_matches("/master.m3u8")
        .to_owned();
    let (status, master) = fetch(&t, &vod_base, "master.m3u8").await;
    assert_eq!(status, 200);
    assert!(master.contains("TYPE=SUBTITLES"), "{master}");
    for (lang, lines) in [("en", &english_finals), ("es", &spanish_finals)] {
        // The subtitle playlist ends, and the whole text is one file.
        let mut ended = false;
        for _ in 0..50 {
            let (_, playlist) = fetch(&t, &vod_base, &format!("subs-{lang}/index.m3u8")).await;
            ended = playlist.contains("#EXT-X-ENDLIST");
            if ended {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            ended,
            "the {lang} subtitle playlist ends with the recording"
        );
        let (status, whole) = fetch(&t, &vod_base, &format!("subs-{lang}/all.vtt")).await;
        assert_eq!(status, 200);
        for line in lines.iter() {
            assert!(
                whole.contains(&line.caption.text.replace('&', "&amp;")),
                "{lang}: {whole}"
            );
        }
        // Cue times are the recording's media time, inside the recording.
        assert!(
            !whole.contains("\n00:00:00.000 --> 00:00:00.000"),
            "{whole}"
        );
    }
    t.shutdown().await;
}

/// `seconds` of 48 kHz stereo made by `sample(t)` (t in seconds).
fn synth(seconds: f64, sample: impl Fn(f64) -> f64) -> Vec<i16> {
    let frames = (seconds * 48_000.0) as usize;
    (0..frames)
        .flat_map(|i| {
            let value = (sample(i as f64 / 48_000.0).clamp(-1.0, 1.0) * 32_000.0) as i16;
            [value, value]
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silence_noise_and_music_make_no_caption_and_speech_after_them_still_does() {
    let t = captioning_engine().await;
    t.create_room("r1").await;
    let mut viewer = viewer(&t, "v1").await;
    let mut sound = synth(2.0, |_| 0.0);
    // Steady noise (a fan): a xorshift, loud.
    let state = std::cell::Cell::new(0x2545_f491_4f6c_dd1d_u64);
    sound.extend(synth(4.0, |_| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        (x as f64 / u64::MAX as f64 - 0.5) * 0.3
    }));
    // Music: a chord that changes every half second, plucked (each note
    // decays), with a beat: loud, not steady, not speech.
    let chords = [
        [220.0, 277.2, 329.6],
        [196.0, 246.9, 293.7],
        [174.6, 220.0, 261.6],
        [196.0, 246.9, 311.1],
    ];
    sound.extend(synth(6.0, |t| {
        let chord = chords[(t * 2.0) as usize % chords.len()];
        let pluck = (-(t * 2.0).fract() * 4.0).exp();
        chord
            .iter()
            .map(|f| (t * f * std::f64::consts::TAU).sin())
            .sum::<f64>()
            * 0.2
            * pluck
    }));
    sound.extend(synth(1.5, |_| 0.0));
    let sentence = "Thank you all for watching and for the gifts.";
    sound.extend(load_tests::captions::say(sentence).unwrap());
    sound.extend(synth(1.5, |_| 0.0));
    let host = t.token("host", "r1", &["publish"]).await;
    let publisher = publish_speaking(&t, "/whip/r1/main", &host, Some(sound.into())).await;
    // Nothing comes for the 13.5 s before the sentence.
    let lines = captions(&mut viewer, 1, Duration::from_secs(30)).await;
    let finals = finals(&lines);
    assert_eq!(
        finals.len(),
        1,
        "one line: the sentence, nothing for the rest: {:?}",
        lines.iter().map(|l| &l.caption.text).collect::<Vec<_>>()
    );
    let wer = word_error_rate(sentence, &finals[0].caption.text);
    assert!(wer <= 0.2, "{:?}", finals[0].caption.text);
    // What the segmenter let through and the recognizer found no words in
    // is counted, not shown.
    let not_speech = t
        .metric("live_caption_not_speech_total")
        .await
        .unwrap_or(0.0);
    println!("utterances without speech: {not_speech}");
    publisher.close().await;
    t.shutdown().await;
}

/// An engine with captions but no recognition: lines come as text.
async fn text_captions_engine() -> TestEngine {
    TestEngine::start_with(|c| {
        c.captions.translator = "apertium".into();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn captions_sent_as_text_reach_each_viewer_in_the_language_chosen() {
    let t = text_captions_engine().await;
    t.create_room("r1").await;
    let mut spoken = viewer(&t, "v1").await;
    let mut spanish = viewer(&t, "v2").await;
    let mut off = viewer(&t, "v3").await;
    for (client, lang) in [(&mut spanish, "es"), (&mut off, "off")] {
        choose(client, lang).await;
        assert!(matches!(client.next_frame().await, Frame::CaptionChoice(c) if c.lang == lang));
    }
    let host = t.token("host", "r1", &["publish"]).await;
    let line = json!({"stream": "main", "text": "Orders open at midnight."});
    // Not live yet: refused by name.
    let (status, body) = t.post_json("/v1/rooms/r1/captions", &host, &line).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("stream_not_live")),
        "{body}"
    );
    let publisher = common::recording::publish(&t, "/whip/r1/main", &host).await;
    let (status, body) = t.post_json("/v1/rooms/r1/captions", &host, &line).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["source"], "text");
    assert_eq!(body["lang"], "en");

    let english = next_caption(&mut spoken).await;
    assert_eq!(
        (
            english.text.as_str(),
            english.lang.as_str(),
            english.source.as_str()
        ),
        ("Orders open at midnight.", "en", "text")
    );
    assert!(english.r#final && english.end_ms > english.start_ms);
    let translated = next_caption(&mut spanish).await;
    assert_eq!(translated.lang, "es");
    assert_eq!(translated.translated_from, "en");
    assert!(
        translated.text.to_lowercase().contains("medianoche"),
        "{}",
        translated.text
    );
    assert_eq!(
        (translated.start_ms, translated.end_ms),
        (english.start_ms, english.end_ms)
    );
    // The viewer who turned captions off gets none (a danmaku after the
    // line arrives, the line never does).
    let mut chatter = t.chatter("c", "r1").await;
    chatter.send_danmaku("hello", "m1").await;
    loop {
        match off.next_frame().await {
            Frame::Caption(caption) => panic!("captions are off, got {caption:?}"),
            Frame::Danmaku(_) | Frame::Batch(_) => break,
            _ => {}
        }
    }

    // Bad requests: a clear error each, nothing sent.
    let watcher = t.token("v", "r1", &["subscribe"]).await;
    for (token, body, status, code) in [
        (
            &watcher,
            json!({"stream": "main", "text": "hi"}),
            403,
            "forbidden",
        ),
        (
            &host,
            json!({"stream": "main", "text": "   "}),
            400,
            "bad_request",
        ),
        (
            &host,
            json!({"stream": "main", "text": "x".repeat(501)}),
            400,
            "bad_request",
        ),
        (
            &host,
            json!({"stream": "main", "text": "hi", "lang": "EN!"}),
            400,
            "bad_request",
        ),
        (
            &host,
            json!({"stream": "main", "text": "hi", "colour": "red"}),
            422,
            "bad_request",
        ),
    ] {
        let (got, answer) = t.post_json("/v1/rooms/r1/captions", token, &body).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {answer}"
        );
    }
    assert!(
        spoken
            .next_frame_within(Duration::from_millis(300))
            .await
            .is_none_or(|f| !matches!(f, Frame::Caption(_)))
    );
    publisher.close().await;
    t.shutdown().await;
}

async fn next_caption(client: &mut Client) -> Caption {
    loop {
        if let Frame::Caption(caption) = client.next_frame().await {
            return caption;
        }
    }
}

#[tokio::test]
async fn a_session_without_captions_on_the_server_is_told_so() {
    let t = TestEngine::start_with(|c| c.captions.enabled = false).await;
    t.create_room("r1").await;
    let mut client = viewer(&t, "v").await;
    choose(&mut client, "es").await;
    match client.next_frame().await {
        Frame::Error(error) => assert_eq!(error.code, "unavailable"),
        other => panic!("expected an error, got {other:?}"),
    }
    let host = t.token("host", "r1", &["publish"]).await;
    let (status, body) = t
        .post_json(
            "/v1/rooms/r1/captions",
            &host,
            &json!({"stream": "main", "text": "hi"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("unavailable"))
    );
    t.shutdown().await;
}
