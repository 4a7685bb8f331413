//! The settings as a Kubernetes resource spells them: camelCase (`minScale`,
//! `scaleToZeroGrace`, ...), flattened into the `StatefulService`'s spec. The same
//! [`ServiceSettings`] inside, renamed on the way in and out and in its schema, so
//! the resource cannot fall behind the REST API.

use std::borrow::Cow;

use serde::{ser::SerializeMap, Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::ServiceSettings;

/// A resource's settings. Reading one never fails the whole resource: a value the
/// API server let through (it checks types and patterns, not every rule) that is
/// not a setting's, such as a duration too large to count, is kept in `unreadable`
/// for the operator to report, and the other settings are read as usual.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KubernetesSettings {
    pub settings: ServiceSettings,
    pub unreadable: Vec<Unreadable>,
}

/// A setting the resource holds that does not read as one.
#[derive(Debug, Clone, PartialEq)]
pub struct Unreadable {
    /// Its camelCase name, as the resource spells it.
    pub name: String,
    pub value: Value,
    pub reason: String,
}

impl From<ServiceSettings> for KubernetesSettings {
    fn from(settings: ServiceSettings) -> Self {
        KubernetesSettings {
            settings,
            unreadable: Vec::new(),
        }
    }
}

/// `scale_to_zero_grace` -> `scaleToZeroGrace`.
pub fn camel_case(name: &str) -> String {
    let mut words = name.split('_');
    let mut camel = words.next().unwrap_or_default().to_owned();
    for word in words {
        let mut letters = word.chars();
        if let Some(first) = letters.next() {
            camel.extend(first.to_uppercase());
            camel.push_str(letters.as_str());
        }
    }
    camel
}

impl Serialize for KubernetesSettings {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let written = serde_json::to_value(&self.settings).map_err(serde::ser::Error::custom)?;
        let given = written
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, value)| !value.is_null());
        let mut map = serializer.serialize_map(None)?;
        for (name, value) in given {
            map.serialize_entry(&camel_case(name), value)?;
        }
        for unreadable in &self.unreadable {
            map.serialize_entry(&unreadable.name, &unreadable.value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for KubernetesSettings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entries = Map::<String, Value>::deserialize(deserializer)?;
        let mut readable = Map::new();
        let mut unreadable = Vec::new();
        for (name, value) in entries {
            let Some(field) = ServiceSettings::FIELDS.iter().find(|field| camel_case(field) == name) else {
                continue;
            };
            let alone = Value::Object(Map::from_iter([(field.to_string(), value.clone())]));
            match serde_json::from_value::<ServiceSettings>(alone) {
                Ok(_) => {
                    readable.insert(field.to_string(), value);
                }
                Err(error) => unreadable.push(Unreadable {
                    name,
                    value,
                    reason: error.to_string(),
                }),
            }
        }
        let settings = serde_json::from_value(Value::Object(readable)).map_err(serde::de::Error::custom)?;
        Ok(KubernetesSettings { settings, unreadable })
    }
}

impl schemars::JsonSchema for KubernetesSettings {
    fn schema_name() -> Cow<'static, str> {
        "KubernetesSettings".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let mut schema = ServiceSettings::json_schema(generator);
        if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
            let renamed = std::mem::take(properties)
                .into_iter()
                .map(|(name, property)| (camel_case(&name), structural(property)))
                .collect();
            *properties = renamed;
        }
        schema
    }
}

/// An optional setting whose value has a schema of its own (the keep-alive choice)
/// comes as `anyOf: [its schema, null]`; Kubernetes wants a structural schema, a
/// `type` on every property, so it is written as that schema, nullable, as an
/// optional number or text ends up.
fn structural(property: Value) -> Value {
    let Value::Object(mut property) = property else {
        return property;
    };
    let Some(Value::Array(alternatives)) = property.get("anyOf") else {
        return Value::Object(property);
    };
    let is_null = |alternative: &Value| alternative.get("type").and_then(Value::as_str) == Some("null");
    let real: Vec<&Value> = alternatives
        .iter()
        .filter(|alternative| !is_null(alternative))
        .collect();
    let [Value::Object(real)] = real[..] else {
        return Value::Object(property);
    };
    if alternatives.len() != 2 {
        return Value::Object(property);
    }
    let mut merged = real.clone();
    merged.insert("nullable".into(), Value::Bool(true));
    property.remove("anyOf");
    merged.extend(property);
    Value::Object(merged)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::HumanDuration;

    #[test]
    fn names_are_camel_case() {
        assert_eq!(camel_case("scale_to_zero_grace"), "scaleToZeroGrace");
        assert_eq!(camel_case("keep_alive_percentile"), "keepAlivePercentile");
        assert_eq!(camel_case("image"), "image");
    }

    #[test]
    fn every_setting_survives_the_trip() {
        let settings = KubernetesSettings::from(ServiceSettings::sample());
        let written = serde_json::to_value(&settings).unwrap();
        let names: Vec<String> = written.as_object().unwrap().keys().cloned().collect();
        let camel: Vec<String> = ServiceSettings::FIELDS.iter().map(|field| camel_case(field)).collect();
        assert_eq!(names, camel);
        assert_eq!(written["scaleToZeroGrace"], "45s");
        assert_eq!(serde_json::from_value::<KubernetesSettings>(written).unwrap(), settings);
        assert_eq!(serde_json::to_value(KubernetesSettings::default()).unwrap(), json!({}));
    }

    #[test]
    fn an_unreadable_setting_is_set_aside_not_fatal() {
        let read: KubernetesSettings = serde_json::from_value(json!({
            "minScale": 1,
            "holdTimeout": "99999999999999999999h",
            "min_scale": 5,
        }))
        .unwrap();
        assert_eq!(
            read.settings.min_scale,
            Some(1),
            "snake_case is not the resource's spelling"
        );
        assert_eq!(read.settings.hold_timeout, None::<HumanDuration>);
        assert_eq!(read.unreadable.len(), 1);
        assert_eq!(read.unreadable[0].name, "holdTimeout");
        assert!(read.unreadable[0].reason.contains("too large"), "{:?}", read.unreadable);
    }
}
