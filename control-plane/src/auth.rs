//! Secrets and who holds them: the cluster secret that Raft peers prove with an HMAC on
//! every RPC, the configured bearer tokens (admin, read-only, gateway; kept only as
//! SHA-256 digests), the instance credentials derived from the cluster secret, and the
//! pure rules of what each principal may do. Every comparison runs in constant time.
//! The HTTP and gRPC shells that read the `Authorization` header live in `api` and
//! `data_plane`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

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

/// Marks an instance credential; `v1` names the MAC's input layout.
const INSTANCE_PREFIX: &str = "strata-instance.v1.";
/// Domain separation: an instance credential's MAC is never a Raft RPC's signature.
const INSTANCE_RPC: &str = "instance-credential";

impl ClusterSecret {
    /// The credential a sidecar presents: it may register, heartbeat, report ready and
    /// drain instances of `service` only, and only `instance` when one is given (the
    /// local runtime knows each id in advance; a Kubernetes pod's name is not known
    /// when its Deployment is written, so those are bound to the service alone).
    /// Derived, not stored: the control plane recomputes the MAC to check one.
    pub fn instance_credential(&self, service: &str, instance: Option<&str>) -> String {
        let instance = instance.unwrap_or_default();
        let mac = self.sign(INSTANCE_RPC, 0, &instance_scope_bytes(service, instance));
        format!(
            "{INSTANCE_PREFIX}{}.{}.{}",
            URL_SAFE_NO_PAD.encode(service),
            URL_SAFE_NO_PAD.encode(instance),
            URL_SAFE_NO_PAD.encode(mac)
        )
    }

    /// The scope of a genuine instance credential; `None` for anything else.
    fn instance_scope(&self, presented: &str) -> Option<InstanceScope> {
        let mut fields = presented.strip_prefix(INSTANCE_PREFIX)?.split('.');
        let (service, instance, mac) = (fields.next()?, fields.next()?, fields.next()?);
        if fields.next().is_some() {
            return None;
        }
        let service = String::from_utf8(URL_SAFE_NO_PAD.decode(service).ok()?).ok()?;
        let instance = String::from_utf8(URL_SAFE_NO_PAD.decode(instance).ok()?).ok()?;
        let mac = URL_SAFE_NO_PAD.decode(mac).ok()?;
        if service.is_empty() || !self.verify(INSTANCE_RPC, 0, &instance_scope_bytes(&service, &instance), &mac) {
            return None;
        }
        Some(InstanceScope {
            service,
            instance: (!instance.is_empty()).then_some(instance),
        })
    }
}

/// Length-prefixed, so ("ab", "c") and ("a", "bc") sign differently.
fn instance_scope_bytes(service: &str, instance: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(16 + service.len() + instance.len());
    bytes.extend_from_slice(&(service.len() as u64).to_le_bytes());
    bytes.extend_from_slice(service.as_bytes());
    bytes.extend_from_slice(&(instance.len() as u64).to_le_bytes());
    bytes.extend_from_slice(instance.as_bytes());
    bytes
}

/// A configured token as it is kept: its SHA-256 digest. Tokens are long random
/// strings, so a plain digest (no salt, no slow hash) is enough that a memory dump
/// or a core file does not hand them out; passwords would need a slow hash.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenDigest([u8; 32]);

impl std::fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenDigest(..)")
    }
}

impl TokenDigest {
    pub fn of(token: &str) -> Self {
        TokenDigest(Sha256::digest(token.as_bytes()).into())
    }

    /// Whether `presented` hashes to this digest (the digests compared in constant time).
    pub fn matches(&self, presented: &str) -> bool {
        constant_time_eq(&TokenDigest::of(presented).0, &self.0)
    }
}

/// What an instance credential is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceScope {
    pub service: String,
    /// `None`: any instance of the service.
    pub instance: Option<String>,
}

/// Who presented a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No admin token is configured (`strata dev`-style open API on loopback).
    Open,
    Admin,
    ReadOnly,
    Gateway,
    /// The cluster secret itself: control-plane nodes and operators holding it.
    Cluster,
    Instance(InstanceScope),
}

