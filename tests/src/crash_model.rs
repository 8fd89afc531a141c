//! The shape registry against the reference [`Model`] across crashes: a state machine whose
//! steps are registry writes, flushes, clean reopens, and crashes of the machine or the
//! process (with torn tails and corrupted durable bytes), run over a simulated log disk
//! ([`SimStorage`]) and a real SQLite file.
//!
//! A crash freezes what a crash at that moment would leave: first the log's image
//! ([`SimDisk::power_loss_image`] or [`SimDisk::process_crash_image`]), then SQLite's
//! committed state (`VACUUM INTO` a new file from a read-only connection — in that order, so
//! that SQLite is never *behind* the log image: a segment the flusher retires after the image
//! is still in it). The old store is closed (it only ever writes to the old disk and the old
//! database file) and a new one opens on the image and the copy. Recovery reports the op key
//! it resumes at; `p = next_op_key - 1` ops survived, and the state must be the model's after
//! exactly its first `p` accepted writes:
//! * under `SyncPolicy::Sync`, and after any process crash, `p` is every accepted write;
//! * otherwise `p` is at least what the log had made durable and what SQLite had applied
//!   before the crash, and at most what was accepted.
//!
//! The model is then rewound to `p` ([`Model::rewind`]) and the run goes on. See
//! [`CrashStep`] for the steps and `tests/tests/store_crash_model.rs` for the property.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use walbuf::recovery::Mode;
use walbuf::recovery::format::RECORD_ALIGN;
use walbuf::recovery::naming::parse_segment_file_name;
use walbuf::recovery::scanner::scan_segment;
use walbuf::shapes::{ShapeRegistry, ShapeSchema};
use walbuf::store::{RecoveryReport, Store, StoreConfig};
use walbuf::{Error, SyncPolicy};

use crate::model::{Model, Op, check_reads, check_sqlite, check_step, op_strategy};
use crate::sim::{DirectoryLoss, PowerLoss, SimDisk, SimStorage};

/// One step of the crash state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrashStep {
    /// A registry write or a flush (checked with [`check_step`]), or a clean close + reopen
    /// ([`Op::Reopen`]: nothing may be lost).
    Op(Op),
    /// The machine loses power: the log keeps what `loss` leaves of its unsynced bytes and
    /// directory operations (random choices from `seed`).
    PowerLoss {
        /// What happens to unsynced sectors and directory operations.
        loss: PowerLoss,
        /// Seed of the image's random choices.
        seed: u64,
    },
    /// The process dies: every written byte survives (nothing may be lost, under every
    /// policy).
    ProcessCrash,
    /// A power loss, then bytes past the durable point of the last segment garbled (a torn
    /// tail that was never durable): recovery cuts it, and the prefix rule holds.
    CorruptTail {
        /// What happens to unsynced sectors and directory operations.
        loss: PowerLoss,
        /// Seed of the image's random choices.
        seed: u64,
        /// Where past the durable point (modulo the room there).
        offset: u16,
        /// XORed into the byte (made non-zero).
        mask: u8,
    },
    /// The machine loses power in the middle of `op` (a write or a flush): at its
    /// `point`-th persistence point (counting both phases of every sync, sync mark, create,
    /// rename, directory sync, remove and tail erase from the step's start, on any thread —
    /// so inside rotations, flush-driven retirements and group commits), or after it if it
    /// has fewer. The op in flight may or may not survive.
    PowerLossDuring {
        /// The op in flight.
        op: Op,
        /// Which persistence point (from 0).
        point: u8,
        /// What happens to unsynced sectors and directory operations.
        loss: PowerLoss,
        /// Seed of the image's random choices.
        seed: u64,
    },
    /// A process crash, then one byte of a provably durable op record garbled (in a segment
    /// that has a successor, or below the last segment's durable mark): the default open
    /// refuses with [`Error::Recovery`] naming the segment, and a `PointInTime` open keeps
    /// exactly the ops before the damaged record (or what SQLite has, if more), and the run
    /// goes on from there. Without a durable record to damage, a plain process crash.
    CorruptDurable {
        /// Which durable record, and which byte of it (modulo their numbers).
        pick: u32,
        /// XORed into the byte (made non-zero).
        mask: u8,
    },
}

