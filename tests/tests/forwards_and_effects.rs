//! Forwards and side effects over real processes: the transfers example (two
//! entities of one function) behind `strata proxy` and behind `strata dev`'s
//! gateway, the checkout action forwarding to the cart deployed as another
//! service, and the bad ones: targets that do not exist and a side-effect loop.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use strata_e2e::{binary, dev::start_dev, free_port, start_function, start_proxy, Http};
use strata_store::EntityKey;

fn amounts(statement: &Value) -> Vec<i64> {
    statement["entries"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| e["amount"].as_str().and_then(|a| a.parse().ok()).unwrap_or(0))
                .collect()
        })
        .unwrap_or_default()
}

/// The transfers scenario against a gateway or proxy at `http`; `prefix` keeps
/// account ids apart between runs.
async fn transfer_between_accounts(http: &Http, prefix: &str) {
    let (alice, bob) = (format!("{prefix}-alice"), format!("{prefix}-bob"));

    // --- alice deposits 100
    let (status, body) = http
        .post(&format!("/accounts/{alice}/deposit"), json!({"amount": 100}))
        .await;
    assert_eq!((status, &body), (200, &json!({"amount": "100"})));

    // --- a transfer answers with alice's balance; bob's deposit, a synchronous
    // side effect, has landed before that answer
    let (status, body) = http
        .post(&format!("/accounts/{alice}/transfer"), json!({"to": bob, "amount": 30}))
        .await;
    assert_eq!((status, &body), (200, &json!({"amount": "70"})));
    let (status, body) = http.get(&format!("/accounts/{bob}")).await;
    assert_eq!(
        (status, &body),
        (200, &json!({"amount": "30"})),
        "bob's deposit came first"
    );

    // --- the statements get their entries after the answer (asynchronous side effects)
    let statement = http
        .get_until(&format!("/statements/{bob}"), |s| !amounts(s).is_empty())
        .await;
    assert_eq!(amounts(&statement), [30]);
    assert_eq!(statement["entries"][0]["description"], format!("from {alice}"));
    let statement = http
        .get_until(&format!("/statements/{alice}"), |s| !amounts(s).is_empty())
        .await;
    assert_eq!(amounts(&statement), [-30]);

    // --- a statement answers balance questions by forwarding to the account
    let (status, body) = http.get(&format!("/statements/{alice}/balance")).await;
    assert_eq!((status, &body), (200, &json!({"amount": "70"})));

    // --- an overdraft fails with the function's reason, and performs nothing
    let (status, body) = http
        .post(
            &format!("/accounts/{alice}/transfer"),
            json!({"to": bob, "amount": 1000}),
        )
        .await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "UNKNOWN");
    assert_eq!(
        body["error"]["message"],
        format!("the balance of {alice} is 70, less than 1000")
    );
    let (_, body) = http.get(&format!("/accounts/{bob}")).await;
    assert_eq!(body, json!({"amount": "30"}), "no deposit for a failed transfer");
    // A later transfer's entries arrive; the failed one left none before them.
    let (status, _) = http
        .post(&format!("/accounts/{alice}/transfer"), json!({"to": bob, "amount": 5}))
        .await;
    assert_eq!(status, 200);
    let statement = http
        .get_until(&format!("/statements/{bob}"), |s| amounts(s).len() == 2)
        .await;
    assert_eq!(amounts(&statement), [30, 5]);
}

