//! A throwaway public-key infrastructure for TLS tests, made with rcgen: a CA,
//! a server certificate for `127.0.0.1` and `localhost` signed by it, and a
//! client certificate for mutual TLS. Owns nothing but the files it writes.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// The files of a throwaway PKI, all PEM.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    /// Writes a new CA and its server and client certificates into `dir`.
    pub fn create(dir: &Path) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "strata test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let pki = Pki {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        };
        std::fs::write(&pki.ca, ca_cert.pem()).unwrap();
        for (names, cert, key) in [
            (vec!["127.0.0.1", "localhost"], &pki.server_cert, &pki.server_key),
            (vec!["strata-client"], &pki.client_cert, &pki.client_key),
        ] {
            let leaf_key = KeyPair::generate().unwrap();
            let params = CertificateParams::new(names.into_iter().map(str::to_owned).collect::<Vec<_>>()).unwrap();
            let leaf = params.signed_by(&leaf_key, &ca_cert, &ca_key).unwrap();
            std::fs::write(cert, leaf.pem()).unwrap();
            std::fs::write(key, leaf_key.serialize_pem()).unwrap();
        }
        pki
    }
}
