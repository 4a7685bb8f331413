//! How the PostgreSQL store's `pool_size` changes read throughput: entity
//! recoveries (a snapshot and the events after it, what an activation reads)
//! from many concurrent tasks, against one store per pool size, on the same
//! seeded journal. Writes are not measured: one connection writes whatever
//! the pool size (group commit).
//!
//!     cargo run --release -p strata-store --example pool_reads -- \
//!         postgres://postgres@127.0.0.1:54329/postgres [SECONDS] [TASKS]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost_types::Any;
use strata_store::{EntityKey, JournalWrite, PostgresStore, Store};

const ENTITIES: usize = 2_000;
const EVENTS: usize = 10;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let base = args.next().expect("a postgres:// URL");
    let seconds: u64 = args.next().map_or(10, |s| s.parse().expect("seconds"));
    let tasks: usize = args.next().map_or(64, |s| s.parse().expect("tasks"));
    let (admin, connection) = tokio_postgres::connect(&base, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let schema = format!("strata_pool_reads_{}", std::process::id());
    admin.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
    let url = |pool: usize| format!("{base}?sslmode=disable&pool_size={pool}&options=-csearch_path%3D{schema}");

    let seed = PostgresStore::connect(&url(2)).await.unwrap();
    for entity in 0..ENTITIES {
        seed.append(JournalWrite {
            key: EntityKey::new("cart", format!("e{entity}")),
            first_seq_nr: 1,
            events: (0..EVENTS)
                .map(|i| Any {
                    type_url: "type.googleapis.com/Event".into(),
                    value: vec![i as u8; 64],
                })
                .collect(),
            snapshot: None,
            timers: Vec::new(),
        })
        .await
        .unwrap();
    }
    drop(seed);

    println!("{ENTITIES} entities of {EVENTS} events; {tasks} tasks recovering for {seconds} s per pool size");
    for pool in [2, 3, 4] {
        let store = Arc::new(PostgresStore::connect(&url(pool)).await.unwrap());
        let done = Arc::new(AtomicU64::new(0));
        let until = Instant::now() + Duration::from_secs(seconds);
        let workers: Vec<_> = (0..tasks)
            .map(|task| {
                let (store, done) = (store.clone(), done.clone());
                tokio::spawn(async move {
                    let mut entity = task * 7919;
                    while Instant::now() < until {
                        entity = (entity + 104_729) % ENTITIES;
                        let key = EntityKey::new("cart", format!("e{entity}"));
                        let recovered = store.recover(&key).await.unwrap();
                        assert_eq!(recovered.events.len(), EVENTS);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.await.unwrap();
        }
        let count = done.load(Ordering::Relaxed);
        println!(
            "pool_size={pool} ({} readers): {count} recoveries, {:.0} a second",
            pool - 1,
            count as f64 / seconds as f64
        );
    }
    admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}
