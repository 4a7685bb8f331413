//! The TLS flags of the CLI's commands, one definition each: the private CA a
//! client trusts at `https://` addresses, and the client certificate a sidecar or
//! gateway presents to a control plane that requires one (mutual TLS).

use std::path::PathBuf;

use clap::Args;
use strata_tls::{ClientTls, TlsFiles};

/// The certificate a server (the gateway's ingress) presents.
#[derive(Args, Debug, Clone)]
pub struct IngressTlsArgs {
    /// Serve over TLS (HTTP/2 and HTTP/1.1 by ALPN: gRPC, gRPC-web, HTTP+JSON) with
    /// this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "STRATA_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "STRATA_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl IngressTlsArgs {
    pub fn files(&self) -> Option<TlsFiles> {
        self.tls_cert
            .clone()
            .zip(self.tls_key.clone())
            .map(|(cert, key)| TlsFiles { cert, key })
    }
}

/// How a command that calls the management API trusts it.
#[derive(Args, Debug, Clone)]
pub struct ApiTlsArgs {
    /// A private CA (PEM) to trust beside the public roots when the API is https://.
    #[arg(long, env = "STRATA_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
}

/// How a sidecar or a gateway dials the control plane's data-plane port.
#[derive(Args, Debug, Clone)]
pub struct ControlPlaneTlsArgs {
    /// A private CA (PEM) to trust beside the public roots at https:// control-plane addresses.
    #[arg(long, env = "STRATA_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// The certificate (PEM) to present to a control plane that requires client
    /// certificates (its --tls-client-ca); needs --tls-client-key.
    #[arg(long, env = "STRATA_TLS_CLIENT_CERT", requires = "tls_client_key")]
    pub tls_client_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-client-cert.
    #[arg(long, env = "STRATA_TLS_CLIENT_KEY", requires = "tls_client_cert")]
    pub tls_client_key: Option<PathBuf>,
}

impl ControlPlaneTlsArgs {
    pub fn client_tls(&self) -> ClientTls {
        ClientTls {
            ca: self.tls_ca.clone(),
            identity: self
                .tls_client_cert
                .clone()
                .zip(self.tls_client_key.clone())
                .map(|(cert, key)| TlsFiles { cert, key }),
        }
    }
}