/// How a case is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashConfig {
    /// The log's sync policy.
    pub policy: SyncPolicy,
    /// The flusher's batch size (1 or 3: it flushes in the background between steps).
    pub batch_ops_max: usize,
    /// Segment size (small, so that runs rotate and retire).
    pub segment_size_bytes: u64,
    /// The log's idle mark delay (a long one leaves the last syncs unclaimed by a mark).
    pub idle_mark_ms: u64,
    /// Whether the next segment is prepared ahead on a background thread.
    pub prepare_ahead: bool,
}

impl CrashConfig {
    /// The store configuration: flushes only when asked or when `batch_ops_max` ops wait.
    #[must_use]
    pub fn store_config(&self) -> StoreConfig {
        let mut config = crate::model::Harness::config(self.policy, self.batch_ops_max);
        config.log.segment_size_bytes = self.segment_size_bytes;
        config.log.idle_mark_ms = self.idle_mark_ms;
        config.log.prepare_ahead = self.prepare_ahead;
        config
    }
}

/// What a run did (for the property's summary).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CrashCounts {
    /// Crashes of any kind.
    pub crashes: u64,
    /// Acknowledged writes the crashes lost (never under `Sync`).
    pub ops_lost: u64,
    /// Accepted writes a `PointInTime` recovery discarded after a corrupted durable record.
    pub ops_discarded: u64,
    /// Durable records corrupted (and refused by the default open).
    pub corruptions: u64,
    /// Torn tails garbled.
    pub torn_tails: u64,
    /// Power losses captured at a persistence point in the middle of an op.
    pub mid_op: u64,
}

/// A registry on a simulated log disk with a SQLite file in a scratch directory, its model,
/// and the steps that crash it.
#[derive(Debug)]
pub struct CrashHarness {
    directory: tempfile::TempDir,
    config: CrashConfig,
    epoch: u32,
    database: PathBuf,
    disk: SimDisk,
    registry: Option<ShapeRegistry<SimStorage>>,
    model: Model,
    counts: CrashCounts,
}

/// A scratch directory in memory when possible (SQLite's fsyncs are not under test here).
fn scratch_dir() -> Result<tempfile::TempDir, String> {
    tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .map_err(|error| format!("tempdir: {error}"))
}

fn remove_database(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(name));
    }
}

/// The index just past the last non-zero byte.
fn content_end(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rposition(|&byte| byte != 0)
        .map_or(0, |at| at as u64 + 1)
}

/// The last segment file of a disk (by op key), if any.
fn last_segment(disk: &SimDisk) -> Option<String> {
    disk.file_names()
        .into_iter()
        .filter_map(|name| parse_segment_file_name(&name).map(|key| (key, name)))
        .max()
        .map(|(_, name)| name)
}

/// A byte of a durable op record, chosen by `pick`: `(segment, offset, op key)`.
fn durable_byte(disk: &SimDisk, max_record_bytes: u32, pick: u32) -> Option<(String, u64, u64)> {
    let mut names: Vec<(u64, String)> = disk
        .file_names()
        .into_iter()
        .filter_map(|name| parse_segment_file_name(&name).map(|key| (key, name)))
        .collect();
    names.sort();
    let mut candidates = Vec::new();
    for (index, (_, name)) in names.iter().enumerate() {
        let Ok(bytes) = disk.read(name) else { continue };
        let Ok(scan) = scan_segment(&bytes, max_record_bytes) else {
            continue;
        };
        let durable_end = if index + 1 < names.len() {
            u64::MAX
        } else {
            scan.durable_mark.map_or(0, |mark| mark.offset)
        };
        for record in &scan.records {
            if record.end_offset() <= durable_end {
                // Every byte of the frame (header, payload, CRC), not the padding.
                let frame = walbuf::recovery::format::frame_len(record.payload.len());
                candidates.push((name.clone(), record.offset, frame, record.op_key));
            }
        }
    }
    if candidates.is_empty() {
        return None;
    }
    let (name, offset, frame, op_key) = candidates[pick as usize % candidates.len()].clone();
    Some((name, offset + u64::from(pick / 7) % frame, op_key))
}

impl CrashHarness {
    /// Opens a fresh registry on a new simulated disk.
    ///
    /// # Errors
    /// The open failed, or the fresh store is not empty.
    pub fn new(config: CrashConfig) -> Result<Self, String> {
        let directory = scratch_dir()?;
        let database = directory.path().join("walbuf-0.db");
        let storage = SimStorage::new();
        let disk = storage.disk();
        let (store, report) =
            Store::open_with(storage, &database, ShapeSchema, config.store_config())
                .map_err(|error| format!("open: {error}"))?;
        if report.next_op_key != 1 {
            return Err(format!("a fresh store starts at {}", report.next_op_key));
        }
        let harness = Self {
            directory,
            config,
            epoch: 0,
            database,
            disk,
            registry: Some(ShapeRegistry::new(store)),
            model: Model::new(),
            counts: CrashCounts::default(),
        };
        check_reads(harness.registry()?, &harness.model)?;
        Ok(harness)
    }

