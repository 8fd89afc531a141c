//! The `ack` group: acknowledged `add_shape`s per second and their latency, walbuf under each
//! sync policy against what a user would build on SQLite alone.
//!
//! * walbuf: a fresh [`ShapeRegistry`] per trial (default configuration: 5 000-op batches
//!   every 50 ms, 64 MiB segments prepared ahead) except the sync policy; the background
//!   flusher runs during the trial, as it would in production. Not timed: opening, the
//!   preparation of the second segment (see [`log_rows::settle`]) and closing. Closing
//!   abandons whatever is still buffered (an apply hook fails the final batch, so `close`
//!   returns at once; the log keeps the ops): otherwise a `None` trial would be followed by
//!   seconds of flushing.
//! * `reference-logoff`: the reference design (see [`reference`]): the same registry with its
//!   log in memory — no files, no syncs — and the same flusher, measured the same way. walbuf's
//!   rows over this one are what the durable log costs.
//! * `sqlite-1txn-*`: one connection behind a mutex; each op is one transaction (the shape
//!   row and its 2 relation rows) in WAL mode at `synchronous=FULL` or `NORMAL`.
//! * `sqlite-batch*`: writers hand their op to one batching thread through a channel and
//!   wait for its commit (the acknowledgement); the thread takes whatever is queued, up to
//!   the batch size, and commits it in one transaction (`synchronous=FULL`). With a closed
//!   loop of N writers a batch holds at most N ops, so the size only caps it.
//!
//! Every trial starts from an empty database.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use anyhow::{Context, anyhow};
use walbuf::storage::Storage;
use walbuf::store::{ApplyHook, StoreConfig};
use walbuf::{NewShape, ShapeRegistry, SyncPolicy};

use super::driver::{DiskCounter, Trial, closed_loop, remove_tree, with_disk_bytes};
use super::log_rows::settle;
use super::reference;
use super::workload::{Synchronous, insert_unsorted, op_key, open_baseline, shape_body, shape_of};

/// Numbers the trials of a run, for unique directories and keys.
static NEXT_TRIAL: AtomicU64 = AtomicU64::new(1);

/// How long [`log_rows::settle`] may wait.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// A store configuration whose `close` abandons what is still buffered once `abandon` is
/// set, instead of flushing it.
pub fn abandoning_config(policy: SyncPolicy, abandon: &Arc<AtomicBool>) -> StoreConfig {
    let abandon = Arc::clone(abandon);
    StoreConfig {
        log: walbuf::log::Config {
            sync_policy: policy,
            ..walbuf::log::Config::default()
        },
        apply_hook: Some(ApplyHook(Arc::new(move |_keys: &[u64]| {
            if abandon.load(Ordering::Relaxed) {
                Err(rusqlite::Error::InvalidQuery)
            } else {
                Ok(())
            }
        }))),
        ..StoreConfig::default()
    }
}

/// One walbuf trial: `writers` threads add shapes to a fresh registry for `duration`.
///
/// # Errors
/// The registry failed to open, add or close, or its directory could not be removed.
pub fn walbuf_trial(
    parent: &Path,
    policy: SyncPolicy,
    writers: usize,
    duration: Duration,
    disk: Option<&DiskCounter>,
) -> anyhow::Result<Trial> {
    let open = |directory: &Path, config| {
        let (registry, _report) = ShapeRegistry::open(directory, config)
            .with_context(|| format!("cannot open a registry in {}", directory.display()))?;
        Ok(registry)
    };
    registry_trial(parent, policy.name(), policy, open, writers, duration, disk)
}

/// One trial of `reference-logoff`: as [`walbuf_trial`] on the reference design, a registry
/// whose log is in memory ([`reference::MemoryStorage`]; `SyncPolicy::None`, as its syncs
/// would do nothing).
///
/// # Errors
/// As [`walbuf_trial`].
pub fn reference_trial(
    parent: &Path,
    writers: usize,
    duration: Duration,
    disk: Option<&DiskCounter>,
) -> anyhow::Result<Trial> {
    let open = reference::open_registry;
    registry_trial(
        parent,
        "reference-logoff",
        SyncPolicy::None,
        open,
        writers,
        duration,
        disk,
    )
}

/// A registry trial: opens a fresh registry with `open` in a new directory under `parent`
/// (named after `label`), waits for the log's background preparation, runs `writers` threads
/// adding shapes for `duration`, closes the registry abandoning what is still buffered, and
/// deletes the directory.
fn registry_trial<St: Storage>(
    parent: &Path,
    label: &str,
    policy: SyncPolicy,
    open: impl FnOnce(&Path, StoreConfig) -> anyhow::Result<ShapeRegistry<St>>,
    writers: usize,
    duration: Duration,
    disk: Option<&DiskCounter>,
) -> anyhow::Result<Trial> {
    let number = NEXT_TRIAL.fetch_add(1, Ordering::Relaxed);
    let directory = parent.join(format!("ack-{label}-{writers}w-{number}"));
    let abandon = Arc::new(AtomicBool::new(false));
    let registry = open(&directory, abandoning_config(policy, &abandon))?;
    settle(SETTLE_TIMEOUT);
    let body = shape_body();
    let before = registry.stats();
    let (mut trial, disk_bytes) = with_disk_bytes(disk, || {
        closed_loop(writers, duration, |thread| {
            let (registry, body) = (&registry, &body);
            let mut sequence = 0;
            Ok(move || {
                sequence += 1;
                registry
                    .add_shape(shape_of(op_key(number, thread, sequence), body))
                    .context("add_shape")?;
                Ok(())
            })
        })
    })?;
    let after = registry.stats();
    abandon.store(true, Ordering::Relaxed);
    registry.close().context("close the registry")?;
    drop(registry);
    remove_tree(&directory)?;
    trial.syncs = after.log.syncs - before.log.syncs;
    trial.rotations = Some(after.log.rotations - before.log.rotations);
    trial.disk_bytes_written = disk_bytes;
    Ok(trial)
}

