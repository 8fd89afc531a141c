//! The `engines` group (feature `compare`): walbuf as a key–value store against the embedded
//! engines a user would pick instead — fjall, redb, and SQLite as a key–value table.
//!
//! walbuf runs the key–value schema of `engine/examples/kv` — the very file, included below
//! as [`kv_schema`], not a copy: puts logged, buffered, readable at once and flushed to a
//! `kv (key BLOB PRIMARY KEY, value BLOB) WITHOUT ROWID` table. Keys are 16 random bytes,
//! values 256 bytes. Each engine's durable rows use its documented durable setting:
//!
//! | engine | durable single op | durable batch of 100 |
//! |---|---|---|
//! | walbuf-kv | `SyncPolicy::Sync` (the put returns once its record is synced; concurrent puts share syncs) | 100 puts under `SyncPolicy::None`, then one `Log::sync` |
//! | fjall 3 | `Keyspace::insert` then `Database::persist(PersistMode::SyncData)` | a `WriteBatch` with `durability(Some(PersistMode::SyncData))` |
//! | redb 4 | one write transaction per put, `Durability::Immediate` (the default) | one transaction of 100 puts |
//! | SQLite | one transaction per put, WAL, `synchronous=FULL` | one transaction of 100 puts |
//!
//! Writes run on a fresh database per trial, from 1 and 8 threads (closed loop). Point reads
//! run on a database of [`READ_KEYS`] keys built once per run, one thread looking up random
//! present keys; walbuf's are `walbuf-kv-get` (every key flushed to SQLite: the overlay
//! misses, then its read pool) and `walbuf-kv-get-buffered` (every key still buffered, the
//! flusher idle). redb and SQLite read in a read transaction per lookup, as a reader of the
//! latest data would.
//!
//! Reopen after a crash: a child process (`walbuf bench --recovery-victim DIR --victim-ops N
//! --engine-victim ENGINE`, hidden) writes N keys durably (batches of 1 000), says so, and
//! is killed with SIGKILL; the parent times opening the database and reading the last key.
//! walbuf's victim holds its flusher idle, so all N ops are replayed from the log on open;
//! fjall replays its journal, SQLite its WAL, redb repairs its allocator state after an
//! unclean shutdown. The files are in the page cache (a kill, not a power cut).

#[allow(
    dead_code,
    reason = "the example's whole store is included; the benchmark uses part of it"
)]
#[path = "../../../engine/examples/kv/schema.rs"]
mod kv_schema;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use redb::ReadableDatabase;
use rusqlite::{Connection, OptionalExtension, params};
use walbuf::SyncPolicy;
use walbuf::store::StoreConfig;

use self::kv_schema::KvStore;
use super::ack_rows::abandoning_config;
use super::driver::{Trial, VICTIM_READY, closed_loop, kill_victim, remove_tree};
use super::histogram::Histogram;
use super::log_rows::settle;
use super::workload::{mix, op_key};

/// Keys in the read fixtures (full run, `--quick`).
pub const READ_KEYS: [u64; 2] = [1_000_000, 10_000];
/// Keys the reopen victim writes (full run, `--quick`).
pub const REOPEN_KEYS: [u64; 2] = [100_000, 10_000];
/// Puts per durable batch of the batch rows.
pub const BATCH_PUTS: usize = 100;
/// Bytes of a value.
const VALUE_BYTES: usize = 256;
/// Keys each read trial cycles through (random order).
const KEYS_PER_SET: usize = 4096;
/// Puts per durable commit while loading a fixture or a victim.
const LOAD_BATCH: usize = 1_000;
/// How long [`settle`] may wait after an open.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
/// What the victim prints once its keys are durable.
/// redb's table.
const REDB_TABLE: redb::TableDefinition<'static, &[u8], &[u8]> = redb::TableDefinition::new("kv");
/// fjall's keyspace.
const FJALL_KEYSPACE: &str = "kv";

/// Numbers the trials of a run, for unique directories and keys.
static NEXT_TRIAL: AtomicU64 = AtomicU64::new(1);