    fn registry(&self) -> Result<&ShapeRegistry<SimStorage>, String> {
        self.registry
            .as_ref()
            .ok_or_else(|| "the harness has no open registry".to_owned())
    }

    /// The model.
    #[must_use]
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// What the run did so far.
    #[must_use]
    pub fn counts(&self) -> CrashCounts {
        self.counts
    }

    /// Runs one step and checks the registry against the model.
    ///
    /// # Errors
    /// The first disagreement, described.
    pub fn step(&mut self, step: &CrashStep) -> Result<(), String> {
        match step {
            CrashStep::Op(Op::Reopen) => self.reopen(),
            CrashStep::Op(op) => {
                let registry = self
                    .registry
                    .as_ref()
                    .ok_or("the harness has no open registry")?;
                check_step(registry, &mut self.model, op)
            }
            CrashStep::PowerLoss { loss, seed } => {
                self.crash(Image::PowerLoss(*loss, *seed), |_, _| Ok(None))
            }
            CrashStep::ProcessCrash => self.crash(Image::ProcessCrash, |_, _| Ok(None)),
            CrashStep::PowerLossDuring {
                op,
                point,
                loss,
                seed,
            } => self.crash_during(op, *point, *loss, *seed),
            CrashStep::CorruptTail {
                loss,
                seed,
                offset,
                mask,
            } => {
                let (offset, mask) = (*offset, (*mask).max(1));
                self.crash(Image::PowerLoss(*loss, *seed), move |old, image| {
                    garble_tail(old, image, offset, mask)
                })
            }
            CrashStep::CorruptDurable { pick, mask } => {
                let max_record_bytes = self.config.store_config().log.max_record_bytes;
                let (pick, mask) = (*pick, (*mask).max(1));
                self.crash(Image::ProcessCrash, move |_, image| {
                    let Some((segment, offset, op_key)) =
                        durable_byte(image, max_record_bytes, pick)
                    else {
                        return Ok(None);
                    };
                    image
                        .corrupt(&segment, offset, mask)
                        .map_err(|error| format!("corrupt {segment}: {error}"))?;
                    Ok(Some(Damage::Durable { segment, op_key }))
                })
            }
        }
    }

    /// Closes the registry cleanly and opens it again on the same disk and database:
    /// nothing is lost, and every read agrees.
    ///
    /// # Errors
    /// The first problem, described.
    pub fn reopen(&mut self) -> Result<(), String> {
        if let Some(registry) = self.registry.take() {
            registry
                .close()
                .map_err(|error| format!("close: {error}"))?;
        }
        let (store, report) = Store::open_with(
            self.disk.storage(),
            &self.database,
            ShapeSchema,
            self.config.store_config(),
        )
        .map_err(|error| format!("reopen: {error}"))?;
        self.registry = Some(ShapeRegistry::new(store));
        let accepted = self.model.last_op_key();
        self.check_recovered(&report, accepted, accepted)
            .map_err(|problem| format!("after a clean reopen: {problem}"))
    }

    /// [`CrashStep::PowerLossDuring`]: a hook on the disk captures the log image and SQLite's
    /// committed state at the chosen persistence point (the disk is frozen while it runs).
    fn crash_during(
        &mut self,
        op: &Op,
        point: u8,
        loss: PowerLoss,
        seed: u64,
    ) -> Result<(), String> {
        if matches!(op, Op::Reopen) {
            return Err("PowerLossDuring needs a write or a flush".into());
        }
        let registry = self
            .registry
            .as_ref()
            .ok_or("the harness has no open registry")?;
        let before = self.model.last_op_key();
        let stats = registry.stats();
        let at_least = if self.config.policy == SyncPolicy::Sync {
            before
        } else {
            stats.log.durable_op_key.max(stats.applied_op_key)
        };
        self.epoch += 1;
        let database = self
            .directory
            .path()
            .join(format!("walbuf-{}.db", self.epoch));
        type Slot = Arc<Mutex<Option<Result<SimStorage, String>>>>;
        let slot: Slot = Arc::default();
        {
            let (slot, from, to) = (Arc::clone(&slot), self.database.clone(), database.clone());
            let mut rng = StdRng::seed_from_u64(seed);
            let mut seen = 0u8;
            self.disk.set_hook(move |_, snapshot| {
                seen = seen.saturating_add(1);
                if seen != point.saturating_add(1) {
                    return;
                }
                let log = snapshot.power_loss_image(loss, &mut rng);
                *slot.lock() = Some(snapshot_sqlite(&from, &to).map(|()| log));
            });
        }
        let outcome = check_step(registry, &mut self.model, op);
        self.disk.clear_hook();
        outcome?;
        let captured = slot.lock().take();
        let log = match captured {
            Some(log) => {
                self.counts.mid_op += 1;
                log?
            }
            None => {
                let log = self
                    .disk
                    .power_loss_image(loss, &mut StdRng::seed_from_u64(seed));
                snapshot_sqlite(&self.database, &database)?;
                log
            }
        };
        self.crash(
            Image::Captured {
                log,
                database,
                at_least,
                acknowledged: before,
            },
            |_, _| Ok(None),
        )
    }