impl Principal {
    /// How the audit log names this principal (never the token itself).
    pub fn name(&self) -> String {
        match self {
            Principal::Open => "anonymous (open API)".into(),
            Principal::Admin => "admin token".into(),
            Principal::ReadOnly => "read-only token".into(),
            Principal::Gateway => "gateway token".into(),
            Principal::Cluster => "cluster secret".into(),
            Principal::Instance(InstanceScope { service, instance }) => match instance {
                Some(instance) => format!("instance {instance} of {service}"),
                None => format!("an instance of {service}"),
            },
        }
    }

    /// Whether this principal may call the management REST API with `method`.
    pub fn may_call_api(&self, writes: bool) -> Result<(), Denied> {
        match self {
            Principal::Open | Principal::Admin | Principal::Cluster => Ok(()),
            Principal::ReadOnly if !writes => Ok(()),
            Principal::ReadOnly => Err(Denied("this token is read-only; writes need the admin token".into())),
            Principal::Gateway | Principal::Instance(_) => Err(Denied(format!(
                "the {} may only call the data-plane API; the management API needs the admin or read-only token",
                self.name()
            ))),
        }
    }

    /// Whether this principal may make a data-plane call.
    pub fn may(&self, call: &DataPlaneCall<'_>) -> Result<(), Denied> {
        match (self, call) {
            (Principal::Admin | Principal::Cluster, _) => Ok(()),
            (
                Principal::Gateway,
                DataPlaneCall::WatchRoutes | DataPlaneCall::Poke | DataPlaneCall::WakeSubscriber { .. },
            ) => Ok(()),
            // Events its own service wrote wake the services subscribed to them, and
            // only those (knowing the subscribers from the routes, a sidecar could
            // otherwise wake any service it likes).
            (
                Principal::Instance(scope),
                DataPlaneCall::WakeSubscriber {
                    service,
                    event_log,
                    subscribed,
                    writers,
                },
            ) => {
                if !writers.iter().any(|writer| *writer == scope.service) {
                    Err(Denied(format!(
                        "the {} may not wake {service} for event log {event_log:?}: no entity of {} writes it",
                        self.name(),
                        scope.service
                    )))
                } else if !subscribed {
                    Err(Denied(format!(
                        "the {} may not wake {service}: it does not subscribe to event log {event_log:?}",
                        self.name()
                    )))
                } else {
                    Ok(())
                }
            }
            // A sidecar learns its own shards, and where to forward, from the route watch.
            (Principal::Instance(_), DataPlaneCall::WatchRoutes) => Ok(()),
            (Principal::Instance(scope), DataPlaneCall::Register { service, instance }) => {
                scope.covers(service, instance)
            }
            (
                Principal::Instance(scope),
                DataPlaneCall::OwnInstance {
                    instance,
                    registered_service,
                },
            ) => match registered_service {
                Some(service) => scope.covers(service, instance),
                // An unknown instance: only a credential bound to that very id.
                None if scope.instance.as_deref() == Some(*instance) => Ok(()),
                None => Err(Denied(format!(
                    "the {} may not act for instance {instance}, which is not registered",
                    self.name()
                ))),
            },
            (Principal::Open | Principal::ReadOnly | Principal::Gateway | Principal::Instance(_), _) => {
                Err(Denied(format!("the {} may not {}", self.name(), call.describe())))
            }
        }
    }
}

impl InstanceScope {
    fn covers(&self, service: &str, instance: &str) -> Result<(), Denied> {
        if self.service != service {
            return Err(Denied(format!(
                "this credential belongs to service {}, not {service}",
                self.service
            )));
        }
        match &self.instance {
            Some(own) if own != instance => Err(Denied(format!(
                "this credential belongs to instance {own}, not {instance}"
            ))),
            _ => Ok(()),
        }
    }
}

