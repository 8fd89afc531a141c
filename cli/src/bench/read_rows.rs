//! The `read` group: reads of the shape registry, for a buffered and for a flushed shape,
//! against the same query on an indexed SQLite table; a listing in handle order; and point
//! reads while a writer bursts.
//!
//! The fixture is built once per run: a registry with N shapes (`SyncPolicy::None`, the
//! flusher held idle by a one-hour interval and a batch size far above N), the first half
//! added and flushed to SQLite, the second half added and left buffered; and a baseline
//! database with the same N shapes in the same lean schema, opened on its own connection with
//! walbuf's read cache (8 MiB), queried with cached prepared statements. Each trial is one
//! thread doing lookups of random keys of its set back to back (closed loop; the latency is
//! the time between two consecutive lookups returning).
//!
//! * `handle_for_shape` — by comparable; SQLite: `SELECT handle FROM shapes WHERE
//!   comparable = ?`.
//! * `shape_for_handle` — the whole shape; SQLite: the row's six columns, owned (the
//!   relations column is not decoded, which walbuf does).
//! * `handles_for_relations` — handles of shapes with a relation on one oid (the shape's own
//!   oid: one handle); walbuf reads the overlay *and* SQLite (a flushed shape may match);
//!   SQLite: `SELECT handle FROM relations WHERE oid = ?`.
//! * `list_shapes` — the first [`LIST_SHAPES`] shapes in handle order, whole (buffered and
//!   flushed shapes interleave: handles are random); SQLite: the six columns `ORDER BY handle
//!   LIMIT` [`LIST_SHAPES`]. A trial's ops count shapes listed, its latencies whole listings.
//! * under a write burst — buffered `handle_for_shape` lookups while [`BURST_WRITERS`]
//!   thread adds new shapes back to back to the same registry (`add_shape`, `None`: the
//!   write path the readers share locks and cores with; the flusher stays idle, so the added
//!   shapes stay buffered), against the same lookups with no writer (`-quiet`, alternated).
//!   SQLite alike: lookups on the baseline's read connection while a writer on its own
//!   connection commits new shapes 100 per transaction (the reference design's batch) back to
//!   back, against no writer. The p99s of each pair give the stall a writer causes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow, ensure};
use rusqlite::{Connection, OpenFlags};
use walbuf::store::StoreConfig;
use walbuf::{ShapeRegistry, SyncPolicy};

use super::ack_rows::abandoning_config;
use super::driver::{Trial, closed_loop};
use super::workload::{
    Synchronous, comparable_of, handle_of, insert_sorted, insert_unsorted, mix, open_baseline,
    own_oid_of, shape_body, shape_of,
};

/// Keys each set cycles through (random order).
const KEYS_PER_SET: usize = 4096;
/// Page cache of the baseline's read connection, in KiB (walbuf's read connections').
const READ_CACHE_KIB: u32 = 8 * 1024;
/// Shapes inserted per transaction while building the baseline (sorted: larger batches fill
/// the B-trees faster).
const BUILD_BATCH: usize = 100_000;
/// Shapes a `list_shapes` op lists.
pub const LIST_SHAPES: usize = 1_000;
/// Writer threads of a burst (one per core beside the reader's).
pub const BURST_WRITERS: usize = 1;
/// Shapes the SQLite burst writer commits per transaction.
const BURST_BATCH: usize = 100;
/// Shapes the bursts may add to the registry over the whole run (they stay buffered: the
/// flusher is idle). One writer adds ~100–300 k/s, so this is ~15 s of bursts.
const BURST_SHAPES_MAX: u64 = 4_000_000;

/// A row of the baseline's `shapes` table, owned.
type ShapeRow = (String, Vec<u8>, i64, i64, Vec<u8>, Vec<u8>);

/// Which read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReadOp {
    HandleForShape,
    ShapeForHandle,
    HandlesForRelations,
}

/// Where the shapes read live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// walbuf, a shape still in the buffer.
    Buffered,
    /// walbuf, a shape flushed to SQLite (and gone from the buffer).
    Flushed,
    /// The baseline database (any of the N shapes).
    Sqlite,
}

/// A row of the six columns of `shapes`, owned.
fn shape_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ShapeRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
    ))
}

/// The keys of one set, precomputed so that the timed loop only looks up.
struct Keys {
    comparables: Vec<Vec<u8>>,
    handles: Vec<String>,
    oids: Vec<u32>,
}