    /// The crash itself: `image` is the log as the crash left it, `damage` garbles it
    /// further (given the old disk and the image's disk).
    fn crash(
        &mut self,
        how: Image,
        damage: impl FnOnce(&SimDisk, &SimDisk) -> Result<Option<Damage>, String>,
    ) -> Result<(), String> {
        self.counts.crashes += 1;
        let accepted = self.model.last_op_key();
        let registry = self
            .registry
            .take()
            .ok_or("the harness has no open registry")?;
        // Lower bounds, read before the image is built (both only grow): what the log had
        // made durable, and what SQLite had applied.
        let stats = registry.stats();
        let mut at_least = stats.log.durable_op_key.max(stats.applied_op_key);
        // Writes acknowledged before the crash (all accepted ones, unless it struck in the
        // middle of one).
        let mut acknowledged = accepted;
        let (image, database) = match how {
            Image::Captured {
                log,
                database,
                at_least: captured_at_least,
                acknowledged: captured_acknowledged,
            } => {
                at_least = captured_at_least;
                acknowledged = captured_acknowledged;
                (log, database)
            }
            Image::PowerLoss(..) | Image::ProcessCrash => {
                let (image, nothing_lost) = match how {
                    Image::PowerLoss(loss, seed) => (
                        self.disk
                            .power_loss_image(loss, &mut StdRng::seed_from_u64(seed)),
                        false,
                    ),
                    _ => (self.disk.process_crash_image(), true),
                };
                // SQLite's committed state, taken after the log image: never behind it.
                self.epoch += 1;
                let database = self
                    .directory
                    .path()
                    .join(format!("walbuf-{}.db", self.epoch));
                snapshot_sqlite(&self.database, &database)?;
                if self.config.policy == SyncPolicy::Sync || nothing_lost {
                    at_least = accepted;
                }
                (image, database)
            }
        };
        let image_disk = image.disk();
        let damage = damage(&self.disk, &image_disk)?;
        // The old store only ever writes to the old disk and the old database: close it.
        registry
            .close()
            .map_err(|error| format!("closing the crashed store: {error}"))?;
        drop(registry);
        remove_database(&self.database);
        self.database = database;
        self.disk = image_disk;
        let config = self.config.store_config();
        let report = match damage {
            None | Some(Damage::Tail) => {
                if damage.is_some() {
                    self.counts.torn_tails += 1;
                }
                let (store, report) =
                    Store::open_with(image.clone(), &self.database, ShapeSchema, config)
                        .map_err(|error| format!("open after the crash: {error}"))?;
                self.registry = Some(ShapeRegistry::new(store));
                report
            }
            Some(Damage::Durable { segment, op_key }) => {
                self.counts.corruptions += 1;
                match Store::open_with(image.clone(), &self.database, ShapeSchema, config.clone()) {
                    Ok(_) => {
                        return Err(format!(
                            "op key {op_key} in {segment} garbled below its durable point, \
                             and the default open accepted it"
                        ));
                    }
                    Err(Error::Recovery(error)) if error.to_string().contains(&segment) => {}
                    Err(error) => {
                        return Err(format!(
                            "op key {op_key} in {segment} garbled: the default open failed \
                             with {error} (a recovery error naming the segment was expected)"
                        ));
                    }
                }
                let point_in_time = StoreConfig {
                    recovery_mode: Mode::PointInTime,
                    ..config
                };
                let (store, report) =
                    Store::open_with(image.clone(), &self.database, ShapeSchema, point_in_time)
                        .map_err(|error| {
                            format!("PointInTime open after garbling op key {op_key}: {error}")
                        })?;
                self.registry = Some(ShapeRegistry::new(store));
                // The longest valid prefix: every op before the damaged record.
                let expected = report.watermark.max(op_key - 1);
                if report.next_op_key - 1 != expected {
                    return Err(format!(
                        "PointInTime after garbling op key {op_key} in {segment} resumed at \
                         op key {} (watermark {}), expected {}",
                        report.next_op_key,
                        report.watermark,
                        expected + 1
                    ));
                }
                self.counts.ops_discarded += accepted.saturating_sub(expected);
                return self
                    .resume(&report, expected.min(accepted), accepted)
                    .map_err(|problem| format!("after PointInTime recovery: {problem}"));
            }
        };
        self.resume(&report, at_least, accepted)
            .map_err(|problem| format!("after the crash: {problem}"))?;
        self.counts.ops_lost += acknowledged.saturating_sub(self.model.last_op_key());
        Ok(())
    }

