//! Running the kit: its context (the proxy's clients, the function's protocol,
//! the interceptor, what discovery said), the cases one after another, each
//! passed, failed (with why) or pending (the function does not serve what it
//! needs), and the closing line `N passed, M failed, P pending`.

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicU64, Ordering},
    sync::Arc,
    time::Duration,
};

use futures::future::BoxFuture;
use prost::Message;
use strata_proto::cloudstate::{Entity, EntitySpec, ProxyInfo};
use strata_store::Store;
use tonic::transport::Channel;

use crate::{intercept::Interceptor, probe::Check, protocol::Protocol};

/// How long one case may take in all before it fails.
const CASE_LIMIT: Duration = Duration::from_secs(60);

/// Everything a case may use.
pub struct Kit {
    /// Where the proxy serves (gRPC, gRPC-web and HTTP).
    pub proxy: SocketAddr,
    pub grpc: Channel,
    pub http: reqwest::Client,
    /// The function's protocol, directly (model cases).
    pub protocol: Protocol,
    pub interceptor: Arc<Interceptor>,
    pub proxy_info: ProxyInfo,
    pub spec: EntitySpec,
    /// The proxy's store, opened beside it: where the timers cases see what a
    /// command stored (as the control plane's timers API reads it).
    pub store: Arc<dyn Store>,
    next_id: AtomicU64,
}

impl Kit {
    pub fn new(
        proxy: SocketAddr,
        function: Channel,
        interceptor: Arc<Interceptor>,
        proxy_info: ProxyInfo,
        spec: EntitySpec,
        store: Arc<dyn Store>,
    ) -> anyhow::Result<Self> {
        let grpc = tonic::transport::Endpoint::from_shared(format!("http://{proxy}"))?.connect_lazy();
        Ok(Self {
            proxy,
            grpc,
            http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?,
            protocol: Protocol::new(function),
            interceptor,
            proxy_info,
            spec,
            store,
            next_id: AtomicU64::new(1),
        })
    }

    /// A fresh entity id, so no case meets another's entity.
    pub fn next_id(&self) -> String {
        format!("entity-{}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// The entity (or action) the function registered for `service`.
    pub fn entity(&self, service: &str) -> Option<&Entity> {
        self.spec.entities.iter().find(|e| e.service_name == service)
    }

    /// Every service in the function's descriptors, `package.Service`.
    pub fn discovered_services(&self) -> Vec<String> {
        let set = prost_types::FileDescriptorSet::decode(self.spec.proto.as_slice()).unwrap_or_default();
        set.file
            .iter()
            .flat_map(|file| {
                file.service
                    .iter()
                    .map(move |service| format!("{}.{}", file.package(), service.name()))
            })
            .collect()
    }

    /// The services the function registered, in its order.
    pub fn service_names(&self) -> Vec<String> {
        self.spec.entities.iter().map(|e| e.service_name.clone()).collect()
    }

    /// An HTTP URL on the proxy.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.proxy, path.trim_start_matches('/'))
    }
}

/// One case of the kit.
pub struct Case {
    /// Where it belongs, e.g. "model: event sourced entity".
    pub section: &'static str,
    pub name: &'static str,
    /// The services the function must serve for the case to apply.
    pub requires: &'static [&'static str],
    pub run: for<'a> fn(&'a Kit) -> BoxFuture<'a, Check>,
}

/// A case of CloudState's kit that cannot run against Strata yet (the proxy
/// does not serve what it needs): always reported pending, with why.
pub struct Pending {
    pub section: &'static str,
    pub name: &'static str,
    pub why: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Passed,
    Failed(String),
    /// Not run: the function does not serve what the case needs.
    Pending(String),
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub pending: usize,
}

impl Summary {
    /// Whether the run passes: nothing failed, and nothing is pending unless
    /// that is allowed.
    pub fn passes(&self, allow_pending: bool) -> bool {
        self.failed == 0 && (allow_pending || self.pending == 0)
    }

    /// The kit's closing line.
    pub fn line(&self) -> String {
        format!(
            "{} passed, {} failed, {} pending",
            self.passed, self.failed, self.pending
        )
    }
}

/// Runs one case: pending unless the function serves what it needs; failed if
/// it fails, runs too long, or leaves calls no case took.
pub async fn run_case(kit: &Kit, case: &Case) -> Verdict {
    let missing: Vec<&str> = case
        .requires
        .iter()
        .copied()
        .filter(|service| kit.entity(service).is_none())
        .collect();
    if !missing.is_empty() {
        return Verdict::Pending(format!("the function does not serve {}", missing.join(", ")));
    }
    let result = match tokio::time::timeout(CASE_LIMIT, (case.run)(kit)).await {
        Ok(result) => result,
        Err(_) => Err(format!("did not finish within {CASE_LIMIT:?}")),
    };
    match result.and(kit.interceptor.idle().await) {
        Ok(()) => Verdict::Passed,
        Err(why) => Verdict::Failed(why),
    }
}

/// Runs `cases` (those whose name or section contains `filter`, if given) in
/// order, printing each verdict, then lists the `pending` ones; returns the
/// tally.
pub async fn run_all(kit: &Kit, cases: &[Case], pending: &[Pending], filter: Option<&str>) -> Summary {
    let selected = |section: &str, name: &str| filter.is_none_or(|f| section.contains(f) || name.contains(f));
    let mut summary = Summary::default();
    for case in cases {
        if !selected(case.section, case.name) {
            continue;
        }
        let verdict = run_case(kit, case).await;
        match &verdict {
            Verdict::Passed => {
                summary.passed += 1;
                println!("ok       {}: {}", case.section, case.name);
            }
            Verdict::Failed(why) => {
                summary.failed += 1;
                println!(
                    "FAILED   {}: {}\n         {}",
                    case.section,
                    case.name,
                    why.replace('\n', "\n         ")
                );
            }
            Verdict::Pending(why) => {
                summary.pending += 1;
                println!("pending  {}: {} ({why})", case.section, case.name);
            }
        }
    }
    for case in pending.iter().filter(|case| selected(case.section, case.name)) {
        summary.pending += 1;
        println!("pending  {}: {} ({})", case.section, case.name, case.why);
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closing_line() {
        let summary = Summary {
            passed: 95,
            failed: 1,
            pending: 2,
        };
        assert_eq!(summary.line(), "95 passed, 1 failed, 2 pending");
    }

    #[test]
    fn a_pending_case_fails_the_run_unless_allowed() {
        let all_passed = Summary {
            passed: 196,
            ..Summary::default()
        };
        assert!(all_passed.passes(false));
        let pending = Summary {
            pending: 1,
            ..all_passed.clone()
        };
        assert!(!pending.passes(false), "a model that lost a service must not pass");
        assert!(pending.passes(true));
        let failed = Summary {
            failed: 1,
            ..all_passed
        };
        assert!(!failed.passes(true));
    }

    #[test]
    fn case_names_are_unique_within_their_section() {
        let cases = crate::cases::all();
        let mut seen = std::collections::HashSet::new();
        for case in &cases {
            assert!(
                seen.insert((case.section, case.name)),
                "{}: {} twice",
                case.section,
                case.name
            );
        }
        for case in crate::cases::pending() {
            assert!(
                seen.insert((case.section, case.name)),
                "{}: {} twice",
                case.section,
                case.name
            );
        }
        assert!(cases.len() > 170, "{} cases", cases.len());
    }
}
