//! Checks that do not depend on the registry's state; the API runs them before proposing
//! (a clear 400 without a Raft round trip) and `apply` runs them again, since the log is
//! also written by other clients.

use super::RegistryError;

/// A service name must be a DNS-1123 label: it becomes part of host names and pod names.
pub fn validate_name(name: &str) -> Result<(), RegistryError> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid {
        return Ok(());
    }
    Err(RegistryError::invalid(
        "name",
        format!(
            "invalid service name {name:?}: use 1 to 63 lowercase letters, digits or '-', starting and ending with a letter or digit"
        ),
    ))
}

/// Scaling bounds that make sense together.
pub fn validate_scaling(min_scale: u32, max_scale: u32, target_concurrency: u32) -> Result<(), RegistryError> {
    if max_scale == 0 {
        return Err(RegistryError::invalid("max_scale", "max_scale must be at least 1"));
    }
    if min_scale > max_scale {
        return Err(RegistryError::invalid(
            "min_scale",
            format!("min_scale ({min_scale}) must not exceed max_scale ({max_scale})"),
        ));
    }
    if target_concurrency == 0 {
        return Err(RegistryError::invalid(
            "target_concurrency",
            "target_concurrency must be at least 1",
        ));
    }
    Ok(())
}

/// Knative's bounds for a stable window: long enough to average over, short
/// enough to react within the hour.
pub fn validate_stable_window(stable_window_ms: Option<u64>) -> Result<(), RegistryError> {
    match stable_window_ms {
        Some(ms) if !(1_000..=3_600_000).contains(&ms) => Err(RegistryError::invalid(
            "stable_window",
            format!("stable_window must be between 1s and 1h (got {ms}ms)"),
        )),
        _ => Ok(()),
    }
}

/// The histogram policy's percentiles: a head in the lower half, a tail in the upper.
pub fn validate_keep_alive(prewarm_percentile: u32, keep_alive_percentile: u32) -> Result<(), RegistryError> {
    if prewarm_percentile > 50 {
        return Err(RegistryError::invalid(
            "prewarm_percentile",
            format!("prewarm_percentile must be between 0 and 50 (got {prewarm_percentile})"),
        ));
    }
    if !(50..=100).contains(&keep_alive_percentile) {
        return Err(RegistryError::invalid(
            "keep_alive_percentile",
            format!("keep_alive_percentile must be between 50 and 100 (got {keep_alive_percentile})"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        for good in ["a", "cart", "shopping-cart", "a1", "1a", &"x".repeat(63)] {
            assert_eq!(validate_name(good), Ok(()), "{good}");
        }
        for bad in ["", "-a", "a-", "Cart", "a_b", "a.b", "ä", &"x".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn scaling_bounds() {
        assert!(validate_scaling(0, 1, 1).is_ok());
        assert!(validate_scaling(2, 1, 1).is_err());
        assert!(validate_scaling(0, 0, 1).is_err());
        assert!(validate_scaling(0, 1, 0).is_err());
    }

    #[test]
    fn keep_alive_percentiles() {
        assert!(validate_keep_alive(5, 99).is_ok());
        assert!(validate_keep_alive(0, 100).is_ok());
        assert!(validate_keep_alive(51, 99).is_err());
        assert!(validate_keep_alive(5, 49).is_err());
        assert!(validate_keep_alive(5, 101).is_err());
    }
}