    /// Checks a post-crash open: `at_least ≤ p ≤ accepted`, then rewinds the model to `p`
    /// and compares every read.
    fn resume(
        &mut self,
        report: &RecoveryReport,
        at_least: u64,
        accepted: u64,
    ) -> Result<(), String> {
        let recovered = report.next_op_key - 1;
        if recovered < at_least || recovered > accepted {
            return Err(format!(
                "recovered {recovered} ops (watermark {}, {} replayed), but at least \
                 {at_least} and at most {accepted} must survive",
                report.watermark, report.ops_replayed
            ));
        }
        self.model.rewind(recovered)?;
        self.check_recovered(report, recovered, recovered)
    }

    /// Checks an open that must have recovered between `at_least` and `at_most` ops, whose
    /// model is already that prefix: the report, the store's op keys, every read.
    fn check_recovered(
        &self,
        report: &RecoveryReport,
        at_least: u64,
        at_most: u64,
    ) -> Result<(), String> {
        let recovered = report.next_op_key - 1;
        if recovered < at_least || recovered > at_most {
            return Err(format!(
                "recovered {recovered} ops, expected {at_least}..={at_most}"
            ));
        }
        if recovered != self.model.last_op_key() {
            return Err(format!(
                "recovered {recovered} ops, the model holds {}",
                self.model.last_op_key()
            ));
        }
        if report.watermark + report.ops_replayed != recovered {
            return Err(format!(
                "watermark {} + {} replayed does not end at op key {recovered}",
                report.watermark, report.ops_replayed
            ));
        }
        let registry = self.registry()?;
        let last = registry.stats().last_op_key;
        if last != recovered {
            return Err(format!(
                "the reopened store's last op key is {last}, recovery resumed after {recovered}"
            ));
        }
        check_reads(registry, &self.model)
    }

    /// Flushes, compares SQLite, reopens cleanly and compares once more; then closes.
    ///
    /// # Errors
    /// The first disagreement, described.
    pub fn finish(mut self) -> Result<CrashCounts, String> {
        self.step(&CrashStep::Op(Op::Flush))?;
        self.reopen()?;
        let registry = self.registry()?;
        check_sqlite(registry, &self.model)?;
        registry
            .close()
            .map_err(|error| format!("close: {error}"))?;
        Ok(self.counts)
    }
}

/// The log image a crash leaves.
enum Image {
    /// [`SimDisk::power_loss_image`] with this loss and seed.
    PowerLoss(PowerLoss, u64),
    /// [`SimDisk::process_crash_image`].
    ProcessCrash,
    /// Captured already (by a hook): the log image, SQLite's committed state copied to
    /// `database`, and how many writes must have survived.
    Captured {
        log: SimStorage,
        database: PathBuf,
        at_least: u64,
        acknowledged: u64,
    },
}

/// What a crash step did to the image beyond the crash itself.
enum Damage {
    /// Bytes past the durable point garbled.
    Tail,
    /// A byte of the durable record with `op_key` in `segment` garbled.
    Durable { segment: String, op_key: u64 },
}

