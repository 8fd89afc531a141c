//! `walbuf bench`: walbuf beside baselines measured in the same run, reported as ratios.
//!
//! Absolute numbers on a shared machine are noise; ratios to a baseline run moments before or
//! after are not. So every row is run several times *alternately* with its baseline (system,
//! baseline, then baseline, system, …), each trial for a fixed wall time under the same
//! closed-loop driver (each writer thread issues its next operation when the previous one is
//! acknowledged, and times each acknowledgement). A row reports the median and the spread
//! (min–max) over its trials, and the median of the per-pair ratios. Before each trial the
//! whole system is `sync`ed, so that no trial pays for another's writeback.
//!
//! # Output
//! A markdown table, or with `--json` one JSON object per line (progress goes to stderr):
//!
//! ```text
//! {"group":"log","system":"walbuf-log-sync","writers":8,"ops_per_s":61234.0,
//!  "ops_per_s_min":…,"ops_per_s_max":…,"p50_us":…,"p99_us":…,"p999_us":…,"max_us":…,
//!  "baseline":"fdatasync-per-append","baseline_writers":8,"ratio":…,"ratio_min":…,
//!  "ratio_max":…,"syncs":…,"syncs_per_s":…,"rotations":…,"appends_per_sync":…,
//!  "disk_kib_per_sync":…,
//!  "trials":5}
//! ```
//!
//! Keys: `ops_per_s*` acknowledged operations per second (median, slowest and fastest trial);
//! `p50_us`/`p99_us`/`p999_us`/`max_us` ack latency in µs (median over trials); `ratio*` this row's
//! ops/s ÷ its baseline's, per alternated pair (median, min, max); `syncs` data syncs per trial
//! and `syncs_per_s`; `rotations` segment rotations per trial (median; null for a baseline);
//! `appends_per_sync` over all trials; `disk_kib_per_sync` what the block
//! device wrote per sync (kernel sector counter: it shows write amplification, and includes
//! other writers on the same disk); `trials`. A baseline's own row has `baseline`, `ratio*`
//! null. `null` also means "not applicable" elsewhere (no syncs, no counter).
//!
//! # Plot
//! `--plot FILE` also writes the `ack` rows of the run as an SVG ([`plot`]): acknowledged ops/s
//! against writers, one line per system, both axes logarithmic.
//!
//! # Stable names
//! Group `log` (256-byte payloads, i.e. 280-byte frames; 64 MiB segments):
//!
//! | system | what | writers | baseline |
//! |---|---|---|---|
//! | `walbuf-log-sync` | `Log::append`, `SyncPolicy::Sync` (group commit) | 1, 8, 64 | `fdatasync-per-append` (1, 8, 8) |
//! | `walbuf-log-periodic` | `SyncPolicy::Periodic { interval_ms: 10 }` | 1, 8 | `memcpy-crc32` (same); 1 writer again against `disk-write-limit` |
//! | `walbuf-log-none` | `SyncPolicy::None` | 1, 8 | `memcpy-crc32` (same); 1 writer again against `disk-write-limit` |
//! | `walbuf-log-none-1seg` | `SyncPolicy::None`, 40 ms trials: inside the first segment, no rotation | 1 | `memcpy-crc32` (same, 40 ms) |
//! | `fdatasync-per-append` | `pwrite` 256 bytes + `fdatasync`, threads share one file | 1, 8 | – |
//! | `memcpy-crc32` | encode + CRC32 + copy of the same frame into a private buffer | 1, 8 | – |
//! | `disk-write-limit` | 1 MiB `pwrite`s around a pre-written file, `fdatasync` every 64 MiB and at the end; bytes / 280 = appends the disk can take | 1 | – |
//!
//! `fdatasync-per-append` runs with at most 8 threads: the 64-writer `Sync` row is compared
//! with the 8-thread figure. See [`raw`] for how the baselines are set up.
//!
//! Group `ack` (the shape workload: `add_shape` of a 300-byte shape, 32-byte comparable,
//! 2 relations, random handles; see [`ack_rows`]), 1, 8 and 64 writers, every row against
//! `sqlite-1txn-full` at the same writer count:
//!
//! | system | what |
//! |---|---|
//! | `walbuf-sync` / `walbuf-periodic` / `walbuf-none` | `ShapeRegistry::add_shape` under `Sync` / `Periodic { interval_ms: 10 }` / `None` |
//! | `sqlite-1txn-full` / `sqlite-1txn-normal` | one SQLite transaction per op, WAL, `synchronous=FULL` / `NORMAL` |
//! | `sqlite-batch100` / `sqlite-batch1000` | writers hand ops to one batching thread (≤ 100 / 1 000 per transaction, FULL), acked on commit (8 and 64 writers) |
//! | `reference-logoff` | the reference design: the same registry with its log in memory ([`reference`]: no files, no syncs; `SyncPolicy::None`), same flusher — what durability costs |
//!
//! One more row puts `walbuf-periodic` ×1 against `reference-logoff` ×1 (alternated pairs: the
//! "within 25% of the log-off reference" target); `reference-logoff` ×1 then has one line, its
//! row against `sqlite-1txn-full`.
//!
//! `syncs` counts log syncs for walbuf and commits for SQLite; `appends_per_sync` ops per sync
//! or commit.
//!
//! Group `flush` ([`flush_rows`]), ops/s reaching SQLite; `syncs` counts batches:
//!
//! | system | what | baseline |
//! |---|---|---|
//! | `walbuf-flush` | the flusher under overload: one writer adds shapes as fast as backpressure lets it, competing for the CPU | `sqlite-batch5000-sorted` (SQLite's defaults), `sqlite-batch5000-tuned` (walbuf's flusher settings) |
//! | `walbuf-flush-drain` | the flusher draining a filled buffer (a store reopened with the ops in its log), default settings | `sqlite-drain5000-tuned`: the same ops into a copy of the same database, batched by hand with the same settings |
//! | `walbuf-flush-drain-batch500` | … with 500-op batches | `sqlite-drain500-tuned` |
//! | `walbuf-flush-drain-unsorted` | … coalesced but written in op order | `sqlite-drain5000-tuned-unsorted` |
//! | `walbuf-flush-drain-each-op` | … neither coalesced nor sorted | `sqlite-drain5000-tuned-unsorted` |
//! | `walbuf-flush-drain-autocheckpoint` | … with SQLite's automatic checkpoints instead of the flusher's | `sqlite-drain5000-autocheckpoint` |
//! | `walbuf-flush-drain-churn` | the churn workload (after every 4th add, the shape added 2 ops before is removed: ops that cancel within a batch), default settings | `sqlite-drain5000-churn`: each op applied on its own, in order |
//! | `walbuf-flush-drain-churn-each-op` | … neither coalesced nor sorted | `sqlite-drain5000-churn` |
//!
//! After the targets, one line per lever says what walbuf's default buys (the default drain
//! row's median ÷ the lever row's), and what the same change buys hand-batched SQLite.
//!
//! Group `sustained` ([`sustained_rows`]): a long overload (60 s windows, at most 2 trials;
//! 5 s with `--quick`), one writer:
//!
//! | system | what | baseline |
//! |---|---|---|
//! | `walbuf-sustained` | a registry under `Periodic { interval_ms: 10 }`, default configuration, fed faster than SQLite takes it: ops/s reaching SQLite | `reference-flush`, `sqlite-batch5000-sustained` (one row each) |
//! | `reference-flush` | the reference design's flush as it ships: its schema (5 indexes on shapes, one covering the shape blob; UNIQUE(handle, oid) + 2 indexes on relations; a counter row updated per op), 100 ops per `BEGIN IMMEDIATE` transaction, back to back | – |
//! | `sqlite-batch5000-sustained` | `sqlite-batch5000-sorted` of the `flush` group over this group's window | – |
//!
//! `syncs` counts SQLite commits (batches). Keys only `walbuf-sustained` has (null
//! elsewhere): `peak_buffer_bytes` the most bytes the buffer held (largest over the trials),
//! `backpressure_percent` the share of the writer's time spent in `add_shape` calls that began
//! while the buffer was past its soft limit (throttled or waiting; median), `backpressure_waits`
//! writes that waited at the hard limit per trial (median), `acks_per_s` shapes acknowledged to
//! the writer per second (median; `ops_per_s` is what reached SQLite).
//!
//! Group `read` ([`read_rows`]), one reader thread, `shapes` in the fixture (1 M, 10 k with
//! `--quick`; half buffered, half flushed):
//!
//! | system | what | baseline |
//! |---|---|---|
//! | `walbuf-{handle_for_shape,shape_for_handle,handles_for_relations}-{buffered,flushed}` | a point read of a buffered / flushed shape | `sqlite-{handle_for_shape,shape_for_handle,handles_for_relations}` |
//! | `walbuf-list_shapes` | `list_shapes`, the first 1 000 shapes in handle order; ops = shapes listed, latency per listing | `sqlite-list_shapes` (`ORDER BY handle LIMIT 1000`) |
//! | `walbuf-handle_for_shape-buffered-burst` | buffered `handle_for_shape` while a writer thread adds shapes | `walbuf-handle_for_shape-buffered-quiet` (no writer) |
//! | `sqlite-handle_for_shape-burst` | the SQLite lookup while a writer on another connection commits shapes, 100 per transaction | `sqlite-handle_for_shape-quiet` |
//! | `walbuf-handle_for_shape-buffered-100k` | buffered `handle_for_shape` in a second fixture of 200 k shapes (100 k buffered: the size issue 6's read target names), full and `--quick` runs alike | `sqlite-handle_for_shape-100k` (the same fixture's SQLite lookup) |
//!
//! The burst rows' ratio is lookups/s under the burst ÷ without; the targets compare their
//! p99s.
//!
//! Group `recovery` ([`recovery_rows`]), no baseline: `walbuf-recovery-empty` (open after a
//! kill with nothing unflushed) and `walbuf-recovery` (`unflushed_ops` in the log);
//! `ops_per_s` is ops replayed per second of open, `open_ms` the open time.
//!
//! Group `engines` (`engines.rs`; built only with `--features compare`): the key–value schema
//! of `engine/examples/kv` on walbuf against fjall, redb and SQLite as a key–value table,
//! 16-byte keys and 256-byte values; each engine's durable setting is named in the system:
//!
//! | system | what | threads | baseline |
//! |---|---|---|---|
//! | `walbuf-kv-sync` / `redb-immediate` / `sqlite-kv-full` | one durable put per op: walbuf `SyncPolicy::Sync`; redb one `Durability::Immediate` transaction; SQLite one transaction, WAL, `synchronous=FULL` | 1, 8 | `fjall-syncdata` (`insert` + `persist(PersistMode::SyncData)`) |
//! | `walbuf-kv-batch100` / `redb-immediate-batch100` / `sqlite-kv-full-batch100` | 100 puts per durable commit (walbuf: 100 puts under `None`, then one log sync); ops = puts, latency per batch | 1 | `fjall-syncdata-batch100` (a `WriteBatch`, `durability(Some(SyncData))`) |
//! | `walbuf-kv-get` / `walbuf-kv-get-buffered` / `fjall-get` / `redb-get` | point read of a present key, 1 M keys (10 k with `--quick`); walbuf's all flushed / all buffered | 1 | `sqlite-kv-get` |
//! | `walbuf-kv-reopen` / `fjall-reopen` / `redb-reopen` / `sqlite-kv-reopen` | open after a child that wrote 100 k keys (10 k) durably was SIGKILLed, and read its last key; `open_ms` | 1 | – |

