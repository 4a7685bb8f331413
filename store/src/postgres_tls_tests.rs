//! The PostgreSQL store over TLS, against the test server, which serves TLS with
//! a certificate for `127.0.0.1` and `localhost` from a CA of its own
//! (`scripts/postgres.sh`; the CA's file is `STRATA_TEST_POSTGRES_CA`). What
//! each `sslmode` connects with, asked of the server itself (`pg_stat_ssl`),
//! what it refuses and in which words, and the pool's size.

use std::path::PathBuf;

use crate::{EntityKey, PostgresStore, StoreError};

/// The test server's URL and its CA file, or `None` (skip) when no server is
/// configured and none is required.
fn server() -> Option<(String, PathBuf)> {
    let required = std::env::var("STRATA_REQUIRE_POSTGRES").as_deref() == Ok("1");
    let url = match std::env::var("STRATA_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            assert!(
                !required,
                "STRATA_REQUIRE_POSTGRES=1 but STRATA_TEST_POSTGRES_URL is not set"
            );
            eprintln!("skipping: STRATA_TEST_POSTGRES_URL is not set (scripts/postgres.sh starts a server)");
            return None;
        }
    };
    match std::env::var("STRATA_TEST_POSTGRES_CA") {
        Ok(ca) if !ca.is_empty() => Some((url, PathBuf::from(ca))),
        _ => {
            assert!(
                !required,
                "STRATA_REQUIRE_POSTGRES=1 but STRATA_TEST_POSTGRES_CA is not set: name the CA that signed \
                 the test server's certificate (scripts/postgres.sh writes DIR/tls/ca.crt)"
            );
            eprintln!("skipping: STRATA_TEST_POSTGRES_CA is not set");
            None
        }
    }
}

/// A schema of the test's own for its tables, and application names that tell
/// its connections apart from every other test's.
struct Scope {
    admin: tokio_postgres::Client,
    base: String,
    name: String,
}

impl Scope {
    async fn new(base: &str, test: &str) -> Scope {
        let (admin, connection) = tokio_postgres::connect(base, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test server: {e}"));
        tokio::spawn(connection);
        let name = format!("strata_tls_{test}_{}", std::process::id());
        admin
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"))
            .await
            .unwrap();
        Scope {
            admin,
            base: base.split_once('?').map_or(base, |(base, _)| base).to_owned(),
            name,
        }
    }

    /// The store URL of connections named `app`, with `query` added.
    fn url(&self, app: &str, query: &str) -> String {
        self.url_on(&self.base, app, query)
    }

    /// The same on another `postgres://USER@HOST:PORT/DB` of the same server.
    fn url_on(&self, base: &str, app: &str, query: &str) -> String {
        let scope = format!(
            "application_name={}_{app}&options=-csearch_path%3D{}",
            self.name, self.name
        );
        match query {
            "" => format!("{base}?{scope}"),
            query => format!("{base}?{scope}&{query}"),
        }
    }

    /// (connections named `app` open, how many of them over TLS).
    async fn connections(&self, app: &str) -> (i64, i64) {
        let row = self
            .admin
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a
                 JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = $1",
                &[&format!("{}_{app}", self.name)],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    }

    async fn drop(self) {
        self.admin
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name))
            .await
            .unwrap();
    }
}

/// Opens the store and reads through each of its readers, so every connection
/// of the pool is open.
async fn open_every_connection(url: &str, readers: usize) -> Result<PostgresStore, StoreError> {
    let store = PostgresStore::connect(url).await?;
    for _ in 0..readers {
        crate::Store::recover(&store, &EntityKey::new("cart", "tls")).await?;
    }
    Ok(store)
}

fn configuration_error<T>(result: Result<T, StoreError>) -> String {
    match result {
        Err(StoreError::Config(message)) => message,
        Err(other) => panic!("expected a configuration error, got {other:?}"),
        Ok(_) => panic!("expected a configuration error, the store opened"),
    }
}

