//! Durations on the command line, spelled as the REST API spells them (`500ms`,
//! `30s`, `2m`, `1h30m`): one parser, `strata-settings`'.

use std::time::Duration;

pub fn parse(text: &str) -> Result<Duration, String> {
    strata_settings::parse_duration_ms(text).map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_api_accepts() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse("5").is_err());
        assert!(parse("-1s").is_err());
        assert!(parse("1d").is_err());
    }
}
