//! Secrets: the cluster secret that Raft peers prove with an HMAC on every RPC, and the
//! bearer tokens of the management API. Every comparison runs in constant time.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The shared secret of one control-plane cluster.
#[derive(Clone)]
pub struct ClusterSecret(Vec<u8>);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

impl ClusterSecret {
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        ClusterSecret(secret.into())
    }

    fn mac(&self, rpc: &str, from: u64, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        // Length-prefix the rpc name so that (rpc, payload) pairs cannot be confused.
        mac.update(&(rpc.len() as u64).to_le_bytes());
        mac.update(rpc.as_bytes());
        mac.update(&from.to_le_bytes());
        mac.update(payload);
        mac
    }

    /// Whether `presented` is this secret (constant time): the data-plane API accepts
    /// the cluster secret as a bearer token.
    pub fn matches(&self, presented: &[u8]) -> bool {
        constant_time_eq(presented, &self.0)
    }

    /// HMAC-SHA256 over the RPC name, the sender and the payload.
    pub fn sign(&self, rpc: &str, from: u64, payload: &[u8]) -> Vec<u8> {
        self.mac(rpc, from, payload).finalize().into_bytes().to_vec()
    }

    pub fn verify(&self, rpc: &str, from: u64, payload: &[u8], signature: &[u8]) -> bool {
        self.mac(rpc, from, payload).verify_slice(signature).is_ok()
    }
}

/// Compares two secrets without an early exit on the first differing byte.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_secret_verifies() {
        let secret = ClusterSecret::new("s3cret");
        let signature = secret.sign("vote", 1, b"payload");
        assert!(secret.verify("vote", 1, b"payload", &signature));
        assert!(!secret.verify("vote", 1, b"other", &signature));
        assert!(!secret.verify("append_entries", 1, b"payload", &signature));
        assert!(!secret.verify("vote", 2, b"payload", &signature));
        assert!(!ClusterSecret::new("wrong").verify("vote", 1, b"payload", &signature));
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