/// A CA that signed nothing the server holds.
fn another_ca(dir: &std::path::Path) -> PathBuf {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "a CA the server never heard of");
    let path = dir.join("other-ca.pem");
    std::fs::write(&path, params.self_signed(&key).unwrap().pem()).unwrap();
    path
}

#[tokio::test]
async fn each_sslmode_connects_as_libpq_would() {
    let Some((base, ca)) = server() else { return };
    let scope = Scope::new(&base, "modes").await;
    let ca = ca.display();
    // (the URL's TLS settings, whether its connections are encrypted)
    let cases = [
        (String::new(), true),
        ("sslmode=prefer".into(), true),
        ("sslmode=disable".into(), false),
        ("sslmode=require".into(), true),
        (format!("sslmode=verify-ca&sslrootcert={ca}"), true),
        (format!("sslmode=verify-full&sslrootcert={ca}"), true),
    ];
    for (case, (query, encrypted)) in cases.into_iter().enumerate() {
        let app = format!("case{case}");
        let _store = open_every_connection(&scope.url(&app, &query), 1)
            .await
            .unwrap_or_else(|e| panic!("{query:?}: {e}"));
        let (open, over_tls) = scope.connections(&app).await;
        assert_eq!(open, 2, "{query:?}: the writer's connection and one reader's");
        assert_eq!(over_tls, if encrypted { 2 } else { 0 }, "{query:?}");
    }
    scope.drop().await;
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_with_the_reason() {
    let Some((base, _)) = server() else { return };
    let scope = Scope::new(&base, "other_ca").await;
    let dir = tempfile::tempdir().unwrap();
    let other = another_ca(dir.path());
    for mode in ["verify-full", "verify-ca", "require"] {
        let url = scope.url(mode, &format!("sslmode={mode}&sslrootcert={}", other.display()));
        let message = configuration_error(PostgresStore::connect(&url).await);
        assert!(
            message.contains("the PostgreSQL server's certificate is not trusted")
                && message.contains("it does not lead to the CA in sslrootcert")
                && message.contains("check sslmode and sslrootcert"),
            "{mode}: {message}"
        );
        assert_eq!(scope.connections(mode).await.0, 0, "{mode}: nothing stays connected");
    }
    scope.drop().await;
}

#[tokio::test]
async fn verify_full_checks_the_host_name_and_verify_ca_does_not() {
    let Some((base, ca)) = server() else { return };
    let scope = Scope::new(&base, "host_name").await;
    // The same server under a name its certificate does not carry.
    let address = base
        .split_once('@')
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(address, _)| address)
        .expect("postgres://USER@HOST:PORT/DB");
    let port = address.rsplit_once(':').map_or("5432", |(_, port)| port);
    let renamed = format!("postgres://postgres@pg.strata.invalid:{port}/postgres");
    let ca = ca.display();
    let query = |mode: &str| format!("hostaddr=127.0.0.1&sslmode={mode}&sslrootcert={ca}");
    let message =
        configuration_error(PostgresStore::connect(&scope.url_on(&renamed, "full", &query("verify-full"))).await);
    assert!(
        message.contains("it was not issued for the host in the URL"),
        "{message}"
    );
    let _store = open_every_connection(&scope.url_on(&renamed, "ca", &query("verify-ca")), 1)
        .await
        .unwrap();
    assert_eq!(scope.connections("ca").await, (2, 2));
    scope.drop().await;
}

#[tokio::test]
async fn the_pool_opens_as_many_connections_as_pool_size_says() {
    let Some((base, _)) = server() else { return };
    let scope = Scope::new(&base, "pool").await;
    let _store = open_every_connection(&scope.url("five", "pool_size=5"), 8)
        .await
        .unwrap();
    assert_eq!(scope.connections("five").await.0, 5, "one writer and four readers");
    scope.drop().await;
}