/// An embedded key–value engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Engine {
    /// walbuf running the example's key–value schema.
    WalbufKv,
    /// fjall (LSM tree with a journal).
    Fjall,
    /// redb (copy-on-write B-tree).
    Redb,
    /// SQLite, one `WITHOUT ROWID` table.
    SqliteKv,
}

impl Engine {
    const ALL: [Self; 4] = [Self::WalbufKv, Self::Fjall, Self::Redb, Self::SqliteKv];

    /// The engine's name in system names and on the victim's command line.
    fn name(self) -> &'static str {
        match self {
            Self::WalbufKv => "walbuf-kv",
            Self::Fjall => "fjall",
            Self::Redb => "redb",
            Self::SqliteKv => "sqlite-kv",
        }
    }

    fn from_name(name: &str) -> anyhow::Result<Self> {
        Self::ALL
            .into_iter()
            .find(|engine| engine.name() == name)
            .ok_or_else(|| anyhow!("no engine {name:?}"))
    }
}

/// What a row of the group measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Workload {
    /// One put per durable commit.
    DurablePut,
    /// [`BATCH_PUTS`] puts per durable commit; ops count puts, latencies whole batches.
    DurableBatch,
    /// A point read of a present key (`buffered`: walbuf's keys still in the buffer).
    Get { buffered: bool },
    /// Open after a SIGKILL, and read one key.
    Reopen,
}

/// An engine running a workload: a system of the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Case {
    pub engine: Engine,
    pub workload: Workload,
}

impl Case {
    const fn new(engine: Engine, workload: Workload) -> Self {
        Self { engine, workload }
    }

    /// The stable name (see the module docs of `bench`).
    pub fn name(self) -> &'static str {
        use Engine::{Fjall, Redb, SqliteKv, WalbufKv};
        use Workload::{DurableBatch, DurablePut, Get, Reopen};
        match (self.engine, self.workload) {
            (WalbufKv, DurablePut) => "walbuf-kv-sync",
            (Fjall, DurablePut) => "fjall-syncdata",
            (Redb, DurablePut) => "redb-immediate",
            (SqliteKv, DurablePut) => "sqlite-kv-full",
            (WalbufKv, DurableBatch) => "walbuf-kv-batch100",
            (Fjall, DurableBatch) => "fjall-syncdata-batch100",
            (Redb, DurableBatch) => "redb-immediate-batch100",
            (SqliteKv, DurableBatch) => "sqlite-kv-full-batch100",
            (WalbufKv, Get { buffered: false }) => "walbuf-kv-get",
            (WalbufKv, Get { buffered: true }) => "walbuf-kv-get-buffered",
            (Fjall, Get { .. }) => "fjall-get",
            (Redb, Get { .. }) => "redb-get",
            (SqliteKv, Get { .. }) => "sqlite-kv-get",
            (WalbufKv, Reopen) => "walbuf-kv-reopen",
            (Fjall, Reopen) => "fjall-reopen",
            (Redb, Reopen) => "redb-reopen",
            (SqliteKv, Reopen) => "sqlite-kv-reopen",
        }
    }
}

/// A row of the plan: a case at a thread count, and its baseline (none for reopen rows).
pub type PlannedCase = (Case, usize, Option<(Case, usize)>);

/// Every row of the group, in output order.
pub fn plan() -> Vec<PlannedCase> {
    let mut rows = Vec::new();
    for workload in [Workload::DurablePut, Workload::DurableBatch] {
        let writer_counts: &[usize] = if workload == Workload::DurablePut {
            &[1, 8]
        } else {
            &[1]
        };
        for &writers in writer_counts {
            let baseline = Case::new(Engine::Fjall, workload);
            for engine in [Engine::WalbufKv, Engine::Redb, Engine::SqliteKv] {
                rows.push((
                    Case::new(engine, workload),
                    writers,
                    Some((baseline, writers)),
                ));
            }
        }
    }
    let baseline = Case::new(Engine::SqliteKv, Workload::Get { buffered: false });
    for (engine, buffered) in [
        (Engine::WalbufKv, false),
        (Engine::WalbufKv, true),
        (Engine::Fjall, false),
        (Engine::Redb, false),
    ] {
        rows.push((
            Case::new(engine, Workload::Get { buffered }),
            1,
            Some((baseline, 1)),
        ));
    }
    for engine in Engine::ALL {
        rows.push((Case::new(engine, Workload::Reopen), 1, None));
    }
    rows
}

