//! The W3C Trace Context `traceparent` value: parsed strictly (a malformed one
//! is refused, so the caller starts a new trace and counts it) and written in
//! version 00's form. Pure; the bridge to OpenTelemetry is `context.rs`.

use std::fmt;

/// The header and metadata key that carries a call's trace context.
pub const TRACEPARENT: &str = "traceparent";

/// The vendor-specific companion of `traceparent`, passed along unchanged.
pub const TRACESTATE: &str = "tracestate";

/// One `traceparent`: the trace, the span that is the parent of the receiver's
/// spans, and the flags (bit 0: sampled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub flags: u8,
}

/// Why a `traceparent` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedTraceParent {
    #[error("a traceparent is version-traceid-parentid-flags, 55 characters for version 00")]
    Shape,
    #[error("a traceparent's fields are lowercase hexadecimal")]
    NotHex,
    #[error("traceparent version ff is invalid")]
    InvalidVersion,
    #[error("a traceparent's trace id must not be all zeros")]
    ZeroTraceId,
    #[error("a traceparent's parent id must not be all zeros")]
    ZeroParentId,
}

impl TraceParent {
    /// Whether the caller sampled the trace.
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// Parses a `traceparent` value. Versions above 00 are read as 00 when
    /// their first four fields have 00's shape, as the specification asks.
    pub fn parse(value: &str) -> Result<TraceParent, MalformedTraceParent> {
        let value = value.trim();
        let bytes = value.as_bytes();
        if bytes.len() < 55 {
            return Err(MalformedTraceParent::Shape);
        }
        let version = hex::<1>(&value[0..2])?;
        match version[0] {
            0xff => return Err(MalformedTraceParent::InvalidVersion),
            0x00 if bytes.len() != 55 => return Err(MalformedTraceParent::Shape),
            _ if bytes.len() > 55 && bytes[55] != b'-' => return Err(MalformedTraceParent::Shape),
            _ => {}
        }
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return Err(MalformedTraceParent::Shape);
        }
        let trace_id = hex::<16>(&value[3..35])?;
        let parent_id = hex::<8>(&value[36..52])?;
        let flags = hex::<1>(&value[53..55])?[0];
        if trace_id == [0; 16] {
            return Err(MalformedTraceParent::ZeroTraceId);
        }
        if parent_id == [0; 8] {
            return Err(MalformedTraceParent::ZeroParentId);
        }
        Ok(TraceParent {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        to_hex(&self.trace_id)
    }

    /// The parent (span) id as 16 lowercase hex digits.
    pub fn parent_id_hex(&self) -> String {
        to_hex(&self.parent_id)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id_hex(),
            self.parent_id_hex(),
            self.flags
        )
    }
}

fn hex<const N: usize>(text: &str) -> Result<[u8; N], MalformedTraceParent> {
    let digits = text.as_bytes();
    if digits.len() != 2 * N {
        return Err(MalformedTraceParent::Shape);
    }
    let mut out = [0u8; N];
    for (i, pair) in digits.chunks(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Ok(out)
}

fn nibble(digit: u8) -> Result<u8, MalformedTraceParent> {
    match digit {
        b'0'..=b'9' => Ok(digit - b'0'),
        b'a'..=b'f' => Ok(digit - b'a' + 10),
        _ => Err(MalformedTraceParent::NotHex),
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(DIGITS[usize::from(byte >> 4)] as char);
        text.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specifications_example_round_trips() {
        let parsed = TraceParent::parse(EXAMPLE).unwrap();
        assert_eq!(parsed.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.parent_id_hex(), "00f067aa0ba902b7");
        assert!(parsed.sampled());
        assert_eq!(parsed.to_string(), EXAMPLE);
        let unsampled = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!unsampled.sampled());
    }

    #[test]
    fn a_later_version_is_read_as_00_and_written_as_00() {
        let parsed = TraceParent::parse(&format!("01{}-what-comes-next", &EXAMPLE[2..])).unwrap();
        assert_eq!(parsed.to_string(), EXAMPLE);
    }

    #[test]
    fn malformed_values_are_refused_with_the_reason() {
        let cases = [
            ("", MalformedTraceParent::Shape),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                MalformedTraceParent::Shape,
            ),
            (&format!("{EXAMPLE}-extra"), MalformedTraceParent::Shape),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                MalformedTraceParent::NotHex,
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                MalformedTraceParent::Shape,
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                MalformedTraceParent::InvalidVersion,
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                MalformedTraceParent::ZeroTraceId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                MalformedTraceParent::ZeroParentId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
                MalformedTraceParent::NotHex,
            ),
        ];
        for (value, reason) in cases {
            assert_eq!(TraceParent::parse(value), Err(reason), "{value:?}");
        }
    }
}
