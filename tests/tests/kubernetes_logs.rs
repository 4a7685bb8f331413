//! The Kubernetes driver's instance logs (`strata_runtime::kubernetes::logs`)
//! against the stateful fake API server: a service's pods are its instances,
//! each container's lines come from `pods/{name}/log` with the kubelet's times,
//! interleaved by time, for one instance or all, from a time on; an unknown
//! instance is refused with the names that exist.

use futures::StreamExt;
use serde_json::json;
use strata_control_plane::logs::{LogError, LogQuery, LogSource};
use strata_e2e::kube_api::{FakeApi, PODS};
use strata_runtime::kubernetes::logs::KubeLogs;

const NAMESPACE: &str = "strata";

fn pod(name: &str, service: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"strata.dev/service": service}},
        "spec": {"containers": [{"name": "function"}, {"name": "strata-sidecar"}]},
    })
}

fn query(instance: Option<&str>, since_ms: Option<u64>) -> LogQuery {
    LogQuery {
        service: "cart".into(),
        instance: instance.map(str::to_owned),
        since_ms,
        follow: false,
    }
}

async fn lines(logs: &KubeLogs, query: LogQuery) -> Vec<(String, String, String)> {
    logs.read(query)
        .await
        .unwrap()
        .map(|line| (line.instance, line.process, line.line))
        .collect()
        .await
}

fn owned(list: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    list.iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect()
}

#[tokio::test]
async fn pod_logs_are_read_through_the_api() {
    let api = FakeApi::start().await;
    for (name, service) in [("cart-a", "cart"), ("cart-b", "cart"), ("likes-a", "likes")] {
        api.create(&PODS, NAMESPACE, pod(name, service)).expect("a pod");
    }
    {
        let mut state = api.state();
        let written = [
            (
                "cart-a",
                "strata-sidecar",
                "2026-12-07T12:00:00.100000000Z",
                "proxy ready",
            ),
            ("cart-a", "function", "2026-12-07T12:00:00.050000000Z", "cart serving"),
            ("cart-b", "function", "2026-12-07T12:00:01.000000000Z", "cart serving"),
            ("cart-a", "function", "2026-12-07T12:00:02.000000000Z", "added apple"),
            ("likes-a", "function", "2026-12-07T12:00:00.000000000Z", "likes serving"),
        ];
        for (pod, container, at, text) in written {
            state.write_pod_log(NAMESPACE, pod, container, at, text);
        }
    }
    let logs = KubeLogs::new(api.client(), NAMESPACE);

    // --- the service's pods are its instances
    assert_eq!(logs.instances("cart").await.unwrap(), ["cart-a", "cart-b"]);

    // --- every container of every instance, by time
    assert_eq!(
        lines(&logs, query(None, None)).await,
        owned(&[
            ("cart-a", "function", "cart serving"),
            ("cart-a", "sidecar", "proxy ready"),
            ("cart-b", "function", "cart serving"),
            ("cart-a", "function", "added apple"),
        ])
    );
    let first = logs.read(query(None, None)).await.unwrap().next().await.unwrap();
    assert_eq!(first.at, "2026-12-07T12:00:00.050Z");

    // --- one instance, from a time on
    assert_eq!(
        lines(&logs, query(Some("cart-b"), None)).await,
        owned(&[("cart-b", "function", "cart serving")])
    );
    let at_one_second = 1_796_644_801_000;
    assert_eq!(
        lines(&logs, query(Some("cart-a"), Some(at_one_second))).await,
        owned(&[("cart-a", "function", "added apple")])
    );

    // --- following streams each container's log (the fake ends them with what
    // there is; a real API server keeps them open)
    let followed = LogQuery {
        follow: true,
        ..query(Some("cart-a"), None)
    };
    let mut streamed = lines(&logs, followed).await;
    streamed.sort();
    assert_eq!(
        streamed,
        owned(&[
            ("cart-a", "function", "added apple"),
            ("cart-a", "function", "cart serving"),
            ("cart-a", "sidecar", "proxy ready"),
        ])
    );

    // --- an instance that does not exist is named beside those that do
    let Err(error) = logs.read(query(Some("cart-z"), None)).await else {
        panic!("cart-z does not exist")
    };
    assert!(matches!(error, LogError::UnknownInstance { .. }));
    assert_eq!(
        error.to_string(),
        "cart has no instance cart-z; its instances with logs: cart-a, cart-b"
    );
}