mod ack_rows;
mod driver;
#[cfg(feature = "compare")]
mod engines;
mod flush_rows;
mod histogram;
mod log_rows;
mod plot;
mod raw;
mod read_rows;
mod recovery_rows;
mod reference;
mod report;
mod sustained_rows;
mod workload;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use walbuf::SyncPolicy;

use self::driver::{DiskCounter, Trial};
use self::raw::PrewrittenFile;
use self::read_rows::{Fixture, Load, ReadOp, Source};
use self::report::{
    Row, Spread, ack_table, flush_table, human_rate, markdown_table, read_table, recovery_table,
    sustained_table,
};
use self::workload::Synchronous;

/// Arguments of `walbuf bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// A short run (2 trials of 0.2 s per row; flush 2 × 2 s; 10 k shapes and ops in the read
    /// and recovery groups; about a minute and a half): rougher numbers.
    #[arg(long)]
    pub quick: bool,
    /// Print one JSON object per result row instead of a markdown table; progress and notes
    /// go to stderr.
    #[arg(long)]
    pub json: bool,
    /// Put the benchmark's files in a fresh subdirectory of DIR (deleted afterwards). Default:
    /// `bench-tmp/` in cargo's target directory (the work folder's disk), else the system's
    /// temporary directory.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Run only the rows of group GROUP (`log`, `ack`, `flush`, `sustained`, `read`,
    /// `recovery`; `engines` in a `--features compare` build), or whose system name contains
    /// GROUP (e.g. `sync`, `none`).
    #[arg(long, value_name = "GROUP")]
    pub filter: Option<String>,
    /// Trials per row, each alternated with a trial of its baseline [default: 5, or 2 with
    /// --quick].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub trials: Option<u32>,
    /// Wall time of each trial in milliseconds [default: 1000, or 200 with --quick].
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(10..))]
    pub trial_ms: Option<u64>,
    /// Also draw the `ack` rows as FILE (SVG): acknowledged ops/s against writers, one line
    /// per system, log scales. Needs the `ack` group in the run (e.g. `--filter ack`).
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Internal: be the child process of a `recovery` trial: add `--victim-ops` shapes to a
    /// registry in DIR, leave them unflushed, print `ready`, and wait to be killed.
    #[arg(long, value_name = "DIR", hide = true)]
    pub recovery_victim: Option<PathBuf>,
    /// Internal: ops the recovery victim adds.
    #[arg(long, value_name = "N", hide = true, default_value_t = 0)]
    pub victim_ops: u64,
    /// Internal: with `--recovery-victim`, be the child process of an `engines` reopen trial
    /// instead: write `--victim-ops` keys to ENGINE's database in DIR (feature `compare`).
    #[arg(long, value_name = "ENGINE", hide = true)]
    pub engine_victim: Option<String>,
}

