//! The flusher: one background thread that owns the single SQLite write connection and
//! applies buffered ops to SQLite in large batches.
//!
//! Each round it takes the gapless run of visible ops just above the applied op key (up to
//! `batch_ops_max`), applies them in ONE transaction together with the new applied op key
//! and live count (`walbuf_meta`), commits (durable: `synchronous=FULL`), then drops them from
//! the overlay and the buffer, wakes writers waiting for room, and retires whole log segments
//! below the applied key. A failing batch is rolled back and retried with capped exponential
//! backoff; a batch failing in a way retrying cannot fix marks the store failed.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, TransactionBehavior};

use crate::error::Error;
use crate::schema::{BatchOp, Schema};
use crate::sqlite::{self, Meta};
use crate::storage::Storage;
use crate::store::Shared;

/// The flusher thread's body.
pub(crate) fn run<S: Schema, St: Storage>(shared: &Shared<S, St>, mut connection: Connection) {
    let config = &shared.config;
    let interval = Duration::from_millis(config.flush_interval_ms);
    let mut batches_since_checkpoint = 0u32;
    let mut last_round = Instant::now();
    loop {
        let stopping = wait_for_work(shared, interval, &mut last_round);
        let applied = shared.applied_op_key.load(Ordering::SeqCst);
        let visible = shared.visible_op_key();
        let run = shared.buffer.gapless_run(
            applied + 1,
            visible,
            config.batch_ops_max,
            config.batch_bytes_max,
        );
        if run.is_empty() {
            if stopping {
                break;
            }
            if visible > applied {
                // Visible ops that are not buffered: a gap in op keys, which submit and
                // recovery rule out. Never spin on it; say so.
                tracing::error!(
                    applied,
                    visible,
                    "visible ops missing from the buffer; the flusher waits"
                );
                std::thread::sleep(interval.max(Duration::from_millis(10)));
            }
            continue;
        }
        let Some(last) = run.last().map(|(key, _, count)| Meta {
            applied_op_key: *key,
            live_count: *count,
        }) else {
            continue;
        };
        let batch: Vec<BatchOp<S::Op>> = run
            .iter()
            .map(|(key, op, _)| (*key, std::sync::Arc::clone(op)))
            .collect();
        if !apply_with_retries(shared, &mut connection, &batch, last, stopping) {
            break;
        }
        {
            let _gate = shared.cleanup_gate.write();
            for (op_key, op) in &batch {
                shared.schema.unindex(&shared.overlay, *op_key, op);
                shared.buffer.remove(*op_key);
            }
        }
        // Counted before the applied key is published: whoever sees the batch applied (a
        // returning `flush`) also sees it in the stats.
        shared
            .counters
            .flush_batches
            .fetch_add(1, Ordering::Relaxed);
        shared
            .counters
            .ops_flushed
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        shared
            .applied_op_key
            .store(last.applied_op_key, Ordering::SeqCst);
        {
            let _guard = shared.applied_lock.lock();
            shared.applied_changed.notify_all();
        }
        shared.buffer.notify_room();
        tracing::debug!(
            ops = batch.len(),
            applied_op_key = last.applied_op_key,
            "flushed batch"
        );
        batches_since_checkpoint += 1;
        if batches_since_checkpoint >= config.checkpoint_every_batches {
            batches_since_checkpoint = 0;
            checkpoint(shared, &connection);
        }
        match shared.log.truncate_before(last.applied_op_key + 1) {
            Ok(0) => {}
            Ok(retired) => tracing::debug!(retired, "retired log segments"),
            Err(error) => {
                tracing::warn!(%error, "retiring log segments failed; retried after the next batch");
            }
        }
    }
    checkpoint(shared, &connection);
}

/// Waits until a batch is due: enough ops pending, a flush requested, the interval elapsed
/// with something pending, or a stop. Returns whether the store is stopping.
fn wait_for_work<S: Schema, St: Storage>(
    shared: &Shared<S, St>,
    interval: Duration,
    last_round: &mut Instant,
) -> bool {
    let batch_ops = shared.config.batch_ops_max as u64;
    let mut signal = shared.signal.lock();
    loop {
        if signal.stop {
            return true;
        }
        let pending = shared
            .visible_op_key()
            .saturating_sub(shared.applied_op_key.load(Ordering::SeqCst));
        let due = last_round.elapsed() >= interval;
        if pending >= batch_ops || (pending > 0 && (signal.requested || due)) {
            signal.requested = false;
            *last_round = Instant::now();
            return false;
        }
        if due {
            *last_round = Instant::now();
        }
        signal.requested = false;
        let remaining = interval.saturating_sub(last_round.elapsed());
        // Bounded: visibility under `Sync` advances without a signal to this thread.
        let step = remaining
            .min(Duration::from_millis(5))
            .max(Duration::from_micros(200));
        let _ = shared.signal_changed.wait_for(&mut signal, step);
    }
}

/// Applies `batch` until it commits. Returns false when the flusher must stop (the store
/// failed, or it is closing while SQLite fails).
fn apply_with_retries<S: Schema, St: Storage>(
    shared: &Shared<S, St>,
    connection: &mut Connection,
    batch: &[BatchOp<S::Op>],
    last: Meta,
    stopping: bool,
) -> bool {
    let config = &shared.config;
    let mut backoff = Duration::from_millis(10);
    let mut deterministic_failures = 0u32;
    loop {
        match apply_batch(shared, connection, batch, last) {
            Ok(()) => return true,
            Err(source) => {
                shared
                    .counters
                    .flush_failures
                    .fetch_add(1, Ordering::Relaxed);
                let transient = is_transient(&source);
                if !transient {
                    deterministic_failures += 1;
                }
                tracing::warn!(
                    error = %source,
                    transient,
                    first_op_key = batch.first().map_or(0, |op| op.0),
                    ops = batch.len(),
                    backoff_ms = backoff.as_millis() as u64,
                    "flush batch failed and was rolled back; retrying"
                );
                if deterministic_failures >= config.deterministic_failure_attempts {
                    shared.fail(Error::sqlite("apply batch", &shared.database_path, source));
                    return false;
                }
                if stopping || shared.signal.lock().stop {
                    tracing::warn!("store closing while SQLite fails: the log keeps the ops");
                    return false;
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_millis(config.retry_backoff_max_ms));
            }
        }
    }
}

/// One transaction: the schema's writes and the new meta, committed together.
fn apply_batch<S: Schema, St: Storage>(
    shared: &Shared<S, St>,
    connection: &mut Connection,
    batch: &[BatchOp<S::Op>],
    last: Meta,
) -> rusqlite::Result<()> {
    let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some(hook) = &shared.config.apply_hook {
        let keys: Vec<u64> = batch.iter().map(|op| op.0).collect();
        (hook.0)(&keys)?;
    }
    shared.schema.apply(&tx, batch)?;
    sqlite::write_meta(&tx, last)?;
    tx.commit()
}

/// Errors that may pass on their own: a lock held elsewhere, an I/O error, a full disk.
fn is_transient(error: &rusqlite::Error) -> bool {
    match error {
        rusqlite::Error::SqliteFailure(failure, _) => matches!(
            failure.code,
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::OutOfMemory
                | ErrorCode::CannotOpen
        ),
        _ => false,
    }
}

fn checkpoint<S: Schema, St: Storage>(shared: &Shared<S, St>, connection: &Connection) {
    match connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        row.get::<_, i64>(0)
    }) {
        Ok(_) => {
            shared.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
        }
        Err(error) => tracing::warn!(%error, "WAL checkpoint failed"),
    }
}
