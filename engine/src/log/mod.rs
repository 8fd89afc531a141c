//! The segmented, checksummed, memory-mapped op log.
//!
//! # Write path
//! 1. [`Log::append`] takes the append lock for a few instructions: it assigns the next op key
//!    and reserves the record's bytes in the active segment (rotating first if they do not
//!    fit), so that log order is op-key order.
//! 2. Outside the lock it computes the checksum and copies the record into the mapping.
//! 3. It *publishes* the record: the published op key advances over every record whose copy
//!    is complete, in key order (a slow copy holds back later keys).
//! 4. Under [`SyncPolicy::Sync`] it then waits until the sync thread has made its key durable.
//!    The sync thread runs one sync at a time over everything published since the last one
//!    (group commit), wakes exactly the waiters it covered, and starts the next sync at once.
//!    Under `Periodic`/`None` the append returns once published.
//!
//! Each sync first writes a *sync mark*: a record saying which offset of the segment the
//! previous sync made durable. Recovery uses the marks to tell a torn tail (never durable) from
//! damage to durable bytes (see `walbuf_recovery::scanner`).
//!
//! # Rotation
//! When a record does not fit, the appender (holding the append lock) waits for every record
//! of the full segment to be copied, syncs the rest of it, then installs the next segment
//! (prepared ahead on a background thread: allocated, mapped and prefaulted): writes and syncs
//! its header, renames it to `<first op key>.wal`, and fsyncs the directory. Only then can a
//! record be placed in it; so on disk, a segment that has a successor is durable as a whole.
//! Under `Periodic`/`None`, so that this sync finds little left to write, the sync thread
//! writes back each chunk of the segment as appends complete it (a data sync that claims
//! nothing), and segments are prepared for few large syncs (see
//! [`crate::storage::SyncPattern`]).
//!
//! # Failure
//! A failed sync, allocation, rename or directory sync *poisons* the log: every later append
//! and sync returns [`Error::Poisoned`]. Reopening runs recovery, which finds what is really on
//! disk.

mod config;
mod waiters;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::{Condvar, Mutex, MutexGuard};
use walbuf_recovery::format::{
    MAX_USER_KIND, RecordKind, SEGMENT_HEADER_LEN, SYNC_MARK_PAYLOAD_LEN, SegmentHeader,
    encode_record_header, encode_record_trailer, frame_len, padded_frame_len, record_checksum,
};
use walbuf_recovery::naming::{PREPARED_SUFFIX, is_prepared_file_name, segment_file_name};
use walbuf_recovery::{Options as RecoveryOptions, Report, SegmentSource, Sink};

pub use config::{Config, SyncPolicy};
use waiters::Waiters;

use crate::error::{Error, Result};
use crate::storage::{FsStorage, SegmentFile, Storage, SyncPattern};

/// Under `Periodic`/`None`, whenever appends complete another chunk of a segment (a sixteenth
/// of it, at most this many bytes), the sync thread writes back (syncs, without claiming
/// anything durable) the published part of the segment, up to a multiple of
/// [`WRITEBACK_ALIGN_BYTES_MAX`] (or of the chunk, if smaller). Nobody else would sync the
/// segment before it is full, and the rotation would then have to write all of it while every
/// appender waits; this way the disk writes the segment while it fills, and the rotation finds
/// little left to write.
const WRITEBACK_CHUNK_BYTES_MAX: u64 = 4 << 20;

/// Writeback stops at a multiple of this: the largest page-cache folio (2 MiB). Writing back
/// part of a folio would clean and write-protect the whole of it, and the appends that follow
/// would dirty it again, so it would be written twice.
const WRITEBACK_ALIGN_BYTES_MAX: u64 = 2 << 20;

/// The writeback chunk and alignment for segments of `segment_size_bytes` (a multiple of 4096).
fn writeback_geometry(segment_size_bytes: u64) -> (u64, u64) {
    let chunk = (segment_size_bytes / 16 / 4096 * 4096).clamp(4096, WRITEBACK_CHUNK_BYTES_MAX);
    (chunk, chunk.min(WRITEBACK_ALIGN_BYTES_MAX))
}

/// Counters and positions of a log, for monitoring and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Records appended since open.
    pub appends: u64,
    /// Bytes appended since open (record frames, padding included).
    pub bytes_appended: u64,
    /// Syncs of segment data performed since open (group commit makes this far smaller than
    /// `appends` under concurrency).
    pub syncs: u64,
    /// Sync marks written since open.
    pub sync_marks: u64,
    /// Syncs that first waited for more writers to ask for them (group commit's gathering,
    /// see [`Config::group_commit_wait_us`]).
    pub gathers: u64,
    /// Segment rotations since open.
    pub rotations: u64,
    /// Segments deleted by [`Log::truncate_before`] since open.
    pub segments_retired: u64,
    /// Segment files in the log now.
    pub segments: u64,
    /// Bytes the segment files occupy (their preallocated size).
    pub log_bytes: u64,
    /// The last op key assigned (0 if none ever).
    pub last_op_key: u64,
    /// Every op key at or below this has been copied into the log.
    pub published_op_key: u64,
    /// Every op key at or below this is durable.
    pub durable_op_key: u64,
}

