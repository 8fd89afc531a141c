//! The `sustained` group: a long overload (60 s; 5 s with `--quick`), how many ops per second
//! reach SQLite, how large the buffer grows and how long writers are held back — walbuf against
//! the reference design's flush as it ships and against SQLite batched by hand.
//!
//! * `walbuf-sustained`: a fresh registry under `SyncPolicy::Periodic { interval_ms: 10 }`,
//!   default configuration otherwise (5 000-op batches every 50 ms, a 256 MiB / 1 M-op buffer
//!   whose writers slow down past 75% and wait when it is full), fed by one writer thread
//!   adding shapes as fast as the store lets it: faster than SQLite takes them, so the buffer
//!   fills and backpressure sets in (after several seconds: a `--quick` window may end before).
//!   The window starts once the first batch is in SQLite. Besides ops/s into SQLite
//!   (`stats().ops_flushed`), a trial records the most bytes ever buffered
//!   (`stats().peak_pending_bytes`), the writer's acks per second, and the share of the
//!   writer's time spent in `add_shape` calls that began while the buffer was past its soft
//!   limit (sampled every millisecond): throttled or blocked, i.e. in backpressure.
//! * `reference-flush`: the reference design's flush as it ships (its `ShapeDb` schema and
//!   write path): a `shapes` table with a unique index on handle, a unique index on comparable,
//!   a (comparable, handle) index, a covering (handle, shape, hash, snapshot_complete) index
//!   that copies the shape blob, and a (snapshot_complete, handle) index; `relations` with
//!   UNIQUE (handle, oid) and (oid, handle) and (handle) indexes; a `shape_count` row
//!   incremented by every op. Each transaction (`BEGIN IMMEDIATE`) applies the next 100 ops in
//!   the order they were submitted. Its flusher polls every 50 ms and then drains until the
//!   queue is empty, 100 ops per transaction — under overload the queue never empties, so the
//!   transactions follow each other back to back, as here. Ops are generated inline (as in
//!   the `flush` baselines). WAL mode, a 4 MiB cache (its default) and `synchronous=FULL`,
//!   as walbuf's flusher commits (the reference ships with `OFF`, whose commits are not
//!   durable; the issue's ~15× was measured at `FULL`).
//! * `sqlite-batch5000-sustained`: SQLite batched by hand at walbuf's batch size, exactly the
//!   `flush` group's `sqlite-batch5000-sorted` ([`flush_rows::batched_trial`]) over this
//!   group's window.
//!
//! Every trial starts from an empty database; the first batch (or transaction) is not timed.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use rusqlite::{Connection, TransactionBehavior, params};
use walbuf::store::StoreConfig;
use walbuf::{NewShape, ShapeRegistry, StoreStats};

use super::ack_rows::abandoning_config;
use super::driver::{Trial, remove_tree};
use super::log_rows::settle;
use super::workload::{op_key, shape_body, shape_of};

/// Ops per transaction of the reference design's flush.
pub const REFERENCE_BATCH_OPS: usize = 100;
/// Page cache of the reference design's connection, in KiB (its default: 4 MiB).
const REFERENCE_CACHE_KIB: u32 = 4 * 1024;
/// The longest wait for walbuf's first batch.
const FIRST_BATCH_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the buffer's fill level is sampled.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(1);

static NEXT_TRIAL: AtomicU64 = AtomicU64::new(1);

/// What a `walbuf-sustained` trial measured besides its throughput into SQLite.
#[derive(Debug, Clone, Copy)]
pub struct Pressure {
    /// The most bytes the buffer held at once since open.
    pub peak_buffer_bytes: u64,
    /// Writer time, summed over the writers, in `add_shape` calls that began while the buffer
    /// was past its soft limit.
    pub backpressure: Duration,
    /// Writer time in the window (writers × window).
    pub writer_time: Duration,
    /// Writes that waited at the hard limit (the buffer full).
    pub backpressure_waits: u64,
    /// Shapes the writers had acknowledged in the window.
    pub acked_ops: u64,
    /// The window.
    pub window: Duration,
}