/// Payload bytes of every record.
const PAYLOAD_BYTES: usize = 256;
/// Interval of the `Periodic` rows.
const PERIODIC_INTERVAL_MS: u64 = 10;
/// Trial length of `walbuf-log-none-1seg`: a 64 MiB segment holds 239 674 records of 280 bytes,
/// which takes more than 40 ms at up to 6 M appends/s.
const ONE_SEGMENT_TRIAL_MS: u64 = 40;
/// Most threads the `fdatasync-per-append` baseline runs with.
const SYNC_BASELINE_WRITERS_MAX: usize = 8;
/// Window of a `flush` trial (full run, `--quick`).
const FLUSH_WINDOW_MS: [u64; 2] = [10_000, 2_000];
/// Trials of a `flush` row in a full run (its trials are long).
const FLUSH_TRIALS: usize = 3;
/// Window of a `sustained` trial (full run, `--quick`).
const SUSTAINED_WINDOW_MS: [u64; 2] = [60_000, 5_000];
/// Most trials of a `sustained` row (each is a long window).
const SUSTAINED_TRIALS: usize = 2;
/// Writer threads overloading walbuf in the `sustained` group.
const SUSTAINED_WRITERS: usize = 1;
/// Shapes in the `read` fixture (full run, `--quick`).
const READ_SHAPES: [u64; 2] = [1_000_000, 10_000];
/// Shapes in the second `read` fixture, half of them buffered: the read target's 100 k
/// buffered shapes.
const TARGET_READ_SHAPES: u64 = 200_000;
/// Shapes already in SQLite and ops drained by the `walbuf-flush-drain*` rows (full run,
/// `--quick`).
const DRAIN_SHAPES: [(u64, u64); 2] = [(200_000, 50_000), (50_000, 25_000)];
/// Unflushed ops of the `recovery` rows beside the empty one (full run, `--quick`).
const RECOVERY_OPS: [&[u64]; 2] = [&[100_000, 1_000_000], &[10_000]];

/// The sync policy of the `Periodic` rows.
const PERIODIC: SyncPolicy = SyncPolicy::Periodic {
    interval_ms: PERIODIC_INTERVAL_MS,
};

/// What a row measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum System {
    /// walbuf's log under a sync policy.
    Log(SyncPolicy),
    /// walbuf's log under `SyncPolicy::None`, for a trial short enough to stay inside the
    /// first segment (no rotation): the append path alone.
    LogOneSegment,
    /// `pwrite` + `fdatasync` per append.
    FdatasyncPerAppend,
    /// Encode + checksum + copy into memory.
    MemcpyCrc32,
    /// `log`: the disk's sequential write bandwidth, in appends (see [`raw`]).
    DiskWriteLimit,
    /// `ack`: `add_shape` on a walbuf registry under a sync policy.
    AckWalbuf(SyncPolicy),
    /// `ack`: the reference design: a walbuf registry whose log is in memory (the log off).
    AckReference,
    /// `sustained`: walbuf overloaded (writers faster than SQLite) for a long window.
    SustainedWalbuf,
    /// `sustained`: the reference design's flush as it ships.
    SustainedReference,
    /// `sustained`: SQLite batched by hand, sorted 5 000-op batches.
    SustainedBatched,
    /// `ack`: SQLite, one transaction per op.
    AckOneTransaction(Synchronous),
    /// `ack`: SQLite, a batching thread committing up to this many ops per transaction.
    AckBatched(usize),
    /// `flush`: walbuf's flusher under overload.
    FlushWalbuf,
    /// `flush`: hand-batched SQLite, sorted batches (`true`: walbuf's flusher settings).
    FlushBatched { tuned: bool },
    /// `flush`: walbuf's flusher draining a filled buffer, with one lever changed.
    FlushDrain(flush_rows::Lever),
    /// `flush`: hand-batched SQLite draining the same ops with the same settings.
    FlushDrainBatched(flush_rows::Drain),
    /// `read`: a lookup.
    Read(ReadOp, Source),
    /// `read`: a listing of the first shapes, from walbuf or (`sqlite`) the baseline.
    ListShapes { sqlite: bool },
    /// `read`: buffered (or `sqlite`: baseline) `handle_for_shape` lookups under `load`.
    ReadUnderLoad { sqlite: bool, load: Load },
    /// `read`: buffered (or `sqlite`: baseline) `handle_for_shape` lookups in the fixture of
    /// [`TARGET_READ_SHAPES`].
    ReadAtTarget { sqlite: bool },
    /// `recovery`: open after a kill with this many unflushed ops.
    Recovery(u64),
    /// `engines`: an embedded engine running a key–value workload.
    #[cfg(feature = "compare")]
    Engine(engines::Case),
}