/// The op log over storage `S` (real files by default).
pub struct Log<S: Storage = FsStorage> {
    shared: Arc<Shared<S>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl<S: Storage> std::fmt::Debug for Log<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// A segment that records can be placed in.
struct OpenSegment<F> {
    file: F,
    name: String,
    sequence: u64,
    salt: u64,
}

/// A segment file the log keeps (oldest first), for retirement.
#[derive(Debug, Clone)]
struct LiveSegment {
    name: String,
    first_op_key: u64,
    capacity_bytes: u64,
}

/// State behind the append lock.
struct AppendState<F> {
    active: Arc<OpenSegment<F>>,
    next_op_key: u64,
    live: VecDeque<LiveSegment>,
    /// Highest offset of the active segment already claimed by a sync mark.
    marked_offset: u64,
}

/// The published prefix: every record up to `key` is completely copied; `key`'s record ends
/// at `end` in `segment`. Records copied out of order wait in `pending`.
struct Published<F> {
    key: u64,
    segment: Arc<OpenSegment<F>>,
    end: u64,
    pending: BTreeMap<u64, (Arc<OpenSegment<F>>, u64)>,
}

/// What is known durable: every byte of segment `sequence` below `offset`, and every op key
/// up to `key`.
#[derive(Debug, Clone, Copy)]
struct Durable {
    sequence: u64,
    offset: u64,
    key: u64,
}

/// Wakeup state of the sync thread.
#[derive(Debug, Default)]
struct Signal {
    /// An appender (or `sync()`) waits for durability.
    requested: bool,
    /// Requests for durability since the last sync started.
    requests: usize,
    /// The sync thread gathers requests: wake it once `requests` reaches `gather_target`.
    gathering: bool,
    /// See `gathering`.
    gather_target: usize,
    /// Appends completed another chunk of the segment: write it back (see
    /// [`WRITEBACK_CHUNK_BYTES_MAX`]).
    writeback: bool,
    /// The sync thread is asleep and must be notified.
    sleeping: bool,
    /// Close: sync everything, then exit.
    stop: bool,
}

/// The segment being prepared ahead of need.
struct PrepareSlot<F> {
    ready: Option<(F, String)>,
    failed: Option<Error>,
    /// The prepare thread is creating a segment: a rotation waits for it rather than
    /// creating a second one (on a nearly full disk, the second could fail for want of the
    /// space the first is taking).
    preparing: bool,
    stop: bool,
}

#[derive(Debug, Default)]
struct Counters {
    appends: AtomicU64,
    bytes_appended: AtomicU64,
    syncs: AtomicU64,
    sync_marks: AtomicU64,
    gathers: AtomicU64,
    rotations: AtomicU64,
    segments_retired: AtomicU64,
}

struct Shared<S: Storage> {
    storage: S,
    config: Config,
    append: Mutex<AppendState<S::Segment>>,
    published: Mutex<Published<S::Segment>>,
    published_key: AtomicU64,
    publish_waiters: Waiters,
    /// Serializes syncs of segment data (sync thread, rotation, close).
    sync_lock: Mutex<()>,
    /// Leaf lock: taken last, held for a copy.
    durable: Mutex<Durable>,
    durable_key: AtomicU64,
    durable_waiters: Waiters,
    signal: Mutex<Signal>,
    signal_changed: Condvar,
    prepare: Mutex<PrepareSlot<S::Segment>>,
    prepare_changed: Condvar,
    prepared_count: AtomicU64,
    poison: OnceLock<Error>,
    closed: AtomicBool,
    sync_thread_exited: AtomicBool,
    counters: Counters,
    /// See [`WRITEBACK_CHUNK_BYTES_MAX`].
    writeback_chunk_bytes: u64,
    writeback_align_bytes: u64,
}

impl Log<FsStorage> {
    /// Opens (or creates) the log in `directory` with `config`, taking the directory lock,
    /// running recovery in the default mode, and handing every record to `sink`.
    ///
    /// # Errors
    /// See [`Log::open_with`].
    pub fn open_dir(
        directory: impl AsRef<std::path::Path>,
        config: Config,
        sink: &mut dyn Sink,
    ) -> Result<(Self, Report)> {
        let storage = FsStorage::open(directory)?;
        Self::open_with(storage, config, RecoveryOptions::default(), sink)
    }
}

/// Adapts a [`Storage`] to the recovery crate's reader.
struct StorageSource<'a, S: Storage>(&'a S);

impl<S: Storage> SegmentSource for StorageSource<'_, S> {
    fn file_names(&self) -> walbuf_recovery::Result<Vec<String>> {
        self.0.list().map_err(|source| walbuf_recovery::Error::Io {
            path: self.0.describe(""),
            source,
        })
    }

    fn read_file(&self, name: &str) -> walbuf_recovery::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.read_file_into(name, &mut bytes)?;
        Ok(bytes)
    }

    fn read_file_into(&self, name: &str, bytes: &mut Vec<u8>) -> walbuf_recovery::Result<()> {
        self.0
            .read_into(name, bytes)
            .map_err(|source| walbuf_recovery::Error::Io {
                path: self.0.describe(name),
                source,
            })
    }
}

