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
//!
//! The drain rows ([`DrainFixture`]) measure the flusher alone, with its ops ready, as the
//! baselines have theirs:
//!
//! * `walbuf-flush-drain*`: a copy of a fixture store (`existing` shapes in SQLite, `ops` more
//!   only in its log) is reopened — recovery replays the ops into the buffer, untimed — with
//!   the flusher held at its first batch by an apply hook; the trial releases it and times
//!   until `flush` returns. One row per lever ([`Lever`]): the defaults, 500-op batches, rows
//!   in op order, each op on its own, SQLite's automatic checkpoints; and on the churn
//!   workload (a remove after every 4th add, of the shape added 2 ops before: ops that cancel
//!   within a batch) the defaults and each op on its own.
//! * `sqlite-drain*`: the same ops, built before the clock starts, into a copy of the same
//!   database, batched by hand with the same batch size, order, cache and checkpoints (the
//!   churn baseline applies each op on its own, in order).

use std::cell::OnceCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use walbuf::sqlite::BatchWrites;
use walbuf::store::ApplyHook;
use walbuf::{NewShape, ShapeRegistry, SyncPolicy};

use super::ack_rows::abandoning_config;
use super::driver::{Trial, remove_tree};
use super::log_rows::settle;
use super::workload::{
    BaselineOp, Synchronous, apply_in_order, insert_sorted, insert_unsorted, op_key, open_baseline,
    shape_body, shape_of,
};

/// Ops per SQLite transaction on both sides (walbuf's default `batch_ops_max`).
pub const BATCH_OPS: usize = 5_000;
/// Batches between passive checkpoints of the tuned baseline (walbuf's default).
const CHECKPOINT_EVERY_BATCHES: u64 = 4;
/// Cache of the tuned baseline, in KiB (walbuf's default write cache).
const TUNED_CACHE_KIB: u32 = 64 * 1024;
/// A passive WAL checkpoint, as walbuf's flusher schedules them.
fn passive_checkpoint(connection: &rusqlite::Connection) -> rusqlite::Result<()> {
    connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        row.get::<_, i64>(0)
    })?;
    Ok(())
}

/// The longest wait for walbuf's first batch.
const FIRST_BATCH_TIMEOUT: Duration = Duration::from_secs(30);

static NEXT_TRIAL: AtomicU64 = AtomicU64::new(1);

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
            Ok(Trial::throughput(
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
            passive_checkpoint(&connection)?;
        }
    }
    let elapsed = started.elapsed();
    drop(connection);
    remove_tree(&directory)?;
    Ok(Trial::throughput(
        commits * BATCH_OPS as u64,
        elapsed,
        commits,
    ))
}

/// How the ops of a drain are written: a lever of the flusher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Writes {
    /// Coalesced, rows sorted by key (walbuf's default; the baseline sorts each batch).
    Sorted,
    /// Coalesced, rows in op order (the baseline inserts each op's rows in op order).
    Unsorted,
    /// walbuf writes every op on its own, in op order (the baseline as for `Unsorted`).
    EachOp,
}

/// The settings of a drain, the same on both sides of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Drain {
    /// Ops per transaction.
    pub batch_ops: usize,
    /// How the rows are written.
    pub writes: Writes,
    /// SQLite's automatic checkpoints (every 1 000 WAL pages) instead of a passive checkpoint
    /// every 4 batches.
    pub auto_checkpoint: bool,
    /// The churn workload: every [`CHURN_EVERY`]th add is followed by the removal of the
    /// shape added two ops before (mostly in the same batch: ops that cancel).
    pub churn: bool,
}

/// In the churn workload, one remove after every this many adds.
pub const CHURN_EVERY: u64 = 4;

impl Drain {
    /// walbuf's defaults.
    pub const DEFAULT: Self = Self {
        batch_ops: BATCH_OPS,
        writes: Writes::Sorted,
        auto_checkpoint: false,
        churn: false,
    };
}

/// SQLite's default `wal_autocheckpoint`, in pages.
const SQLITE_AUTOCHECKPOINT_PAGES: u32 = 1_000;