/// One trial of `sqlite-1txn-*`: `writers` threads share one connection, one transaction
/// per op.
///
/// # Errors
/// SQLite failed.
pub fn one_transaction_trial(
    parent: &Path,
    synchronous: Synchronous,
    writers: usize,
    duration: Duration,
    disk: Option<&DiskCounter>,
) -> anyhow::Result<Trial> {
    let number = NEXT_TRIAL.fetch_add(1, Ordering::Relaxed);
    let directory = parent.join(format!("sqlite-1txn-{writers}w-{number}"));
    std::fs::create_dir_all(&directory)?;
    let connection = Mutex::new(open_baseline(&directory.join("shapes.db"), synchronous)?);
    let body = shape_body();
    let (mut trial, disk_bytes) = with_disk_bytes(disk, || {
        closed_loop(writers, duration, |thread| {
            let (connection, body) = (&connection, &body);
            let mut sequence = 0;
            Ok(move || {
                sequence += 1;
                let shape = shape_of(op_key(number, thread, sequence), body);
                let mut connection = connection
                    .lock()
                    .map_err(|_| anyhow!("a writer panicked"))?;
                insert_unsorted(&mut connection, std::slice::from_ref(&shape)).context("insert")?;
                Ok(())
            })
        })
    })?;
    drop(connection);
    remove_tree(&directory)?;
    trial.syncs = trial.ops;
    trial.disk_bytes_written = disk_bytes;
    Ok(trial)
}

/// An op handed to the batching thread, with where to acknowledge it.
type Handoff = (NewShape, mpsc::SyncSender<()>);

/// One trial of `sqlite-batch*`: `writers` threads hand ops to one batching thread that
/// commits up to `batch_ops` per transaction and then acknowledges them.
///
/// # Errors
/// SQLite failed.
pub fn batched_trial(
    parent: &Path,
    batch_ops: usize,
    writers: usize,
    duration: Duration,
    disk: Option<&DiskCounter>,
) -> anyhow::Result<Trial> {
    let number = NEXT_TRIAL.fetch_add(1, Ordering::Relaxed);
    let directory = parent.join(format!("sqlite-batch{batch_ops}-{writers}w-{number}"));
    std::fs::create_dir_all(&directory)?;
    let mut connection = open_baseline(&directory.join("shapes.db"), Synchronous::Full)?;
    let body = shape_body();
    let (sender, receiver) = mpsc::channel::<Handoff>();
    let batcher = std::thread::Builder::new()
        .name("bench-batcher".into())
        .spawn(move || -> anyhow::Result<u64> {
            let mut commits = 0;
            let mut shapes = Vec::with_capacity(batch_ops);
            let mut acks = Vec::with_capacity(batch_ops);
            while let Ok((shape, ack)) = receiver.recv() {
                shapes.push(shape);
                acks.push(ack);
                while shapes.len() < batch_ops {
                    let Ok((shape, ack)) = receiver.try_recv() else {
                        break;
                    };
                    shapes.push(shape);
                    acks.push(ack);
                }
                insert_unsorted(&mut connection, &shapes).context("insert a batch")?;
                commits += 1;
                shapes.clear();
                for ack in acks.drain(..) {
                    // A writer that stopped waiting is no error.
                    let _ = ack.send(());
                }
            }
            Ok(commits)
        })?;
    let outcome = with_disk_bytes(disk, || {
        closed_loop(writers, duration, |thread| {
            let (sender, body) = (sender.clone(), &body);
            let (ack_sender, ack_receiver) = mpsc::sync_channel(1);
            let mut sequence = 0;
            Ok(move || {
                sequence += 1;
                let shape = shape_of(op_key(number, thread, sequence), body);
                sender
                    .send((shape, ack_sender.clone()))
                    .map_err(|_| anyhow!("the batching thread stopped"))?;
                ack_receiver
                    .recv()
                    .map_err(|_| anyhow!("the batching thread stopped"))
            })
        })
    });
    drop(sender);
    let commits = batcher
        .join()
        .map_err(|_| anyhow!("the batching thread panicked"))??;
    let (mut trial, disk_bytes) = outcome?;
    remove_tree(&directory)?;
    trial.syncs = commits;
    trial.disk_bytes_written = disk_bytes;
    Ok(trial)
}
