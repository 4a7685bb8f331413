//! The active entities of one sidecar are bounded by the estimated bytes of
//! their state as well as by their count: a real sidecar with a small byte
//! budget is filled with carts holding large items. The entities with open
//! streams never hold more than the budget (the least recently used are
//! passivated to make room), far fewer than the count cap would allow, and
//! every acknowledged item is still in its cart afterwards.

use std::{collections::BTreeMap, time::Duration};

use serde_json::json;
use strata_e2e::{
    free_port,
    load::{cart_products, gauge},
    start_proxy, start_shopping_cart,
};

/// The sidecar's budget for the state of its active entities.
const BUDGET: u64 = 256 * 1024;
/// One item's name; each AddItem journals an event a little larger.
const ITEM: usize = 16 * 1024;
const ITEMS_PER_CART: usize = 4;
const CARTS: usize = 12;

/// Waits (at most 20 s: passivating an evicted entity takes milliseconds)
/// until the sidecar's open entity streams and the bytes counted for them are
/// within `streams` and the budget; panics with what it saw otherwise.
async fn within_budget(admin: &str, streams: u64, after: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let active = gauge(admin, "strata_entities_active").await;
        let bytes = gauge(admin, "strata_entities_active_bytes").await;
        if active <= streams && bytes <= BUDGET {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after {after}: {active} entities active holding {bytes} bytes; the budget is {BUDGET} bytes, room for {streams}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_entities_are_passivated_at_the_byte_budget_without_losing_data() {
    let dir = tempfile::tempdir().unwrap();
    let (function_port, http_port, admin_port) = (free_port(), free_port(), free_port());
    let _function = start_shopping_cart(function_port);
    let store = format!("sqlite://{}", dir.path().join("strata.db").display());
    let _proxy = start_proxy(
        function_port,
        http_port,
        &store,
        &[
            "--admin-port",
            &admin_port.to_string(),
            "--max-active-bytes",
            &BUDGET.to_string(),
        ],
    );
    let admin = format!("127.0.0.1:{admin_port}");
    let base = format!("http://127.0.0.1:{http_port}");
    let http = reqwest::Client::new();
    // A full cart's journal is a little over ITEMS_PER_CART * ITEM bytes, so
    // the budget holds at most this many full carts, plus the one being filled.
    let full_carts = BUDGET / (ITEMS_PER_CART * ITEM) as u64;
    let room = full_carts + 1;
    assert!(room < CARTS as u64, "the test must outgrow its budget");

    let mut acked: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in 0..CARTS {
        let cart = format!("big-{c}");
        for i in 0..ITEMS_PER_CART {
            let product = format!("p{c}-{i}");
            let reply = http
                .post(format!("{base}/cart/{cart}/items/add"))
                .json(&json!({"productId": product, "name": "x".repeat(ITEM), "quantity": 1}))
                .timeout(Duration::from_secs(60))
                .send()
                .await
                .expect("the sidecar answers");
            assert_eq!(reply.status(), 200, "{}", reply.text().await.unwrap_or_default());
            acked.entry(cart.clone()).or_default().push(product);
        }
        within_budget(&admin, room, &format!("filling {cart}")).await;
    }
    let passivated = gauge(
        &admin,
        "strata_entity_passivations_total{service=\"com.example.shoppingcart.ShoppingCart\"}",
    )
    .await;
    println!("{CARTS} carts of {ITEMS_PER_CART} x {ITEM} bytes: {passivated} passivations");
    assert!(
        passivated >= (CARTS as u64) - room,
        "only {passivated} entities were passivated for {CARTS} carts with room for {room}"
    );

    println!("--- every cart holds every acknowledged item (read back through the same budget)");
    for (cart, products) in &acked {
        let stored = cart_products(&http, &base, cart).await;
        let lost: Vec<_> = products.iter().filter(|p| !stored.contains(*p)).collect();
        assert!(lost.is_empty(), "cart {cart} lost {lost:?}");
        within_budget(&admin, room, &format!("reading {cart}")).await;
    }
}
