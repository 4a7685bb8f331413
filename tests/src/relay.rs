//! A userspace TCP relay that makes a link slow or lossy, for machines without
//! `tc netem`: a test points a client (a sidecar's store URL, a control-plane
//! node's advertised Raft address) at the relay, which passes every connection
//! on to the real server. Each chunk of bytes, in either direction, is held for
//! the current delay before it is passed on (in order; later chunks do not wait
//! for earlier ones' delay, so the delay is latency, not a throughput cap). Loss
//! is per connection, as a lossy link looks to TCP once retransmissions give
//! up: a share of new connections is refused, and a share of chunks cuts its
//! connection in both directions. The faults can change while connections are
//! open; the relay stops when dropped.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        tcp::{OwnedReadHalf, OwnedWriteHalf},
        TcpListener, TcpStream,
    },
    sync::mpsc,
    task::JoinHandle,
    time::Instant,
};

use crate::load::Dice;

/// What the relay does to traffic now.
#[derive(Default)]
struct Faults {
    delay_us: AtomicU64,
    /// Out of 1,000,000.
    loss_ppm: AtomicU64,
    seed: AtomicU64,
    /// Connections refused or cut so far.
    cut: AtomicU64,
}

impl Faults {
    fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_us.load(Ordering::Relaxed))
    }

    /// Whether this connection or chunk is lost (counted when it is).
    fn lose(&self) -> bool {
        let ppm = self.loss_ppm.load(Ordering::Relaxed);
        if ppm == 0 {
            return false;
        }
        let seed = self.seed.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed) | 1;
        let lost = Dice(seed).below(1_000_000) < ppm;
        if lost {
            self.cut.fetch_add(1, Ordering::Relaxed);
        }
        lost
    }
}

/// One relay: listens on `address` and passes connections on to its target.
pub struct Relay {
    pub address: SocketAddr,
    faults: Arc<Faults>,
    task: JoinHandle<()>,
}

impl Relay {
    /// A relay on a free port of `ip` to `target`, passing traffic unharmed
    /// until told otherwise. `seed` makes its losses repeatable.
    pub async fn start(ip: &str, target: SocketAddr, seed: u64) -> Relay {
        let listener = TcpListener::bind((ip, 0)).await.expect("bind the relay");
        let address = listener.local_addr().unwrap();
        let faults = Arc::new(Faults {
            seed: AtomicU64::new(seed | 1),
            ..Faults::default()
        });
        let task = tokio::spawn(accept(listener, target, faults.clone()));
        Relay { address, faults, task }
    }

    /// Holds every chunk for `delay` from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.faults.delay_us.store(delay.as_micros() as u64, Ordering::Relaxed);
    }

    /// Loses `share` (0 to 1) of new connections and of chunks from now on.
    pub fn set_loss(&self, share: f64) {
        let ppm = (share.clamp(0.0, 1.0) * 1_000_000.0) as u64;
        self.faults.loss_ppm.store(ppm, Ordering::Relaxed);
    }

    /// Connections refused or cut so far.
    pub fn cut(&self) -> u64 {
        self.faults.cut.load(Ordering::Relaxed)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, target: SocketAddr, faults: Arc<Faults>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if faults.lose() {
            drop(client);
            continue;
        }
        let faults = faults.clone();
        connections.spawn(async move {
            let Ok(server) = TcpStream::connect(target).await else {
                return;
            };
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            // Either direction ending (or being cut) ends the connection.
            tokio::select! {
                _ = pass(client_read, server_write, &faults) => {}
                _ = pass(server_read, client_write, &faults) => {}
            }
        });
        while connections.try_join_next().is_some() {}
    }
}

/// Passes bytes from `from` to `to`, each chunk `delay` after it arrived.
async fn pass(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, faults: &Faults) {
    let (chunks, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reading = async move {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            match from.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) if faults.lose() => {
                    let _ = n;
                    return;
                }
                Ok(n) => {
                    if chunks
                        .send((Instant::now() + faults.delay(), buffer[..n].to_vec()))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    };
    let writing = async move {
        while let Some((at, bytes)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    // A cut read stops both at once; a clean end lets the writer finish first.
    tokio::join!(reading, writing);
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = socket.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        address
    }

    async fn round_trip(relay: &Relay, message: &[u8]) -> std::io::Result<(Vec<u8>, Duration)> {
        let started = Instant::now();
        let mut socket = TcpStream::connect(relay.address).await?;
        socket.write_all(message).await?;
        let mut back = vec![0u8; message.len()];
        socket.read_exact(&mut back).await?;
        Ok((back, started.elapsed()))
    }

    #[tokio::test]
    async fn passes_bytes_delayed_both_ways_and_cuts_what_it_loses() {
        let relay = Relay::start("127.0.0.1", echo_server().await, 7).await;
        let (back, _) = round_trip(&relay, b"hello").await.unwrap();
        assert_eq!(back, b"hello");

        relay.set_delay(Duration::from_millis(100));
        let (back, took) = round_trip(&relay, b"slow").await.unwrap();
        assert_eq!(back, b"slow");
        // There and back: held twice.
        assert!(took >= Duration::from_millis(200), "{took:?}");

        relay.set_delay(Duration::ZERO);
        relay.set_loss(1.0);
        assert!(round_trip(&relay, b"lost").await.is_err());
        assert!(relay.cut() > 0);
    }
}
