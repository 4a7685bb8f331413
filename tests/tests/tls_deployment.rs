//! TLS everywhere, over real processes on loopback with a throwaway CA made by
//! rcgen: three `strata control-plane` nodes serving TLS on their management
//! API and on their Raft / data-plane port, requiring client certificates there
//! (mutual TLS); a `strata gateway` serving HTTPS (HTTP/1.1 and HTTP/2 by ALPN)
//! and dialling the control plane with the CA and a client certificate; a
//! sidecar doing the same, with the shopping cart behind it. The cart is called
//! through the gateway over HTTPS with HTTP/1.1 JSON and with gRPC over h2.
//! Refused: a client that does not trust the CA, plain text to a TLS port, and a
//! client without a certificate on the mutual-TLS port. The CLI's `--tls-ca`
//! and its error for a certificate it does not trust are checked too.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use strata_e2e::{
    binary, free_port,
    pki::Pki,
    shoppingcart::{shopping_cart_client::ShoppingCartClient, AddLineItem, GetShoppingCart},
    start_shopping_cart, Process,
};
use strata_tls::{ClientTls, TlsFiles};

const SECRET: &str = "tls-deployment-secret";
const TOKEN: &str = "tls-deployment-admin";

/// Starts control-plane node `id` with TLS on both ports and client
/// certificates required on the Raft / data-plane port.
fn control_plane(dir: &Path, pki: &Pki, id: u64, api: &str, listen: &str, join: Option<&str>) -> Process {
    let mut command = Command::new(binary("strata"));
    command
        .arg("control-plane")
        .arg("--data-dir")
        .arg(dir.join(format!("node-{id}")))
        .args(["--node-id", &id.to_string(), "--listen", listen, "--api-listen", api])
        .arg("--tls-cert")
        .arg(&pki.server_cert)
        .arg("--tls-key")
        .arg(&pki.server_key)
        .arg("--tls-ca")
        .arg(&pki.ca)
        .arg("--tls-client-ca")
        .arg(&pki.ca)
        .env("STRATA_CLUSTER_SECRET", SECRET)
        .env("STRATA_ADMIN_TOKEN", TOKEN)
        .env("RUST_LOG", "info,openraft=warn");
    match join {
        None => command.arg("--bootstrap"),
        Some(url) => command.args(["--join", url]),
    };
    Process::spawn(&format!("control-plane node {id}"), command)
}

/// The CA's certificate and the client certificate's files, as the gateway and
/// the sidecar take them.
fn client_flags(pki: &Pki) -> Vec<std::ffi::OsString> {
    [
        ("--tls-ca", &pki.ca),
        ("--tls-client-cert", &pki.client_cert),
        ("--tls-client-key", &pki.client_key),
    ]
    .into_iter()
    .flat_map(|(flag, path)| [flag.into(), path.into()])
    .collect()
}

async fn until<T, F: std::future::Future<Output = Option<T>>>(what: &str, mut check: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The whole chain of an error's messages.
fn chain(error: &dyn std::error::Error) -> String {
    let mut messages = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        messages.push(cause.to_string());
        source = cause.source();
    }
    messages.join(": ")
}

