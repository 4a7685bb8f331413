//! Which names a `StatefulService` may take: the operator names a Service, a
//! Deployment, a NetworkPolicy and a Secret after it, so the name must be a DNS-1035
//! label (a Service's rule) and must not be one of the objects `deploy/` installs.
//! Checked at validation, before anything is registered or applied.

use super::objects::Invalid;

/// Names of the objects `deploy/` installs beside the operator (and the example
/// PostgreSQL): a `StatefulService` of one of these names would take them over.
/// `runtime/tests/manifests.rs` checks that every name `deploy/` uses is here.
pub const RESERVED_NAMES: &[&str] = &[
    "strata",
    "strata-control-plane",
    "strata-control-plane-peers",
    "strata-gateway",
    "postgres",
];

/// The longest DNS-1035 label.
const MAX_LENGTH: usize = 63;

/// Why `name` cannot name a `StatefulService`, if it cannot.
pub fn check_name(name: &str) -> Result<(), Invalid> {
    let label = name.len() <= MAX_LENGTH
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.ends_with('-');
    if !label {
        return Err(Invalid::spec(format!(
            "metadata.name {name:?} is not a DNS-1035 label, which the service's Kubernetes Service needs: \
             use at most {MAX_LENGTH} lowercase letters, digits or '-', starting with a letter and ending with a letter or digit"
        )));
    }
    if RESERVED_NAMES.contains(&name) {
        return Err(Invalid::spec(format!(
            "metadata.name {name:?} is the name of one of Strata's own objects (reserved: {}): choose another name",
            RESERVED_NAMES.join(", ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_1035_labels_pass() {
        for name in ["cart", "shopping-cart", "a", "cart2", &"c".repeat(63)] {
            assert_eq!(check_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn what_a_service_name_cannot_be_is_refused() {
        for name in [
            "1cart",
            "-cart",
            "cart-",
            "Cart",
            "cart_1",
            "cart.v1",
            "",
            &"c".repeat(64),
        ] {
            let refused = check_name(name).unwrap_err();
            assert_eq!(refused.reason, "InvalidSpec");
            assert!(
                refused.message.contains("not a DNS-1035 label"),
                "{name}: {}",
                refused.message
            );
        }
    }

    #[test]
    fn the_names_of_strata_own_objects_are_refused() {
        let refused = check_name("strata-gateway").unwrap_err();
        assert_eq!(
            refused.message,
            "metadata.name \"strata-gateway\" is the name of one of Strata's own objects (reserved: strata, \
             strata-control-plane, strata-control-plane-peers, strata-gateway, postgres): choose another name"
        );
        for name in RESERVED_NAMES {
            assert!(check_name(name).is_err(), "{name}");
        }
    }
}