/// Store directories holding `existing` shapes in SQLite and the drain's ops only in their
/// log (as a crash leaves them), copied by every drain trial; the baselines copy their
/// database. The add-only store is built at once, the churn store on first use.
pub struct DrainFixture {
    /// Where the stores and the trials' copies live.
    parent: PathBuf,
    existing: u64,
    /// Shapes added by a drain.
    adds: u64,
    /// The add-only store and the churn store.
    stores: [OnceCell<PathBuf>; 2],
}

/// Opens the gate of a held flusher when dropped.
struct Release<'a>(&'a (std::sync::Mutex<bool>, std::sync::Condvar));

impl Drop for Release<'_> {
    fn drop(&mut self) {
        let (open, opened) = self.0;
        *open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        opened.notify_all();
    }
}

/// The op key space of the drain fixture's shapes.
const DRAIN_KEYS: u64 = 0xD0;

impl DrainFixture {
    /// Builds the add-only store under `parent`: `existing` shapes added and flushed, then
    /// `adds` more added with the flusher held idle and abandoned in the log.
    ///
    /// # Errors
    /// The registry or SQLite failed.
    pub fn build(parent: &Path, existing: u64, adds: u64) -> anyhow::Result<Self> {
        let fixture = Self {
            parent: parent.to_path_buf(),
            existing,
            adds,
            stores: [OnceCell::new(), OnceCell::new()],
        };
        fixture.store(false)?;
        Ok(fixture)
    }

    /// The shape of the fixture's `sequence`.
    fn shape(sequence: u64, body: &[u8]) -> NewShape {
        shape_of(op_key(DRAIN_KEYS, 0, sequence), body)
    }

    /// The ops a drain applies, in op order.
    fn ops(&self, churn: bool) -> Vec<BaselineOp> {
        let body = shape_body();
        let mut ops = Vec::new();
        for sequence in self.existing..self.existing + self.adds {
            ops.push(BaselineOp::Add(Self::shape(sequence, &body)));
            if churn && sequence % CHURN_EVERY == CHURN_EVERY - 1 {
                let removed = Self::shape(sequence - 2, &body);
                let mut oids: Vec<u32> = removed.relations.iter().map(|r| r.oid).collect();
                oids.sort_unstable();
                oids.dedup();
                ops.push(BaselineOp::Remove {
                    handle: removed.handle,
                    oids,
                });
            }
        }
        ops
    }

    /// How many ops a drain applies.
    fn op_count(&self, churn: bool) -> u64 {
        let removes = if churn {
            (self.existing..self.existing + self.adds)
                .filter(|sequence| sequence % CHURN_EVERY == CHURN_EVERY - 1)
                .count() as u64
        } else {
            0
        };
        self.adds + removes
    }

    /// The store directory of the workload, built on first use.
    fn store(&self, churn: bool) -> anyhow::Result<&Path> {
        let cell = &self.stores[usize::from(churn)];
        if let Some(directory) = cell.get() {
            return Ok(directory);
        }
        let directory = self.parent.join(format!("flush-drain-fixture-{churn}"));
        let abandon = Arc::new(AtomicBool::new(false));
        let ops = self.ops(churn);
        let all = self.existing + ops.len() as u64;
        let config = walbuf::StoreConfig {
            flush_interval_ms: 3_600_000,
            batch_ops_max: usize::try_from(all + 1)?,
            buffer_ops_max: (all + 1).max(1_000_000),
            buffer_bytes_max: 4 << 30,
            ..abandoning_config(SyncPolicy::None, &abandon)
        };
        let open = || {
            ShapeRegistry::open(&directory, config.clone())
                .map(|(registry, _report)| registry)
                .with_context(|| format!("cannot open a registry in {}", directory.display()))
        };
        let registry = open()?;
        let body = shape_body();
        for sequence in 0..self.existing {
            registry.add_shape(Self::shape(sequence, &body))?;
        }
        registry.flush().context("flush the existing shapes")?;
        registry.close().context("close the registry")?;
        drop(registry);
        // Reopened, so that no flush requested above can apply any of the drain's ops.
        let registry = open()?;
        for op in ops {
            match op {
                BaselineOp::Add(shape) => registry.add_shape(shape)?,
                BaselineOp::Remove { handle, .. } => registry.remove_shape(&handle)?,
            };
        }
        abandon.store(true, Ordering::Relaxed);
        registry.close().context("close the registry")?;
        drop(registry);
        // Every trial starts from an empty WAL.
        rusqlite::Connection::open(directory.join(walbuf::store::DATABASE_FILE))?.query_row(
            "PRAGMA wal_checkpoint(TRUNCATE)",
            [],
            |_| Ok(()),
        )?;
        Ok(cell.get_or_init(|| directory))
    }

