//! Instance logs as the management API serves them: what one line is (instance,
//! process, time, text), what a reader asks for, and the `LogSource` a runtime
//! driver implements (the local driver reads its files, the Kubernetes driver the
//! pods' logs). How lines are stored is the driver's business, not this module's.

use std::time::{SystemTime, UNIX_EPOCH};

use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One line an instance's function or sidecar wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogLine {
    pub instance: String,
    /// `function` or `sidecar`.
    pub process: String,
    /// When the line was written, wall-clock milliseconds.
    pub at_ms: u64,
    /// The same time as RFC 3339 (UTC, milliseconds), for people.
    pub at: String,
    pub line: String,
}

impl LogLine {
    pub fn new(instance: &str, process: &str, at_ms: u64, line: impl Into<String>) -> Self {
        LogLine {
            instance: instance.to_owned(),
            process: process.to_owned(),
            at_ms,
            at: rfc3339_ms(at_ms),
            line: line.into(),
        }
    }
}

/// What a reader asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    pub service: String,
    /// One instance only; `None`: every instance of the service.
    pub instance: Option<String>,
    /// Lines written at or after this time only.
    pub since_ms: Option<u64>,
    /// Keep the stream open and send lines as they are written.
    pub follow: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{service} has no instance {instance}; its instances with logs: {}", names(.known))]
    UnknownInstance {
        service: String,
        instance: String,
        known: Vec<String>,
    },
    #[error("cannot read the logs: {0}")]
    Unavailable(String),
}

fn names(known: &[String]) -> String {
    if known.is_empty() {
        "none".to_owned()
    } else {
        known.join(", ")
    }
}

/// Where a runtime driver keeps its instances' output.
#[async_trait::async_trait]
pub trait LogSource: Send + Sync {
    /// The instances of `service` that have logs (running or not), sorted.
    async fn instances(&self, service: &str) -> Result<Vec<String>, LogError>;

    /// The lines the query asks for, oldest first, every instance's interleaved by
    /// time; with `follow` the stream stays open and goes on with new lines (and
    /// new instances) until the reader leaves.
    async fn read(&self, query: LogQuery) -> Result<BoxStream<'static, LogLine>, LogError>;
}

/// Wall-clock milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_millis() as u64)
        .unwrap_or_default()
}

/// `at_ms` as `2026-12-07T12:00:00.123Z`.
pub fn rfc3339_ms(at_ms: u64) -> String {
    let (seconds, millis) = (at_ms / 1000, at_ms % 1000);
    let (days, of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

/// Reads an RFC 3339 time in UTC (`Z`) with any fraction of a second, as the
/// local runtime's log files and Kubernetes' log timestamps write them.
pub fn parse_rfc3339_ms(text: &str) -> Option<u64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut date = date.splitn(3, '-').map(str::parse::<i64>);
    let (year, month, day) = (date.next()?.ok()?, date.next()?.ok()?, date.next()?.ok()?);
    let (clock, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut clock = clock.splitn(3, ':').map(str::parse::<u64>);
    let (hours, minutes, seconds) = (clock.next()?.ok()?, clock.next()?.ok()?, clock.next()?.ok()?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hours > 23 || minutes > 59 || seconds > 60 {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let millis = format!("{fraction:0<3}")[..3].parse::<u64>().ok()?;
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    Some(((days * 86_400 + hours * 3600 + minutes * 60 + seconds) * 1000) + millis)
}

/// Howard Hinnant's days-from-civil: days since 1970-01-01 of a proleptic
/// Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_and_read_back() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_ms(1_796_644_800_007), "2026-12-07T12:00:00.007Z");
        for at_ms in [0, 951_782_400_123, 1_796_644_800_007, 4_102_444_799_999] {
            assert_eq!(parse_rfc3339_ms(&rfc3339_ms(at_ms)), Some(at_ms));
        }
    }

    #[test]
    fn kubernetes_nanosecond_timestamps_are_read_to_the_millisecond() {
        assert_eq!(
            parse_rfc3339_ms("2026-12-07T12:00:00.007654321Z"),
            Some(1_796_644_800_007)
        );
        assert_eq!(parse_rfc3339_ms("2026-12-07T12:00:00Z"), Some(1_796_644_800_000));
    }

    #[test]
    fn other_text_is_not_a_time() {
        for text in [
            "",
            "hello",
            "2026-13-07T12:00:00Z",
            "2026-12-07 12:00:00Z",
            "2026-12-07T12:00:00.x1Z",
        ] {
            assert_eq!(parse_rfc3339_ms(text), None, "{text:?}");
        }
    }

    #[test]
    fn an_unknown_instance_names_the_known_ones() {
        let error = LogError::UnknownInstance {
            service: "cart".into(),
            instance: "cart-0".into(),
            known: vec!["cart-1a".into(), "cart-2b".into()],
        };
        assert_eq!(
            error.to_string(),
            "cart has no instance cart-0; its instances with logs: cart-1a, cart-2b"
        );
    }
}
