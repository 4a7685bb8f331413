//! What a `postgres://` store URL asks for, beyond what `tokio-postgres` reads
//! itself: libpq's `sslmode` (all of `disable`, `prefer`, `require`, `verify-ca`
//! and `verify-full`, with libpq's meanings) and `sslrootcert`, and Strata's own
//! `pool_size`. Pure: parsing only; the TLS connector is `postgres_tls`, the
//! connections `postgres`. Errors never repeat the URL (it may hold a password).

use std::path::PathBuf;

use tokio_postgres::config::SslMode;
use tokio_postgres::Config;

use crate::StoreError;

/// Connections a store opens unless the URL's `pool_size` says otherwise: the
/// group-commit writer's and one reader's. A reader pipelines any number of
/// concurrent reads, and reads are rare (an entity's recovery when it activates,
/// event-log polls, the inspector), so more readers mostly cost the server
/// connections: at two a sidecar, PostgreSQL's default `max_connections` of 100
/// serves about 45 sidecars where four a sidecar served about 20.
pub const DEFAULT_POOL_SIZE: usize = 2;
/// The writer needs one connection of its own and the reads another.
pub const MIN_POOL_SIZE: usize = 2;
/// A bound that catches a typo before it exhausts the server.
pub const MAX_POOL_SIZE: usize = 64;

/// How a connection uses TLS, as libpq's `sslmode` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain TCP only.
    Disable,
    /// TLS when the server offers it, plain otherwise; the certificate is not checked.
    Prefer,
    /// TLS or no connection. The certificate is not checked unless `sslrootcert`
    /// names a CA, then its chain is (libpq does the same when a root file exists).
    Require { roots: Option<Roots> },
    /// TLS with a certificate signed by `roots`, for any host name.
    VerifyCa { roots: Roots },
    /// TLS with a certificate signed by `roots` and issued for the host dialled.
    VerifyFull { roots: Roots },
}

impl TlsMode {
    /// `tokio-postgres`'s own mode: whether to ask for TLS and whether to insist.
    pub fn ssl_mode(&self) -> SslMode {
        match self {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            TlsMode::Require { .. } | TlsMode::VerifyCa { .. } | TlsMode::VerifyFull { .. } => SslMode::Require,
        }
    }
}

/// The certificates a server's chain must lead to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// PEM file(s) of a CA (`sslrootcert=PATH`).
    File(PathBuf),
    /// The public web roots (`sslrootcert=system`, as in libpq 16).
    System,
}

/// A store URL taken apart.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Everything `tokio-postgres` understands, with its `ssl_mode` set from `tls`.
    pub config: Config,
    pub tls: TlsMode,
    /// Connections in all: one writer, the rest readers.
    pub pool_size: usize,
}

impl PostgresOptions {
    /// Parses `url` (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?KEY=VALUE&...]`).
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut passed_on = Vec::new();
        let mut sslmode = None;
        let mut sslrootcert = None;
        let mut pool_size = None;
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match decode(key)?.as_str() {
                "sslmode" => sslmode = Some(decode(value)?),
                "sslrootcert" => sslrootcert = Some(decode(value)?),
                "pool_size" => pool_size = Some(decode(value)?),
                "sslcert" | "sslkey" | "sslpassword" => {
                    return Err(config_error(
                        "client certificates (sslcert, sslkey) are not supported yet: \
                         authenticate with a password in the URL",
                    ))
                }
                _ => passed_on.push(pair),
            }
        }
        let tls = tls_mode(sslmode.as_deref(), sslrootcert)?;
        let pool_size = match pool_size {
            None => DEFAULT_POOL_SIZE,
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|size| (MIN_POOL_SIZE..=MAX_POOL_SIZE).contains(size))
                .ok_or_else(|| {
                    config_error(&format!(
                        "pool_size must be a whole number from {MIN_POOL_SIZE} (the writer's connection \
                         and one reader's) to {MAX_POOL_SIZE}, not {text:?}"
                    ))
                })?,
        };
        let rest = if passed_on.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", passed_on.join("&"))
        };
        let mut config: Config = rest
            .parse()
            .map_err(|e: tokio_postgres::Error| config_error(&format!("invalid PostgreSQL URL: {e}")))?;
        config.ssl_mode(tls.ssl_mode());
        Ok(Self { config, tls, pool_size })
    }
}

fn tls_mode(sslmode: Option<&str>, sslrootcert: Option<String>) -> Result<TlsMode, StoreError> {
    let roots = sslrootcert.map(|value| match value.as_str() {
        "system" => Roots::System,
        path => Roots::File(PathBuf::from(path)),
    });
    let verified = |mode: &str, roots: Option<Roots>| {
        roots.ok_or_else(|| {
            config_error(&format!(
                "sslmode={mode} checks the server's certificate against a CA: add sslrootcert=PATH \
                 (a PEM file of the CA that signed it) or sslrootcert=system (the public roots)"
            ))
        })
    };
    match sslmode.unwrap_or("prefer") {
        "disable" => Ok(TlsMode::Disable),
        "prefer" => Ok(TlsMode::Prefer),
        "require" => Ok(TlsMode::Require { roots }),
        "verify-ca" => Ok(TlsMode::VerifyCa {
            roots: verified("verify-ca", roots)?,
        }),
        "verify-full" => Ok(TlsMode::VerifyFull {
            roots: verified("verify-full", roots)?,
        }),
        "allow" => Err(config_error(
            "sslmode=allow is not supported: use prefer (TLS when the server offers it) or disable",
        )),
        other => Err(config_error(&format!(
            "sslmode must be disable, prefer, require, verify-ca or verify-full, not {other:?}"
        ))),
    }
}