    /// Copies the store of the workload to a fresh directory beside it (the whole store, or
    /// with `database_only` just its database as `shapes.db`), syncs it, and returns the
    /// directory.
    fn copy(&self, churn: bool, database_only: bool) -> anyhow::Result<PathBuf> {
        let store = self.store(churn)?;
        let number = NEXT_TRIAL.fetch_add(1, Ordering::Relaxed);
        let directory = self.parent.join(format!("flush-drain-{number}"));
        let database = walbuf::store::DATABASE_FILE;
        std::fs::create_dir_all(&directory)?;
        if database_only {
            std::fs::copy(store.join(database), directory.join("shapes.db"))?;
        } else {
            std::fs::copy(store.join(database), directory.join(database))?;
            let log = walbuf::store::LOG_DIRECTORY;
            std::fs::create_dir_all(directory.join(log))?;
            for entry in std::fs::read_dir(store.join(log))? {
                let entry = entry?;
                std::fs::copy(entry.path(), directory.join(log).join(entry.file_name()))?;
            }
        }
        rustix::fs::sync();
        Ok(directory)
    }

    /// One `walbuf-flush-drain*` trial: reopens a copy (recovery replays the ops into the
    /// buffer, untimed) with the flusher held at its first batch, then releases it and times
    /// until `flush` returns.
    ///
    /// # Errors
    /// The registry failed, or applied another number of ops.
    pub fn walbuf_trial(&self, drain: Drain) -> anyhow::Result<Trial> {
        let directory = self.copy(drain.churn, false)?;
        let ops = self.op_count(drain.churn);
        let gate = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let held = Arc::clone(&gate);
        let mut config = walbuf::StoreConfig {
            batch_ops_max: drain.batch_ops,
            apply_hook: Some(ApplyHook(Arc::new(move |_keys: &[u64]| {
                let (open, opened) = &*held;
                let mut open = open.lock().map_err(|_| rusqlite::Error::InvalidQuery)?;
                while !*open {
                    open = opened
                        .wait(open)
                        .map_err(|_| rusqlite::Error::InvalidQuery)?;
                }
                Ok(())
            }))),
            ..walbuf::StoreConfig::default()
        };
        config.log.sync_policy = SyncPolicy::None;
        config.sqlite.batch_writes = match drain.writes {
            Writes::Sorted => BatchWrites::Coalesced,
            Writes::Unsorted => BatchWrites::CoalescedUnsorted,
            Writes::EachOp => BatchWrites::EachOp,
        };
        if drain.auto_checkpoint {
            config.sqlite.wal_autocheckpoint_pages = SQLITE_AUTOCHECKPOINT_PAGES;
        }
        let (registry, report) = ShapeRegistry::open(&directory, config)
            .with_context(|| format!("cannot reopen {}", directory.display()))?;
        // Dropped before the registry, on every path: a flusher held at the gate would keep
        // the registry's close from returning.
        let release = Release(&gate);
        anyhow::ensure!(
            report.ops_replayed == ops,
            "recovery replayed {} ops, expected {ops}",
            report.ops_replayed,
        );
        settle(Duration::from_secs(10));
        let before = registry.stats();
        let started = Instant::now();
        drop(release);
        registry.flush().context("flush")?;
        let elapsed = started.elapsed();
        let after = registry.stats();
        registry.close().context("close the registry")?;
        drop(registry);
        remove_tree(&directory)?;
        anyhow::ensure!(
            after.applied_op_key - before.applied_op_key == ops,
            "the drain applied {} ops, expected {ops}",
            after.applied_op_key - before.applied_op_key,
        );
        Ok(Trial::throughput(
            ops,
            elapsed,
            after.flush_batches - before.flush_batches,
        ))
    }