impl Pressure {
    /// The share of the writers' time spent in backpressure, in percent.
    pub fn backpressure_percent(&self) -> f64 {
        self.backpressure.as_secs_f64() / self.writer_time.as_secs_f64().max(1e-9) * 100.0
    }

    /// Shapes acknowledged to the writers per second of the window.
    pub fn acks_per_s(&self) -> f64 {
        self.acked_ops as f64 / self.window.as_secs_f64().max(1e-9)
    }
}

/// Whether `stats` shows the buffer past the soft limit of `config` (where writers start to
/// be slowed down, and beyond which they wait).
fn past_soft_limit(stats: &StoreStats, config: &StoreConfig) -> bool {
    let percent = |used: u64, max: u64| used.saturating_mul(100) / max.max(1);
    let used = percent(stats.pending_ops, config.buffer_ops_max)
        .max(percent(stats.pending_bytes, config.buffer_bytes_max));
    used >= u64::from(config.buffer_soft_percent)
}

/// One `walbuf-sustained` trial: `writers` threads overload a fresh registry for `window`
/// (after its first batch).
///
/// # Errors
/// The registry failed, or no batch reached SQLite in time.
pub fn walbuf_trial(
    parent: &Path,
    writers: usize,
    window: Duration,
) -> anyhow::Result<(Trial, Pressure)> {
    let number = NEXT_TRIAL.fetch_add(1, Ordering::Relaxed);
    let directory = parent.join(format!("sustained-walbuf-{number}"));
    let abandon = Arc::new(AtomicBool::new(false));
    let config = abandoning_config(super::PERIODIC, &abandon);
    let (registry, _report) = ShapeRegistry::open(&directory, config.clone())
        .with_context(|| format!("cannot open a registry in {}", directory.display()))?;
    settle(Duration::from_secs(10));
    let outcome = overload(&registry, &config, number, writers, window);
    abandon.store(true, Ordering::Relaxed);
    registry.close().context("close the registry")?;
    drop(registry);
    remove_tree(&directory)?;
    outcome
}

/// Writer state shared with the sampling thread.
#[derive(Default)]
struct Signals {
    stop: AtomicBool,
    /// The window is running: writers count their time and acks.
    measuring: AtomicBool,
    /// The buffer was past its soft limit at the last sample.
    throttled: AtomicBool,
}

/// Runs the overload on `registry` and samples it (see [`walbuf_trial`]).
fn overload(
    registry: &ShapeRegistry,
    config: &StoreConfig,
    number: u64,
    writers: usize,
    window: Duration,
) -> anyhow::Result<(Trial, Pressure)> {
    let signals = Signals::default();
    let body = shape_body();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..writers)
            .map(|thread| {
                let (signals, body) = (&signals, &body);
                scope.spawn(move || -> anyhow::Result<(Duration, u64)> {
                    let mut backpressure = Duration::ZERO;
                    let mut acked = 0_u64;
                    let mut sequence = 0;
                    while !signals.stop.load(Ordering::Relaxed) {
                        sequence += 1;
                        let shape = shape_of(op_key(number, thread, sequence), body);
                        let measuring = signals.measuring.load(Ordering::Relaxed);
                        let throttled = signals.throttled.load(Ordering::Relaxed);
                        let started = (measuring && throttled).then(Instant::now);
                        registry.add_shape(shape).context("add_shape")?;
                        if let Some(started) = started {
                            backpressure += started.elapsed();
                        }
                        acked += u64::from(measuring);
                    }
                    Ok((backpressure, acked))
                })
            })
            .collect();
        let sampled = sample(registry, config, &signals, window, || {
            handles.iter().any(|handle| handle.is_finished())
        });
        signals.stop.store(true, Ordering::Relaxed);
        let mut backpressure = Duration::ZERO;
        let mut acked_ops = 0;
        for handle in handles {
            let (time, acked) = handle.join().map_err(|_| anyhow!("a writer panicked"))??;
            backpressure += time;
            acked_ops += acked;
        }
        let (before, after, elapsed) = sampled?;
        let trial = Trial::throughput(
            after.ops_flushed - before.ops_flushed,
            elapsed,
            after.flush_batches - before.flush_batches,
        );
        Ok((
            trial,
            Pressure {
                peak_buffer_bytes: after.peak_pending_bytes,
                backpressure,
                writer_time: elapsed * u32::try_from(writers).unwrap_or(u32::MAX),
                backpressure_waits: after.backpressure_waits - before.backpressure_waits,
                acked_ops,
                window: elapsed,
            },
        ))
    })
}

