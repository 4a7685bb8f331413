//! TLS for the PostgreSQL store: a `tokio-postgres` connector over rustls (the
//! `ring` provider, as everywhere in Strata) that checks the server's certificate
//! as the URL's `sslmode` says: not at all (`prefer`, `require`), its chain
//! (`verify-ca`, and `require` with a CA), or its chain and host name
//! (`verify-full`). Whether TLS is asked for at all is `tokio-postgres`'s part
//! (`postgres_url::TlsMode::ssl_mode`). A certificate refused is a
//! [`UntrustedServer`] error, which the store reports as a configuration error.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

use crate::postgres_url::{Roots, TlsMode};
use crate::StoreError;

/// Makes a TLS session per connection; cheap to clone.
#[derive(Clone)]
pub struct PostgresTls {
    config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for PostgresTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresTls").finish_non_exhaustive()
    }
}

impl PostgresTls {
    /// The connector for `mode`; reads the CA file now, so a missing or empty
    /// one fails the store's start rather than every connection.
    pub fn new(mode: &TlsMode) -> Result<Self, StoreError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (roots, check_name) = match mode {
            TlsMode::Disable | TlsMode::Prefer | TlsMode::Require { roots: None } => (None, false),
            TlsMode::Require { roots: Some(roots) } | TlsMode::VerifyCa { roots } => (Some(roots), false),
            TlsMode::VerifyFull { roots } => (Some(roots), true),
        };
        let chain = match roots {
            None => None,
            Some(roots) => Some(
                WebPkiServerVerifier::builder_with_provider(Arc::new(root_store(roots)?), provider.clone())
                    .build()
                    .map_err(|e| StoreError::Config(format!("the PostgreSQL CA (sslrootcert): {e}")))?,
            ),
        };
        let verifier = Arc::new(Verifier {
            chain,
            check_name,
            provider: provider.clone(),
        });
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError::Config(format!("TLS for PostgreSQL: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Self {
            config: Arc::new(config),
        })
    }
}

fn root_store(roots: &Roots) -> Result<RootCertStore, StoreError> {
    let mut store = RootCertStore::empty();
    match roots {
        Roots::System => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Roots::File(path) => {
            let unreadable = |message: String| {
                StoreError::Config(format!(
                    "sslrootcert {}: {message}; name a PEM file of the CA that signed the server's certificate",
                    path.display()
                ))
            };
            let certificates = CertificateDer::pem_file_iter(path)
                .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
                .map_err(|e| unreadable(e.to_string()))?;
            let (added, _) = store.add_parsable_certificates(certificates);
            if added == 0 {
                return Err(unreadable("it holds no usable certificate".into()));
            }
        }
    }
    Ok(store)
}

/// The server's certificate was refused: the URL's CA did not sign it, or it
/// was issued for another host. Waiting does not help, so it is not retried.
#[derive(Debug, thiserror::Error)]
#[error("the PostgreSQL server's certificate is not trusted ({check}): {reason}")]
pub struct UntrustedServer {
    check: &'static str,
    reason: rustls::Error,
}

/// Checks the server's certificate against a CA (the chain, and with
/// `check_name` the host name too); with no CA (`prefer`, `require` without
/// one) any certificate is taken, encryption without knowing who answers, as
/// libpq does. The handshake's signatures are always checked, so the session
/// is with the holder of that certificate's key.
#[derive(Debug)]
struct Verifier {
    chain: Option<Arc<WebPkiServerVerifier>>,
    check_name: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            // The chain is checked before the name: a wrong name means a good chain.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

impl<S> MakeTlsConnect<S> for PostgresTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type TlsConnect = Handshake;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Handshake, io::Error> {
        // An IP address is checked against the certificate's IP addresses.
        let name = ServerName::try_from(domain.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{domain:?}: {e}")))?;
        Ok(Handshake {
            connector: tokio_rustls::TlsConnector::from(self.config.clone()),
            name,
        })
    }
}

/// One connection's handshake.
pub struct Handshake {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for Handshake
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<TlsStream<S>, Self::Error>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            match self.connector.connect(self.name, stream).await {
                Ok(stream) => Ok(TlsStream(stream)),
                Err(error) => Err(handshake_error(error)),
            }
        })
    }
}

/// A refused certificate as [`UntrustedServer`]; anything else as it came.
fn handshake_error(error: io::Error) -> Box<dyn std::error::Error + Send + Sync> {
    let refused = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .filter(|inner| matches!(inner, rustls::Error::InvalidCertificate(_)))
        .cloned();
    match refused {
        Some(reason) => {
            let check = match &reason {
                rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
                ) => "sslmode=verify-full: it was not issued for the host in the URL",
                _ => "it does not lead to the CA in sslrootcert",
            };
            Box::new(UntrustedServer { check, reason })
        }
        None => Box::new(error),
    }
}

/// A TLS session to the server.
pub struct TlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for TlsStream<S> {
    /// None: SCRAM then authenticates without channel binding (`SCRAM-SHA-256`,
    /// not `-PLUS`), which needs the hash of the certificate's own signature
    /// algorithm; `verify-full` is what guards against a server in the middle.
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

/// Whether `error` (from connecting) is a certificate refused by the URL's
/// `sslmode` and CA.
pub fn untrusted(error: &tokio_postgres::Error) -> Option<&UntrustedServer> {
    std::error::Error::source(error).and_then(|source| source.downcast_ref::<UntrustedServer>())
}
