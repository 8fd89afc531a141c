//! Quick throughput probe of the shape registry (not a benchmark harness: see `walbuf bench`).
#![allow(clippy::print_stdout)]
use std::time::Instant;
use walbuf::shapes::{NewShape, Relation, ShapeRegistry};
use walbuf::store::StoreConfig;

/// The allocator the `walbuf` binary uses, so that this probe measures what `walbuf bench`
/// does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let policy = match std::env::args().nth(1).as_deref() {
        Some("sync") => walbuf::SyncPolicy::Sync,
        Some("none") => walbuf::SyncPolicy::None,
        _ => walbuf::SyncPolicy::Periodic { interval_ms: 10 },
    };
    let n: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    if let Ok(path) = std::env::var("RECOVER_ONLY") {
        let started = Instant::now();
        let (registry, report) = ShapeRegistry::open(&path, StoreConfig::default())?;
        let opened = started.elapsed();
        println!(
            "reopen: {} ops replayed in {opened:?} = {:.0} ops/s (report says {:?}); count {}",
            report.ops_replayed,
            report.ops_replayed as f64 / opened.as_secs_f64(),
            report.elapsed,
            registry.count_shapes()?
        );
        std::mem::forget(registry);
        std::process::exit(0);
    }
    let dir = tempfile::tempdir()?;
    let idle = std::env::var("IDLE_FLUSHER").is_ok();
    let config = StoreConfig {
        log: walbuf::log::Config {
            sync_policy: policy,
            ..Default::default()
        },
        flush_interval_ms: if idle { 3_600_000 } else { 50 },
        batch_ops_max: if idle { 1_000_000 } else { 5000 },
        ..Default::default()
    };
    let (registry, _) = ShapeRegistry::open(dir.path(), config)?;
    let started = Instant::now();
    for i in 0..n {
        registry.add_shape(NewShape {
            handle: format!(
                "{:016x}-{i}",
                (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ),
            shape: vec![b's'; 300],
            comparable: format!(
                "{:032x}",
                (i as u128).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)
            )
            .into_bytes(),
            hash: i as i64,
            relations: vec![
                Relation {
                    oid: 16384 + (i % 100) as u32,
                    schema: "public".into(),
                    table: "a".into(),
                },
                Relation {
                    oid: 20000,
                    schema: "public".into(),
                    table: "b".into(),
                },
            ],
        })?;
    }
    let ack = started.elapsed();
    if std::env::var("REOPEN").is_ok() {
        // Leave everything unflushed in the log, as a crash would, and time the recovery.
        let path = dir.path().to_path_buf();
        std::mem::forget(registry);
        std::mem::forget(dir);
        println!(
            "{policy:?}: {n} adds acked in {ack:?}; left unflushed in {}",
            path.display()
        );
        std::process::exit(0);
    }
    registry.flush()?;
    let all = started.elapsed();
    let stats = registry.stats();
    println!(
        "{policy:?}: {n} adds acked in {ack:?} = {:.0}/s; flushed all in {all:?} = {:.0}/s; batches {} peak {} MB",
        n as f64 / ack.as_secs_f64(),
        n as f64 / all.as_secs_f64(),
        stats.flush_batches,
        stats.peak_pending_bytes >> 20
    );
    Ok(())
}