#[tokio::test(flavor = "multi_thread")]
async fn forwards_and_side_effects_behind_strata_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("s.db").display());
    let (function_port, http_port) = (free_port(), free_port());
    let _function = start_function("transfers", function_port, &[]);
    let _proxy = start_proxy(function_port, http_port, &store, &[]);
    let http = Http::new(http_port);

    transfer_between_accounts(&http, "proxy").await;

    // --- every side effect and forward is counted
    let metrics = http.text("/metrics").await;
    for line in [
        r#"strata_proxy_side_effects_total{mode="synchronous",outcome="ok",target="com.example.transfers.Accounts.Deposit"} 2"#,
        r#"strata_proxy_side_effects_total{mode="asynchronous",outcome="ok",target="com.example.transfers.Statements.Record"} 4"#,
        r#"strata_proxy_forwards_total{outcome="ok",target="com.example.transfers.Accounts.GetBalance"} 1"#,
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_targets_and_loops_fail_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("rogue.log");
    let store_url = format!("sqlite://{}", dir.path().join("s.db").display());
    let (function_port, http_port) = (free_port(), free_port());
    let _rogue = start_function("rogue-function", function_port, &[("ROGUE_LOG", log.to_str().unwrap())]);
    let _proxy = start_proxy(function_port, http_port, &store_url, &[]);
    let http = Http::new(http_port);
    let store = strata_store::open(&store_url).await.unwrap();
    let add = |user: &str| {
        (
            format!("/cart/{user}/items/add"),
            json!({"productId": "p", "name": "P", "quantity": 1}),
        )
    };

    // --- a forward to a service that does not exist: 500 / INTERNAL naming it,
    // and the event of that reply is not stored
    let (path, body) = add("forward-nowhere");
    let (status, body) = http.post(&path, body).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "INTERNAL");
    assert_eq!(
        body["error"]["message"],
        "com.example.shoppingcart.ShoppingCart.AddItem forwarded to no.such.Service.Call, \
         which is not a method of any known service"
    );
    let key = EntityKey::new("rogue-cart", "forward-nowhere");
    assert!(store.events(&key, 1).await.unwrap().is_empty());

    // --- a side effect on a method that does not exist: the same
    let (path, body) = add("effect-nowhere");
    let (status, body) = http.post(&path, body).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "INTERNAL");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("asked for a side effect on com.example.shoppingcart.ShoppingCart.Nope"),
        "{body}"
    );
    assert!(store
        .events(&EntityKey::new("rogue-cart", "effect-nowhere"), 1)
        .await
        .unwrap()
        .is_empty());
    // The function hears about both.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("ShoppingCart.Nope")
    {
        assert!(Instant::now() < deadline, "the function was not told");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // --- a command whose synchronous side effect calls itself: the chain stops
    // at the limit with a clear error instead of running forever
    let (path, body) = add("loop");
    let (status, body) = http.post(&path, body).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "INTERNAL");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("the synchronous side effect com.example.shoppingcart.ShoppingCart.AddItem failed: "),
        "{message}"
    );
    assert!(message.contains("more than the limit of 16"), "{message}");
    // Each hop before the limit was a command of its own, stored before its effect.
    let stored = store.events(&EntityKey::new("rogue-cart", "loop"), 1).await.unwrap();
    assert_eq!(stored.len(), 17);

    // --- every other entity is still served
    let (path, body) = add("fine");
    assert_eq!(http.post(&path, body).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forwards_and_side_effects_through_strata_dev() {
    let dev = start_dev(tempfile::tempdir().unwrap(), &[]);
    for (name, binary_name) in [
        ("transfers", "transfers"),
        ("cart", "shopping-cart"),
        ("checkout", "checkout"),
    ] {
        dev.deploy_command(name, &binary(binary_name).display().to_string(), &["--min-scale", "1"]);
    }
    for name in ["transfers", "cart", "checkout"] {
        dev.until_service(name, &format!("{name} is ready"), Duration::from_secs(60), |s| {
            s["ready_replicas"] == 1
        })
        .await;
    }
    let http = Http::new(dev.gateway);

    // --- two entities of one deployed function, through the gateway
    transfer_between_accounts(&http, "dev").await;

    // --- the checkout action forwards to the cart, another deployed service
    for (product, quantity) in [("apple", 2), ("pear", 1)] {
        let (status, body) = http
            .post(
                "/cart/ann/items/add",
                json!({"productId": product, "name": product, "quantity": quantity}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, review) = http.get("/checkout/ann").await;
    assert_eq!(status, 200, "{review}");
    assert_eq!(review["items"].as_array().map(Vec::len), Some(2), "{review}");
    assert_eq!(review["items"][0]["productId"], "apple");

    // --- buying takes the items out of the cart (synchronous side effects on the
    // other service) before the receipt
    let (status, receipt) = http
        .post("/checkout/ann/purchase", json!({"productIds": ["apple"]}))
        .await;
    assert_eq!(
        (status, &receipt),
        (200, &json!({"userId": "ann", "productIds": ["apple"]}))
    );
    let (_, cart) = http.get("/carts/ann").await;
    let left: Vec<&str> = cart["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["productId"].as_str().unwrap())
        .collect();
    assert_eq!(left, ["pear"]);

    // --- an item that is not in the cart: the purchase fails with the cart's reason
    let (status, body) = http
        .post("/checkout/ann/purchase", json!({"productIds": ["kiwi"]}))
        .await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "UNKNOWN");
    assert_eq!(
        body["error"]["message"],
        "the synchronous side effect com.example.shoppingcart.ShoppingCart.RemoveItem failed: \
         Cannot remove item kiwi because it is not in the cart."
    );
}
