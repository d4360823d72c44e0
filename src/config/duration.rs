//! Durations in settings and experiments are human strings ("250ms", "1m30s").

/// Serde for `Duration` as a human string ("250ms", "1m30s"); negative values are refused
/// with a message that says so.
pub mod duration_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(serde::de::Error::custom)
    }

    /// Parses "250ms", "1m30s", "2h"; explains what is wrong otherwise.
    pub fn parse(text: &str) -> Result<Duration, String> {
        let t = text.trim();
        if t.starts_with('-') {
            return Err(format!(
                "`{t}` is negative; durations must be zero or more, like 250ms or 30s"
            ));
        }
        if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!(
                "`{t}` has no unit; write it with one, like {t}ms or {t}s"
            ));
        }
        humantime::parse_duration(t)
            .map_err(|e| format!("`{t}` is not a duration ({e}); write it like 250ms, 30s or 2m"))
    }
}

/// Like [`duration_serde`], for `Option<Duration>`.
pub mod opt_duration_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| super::duration_serde::parse(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}