/// Garbles one byte of the image's last segment past the point the old disk had made durable
/// (read after the image was built, so at or past the durable point at the crash).
fn garble_tail(
    old: &SimDisk,
    image: &SimDisk,
    offset: u16,
    mask: u8,
) -> Result<Option<Damage>, String> {
    let Some(name) = last_segment(image) else {
        return Ok(None);
    };
    let bytes = image
        .read(&name)
        .map_err(|error| format!("read {name}: {error}"))?;
    let durable_end = match old.read_durable(&name) {
        Ok(durable) => content_end(&durable),
        // Gone from the old disk since (retired): nothing in it past its content.
        Err(_) => content_end(&bytes),
    };
    // Past the padding of the last durable record too.
    let from = durable_end.next_multiple_of(RECORD_ALIGN);
    let len = bytes.len() as u64;
    if from >= len {
        return Ok(None);
    }
    // Mostly right after the durable point, where a torn record would be.
    let room = (len - from).min(4096);
    let at = from + u64::from(offset) % room;
    image
        .corrupt(&name, at, mask)
        .map_err(|error| format!("corrupt {name}: {error}"))?;
    Ok(Some(Damage::Tail))
}

/// Copies SQLite's committed state at `from` to a new database `to`.
fn snapshot_sqlite(from: &Path, to: &Path) -> Result<(), String> {
    remove_database(to);
    let reader =
        rusqlite::Connection::open_with_flags(from, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|error| format!("read-only connection to SQLite: {error}"))?;
    reader
        .execute("VACUUM INTO ?1", [to.to_string_lossy().as_ref()])
        .map_err(|error| format!("VACUUM INTO (SQLite's committed state): {error}"))?;
    Ok(())
}

/// Runs `steps` on a fresh [`CrashHarness`], then [`CrashHarness::finish`].
///
/// # Errors
/// The first disagreement, with the step number.
pub fn run_crash_steps(steps: &[CrashStep], config: CrashConfig) -> Result<CrashCounts, String> {
    let mut harness = CrashHarness::new(config)?;
    for (index, step) in steps.iter().enumerate() {
        harness
            .step(step)
            .map_err(|problem| format!("step {index} ({step:?}): {problem}"))?;
    }
    harness
        .finish()
        .map_err(|problem| format!("at the end: {problem}"))
}

/// Power losses: every [`SectorLoss`](crate::sim::SectorLoss) with every in-order
/// [`DirectoryLoss`].
pub fn power_loss_strategy() -> impl Strategy<Value = PowerLoss> {
    proptest::sample::select(PowerLoss::combinations(&DirectoryLoss::IN_ORDER))
}

/// Steps: mostly writes and flushes (over [`op_strategy`]'s small alphabets), with clean
/// reopens, power losses, process crashes, torn tails and corrupted durable records.
pub fn crash_step_strategy() -> BoxedStrategy<CrashStep> {
    prop_oneof![
        40 => op_strategy(false).prop_map(CrashStep::Op),
        1 => Just(CrashStep::Op(Op::Reopen)),
        4 => (power_loss_strategy(), any::<u64>())
            .prop_map(|(loss, seed)| CrashStep::PowerLoss { loss, seed }),
        1 => Just(CrashStep::ProcessCrash),
        3 => (op_strategy(false), 0..24u8, power_loss_strategy(), any::<u64>()).prop_map(
            |(op, point, loss, seed)| CrashStep::PowerLossDuring {
                op,
                point,
                loss,
                seed
            }
        ),
        2 => (power_loss_strategy(), any::<u64>(), any::<u16>(), 1..=255u8).prop_map(
            |(loss, seed, offset, mask)| CrashStep::CorruptTail {
                loss,
                seed,
                offset,
                mask
            }
        ),
        1 => (any::<u32>(), 1..=255u8)
            .prop_map(|(pick, mask)| CrashStep::CorruptDurable { pick, mask }),
    ]
    .boxed()
}

/// Case configurations: every policy, background or explicit flushes, 4 or 16 KiB segments,
/// quick or never idle marks, with or without segments prepared ahead.
pub fn crash_config_strategy() -> impl Strategy<Value = CrashConfig> {
    (
        prop_oneof![
            2 => Just(SyncPolicy::Sync),
            2 => Just(SyncPolicy::None),
            1 => Just(SyncPolicy::Periodic { interval_ms: 2 }),
        ],
        prop_oneof![Just(1usize), Just(3), Just(5_000)],
        prop_oneof![Just(4096u64), Just(16 * 1024)],
        prop_oneof![Just(1u64), Just(3_600_000)],
        any::<bool>(),
    )
        .prop_map(
            |(policy, batch_ops_max, segment_size_bytes, idle_mark_ms, prepare_ahead)| {
                CrashConfig {
                    policy,
                    batch_ops_max,
                    segment_size_bytes,
                    idle_mark_ms,
                    prepare_ahead,
                }
            },
        )
}