impl System {
    /// The stable name (see the module docs).
    fn name(self) -> &'static str {
        match self {
            Self::Log(SyncPolicy::Sync) => "walbuf-log-sync",
            Self::Log(SyncPolicy::Periodic { .. }) => "walbuf-log-periodic",
            Self::Log(SyncPolicy::None) => "walbuf-log-none",
            Self::LogOneSegment => "walbuf-log-none-1seg",
            Self::FdatasyncPerAppend => "fdatasync-per-append",
            Self::MemcpyCrc32 => "memcpy-crc32",
            Self::DiskWriteLimit => "disk-write-limit",
            Self::AckWalbuf(SyncPolicy::Sync) => "walbuf-sync",
            Self::AckWalbuf(SyncPolicy::Periodic { .. }) => "walbuf-periodic",
            Self::AckWalbuf(SyncPolicy::None) => "walbuf-none",
            Self::AckReference => "reference-logoff",
            Self::SustainedWalbuf => "walbuf-sustained",
            Self::SustainedReference => "reference-flush",
            Self::SustainedBatched => "sqlite-batch5000-sustained",
            Self::AckOneTransaction(Synchronous::Full) => "sqlite-1txn-full",
            Self::AckOneTransaction(Synchronous::Normal) => "sqlite-1txn-normal",
            Self::AckBatched(100) => "sqlite-batch100",
            Self::AckBatched(_) => "sqlite-batch1000",
            Self::FlushWalbuf => "walbuf-flush",
            Self::FlushBatched { tuned: false } => "sqlite-batch5000-sorted",
            Self::FlushBatched { tuned: true } => "sqlite-batch5000-tuned",
            Self::FlushDrain(lever) => lever.name(),
            Self::FlushDrainBatched(drain) => drain.baseline_name(),
            Self::Read(op, source) => match (op, source) {
                (ReadOp::HandleForShape, Source::Buffered) => "walbuf-handle_for_shape-buffered",
                (ReadOp::HandleForShape, Source::Flushed) => "walbuf-handle_for_shape-flushed",
                (ReadOp::HandleForShape, Source::Sqlite) => "sqlite-handle_for_shape",
                (ReadOp::ShapeForHandle, Source::Buffered) => "walbuf-shape_for_handle-buffered",
                (ReadOp::ShapeForHandle, Source::Flushed) => "walbuf-shape_for_handle-flushed",
                (ReadOp::ShapeForHandle, Source::Sqlite) => "sqlite-shape_for_handle",
                (ReadOp::HandlesForRelations, Source::Buffered) => {
                    "walbuf-handles_for_relations-buffered"
                }
                (ReadOp::HandlesForRelations, Source::Flushed) => {
                    "walbuf-handles_for_relations-flushed"
                }
                (ReadOp::HandlesForRelations, Source::Sqlite) => "sqlite-handles_for_relations",
            },
            Self::ListShapes { sqlite: false } => "walbuf-list_shapes",
            Self::ListShapes { sqlite: true } => "sqlite-list_shapes",
            Self::ReadUnderLoad { sqlite, load } => match (sqlite, load) {
                (false, Load::Quiet) => "walbuf-handle_for_shape-buffered-quiet",
                (false, Load::Burst) => "walbuf-handle_for_shape-buffered-burst",
                (true, Load::Quiet) => "sqlite-handle_for_shape-quiet",
                (true, Load::Burst) => "sqlite-handle_for_shape-burst",
            },
            Self::ReadAtTarget { sqlite: false } => "walbuf-handle_for_shape-buffered-100k",
            Self::ReadAtTarget { sqlite: true } => "sqlite-handle_for_shape-100k",
            Self::Recovery(0) => "walbuf-recovery-empty",
            Self::Recovery(_) => "walbuf-recovery",
            #[cfg(feature = "compare")]
            Self::Engine(case) => case.name(),
        }
    }
}

/// A system at a writer count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Subject {
    system: System,
    writers: usize,
}

impl Subject {
    fn new(system: System, writers: usize) -> Self {
        Self { system, writers }
    }
}

/// A row of the plan: a subject and the baseline it is alternated with (none for `recovery`).
#[derive(Debug, Clone, Copy)]
struct Planned {
    group: &'static str,
    subject: Subject,
    baseline: Option<Subject>,
    /// A fixed trial length for this row and its baseline, instead of `--trial-ms`.
    trial_ms: Option<u64>,
    /// At most this many trials (fewer than `--trials` for long rows).
    trials_max: Option<usize>,
}

impl Planned {
    fn new(group: &'static str, subject: Subject, baseline: Option<Subject>) -> Self {
        Self {
            group,
            subject,
            baseline,
            trial_ms: None,
            trials_max: None,
        }
    }
}

/// The groups, in output order.
const GROUPS: [&str; 7] = [
    "log",
    "ack",
    "flush",
    "sustained",
    "read",
    "recovery",
    "engines",
];

/// Every row of the matrix, in output order (`quick`: the `--quick` sizes).
fn plan(quick: bool) -> Vec<Planned> {
    let size = usize::from(quick);
    let mut rows = Vec::new();
    for writers in [1, 8, 64] {
        rows.push(Planned::new(
            "log",
            Subject::new(System::Log(SyncPolicy::Sync), writers),
            Some(Subject::new(
                System::FdatasyncPerAppend,
                writers.min(SYNC_BASELINE_WRITERS_MAX),
            )),
        ));
    }
    for policy in [PERIODIC, SyncPolicy::None] {
        for writers in [1, 8] {
            rows.push(Planned::new(
                "log",
                Subject::new(System::Log(policy), writers),
                Some(Subject::new(System::MemcpyCrc32, writers)),
            ));
        }
    }
    // The same rows again against what the disk can take (see `raw`): a fraction of the
    // physical limit.
    for policy in [PERIODIC, SyncPolicy::None] {
        rows.push(Planned::new(
            "log",
            Subject::new(System::Log(policy), 1),
            Some(Subject::new(System::DiskWriteLimit, 1)),
        ));
    }
    rows.push(Planned {
        trial_ms: Some(ONE_SEGMENT_TRIAL_MS),
        ..Planned::new(
            "log",
            Subject::new(System::LogOneSegment, 1),
            Some(Subject::new(System::MemcpyCrc32, 1)),
        )
    });

    for writers in [1, 8, 64] {
        let baseline = Some(Subject::new(
            System::AckOneTransaction(Synchronous::Full),
            writers,
        ));
        let mut systems = vec![
            System::AckWalbuf(SyncPolicy::Sync),
            System::AckWalbuf(PERIODIC),
            System::AckWalbuf(SyncPolicy::None),
            System::AckReference,
            System::AckOneTransaction(Synchronous::Normal),
        ];
        if writers > 1 {
            systems.extend([System::AckBatched(100), System::AckBatched(1000)]);
        }
        for system in systems {
            rows.push(Planned::new("ack", Subject::new(system, writers), baseline));
        }
        if writers == 1 {
            // The `Periodic` target: within 25% of the log-off reference, alternated.
            rows.push(Planned::new(
                "ack",
                Subject::new(System::AckWalbuf(PERIODIC), writers),
                Some(Subject::new(System::AckReference, writers)),
            ));
        }
    }

    for baseline in [System::SustainedReference, System::SustainedBatched] {
        rows.push(Planned {
            trial_ms: Some(SUSTAINED_WINDOW_MS[size]),
            trials_max: Some(SUSTAINED_TRIALS),
            ..Planned::new(
                "sustained",
                Subject::new(System::SustainedWalbuf, SUSTAINED_WRITERS),
                Some(Subject::new(baseline, 1)),
            )
        });
    }

    let flush_window_ms = FLUSH_WINDOW_MS[size];
    for tuned in [false, true] {
        rows.push(Planned {
            trial_ms: Some(flush_window_ms),
            trials_max: (!quick).then_some(FLUSH_TRIALS),
            ..Planned::new(
                "flush",
                Subject::new(System::FlushWalbuf, 1),
                Some(Subject::new(System::FlushBatched { tuned }, 1)),
            )
        });
    }

    for lever in flush_rows::Lever::ALL {
        rows.push(Planned {
            trials_max: (!quick).then_some(FLUSH_TRIALS),
            ..Planned::new(
                "flush",
                Subject::new(System::FlushDrain(lever), 1),
                Some(Subject::new(System::FlushDrainBatched(lever.baseline()), 1)),
            )
        });
    }

    for op in [
        ReadOp::HandleForShape,
        ReadOp::ShapeForHandle,
        ReadOp::HandlesForRelations,
    ] {
        for source in [Source::Buffered, Source::Flushed] {
            rows.push(Planned::new(
                "read",
                Subject::new(System::Read(op, source), 1),
                Some(Subject::new(System::Read(op, Source::Sqlite), 1)),
            ));
        }
    }
    rows.push(Planned::new(
        "read",
        Subject::new(System::ListShapes { sqlite: false }, 1),
        Some(Subject::new(System::ListShapes { sqlite: true }, 1)),
    ));
    for sqlite in [false, true] {
        rows.push(Planned::new(
            "read",
            Subject::new(
                System::ReadUnderLoad {
                    sqlite,
                    load: Load::Burst,
                },
                1,
            ),
            Some(Subject::new(
                System::ReadUnderLoad {
                    sqlite,
                    load: Load::Quiet,
                },
                1,
            )),
        ));
    }

    rows.push(Planned::new(
        "read",
        Subject::new(System::ReadAtTarget { sqlite: false }, 1),
        Some(Subject::new(System::ReadAtTarget { sqlite: true }, 1)),
    ));

    for &ops in [0].iter().chain(RECOVERY_OPS[size]) {
        rows.push(Planned::new(
            "recovery",
            Subject::new(System::Recovery(ops), 1),
            None,
        ));
    }
    #[cfg(feature = "compare")]
    for (case, threads, baseline) in engines::plan() {
        rows.push(Planned::new(
            "engines",
            Subject::new(System::Engine(case), threads),
            baseline.map(|(case, threads)| Subject::new(System::Engine(case), threads)),
        ));
    }
    rows
}

