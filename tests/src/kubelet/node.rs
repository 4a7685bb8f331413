//! The test kubelet's node network, as a CNI bridge plugin makes it: a bridge
//! on the host with the node's address, and for each pod a network namespace
//! (the pod's own loopback, shared by its containers) joined to the bridge by a
//! veth pair, with an address of its own and a default route through the host.
//! Cluster DNS names resolve through the pod's `/etc/hosts`
//! (`/etc/netns/NAME/hosts`, which `ip netns exec` mounts) to the host, where
//! the test serves what they name. Needs root and `ip netns`; everything is
//! removed on drop.

use std::{
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

/// What a test needs root and `ip netns` for: the namespaces cannot be made,
/// and `STRATA_REQUIRE_NETNS=1` is not set, so the test skips (else it fails).
pub fn skip_without_namespaces(reason: &str) -> bool {
    assert!(
        std::env::var("STRATA_REQUIRE_NETNS").as_deref() != Ok("1"),
        "STRATA_REQUIRE_NETNS=1 but network namespaces cannot be made here (needs root and `ip netns`): {reason}"
    );
    eprintln!("skipping: network namespaces are not available here (needs root and `ip netns`): {reason}");
    true
}

/// Runs `ip ARGS`, with its error output as the error.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|error| format!("ip: {error}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    ))
}

/// The node: a bridge and the cluster names its pods resolve to the host.
pub struct Node {
    tag: String,
    subnet: u32,
    cluster_names: Vec<String>,
    next_pod: AtomicU32,
}

impl Node {
    /// A bridge of this process's own (its subnet and names come from the pid,
    /// so concurrent test processes never meet).
    pub fn create(cluster_names: &[&str]) -> Result<Node, String> {
        let pid = std::process::id();
        let node = Node {
            tag: format!("{}", pid % 100_000),
            subnet: 10 + pid % 240,
            cluster_names: cluster_names.iter().map(|name| (*name).to_owned()).collect(),
            next_pod: AtomicU32::new(10),
        };
        let bridge = node.bridge();
        // A bridge left by a killed run of a process with the same pid.
        let _ = ip(&["link", "del", &bridge]);
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{}/24", node.host_ip()), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        Ok(node)
    }

    fn bridge(&self) -> String {
        format!("kb{}", self.tag)
    }

    /// The node's address on the pod network: where pods reach the host.
    pub fn host_ip(&self) -> String {
        format!("10.215.{}.1", self.subnet)
    }

    /// A network namespace for pod `name`, joined to the bridge.
    pub fn add_pod(&self, name: &str) -> Result<PodNetwork, String> {
        let index = self.next_pod.fetch_add(1, Ordering::Relaxed);
        let network = PodNetwork {
            namespace: format!("kp-{}-{index}", self.tag),
            host_side: format!("kv{}x{index}", self.tag),
            ip: format!("10.215.{}.{index}", self.subnet),
        };
        let ns = network.namespace.as_str();
        let _ = ip(&["netns", "del", ns]);
        ip(&["netns", "add", ns])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&[
            "link",
            "add",
            &network.host_side,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns,
        ])?;
        ip(&["-n", ns, "addr", "add", &format!("{}/24", network.ip), "dev", "eth0"])?;
        ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", ns, "route", "add", "default", "via", &self.host_ip()])?;
        ip(&["link", "set", &network.host_side, "master", &self.bridge()])?;
        ip(&["link", "set", &network.host_side, "up"])?;
        let dir = network.etc();
        std::fs::create_dir_all(&dir).map_err(|error| format!("{}: {error}", dir.display()))?;
        let hosts = format!(
            "127.0.0.1 localhost\n{} {name}\n{} {}\n",
            network.ip,
            self.host_ip(),
            self.cluster_names.join(" ")
        );
        std::fs::write(dir.join("hosts"), hosts).map_err(|error| format!("{}: {error}", dir.display()))?;
        Ok(network)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}

/// One pod's network namespace.
pub struct PodNetwork {
    pub namespace: String,
    host_side: String,
    /// The pod's IP.
    pub ip: String,
}

impl PodNetwork {
    fn etc(&self) -> std::path::PathBuf {
        std::path::Path::new("/etc/netns").join(&self.namespace)
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        // The veth pair goes with the namespace.
        let _ = ip(&["netns", "del", &self.namespace]);
        let _ = ip(&["link", "del", &self.host_side]);
        let _ = std::fs::remove_dir_all(self.etc());
    }
}
