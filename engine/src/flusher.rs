//! The flusher: one background thread that owns the single SQLite write connection and
//! applies buffered ops to SQLite in large batches.
//!
//! Each round it takes the gapless run of visible ops just above the last committed op key
//! (up to `batch_ops_max`), applies them in ONE transaction together with the new applied op
//! key and live count (`walbuf_meta`), commits (durable: `synchronous=FULL`), and retires
//! whole log segments below the committed key. A second thread, the cleaner, then drops the
//! committed ops from the overlay and the buffer (compare-and-delete by op key), publishes
//! the applied op key and wakes writers waiting for room — while the flusher already applies
//! the next batch. A failing batch is rolled back and retried with capped exponential
//! backoff; a batch failing in a way retrying cannot fix marks the store failed.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, TransactionBehavior};

use crate::error::Error;
use crate::schema::{BatchOp, Schema};
use crate::sqlite::{self, Meta};
use crate::storage::Storage;
use crate::store::Shared;

/// A committed batch, handed to the cleaner.
struct Committed<Op> {
    batch: Vec<BatchOp<Op>>,
    last: Meta,
}

/// The flusher thread's body. A second thread, the cleaner, drops each committed batch from
/// the overlay and the buffer and then publishes it as applied, while the flusher already
/// applies the next batch: the cleanup is off the path of SQLite's writes.
pub(crate) fn run<S: Schema, St: Storage>(shared: &Shared<S, St>, mut connection: Connection) {
    let config = &shared.config;
    sqlite::set_batch_writes(config.sqlite.batch_writes);
    std::thread::scope(|scope| {
        // One committed batch may wait while another is cleaned: at most two batches are
        // committed and still buffered.
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Committed<S::Op>>(1);
        let cleaner = std::thread::Builder::new()
            .name("walbuf-cleaner".into())
            .spawn_scoped(scope, move || {
                for committed in receiver {
                    clean(shared, committed);
                }
            });
        let cleaner = match cleaner {
            Ok(cleaner) => Some(cleaner),
            Err(error) => {
                tracing::warn!(%error, "cannot start the cleaner thread; the flusher cleans up");
                None
            }
        };
        flush_batches(shared, &mut connection, |committed| {
            let unsent = match &cleaner {
                Some(_) => sender.send(committed).err().map(|error| error.0),
                None => Some(committed),
            };
            if let Some(committed) = unsent {
                clean(shared, committed);
            }
        });
        drop(sender);
        if let Some(cleaner) = cleaner
            && cleaner.join().is_err()
        {
            tracing::error!("the cleaner thread panicked");
        }
    });
    checkpoint(shared, &connection);
}

/// The flusher's loop: applies gapless batches until the store stops (or fails), handing
/// each committed batch to `committed`.
fn flush_batches<S: Schema, St: Storage>(
    shared: &Shared<S, St>,
    connection: &mut Connection,
    mut committed: impl FnMut(Committed<S::Op>),
) {
    let config = &shared.config;
    // With SQLite's automatic checkpoints on, the flusher schedules none of its own.
    let scheduled_checkpoints = config.sqlite.wal_autocheckpoint_pages == 0;
    let interval = Duration::from_millis(config.flush_interval_ms);
    let mut batches_since_checkpoint = 0u32;
    let mut last_round = Instant::now();
    // The last op key committed: ahead of `applied_op_key` while the cleaner works.
    let mut last_committed = shared.applied_op_key.load(Ordering::SeqCst);
    loop {
        let stopping = wait_for_work(shared, last_committed, interval, &mut last_round);
        let visible = shared.visible_op_key();
        let run = shared.buffer.gapless_run(
            last_committed + 1,
            visible,
            config.batch_ops_max,
            config.batch_bytes_max,
        );
        let Some(last) = run.last().map(|(key, _, count)| Meta {
            applied_op_key: *key,
            live_count: *count,
        }) else {
            if stopping {
                break;
            }
            if visible > last_committed {
                // Visible ops that are not buffered: a gap in op keys, which submit and
                // recovery rule out. Never spin on it; say so.
                tracing::error!(
                    applied = last_committed,
                    visible,
                    "visible ops missing from the buffer; the flusher waits"
                );
                std::thread::sleep(interval.max(Duration::from_millis(10)));
            }
            continue;
        };
        let batch: Vec<BatchOp<S::Op>> = run.into_iter().map(|(key, op, _)| (key, op)).collect();
        if !apply_with_retries(shared, connection, &batch, last, stopping) {
            break;
        }
        last_committed = last.applied_op_key;
        committed(Committed { batch, last });
        batches_since_checkpoint += 1;
        if scheduled_checkpoints && batches_since_checkpoint >= config.checkpoint_every_batches {
            batches_since_checkpoint = 0;
            checkpoint(shared, connection);
        }
        // The commit is durable (`synchronous=FULL`): the log below it may go, whether or
        // not the cleaner is done.
        match shared.log.truncate_before(last.applied_op_key + 1) {
            Ok(0) => {}
            Ok(retired) => tracing::debug!(retired, "retired log segments"),
            Err(error) => {
                tracing::warn!(%error, "retiring log segments failed; retried after the next batch");
            }
        }
    }
}

/// Most ops dropped from the overlay per hold of its gate (see [`clean`]); a chunk is also at
/// most a quarter of a batch, so that every batch of more than a few ops is dropped in
/// several chunks (small test configurations included).
const CLEAN_CHUNK_OPS_MAX: usize = 256;

/// Drops a committed batch from the overlay and the buffer (compare-and-delete by op key),
/// then publishes it as applied and wakes whoever waits for that or for room.
fn clean<S: Schema, St: Storage>(shared: &Shared<S, St>, committed: Committed<S::Op>) {
    let Committed { batch, last } = committed;
    // In chunks, each under its own hold of the overlay gate, so that a reader or a writer's
    // validation waits for one chunk's cleanup, never a whole batch's. Between chunks every op
    // of the batch is either still in the overlay or already dropped, and SQLite holds all
    // of them: either way a read finds it. Chunks go in op-key order, so a buffered reset is
    // never dropped after an add that follows it (a reader never sees the add gone while the
    // reset still hides SQLite's rows).
    let chunk_ops = (shared.config.batch_ops_max / 4).clamp(1, CLEAN_CHUNK_OPS_MAX);
    for chunk in batch.chunks(chunk_ops) {
        {
            let _gate = shared.cleanup_gate.write();
            shared.cleanup_epoch.fetch_add(1, Ordering::Release);
            for (op_key, op) in chunk {
                shared.schema.unindex(&shared.overlay, *op_key, op);
                shared.buffer.remove(*op_key);
            }
        }
        shared.buffer.notify_room();
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
    tracing::debug!(
        ops = batch.len(),
        applied_op_key = last.applied_op_key,
        "flushed batch"
    );
}

/// Waits until a batch is due: enough ops pending, a flush requested, the interval elapsed
/// with something pending, or a stop. Returns whether the store is stopping.
fn wait_for_work<S: Schema, St: Storage>(
    shared: &Shared<S, St>,
    last_committed: u64,
    interval: Duration,
    last_round: &mut Instant,
) -> bool {
    let batch_ops = shared.config.batch_ops_max as u64;
    let mut signal = shared.signal.lock();
    loop {
        if signal.stop {
            return true;
        }
        let pending = shared.visible_op_key().saturating_sub(last_committed);
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
