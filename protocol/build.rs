//! Generates the Rust types from `proto/` with prost and derives their JSON
//! form with serde attributes, so the two encodings never drift apart.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/live/v1/frames.proto", "proto/live/v1/events.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let mut config = prost_build::Config::new();
    config.bytes([".live.v1.Envelope.payload"]);
    // Every message: serde with defaults for absent fields (proto3 semantics).
    config.message_attribute(
        ".",
        "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
    );
    // A frame is its oneof case: one JSON object tagged by `"type"`, with the
    // case's fields inline.
    for (message, oneof) in [
        (".live.v1.ClientFrame", ".live.v1.ClientFrame.frame"),
        (".live.v1.ServerFrame", ".live.v1.ServerFrame.frame"),
    ] {
        config.message_attribute(message, "#[serde(transparent)]");
        config.enum_attribute(
            oneof,
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(tag = \"type\", rename_all = \"snake_case\")]",
        );
    }
    for mode in [".live.v1.SendDanmaku.mode", ".live.v1.DanmakuItem.mode"] {
        config.field_attribute(mode, "#[serde(with = \"crate::json::danmaku_mode\")]");
    }
    config.field_attribute(
        ".live.v1.DanmakuItem.count",
        "#[serde(skip_serializing_if = \"crate::json::is_single\")]",
    );
    config.field_attribute(
        ".live.v1.Error.retry_after_ms",
        "#[serde(skip_serializing_if = \"crate::json::is_zero\")]",
    );
    config.field_attribute(
        ".live.v1.Error.idempotency_key",
        "#[serde(skip_serializing_if = \"String::is_empty\")]",
    );
    config.field_attribute(
        ".live.v1.Caption.translated_from",
        "#[serde(skip_serializing_if = \"String::is_empty\")]",
    );
    config.field_attribute(".live.v1.Envelope.payload", "#[serde(skip)]");
    config.compile_protos(&protos, &["proto"])?;
    Ok(())
}