impl<S: Storage> Log<S> {
    /// Opens the log kept in `storage`: deletes half-prepared segment files, runs recovery
    /// (every record above `recovery.watermark` goes to `sink`, in op-key order), erases a cut
    /// tail, deletes segments a point-in-time recovery discarded, makes the recovered prefix
    /// durable, and continues appending after it (in a new segment when the watermark is past
    /// the log's end).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`]; [`Error::Recovery`] for an anomaly the mode does not
    /// tolerate; [`Error::Io`]/[`Error::DiskFull`] for file failures.
    pub fn open_with(
        storage: S,
        config: Config,
        recovery: RecoveryOptions,
        sink: &mut dyn Sink,
    ) -> Result<(Self, Report)> {
        config.validate()?;
        let recovery = RecoveryOptions {
            max_record_bytes: config.max_record_bytes,
            ..recovery
        };
        let names = storage
            .list()
            .map_err(|source| Error::io("list log directory", storage.describe(""), source))?;
        for name in names.iter().filter(|name| is_prepared_file_name(name)) {
            storage.remove(name).map_err(|source| {
                Error::io("remove prepared segment", storage.describe(name), source)
            })?;
        }
        let report = walbuf_recovery::replay(&StorageSource(&storage), recovery, sink)?;
        for name in &report.discarded_segments {
            tracing::warn!(segment = %name, "point-in-time recovery discards segment");
            storage.remove(name).map_err(|source| {
                Error::io("remove discarded segment", storage.describe(name), source)
            })?;
        }
        if let Some(cut) = &report.cut {
            tracing::warn!(segment = %cut.segment, offset = cut.offset, len_bytes = cut.len_bytes, "cutting log tail");
            let capacity = report
                .segments
                .iter()
                .find(|segment| segment.name == cut.segment)
                .map_or(0, |segment| segment.capacity_bytes);
            storage
                .erase_tail(&cut.segment, cut.offset, capacity)
                .map_err(|source| {
                    Error::io("erase torn tail", storage.describe(&cut.segment), source)
                })?;
        }
        // Always, not only after a remove: a process crash between a rotation's rename and its
        // directory sync leaves the last segment's name in the page cache only, and appends
        // this log acknowledges into that segment would be lost with it at a power cut.
        storage
            .sync_directory()
            .map_err(|source| Error::io("sync directory", storage.describe(""), source))?;

        let live: VecDeque<LiveSegment> = report
            .segments
            .iter()
            .filter(|segment| segment.kept)
            .map(|segment| LiveSegment {
                name: segment.name.clone(),
                first_op_key: segment.first_op_key,
                capacity_bytes: segment.capacity_bytes,
            })
            .collect();
        let last = report.last_kept_segment().cloned();
        let next_op_key = report.next_op_key;
        let last_op_key = next_op_key - 1;

        let (active, durable, marked_offset, live) = match last {
            Some(last)
                if last
                    .last_op_key
                    .map_or(last.first_op_key, |key| key.saturating_add(1))
                    == next_op_key
                    && last.valid_end + padded_frame_len(0) <= last.capacity_bytes =>
            {
                let file = open_recovered(&storage, &last)?;
                let salt = header_salt(&storage, &last.name)?;
                let active = Arc::new(OpenSegment {
                    file,
                    name: last.name.clone(),
                    sequence: last.sequence,
                    salt,
                });
                let durable = Durable {
                    sequence: last.sequence,
                    offset: last.valid_end,
                    key: last_op_key,
                };
                (
                    active,
                    durable,
                    last.durable_mark.map_or(0, |mark| mark.offset),
                    live,
                )
            }
            last => {
                if let Some(last) = &last {
                    // The last kept segment's records must be durable before the new segment
                    // (named after them) makes them look complete.
                    open_recovered(&storage, last)?;
                }
                let sequence = last.map_or(1, |last| last.sequence.saturating_add(1));
                let file = create_prepared(&storage, &config, 0)?;
                let active = install_segment(&storage, &config, file, sequence, next_op_key)?;
                let mut live = live;
                live.push_back(LiveSegment {
                    name: active.name.clone(),
                    first_op_key: next_op_key,
                    capacity_bytes: config.segment_size_bytes,
                });
                let durable = Durable {
                    sequence,
                    offset: SEGMENT_HEADER_LEN,
                    key: last_op_key,
                };
                (active, durable, 0, live)
            }
        };

        let shared = Arc::new(Shared {
            storage,
            published: Mutex::new(Published {
                key: last_op_key,
                segment: Arc::clone(&active),
                end: durable.offset,
                pending: BTreeMap::new(),
            }),
            append: Mutex::new(AppendState {
                active,
                next_op_key,
                live,
                marked_offset,
            }),
            published_key: AtomicU64::new(last_op_key),
            publish_waiters: Waiters::default(),
            sync_lock: Mutex::new(()),
            durable: Mutex::new(durable),
            durable_key: AtomicU64::new(last_op_key),
            durable_waiters: Waiters::default(),
            signal: Mutex::new(Signal::default()),
            signal_changed: Condvar::new(),
            prepare: Mutex::new(PrepareSlot {
                ready: None,
                failed: None,
                preparing: false,
                stop: false,
            }),
            prepare_changed: Condvar::new(),
            prepared_count: AtomicU64::new(1),
            poison: OnceLock::new(),
            closed: AtomicBool::new(false),
            sync_thread_exited: AtomicBool::new(false),
            counters: Counters::default(),
            writeback_chunk_bytes: writeback_geometry(config.segment_size_bytes).0,
            writeback_align_bytes: writeback_geometry(config.segment_size_bytes).1,
            config,
        });
        let mut threads = Vec::new();
        let sync_shared = Arc::clone(&shared);
        threads.push(
            std::thread::Builder::new()
                .name("walbuf-sync".into())
                .spawn(move || {
                    sync_shared.run_sync_thread();
                    sync_shared.sync_thread_exited.store(true, Ordering::SeqCst);
                    sync_shared.durable_waiters.wake_all();
                })
                .map_err(|source| {
                    Error::io("spawn sync thread", shared.storage.describe(""), source)
                })?,
        );
        if shared.config.prepare_ahead {
            let prepare_shared = Arc::clone(&shared);
            threads.push(
                std::thread::Builder::new()
                    .name("walbuf-prepare".into())
                    .spawn(move || prepare_shared.run_prepare_thread())
                    .map_err(|source| {
                        Error::io("spawn prepare thread", shared.storage.describe(""), source)
                    })?,
            );
        }
        tracing::info!(
            segments = report.segments.len(),
            records = report.records_scanned,
            replayed = report.records_replayed,
            next_op_key,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "log opened"
        );
        Ok((
            Self {
                shared,
                threads: Mutex::new(threads),
            },
            report,
        ))
    }