/// Whether `row` is selected by `--filter`.
fn selected(row: &Planned, filter: Option<&str>) -> bool {
    filter.is_none_or(|filter| row.group == filter || row.subject.system.name().contains(filter))
}

/// Where the run keeps its files, and the state shared by trials.
struct Bench {
    directory: PathBuf,
    disk: Option<DiskCounter>,
    sync_file: Option<PrewrittenFile>,
    /// The file of `disk-write-limit`, created by its first trial.
    ring_file: Option<PrewrittenFile>,
    payload: Vec<u8>,
    /// What each `walbuf-sustained` trial saw besides its throughput, by subject.
    pressure_of: HashMap<Subject, Vec<sustained_rows::Pressure>>,
    /// Shapes of the `read` fixture.
    read_shapes: u64,
    /// The `read` fixture, built by its first trial.
    read_fixture: Option<Fixture>,
    /// The `read` fixture of [`TARGET_READ_SHAPES`], built by its first trial.
    target_read_fixture: Option<Fixture>,
    /// The `engines` group's files and read fixtures.
    #[cfg(feature = "compare")]
    engines: engines::Engines,
    /// Shapes in SQLite and ops to drain of the `flush` drain fixture.
    drain_shapes: (u64, u64),
    /// The `flush` drain fixture, built by its first trial.
    drain_fixture: Option<flush_rows::DrainFixture>,
}

impl Bench {
    /// The drain fixture, built on first use.
    fn drain_fixture(&mut self) -> anyhow::Result<&flush_rows::DrainFixture> {
        if self.drain_fixture.is_none() {
            let (existing, ops) = self.drain_shapes;
            eprintln!("building the drain fixture: {existing} shapes in SQLite, {ops} in the log");
            self.drain_fixture = Some(flush_rows::DrainFixture::build(
                &self.directory,
                existing,
                ops,
            )?);
        }
        self.drain_fixture
            .as_ref()
            .context("the drain fixture was not built")
    }
}

impl Bench {
    /// One trial of `subject` lasting `duration`, after syncing everything written so far.
    fn trial(&mut self, subject: Subject, duration: Duration) -> anyhow::Result<Trial> {
        rustix::fs::sync();
        let disk = self.disk.as_ref();
        let directory = self.directory.as_path();
        let writers = subject.writers;
        match subject.system {
            System::Log(policy) => {
                log_rows::trial(directory, policy, &self.payload, writers, duration, disk)
            }
            System::LogOneSegment => {
                let trial = log_rows::trial(
                    directory,
                    SyncPolicy::None,
                    &self.payload,
                    writers,
                    duration,
                    disk,
                )?;
                if let Some(rotations) = trial.rotations.filter(|rotations| *rotations > 0) {
                    eprintln!(
                        "note: {} rotated {} times in {duration:?}: it measures more than the \
                         append path",
                        subject.system.name(),
                        rotations
                    );
                }
                Ok(trial)
            }
            System::FdatasyncPerAppend => {
                if self.sync_file.is_none() {
                    self.sync_file = Some(PrewrittenFile::for_sync_per_append(directory)?);
                    rustix::fs::sync();
                }
                let Some(file) = &self.sync_file else {
                    bail!("the baseline file was not created");
                };
                file.sync_per_append_trial(&self.payload, writers, duration, disk)
            }
            System::MemcpyCrc32 => raw::copy_trial(&self.payload, writers, duration),
            System::DiskWriteLimit => {
                if self.ring_file.is_none() {
                    self.ring_file = Some(PrewrittenFile::for_write_limit(directory)?);
                }
                let Some(file) = &self.ring_file else {
                    bail!("the disk-write-limit file was not created");
                };
                file.write_limit_trial(self.payload.len(), duration, disk)
            }
            System::AckWalbuf(policy) => {
                ack_rows::walbuf_trial(directory, policy, writers, duration, disk)
            }
            System::AckReference => ack_rows::reference_trial(directory, writers, duration, disk),
            System::SustainedWalbuf => {
                let (trial, pressure) = sustained_rows::walbuf_trial(directory, writers, duration)?;
                self.pressure_of.entry(subject).or_default().push(pressure);
                Ok(trial)
            }
            System::SustainedReference => sustained_rows::reference_trial(directory, duration),
            System::SustainedBatched => flush_rows::batched_trial(directory, false, duration),
            System::AckOneTransaction(synchronous) => {
                ack_rows::one_transaction_trial(directory, synchronous, writers, duration, disk)
            }
            System::AckBatched(batch_ops) => {
                ack_rows::batched_trial(directory, batch_ops, writers, duration, disk)
            }
            System::FlushWalbuf => flush_rows::walbuf_trial(directory, duration),
            System::FlushBatched { tuned } => flush_rows::batched_trial(directory, tuned, duration),
            System::FlushDrain(lever) => self.drain_fixture()?.walbuf_trial(lever.drain()),
            System::FlushDrainBatched(drain) => self.drain_fixture()?.batched_trial(drain),
            System::Read(op, source) => self.read_fixture()?.trial(op, source, duration),
            System::ListShapes { sqlite } => self.read_fixture()?.list_trial(sqlite, duration),
            System::ReadUnderLoad { sqlite, load } => {
                self.read_fixture()?.burst_trial(sqlite, load, duration)
            }
            System::ReadAtTarget { sqlite } => {
                let source = if sqlite {
                    Source::Sqlite
                } else {
                    Source::Buffered
                };
                self.target_read_fixture()?
                    .trial(ReadOp::HandleForShape, source, duration)
            }
            System::Recovery(ops) => recovery_rows::trial(directory, ops),
            #[cfg(feature = "compare")]
            System::Engine(case) => self.engines.trial(case, writers, duration),
        }
    }
}

