//! Packing typed protobuf messages into `google.protobuf.Any` and back. Type URLs are
//! `type.googleapis.com/<full name>` as CloudState proxies expect; reading compares only
//! the full name after the last `/`, so any prefix is accepted.

use prost::{Message, Name};
use prost_types::Any;

use crate::PayloadError;

/// The prefix of every type URL this SDK writes.
pub const TYPE_URL_PREFIX: &str = "type.googleapis.com/";

/// The type URL of `M`, e.g. `type.googleapis.com/com.example.shoppingcart.Cart`.
///
/// Built from [`Name::full_name`] rather than [`Name::type_url`] because prost only
/// adds a domain to `type_url` when the build asks for one.
pub fn type_url<M: Name>() -> String {
    format!("{TYPE_URL_PREFIX}{}", M::full_name())
}

/// Encodes `message` as an `Any` with its type URL.
pub fn pack<M: Message + Name>(message: &M) -> Any {
    Any {
        type_url: type_url::<M>(),
        value: message.encode_to_vec(),
    }
}

/// The fully qualified message name a payload claims to hold.
pub fn type_name(payload: &Any) -> &str {
    payload
        .type_url
        .rsplit_once('/')
        .map_or(payload.type_url.as_str(), |(_, name)| name)
}

/// Whether `payload` holds an `M`.
pub fn is<M: Name>(payload: &Any) -> bool {
    type_name(payload) == M::full_name()
}

/// Decodes `payload` as an `M`, checking its type URL first.
pub fn unpack<M: Message + Name + Default>(payload: &Any) -> Result<M, PayloadError> {
    if !is::<M>(payload) {
        return Err(PayloadError::UnexpectedType {
            expected: M::full_name(),
            actual: payload.type_url.clone(),
        });
    }
    M::decode(payload.value.as_slice()).map_err(|reason| PayloadError::Malformed {
        type_name: M::full_name(),
        reason,
    })
}

/// Decodes `payload` if it holds an `M`; `Ok(None)` if it holds something else.
///
/// Handy for event handlers that try one event type after another.
pub fn unpack_if<M: Message + Name + Default>(payload: &Any) -> Result<Option<M>, PayloadError> {
    if is::<M>(payload) {
        unpack(payload).map(Some)
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_with_the_googleapis_prefix() {
        let any = pack(&"hello".to_owned());
        assert_eq!(any.type_url, "type.googleapis.com/google.protobuf.StringValue");
        assert_eq!(unpack::<String>(&any).unwrap(), "hello");
        assert_eq!(pack(&()).type_url, "type.googleapis.com/google.protobuf.Empty");
    }

    #[test]
    fn accepts_any_type_url_prefix() {
        let mut any = pack(&7_i32);
        any.type_url = "/google.protobuf.Int32Value".to_owned();
        assert_eq!(unpack::<i32>(&any).unwrap(), 7);
        assert!(is::<i32>(&any));
    }

    #[test]
    fn rejects_another_type_by_name() {
        let any = pack(&7_i32);
        let error = unpack::<String>(&any).unwrap_err();
        assert_eq!(
            error.to_string(),
            "expected a google.protobuf.StringValue message, got type URL \
             \"type.googleapis.com/google.protobuf.Int32Value\""
        );
        assert_eq!(unpack_if::<String>(&any).unwrap(), None);
        assert_eq!(unpack_if::<i32>(&any).unwrap(), Some(7));
    }

    #[test]
    fn reports_malformed_bytes() {
        let any = Any {
            type_url: type_url::<String>(),
            value: vec![0x0a, 0x05, b'a'],
        };
        assert!(matches!(unpack::<String>(&any), Err(PayloadError::Malformed { .. })));
    }
}
