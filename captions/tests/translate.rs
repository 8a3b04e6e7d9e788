//! Translation backends for real: Debian's Apertium (`apertium-eng-spa`)
//! kept running, and the LibreTranslate-compatible HTTP backend against a
//! fake of that API (LibreTranslate itself needs models downloaded from
//! the internet, which this machine cannot reach; the fake answers as
//! its documented API does).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use axum::Json;
use axum::routing::post;
use captions::translate::debian_modes_dir;
use captions::{Apertium, Cached, LibreTranslate, TranslateError, Translator};
use serde_json::{Value, json};

#[tokio::test]
async fn apertium_translates_line_after_line_through_one_warm_pipeline() {
    let apertium = Apertium::start(&debian_modes_dir(), &[("en", "es"), ("en", "xx")]);
    assert_eq!(
        apertium.pairs(),
        [("en".to_owned(), "es".to_owned())],
        "the pair installed, not the one that is not"
    );
    let lines = [
        ("Good morning everyone.", "Buenos días"),
        ("The new phone comes in two colours.", "teléfono"),
        ("Orders open at midnight.", "medianoche"),
        ("Is it red? Yes!", "Sí"),
    ];
    for (english, expected) in lines {
        let started = Instant::now();
        let spanish = apertium.translate(english, "en", "es").await.unwrap();
        println!("{english} -> {spanish} ({:?})", started.elapsed());
        assert!(spanish.contains(expected), "{english} -> {spanish}");
    }
    // The sentence's own punctuation survives; reserved characters are
    // escaped on the way in, so prices and brackets do not break a line.
    let spanish = apertium
        .translate("It costs 799$ [launch price] <today>.", "en", "es")
        .await
        .unwrap();
    assert!(spanish.contains("799$"), "{spanish}");
    assert!(spanish.ends_with('.'), "{spanish}");
    assert_eq!(
        apertium.translate("Hello", "en", "fr").await,
        Err(TranslateError::Unsupported {
            from: "en".into(),
            to: "fr".into()
        })
    );
}

/// The LibreTranslate API's `/translate`, answering from a phrasebook,
/// counting its calls.
async fn fake_libretranslate(calls: Arc<AtomicUsize>) -> String {
    let app = axum::Router::new().route(
        "/translate",
        post(move |Json(body): Json<Value>| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let text = match (body["q"].as_str(), body["target"].as_str()) {
                    (Some("Thank you!"), Some("es")) => "¡Gracias!",
                    (Some(other), _) => other,
                    _ => "",
                };
                assert_eq!(body["format"], "text");
                Json(json!({ "translatedText": text }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/")
}

#[tokio::test]
async fn an_http_backend_behind_the_cache_is_asked_once_per_phrase() {
    let calls = Arc::new(AtomicUsize::new(0));
    let url = fake_libretranslate(calls.clone()).await;
    let pairs = vec![("en".to_owned(), "es".to_owned())];
    let translator = Cached::new(LibreTranslate::new(&url, None, pairs), 100);
    for _ in 0..3 {
        assert_eq!(
            translator
                .translate("Thank you!", "en", "es")
                .await
                .unwrap(),
            "¡Gracias!"
        );
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "repeats come from the cache"
    );
    assert!(matches!(
        translator.translate("Thank you!", "en", "de").await,
        Err(TranslateError::Unsupported { .. })
    ));
    let down = LibreTranslate::new("http://127.0.0.1:9", None, vec![("en".into(), "es".into())]);
    assert!(matches!(
        down.translate("Hi", "en", "es").await,
        Err(TranslateError::Backend(_))
    ));
}