/// Waits for the first batch to reach SQLite, then runs the window, flagging every sample
/// whether the buffer is past its soft limit. Returns the stats at both ends of the window
/// and its length.
fn sample(
    registry: &ShapeRegistry,
    config: &StoreConfig,
    signals: &Signals,
    window: Duration,
    writer_stopped: impl Fn() -> bool,
) -> anyhow::Result<(StoreStats, StoreStats, Duration)> {
    let waited = Instant::now();
    while registry.stats().ops_flushed == 0 {
        anyhow::ensure!(
            waited.elapsed() < FIRST_BATCH_TIMEOUT && !writer_stopped(),
            "no batch reached SQLite"
        );
        std::thread::sleep(SAMPLE_INTERVAL);
    }
    let before = registry.stats();
    signals.measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    while started.elapsed() < window {
        anyhow::ensure!(!writer_stopped(), "a writer stopped during the window");
        std::thread::sleep(SAMPLE_INTERVAL);
        let stats = registry.stats();
        signals
            .throttled
            .store(past_soft_limit(&stats, config), Ordering::Relaxed);
    }
    signals.measuring.store(false, Ordering::Relaxed);
    let after = registry.stats();
    Ok((before, after, started.elapsed()))
}

/// The reference design's `ShapeDb` schema (its migrations, schema version 4).
const REFERENCE_SCHEMA: &str = "
    CREATE TABLE shapes (
        handle BLOB NOT NULL,
        shape BLOB NOT NULL,
        comparable BLOB NOT NULL,
        hash INTEGER NOT NULL,
        snapshot_complete INTEGER NOT NULL DEFAULT 0
    ) STRICT;
    CREATE UNIQUE INDEX shapes_handle_idx ON shapes (handle);
    CREATE UNIQUE INDEX shapes_comparable_idx ON shapes (comparable);
    CREATE INDEX shapes_comparable_cover_idx ON shapes (comparable, handle);
    CREATE INDEX shapes_handle_cover_idx ON shapes (handle, shape, hash, snapshot_complete);
    CREATE INDEX shapes_snapshot_idx ON shapes (snapshot_complete, handle);
    CREATE TABLE relations (
        handle BLOB NOT NULL,
        oid INTEGER NOT NULL,
        UNIQUE (handle, oid)
    ) STRICT;
    CREATE INDEX relation_oid_idx ON relations (oid, handle);
    CREATE INDEX relation_handle_idx ON relations (handle);
    CREATE TABLE shape_count (id INTEGER NOT NULL, count INTEGER DEFAULT 0) STRICT;
    INSERT INTO shape_count (id, count) VALUES (1, 0);";

/// Opens (creating) a database of the reference design at `path`.
///
/// # Errors
/// SQLite failed.
fn open_reference(path: &Path) -> anyhow::Result<Connection> {
    let connection =
        Connection::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    connection
        .execute_batch(&format!(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA cache_size = -{REFERENCE_CACHE_KIB};
             {REFERENCE_SCHEMA}"
        ))
        .with_context(|| format!("cannot set up {}", path.display()))?;
    Ok(connection)
}