    /// Appends one record of `kind` (1..=127) under the log's default sync policy and returns
    /// its op key once the policy is satisfied.
    ///
    /// # Errors
    /// [`Error::InvalidKind`], [`Error::RecordTooLarge`], [`Error::Poisoned`], [`Error::Closed`],
    /// or the failure of a rotation (which poisons the log).
    pub fn append(&self, kind: u8, payload: &[u8]) -> Result<u64> {
        self.append_with(kind, payload, self.shared.config.sync_policy)
    }

    /// Appends one record like [`Log::append`], acknowledging per `policy` instead of the
    /// log's default: `Sync` waits for durability, the others only for the record to be in
    /// the log (in order after every earlier key).
    ///
    /// # Errors
    /// As [`Log::append`].
    pub fn append_with(&self, kind: u8, payload: &[u8], policy: SyncPolicy) -> Result<u64> {
        if kind == 0 || kind > MAX_USER_KIND {
            return Err(Error::InvalidKind { kind });
        }
        let op_key = self.shared.write_record(RecordKind::Op(kind), payload)?;
        self.shared.acknowledge(op_key, policy)?;
        Ok(op_key)
    }

    /// Appends one record of `kind` (1..=127) and returns its op key as soon as the record is
    /// in the log in order after every earlier key (published), without waiting for it to be
    /// durable. Callers that need durability then call [`Log::wait_durable`]: splitting the two
    /// lets a caller assign op keys inside its own critical section and wait outside it.
    ///
    /// # Errors
    /// As [`Log::append`].
    pub fn append_published(&self, kind: u8, payload: &[u8]) -> Result<u64> {
        self.append_with(kind, payload, SyncPolicy::None)
    }

    /// Waits until every record up to `op_key` is durable (requesting a sync if none is
    /// under way).
    ///
    /// # Errors
    /// [`Error::Poisoned`] if a sync fails, [`Error::Closed`].
    pub fn wait_durable(&self, op_key: u64) -> Result<()> {
        self.shared.acknowledge(op_key, SyncPolicy::Sync)
    }

    /// The highest op key such that it and every key below it are completely in the log
    /// (visible to a scan of the page cache, not necessarily durable).
    #[must_use]
    pub fn published_op_key(&self) -> u64 {
        self.shared.published_key.load(Ordering::SeqCst)
    }

    /// The highest op key known durable: it and every key below it survive a power loss.
    #[must_use]
    pub fn durable_op_key(&self) -> u64 {
        self.shared.durable_key.load(Ordering::SeqCst)
    }

    /// Makes every record appended before this call durable (whatever the sync policy).
    ///
    /// # Errors
    /// [`Error::Poisoned`] if a sync fails (now or before), [`Error::Closed`].
    pub fn sync(&self) -> Result<()> {
        self.shared.check_open()?;
        let target = self.shared.append.lock().next_op_key - 1;
        self.shared.acknowledge(target, SyncPolicy::Sync)
    }

    /// Deletes every segment whose records all have op keys below `op_key` (never the active
    /// segment), then fsyncs the directory. Returns how many segments were deleted.
    ///
    /// # Errors
    /// A delete or the directory sync failed (the log stays usable: a left-over segment is
    /// only retired again later).
    pub fn truncate_before(&self, op_key: u64) -> Result<usize> {
        let retired: Vec<LiveSegment> = {
            let mut append = self.shared.append.lock();
            let mut retired = Vec::new();
            while append.live.len() >= 2 && append.live[1].first_op_key <= op_key {
                if let Some(segment) = append.live.pop_front() {
                    retired.push(segment);
                }
            }
            retired
        };
        let storage = &self.shared.storage;
        for segment in &retired {
            storage.remove(&segment.name).map_err(|source| {
                Error::io("delete segment", storage.describe(&segment.name), source)
            })?;
            tracing::debug!(segment = %segment.name, "retired segment");
        }
        if !retired.is_empty() {
            storage
                .sync_directory()
                .map_err(|source| Error::io("sync directory", storage.describe(""), source))?;
            self.shared
                .counters
                .segments_retired
                .fetch_add(retired.len() as u64, Ordering::Relaxed);
        }
        Ok(retired.len())
    }

    /// Current counters and positions.
    #[must_use]
    pub fn stats(&self) -> Stats {
        let shared = &self.shared;
        let (last_op_key, segments, log_bytes) = {
            let append = shared.append.lock();
            (
                append.next_op_key - 1,
                append.live.len() as u64,
                append
                    .live
                    .iter()
                    .map(|segment| segment.capacity_bytes)
                    .sum(),
            )
        };
        let counters = &shared.counters;
        Stats {
            appends: counters.appends.load(Ordering::Relaxed),
            bytes_appended: counters.bytes_appended.load(Ordering::Relaxed),
            syncs: counters.syncs.load(Ordering::Relaxed),
            sync_marks: counters.sync_marks.load(Ordering::Relaxed),
            gathers: counters.gathers.load(Ordering::Relaxed),
            rotations: counters.rotations.load(Ordering::Relaxed),
            segments_retired: counters.segments_retired.load(Ordering::Relaxed),
            segments,
            log_bytes,
            last_op_key,
            published_op_key: shared.published_key.load(Ordering::SeqCst),
            durable_op_key: shared.durable_key.load(Ordering::SeqCst),
        }
    }

    /// The configuration the log runs with.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The storage the log writes to.
    #[must_use]
    pub fn storage(&self) -> &S {
        &self.shared.storage
    }

    /// The error that poisoned the log, if any.
    #[must_use]
    pub fn poisoned(&self) -> Option<Error> {
        self.shared.poison.get().cloned()
    }

