//! Server-side apply as the fake API server models it: each field manager owns the
//! leaf fields it set (lists count as one field, where Kubernetes would merge some
//! by key); applying a value over another manager's different value is a conflict
//! unless forced, which moves the field to the applier; fields the applier owned
//! and no longer sends are removed unless someone else owns them too.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

/// Field paths per manager, of one object.
pub type Managers = BTreeMap<String, BTreeSet<String>>;

/// Fields the server sets, owned by nobody.
const SERVER_FIELDS: &[&str] = &[
    "/metadata/uid",
    "/metadata/resourceVersion",
    "/metadata/generation",
    "/metadata/creationTimestamp",
    "/metadata/deletionTimestamp",
    "/metadata/managedFields",
    "/apiVersion",
    "/kind",
    "/metadata/name",
    "/metadata/namespace",
];

/// Every leaf of `value` with its JSON pointer.
pub fn leaves(value: &Value) -> BTreeMap<String, Value> {
    let mut found = BTreeMap::new();
    collect(value, String::new(), &mut found);
    found.retain(|path, _| !SERVER_FIELDS.contains(&path.as_str()));
    found
}

fn collect(value: &Value, path: String, found: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(fields) if !fields.is_empty() => {
            for (key, child) in fields {
                let key = key.replace('~', "~0").replace('/', "~1");
                collect(child, format!("{path}/{key}"), found);
            }
        }
        _ => {
            found.insert(path, value.clone());
        }
    }
}

/// A field another manager owns with a different value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub manager: String,
    pub path: String,
}

/// Applies `applied` by `manager` to `object` (`Value::Null` when it does not exist
/// yet). Without `force`, conflicts refuse the whole apply.
pub fn server_side_apply(
    object: &mut Value,
    managers: &mut Managers,
    manager: &str,
    applied: &Value,
    force: bool,
) -> Result<(), Vec<Conflict>> {
    let current = leaves(object);
    let wanted = leaves(applied);
    let mut conflicts = Vec::new();
    for (path, value) in &wanted {
        for (other, owned) in managers.iter() {
            if other != manager && owned.contains(path) && current.get(path) != Some(value) {
                conflicts.push(Conflict {
                    manager: other.clone(),
                    path: path.clone(),
                });
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    for conflict in &conflicts {
        if let Some(owned) = managers.get_mut(&conflict.manager) {
            owned.remove(&conflict.path);
        }
    }
    // Released: owned before, not sent now, and owned by no one else.
    let before = managers.remove(manager).unwrap_or_default();
    for path in before.difference(&wanted.keys().cloned().collect()) {
        if !managers.values().any(|owned| owned.contains(path)) {
            remove(object, path);
        }
    }
    for (path, value) in &wanted {
        set(object, path, value.clone());
    }
    managers.insert(manager.to_owned(), wanted.into_keys().collect());
    managers.retain(|_, owned| !owned.is_empty());
    Ok(())
}

/// Records that `manager` set the fields that differ between `before` and `after`
/// (an update that is not an apply: create, merge patch, scale, status).
pub fn record_update(managers: &mut Managers, manager: &str, before: &Value, after: &Value) {
    let before = leaves(before);
    let after = leaves(after);
    for (path, value) in &after {
        if before.get(path) != Some(value) {
            for (other, owned) in managers.iter_mut() {
                if other != manager {
                    owned.remove(path);
                }
            }
            managers.entry(manager.to_owned()).or_default().insert(path.clone());
        }
    }
    for path in before.keys().filter(|path| !after.contains_key(*path)) {
        for owned in managers.values_mut() {
            owned.remove(path);
        }
    }
    managers.retain(|_, owned| !owned.is_empty());
}

fn tokens(path: &str) -> Vec<String> {
    path.split('/')
        .skip(1)
        .map(|token| token.replace("~1", "/").replace("~0", "~"))
        .collect()
}

fn set(object: &mut Value, path: &str, value: Value) {
    let mut node = object;
    for token in tokens(path) {
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        node = node
            .as_object_mut()
            .expect("made an object above")
            .entry(token)
            .or_insert(Value::Null);
    }
    *node = value;
}

fn remove(object: &mut Value, path: &str) {
    let tokens = tokens(path);
    let Some((last, parents)) = tokens.split_last() else {
        return;
    };
    let mut node = object;
    for token in parents {
        match node.get_mut(token) {
            Some(child) => node = child,
            None => return,
        }
    }
    if let Some(fields) = node.as_object_mut() {
        fields.remove(last);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_apply_over_another_managers_value_conflicts_unless_forced() {
        let mut object = Value::Null;
        let mut managers = Managers::new();
        let mine = json!({"spec": {"ports": [{"port": 80}], "type": "ClusterIP"}});
        server_side_apply(&mut object, &mut managers, "kubectl", &mine, false).unwrap();
        let theirs = json!({"spec": {"ports": [{"port": 9000}], "type": "ClusterIP"}});
        let conflicts = server_side_apply(&mut object, &mut managers, "operator", &theirs, false).unwrap_err();
        assert_eq!(
            conflicts,
            [Conflict {
                manager: "kubectl".into(),
                path: "/spec/ports".into()
            }]
        );
        assert_eq!(object, mine, "a refused apply changes nothing");
        server_side_apply(&mut object, &mut managers, "operator", &theirs, true).unwrap();
        assert_eq!(object, theirs);
        assert_eq!(
            managers["kubectl"],
            BTreeSet::from(["/spec/type".to_owned()]),
            "shared, same value"
        );
    }

    #[test]
    fn fields_an_applier_stops_sending_go_unless_another_manager_owns_them() {
        let mut object = Value::Null;
        let mut managers = Managers::new();
        server_side_apply(&mut object, &mut managers, "op", &json!({"a": 1, "b": 2}), false).unwrap();
        record_update(
            &mut managers,
            "scaler",
            &object.clone(),
            &json!({"a": 1, "b": 2, "r": 3}),
        );
        object["r"] = json!(3);
        server_side_apply(&mut object, &mut managers, "op", &json!({"a": 1}), false).unwrap();
        assert_eq!(object, json!({"a": 1, "r": 3}));
    }
}
