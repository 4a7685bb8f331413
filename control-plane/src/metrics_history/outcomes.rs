//! Calls and server errors from a sidecar's request counter
//! (`strata_proxy_requests_total`, by gRPC code): read one exposition, take the
//! difference between two readings of one instance. A server error is what the
//! HTTP face answers with a 5xx: the function failed or crashed, the store or the
//! instance was unavailable, the deadline passed. A client's mistake (a bad
//! argument, an unknown method) is a call, not an error.

use strata_autoscaler::scrape::{parse_line, REQUESTS_METRIC};

/// The gRPC codes counted as the service's own errors.
const SERVER_ERRORS: &[&str] = &["UNKNOWN", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "DEADLINE_EXCEEDED"];

/// Calls answered and how many of them were server errors: one instance's
/// cumulative counts, a difference of two readings, or a sum of those.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Outcomes {
    pub calls: f64,
    pub errors: f64,
}

impl Outcomes {
    /// Reads the request counter out of an exposition, summed over every service,
    /// method and protocol; lines that do not parse are skipped.
    pub fn from_exposition(text: &str) -> Self {
        let mut outcomes = Outcomes::default();
        for line in text.lines() {
            let Ok(Some(sample)) = parse_line(line) else {
                continue;
            };
            if sample.name != REQUESTS_METRIC || !sample.value.is_finite() {
                continue;
            }
            outcomes.calls += sample.value;
            if sample.label("code").is_some_and(|code| SERVER_ERRORS.contains(&code)) {
                outcomes.errors += sample.value;
            }
        }
        outcomes
    }

    /// What happened since `earlier` (a counter that went down, as after a restart,
    /// counts from zero).
    pub fn since(&self, earlier: &Outcomes) -> Outcomes {
        if self.calls < earlier.calls || self.errors < earlier.errors {
            return *self;
        }
        Outcomes {
            calls: self.calls - earlier.calls,
            errors: self.errors - earlier.errors,
        }
    }

    pub fn add(&mut self, other: &Outcomes) {
        self.calls += other.calls;
        self.errors += other.errors;
    }

    /// The share of the calls that failed (`None` without calls).
    pub fn error_rate(&self) -> Option<f64> {
        (self.calls > 0.0).then(|| self.errors / self.calls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = r#"# TYPE strata_proxy_requests_total counter
strata_proxy_requests_total{service="cart.ShoppingCart",method="AddItem",protocol="http",code="OK"} 40
strata_proxy_requests_total{service="cart.ShoppingCart",method="AddItem",protocol="http",code="UNKNOWN"} 8
strata_proxy_requests_total{service="cart.ShoppingCart",method="GetCart",protocol="grpc",code="INVALID_ARGUMENT"} 2
strata_proxy_requests_total{service="cart.ShoppingCart",method="GetCart",protocol="grpc",code="UNAVAILABLE"} 1
strata_proxy_in_flight_requests{service="cart.ShoppingCart"} 3
"#;

    #[test]
    fn server_errors_count_as_errors_and_a_clients_mistake_only_as_a_call() {
        let outcomes = Outcomes::from_exposition(EXPOSITION);
        assert_eq!(
            outcomes,
            Outcomes {
                calls: 51.0,
                errors: 9.0
            }
        );
        let later = Outcomes {
            calls: 61.0,
            errors: 10.0,
        };
        assert_eq!(
            later.since(&outcomes),
            Outcomes {
                calls: 10.0,
                errors: 1.0
            }
        );
        assert_eq!(outcomes.since(&later), outcomes, "a restarted counter counts from zero");
        assert_eq!(Outcomes::default().error_rate(), None);
        assert_eq!(later.since(&outcomes).error_rate(), Some(0.1));
    }
}
