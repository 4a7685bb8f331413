//! Durations as users write them ("30s", "5m", "1h30m", "250ms") and as the API prints
//! them; the registry itself stores milliseconds.

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
        for text in ["", "s", "10", "10x", "-5s", "1.5s"] {
            assert!(parse_duration_ms(text).is_err(), "{text:?} should be refused");
        }
    }
}
