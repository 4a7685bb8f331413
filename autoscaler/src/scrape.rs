//! Reads a sidecar's Prometheus text exposition (`/metrics`) into the two numbers the
//! autoscaler scales on, per service: requests in flight and the request counter; and turns
//! counter readings into rates. Owns parsing and fetching, not what the numbers mean.

use std::collections::BTreeMap;
use std::time::Duration;

use thiserror::Error;

use crate::window::Timestamp;

/// The sidecar's gauge of requests being handled, labelled by service.
pub const IN_FLIGHT_METRIC: &str = "strata_proxy_in_flight_requests";
/// The sidecar's counter of answered requests, labelled by service, method, protocol, code.
pub const REQUESTS_METRIC: &str = "strata_proxy_requests_total";

/// A sidecar's exposition is a few kilobytes; anything this large is not one.
pub const MAX_EXPOSITION_BYTES: usize = 4 * 1024 * 1024;

/// What one instance reported, by the `service` label's value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceMetrics {
    pub services: BTreeMap<String, ServiceCounts>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ServiceCounts {
    pub in_flight: f64,
    /// The request counter, summed over method, protocol and code.
    pub requests_total: f64,
}

/// Where and why an exposition could not be read (lines count from 1).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

#[derive(Debug, Error)]
pub enum ScrapeError {
    #[error("could not create the HTTP client for scraping: {0}")]
    Client(#[source] reqwest::Error),
    #[error("could not fetch metrics from {url}: {source}")]
    Fetch {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("metrics endpoint {url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("metrics from {url} exceed {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("metrics from {url} are not UTF-8 text")]
    NotText { url: String },
    #[error("metrics from {url} are malformed: {source}")]
    Malformed {
        url: String,
        #[source]
        source: ParseError,
    },
}

/// One sample line: `name{label="value",...} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(label, _)| label == name)
            .map(|(_, value)| value.as_str())
    }
}

impl InstanceMetrics {
    /// Parses a whole exposition. Like Prometheus itself it is strict: one malformed line
    /// fails the scrape with its line number, rather than scaling on half a reading.
    pub fn parse(text: &str) -> Result<InstanceMetrics, ParseError> {
        let mut metrics = InstanceMetrics::default();
        for (index, line) in text.lines().enumerate() {
            let line_number = index + 1;
            let error = |message: String| ParseError {
                line: line_number,
                message,
            };
            let Some(sample) = parse_line(line).map_err(error)? else {
                continue;
            };
            let is_in_flight = sample.name == IN_FLIGHT_METRIC;
            if !is_in_flight && sample.name != REQUESTS_METRIC {
                continue;
            }
            let Some(service) = sample.label("service") else {
                return Err(error(format!("{} has no service label", sample.name)));
            };
            if !(sample.value.is_finite() && sample.value >= 0.0) {
                return Err(error(format!(
                    "{} has value {}, not a count",
                    sample.name, sample.value
                )));
            }
            let counts = metrics.services.entry(service.to_owned()).or_default();
            if is_in_flight {
                counts.in_flight += sample.value;
            } else {
                counts.requests_total += sample.value;
            }
        }
        Ok(metrics)
    }

    /// The instance's load over all its services. A sidecar serves one deployment, whose
    /// function may expose several gRPC services; the deployment scales on their sum.
    pub fn total(&self) -> ServiceCounts {
        self.services
            .values()
            .fold(ServiceCounts::default(), |sum, counts| ServiceCounts {
                in_flight: sum.in_flight + counts.in_flight,
                requests_total: sum.requests_total + counts.requests_total,
            })
    }
}

/// Parses one line of the text format: `Ok(None)` for blank and comment lines.
pub fn parse_line(line: &str) -> Result<Option<Sample>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let mut cursor = Cursor { rest: line };
    let name = cursor.name(
        |c| c.is_ascii_alphabetic() || c == '_' || c == ':',
        |c| c.is_ascii_alphanumeric() || c == '_' || c == ':',
    );
    if name.is_empty() {
        return Err(format!("expected a metric name at {:?}", abbreviate(line)));
    }
    let labels = if cursor.eat('{') { cursor.labels()? } else { Vec::new() };
    let rest = cursor.rest;
    if rest.is_empty() {
        return Err(format!("{name} has no value"));
    }
    if !rest.starts_with([' ', '\t']) {
        return Err(format!("expected a space and a value after {name}"));
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or_else(|| format!("{name} has no value"))?;
    let value = parse_value(value).ok_or_else(|| format!("{name} has an invalid value {:?}", abbreviate(value)))?;
    if let Some(timestamp) = fields.next() {
        if timestamp.parse::<i64>().is_err() {
            return Err(format!("{name} has an invalid timestamp {:?}", abbreviate(timestamp)));
        }
    }
    if let Some(extra) = fields.next() {
        return Err(format!("unexpected {:?} after the value of {name}", abbreviate(extra)));
    }
    Ok(Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    }))
}

/// Prometheus spells the special values `+Inf`, `-Inf` and `NaN`; everything else is a
/// plain decimal or exponent number.
fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ if text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E')) =>
        {
            text.parse().ok()
        }
        _ => None,
    }
}