impl Keys {
    /// [`KEYS_PER_SET`] random keys in `range`.
    fn random_in(range: std::ops::Range<u64>, seed: u64) -> Self {
        let len = range.end - range.start;
        let keys: Vec<u64> = (0..KEYS_PER_SET as u64)
            .map(|index| range.start + mix(seed ^ index) % len)
            .collect();
        Self {
            comparables: keys.iter().map(|key| comparable_of(*key)).collect(),
            handles: keys.iter().map(|key| handle_of(*key)).collect(),
            oids: keys.iter().map(|key| own_oid_of(*key)).collect(),
        }
    }
}

/// Whether a writer bursts during a read trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Load {
    /// The reader alone.
    Quiet,
    /// [`BURST_WRITERS`] writer adding shapes back to back.
    Burst,
}

/// The registry and the baseline, built once.
pub struct Fixture {
    registry: ShapeRegistry,
    /// The next key a burst writer adds (beyond the fixture's keys; shared by both sides).
    next_burst_key: AtomicU64,
    /// The most keys below which bursts add to the registry.
    burst_keys_end: u64,
    baseline_path: PathBuf,
    /// Abandons the buffered half on close (see [`abandoning_config`]).
    abandon: Arc<AtomicBool>,
    /// Behind a mutex only to be shareable (`Connection` is not `Sync`); uncontended.
    baseline: Mutex<Connection>,
    flushed: Keys,
    buffered: Keys,
    all: Keys,
    directory: PathBuf,
}

