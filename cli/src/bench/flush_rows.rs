//! The `flush` group: sustained throughput into SQLite, walbuf's flusher against SQLite
//! batched by hand with the same batch size.
//!
//! * `walbuf-flush`: a fresh registry under `SyncPolicy::None` (default configuration:
//!   5 000-op batches, flush every 50 ms, passive checkpoint every 4 batches), fed by one
//!   writer thread adding shapes as fast as backpressure lets it — faster than SQLite can take
//!   them. After the first batch is applied, the trial counts the progress of the applied op
//!   key (`stats().applied_op_key`) over the trial's window: ops per second reaching SQLite.
//!   The writer competes with the flusher for the 2 cores, as it would in production.
//! * `sqlite-batch5000-sorted`: one thread generates 5 000 shapes at a time and inserts each
//!   batch in one transaction, shape rows sorted by handle and relation rows by (oid, handle)
//!   (what walbuf's flusher does), WAL mode, `synchronous=FULL`, SQLite's defaults otherwise
//!   (automatic checkpoints, 2 MiB cache): what a user would write.
//! * `sqlite-batch5000-tuned`: the same with walbuf's flusher settings: a 64 MiB cache,
//!   automatic checkpoints off and a passive checkpoint every 4 batches. walbuf's ratio to it
//!   is the cost of walbuf's own work (decoding, coalescing, the overlay's bookkeeping).
//!
//! The first batch is not timed on either side; every trial starts from an empty database.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use walbuf::{ShapeRegistry, SyncPolicy};

use super::ack_rows::abandoning_config;
use super::driver::{Trial, remove_tree};
use super::histogram::Histogram;
use super::log_rows::settle;
use super::workload::{Synchronous, insert_sorted, op_key, open_baseline, shape_body, shape_of};

/// Ops per SQLite transaction on both sides (walbuf's default `batch_ops_max`).
pub const BATCH_OPS: usize = 5_000;
/// Batches between passive checkpoints of the tuned baseline (walbuf's default).
const CHECKPOINT_EVERY_BATCHES: u64 = 4;
/// Cache of the tuned baseline, in KiB (walbuf's default write cache).
const TUNED_CACHE_KIB: u32 = 64 * 1024;
/// The longest wait for walbuf's first batch.
const FIRST_BATCH_TIMEOUT: Duration = Duration::from_secs(30);

static NEXT_TRIAL: AtomicU64 = AtomicU64::new(1);

/// A trial that counted `ops` over `elapsed` (no latencies).
fn throughput_trial(ops: u64, elapsed: Duration, commits: u64) -> Trial {
    Trial {
        ops,
        elapsed,
        latency: Histogram::default(),
        syncs: commits,
        rotations: None,
        disk_bytes_written: None,
        open: None,
    }
}

/// One `walbuf-flush` trial over `window`.
///
/// # Errors
/// The registry failed, or no batch was applied in time.
pub fn walbuf_trial(parent: &Path, window: Duration) -> anyhow::Result<Trial> {
    let number = NEXT_TRIAL.fetch_add(1, Ordering::Relaxed);
    let directory = parent.join(format!("flush-walbuf-{number}"));
    let abandon = Arc::new(AtomicBool::new(false));
    let (registry, _report) =
        ShapeRegistry::open(&directory, abandoning_config(SyncPolicy::None, &abandon))
            .with_context(|| format!("cannot open a registry in {}", directory.display()))?;
    settle(Duration::from_secs(10));
    let stop = AtomicBool::new(false);
    let body = shape_body();
    let outcome = std::thread::scope(|scope| -> anyhow::Result<Trial> {
        let feeder = scope.spawn(|| -> anyhow::Result<()> {
            let mut sequence = 0;
            while !stop.load(Ordering::Relaxed) {
                sequence += 1;
                registry
                    .add_shape(shape_of(op_key(number, 0, sequence), &body))
                    .context("add_shape")?;
            }
            Ok(())
        });
        let measured = (|| {
            let waited = Instant::now();
            while registry.stats().applied_op_key == 0 {
                anyhow::ensure!(
                    waited.elapsed() < FIRST_BATCH_TIMEOUT && !feeder.is_finished(),
                    "no batch reached SQLite"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            let before = registry.stats();
            let started = Instant::now();
            std::thread::sleep(window);
            let after = registry.stats();
            let elapsed = started.elapsed();
            Ok(throughput_trial(
                after.applied_op_key - before.applied_op_key,
                elapsed,
                after.flush_batches - before.flush_batches,
            ))
        })();
        stop.store(true, Ordering::Relaxed);
        feeder
            .join()
            .map_err(|_| anyhow!("the feeder panicked"))??;
        measured
    });
    abandon.store(true, Ordering::Relaxed);
    registry.close().context("close the registry")?;
    drop(registry);
    remove_tree(&directory)?;
    outcome
}

/// One trial of a hand-batched baseline over `window` (`tuned`: walbuf's flusher settings).
///
/// # Errors
/// SQLite failed.
pub fn batched_trial(parent: &Path, tuned: bool, window: Duration) -> anyhow::Result<Trial> {
    let number = NEXT_TRIAL.fetch_add(1, Ordering::Relaxed);
    let directory = parent.join(format!("flush-sqlite-{number}"));
    std::fs::create_dir_all(&directory)?;
    let mut connection = open_baseline(&directory.join("shapes.db"), Synchronous::Full)?;
    if tuned {
        connection.execute_batch(&format!(
            "PRAGMA cache_size = -{TUNED_CACHE_KIB}; PRAGMA wal_autocheckpoint = 0;"
        ))?;
    }
    let body = shape_body();
    let mut sequence = 0_u64;
    let mut batch = Vec::with_capacity(BATCH_OPS);
    let mut next_batch = |batch: &mut Vec<_>| {
        batch.clear();
        for _ in 0..BATCH_OPS {
            sequence += 1;
            batch.push(shape_of(op_key(number, 0, sequence), &body));
        }
    };
    next_batch(&mut batch);
    insert_sorted(&mut connection, &batch).context("insert the first batch")?;
    let started = Instant::now();
    let mut commits = 0_u64;
    while started.elapsed() < window {
        next_batch(&mut batch);
        insert_sorted(&mut connection, &batch).context("insert a batch")?;
        commits += 1;
        if tuned && commits.is_multiple_of(CHECKPOINT_EVERY_BATCHES) {
            connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                row.get::<_, i64>(0)
            })?;
        }
    }
    let elapsed = started.elapsed();
    drop(connection);
    remove_tree(&directory)?;
    Ok(throughput_trial(
        commits * BATCH_OPS as u64,
        elapsed,
        commits,
    ))
}
