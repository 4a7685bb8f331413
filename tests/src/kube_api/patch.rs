//! The patch formats the fake API server accepts: JSON merge patch (RFC 7386, also
//! standing in for strategic merge patch, which adds list merging by key that the
//! operator never relies on) and JSON patch (RFC 6902: test, add, remove, replace).

use serde_json::Value;

/// `target` with the merge patch applied: objects merge, `null` removes, the rest replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let object = target.as_object_mut().expect("made an object above");
    for (key, value) in fields {
        if value.is_null() {
            object.remove(key);
        } else {
            merge(object.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Why a JSON patch was refused (the API server answers 422, or 409 for a failed test).
#[derive(Debug, PartialEq, Eq)]
pub enum JsonPatchError {
    TestFailed(String),
    Invalid(String),
}

/// Applies a JSON patch (a list of operations) to `target`, all or nothing.
pub fn json_patch(target: &mut Value, operations: &Value) -> Result<(), JsonPatchError> {
    let operations = operations
        .as_array()
        .ok_or_else(|| JsonPatchError::Invalid("a JSON patch is a list of operations".into()))?;
    let mut patched = target.clone();
    for operation in operations {
        let op = operation["op"].as_str().unwrap_or_default();
        let path = operation["path"].as_str().unwrap_or_default();
        let value = &operation["value"];
        match op {
            "test" => {
                let found = patched.pointer(path).cloned().unwrap_or(Value::Null);
                if &found != value {
                    return Err(JsonPatchError::TestFailed(format!(
                        "the test of {path} failed: found {found}, expected {value}"
                    )));
                }
            }
            "add" | "replace" => {
                let (parent, last) = split(path)?;
                let container = patched
                    .pointer_mut(parent)
                    .ok_or_else(|| JsonPatchError::Invalid(format!("no {parent} to {op} {path} in")))?;
                match container {
                    Value::Object(fields) => {
                        fields.insert(last.to_owned(), value.clone());
                    }
                    Value::Array(items) if last == "-" => items.push(value.clone()),
                    Value::Array(items) => {
                        let index: usize = last
                            .parse()
                            .map_err(|_| JsonPatchError::Invalid(format!("{path}: not an index")))?;
                        if op == "replace" && index < items.len() {
                            items[index] = value.clone();
                        } else if index <= items.len() {
                            items.insert(index, value.clone());
                        } else {
                            return Err(JsonPatchError::Invalid(format!("{path}: out of range")));
                        }
                    }
                    _ => return Err(JsonPatchError::Invalid(format!("{parent} holds no fields"))),
                }
            }
            "remove" => {
                let (parent, last) = split(path)?;
                let removed = match patched.pointer_mut(parent) {
                    Some(Value::Object(fields)) => fields.remove(last).is_some(),
                    Some(Value::Array(items)) => match last.parse::<usize>() {
                        Ok(index) if index < items.len() => {
                            items.remove(index);
                            true
                        }
                        _ => false,
                    },
                    _ => false,
                };
                if !removed {
                    return Err(JsonPatchError::Invalid(format!("nothing at {path} to remove")));
                }
            }
            other => return Err(JsonPatchError::Invalid(format!("unsupported operation {other:?}"))),
        }
    }
    *target = patched;
    Ok(())
}

fn split(path: &str) -> Result<(&str, &str), JsonPatchError> {
    path.rsplit_once('/')
        .ok_or_else(|| JsonPatchError::Invalid(format!("{path:?} is not a JSON pointer")))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_merge_patch_merges_objects_removes_nulls_and_replaces_lists() {
        let mut target = json!({"a": {"b": 1, "c": 2}, "l": [1, 2], "k": "v"});
        merge(&mut target, &json!({"a": {"b": 3, "c": null}, "l": [9], "n": {"x": 1}}));
        assert_eq!(target, json!({"a": {"b": 3}, "l": [9], "k": "v", "n": {"x": 1}}));
    }

    #[test]
    fn a_json_patch_is_all_or_nothing() {
        let mut target = json!({"metadata": {"finalizers": ["f"]}});
        let failing = json!([
            {"op": "remove", "path": "/metadata/finalizers/0"},
            {"op": "test", "path": "/metadata/finalizers", "value": ["other"]},
        ]);
        assert!(matches!(
            json_patch(&mut target, &failing),
            Err(JsonPatchError::TestFailed(_))
        ));
        assert_eq!(target, json!({"metadata": {"finalizers": ["f"]}}));
        let passing = json!([
            {"op": "test", "path": "/metadata/finalizers/0", "value": "f"},
            {"op": "remove", "path": "/metadata/finalizers/0"},
            {"op": "add", "path": "/metadata/labels", "value": {"x": "y"}},
        ]);
        json_patch(&mut target, &passing).unwrap();
        assert_eq!(target, json!({"metadata": {"finalizers": [], "labels": {"x": "y"}}}));
    }
}