/// The 16-byte key of `sequence` in key space `space`.
fn key_of(space: u64, sequence: u64) -> [u8; 16] {
    let mut key = [0; 16];
    key[..8].copy_from_slice(&mix(space).to_be_bytes());
    key[8..].copy_from_slice(&mix(space ^ sequence.wrapping_mul(0x9E37_79B9)).to_be_bytes());
    key
}

/// An open database of one engine.
enum Database {
    WalbufKv {
        store: KvStore,
        /// Abandons what is still buffered on close (see [`abandoning_config`]).
        abandon: Arc<AtomicBool>,
    },
    Fjall {
        database: fjall::Database,
        keyspace: fjall::Keyspace,
    },
    Redb(redb::Database),
    /// Behind a mutex to be shared by threads (one connection, like the `ack` rows).
    SqliteKv(Mutex<Connection>),
}

/// How a walbuf-kv store is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WalbufMode {
    /// `SyncPolicy::Sync`: each put durable on return.
    Sync,
    /// `SyncPolicy::None`, durable at an explicit sync, flusher running.
    ExplicitSync,
    /// `SyncPolicy::None`, the flusher idle: every put stays buffered.
    IdleFlusher,
}

impl Database {
    /// Opens (or creates) `engine`'s database in `directory` (`mode`: walbuf's settings).
    fn open(engine: Engine, directory: &Path, mode: WalbufMode) -> anyhow::Result<Self> {
        std::fs::create_dir_all(directory)
            .with_context(|| format!("cannot create {}", directory.display()))?;
        Ok(match engine {
            Engine::WalbufKv => {
                let abandon = Arc::new(AtomicBool::new(false));
                let policy = if mode == WalbufMode::Sync {
                    SyncPolicy::Sync
                } else {
                    SyncPolicy::None
                };
                let mut config = abandoning_config(policy, &abandon);
                if mode == WalbufMode::IdleFlusher {
                    config = StoreConfig {
                        flush_interval_ms: 3_600_000,
                        batch_ops_max: 64_000_000,
                        buffer_ops_max: 64_000_000,
                        buffer_bytes_max: 16 << 30,
                        ..config
                    };
                }
                let (store, _report) = KvStore::open(directory, config)
                    .with_context(|| format!("cannot open walbuf-kv in {}", directory.display()))?;
                Self::WalbufKv { store, abandon }
            }
            Engine::Fjall => {
                let database = fjall::Database::builder(directory).open()?;
                let keyspace =
                    database.keyspace(FJALL_KEYSPACE, fjall::KeyspaceCreateOptions::default)?;
                Self::Fjall { database, keyspace }
            }
            Engine::Redb => {
                let database = redb::Database::create(directory.join("kv.redb"))?;
                let transaction = database.begin_write()?;
                transaction.open_table(REDB_TABLE)?;
                transaction.commit()?;
                Self::Redb(database)
            }
            Engine::SqliteKv => {
                let connection = Connection::open(directory.join("kv.db"))?;
                connection.execute_batch(
                    "PRAGMA journal_mode = WAL;
                     PRAGMA synchronous = FULL;
                     CREATE TABLE IF NOT EXISTS kv (
                         key BLOB PRIMARY KEY NOT NULL,
                         value BLOB NOT NULL
                     ) WITHOUT ROWID;",
                )?;
                Self::SqliteKv(Mutex::new(connection))
            }
        })
    }

