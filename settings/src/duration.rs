//! Durations as users write them ("30s", "5m", "1h30m", "250ms") and as Strata prints
//! them: the one parser and printer of that format, and [`HumanDuration`], the type a
//! duration setting has, which travels as that text. Milliseconds inside.

use std::{fmt, str::FromStr, time::Duration};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a duration looks like, for schemas: whole numbers with a unit each, or `0`.
pub const DURATION_PATTERN: &str = "^(0|([0-9]+(ms|s|m|h))+)$";

/// Parses `1h30m`, `30s`, `250ms`, `0`... into milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(0);
    }
    if text.is_empty() {
        return Err("a duration must not be empty (e.g. \"30s\", \"5m\")".to_owned());
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "invalid duration {text:?}: expected a number followed by ms, s, m or h"
            ));
        }
        let value: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration {text:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.chars().take_while(char::is_ascii_alphabetic).count();
        let factor = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(format!("invalid duration {text:?}: units are ms, s, m and h")),
        };
        rest = &rest[unit_len..];
        total = value
            .checked_mul(factor)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(|| format!("invalid duration {text:?}: too large"))?;
    }
    Ok(total)
}

/// The shortest exact spelling in one unit: 30000 -> "30s", 90000 -> "90s", 1500 -> "1500ms".
pub fn format_duration_ms(ms: u64) -> String {
    match ms {
        0 => "0s".to_owned(),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1_000 == 0 => format!("{}s", ms / 1_000),
        ms => format!("{ms}ms"),
    }
}

/// A duration setting: read from and written as text such as `"30s"`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(u64);

impl HumanDuration {
    pub const fn from_millis(ms: u64) -> Self {
        HumanDuration(ms)
    }

    pub const fn from_secs(secs: u64) -> Self {
        HumanDuration(secs * 1_000)
    }

    pub const fn as_millis(self) -> u64 {
        self.0
    }

    pub const fn as_duration(self) -> Duration {
        Duration::from_millis(self.0)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration_ms(self.0))
    }
}

impl fmt::Debug for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// Why a text is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidDuration(String);

impl FromStr for HumanDuration {
    type Err = InvalidDuration;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse_duration_ms(text).map(HumanDuration).map_err(InvalidDuration)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

const DESCRIPTION: &str =
    "A duration: whole numbers each followed by ms, s, m or h, e.g. \"30s\", \"1m30s\", \"250ms\"";

#[cfg(feature = "utoipa")]
impl utoipa::PartialSchema for HumanDuration {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(DURATION_PATTERN))
            .description(Some(DESCRIPTION))
            .examples(["30s"])
            .into()
    }
}

#[cfg(feature = "utoipa")]
impl utoipa::ToSchema for HumanDuration {}

#[cfg(feature = "schemars")]
impl schemars::JsonSchema for HumanDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "HumanDuration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": DESCRIPTION,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_round_trip() {
        for (text, ms) in [
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("250ms", 250),
            ("0", 0),
        ] {
            assert_eq!(parse_duration_ms(text), Ok(ms), "{text}");
        }
        assert_eq!(parse_duration_ms("1m30s"), Ok(90_000));
        assert_eq!(format_duration_ms(90_000), "90s");
        assert_eq!(format_duration_ms(30_000), "30s");
        assert_eq!(format_duration_ms(1_500), "1500ms");
    }

    #[test]
    fn rejects_garbage() {
        for text in ["", "s", "10", "10x", "-5s", "1.5s", "99999999999999999999h"] {
            assert!(parse_duration_ms(text).is_err(), "{text:?} should be refused");
        }
    }

    #[test]
    fn travels_as_text() {
        let grace: HumanDuration = serde_json::from_str("\"1m30s\"").unwrap();
        assert_eq!(grace, HumanDuration::from_secs(90));
        assert_eq!(serde_json::to_string(&grace).unwrap(), "\"90s\"");
        let refused = serde_json::from_str::<HumanDuration>("\"soon\"").unwrap_err();
        assert!(refused.to_string().contains("invalid duration \"soon\""), "{refused}");
        assert!(
            serde_json::from_str::<HumanDuration>("30000").is_err(),
            "a bare number has no unit"
        );
    }
}