/// Keeps error messages short when the input is a megabyte of garbage.
fn abbreviate(text: &str) -> String {
    const MAX_CHARS: usize = 40;
    if text.chars().count() <= MAX_CHARS {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(MAX_CHARS).collect();
    short.push('…');
    short
}

struct Cursor<'a> {
    rest: &'a str,
}

impl<'a> Cursor<'a> {
    fn eat(&mut self, expected: char) -> bool {
        match self.rest.strip_prefix(expected) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn skip_spaces(&mut self) {
        self.rest = self.rest.trim_start_matches([' ', '\t']);
    }

    fn name(&mut self, first: impl Fn(char) -> bool, then: impl Fn(char) -> bool) -> &'a str {
        let mut end = 0;
        for (index, c) in self.rest.char_indices() {
            let fits = if index == 0 { first(c) } else { then(c) };
            if !fits {
                break;
            }
            end = index + c.len_utf8();
        }
        let (name, rest) = self.rest.split_at(end);
        self.rest = rest;
        name
    }

    /// After `{`: `name="value"` pairs separated by commas (a trailing comma allowed) up to `}`.
    fn labels(&mut self) -> Result<Vec<(String, String)>, String> {
        let mut labels = Vec::new();
        loop {
            self.skip_spaces();
            if self.eat('}') {
                return Ok(labels);
            }
            let name = self.name(
                |c| c.is_ascii_alphabetic() || c == '_',
                |c| c.is_ascii_alphanumeric() || c == '_',
            );
            if name.is_empty() {
                return Err(format!("expected a label name at {:?}", abbreviate(self.rest)));
            }
            self.skip_spaces();
            if !self.eat('=') {
                return Err(format!("expected '=' after label {name}"));
            }
            self.skip_spaces();
            if !self.eat('"') {
                return Err(format!("expected a quoted value for label {name}"));
            }
            let value = self
                .label_value()
                .ok_or_else(|| format!("unterminated value for label {name}"))?;
            labels.push((name.to_owned(), value));
            self.skip_spaces();
            if self.eat(',') {
                continue;
            }
            if self.eat('}') {
                return Ok(labels);
            }
            return Err(format!("expected ',' or '}}' after label {name}"));
        }
    }

    /// After the opening quote: the value up to the closing quote, with `\\`, `\"` and `\n`
    /// unescaped; `None` when the line ends first.
    fn label_value(&mut self) -> Option<String> {
        let mut value = String::new();
        let mut chars = self.rest.char_indices();
        while let Some((index, c)) = chars.next() {
            match c {
                '"' => {
                    self.rest = &self.rest[index + 1..];
                    return Some(value);
                }
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    // Prometheus keeps unknown escapes as written.
                    other @ ('\\' | '"') => value.push(other),
                    other => {
                        value.push('\\');
                        value.push(other);
                    }
                },
                other => value.push(other),
            }
        }
        None
    }
}

/// Fetches expositions over HTTP with one shared connection pool.
#[derive(Debug, Clone)]
pub struct Scraper {
    client: reqwest::Client,
}

impl Scraper {
    /// `timeout` bounds each scrape as a whole, so one hung sidecar cannot stall a tick.
    pub fn new(timeout: Duration) -> Result<Scraper, ScrapeError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(ScrapeError::Client)?;
        Ok(Scraper { client })
    }

    /// GETs `url` and parses the exposition.
    pub async fn scrape(&self, url: &str) -> Result<InstanceMetrics, ScrapeError> {
        let fetch_error = |source| ScrapeError::Fetch {
            url: url.to_owned(),
            source,
        };
        let mut response = self.client.get(url).send().await.map_err(fetch_error)?;
        let status = response.status();
        if !status.is_success() {
            return Err(ScrapeError::Status {
                url: url.to_owned(),
                status: status.as_u16(),
            });
        }
        let too_large = || ScrapeError::TooLarge {
            url: url.to_owned(),
            limit: MAX_EXPOSITION_BYTES,
        };
        if response
            .content_length()
            .is_some_and(|length| length > MAX_EXPOSITION_BYTES as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(fetch_error)? {
            if body.len() + chunk.len() > MAX_EXPOSITION_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        let text = std::str::from_utf8(&body).map_err(|_| ScrapeError::NotText { url: url.to_owned() })?;
        InstanceMetrics::parse(text).map_err(|source| ScrapeError::Malformed {
            url: url.to_owned(),
            source,
        })
    }
}

/// Turns successive readings of one counter into a per-second rate.
#[derive(Debug, Clone, Default)]
pub struct CounterRate {
    last: Option<(Timestamp, f64)>,
}

impl CounterRate {
    /// Records a reading; the rate since the previous one, `None` for the first reading.
    pub fn observe(&mut self, at: Timestamp, total: f64) -> Option<f64> {
        let Some((then, before)) = self.last else {
            self.last = Some((at, total));
            return None;
        };
        let elapsed = at.saturating_since(then).as_secs_f64();
        if elapsed <= 0.0 {
            // Two readings in the same instant give no rate; keep the older baseline.
            return None;
        }
        self.last = Some((at, total));
        // A counter only goes down when its process restarted and counted up from zero.
        let delta = if total >= before { total - before } else { total };
        Some(delta / elapsed)
    }
}

#[cfg(test)]
#[path = "scrape_tests.rs"]
mod tests;