    /// Makes everything appended durable, writes a last sync mark, and stops the background
    /// threads. Appends after this fail with [`Error::Closed`].
    ///
    /// # Errors
    /// The final sync failed, or the log was poisoned.
    pub fn close(&self) -> Result<()> {
        if self.shared.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        {
            let mut signal = self.shared.signal.lock();
            signal.stop = true;
            self.shared.signal_changed.notify_all();
        }
        {
            let mut prepare = self.shared.prepare.lock();
            prepare.stop = true;
            self.shared.prepare_changed.notify_all();
        }
        for thread in self.threads.lock().drain(..) {
            let _ = thread.join();
        }
        self.shared.publish_waiters.wake_all();
        self.shared.durable_waiters.wake_all();
        if let Some((_, name)) = self.shared.prepare.lock().ready.take() {
            let _ = self.shared.storage.remove(&name);
        }
        match self.shared.poison.get() {
            Some(cause) => Err(Error::Poisoned {
                cause: Box::new(cause.clone()),
            }),
            None => Ok(()),
        }
    }
}

impl<S: Storage> Drop for Log<S> {
    fn drop(&mut self) {
        if let Err(error) = self.close() {
            tracing::error!(%error, "closing the log failed");
        }
    }
}

/// Reads the salt of an existing segment's header.
/// Opens the last kept segment after recovery and syncs its recovered prefix: it may be only
/// in the page cache (written under a weaker policy before a process crash), and must be
/// durable before anything appended after it is acknowledged as durable.
fn open_recovered<S: Storage>(
    storage: &S,
    last: &walbuf_recovery::replay::SegmentSummary,
) -> Result<S::Segment> {
    let file = storage
        .open(&last.name, last.capacity_bytes, last.valid_end)
        .map_err(|source| Error::io("open segment", storage.describe(&last.name), source))?;
    file.sync(0, last.valid_end).map_err(|source| {
        Error::io(
            "sync recovered segment",
            storage.describe(&last.name),
            source,
        )
    })?;
    Ok(file)
}

fn header_salt<S: Storage>(storage: &S, name: &str) -> Result<u64> {
    let bytes = storage
        .read_prefix(name, SEGMENT_HEADER_LEN as usize)
        .map_err(|source| Error::io("read segment header", storage.describe(name), source))?;
    let header = SegmentHeader::decode(&bytes).map_err(|problem| {
        Error::from(walbuf_recovery::Error::BadHeader {
            segment: name.to_owned(),
            problem,
        })
    })?;
    Ok(header.salt)
}

/// How segments are synced under `policy`. A log whose default is `Periodic`/`None` may still
/// sync small ranges (`Log::sync`, `Log::wait_durable`, appends with `Sync`): they stay correct,
/// each just costs a little more.
fn sync_pattern(policy: SyncPolicy) -> SyncPattern {
    match policy {
        SyncPolicy::Sync => SyncPattern::Frequent,
        SyncPolicy::Periodic { .. } | SyncPolicy::None => SyncPattern::Rare,
    }
}

/// Creates an allocated, mapped segment under a temporary name.
fn create_prepared<S: Storage>(
    storage: &S,
    config: &Config,
    number: u64,
) -> Result<(S::Segment, String)> {
    let name = format!(
        "next-{number:06}-{:016x}{PREPARED_SUFFIX}",
        rand::random::<u64>()
    );
    let file = storage
        .create_for(
            &name,
            config.segment_size_bytes,
            sync_pattern(config.sync_policy),
        )
        .map_err(|source| {
            Error::allocation(storage.describe(&name), config.segment_size_bytes, source)
        })?;
    Ok((file, name))
}

/// Turns a prepared file into segment `sequence` starting at `first_op_key`: header written
/// and synced, renamed to its final name, directory synced.
fn install_segment<S: Storage>(
    storage: &S,
    config: &Config,
    (file, temporary_name): (S::Segment, String),
    sequence: u64,
    first_op_key: u64,
) -> Result<Arc<OpenSegment<S::Segment>>> {
    let salt = loop {
        let salt = rand::random::<u64>();
        if salt != 0 {
            break salt;
        }
    };
    let header = SegmentHeader {
        sequence,
        first_op_key,
        salt,
        capacity_bytes: config.segment_size_bytes,
    };
    let name = segment_file_name(first_op_key);
    let region = file
        .reserve(SEGMENT_HEADER_LEN)
        .ok_or(Error::InvalidConfig {
            field: "segment_size_bytes",
            problem: "too small for a header",
        })?;
    file.write(region, &[&header.encode()]);
    file.sync(0, SEGMENT_HEADER_LEN).map_err(|source| {
        Error::io(
            "sync segment header",
            storage.describe(&temporary_name),
            source,
        )
    })?;
    storage
        .rename(&temporary_name, &name)
        .map_err(|source| Error::io("rename segment", storage.describe(&name), source))?;
    storage
        .sync_directory()
        .map_err(|source| Error::io("sync directory", storage.describe(""), source))?;
    tracing::debug!(segment = %name, sequence, op_key = first_op_key, "segment installed");
    Ok(Arc::new(OpenSegment {
        file,
        name,
        sequence,
        salt,
    }))
}