    /// One `sqlite-drain*` trial: the same ops into a copy of the same database, batched by
    /// hand with the same settings; the shapes are built before the clock starts.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn batched_trial(&self, drain: Drain) -> anyhow::Result<Trial> {
        let directory = self.copy(drain.churn, true)?;
        let mut connection = open_baseline(&directory.join("shapes.db"), Synchronous::Full)?;
        let autocheckpoint = if drain.auto_checkpoint {
            SQLITE_AUTOCHECKPOINT_PAGES
        } else {
            0
        };
        connection.execute_batch(&format!(
            "PRAGMA cache_size = -{TUNED_CACHE_KIB}; PRAGMA wal_autocheckpoint = {autocheckpoint};"
        ))?;
        let ops = self.ops(drain.churn);
        let shapes: Vec<NewShape> = ops
            .iter()
            .filter_map(|op| match op {
                BaselineOp::Add(shape) if !drain.churn => Some(shape.clone()),
                BaselineOp::Add(_) | BaselineOp::Remove { .. } => None,
            })
            .collect();
        let started = Instant::now();
        let mut commits = 0_u64;
        for first in (0..ops.len()).step_by(drain.batch_ops) {
            let last = (first + drain.batch_ops).min(ops.len());
            match (drain.churn, drain.writes) {
                (true, _) => apply_in_order(&mut connection, &ops[first..last]),
                (false, Writes::Sorted) => insert_sorted(&mut connection, &shapes[first..last]),
                (false, Writes::Unsorted | Writes::EachOp) => {
                    insert_unsorted(&mut connection, &shapes[first..last])
                }
            }
            .context("apply a batch")?;
            commits += 1;
            if !drain.auto_checkpoint && commits.is_multiple_of(CHECKPOINT_EVERY_BATCHES) {
                passive_checkpoint(&connection)?;
            }
        }
        let elapsed = started.elapsed();
        drop(connection);
        remove_tree(&directory)?;
        Ok(Trial::throughput(ops.len() as u64, elapsed, commits))
    }

    /// Deletes the fixture's stores.
    ///
    /// # Errors
    /// One could not be removed.
    pub fn remove(self) -> anyhow::Result<()> {
        for store in self.stores {
            if let Some(directory) = store.into_inner() {
                remove_tree(&directory)?;
            }
        }
        Ok(())
    }
}

/// The `walbuf-flush-drain*` rows: walbuf's defaults, and one lever changed at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lever {
    /// walbuf's defaults ([`Drain::DEFAULT`]).
    Default,
    /// 500-op batches.
    Batch500,
    /// Coalesced, written in op order.
    Unsorted,
    /// Neither coalesced nor sorted.
    EachOp,
    /// SQLite's automatic checkpoints instead of the flusher's.
    AutoCheckpoint,
    /// The churn workload (ops that cancel), walbuf's defaults.
    Churn,
    /// The churn workload, each op on its own (no coalescing).
    ChurnEachOp,
}

impl Lever {
    /// Every row, in output order.
    pub const ALL: [Self; 7] = [
        Self::Default,
        Self::Batch500,
        Self::Unsorted,
        Self::EachOp,
        Self::AutoCheckpoint,
        Self::Churn,
        Self::ChurnEachOp,
    ];