    /// One put, durable when it returns.
    fn put_durable(&self, key: &[u8], value: &[u8]) -> anyhow::Result<()> {
        match self {
            Self::WalbufKv { store, .. } => {
                store.put(key, value)?;
            }
            Self::Fjall { database, keyspace } => {
                keyspace.insert(key, value)?;
                database.persist(fjall::PersistMode::SyncData)?;
            }
            Self::Redb(database) => {
                let transaction = database.begin_write()?;
                transaction.open_table(REDB_TABLE)?.insert(key, value)?;
                transaction.commit()?;
            }
            Self::SqliteKv(connection) => {
                let connection = connection.lock().map_err(|_| anyhow!("poisoned"))?;
                connection
                    .prepare_cached("INSERT OR REPLACE INTO kv (key, value) VALUES (?1, ?2)")?
                    .execute(params![key, value])?;
            }
        }
        Ok(())
    }

    /// `keys` put in one durable commit (walbuf: puts, then one log sync).
    fn put_batch_durable(&self, keys: &[[u8; 16]], value: &[u8]) -> anyhow::Result<()> {
        match self {
            Self::WalbufKv { store, .. } => {
                for key in keys {
                    store.put(key, value)?;
                }
                store.sync()?;
            }
            Self::Fjall { database, keyspace } => {
                let mut batch = database
                    .batch()
                    .durability(Some(fjall::PersistMode::SyncData));
                for key in keys {
                    batch.insert(keyspace, key.as_slice(), value);
                }
                batch.commit()?;
            }
            Self::Redb(database) => {
                let transaction = database.begin_write()?;
                {
                    let mut table = transaction.open_table(REDB_TABLE)?;
                    for key in keys {
                        table.insert(key.as_slice(), value)?;
                    }
                }
                transaction.commit()?;
            }
            Self::SqliteKv(connection) => {
                let mut connection = connection.lock().map_err(|_| anyhow!("poisoned"))?;
                let transaction = connection.transaction()?;
                {
                    let mut insert = transaction
                        .prepare_cached("INSERT OR REPLACE INTO kv (key, value) VALUES (?1, ?2)")?;
                    for key in keys {
                        insert.execute(params![key.as_slice(), value])?;
                    }
                }
                transaction.commit()?;
            }
        }
        Ok(())
    }

    /// Whether `key` is present (its value read whole).
    fn get(&self, key: &[u8]) -> anyhow::Result<bool> {
        Ok(match self {
            Self::WalbufKv { store, .. } => std::hint::black_box(store.get(key)?).is_some(),
            Self::Fjall { keyspace, .. } => std::hint::black_box(keyspace.get(key)?).is_some(),
            Self::Redb(database) => {
                let transaction = database.begin_read()?;
                let table = transaction.open_table(REDB_TABLE)?;
                let value = table.get(key)?.map(|value| value.value().to_vec());
                std::hint::black_box(value).is_some()
            }
            Self::SqliteKv(connection) => {
                let connection = connection.lock().map_err(|_| anyhow!("poisoned"))?;
                let value: Option<Vec<u8>> = connection
                    .prepare_cached("SELECT value FROM kv WHERE key = ?1")?
                    .query_row([key], |row| row.get(0))
                    .optional()?;
                std::hint::black_box(value).is_some()
            }
        })
    }

    /// Puts keys `0..keys` of `space`, [`LOAD_BATCH`] per durable commit.
    fn load(&self, space: u64, keys: u64, value: &[u8]) -> anyhow::Result<()> {
        let mut batch = Vec::with_capacity(LOAD_BATCH);
        for sequence in 0..keys {
            batch.push(key_of(space, sequence));
            if batch.len() == LOAD_BATCH || sequence + 1 == keys {
                self.put_batch_durable(&batch, value)?;
                batch.clear();
            }
        }
        Ok(())
    }