impl Bench {
    /// The `read` fixture, built by the first call.
    fn read_fixture(&mut self) -> anyhow::Result<&Fixture> {
        let shapes = self.read_shapes;
        build_once(&mut self.read_fixture, &self.directory, shapes)
    }

    /// The `read` fixture of [`TARGET_READ_SHAPES`], built by the first call.
    fn target_read_fixture(&mut self) -> anyhow::Result<&Fixture> {
        if self.read_shapes == TARGET_READ_SHAPES {
            return self.read_fixture();
        }
        build_once(
            &mut self.target_read_fixture,
            &self.directory,
            TARGET_READ_SHAPES,
        )
    }
}

/// The read fixture in `slot`, built (in a fresh directory under `directory`) if not yet.
fn build_once<'a>(
    slot: &'a mut Option<Fixture>,
    directory: &Path,
    shapes: u64,
) -> anyhow::Result<&'a Fixture> {
    if slot.is_none() {
        eprintln!("building a read fixture: {shapes} shapes, half flushed");
        let started = std::time::Instant::now();
        *slot = Some(Fixture::build(directory, shapes)?);
        eprintln!("built the read fixture in {:.1?}", started.elapsed());
    }
    slot.as_ref().context("the read fixture was not built")
}

/// The default parent of the run's directory: `bench-tmp/` in the cargo target directory the
/// binary was built in (recognized by its `CACHEDIR.TAG`), else the temporary directory.
fn default_parent() -> PathBuf {
    let exe = std::env::current_exe().ok();
    let target = exe
        .as_deref()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .filter(|target| target.join("CACHEDIR.TAG").is_file());
    match target {
        Some(target) => target.join("bench-tmp"),
        None => std::env::temp_dir(),
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|text| text.trim().to_owned())
        .unwrap_or_else(|_| "?".to_owned())
}

/// Runs `walbuf bench`.
///
/// # Errors
/// The filter selects nothing, the directory cannot be made, or a system failed.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    if let Some(directory) = &args.recovery_victim {
        #[cfg(feature = "compare")]
        if let Some(engine) = &args.engine_victim {
            return engines::victim(engine, directory, args.victim_ops);
        }
        return recovery_rows::victim(directory, args.victim_ops);
    }
    let size = usize::from(args.quick);
    let trials = args.trials.unwrap_or(if args.quick { 2 } else { 5 }) as usize;
    let trial_ms = args.trial_ms.unwrap_or(if args.quick { 200 } else { 1000 });
    let rows: Vec<Planned> = plan(args.quick)
        .into_iter()
        .filter(|row| selected(row, args.filter.as_deref()))
        .collect();
    if rows.is_empty() {
        let mut names: Vec<&str> = plan(args.quick)
            .iter()
            .map(|row| row.subject.system.name())
            .collect();
        names.dedup();
        bail!(
            "--filter {:?} selects nothing: use a group ({}) or part of a system name ({})",
            args.filter.as_deref().unwrap_or(""),
            GROUPS.join(", "),
            names.join(", ")
        );
    }

    let parent = args.dir.clone().unwrap_or_else(default_parent);
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let run_directory = tempfile::Builder::new()
        .prefix("walbuf-bench-")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a directory in {}", parent.display()))?;
    let disk = DiskCounter::for_directory(run_directory.path());
    let mut bench = Bench {
        directory: run_directory.path().to_path_buf(),
        disk,
        sync_file: None,
        ring_file: None,
        payload: (0..PAYLOAD_BYTES)
            .map(|index| (index * 31 % 251) as u8)
            .collect(),
        pressure_of: HashMap::new(),
        read_shapes: READ_SHAPES[size],
        read_fixture: None,
        target_read_fixture: None,
        #[cfg(feature = "compare")]
        engines: engines::Engines::new(run_directory.path(), args.quick),
        drain_shapes: DRAIN_SHAPES[size],
        drain_fixture: None,
    };

    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let load_before = read_trimmed("/proc/loadavg");
    eprintln!(
        "walbuf bench: {} rows × {trials} trials × {trial_ms} ms, alternated with baselines, in {}",
        rows.len(),
        bench.directory.display()
    );
    let started = std::time::Instant::now();

    let trials_of_row = |row: &Planned| row.trials_max.map_or(trials, |max| max.min(trials));
    let mut trials_of: HashMap<Subject, Vec<Trial>> = HashMap::new();
    let mut ratios_of: HashMap<usize, Vec<f64>> = HashMap::new();
    let total_runs: usize = rows
        .iter()
        .map(|row| trials_of_row(row) * (1 + usize::from(row.baseline.is_some())))
        .sum();
    let mut runs_done = 0;
    for round in 0..trials {
        for (index, row) in rows.iter().enumerate() {
            if round >= trials_of_row(row) {
                continue;
            }
            let order: Vec<Subject> = match row.baseline {
                Some(baseline) if round % 2 == 0 => vec![row.subject, baseline],
                Some(baseline) => vec![baseline, row.subject],
                None => vec![row.subject],
            };
            let duration = Duration::from_millis(row.trial_ms.unwrap_or(trial_ms));
            let mut pair = [0.0_f64; 2];
            for subject in order {
                let trial = bench.trial(subject, duration).with_context(|| {
                    format!("{} with {} writers", subject.system.name(), subject.writers)
                })?;
                runs_done += 1;
                eprintln!(
                    "[{runs_done}/{total_runs}] {} ×{}: {} ops/s",
                    subject.system.name(),
                    subject.writers,
                    human_rate(trial.ops_per_s())
                );
                pair[usize::from(subject != row.subject)] = trial.ops_per_s();
                trials_of.entry(subject).or_default().push(trial);
            }
            if row.baseline.is_some() {
                ratios_of
                    .entry(index)
                    .or_default()
                    .push(pair[0] / pair[1].max(1e-9));
            }
        }
    }
    for fixture in [bench.read_fixture.take(), bench.target_read_fixture.take()]
        .into_iter()
        .flatten()
    {
        fixture.remove()?;
    }
    #[cfg(feature = "compare")]
    bench.engines.remove()?;
    if let Some(fixture) = bench.drain_fixture.take() {
        fixture.remove()?;
    }
    let load_after = read_trimmed("/proc/loadavg");
    let run_seconds = started.elapsed().as_secs_f64();

    let annotate = |mut row: Row, subject: Subject| {
        match subject.system {
            System::SustainedWalbuf => {
                let pressures = bench
                    .pressure_of
                    .get(&subject)
                    .map_or(&[][..], Vec::as_slice);
                row.annotate_pressure(pressures);
            }
            System::Recovery(ops) => row.unflushed_ops = Some(ops),
            System::Read(..) | System::ListShapes { .. } | System::ReadUnderLoad { .. } => {
                row.shapes = Some(bench.read_shapes);
            }
            System::ReadAtTarget { .. } => row.shapes = Some(TARGET_READ_SHAPES),
            _ => {}
        }
        row
    };
    let mut output = Vec::new();
    for (index, row) in rows.iter().enumerate() {
        let summary = Row::summarize(
            row.group,
            row.subject.system.name(),
            row.subject.writers,
            trials_of.get(&row.subject).map_or(&[][..], Vec::as_slice),
            row.baseline.map(|baseline| {
                (
                    baseline.system.name(),
                    baseline.writers,
                    ratios_of.get(&index).map_or(&[][..], Vec::as_slice),
                )
            }),
        );
        output.extend(summary.map(|summary| annotate(summary, row.subject)));
    }
    let mut baselines: Vec<(&'static str, Subject)> = Vec::new();
    for row in &rows {
        // A baseline that is also a row's subject (`reference-logoff` ×1) has its line already.
        if let Some(baseline) = row.baseline
            && !baselines.iter().any(|(_, known)| *known == baseline)
            && !rows.iter().any(|other| other.subject == baseline)
        {
            baselines.push((row.group, baseline));
        }
    }
    for (group, subject) in baselines {
        let summary = Row::summarize(
            group,
            subject.system.name(),
            subject.writers,
            trials_of.get(&subject).map_or(&[][..], Vec::as_slice),
            None,
        );
        output.extend(summary.map(|summary| annotate(summary, subject)));
    }

    if let Some(path) = &args.plot {
        plot::write_ack_plot(&output, path)?;
        eprintln!("wrote the ack plot to {}", path.display());
    }
    if args.json {
        for group in GROUPS {
            for row in output.iter().filter(|row| row.group == group) {
                println!("{}", row.to_json()?);
            }
        }
        return Ok(());
    }
    println!("## walbuf bench\n");
    println!(
        "{cores} cores, Linux {}; {trials} trials × {trial_ms} ms per row (flush: {} trials × \
         {} ms; sustained: {} trials × {} ms), each alternated with its baseline; files in {} \
         (disk counter: {}); {:.0} s in all.\n",
        read_trimmed("/proc/sys/kernel/osrelease"),
        trials.min(if args.quick { trials } else { FLUSH_TRIALS }),
        FLUSH_WINDOW_MS[size],
        trials.min(SUSTAINED_TRIALS),
        SUSTAINED_WINDOW_MS[size],
        bench.directory.display(),
        bench.disk.as_ref().map_or_else(
            || "none".to_owned(),
            |disk| disk.describe().display().to_string()
        ),
        run_seconds,
    );
    for group in GROUPS {
        let group_rows: Vec<Row> = output
            .iter()
            .filter(|row| row.group == group)
            .cloned()
            .collect();
        if group_rows.is_empty() {
            continue;
        }
        let (title, table) = match group {
            "log" => (
                format!("log: appends of {PAYLOAD_BYTES}-byte records"),
                markdown_table(&group_rows),
            ),
            "ack" => (
                "ack: add_shape acknowledged (300-byte shape, 32-byte comparable, 2 relations)"
                    .to_owned(),
                ack_table(&group_rows),
            ),
            "flush" => (
                format!(
                    "flush: sustained ops/s into SQLite, {}-op batches",
                    flush_rows::BATCH_OPS
                ),
                flush_table(&group_rows),
            ),
            "sustained" => (
                format!(
                    "sustained: {:.0} s of overload, ops/s into SQLite",
                    SUSTAINED_WINDOW_MS[size] as f64 / 1000.0
                ),
                sustained_table(&group_rows),
            ),
            "read" => (
                "read: point lookups, one thread".to_owned(),
                read_table(&group_rows),
            ),
            #[cfg(feature = "compare")]
            "engines" => (
                "engines: key–value stores, 16-byte keys, 256-byte values".to_owned(),
                report::engines_table(&group_rows),
            ),
            _ => (
                "recovery: open after SIGKILL".to_owned(),
                recovery_table(&group_rows),
            ),
        };
        println!("### {title}\n");
        print!("{table}");
        println!();
    }
    print_noise(&output, &trials_of, &rows, &load_before, &load_after);
    print_targets(&output);
    let levers = flush_rows::lever_lines(|system| {
        output
            .iter()
            .find(|row| row.system == system)
            .map(|row| row.ops_per_s)
    });
    if !levers.is_empty() {
        println!("\nFlush levers (medians of the drain rows; walbuf's default ÷ the lever's row):");
        for line in levers {
            println!("{line}");
        }
    }
    Ok(())
}