impl Fixture {
    /// Builds the fixture with `shapes` shapes under `parent`.
    ///
    /// # Errors
    /// The registry or SQLite failed, or a check of the fixture failed.
    pub fn build(parent: &Path, shapes: u64) -> anyhow::Result<Self> {
        let directory = parent.join(format!("read-fixture-{shapes}"));
        let half = shapes / 2;
        let abandon = Arc::new(AtomicBool::new(false));
        // Room for the fixture and every burst, so that no add ever starts the flusher.
        let burst_keys_end = shapes + BURST_SHAPES_MAX;
        let config = StoreConfig {
            flush_interval_ms: 3_600_000,
            batch_ops_max: usize::try_from(burst_keys_end + 1)?,
            buffer_ops_max: (burst_keys_end + 1).max(1_000_000),
            buffer_bytes_max: 8 << 30,
            ..abandoning_config(SyncPolicy::None, &abandon)
        };
        let (registry, _report) = ShapeRegistry::open(directory.join("store"), config)
            .with_context(|| format!("cannot open a registry in {}", directory.display()))?;
        let body = shape_body();
        for key in 0..half {
            registry.add_shape(shape_of(key, &body))?;
        }
        registry.flush()?;
        // `flush` may leave a request behind that would start one more batch with the next
        // add; the idle flusher clears it within a few ms.
        std::thread::sleep(Duration::from_millis(100));
        for key in half..shapes {
            registry.add_shape(shape_of(key, &body))?;
        }
        let stats = registry.stats();
        ensure!(
            stats.pending_ops == shapes - half,
            "the second half should be buffered: {} ops pending",
            stats.pending_ops
        );

        let baseline_path = directory.join("baseline.db");
        let mut writer = open_baseline(&baseline_path, Synchronous::Normal)?;
        let mut batch = Vec::with_capacity(BUILD_BATCH);
        for key in 0..shapes {
            batch.push(shape_of(key, &body));
            if batch.len() == BUILD_BATCH || key + 1 == shapes {
                insert_sorted(&mut writer, &batch)?;
                batch.clear();
            }
        }
        writer.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
        drop(writer);
        let baseline =
            Connection::open_with_flags(&baseline_path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        baseline.execute_batch(&format!("PRAGMA cache_size = -{READ_CACHE_KIB};"))?;

        let fixture = Self {
            registry,
            next_burst_key: AtomicU64::new(shapes),
            burst_keys_end,
            baseline_path,
            abandon,
            baseline: Mutex::new(baseline),
            flushed: Keys::random_in(0..half, 1),
            buffered: Keys::random_in(half..shapes, 2),
            all: Keys::random_in(0..shapes, 3),
            directory,
        };
        for source in [Source::Buffered, Source::Flushed, Source::Sqlite] {
            for op in [
                ReadOp::HandleForShape,
                ReadOp::ShapeForHandle,
                ReadOp::HandlesForRelations,
            ] {
                let mut lookup = fixture.lookup(op, source);
                for index in 0..16 {
                    ensure!(
                        lookup(index)?,
                        "{op:?} on {source:?} missed key {index} of the fixture"
                    );
                }
            }
        }
        let listed: Vec<String> = fixture
            .registry
            .list_shapes()
            .take(LIST_SHAPES)
            .map(|shape| shape.map(|shape| shape.handle))
            .collect::<Result<_, _>>()?;
        let mut expected: Vec<String> = (0..shapes).map(handle_of).collect();
        expected.sort_unstable();
        expected.truncate(LIST_SHAPES);
        ensure!(
            listed == expected,
            "list_shapes did not list the fixture's first handles in order"
        );
        let baseline_listed = fixture.sqlite_list()?;
        ensure!(
            baseline_listed == expected.len(),
            "the baseline listed {baseline_listed} shapes"
        );
        Ok(fixture)
    }

    /// One listing of the first [`LIST_SHAPES`] shapes by the baseline; returns how many.
    fn sqlite_list(&self) -> anyhow::Result<usize> {
        let baseline = self.baseline.lock().map_err(|_| anyhow!("poisoned"))?;
        let mut statement = baseline.prepare_cached(
            "SELECT handle, comparable, hash, snapshot, relations, shape FROM shapes \
             ORDER BY handle LIMIT ?1",
        )?;
        let mut rows = statement.query([LIST_SHAPES as i64])?;
        let mut listed = 0;
        while let Some(row) = rows.next()? {
            std::hint::black_box(shape_row(row)?);
            listed += 1;
        }
        Ok(listed)
    }

    /// One `list_shapes` trial: one thread lists the first [`LIST_SHAPES`] shapes (from walbuf,
    /// or with `sqlite` from the baseline) over and over; ops count shapes.
    ///
    /// # Errors
    /// A listing failed or came up short.
    pub fn list_trial(&self, sqlite: bool, duration: Duration) -> anyhow::Result<Trial> {
        let mut trial = closed_loop(1, duration, |_| {
            Ok(move || {
                let listed = if sqlite {
                    self.sqlite_list()?
                } else {
                    let mut listed = 0;
                    for shape in self.registry.list_shapes().take(LIST_SHAPES) {
                        std::hint::black_box(shape?);
                        listed += 1;
                    }
                    listed
                };
                ensure!(listed == LIST_SHAPES, "listed {listed} shapes");
                Ok(())
            })
        })?;
        trial.ops *= LIST_SHAPES as u64;
        Ok(trial)
    }

    /// One trial of `handle_for_shape` under `load`: from walbuf's buffered half, or with
    /// `sqlite` from the baseline, while (`Load::Burst`) [`BURST_WRITERS`] writer adds new
    /// shapes to the same store.
    ///
    /// # Errors
    /// A lookup or a write failed, or the bursts outgrew the room the fixture left them.
    pub fn burst_trial(
        &self,
        sqlite: bool,
        load: Load,
        duration: Duration,
    ) -> anyhow::Result<Trial> {
        let source = if sqlite {
            Source::Sqlite
        } else {
            Source::Buffered
        };
        if load == Load::Quiet {
            return self.trial(ReadOp::HandleForShape, source, duration);
        }
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let writers: Vec<_> = (0..BURST_WRITERS)
                .map(|_| scope.spawn(|| self.burst(sqlite, &stop)))
                .collect();
            let trial = self.trial(ReadOp::HandleForShape, source, duration);
            stop.store(true, Ordering::Relaxed);
            let mut added = 0;
            for writer in writers {
                added += writer
                    .join()
                    .map_err(|_| anyhow!("a burst writer panicked"))??;
            }
            ensure!(added > 0, "the burst writer added nothing");
            trial
        })
    }

    /// A burst writer: adds new shapes until `stop` (to the registry, or with `sqlite` to the
    /// baseline on a connection of its own); returns how many.
    fn burst(&self, sqlite: bool, stop: &AtomicBool) -> anyhow::Result<u64> {
        let body = shape_body();
        let mut added = 0;
        if sqlite {
            let mut writer = open_baseline(&self.baseline_path, Synchronous::Normal)?;
            while !stop.load(Ordering::Relaxed) {
                let first = self
                    .next_burst_key
                    .fetch_add(BURST_BATCH as u64, Ordering::Relaxed);
                let batch: Vec<_> = (first..first + BURST_BATCH as u64)
                    .map(|key| shape_of(key, &body))
                    .collect();
                insert_unsorted(&mut writer, &batch)?;
                added += BURST_BATCH as u64;
            }
            return Ok(added);
        }
        while !stop.load(Ordering::Relaxed) {
            let key = self.next_burst_key.fetch_add(1, Ordering::Relaxed);
            ensure!(
                key < self.burst_keys_end,
                "the bursts added more than {BURST_SHAPES_MAX} shapes: use fewer or shorter trials"
            );
            self.registry.add_shape(shape_of(key, &body))?;
            added += 1;
        }
        Ok(added)
    }

    /// A lookup of key `index` (modulo the set) returning whether it found the shape.
    fn lookup(
        &self,
        op: ReadOp,
        source: Source,
    ) -> Box<dyn FnMut(usize) -> anyhow::Result<bool> + '_> {
        let keys = match source {
            Source::Buffered => &self.buffered,
            Source::Flushed => &self.flushed,
            Source::Sqlite => &self.all,
        };
        let registry = &self.registry;
        let baseline = &self.baseline;
        match (op, source) {
            (ReadOp::HandleForShape, Source::Sqlite) => Box::new(move |index| {
                let comparable = &keys.comparables[index % KEYS_PER_SET];
                let baseline = baseline.lock().map_err(|_| anyhow!("poisoned"))?;
                let mut statement =
                    baseline.prepare_cached("SELECT handle FROM shapes WHERE comparable = ?1")?;
                let mut rows = statement.query([comparable])?;
                let handle: Option<String> = match rows.next()? {
                    Some(row) => Some(row.get(0)?),
                    None => None,
                };
                Ok(handle.is_some())
            }),
            (ReadOp::ShapeForHandle, Source::Sqlite) => Box::new(move |index| {
                let handle = &keys.handles[index % KEYS_PER_SET];
                let baseline = baseline.lock().map_err(|_| anyhow!("poisoned"))?;
                let mut statement = baseline.prepare_cached(
                    "SELECT handle, comparable, hash, snapshot, relations, shape FROM shapes \
                     WHERE handle = ?1",
                )?;
                let mut rows = statement.query([handle])?;
                let row: Option<ShapeRow> = match rows.next()? {
                    Some(row) => Some(shape_row(row)?),
                    None => None,
                };
                Ok(std::hint::black_box(row).is_some())
            }),
            (ReadOp::HandlesForRelations, Source::Sqlite) => Box::new(move |index| {
                let oid = keys.oids[index % KEYS_PER_SET];
                let baseline = baseline.lock().map_err(|_| anyhow!("poisoned"))?;
                let mut statement =
                    baseline.prepare_cached("SELECT handle FROM relations WHERE oid = ?1")?;
                let handles = statement
                    .query_map([oid], |row| row.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<String>>>()?;
                Ok(!handles.is_empty())
            }),
            (ReadOp::HandleForShape, _) => Box::new(move |index| {
                let comparable = &keys.comparables[index % KEYS_PER_SET];
                Ok(registry.handle_for_shape(comparable)?.is_some())
            }),
            (ReadOp::ShapeForHandle, _) => Box::new(move |index| {
                let handle = &keys.handles[index % KEYS_PER_SET];
                Ok(std::hint::black_box(registry.shape_for_handle(handle)?).is_some())
            }),
            (ReadOp::HandlesForRelations, _) => Box::new(move |index| {
                let oid = keys.oids[index % KEYS_PER_SET];
                Ok(!registry.handles_for_relations(&[oid])?.is_empty())
            }),
        }
    }

    /// One trial: one thread looks up keys of `source` with `op` for `duration`.
    ///
    /// # Errors
    /// A lookup failed or missed.
    pub fn trial(&self, op: ReadOp, source: Source, duration: Duration) -> anyhow::Result<Trial> {
        closed_loop(1, duration, |_| {
            let mut lookup = self.lookup(op, source);
            let mut index = 0;
            Ok(move || {
                index += 1;
                ensure!(lookup(index)?, "{op:?} on {source:?} missed a shape");
                Ok(())
            })
        })
    }

    /// Closes the registry (abandoning the buffered half) and deletes the files.
    ///
    /// # Errors
    /// Closing or deleting failed.
    pub fn remove(self) -> anyhow::Result<()> {
        drop(self.baseline);
        self.abandon.store(true, Ordering::Relaxed);
        self.registry.close().context("close the registry")?;
        drop(self.registry);
        super::driver::remove_tree(&self.directory)
    }
}