/// Applies `shapes` in one transaction the way the reference design's flush does: each op's
/// shape row, the counter increment, then its relation rows, in submission order.
///
/// # Errors
/// SQLite failed.
fn apply_reference_batch(connection: &mut Connection, shapes: &[NewShape]) -> anyhow::Result<()> {
    let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut insert_shape = tx.prepare_cached(
            "INSERT INTO shapes (handle, shape, comparable, hash) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut increment =
            tx.prepare_cached("UPDATE shape_count SET count = count + ?1 WHERE id = 1")?;
        let mut insert_relation =
            tx.prepare_cached("INSERT INTO relations (handle, oid) VALUES (?1, ?2)")?;
        for shape in shapes {
            let handle = shape.handle.as_bytes();
            insert_shape.execute(params![handle, shape.shape, shape.comparable, shape.hash])?;
            increment.execute([1])?;
            for relation in &shape.relations {
                insert_relation.execute(params![handle, relation.oid])?;
            }
        }
    }
    tx.commit()?;
    Ok(())
}

/// One `reference-flush` trial over `window`.
///
/// # Errors
/// SQLite failed.
pub fn reference_trial(parent: &Path, window: Duration) -> anyhow::Result<Trial> {
    let number = NEXT_TRIAL.fetch_add(1, Ordering::Relaxed);
    let directory = parent.join(format!("sustained-reference-{number}"));
    std::fs::create_dir_all(&directory)?;
    let mut connection = open_reference(&directory.join("shapes.db"))?;
    let body = shape_body();
    let mut sequence = 0_u64;
    let mut batch = Vec::with_capacity(REFERENCE_BATCH_OPS);
    let mut next_batch = |batch: &mut Vec<NewShape>| {
        batch.clear();
        batch.extend((0..REFERENCE_BATCH_OPS).map(|_| {
            sequence += 1;
            shape_of(op_key(number, 0, sequence), &body)
        }));
    };
    next_batch(&mut batch);
    apply_reference_batch(&mut connection, &batch).context("apply the first batch")?;
    let started = Instant::now();
    let mut commits = 0_u64;
    while started.elapsed() < window {
        next_batch(&mut batch);
        apply_reference_batch(&mut connection, &batch).context("apply a batch")?;
        commits += 1;
    }
    let elapsed = started.elapsed();
    drop(connection);
    remove_tree(&directory)?;
    Ok(Trial::throughput(
        commits * REFERENCE_BATCH_OPS as u64,
        elapsed,
        commits,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_flush_writes_its_rows_and_counter() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("shapes.db");
        let mut connection = open_reference(&path).expect("open");
        let body = shape_body();
        let shapes: Vec<NewShape> = (0..REFERENCE_BATCH_OPS as u64)
            .map(|key| shape_of(op_key(1, 0, key), &body))
            .collect();
        apply_reference_batch(&mut connection, &shapes).expect("apply");
        let count = |sql: &str| -> i64 {
            connection
                .query_row(sql, [], |row| row.get(0))
                .expect("query")
        };
        assert_eq!(count("SELECT count(*) FROM shapes"), 100);
        assert_eq!(count("SELECT count(*) FROM relations"), 200);
        assert_eq!(count("SELECT count FROM shape_count WHERE id = 1"), 100);
        assert_eq!(
            count("SELECT count(*) FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"),
            7,
            "the reference's seven explicit indexes"
        );
    }

    #[test]
    fn a_short_overload_reports_throughput_and_pressure() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let (trial, pressure) =
            walbuf_trial(directory.path(), 1, Duration::from_millis(100)).expect("trial");
        assert!(trial.elapsed >= Duration::from_millis(100));
        assert!(pressure.peak_buffer_bytes > 0);
        assert!(pressure.acked_ops > 0);
        assert!(pressure.backpressure <= pressure.writer_time + Duration::from_secs(1));
    }
}