impl<S: Storage> Shared<S> {
    fn check_open(&self) -> Result<()> {
        if let Some(cause) = self.poison.get() {
            return Err(Error::Poisoned {
                cause: Box::new(cause.clone()),
            });
        }
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Records the first failure and wakes everyone; returns the error to report.
    fn poison(&self, error: Error) -> Error {
        if self.poison.set(error.clone()).is_ok() {
            tracing::error!(%error, "log poisoned: refusing further writes until reopened");
        }
        {
            let mut signal = self.signal.lock();
            signal.requested = true;
            self.signal_changed.notify_all();
        }
        self.publish_waiters.wake_all();
        self.durable_waiters.wake_all();
        Error::Poisoned {
            cause: Box::new(self.poison.get().cloned().unwrap_or(error)),
        }
    }

    fn is_failed(&self) -> bool {
        self.poison.get().is_some()
    }

    /// Steps 1–3 of the write path: reserve, copy, publish.
    fn write_record(&self, kind: RecordKind, payload: &[u8]) -> Result<u64> {
        let frame = frame_len(payload.len());
        if frame > u64::from(self.config.max_record_bytes) {
            return Err(Error::RecordTooLarge {
                len_bytes: frame,
                max_bytes: u64::from(self.config.max_record_bytes),
            });
        }
        let padded = padded_frame_len(payload.len());
        let (op_key, segment, region) = {
            let mut append = self.append.lock();
            self.check_open()?;
            let region = match append.active.file.reserve(padded) {
                Some(region) => region,
                None => {
                    self.rotate(&mut append)
                        .map_err(|error| self.poison(error))?;
                    append
                        .active
                        .file
                        .reserve(padded)
                        .ok_or(Error::RecordTooLarge {
                            len_bytes: frame,
                            max_bytes: u64::from(self.config.max_record_bytes),
                        })?
                }
            };
            let op_key = append.next_op_key;
            append.next_op_key += 1;
            (op_key, Arc::clone(&append.active), region)
        };
        let (region_offset, end) = (region.offset(), region.end());
        let header = encode_record_header(kind, op_key, payload.len());
        let checksum = record_checksum(segment.salt, &header, payload);
        let (trailer, trailer_len) = encode_record_trailer(checksum, payload.len());
        segment
            .file
            .write(region, &[&header, payload, &trailer[..trailer_len]]);
        self.counters.appends.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_appended
            .fetch_add(padded, Ordering::Relaxed);
        self.publish(op_key, &segment, end);
        if region_offset / self.writeback_chunk_bytes != end / self.writeback_chunk_bytes
            && !self.config.sync_policy.waits_for_durability()
        {
            self.request_writeback();
        }
        Ok(op_key)
    }

    /// Asks the sync thread to write back what is published (waking it if it sleeps).
    fn request_writeback(&self) {
        let mut signal = self.signal.lock();
        signal.writeback = true;
        if signal.sleeping {
            self.signal_changed.notify_one();
        }
    }

    /// Asks the sync thread for a sync (waking it if it sleeps, or if it gathers requests
    /// and this one completes the group).
    fn request_sync(&self) {
        let mut signal = self.signal.lock();
        signal.requested = true;
        signal.requests += 1;
        if signal.sleeping || (signal.gathering && signal.requests >= signal.gather_target) {
            self.signal_changed.notify_one();
        }
    }

    /// Marks `op_key`'s record as completely copied and advances the published prefix.
    fn publish(&self, op_key: u64, segment: &Arc<OpenSegment<S::Segment>>, end: u64) {
        let mut published = self.published.lock();
        if op_key != published.key + 1 {
            published.pending.insert(op_key, (Arc::clone(segment), end));
            return;
        }
        published.key = op_key;
        published.end = end;
        if !Arc::ptr_eq(&published.segment, segment) {
            published.segment = Arc::clone(segment);
        }
        loop {
            let next = published.key + 1;
            let Some((segment, end)) = published.pending.remove(&next) else {
                break;
            };
            published.key = next;
            published.segment = segment;
            published.end = end;
        }
        let key = published.key;
        self.published_key.store(key, Ordering::SeqCst);
        drop(published);
        self.publish_waiters.wake_up_to(key);
    }

    /// Step 4: waits until `op_key` is published (and, under `Sync`, durable).
    fn acknowledge(&self, op_key: u64, policy: SyncPolicy) -> Result<()> {
        // Publishing depends on no thread but the writers themselves: only failure stops it.
        if !self
            .publish_waiters
            .wait(op_key, &self.published_key, || self.is_failed())
        {
            self.check_open()?;
        }
        if !policy.waits_for_durability() || self.durable_key.load(Ordering::SeqCst) >= op_key {
            return Ok(());
        }
        self.request_sync();
        let give_up = || self.is_failed() || self.sync_thread_exited.load(Ordering::SeqCst);
        if self
            .durable_waiters
            .wait(op_key, &self.durable_key, give_up)
        {
            return Ok(());
        }
        self.check_open()?;
        Err(Error::Closed)
    }

    /// Rotation: called with the append lock held when the active segment is full.
    fn rotate(&self, append: &mut AppendState<S::Segment>) -> Result<()> {
        let started = Instant::now();
        let last_key = append.next_op_key - 1;
        // Every record reserved in the full segment must be copied before it is synced.
        if !self
            .publish_waiters
            .wait(last_key, &self.published_key, || self.is_failed())
        {
            self.check_open()?;
        }
        let old = Arc::clone(&append.active);
        let prepared = self.take_prepared()?;
        {
            let _sync = self.sync_lock.lock();
            let durable = *self.durable.lock();
            if durable.sequence == old.sequence {
                let capacity = old.file.capacity();
                old.file
                    .sync(durable.offset, capacity - durable.offset)
                    .map_err(|source| {
                        Error::io("sync segment", self.storage.describe(&old.name), source)
                    })?;
                self.counters.syncs.fetch_add(1, Ordering::Relaxed);
            }
            let new = install_segment(
                &self.storage,
                &self.config,
                prepared,
                old.sequence + 1,
                append.next_op_key,
            )?;
            *self.durable.lock() = Durable {
                sequence: new.sequence,
                offset: SEGMENT_HEADER_LEN,
                key: last_key,
            };
            self.durable_key.fetch_max(last_key, Ordering::SeqCst);
            append.live.push_back(LiveSegment {
                name: new.name.clone(),
                first_op_key: append.next_op_key,
                capacity_bytes: self.config.segment_size_bytes,
            });
            append.active = new;
            append.marked_offset = 0;
        }
        self.durable_waiters.wake_up_to(last_key);
        self.counters.rotations.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            op_key = append.next_op_key,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "rotated to a new segment"
        );
        Ok(())
    }