/// A data-plane call, as far as the rules need to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataPlaneCall<'a> {
    Register {
        service: &'a str,
        instance: &'a str,
    },
    /// Report ready, heartbeat or drain: acts on one registered instance.
    OwnInstance {
        instance: &'a str,
        /// The service the registry has the instance under, if it has it.
        registered_service: Option<&'a str>,
    },
    WatchRoutes,
    Poke,
    /// Wake `service` from zero for events written to `event_log` (a persistence id).
    WakeSubscriber {
        service: &'a str,
        event_log: &'a str,
        /// Whether the registry has `service` subscribed to `event_log`.
        subscribed: bool,
        /// The services whose entities write `event_log`, by the registry.
        writers: &'a [&'a str],
    },
}

impl DataPlaneCall<'_> {
    fn describe(&self) -> String {
        match self {
            DataPlaneCall::Register { instance, .. } => format!("register instance {instance}"),
            DataPlaneCall::OwnInstance { instance, .. } => format!("act for instance {instance}"),
            DataPlaneCall::WatchRoutes => "watch routes".into(),
            DataPlaneCall::Poke => "poke a service (that needs the gateway token)".into(),
            DataPlaneCall::WakeSubscriber { service, event_log, .. } => {
                format!("wake {service} for event log {event_log:?}")
            }
        }
    }
}

/// A refusal, said to the caller as 403 / `PERMISSION_DENIED`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

/// Why a credential was not recognised, said as 401 / `UNAUTHENTICATED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unauthenticated {
    #[error("missing bearer token: send `Authorization: Bearer <token>`")]
    Missing,
    #[error("invalid bearer token")]
    Invalid,
}

/// Recognises every credential of one cluster. Holds digests of the configured tokens
/// and the cluster secret, never a token in plain text.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    admin: Option<TokenDigest>,
    read_only: Option<TokenDigest>,
    gateway: Option<TokenDigest>,
    secret: Option<ClusterSecret>,
}

impl Authenticator {
    /// Empty tokens count as none.
    pub fn new(admin: Option<&str>, read_only: Option<&str>) -> Self {
        let digest = |token: Option<&str>| token.filter(|token| !token.is_empty()).map(TokenDigest::of);
        Authenticator {
            admin: digest(admin),
            read_only: digest(read_only),
            gateway: None,
            secret: None,
        }
    }

    pub fn with_gateway_token(mut self, token: Option<&str>) -> Self {
        self.gateway = token.filter(|token| !token.is_empty()).map(TokenDigest::of);
        self
    }

    /// Recognise the cluster secret and the instance credentials derived from it.
    pub fn with_cluster_secret(mut self, secret: ClusterSecret) -> Self {
        self.secret = Some(secret);
        self
    }

    /// Without an admin token the management API is open (`strata dev` on loopback).
    pub fn is_open(&self) -> bool {
        self.admin.is_none()
    }

    /// Who presented `presented` (the bearer token, if any).
    pub fn identify(&self, presented: Option<&str>) -> Result<Principal, Unauthenticated> {
        let presented = presented.map(str::trim).filter(|token| !token.is_empty());
        let Some(presented) = presented else {
            return Err(Unauthenticated::Missing);
        };
        let is = |digest: &Option<TokenDigest>| digest.as_ref().is_some_and(|digest| digest.matches(presented));
        // Every configured token is checked, so the time taken says nothing of which matched.
        let (admin, read_only, gateway) = (is(&self.admin), is(&self.read_only), is(&self.gateway));
        if admin {
            return Ok(Principal::Admin);
        }
        if read_only {
            return Ok(Principal::ReadOnly);
        }
        if gateway {
            return Ok(Principal::Gateway);
        }
        let Some(secret) = &self.secret else {
            return Err(Unauthenticated::Invalid);
        };
        if secret.matches(presented.as_bytes()) {
            return Ok(Principal::Cluster);
        }
        secret
            .instance_scope(presented)
            .map(Principal::Instance)
            .ok_or(Unauthenticated::Invalid)
    }
}

