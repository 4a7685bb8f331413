//! Choosing a loopback port for a child process to listen on: the local
//! runtime's instances, the conformance kit's proxy and function, the
//! end-to-end tests' processes. A crate of its own so that the kit and the
//! tests need none of the runtime's dependencies for it.
//!
//! A port is found free by binding it, then released for the child to take.
//! Taken from the kernel's ephemeral range (what binding port 0 gives), it can
//! be claimed in the moment between release and the child's bind as the local
//! end of any outgoing connection on the machine, and the child then fails to
//! start. So ports are chosen below that range, from a per-process offset, and
//! only where that range leaves too little room does this fall back to port 0.

use std::{
    io,
    net::TcpListener,
    sync::{
        atomic::{AtomicU32, Ordering},
        OnceLock,
    },
    time::{SystemTime, UNIX_EPOCH},
};

/// The lowest port handed out (below are well-known and registered services).
const LOWEST: u32 = 10_000;

/// A free loopback port below the kernel's ephemeral range.
pub fn free_loopback_port() -> io::Result<u16> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = ephemeral_start().saturating_sub(LOWEST);
    if span < 1_000 {
        return Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port());
    }
    // Chosen once: each process walks the range from its own starting point, so
    // its ports are distinct until it has used the whole range, and processes
    // that start at the same time start far apart.
    static OFFSET: OnceLock<u32> = OnceLock::new();
    let offset = *OFFSET.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        std::process::id().wrapping_mul(7_919).wrapping_add(nanos)
    }) % span;
    for _ in 0..span {
        let port = (LOWEST + (offset + NEXT.fetch_add(1, Ordering::Relaxed)) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("no free loopback port between {LOWEST} and the ephemeral range"),
    ))
}

/// The first port of the kernel's ephemeral range (Linux's default where unreadable).
fn ephemeral_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_free_distinct_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..50).map(|_| free_loopback_port().unwrap()).collect();
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
        // (Where the ephemeral range leaves no room below it, ports come from port 0.)
        let below = ephemeral_start().saturating_sub(LOWEST) >= 1_000;
        for port in ports {
            if below {
                assert!(
                    u32::from(port) >= LOWEST && u32::from(port) < ephemeral_start(),
                    "{port}"
                );
            }
            TcpListener::bind(("127.0.0.1", port)).unwrap();
        }
    }
}
