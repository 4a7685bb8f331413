//! TLS (rustls, `ring` provider) for every Strata port, in one place: the server's
//! certificate chain and key read from PEM files; for HTTP servers (the management
//! API, the gateway's ingress) a listener that completes handshakes off the accept
//! loop (one slow client does not hold up the others) and offers HTTP/2 and HTTP/1.1
//! by ALPN; for the gRPC port of the control plane (Raft and data plane) tonic's
//! server configuration, optionally requiring client certificates from a CA (mutual
//! TLS); and for clients the trust of a private CA beside the public roots, with an
//! optional client certificate. With nothing configured every port is plain TCP.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the server to take them.
const ACCEPTED_BACKLOG: usize = 64;

/// The server's certificate chain and private key, PEM files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{0} holds no PEM certificate")]
    NoCertificate(PathBuf),
    #[error("{address}: {message}")]
    Address { address: String, message: String },
    #[error("the certificate {cert} and key {key} do not form a usable TLS identity: {message}")]
    Identity {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|error| TlsError::Read {
            path: path.to_owned(),
            message: error.to_string(),
        })?;
    if certificates.is_empty() {
        return Err(TlsError::NoCertificate(path.to_owned()));
    }
    Ok(certificates)
}

/// The acceptor for `files`, offering HTTP/2 and HTTP/1.1.
pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    let chain = certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|error| TlsError::Read {
        path: files.key.clone(),
        message: error.to_string(),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|error| TlsError::Identity {
            cert: files.cert.clone(),
            key: files.key.clone(),
            message: error.to_string(),
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The PEM certificates of a private CA, for `reqwest` clients that must trust it.
pub fn trusted_ca(path: &Path) -> Result<Vec<reqwest::Certificate>, TlsError> {
    certificates(path)?
        .into_iter()
        .map(|der| {
            reqwest::Certificate::from_der(&der).map_err(|error| TlsError::Read {
                path: path.to_owned(),
                message: error.to_string(),
            })
        })
        .collect()
}

/// Handshaken connections, for `axum::serve`.
pub struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

/// Wraps `listener`: returns the listener to serve and the accept loop to run (it
/// ends when `stop` resolves). A failed handshake is logged and dropped.
pub fn listen(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(TlsListener, impl Future<Output = ()> + Send)> {
    let local = listener.local_addr()?;
    let (sender, accepted) = mpsc::channel(ACCEPTED_BACKLOG);
    let accept_loop = async move {
        tokio::pin!(stop);
        loop {
            let (stream, peer) = tokio::select! {
                () = &mut stop => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "accepting a TLS connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY on a connection");
            }
            let (acceptor, sender) = (acceptor.clone(), sender.clone());
            // Short-lived (bounded by the handshake timeout), so not a named task.
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = sender.send((tls, peer)).await;
                    }
                    Ok(Err(error)) => tracing::debug!(%peer, %error, "a TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "a TLS handshake timed out"),
                }
            });
        }
    };
    Ok((TlsListener { accepted, local }, accept_loop))
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The accept loop ended (the server is stopping): wait for the shutdown.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// The gRPC server configuration of the control plane's Raft and data-plane port:
/// `files` is its identity; with `client_ca`, every client must present a
/// certificate that CA signed (mutual TLS), or its handshake fails.
pub fn grpc_server(files: &TlsFiles, client_ca: Option<&Path>) -> Result<tonic::transport::ServerTlsConfig, TlsError> {
    // Checked here, so a bad pair is refused at start with the files' names, not at
    // the first handshake.
    acceptor(files)?;
    let mut config = tonic::transport::ServerTlsConfig::new()
        .identity(identity(files)?)
        .timeout(HANDSHAKE_TIMEOUT);
    if let Some(path) = client_ca {
        certificates(path)?;
        config = config.client_ca_root(tonic::transport::Certificate::from_pem(read(path)?));
    }
    Ok(config)
}

/// How a gRPC client reaches an `https://` address: which CA it trusts beside the
/// public roots and which certificate, if any, it presents (mutual TLS).
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// A private CA's PEM certificates.
    pub ca: Option<PathBuf>,
    /// The client's own certificate and key.
    pub identity: Option<TlsFiles>,
}

impl ClientTls {
    /// tonic's configuration for these files, read and checked now.
    pub fn grpc(&self) -> Result<tonic::transport::ClientTlsConfig, TlsError> {
        let mut config = tonic::transport::ClientTlsConfig::new()
            .with_webpki_roots()
            .timeout(HANDSHAKE_TIMEOUT);
        if let Some(path) = &self.ca {
            certificates(path)?;
            config = config.ca_certificate(tonic::transport::Certificate::from_pem(read(path)?));
        }
        if let Some(files) = &self.identity {
            config = config.identity(identity(files)?);
        }
        Ok(config)
    }
}

/// An endpoint for `address` (`http://` or `https://host:port`): TLS for `https`
/// with `tls` (without one, the public roots alone), plain TCP for `http`.
pub fn endpoint(
    address: &str,
    tls: Option<&tonic::transport::ClientTlsConfig>,
) -> Result<tonic::transport::Endpoint, TlsError> {
    let invalid = |error: &dyn std::fmt::Display| TlsError::Address {
        address: address.to_owned(),
        message: error.to_string(),
    };
    let endpoint = tonic::transport::Endpoint::from_shared(address.to_owned()).map_err(|error| invalid(&error))?;
    if !address.starts_with("https://") {
        return Ok(endpoint);
    }
    let config = match tls {
        Some(config) => config.clone(),
        None => tonic::transport::ClientTlsConfig::new().with_webpki_roots(),
    };
    endpoint.tls_config(config).map_err(|error| invalid(&error))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.to_owned(),
        message: error.to_string(),
    })
}

/// A certificate chain and key as tonic's identity, checked to parse.
fn identity(files: &TlsFiles) -> Result<tonic::transport::Identity, TlsError> {
    certificates(&files.cert)?;
    PrivateKeyDer::from_pem_file(&files.key).map_err(|error| TlsError::Read {
        path: files.key.clone(),
        message: error.to_string(),
    })?;
    Ok(tonic::transport::Identity::from_pem(
        read(&files.cert)?,
        read(&files.key)?,
    ))
}
