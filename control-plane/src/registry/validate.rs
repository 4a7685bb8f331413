//! Checks that do not depend on the registry's state; the API runs them before proposing
//! (a clear 400 without a Raft round trip) and `apply` runs them again, since the log is
//! also written by other clients. The settings' own rules are `strata-settings`'.

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
}
