//! Acknowledged `AddItem`s per second through `strata proxy` (SQLite store), to one
//! hot cart and spread over many carts, beside the baseline of one durable SQLite
//! write per command (what an entity gets when each command waits for its own
//! fsync, as with a row lock held across a commit).

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use strata_e2e::{cart_client, free_port, shoppingcart::AddLineItem, start_proxy, start_shopping_cart};
use strata_store::{EntityKey, JournalWrite};

use crate::stats::median;

#[derive(clap::Args)]
pub struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Repeats of each measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let duration = Duration::from_secs(args.seconds);
    let mut baseline = Vec::new();
    let mut hot = Vec::new();
    let mut spread = Vec::new();
    for round in 0..args.repeats {
        let dir = std::env::temp_dir().join(format!("strata-throughput-{}-{round}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        baseline.push(serial_durable_writes(&dir, duration).await?);

        let store = format!("sqlite://{}/proxy.db", dir.display());
        let (function_port, http_port) = (free_port(), free_port());
        let _function = start_shopping_cart(function_port);
        let _proxy = start_proxy(function_port, http_port, &store, &[]);
        hot.push(drive(http_port, args.clients, duration, |_| "hot".to_string()).await?);
        spread.push(drive(http_port, args.clients, duration, |client| format!("cart-{client}")).await?);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let base = median(&baseline);
    println!(
        "acknowledged writes per second, median of {} x {}s:",
        args.repeats, args.seconds
    );
    println!("  baseline: one durable SQLite write per command   {base:>9.0}");
    println!(
        "  strata proxy, one hot cart, {} clients            {:>9.0}   ({:.1}x baseline)",
        args.clients,
        median(&hot),
        median(&hot) / base
    );
    println!(
        "  strata proxy, {} carts, one client each           {:>9.0}   ({:.1}x baseline)",
        args.clients,
        median(&spread),
        median(&spread) / base
    );
    println!("  (runs: baseline {baseline:.0?}, hot {hot:.0?}, spread {spread:.0?})");
    Ok(())
}

/// The baseline: append one event at a time, each waiting for its commit.
async fn serial_durable_writes(dir: &std::path::Path, duration: Duration) -> anyhow::Result<f64> {
    let store = strata_store::open(&format!("sqlite://{}/baseline.db", dir.display())).await?;
    let key = EntityKey::new("baseline", "hot");
    let started = Instant::now();
    let mut seq_nr = 0;
    while started.elapsed() < duration {
        seq_nr += 1;
        store
            .append(JournalWrite {
                key: key.clone(),
                first_seq_nr: seq_nr,
                events: vec![prost_types::Any {
                    type_url: "type.googleapis.com/bench.Event".into(),
                    value: vec![0; 48],
                }],
                snapshot: None,
                timers: Vec::new(),
            })
            .await?;
    }
    Ok(seq_nr as f64 / started.elapsed().as_secs_f64())
}

/// `clients` concurrent gRPC clients calling AddItem until `duration` is up.
async fn drive(
    http_port: u16,
    clients: usize,
    duration: Duration,
    cart_of: impl Fn(usize) -> String,
) -> anyhow::Result<f64> {
    let client = cart_client(http_port).await;
    let acked = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut client = client.clone();
        let acked = acked.clone();
        let user_id = cart_of(c);
        tasks.push(tokio::spawn(async move {
            while started.elapsed() < duration {
                client
                    .add_item(AddLineItem {
                        user_id: user_id.clone(),
                        product_id: format!("p{c}"),
                        name: "Thing".into(),
                        quantity: 1,
                    })
                    .await
                    .map_err(|s| anyhow::anyhow!("AddItem failed: {s}"))?;
                acked.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(acked.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}