fn strata_cli(args: &[&str]) -> std::process::Output {
    Command::new(binary("strata"))
        .args(args)
        .env_remove("STRATA_TLS_CA")
        .output()
        .expect("run strata")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cart_is_served_over_tls_and_every_internal_call_uses_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::create(dir.path());
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap();
    let https = reqwest::Client::builder()
        .add_root_certificate(ca.clone())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    // Three nodes: the second and third join through the first's HTTPS API and
    // then replicate over the mutual-TLS Raft port.
    let addresses: Vec<(String, String)> = (0..3)
        .map(|_| {
            (
                format!("127.0.0.1:{}", free_port()),
                format!("127.0.0.1:{}", free_port()),
            )
        })
        .collect();
    let join = format!("https://{}", addresses[0].0);
    let _nodes: Vec<Process> = addresses
        .iter()
        .zip(1..)
        .map(|((api, listen), id)| control_plane(dir.path(), &pki, id, api, listen, (id > 1).then_some(join.as_str())))
        .collect();
    for (api, _) in &addresses {
        until(&format!("{api} sees three members"), || async {
            let reply = https
                .get(format!("https://{api}/api/v1/cluster"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .ok()?;
            let cluster: Value = reply.json().await.ok()?;
            (cluster["members"].as_array()?.len() == 3 && cluster["leader"].is_u64()).then_some(())
        })
        .await;
    }
    until("the cart service created", || async {
        let reply = https
            .post(format!("https://{}/api/v1/services", addresses[2].0))
            .bearer_auth(TOKEN)
            .json(&json!({"name": "cart", "command": "./run", "min_scale": 0}))
            .send()
            .await
            .ok()?;
        matches!(reply.status().as_u16(), 201 | 409).then_some(())
    })
    .await;

    // The data plane, given every node's https:// address.
    let control_planes = addresses
        .iter()
        .map(|(_, listen)| format!("https://{listen}"))
        .collect::<Vec<_>>()
        .join(",");
    let function_port = free_port();
    let _function = start_shopping_cart(function_port);
    let sidecar_port = free_port();
    let mut sidecar = Command::new(binary("strata"));
    sidecar
        .arg("proxy")
        .args(["--user-function-port", &function_port.to_string()])
        .args(["--http-port", &sidecar_port.to_string()])
        .args(["--admin-port", &free_port().to_string()])
        .arg("--store")
        .arg(format!("sqlite://{}", dir.path().join("cart.db").display()))
        .args(["--control-plane", &control_planes, "--token", TOKEN])
        .args(["--instance-id", "cart-1", "--service", "cart"])
        .args(client_flags(&pki));
    let _sidecar = Process::spawn("strata proxy", sidecar);
    let gateway_port = free_port();
    let mut gateway = Command::new(binary("strata"));
    gateway
        .arg("gateway")
        .args(["--listen", &format!("127.0.0.1:{gateway_port}")])
        .args(["--control-plane", &control_planes, "--token", TOKEN])
        .arg("--tls-cert")
        .arg(&pki.server_cert)
        .arg("--tls-key")
        .arg(&pki.server_key)
        .args(client_flags(&pki));
    let _gateway = Process::spawn("strata gateway", gateway);
    let gateway = format!("https://127.0.0.1:{gateway_port}");

    // HTTP/1.1 JSON through the gateway over TLS.
    let http1 = reqwest::Client::builder()
        .add_root_certificate(ca.clone())
        .http1_only()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    until("the gateway serves the cart over HTTPS", || async {
        let reply = http1
            .post(format!("{gateway}/cart/ann/items/add"))
            .json(&json!({"productId": "tea", "name": "Tea", "quantity": 2}))
            .send()
            .await
            .ok()?;
        assert_eq!(reply.version(), reqwest::Version::HTTP_11);
        reply.status().is_success().then_some(())
    })
    .await;
    let cart: Value = http1
        .get(format!("{gateway}/carts/ann"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cart["items"][0]["quantity"], 2, "the HTTP/1.1 cart: {cart}");

    // gRPC over HTTP/2 (ALPN h2) through the gateway over TLS.
    let channel = strata_tls::endpoint(
        &gateway,
        Some(
            &ClientTls {
                ca: Some(pki.ca.clone()),
                identity: None,
            }
            .grpc()
            .unwrap(),
        ),
    )
    .unwrap()
    .connect()
    .await
    .expect("a TLS gRPC connection to the gateway");
    let mut grpc = ShoppingCartClient::new(channel);
    grpc.add_item(AddLineItem {
        user_id: "ann".into(),
        product_id: "jam".into(),
        name: "Jam".into(),
        quantity: 3,
    })
    .await
    .expect("gRPC AddItem over TLS");
    let cart = grpc
        .get_cart(GetShoppingCart { user_id: "ann".into() })
        .await
        .expect("gRPC GetCart over TLS")
        .into_inner();
    let total: i32 = cart.items.iter().map(|item| item.quantity).sum();
    assert_eq!(total, 5, "the gRPC cart: {cart:?}");

    // A client that does not trust the CA is refused in the handshake.
    let untrusting = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let refused = untrusting
        .get(format!("{gateway}/carts/ann"))
        .send()
        .await
        .expect_err("a client that does not trust the CA got an answer");
    assert!(
        chain(&refused).contains("certificate"),
        "not a certificate error: {}",
        chain(&refused)
    );

    // Plain text to a TLS port gets no HTTP answer: the gateway's ingress and the
    // control plane's Raft / data-plane port.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    assert!(
        plain
            .get(format!("http://127.0.0.1:{gateway_port}/carts/ann"))
            .send()
            .await
            .is_err(),
        "plain HTTP to the gateway's TLS port got an answer"
    );
    let plain_grpc = watch_routes(&format!("http://{}", addresses[0].1), &ClientTls::default()).await;
    assert!(
        plain_grpc.is_err(),
        "a plain-text gRPC client reached the TLS data-plane port"
    );

    // Mutual TLS: trusting the CA is not enough without a client certificate;
    // with one, the handshake succeeds.
    let without_certificate = ClientTls {
        ca: Some(pki.ca.clone()),
        identity: None,
    };
    let with_certificate = ClientTls {
        ca: Some(pki.ca.clone()),
        identity: Some(TlsFiles {
            cert: pki.client_cert.clone(),
            key: pki.client_key.clone(),
        }),
    };
    let data_plane = format!("https://{}", addresses[0].1);
    let refused = watch_routes(&data_plane, &without_certificate).await;
    assert!(
        refused.is_err(),
        "a client without a certificate reached the mutual-TLS port"
    );
    watch_routes(&data_plane, &with_certificate)
        .await
        .expect("a client with a certificate reaches the mutual-TLS port");

    // The CLI: --tls-ca trusts the private CA; without it, a clear error.
    let api = format!("https://{}", addresses[1].0);
    let trusted = strata_cli(&[
        "services",
        "--api",
        &api,
        "--token",
        TOKEN,
        "--tls-ca",
        pki.ca.to_str().unwrap(),
    ]);
    assert!(
        trusted.status.success(),
        "strata services --tls-ca failed: {}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    assert!(String::from_utf8_lossy(&trusted.stdout).contains("cart"));
    let untrusted = strata_cli(&["services", "--api", &api, "--token", TOKEN]);
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert!(!untrusted.status.success());
    assert!(
        stderr.contains("does not trust") && stderr.contains("--tls-ca"),
        "unclear error: {stderr}"
    );
}

/// Starts a route watch on the data-plane port at `address` with `tls`.
async fn watch_routes(address: &str, tls: &ClientTls) -> Result<(), String> {
    use strata_proto::strata::controlplane::v1::{data_plane_client::DataPlaneClient, WatchRoutesRequest};
    let config = tls.grpc().map_err(|error| error.to_string())?;
    let channel = strata_tls::endpoint(address, Some(&config))
        .map_err(|error| error.to_string())?
        .connect()
        .await
        .map_err(|error| chain(&error))?;
    let mut request = tonic::Request::new(WatchRoutesRequest {});
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    DataPlaneClient::new(channel)
        .watch_routes(request)
        .await
        .map(|_| ())
        .map_err(|status| status.to_string())
}

/// `strata dev --tls-cert --tls-key` serves its gateway over TLS: the cart
/// deployed through it answers HTTPS (HTTP/1.1 JSON), and plain HTTP gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strata_dev_passes_its_certificate_to_its_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::create(dir.path());
    let (cert, key) = (
        pki.server_cert.display().to_string(),
        pki.server_key.display().to_string(),
    );
    let dev = strata_e2e::dev::start_dev(dir, &["--tls-cert", &cert, "--tls-key", &key]);
    dev.deploy(&[]);
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let gateway = format!("https://127.0.0.1:{}", dev.gateway);
    until("strata dev's gateway serves the cart over HTTPS", || async {
        let reply = https
            .post(format!("{gateway}/cart/bo/items/add"))
            .json(&json!({"productId": "tea", "name": "Tea", "quantity": 1}))
            .send()
            .await
            .ok()?;
        reply.status().is_success().then_some(())
    })
    .await;
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    assert!(
        plain.get(dev.url("/carts/bo")).send().await.is_err(),
        "plain HTTP to strata dev's TLS gateway got an answer"
    );
}