    /// The next segment file: the one prepared ahead if ready, else created now.
    fn take_prepared(&self) -> Result<(S::Segment, String)> {
        let taken = {
            let mut prepare = self.prepare.lock();
            while prepare.preparing && !prepare.stop {
                self.prepare_changed.wait(&mut prepare);
            }
            let taken = prepare.ready.take();
            prepare.failed = None;
            self.prepare_changed.notify_all();
            taken
        };
        match taken {
            Some(prepared) => Ok(prepared),
            None => create_prepared(
                &self.storage,
                &self.config,
                self.prepared_count.fetch_add(1, Ordering::Relaxed),
            ),
        }
    }

    /// The prepare thread: keeps one allocated, mapped segment ready for the next rotation.
    fn run_prepare_thread(&self) {
        loop {
            {
                let mut prepare = self.prepare.lock();
                while !prepare.stop && (prepare.ready.is_some() || prepare.failed.is_some()) {
                    self.prepare_changed.wait(&mut prepare);
                }
                if prepare.stop {
                    return;
                }
                prepare.preparing = true;
            }
            let number = self.prepared_count.fetch_add(1, Ordering::Relaxed);
            let result = create_prepared(&self.storage, &self.config, number);
            let mut prepare = self.prepare.lock();
            prepare.preparing = false;
            self.prepare_changed.notify_all();
            match result {
                Ok(prepared) if prepare.stop => {
                    let _ = self.storage.remove(&prepared.1);
                    return;
                }
                Ok(prepared) => prepare.ready = Some(prepared),
                Err(error) => {
                    tracing::warn!(%error, "preparing the next segment failed; rotation will retry");
                    prepare.failed = Some(error);
                }
            }
        }
    }

    /// The sync thread: syncs when an appender waits for durability, every interval under
    /// `Periodic`, once more after the log goes idle (a final sync mark), and at close.
    fn run_sync_thread(&self) {
        let periodic = match self.config.sync_policy {
            SyncPolicy::Periodic { interval_ms } => {
                Some(std::time::Duration::from_millis(interval_ms))
            }
            SyncPolicy::Sync | SyncPolicy::None => None,
        };
        let mut next_periodic = periodic.map(|interval| Instant::now() + interval);
        let mut idle_mark_due: Option<Instant> = None;
        // How far the published segment (by sequence) has been written back.
        let mut written_back = (0, 0);
        let mut gather = Gather::new(self.config.group_commit_wait_us);
        loop {
            let (stop, writeback_only) = {
                let mut signal = self.signal.lock();
                loop {
                    if signal.stop || self.is_failed() {
                        break (signal.stop, false);
                    }
                    let now = Instant::now();
                    if signal.requested {
                        signal.requested = false;
                        self.gather_requests(&mut signal, &gather);
                        signal.requests = 0;
                        break (false, false);
                    }
                    if next_periodic.is_some_and(|due| due <= now)
                        || idle_mark_due.is_some_and(|due| due <= now)
                    {
                        signal.requests = 0;
                        break (false, false);
                    }
                    if signal.writeback {
                        signal.writeback = false;
                        break (false, true);
                    }
                    let deadline = [next_periodic, idle_mark_due].into_iter().flatten().min();
                    signal.sleeping = true;
                    match deadline {
                        Some(deadline) => {
                            let _ = self.signal_changed.wait_until(&mut signal, deadline);
                        }
                        None => self.signal_changed.wait(&mut signal),
                    }
                    signal.sleeping = false;
                }
            };
            if self.is_failed() {
                self.durable_waiters.wake_all();
                if stop {
                    return;
                }
                // Wait for close without spinning.
                let mut signal = self.signal.lock();
                while !signal.stop {
                    signal.sleeping = true;
                    self.signal_changed.wait(&mut signal);
                    signal.sleeping = false;
                }
                return;
            }
            if stop {
                // Close: make everything durable, then mark it durable too.
                if self.sync_once().is_ok() {
                    let _ = self.sync_once();
                }
                return;
            }
            if writeback_only {
                let _ = self.write_back(&mut written_back);
                continue;
            }
            let now = Instant::now();
            if next_periodic.is_some_and(|due| due <= now) {
                next_periodic = periodic.map(|interval| now + interval);
            }
            let started = Instant::now();
            if let Ok(outcome) = self.sync_once() {
                gather.synced(&outcome, started.elapsed());
                idle_mark_due = outcome
                    .advanced
                    .then(|| Instant::now() + self.config.idle_mark_delay());
            }
        }
    }

    /// Group commit's gathering: when the last sync woke several writers, waits (with the
    /// signal lock released) until as many have asked for the next sync, or the gathering
    /// bound passes, or the log stops or fails.
    fn gather_requests(&self, signal: &mut MutexGuard<'_, Signal>, gather: &Gather) {
        let Some(wait) = gather.wait(signal.requests) else {
            return;
        };
        let deadline = Instant::now() + wait;
        signal.gather_target = gather.target;
        signal.gathering = true;
        self.counters.gathers.fetch_add(1, Ordering::Relaxed);
        while signal.requests < gather.target && !signal.stop && !self.is_failed() {
            if self.signal_changed.wait_until(signal, deadline).timed_out() {
                break;
            }
        }
        signal.gathering = false;
    }

