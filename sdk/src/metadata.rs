//! Metadata travelling with a command or a reply: what HTTP calls headers. The
//! proxy fills a command's metadata from the request's headers and returns a
//! reply's as response headers (and gRPC trailers).

use strata_proto::cloudstate as pb;

/// Ordered key-value pairs; a key may appear more than once. Values are text, or
/// bytes for keys ending in `-bin` (as in gRPC).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    entries: Vec<(String, MetadataValue)>,
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataValue {
    Text(String),
    Bytes(Vec<u8>),
}

impl Metadata {
    /// No entries.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a text entry (keys are compared without regard to case).
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.insert(key, value);
        self
    }

    /// Adds a text entry.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.entries.push((key.into(), MetadataValue::Text(value.into())));
    }

    /// Adds a bytes entry.
    pub fn insert_bytes(&mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) {
        self.entries.push((key.into(), MetadataValue::Bytes(value.into())));
    }

    /// The first text value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.iter().find_map(|(k, v)| match v {
            MetadataValue::Text(text) if k.eq_ignore_ascii_case(key) => Some(text.as_str()),
            _ => None,
        })
    }

    /// The first bytes value of `key`.
    pub fn get_bytes(&self, key: &str) -> Option<&[u8]> {
        self.entries.iter().find_map(|(k, v)| match v {
            MetadataValue::Bytes(bytes) if k.eq_ignore_ascii_case(key) => Some(bytes.as_slice()),
            _ => None,
        })
    }

    /// Every entry, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &MetadataValue)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn from_proto(metadata: Option<pb::Metadata>) -> Self {
        let entries = metadata
            .map(|m| m.entries)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|entry| {
                let value = match entry.value? {
                    pb::metadata_entry::Value::StringValue(text) => MetadataValue::Text(text),
                    pb::metadata_entry::Value::BytesValue(bytes) => MetadataValue::Bytes(bytes),
                };
                Some((entry.key, value))
            })
            .collect();
        Self { entries }
    }

    /// `None` when empty, so replies without metadata stay as small as before.
    pub(crate) fn into_proto(self) -> Option<pb::Metadata> {
        if self.entries.is_empty() {
            return None;
        }
        Some(pb::Metadata {
            entries: self
                .entries
                .into_iter()
                .map(|(key, value)| pb::MetadataEntry {
                    key,
                    value: Some(match value {
                        MetadataValue::Text(text) => pb::metadata_entry::Value::StringValue(text),
                        MetadataValue::Bytes(bytes) => pb::metadata_entry::Value::BytesValue(bytes),
                    }),
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_ignore_case_and_round_trip_through_the_protocol() {
        let mut metadata = Metadata::new().with("X-Trace", "t1");
        metadata.insert_bytes("key-bin", vec![1, 2]);
        assert_eq!(metadata.get("x-trace"), Some("t1"));
        assert_eq!(metadata.get_bytes("KEY-BIN"), Some([1, 2].as_slice()));
        assert_eq!(metadata.get("missing"), None);
        assert_eq!(Metadata::from_proto(metadata.clone().into_proto()), metadata);
        assert_eq!(Metadata::new().into_proto(), None);
    }
}
