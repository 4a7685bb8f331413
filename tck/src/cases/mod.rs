//! The kit's cases, as in CloudState's kit: model cases (the function's exact
//! answers to protocol messages) and proxy cases (what a client sees through the
//! proxy, and the exact messages the proxy exchanges with the function). A case
//! named "(Strata: ...)" checks where Strata deliberately differs from
//! CloudState's proxy; the README lists those differences.

pub mod action;
pub mod crdt;
pub mod event_sourced;
pub mod eventing;
pub mod proxy;
pub mod timers;
pub mod value_entity;

use std::fmt::Debug;

use strata_proto::cloudstate::{entity_passivation_strategy::Strategy, EntityPassivationStrategy};

use crate::{
    kit::{Case, Kit},
    probe::Check,
};

/// Every case, in the order they run.
pub fn all() -> Vec<Case> {
    let mut cases = proxy::discovery_cases();
    cases.extend(action::cases());
    cases.extend(value_entity::cases());
    cases.extend(event_sourced::cases());
    cases.extend(crdt::cases());
    cases.extend(eventing::cases());
    cases.extend(timers::cases());
    cases.extend(proxy::reflection_cases());
    cases
}

/// CloudState's cases that Strata's proxy cannot run yet, with why.
pub fn pending() -> Vec<crate::kit::Pending> {
    crdt::pending()
}

pub(crate) fn expect_eq<T: PartialEq + Debug>(what: &str, expected: T, actual: T) -> Check {
    if expected == actual {
        Ok(())
    } else {
        Err(format!("{what}: expected {expected:?}, got {actual:?}"))
    }
}

/// A gRPC call that must fail as the function failed it: UNKNOWN with its
/// description.
pub(crate) fn grpc_failure<T: Debug>(answer: Result<T, tonic::Status>, description: &str) -> Check {
    match answer {
        Err(status) if status.code() == tonic::Code::Unknown && status.message() == description => Ok(()),
        other => Err(format!(
            "expected the call to fail with UNKNOWN {description:?}, got {other:?}"
        )),
    }
}

/// What an HTTP call must answer.
pub(crate) enum Expected<'a> {
    /// 200 with exactly this JSON body.
    Json(&'a str),
    /// The function's failure: 500 with Strata's JSON error body (CloudState's
    /// proxy answered the description as plain text).
    Failure(&'a str),
}

pub(crate) async fn http_post(kit: &Kit, path: &str, body: &str, expected: Expected<'_>) -> Check {
    let response = kit
        .http
        .post(kit.url(path))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| format!("POST /{path}: {e}"))?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = response.text().await.map_err(|e| format!("POST /{path}: {e}"))?;
    match expected {
        Expected::Json(json) => {
            expect_eq(&format!("POST /{path} status ({text})"), 200, status)?;
            expect_eq(
                &format!("POST /{path} content type"),
                "application/json",
                content_type.as_str(),
            )?;
            expect_eq(&format!("POST /{path} body"), json, text.as_str())
        }
        Expected::Failure(description) => {
            expect_eq(&format!("POST /{path} status ({text})"), 500, status)?;
            let error: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| format!("POST /{path}: not a JSON error body ({e}): {text}"))?;
            expect_eq(
                &format!("POST /{path} error"),
                serde_json::json!({"code": "UNKNOWN", "status": 500, "message": description}),
                error["error"].clone(),
            )
        }
    }
}

/// A configured entity: its type, persistence id (if the model prescribes one)
/// and a passivation timeout of 100 ms.
pub(crate) fn configured_entity(kit: &Kit, service: &str, entity_type: &str, persistence_id: Option<&str>) -> Check {
    if !kit.discovered_services().iter().any(|s| s == service) {
        return Err(format!("the descriptors do not define {service}"));
    }
    let entity = kit.entity(service).ok_or_else(|| format!("no entity for {service}"))?;
    expect_eq("entity type", entity_type, entity.entity_type.as_str())?;
    if let Some(persistence_id) = persistence_id {
        expect_eq("persistence id", persistence_id, entity.persistence_id.as_str())?;
    }
    let timeout = match &entity.passivation_strategy {
        Some(EntityPassivationStrategy {
            strategy: Some(Strategy::Timeout(timeout)),
        }) => Some(timeout.timeout),
        _ => None,
    };
    expect_eq("passivation timeout (ms)", Some(100), timeout)
}