    /// Closes the database (walbuf: abandoning what is buffered, unless `flush`).
    fn close(self, flush: bool) -> anyhow::Result<()> {
        match self {
            Self::WalbufKv { store, abandon } => {
                abandon.store(!flush, Ordering::Relaxed);
                store.close()?;
            }
            Self::Fjall { database, .. } => drop(database),
            Self::Redb(database) => drop(database),
            Self::SqliteKv(connection) => drop(connection),
        }
        Ok(())
    }
}

/// A read fixture: an engine's database with the read keys, and where it lives.
struct ReadFixture {
    database: Database,
    directory: PathBuf,
}

/// The group's state for a run: where its files go and the read fixtures, built by the first
/// read trial of each.
pub struct Engines {
    directory: PathBuf,
    read_keys: u64,
    reopen_keys: u64,
    value: Vec<u8>,
    reads: Vec<(Case, ReadFixture)>,
}

/// The key space of the read fixtures.
const READ_SPACE: u64 = 0x00EA_D000;

impl Engines {
    /// The state of a run under `parent` (`quick`: the `--quick` sizes).
    pub fn new(parent: &Path, quick: bool) -> Self {
        let size = usize::from(quick);
        Self {
            directory: parent.join("engines"),
            read_keys: READ_KEYS[size],
            reopen_keys: REOPEN_KEYS[size],
            value: (0..VALUE_BYTES)
                .map(|index| (index * 7 % 251) as u8)
                .collect(),
            reads: Vec::new(),
        }
    }

    /// One trial of `case` with `threads` threads for `duration`.
    ///
    /// # Errors
    /// The engine failed, or a read missed.
    pub fn trial(
        &mut self,
        case: Case,
        threads: usize,
        duration: Duration,
    ) -> anyhow::Result<Trial> {
        match case.workload {
            Workload::DurablePut | Workload::DurableBatch => {
                self.write_trial(case, threads, duration)
            }
            Workload::Get { .. } => self.read_trial(case, duration),
            Workload::Reopen => self.reopen_trial(case.engine),
        }
    }

    fn write_trial(&self, case: Case, threads: usize, duration: Duration) -> anyhow::Result<Trial> {
        let number = NEXT_TRIAL.fetch_add(1, Ordering::Relaxed);
        let directory = self
            .directory
            .join(format!("{}-{threads}-{number}", case.name()));
        let batch = case.workload == Workload::DurableBatch;
        let mode = if batch {
            WalbufMode::ExplicitSync
        } else {
            WalbufMode::Sync
        };
        let database = Database::open(case.engine, &directory, mode)?;
        // walbuf prepares its next log segment (a 64 MiB write) in the background after an
        // open: let it finish, as the `ack` rows do, or the trial would measure it.
        settle(SETTLE_TIMEOUT);
        let value = &self.value;
        let mut trial = closed_loop(threads, duration, |thread| {
            let database = &database;
            let mut sequence = 0;
            let mut keys = Vec::with_capacity(BATCH_PUTS);
            Ok(move || {
                if batch {
                    keys.clear();
                    for _ in 0..BATCH_PUTS {
                        sequence += 1;
                        keys.push(key_of(op_key(number, thread, 0), sequence));
                    }
                    database.put_batch_durable(&keys, value)
                } else {
                    sequence += 1;
                    database.put_durable(&key_of(op_key(number, thread, 0), sequence), value)
                }
            })
        })?;
        if batch {
            trial.ops *= BATCH_PUTS as u64;
        }
        database.close(false)?;
        remove_tree(&directory)?;
        Ok(trial)
    }

