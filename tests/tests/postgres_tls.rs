//! A sidecar on PostgreSQL over TLS, against the test server (which serves TLS
//! with a CA of its own, `STRATA_TEST_POSTGRES_CA`): with `sslmode=require`
//! it serves the cart and every connection it holds is encrypted (asked of
//! the server, `pg_stat_ssl`); with `sslmode=verify-full` it serves given the
//! server's CA, and refuses to start, saying why, given another CA.

use std::{path::PathBuf, process::Command, time::Duration};

use serde_json::json;
use strata_e2e::{binary, free_port, fresh_postgres_database, start_proxy, start_shopping_cart, Http, Process};

/// The CA that signed the test server's certificate, or `None` (skip).
fn server_ca() -> Option<PathBuf> {
    match std::env::var("STRATA_TEST_POSTGRES_CA") {
        Ok(ca) if !ca.is_empty() => Some(PathBuf::from(ca)),
        _ => {
            assert!(
                std::env::var("STRATA_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "STRATA_REQUIRE_POSTGRES=1 but STRATA_TEST_POSTGRES_CA is not set (scripts/postgres.sh writes DIR/tls/ca.crt)"
            );
            eprintln!("skipping: STRATA_TEST_POSTGRES_CA is not set");
            None
        }
    }
}

fn with(url: &str, query: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{query}")
}

/// (connections named `application`, how many of them encrypted).
async fn connections(admin_url: &str, application: &str) -> (i64, i64) {
    let (client, connection) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a
             JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = $1",
            &[&application],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

async fn add_and_read(http_port: u16) {
    let http = Http::new(http_port);
    let (status, body) = http
        .post(
            "/cart/tls/items/add",
            json!({"productId": "pear", "name": "Pear", "quantity": 2}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, cart) = http.get("/carts/tls").await;
    assert_eq!((status, &cart["items"][0]["quantity"]), (200, &json!(2)));
}

#[tokio::test]
async fn a_sidecar_with_sslmode_require_serves_over_encrypted_connections() {
    let Some(url) = fresh_postgres_database("tls_require").await else {
        return;
    };
    let admin_url = std::env::var("STRATA_TEST_POSTGRES_URL").unwrap();
    let application = format!("strata_tls_require_{}", std::process::id());
    let (function_port, http_port) = (free_port(), free_port());
    let _function = start_shopping_cart(function_port);
    let store = with(&url, &format!("sslmode=require&application_name={application}"));
    let _proxy = start_proxy(function_port, http_port, &store, &[]);
    add_and_read(http_port).await;
    let (open, encrypted) = connections(&admin_url, &application).await;
    assert!(open >= 2, "the writer's and a reader's connections are open ({open})");
    assert_eq!(encrypted, open, "every connection is encrypted");
}

#[tokio::test]
async fn verify_full_serves_with_the_servers_ca_and_refuses_another_saying_why() {
    let Some(ca) = server_ca() else { return };
    let Some(url) = fresh_postgres_database("tls_verify").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let other = strata_e2e::pki::Pki::create(dir.path()).ca;
    let (function_port, http_port) = (free_port(), free_port());
    let _function = start_shopping_cart(function_port);

    println!("--- another CA: the sidecar stops at once, naming the problem");
    let mut command = Command::new(binary("strata"));
    command
        .arg("proxy")
        .env("USER_FUNCTION_PORT", function_port.to_string())
        .env("HTTP_PORT", http_port.to_string())
        .env(
            "STRATA_STORE",
            with(&url, &format!("sslmode=verify-full&sslrootcert={}", other.display())),
        );
    let mut refused = Process::spawn("strata proxy (another CA)", command);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !refused.exited() {
        assert!(
            std::time::Instant::now() < deadline,
            "the sidecar kept trying an untrusted server"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = refused.log_tail();
    assert!(
        log.contains("the PostgreSQL server's certificate is not trusted")
            && log.contains("it does not lead to the CA in sslrootcert"),
        "{log}"
    );

    println!("--- the server's own CA: it serves");
    let store = with(&url, &format!("sslmode=verify-full&sslrootcert={}", ca.display()));
    let _proxy = start_proxy(function_port, http_port, &store, &[]);
    add_and_read(http_port).await;
}