    /// Writes back the published part of the published segment from where the last call
    /// stopped (`written_back`: segment sequence and offset) to a multiple of the writeback
    /// alignment (see [`WRITEBACK_CHUNK_BYTES_MAX`]). A sync of the data only, which claims
    /// nothing: the durable offset moves only with [`Shared::sync_once`] and rotations. A
    /// failure poisons the log all the same (the kernel may report a lost write only once, so
    /// a later sync of the same range could succeed without the data).
    fn write_back(&self, written_back: &mut (u64, u64)) -> Result<()> {
        let (segment, end) = {
            let published = self.published.lock();
            (Arc::clone(&published.segment), published.end)
        };
        let target = end / self.writeback_align_bytes * self.writeback_align_bytes;
        let from = if written_back.0 == segment.sequence {
            written_back.1
        } else {
            0
        };
        if target <= from {
            return Ok(());
        }
        segment.file.sync(from, target - from).map_err(|source| {
            self.poison(Error::io(
                "write back segment",
                self.storage.describe(&segment.name),
                source,
            ))
        })?;
        self.counters.syncs.fetch_add(1, Ordering::Relaxed);
        *written_back = (segment.sequence, target);
        Ok(())
    }

    /// One sync: writes a sync mark claiming what the previous sync made durable, syncs every
    /// published record (and the mark), advances the durable key and wakes its waiters.
    /// Returns whether new records became durable (so that a later idle mark is worth it) and
    /// how many waiters it woke.
    fn sync_once(&self) -> Result<SyncOutcome> {
        // The mark is written under the append lock, so that a rotation (which holds it) can
        // never sync the segment while the mark is half written.
        let mark_end = {
            let mut append = self.append.lock();
            let durable = *self.durable.lock();
            if durable.sequence == append.active.sequence && durable.offset > append.marked_offset {
                let payload = durable.offset.to_le_bytes();
                let padded = padded_frame_len(SYNC_MARK_PAYLOAD_LEN);
                append.active.file.reserve(padded).map(|region| {
                    let end = region.end();
                    let header =
                        encode_record_header(RecordKind::SyncMark, durable.key, payload.len());
                    let checksum = record_checksum(append.active.salt, &header, &payload);
                    let (trailer, trailer_len) = encode_record_trailer(checksum, payload.len());
                    append
                        .active
                        .file
                        .write(region, &[&header, &payload, &trailer[..trailer_len]]);
                    append.marked_offset = durable.offset;
                    self.counters.sync_marks.fetch_add(1, Ordering::Relaxed);
                    (append.active.sequence, end)
                })
            } else {
                None
            }
        };
        let (key, segment, end) = {
            let published = self.published.lock();
            (published.key, Arc::clone(&published.segment), published.end)
        };
        let _sync = self.sync_lock.lock();
        let durable = *self.durable.lock();
        if segment.sequence < durable.sequence || (key <= durable.key && mark_end.is_none()) {
            // A rotation already made all of it durable, or there is nothing new.
            return Ok(SyncOutcome::default());
        }
        let sync_end = match mark_end {
            Some((sequence, mark_end)) if sequence == segment.sequence => end.max(mark_end),
            _ => end,
        };
        let from = durable.offset.min(sync_end);
        segment.file.sync(from, sync_end - from).map_err(|source| {
            self.poison(Error::io(
                "sync segment",
                self.storage.describe(&segment.name),
                source,
            ))
        })?;
        self.counters.syncs.fetch_add(1, Ordering::Relaxed);
        let advanced = key > durable.key;
        {
            let mut durable = self.durable.lock();
            durable.offset = durable.offset.max(end);
            durable.key = durable.key.max(key);
        }
        self.durable_key.fetch_max(key, Ordering::SeqCst);
        let woken = self.durable_waiters.wake_up_to(key);
        Ok(SyncOutcome { advanced, woken })
    }
}

/// What one [`Shared::sync_once`] did.
#[derive(Debug, Default, Clone, Copy)]
struct SyncOutcome {
    /// New records became durable.
    advanced: bool,
    /// Waiters it woke.
    woken: usize,
}

/// The sync thread's memory for group commit's gathering (see
/// [`Config::group_commit_wait_us`]).
#[derive(Debug)]
struct Gather {
    /// The bound from the configuration; zero: never gather.
    wait_max: std::time::Duration,
    /// Waiters the last sync woke: about how many writers will ask for the next one.
    target: usize,
    /// A moving average of recent syncs' durations.
    sync_time: std::time::Duration,
}

impl Gather {
    fn new(wait_max_us: u64) -> Self {
        Self {
            wait_max: std::time::Duration::from_micros(wait_max_us),
            target: 0,
            sync_time: std::time::Duration::ZERO,
        }
    }

    /// How long to gather when `requests` have arrived, if at all: never for a lone writer,
    /// never once the group is complete, and at most half the recent sync time (waiting
    /// longer than that costs the writers already waiting more than a second sync would).
    fn wait(&self, requests: usize) -> Option<std::time::Duration> {
        if self.wait_max.is_zero() || self.target < 2 || requests >= self.target {
            return None;
        }
        Some(self.wait_max.min(self.sync_time / 2))
    }

    /// Learns from a sync that took `elapsed`.
    fn synced(&mut self, outcome: &SyncOutcome, elapsed: std::time::Duration) {
        if !outcome.advanced {
            return;
        }
        self.target = outcome.woken;
        self.sync_time = if self.sync_time.is_zero() {
            elapsed
        } else {
            (self.sync_time * 7 + elapsed) / 8
        };
    }
}