/// The bearer token of an `Authorization` header value, if it is one.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    header.and_then(|value| value.strip_prefix("Bearer ")).map(str::trim)
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

    fn authenticator() -> Authenticator {
        Authenticator::new(Some("admin"), Some("reader"))
            .with_gateway_token(Some("gateway"))
            .with_cluster_secret(ClusterSecret::new("s3cret"))
    }

    #[test]
    fn every_credential_is_recognised_as_its_principal() {
        let auth = authenticator();
        let secret = ClusterSecret::new("s3cret");
        assert_eq!(auth.identify(Some("admin")), Ok(Principal::Admin));
        assert_eq!(auth.identify(Some("reader")), Ok(Principal::ReadOnly));
        assert_eq!(auth.identify(Some("gateway")), Ok(Principal::Gateway));
        assert_eq!(auth.identify(Some("s3cret")), Ok(Principal::Cluster));
        assert_eq!(
            auth.identify(Some(&secret.instance_credential("cart", Some("cart-1")))),
            Ok(Principal::Instance(InstanceScope {
                service: "cart".into(),
                instance: Some("cart-1".into())
            }))
        );
        assert_eq!(
            auth.identify(Some(&secret.instance_credential("cart", None))),
            Ok(Principal::Instance(InstanceScope {
                service: "cart".into(),
                instance: None
            }))
        );
        assert_eq!(auth.identify(None), Err(Unauthenticated::Missing));
        assert_eq!(auth.identify(Some("  ")), Err(Unauthenticated::Missing));
        assert_eq!(auth.identify(Some("nope")), Err(Unauthenticated::Invalid));
    }

    #[test]
    fn a_forged_or_altered_instance_credential_is_refused() {
        let auth = authenticator();
        let other_cluster = ClusterSecret::new("another cluster").instance_credential("cart", Some("cart-1"));
        assert_eq!(auth.identify(Some(&other_cluster)), Err(Unauthenticated::Invalid));
        // Re-pointing a genuine credential at another instance breaks its MAC.
        let genuine = ClusterSecret::new("s3cret").instance_credential("cart", Some("cart-1"));
        let fields: Vec<&str> = genuine.split('.').collect();
        let moved = format!(
            "{}.{}.{}.{}.{}",
            fields[0],
            fields[1],
            fields[2],
            URL_SAFE_NO_PAD.encode("cart-2"),
            fields[4]
        );
        assert_eq!(auth.identify(Some(&moved)), Err(Unauthenticated::Invalid));
        assert_eq!(
            auth.identify(Some(&format!("{genuine}.x"))),
            Err(Unauthenticated::Invalid)
        );
        assert_eq!(auth.identify(Some(INSTANCE_PREFIX)), Err(Unauthenticated::Invalid));
        // Without the cluster secret no instance credential is recognised.
        assert_eq!(
            Authenticator::new(Some("admin"), None).identify(Some(&genuine)),
            Err(Unauthenticated::Invalid)
        );
    }

    #[test]
    fn the_authenticator_keeps_no_token_in_plain_text() {
        let printed = format!("{:?}", authenticator());
        for token in ["admin", "reader", "gateway", "s3cret"] {
            assert!(!printed.contains(&format!("\"{token}\"")), "{printed}");
        }
    }

    #[test]
    fn an_instance_acts_for_itself_only() {
        let own = Principal::Instance(InstanceScope {
            service: "cart".into(),
            instance: Some("cart-1".into()),
        });
        let register = |service, instance| DataPlaneCall::Register { service, instance };
        let act = |instance, registered_service| DataPlaneCall::OwnInstance {
            instance,
            registered_service,
        };
        assert_eq!(own.may(&register("cart", "cart-1")), Ok(()));
        assert_eq!(
            own.may(&register("cart", "cart-2")),
            Err(Denied("this credential belongs to instance cart-1, not cart-2".into()))
        );
        assert_eq!(
            own.may(&register("shop", "cart-1")),
            Err(Denied("this credential belongs to service cart, not shop".into()))
        );
        assert_eq!(own.may(&act("cart-1", Some("cart"))), Ok(()));
        assert_eq!(own.may(&act("cart-1", None)), Ok(()));
        assert!(own.may(&act("cart-2", Some("cart"))).is_err());
        assert!(own.may(&act("cart-2", None)).is_err());
        assert_eq!(
            own.may(&DataPlaneCall::WatchRoutes),
            Ok(()),
            "sidecars learn their shards from it"
        );
        assert!(own.may(&DataPlaneCall::Poke).is_err());

        let any_cart = Principal::Instance(InstanceScope {
            service: "cart".into(),
            instance: None,
        });
        assert_eq!(any_cart.may(&register("cart", "cart-pod-x")), Ok(()));
        assert_eq!(any_cart.may(&act("cart-pod-y", Some("cart"))), Ok(()));
        assert!(any_cart.may(&act("shop-1", Some("shop"))).is_err());
        assert!(any_cart.may(&act("ghost", None)).is_err());
    }

    #[test]
    fn an_instance_wakes_only_the_subscribers_of_its_own_services_event_logs() {
        let cart = Principal::Instance(InstanceScope {
            service: "cart".into(),
            instance: Some("cart-1".into()),
        });
        let wake = |subscribed, writers| DataPlaneCall::WakeSubscriber {
            service: "cart-totals",
            event_log: "shopping-cart",
            subscribed,
            writers,
        };
        assert_eq!(cart.may(&wake(true, &["cart"])), Ok(()));
        assert_eq!(
            cart.may(&wake(true, &["orders", "cart"])),
            Ok(()),
            "two services may write one log"
        );
        assert_eq!(
            cart.may(&wake(false, &["cart"])),
            Err(Denied(
                "the instance cart-1 of cart may not wake cart-totals: it does not subscribe to event log \"shopping-cart\"".into()
            ))
        );
        assert_eq!(
            cart.may(&wake(true, &["orders"])),
            Err(Denied(
                "the instance cart-1 of cart may not wake cart-totals for event log \"shopping-cart\": no entity of cart writes it".into()
            ))
        );
        assert!(cart.may(&wake(true, &[])).is_err(), "nobody writes the log");
        assert_eq!(
            Principal::Gateway.may(&wake(false, &[])),
            Ok(()),
            "the gateway may poke anything"
        );
        assert!(Principal::ReadOnly.may(&wake(true, &["cart"])).is_err());
        assert!(Principal::Open.may(&wake(true, &["cart"])).is_err());
    }

    #[test]
    fn each_principal_has_its_part() {
        let calls = [
            DataPlaneCall::Register {
                service: "cart",
                instance: "cart-1",
            },
            DataPlaneCall::OwnInstance {
                instance: "cart-1",
                registered_service: Some("cart"),
            },
            DataPlaneCall::WatchRoutes,
            DataPlaneCall::Poke,
        ];
        for call in &calls {
            assert_eq!(Principal::Admin.may(call), Ok(()));
            assert_eq!(Principal::Cluster.may(call), Ok(()));
            assert!(Principal::ReadOnly.may(call).is_err());
            assert!(Principal::Open.may(call).is_err());
        }
        assert!(Principal::Gateway.may(&calls[0]).is_err());
        assert!(Principal::Gateway.may(&calls[1]).is_err());
        assert_eq!(Principal::Gateway.may(&calls[2]), Ok(()));
        assert_eq!(Principal::Gateway.may(&calls[3]), Ok(()));

        assert_eq!(Principal::Admin.may_call_api(true), Ok(()));
        assert_eq!(Principal::ReadOnly.may_call_api(false), Ok(()));
        assert!(Principal::ReadOnly.may_call_api(true).is_err());
        assert!(Principal::Gateway.may_call_api(false).is_err());
        let instance = Principal::Instance(InstanceScope {
            service: "cart".into(),
            instance: None,
        });
        assert!(instance.may_call_api(false).is_err());
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