    /// The read fixture of `case`, built by the first call.
    fn read_fixture(&mut self, case: Case) -> anyhow::Result<&ReadFixture> {
        if let Some(index) = self.reads.iter().position(|(known, _)| *known == case) {
            return Ok(&self.reads[index].1);
        }
        let directory = self.directory.join(format!("read-{}", case.name()));
        let buffered = case.workload == (Workload::Get { buffered: true });
        let mode = if buffered {
            WalbufMode::IdleFlusher
        } else {
            WalbufMode::ExplicitSync
        };
        eprintln!(
            "building the {} fixture: {} keys",
            case.name(),
            self.read_keys
        );
        let started = Instant::now();
        let database = Database::open(case.engine, &directory, mode)?;
        database.load(READ_SPACE, self.read_keys, &self.value)?;
        if let Database::WalbufKv { store, .. } = &database {
            if buffered {
                let pending = store.stats().pending_ops;
                ensure!(
                    pending == self.read_keys,
                    "{pending} of the {} keys are buffered",
                    self.read_keys
                );
            } else {
                store.flush()?;
            }
        }
        eprintln!("built it in {:.1?}", started.elapsed());
        self.reads.push((
            case,
            ReadFixture {
                database,
                directory,
            },
        ));
        self.reads
            .last()
            .map(|(_, fixture)| fixture)
            .context("the read fixture was not kept")
    }

    fn read_trial(&mut self, case: Case, duration: Duration) -> anyhow::Result<Trial> {
        let read_keys = self.read_keys;
        let fixture = self.read_fixture(case)?;
        let keys: Vec<[u8; 16]> = (0..KEYS_PER_SET as u64)
            .map(|index| key_of(READ_SPACE, mix(index ^ 0xBEEF) % read_keys))
            .collect();
        closed_loop(1, duration, |_| {
            let (database, keys) = (&fixture.database, &keys);
            let mut index = 0;
            Ok(move || {
                index += 1;
                ensure!(
                    database.get(&keys[index % KEYS_PER_SET])?,
                    "{} missed a key",
                    case.name()
                );
                Ok(())
            })
        })
    }

    /// A victim writes [`Engines::reopen_keys`] keys and is killed; the reopen is timed.
    fn reopen_trial(&self, engine: Engine) -> anyhow::Result<Trial> {
        let number = NEXT_TRIAL.fetch_add(1, Ordering::Relaxed);
        let directory = self
            .directory
            .join(format!("reopen-{}-{number}", engine.name()));
        let keys = self.reopen_keys;
        kill_victim(&directory, keys, &["--engine-victim", engine.name()])?;

        let started = Instant::now();
        let database = Database::open(engine, &directory, WalbufMode::ExplicitSync)?;
        ensure!(
            database.get(&key_of(VICTIM_SPACE, keys - 1))?,
            "{} lost the victim's last key",
            engine.name()
        );
        let open = started.elapsed();
        database.close(false)?;
        remove_tree(&directory)?;
        let mut latency = Histogram::default();
        latency.record(u64::try_from(open.as_nanos()).unwrap_or(u64::MAX));
        Ok(Trial {
            ops: keys,
            elapsed: open,
            latency,
            syncs: 0,
            rotations: None,
            disk_bytes_written: None,
            open: Some(open),
        })
    }

    /// Closes the read fixtures and deletes the group's files.
    ///
    /// # Errors
    /// Closing or deleting failed.
    pub fn remove(&mut self) -> anyhow::Result<()> {
        for (_, fixture) in self.reads.drain(..) {
            fixture.database.close(false)?;
            remove_tree(&fixture.directory)?;
        }
        if self.directory.exists() {
            remove_tree(&self.directory)?;
        }
        Ok(())
    }
}

/// The key space of the victims.
const VICTIM_SPACE: u64 = 0x0000_0DEA_D000;

/// The child's side of a reopen trial: writes `keys` keys durably to `engine`'s database in
/// `directory`, prints [`VICTIM_READY`], and waits to be killed.
///
/// # Errors
/// The engine failed, or there is no such engine.
pub fn victim(engine: &str, directory: &Path, keys: u64) -> anyhow::Result<()> {
    let engine = Engine::from_name(engine)?;
    if keys == 0 {
        bail!("the victim needs at least one key");
    }
    let value: Vec<u8> = vec![0x5A; VALUE_BYTES];
    let database = Database::open(engine, directory, WalbufMode::IdleFlusher)?;
    database.load(VICTIM_SPACE, keys, &value)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{VICTIM_READY}")?;
    stdout.flush()?;
    drop(stdout);
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}
