//! Where the user function listens: `HOST` and `PORT`, as CloudState proxies and
//! `strata deploy` set them. Read through a lookup function so tests can inject a map
//! instead of touching the process environment.

use crate::ConfigError;

/// The address the user function's gRPC server binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenConfig {
    /// A host name or IP address; `HOST`, default `127.0.0.1`.
    pub host: String,
    /// A TCP port; `PORT`, default `8080`.
    pub port: u16,
}

impl ListenConfig {
    /// Default `HOST`: loopback, because the proxy runs beside the function.
    pub const DEFAULT_HOST: &'static str = "127.0.0.1";
    /// Default `PORT`, the port CloudState proxies call by default.
    pub const DEFAULT_PORT: u16 = 8080;

    /// Reads `HOST` and `PORT` from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads `HOST` and `PORT` through `lookup`; unset or empty means the default.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let read = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let host = read("HOST").unwrap_or_else(|| Self::DEFAULT_HOST.to_owned());
        let port = match read("PORT") {
            None => Self::DEFAULT_PORT,
            Some(value) => value.trim().parse().map_err(|_| ConfigError {
                variable: "PORT",
                value,
                reason: "expected a TCP port number from 0 to 65535".to_owned(),
            })?,
        };
        Ok(Self { host, port })
    }

    /// `host:port`, with brackets around an IPv6 address.
    pub fn address(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            host: Self::DEFAULT_HOST.to_owned(),
            port: Self::DEFAULT_PORT,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn read(vars: &[(&str, &str)]) -> Result<ListenConfig, ConfigError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        ListenConfig::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_to_loopback_8080() {
        assert_eq!(read(&[]).unwrap(), ListenConfig::default());
        assert_eq!(
            read(&[("PORT", ""), ("HOST", " ")]).unwrap().address(),
            "127.0.0.1:8080"
        );
    }

    #[test]
    fn reads_host_and_port() {
        let config = read(&[("HOST", "0.0.0.0"), ("PORT", "9001")]).unwrap();
        assert_eq!(config.address(), "0.0.0.0:9001");
        assert_eq!(read(&[("HOST", "::1"), ("PORT", "1")]).unwrap().address(), "[::1]:1");
    }

    #[test]
    fn an_invalid_port_names_the_variable() {
        let error = read(&[("PORT", "80a")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid PORT=\"80a\": expected a TCP port number from 0 to 65535"
        );
        assert!(read(&[("PORT", "65536")]).is_err());
    }
}
