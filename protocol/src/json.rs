//! serde helpers referenced by the attributes `build.rs` puts on the generated
//! types: enums travel as lower-case names in JSON, not as numbers.

/// `DanmakuMode` as `"scroll" | "top" | "bottom"`.
pub mod danmaku_mode {
    use crate::v1::DanmakuMode;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(value: &i32, serializer: S) -> Result<S::Ok, S::Error> {
        let mode = DanmakuMode::try_from(*value).unwrap_or_default();
        serializer.serialize_str(&mode.as_str_name().to_ascii_lowercase())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i32, D::Error> {
        let name = String::deserialize(deserializer)?;
        DanmakuMode::from_str_name(&name.to_ascii_uppercase())
            .filter(|_| name.chars().all(|c| c.is_ascii_lowercase()))
            .map(|mode| mode as i32)
            .ok_or_else(|| {
                D::Error::custom(format!(
                    "unknown mode `{name}`, expected `scroll`, `top` or `bottom`"
                ))
            })
    }
}

pub fn is_single(count: &u32) -> bool {
    *count <= 1
}

pub fn is_zero(value: &u64) -> bool {
    *value == 0
}