    /// The stable system name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Default => "walbuf-flush-drain",
            Self::Batch500 => "walbuf-flush-drain-batch500",
            Self::Unsorted => "walbuf-flush-drain-unsorted",
            Self::EachOp => "walbuf-flush-drain-each-op",
            Self::AutoCheckpoint => "walbuf-flush-drain-autocheckpoint",
            Self::Churn => "walbuf-flush-drain-churn",
            Self::ChurnEachOp => "walbuf-flush-drain-churn-each-op",
        }
    }

    /// walbuf's settings for this row.
    pub fn drain(self) -> Drain {
        let default = Drain::DEFAULT;
        match self {
            Self::Default => default,
            Self::Batch500 => Drain {
                batch_ops: 500,
                ..default
            },
            Self::Unsorted => Drain {
                writes: Writes::Unsorted,
                ..default
            },
            Self::EachOp => Drain {
                writes: Writes::EachOp,
                ..default
            },
            Self::AutoCheckpoint => Drain {
                auto_checkpoint: true,
                ..default
            },
            Self::Churn => Drain {
                churn: true,
                ..default
            },
            Self::ChurnEachOp => Drain {
                churn: true,
                writes: Writes::EachOp,
                ..default
            },
        }
    }

    /// The settings of its hand-batched baseline (for an add-only drain, writing each op on
    /// its own is what an unsorted hand-batched loop does; the churn baseline applies each op
    /// in order, whatever walbuf does).
    pub fn baseline(self) -> Drain {
        let drain = self.drain();
        match drain.writes {
            _ if drain.churn => Drain {
                writes: Writes::Unsorted,
                ..drain
            },
            Writes::EachOp => Drain {
                writes: Writes::Unsorted,
                ..drain
            },
            Writes::Sorted | Writes::Unsorted => drain,
        }
    }

    /// The row this lever's row is compared with: the defaults on the same workload.
    fn reference(self) -> Self {
        match self {
            Self::ChurnEachOp => Self::Churn,
            _ => Self::Default,
        }
    }

    /// What walbuf's default setting of the lever is, against this row's (`None` for the
    /// default row).
    fn describe(self) -> Option<&'static str> {
        match self {
            Self::Default | Self::Churn => None,
            Self::ChurnEachOp => Some(
                "coalesced and sorted instead of each op on its own, one add in 4 removed in the \
                 batch",
            ),
            Self::Batch500 => Some("5 000-op batches instead of 500"),
            Self::Unsorted => Some("rows sorted by key instead of written in op order"),
            Self::EachOp => Some("coalesced and sorted instead of each op on its own"),
            Self::AutoCheckpoint => {
                Some("passive checkpoints every 4 batches instead of SQLite's automatic ones")
            }
        }
    }
}

impl Drain {
    /// The stable name of the hand-batched baseline with these settings.
    pub fn baseline_name(self) -> &'static str {
        match (self.batch_ops, self.writes, self.auto_checkpoint) {
            _ if self.churn => "sqlite-drain5000-churn",
            (500, _, _) => "sqlite-drain500-tuned",
            (_, Writes::Sorted, false) => "sqlite-drain5000-tuned",
            (_, Writes::Sorted, true) => "sqlite-drain5000-autocheckpoint",
            (_, Writes::Unsorted | Writes::EachOp, _) => "sqlite-drain5000-tuned-unsorted",
        }
    }
}

/// One line per lever: what walbuf's default buys it (its reference row's ops/s ÷ the lever
/// row's, medians of the same run) and what the same change buys hand-batched SQLite.
/// `ops_per_s` finds a row's median by system name.
pub fn lever_lines(ops_per_s: impl Fn(&str) -> Option<f64>) -> Vec<String> {
    let ratio = |numerator: &str, denominator: &str| {
        Some(ops_per_s(numerator)? / ops_per_s(denominator)?.max(1e-9))
    };
    let mut lines = Vec::new();
    for lever in Lever::ALL {
        let reference = lever.reference();
        let (Some(what), Some(walbuf)) = (lever.describe(), ratio(reference.name(), lever.name()))
        else {
            continue;
        };
        let (ours, theirs) = (
            reference.baseline().baseline_name(),
            lever.baseline().baseline_name(),
        );
        let sqlite = if ours == theirs {
            "the same baseline".to_owned()
        } else {
            ratio(ours, theirs).map_or_else(|| "?".to_owned(), |ratio| format!("{ratio:.2}×"))
        };
        lines.push(format!(
            "- {what}: {walbuf:.2}× for walbuf ({} ÷ {}), {sqlite} for hand-batched SQLite",
            reference.name(),
            lever.name()
        ));
    }
    lines
}