fn config_error(message: &str) -> StoreError {
    StoreError::Config(format!("the PostgreSQL URL: {message}"))
}

/// Percent-decoding of one URL query component (`+` stays `+`, as libpq reads it).
fn decode(text: &str) -> Result<String, StoreError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| config_error("a query parameter has a malformed %-escape"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| config_error("a query parameter is not UTF-8 once decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> PostgresOptions {
        PostgresOptions::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    fn refused(url: &str) -> String {
        match PostgresOptions::parse(url) {
            Err(StoreError::Config(message)) => message,
            other => panic!("{url}: expected a configuration error, got {other:?}"),
        }
    }

    #[test]
    fn without_sslmode_tls_is_preferred_as_libpq_does() {
        let options = parse("postgres://strata@db.example:5433/cart");
        assert_eq!(options.tls, TlsMode::Prefer);
        assert_eq!(options.config.get_ssl_mode(), SslMode::Prefer);
        assert_eq!(options.pool_size, DEFAULT_POOL_SIZE);
        assert_eq!(options.config.get_dbname(), Some("cart"));
        assert_eq!(options.config.get_ports(), &[5433]);
    }

    #[test]
    fn each_sslmode_keeps_libpqs_meaning() {
        let root = || Roots::File(PathBuf::from("/etc/ca dir/root.crt"));
        let cases = [
            ("sslmode=disable", TlsMode::Disable, SslMode::Disable),
            ("sslmode=prefer", TlsMode::Prefer, SslMode::Prefer),
            ("sslmode=require", TlsMode::Require { roots: None }, SslMode::Require),
            (
                "sslmode=require&sslrootcert=/etc/ca%20dir/root.crt",
                TlsMode::Require { roots: Some(root()) },
                SslMode::Require,
            ),
            (
                "sslrootcert=/etc/ca%20dir/root.crt&sslmode=verify-ca",
                TlsMode::VerifyCa { roots: root() },
                SslMode::Require,
            ),
            (
                "sslmode=verify-full&sslrootcert=system",
                TlsMode::VerifyFull { roots: Roots::System },
                SslMode::Require,
            ),
        ];
        for (query, tls, ssl_mode) in cases {
            let options = parse(&format!("postgres://u@h/db?{query}"));
            assert_eq!(options.tls, tls, "{query}");
            assert_eq!(options.config.get_ssl_mode(), ssl_mode, "{query}");
        }
    }

    #[test]
    fn other_parameters_still_reach_tokio_postgres() {
        let options = parse(
            "postgres://u:secret@h/db?application_name=cart%2D1&sslmode=require&pool_size=5&options=-csearch_path%3Dx",
        );
        assert_eq!(options.config.get_application_name(), Some("cart-1"));
        assert_eq!(options.config.get_options(), Some("-csearch_path=x"));
        assert_eq!(options.config.get_password(), Some(&b"secret"[..]));
        assert_eq!(options.pool_size, 5);
    }

    #[test]
    fn verification_without_a_ca_is_refused_naming_the_fix() {
        for mode in ["verify-ca", "verify-full"] {
            let message = refused(&format!("postgres://u@h/db?sslmode={mode}"));
            assert!(message.contains(&format!("sslmode={mode}")), "{message}");
            assert!(message.contains("sslrootcert=PATH"), "{message}");
        }
    }

    #[test]
    fn bad_settings_are_refused_with_what_is_allowed() {
        assert!(
            refused("postgres://u@h/db?sslmode=maybe").contains("disable, prefer, require, verify-ca or verify-full")
        );
        assert!(refused("postgres://u@h/db?sslmode=allow").contains("not supported"));
        assert!(refused("postgres://u@h/db?sslcert=/c.pem").contains("client certificates"));
        for size in ["1", "0", "65", "four", ""] {
            let message = refused(&format!("postgres://u@h/db?pool_size={size}"));
            assert!(message.contains("pool_size must be a whole number from 2"), "{message}");
        }
        assert!(refused("postgres://u@h/db?pool_size=%zz").contains("%-escape"));
        assert!(refused("postgres://u@h/db?unknown=1").contains("invalid PostgreSQL URL"));
    }

    #[test]
    fn an_error_never_repeats_the_password() {
        for url in [
            "postgres://u:hunter2@h/db?sslmode=verify-full",
            "postgres://u:hunter2@h/db?pool_size=1",
            "postgres://u:hunter2@h/db?bogus=1",
        ] {
            assert!(!refused(url).contains("hunter2"), "{url}");
        }
    }
}
