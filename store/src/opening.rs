//! Opening a store from its URL: at once ([`open`]), or waiting for a store that
//! is not up yet ([`open_when_up`]: a PostgreSQL still starting, as when a whole
//! installation starts together), with a check of the URL alone ([`check_url`])
//! so that a mistyped setting fails a process's start instead of being retried.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::postgres_tls::PostgresTls;
use crate::postgres_url::PostgresOptions;
use crate::{PostgresStore, SqliteStore, Store, StoreError};

/// The first pause between attempts to open a store that is not up.
const FIRST_RETRY: Duration = Duration::from_millis(250);
/// The longest pause: a store coming up is noticed within this.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Which kind of store a URL names.
enum Kind<'a> {
    Sqlite(&'a str),
    Postgres,
}

fn kind(url: &str) -> Result<Kind<'_>, StoreError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(StoreError::Config(
                "sqlite:// needs a file path, e.g. sqlite://./strata.db".into(),
            ));
        }
        return Ok(Kind::Sqlite(path));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Kind::Postgres);
    }
    let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
    Err(StoreError::Config(format!(
        "unsupported store URL (scheme {scheme:?}): use sqlite://PATH or postgres://USER@HOST/DB"
    )))
}

/// Opens a store from a URL: `sqlite://PATH` (a file, created if missing) or
/// `postgres://...` / `postgresql://...`.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    match kind(url)? {
        Kind::Sqlite(path) => Ok(Arc::new(SqliteStore::open(path).await?)),
        Kind::Postgres => Ok(Arc::new(PostgresStore::connect(url).await?)),
    }
}

/// Checks what can be checked of `url` without reaching the store: its form,
/// its settings, and the CA file it names.
pub fn check_url(url: &str) -> Result<(), StoreError> {
    match kind(url)? {
        Kind::Sqlite(_) => Ok(()),
        Kind::Postgres => PostgresTls::new(&PostgresOptions::parse(url)?.tls).map(drop),
    }
}

/// Opens the store, trying again while it is unavailable (250 ms doubling to
/// 5 s between attempts) until `patience` runs out (`None`: for as long as it
/// takes). A configuration error (a bad URL, a certificate or credentials the
/// server refuses) is returned at once: waiting would not fix it.
pub async fn open_when_up(url: &str, patience: Option<Duration>) -> Result<Arc<dyn Store>, StoreError> {
    let deadline = patience.map(|patience| Instant::now() + patience);
    let mut pause = FIRST_RETRY;
    for attempt in 1u32.. {
        let error = match open(url).await {
            Ok(store) => {
                if attempt > 1 {
                    tracing::info!(attempt, "the store is up");
                }
                return Ok(store);
            }
            Err(error @ StoreError::Config(_)) => return Err(error),
            Err(error) => error,
        };
        if deadline.is_some_and(|deadline| Instant::now() + pause > deadline) {
            return Err(error);
        }
        tracing::warn!(%error, attempt, retry_in = ?pause, "the store is not up yet; trying again");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_RETRY);
    }
    unreachable!("attempts are counted without end")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_checked_without_reaching_the_store() {
        assert!(check_url("sqlite://./strata.db").is_ok());
        assert!(check_url("postgres://u@nowhere.invalid/db?sslmode=require").is_ok());
        let refused = |url: &str| match check_url(url) {
            Err(StoreError::Config(message)) => message,
            other => panic!("{url}: {other:?}"),
        };
        assert!(refused("sqlite://").contains("needs a file path"));
        let message = refused("mysql://root:hunter2@db/x");
        assert!(
            message.contains("\"mysql\"") && !message.contains("hunter2"),
            "{message}"
        );
        let message = refused("postgres://u@h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem");
        assert!(message.contains("sslrootcert /nonexistent/ca.pem"), "{message}");
    }

    #[tokio::test]
    async fn a_store_that_stays_down_is_given_up_on_after_the_patience() {
        // A port nothing listens on: every attempt is refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .unwrap()
            .port();
        let url = format!("postgres://u@127.0.0.1:{port}/db?sslmode=disable");
        let error = open_when_up(&url, Some(Duration::from_millis(800)))
            .await
            .err()
            .unwrap();
        assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    }

    #[tokio::test]
    async fn a_configuration_error_is_not_retried() {
        let error = open_when_up("postgres://u@h/db?sslmode=bogus", None)
            .await
            .err()
            .unwrap();
        assert!(matches!(error, StoreError::Config(_)), "{error:?}");
    }
}