/// How noisy the run was: the spread of every row's trials, and the load average.
fn print_noise(
    output: &[Row],
    trials_of: &HashMap<Subject, Vec<Trial>>,
    rows: &[Planned],
    load_before: &str,
    load_after: &str,
) {
    let spread_of = |subject: &Subject| {
        trials_of
            .get(subject)
            .and_then(|trials| Spread::of(trials.iter().map(Trial::ops_per_s)))
            .map_or(0.0, |spread| spread.relative_percent())
    };
    let walbuf = rows
        .iter()
        .map(|row| spread_of(&row.subject))
        .fold(0.0_f64, f64::max);
    let baseline = rows
        .iter()
        .filter_map(|row| row.baseline.as_ref())
        .map(spread_of)
        .fold(0.0_f64, f64::max);
    println!(
        "Noise: widest spread (max − min) / median of ops/s over a row's trials: walbuf rows \
         {walbuf:.0}%, baselines {baseline:.0}%. Load average before: {load_before}; after: \
         {load_after}. {} rows.",
        output.len()
    );
}

/// `met` or `missed`.
fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "missed" }
}

/// Issues 2, 3 and 6's targets, as measured (a report, never an assertion).
fn print_targets(output: &[Row]) {
    let find = |system: &str, writers: usize| {
        output
            .iter()
            .find(|row| row.system == system && row.writers == writers)
    };
    let mut lines = Vec::new();
    for system in [
        "walbuf-log-none",
        "walbuf-log-periodic",
        "walbuf-log-none-1seg",
    ] {
        if let Some(row) = find(system, 1) {
            lines.push(format!(
                "- {system}, 1 writer ≥ 2 M appends/s: {} → {}",
                human_rate(row.ops_per_s),
                verdict(row.ops_per_s >= 2e6)
            ));
        }
    }
    for row in output
        .iter()
        .filter(|row| row.baseline == Some("disk-write-limit"))
    {
        lines.push(format!(
            "- {}, 1 writer, against what the disk can take: {:.0}% of disk-write-limit \
             ({} appends/s); 2 M appends/s would need {:.0} MB/s",
            row.system,
            row.ratio.unwrap_or(0.0) * 100.0,
            human_rate(row.ops_per_s),
            2.0 * walbuf_recovery::format::padded_frame_len(PAYLOAD_BYTES) as f64
        ));
    }
    if let Some(row) = find("walbuf-log-sync", 8)
        && let Some(ratio) = row.ratio
    {
        lines.push(format!(
            "- walbuf-log-sync, 8 writers ≥ 5× fdatasync-per-append ×8 (alternated pairs): \
             {ratio:.2}× → {}",
            verdict(ratio >= 5.0)
        ));
        if let Some(single) = find("fdatasync-per-append", 1) {
            let ratio = row.ops_per_s / single.ops_per_s.max(1e-9);
            lines.push(format!(
                "- walbuf-log-sync, 8 writers ≥ 5× fdatasync-per-append ×1 (ratio of medians): \
                 {ratio:.2}× → {}",
                verdict(ratio >= 5.0)
            ));
        }
    }
    for (writers, target) in [(8, 10.0), (64, 50.0)] {
        if let Some(row) = find("walbuf-sync", writers)
            && let Some(ratio) = row.ratio
        {
            lines.push(format!(
                "- walbuf-sync, {writers} writers ≥ {target:.0}× sqlite-1txn-full: {ratio:.2}× \
                 ({} vs {} acks/s) → {}",
                human_rate(row.ops_per_s),
                find("sqlite-1txn-full", writers)
                    .map_or_else(|| "?".to_owned(), |base| human_rate(base.ops_per_s)),
                verdict(ratio >= target)
            ));
        }
    }
    if let Some(row) = find("walbuf-periodic", 1) {
        lines.push(format!(
            "- walbuf-periodic, 1 writer ≥ 500 k adds/s: {} → {}",
            human_rate(row.ops_per_s),
            verdict(row.ops_per_s >= 5e5)
        ));
    }
    if let Some(row) = output.iter().find(|row| {
        row.system == "walbuf-periodic"
            && row.writers == 1
            && row.baseline == Some("reference-logoff")
    }) && let Some(ratio) = row.ratio
    {
        lines.push(format!(
            "- walbuf-periodic, 1 writer within 25% of reference-logoff (≥ 0.75×): {ratio:.2}× \
             ({} vs {} acks/s) → {}",
            human_rate(row.ops_per_s),
            find("reference-logoff", 1)
                .map_or_else(|| "?".to_owned(), |base| human_rate(base.ops_per_s)),
            verdict(ratio >= 0.75)
        ));
    }
    for (baseline, target) in [
        ("reference-flush", 15.0),
        ("sqlite-batch5000-sustained", 0.9),
    ] {
        if let Some(row) = output
            .iter()
            .find(|row| row.system == "walbuf-sustained" && row.baseline == Some(baseline))
            && let Some(ratio) = row.ratio
        {
            lines.push(format!(
                "- walbuf-sustained ≥ {target}× {baseline}: {ratio:.2}× ({} vs {} ops/s into \
                 SQLite; peak buffer {:.0} MiB, {:.0}% of writer time in backpressure) → {}",
                human_rate(row.ops_per_s),
                find(baseline, 1).map_or_else(|| "?".to_owned(), |base| human_rate(base.ops_per_s)),
                row.peak_buffer_bytes.unwrap_or(0) as f64 / f64::from(1 << 20),
                row.backpressure_percent.unwrap_or(0.0),
                verdict(ratio >= target)
            ));
        }
    }
    for row in output.iter().filter(|row| {
        (row.system == "walbuf-flush" || row.system == "walbuf-flush-drain") && row.ratio.is_some()
    }) {
        let ratio = row.ratio.unwrap_or(0.0);
        lines.push(format!(
            "- {} ≥ 90% of {}: {:.0}% ({} vs baseline) → {}",
            row.system,
            row.baseline.unwrap_or("?"),
            ratio * 100.0,
            human_rate(row.ops_per_s),
            verdict(ratio >= 0.9)
        ));
    }
    // The target names 100 k buffered shapes: its row, else the 1 M fixture's.
    let target_row = find("walbuf-handle_for_shape-buffered-100k", 1)
        .map(|row| (row, find("sqlite-handle_for_shape-100k", 1)))
        .or_else(|| {
            find("walbuf-handle_for_shape-buffered", 1)
                .map(|row| (row, find("sqlite-handle_for_shape", 1)))
        });
    if let Some((row, sqlite)) = target_row {
        let buffered = row.shapes.map_or(0, |shapes| shapes / 2);
        lines.push(format!(
            "- buffered handle_for_shape p50 ≤ 1 µs ({buffered} buffered shapes): {:.2} µs → {}",
            row.p50_us,
            verdict(row.p50_us <= 1.0)
        ));
        if let Some(ratio) = row.ratio {
            lines.push(format!(
                "- buffered handle_for_shape ≥ 10× the SQLite lookup: {ratio:.1}× in lookups/s \
                 (p50 {:.2} µs vs {}) → {}",
                row.p50_us,
                sqlite.map_or_else(
                    || "?".to_owned(),
                    |sqlite| format!("{:.2} µs", sqlite.p50_us)
                ),
                verdict(ratio >= 10.0)
            ));
        }
    }
    for (burst, quiet) in [
        (
            "walbuf-handle_for_shape-buffered-burst",
            "walbuf-handle_for_shape-buffered-quiet",
        ),
        (
            "sqlite-handle_for_shape-burst",
            "sqlite-handle_for_shape-quiet",
        ),
    ] {
        if let (Some(burst), Some(quiet)) = (find(burst, 1), find(quiet, 1)) {
            let ratio = burst.p99_us / quiet.p99_us.max(1e-9);
            lines.push(format!(
                "- {} p99 under a write burst ≤ 2× without: {ratio:.2}× (p99 {:.2} µs vs \
                 {:.2} µs; p50 {:.2} vs {:.2} µs) → {}",
                burst.system,
                burst.p99_us,
                quiet.p99_us,
                burst.p50_us,
                quiet.p50_us,
                verdict(ratio <= 2.0)
            ));
        }
    }
    if let Some(row) = find("walbuf-kv-sync", 8)
        && let Some(ratio) = row.ratio
    {
        lines.push(format!(
            "- walbuf-kv-sync, 8 threads ≥ 5× fjall-syncdata ×8: {ratio:.2}× ({} vs {} durable \
             puts/s) → {}",
            human_rate(row.ops_per_s),
            find("fjall-syncdata", 8)
                .map_or_else(|| "?".to_owned(), |base| human_rate(base.ops_per_s)),
            verdict(ratio >= 5.0)
        ));
    }
    if let Some(row) = output.iter().find(|row| row.system == "walbuf-recovery") {
        lines.push(format!(
            "- recovery ≥ 1 M ops/s replayed: {} ({} ops in {:.1} ms) → {}",
            human_rate(row.ops_per_s),
            row.unflushed_ops.unwrap_or(0),
            row.open_ms.unwrap_or(0.0),
            verdict(row.ops_per_s >= 1e6)
        ));
    }
    if !lines.is_empty() {
        println!("\nTargets (issues 2, 3 and 6; 2 cores; ratios from alternated pairs):");
        for line in lines {
            println!("{line}");
        }
    }
}
