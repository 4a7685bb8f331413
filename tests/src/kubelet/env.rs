//! A container's environment and command line as a kubelet resolves them:
//! plain values, `secretKeyRef` from the pod's Secrets (`data`, or `stringData`
//! as applied), `fieldRef` for the pod's own fields, and `$(VAR)` references
//! to variables defined earlier in the list (`$$` for a literal `$`; an unknown
//! reference stays as written), in values, `command` and `args` alike. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, EnvVar, Secret};

/// The fields of a pod that `fieldRef` reads.
#[derive(Debug, Clone)]
pub struct PodFields {
    pub name: String,
    pub namespace: String,
    pub ip: String,
    pub node: String,
}

/// The environment of `container`, in order, or why the container cannot be
/// created (a kubelet reports `CreateContainerConfigError`).
pub fn environment(env: &[EnvVar], secrets: &[Secret], pod: &PodFields) -> Result<Vec<(String, String)>, String> {
    let mut resolved: Vec<(String, String)> = Vec::new();
    for var in env {
        let value = match (&var.value, &var.value_from) {
            (_, Some(from)) => {
                if let Some(key) = &from.secret_key_ref {
                    match secret_value(secrets, &key.name, &key.key) {
                        Some(value) => value,
                        None if key.optional == Some(true) => continue,
                        None => {
                            return Err(format!(
                                "{}: secret {:?} has no key {:?} (or does not exist)",
                                var.name, key.name, key.key
                            ))
                        }
                    }
                } else if let Some(field) = &from.field_ref {
                    field_value(pod, &field.field_path).map_err(|error| format!("{}: {error}", var.name))?
                } else {
                    return Err(format!(
                        "{}: only secretKeyRef and fieldRef are supported here",
                        var.name
                    ));
                }
            }
            (Some(value), None) => expand(value, &resolved),
            (None, None) => String::new(),
        };
        match resolved.iter_mut().find(|(name, _)| *name == var.name) {
            Some(existing) => existing.1 = value,
            None => resolved.push((var.name.clone(), value)),
        }
    }
    Ok(resolved)
}

/// The process to run: `command` (else the image's entrypoint) then `args`,
/// with references to `env` expanded.
pub fn command_line(container: &Container, entrypoint: &str, env: &[(String, String)]) -> Vec<String> {
    let mut line: Vec<String> = match &container.command {
        Some(command) if !command.is_empty() => command.iter().map(|part| expand(part, env)).collect(),
        _ => vec![entrypoint.to_owned()],
    };
    line.extend(container.args.iter().flatten().map(|arg| expand(arg, env)));
    line
}

fn secret_value(secrets: &[Secret], name: &str, key: &str) -> Option<String> {
    let secret = secrets
        .iter()
        .find(|secret| secret.metadata.name.as_deref() == Some(name))?;
    // As the API server stores it: stringData is merged over data.
    if let Some(value) = secret.string_data.as_ref().and_then(|data| data.get(key)) {
        return Some(value.clone());
    }
    let bytes = secret.data.as_ref()?.get(key)?;
    Some(String::from_utf8_lossy(&bytes.0).into_owned())
}

fn field_value(pod: &PodFields, path: &str) -> Result<String, String> {
    match path {
        "metadata.name" => Ok(pod.name.clone()),
        "metadata.namespace" => Ok(pod.namespace.clone()),
        "status.podIP" => Ok(pod.ip.clone()),
        "spec.nodeName" => Ok(pod.node.clone()),
        other => Err(format!("fieldRef {other:?} is not supported here")),
    }
}

/// Kubernetes' `$(VAR)` expansion over the variables defined so far.
pub fn expand(text: &str, defined: &[(String, String)]) -> String {
    let lookup: BTreeMap<&str, &str> = defined.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(after_dollar) = after.strip_prefix('$') {
            out.push('$');
            rest = after_dollar;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match lookup.get(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> PodFields {
        PodFields {
            name: "cart-1".into(),
            namespace: "strata".into(),
            ip: "10.0.0.7".into(),
            node: "node-a".into(),
        }
    }

    fn vars(value: serde_json::Value) -> Vec<EnvVar> {
        serde_json::from_value(value).unwrap()
    }

    fn secrets() -> Vec<Secret> {
        serde_json::from_value(json!([
            {"metadata": {"name": "store"}, "data": {"url": "cG9zdGdyZXM6Ly9kYg=="}},
            {"metadata": {"name": "credential"}, "stringData": {"token": "t0k"}},
        ]))
        .unwrap()
    }

    #[test]
    fn values_secrets_fields_and_references_resolve_in_order() {
        let env = vars(json!([
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "ADVERTISE", "value": "$(POD_IP):9000"},
            {"name": "LATER", "value": "$(DEFINED_AFTER) $$(POD_IP) $5 $(unclosed"},
            {"name": "DEFINED_AFTER", "value": "x"},
            {"name": "STORE", "valueFrom": {"secretKeyRef": {"name": "store", "key": "url"}}},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "credential", "key": "token"}}},
            {"name": "MISSING_OK", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": true}}},
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ]));
        let resolved = environment(&env, &secrets(), &pod()).unwrap();
        let get = |name: &str| resolved.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        assert_eq!(get("ADVERTISE"), Some("10.0.0.7:9000"));
        assert_eq!(get("LATER"), Some("$(DEFINED_AFTER) $(POD_IP) $5 $(unclosed"));
        assert_eq!(get("STORE"), Some("postgres://db"));
        assert_eq!(get("TOKEN"), Some("t0k"));
        assert_eq!(get("MISSING_OK"), None);
        assert_eq!(get("NAME"), Some("cart-1"));
    }

    #[test]
    fn a_missing_secret_or_an_unknown_field_stops_the_container() {
        let missing = vars(json!([{"name": "S", "valueFrom": {"secretKeyRef": {"name": "store", "key": "nope"}}}]));
        assert!(environment(&missing, &secrets(), &pod())
            .unwrap_err()
            .contains("no key \"nope\""));
        let field = vars(json!([{"name": "F", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIPs"}}}]));
        assert!(environment(&field, &secrets(), &pod())
            .unwrap_err()
            .contains("not supported"));
    }

    #[test]
    fn the_command_is_the_entrypoint_unless_given_with_args_expanded() {
        let env = vec![("PORT".to_owned(), "8080".to_owned())];
        let container: Container =
            serde_json::from_value(json!({"name": "c", "args": ["proxy", "--port=$(PORT)"]})).unwrap();
        assert_eq!(
            command_line(&container, "/bin/strata", &env),
            ["/bin/strata", "proxy", "--port=8080"]
        );
        let container: Container =
            serde_json::from_value(json!({"name": "c", "command": ["/bin/sh", "-c"], "args": ["echo $(PORT)"]}))
                .unwrap();
        assert_eq!(
            command_line(&container, "/bin/strata", &env),
            ["/bin/sh", "-c", "echo 8080"]
        );
    }
}
