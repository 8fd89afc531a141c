//! The store under faults: SQLite made slow or stalled (backpressure), a batch failing with a
//! transient SQLite error (retried, applied once), a batch failing deterministically (the
//! store fails, reads keep working, a reopen applies everything), a database of a newer
//! schema version (refused, never wiped), a second open of a directory (locked), and a batch
//! that SQLite aborts after some of its writes (rolled back whole).
//!
//! Faults come from the store's `apply_hook`, switched on and off through atomics, and in
//! one test from a SQLite trigger that aborts a chosen insert.

#![allow(clippy::print_stderr)] // The seed and a summary, to replay and to judge a run.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::ffi;
use walbuf::shapes::{NewShape, RegistryError, ShapeRegistry};
use walbuf::store::ApplyHook;
use walbuf::{Error, SyncPolicy};
use walbuf_tests::check::within;
use walbuf_tests::model::{
    Harness, Model, Op, check_reads, check_sqlite, check_sqlite_rows, read_meta, shape,
};

fn sqlite_error(code: i32) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(ffi::Error::new(code), None)
}

fn hook(apply: impl Fn(&[u64]) -> rusqlite::Result<()> + Send + Sync + 'static) -> ApplyHook {
    ApplyHook(Arc::new(apply))
}

/// Every shape of the backpressure test encodes to the same size (fixed-width names).
fn sized(writer: usize, index: u64) -> NewShape {
    shape(
        &format!("w{writer}/{index:06}"),
        format!("c{writer}/{index:06}").as_bytes(),
        1,
        &[writer as u32],
        0,
    )
}

/// What the hook does to each batch in the backpressure test.
const NORMAL: u8 = 0;
/// Sleep 20 ms per batch: SQLite slower than the writers.
const SLOW: u8 = 1;
/// Sleep until switched back: SQLite stalled.
const STALLED: u8 = 2;

const WRITERS: usize = 4;

#[test]
fn a_slow_or_stalled_sqlite_bounds_memory_and_refuses_writers_with_backpressure() {
    within(Duration::from_secs(120), "backpressure", backpressure);
}

fn backpressure() {
    let mode = Arc::new(AtomicU8::new(NORMAL));
    let hook_mode = Arc::clone(&mode);
    let ops_max = 64u64;
    let timeout_ms = 300u64;
    let mut config = Harness::config(SyncPolicy::None, 8);
    config.flush_interval_ms = 5;
    config.buffer_ops_max = ops_max;
    config.buffer_bytes_max = 8 << 10;
    config.backpressure_timeout_ms = timeout_ms;
    config.apply_hook = Some(hook(move |_| {
        match hook_mode.load(Ordering::SeqCst) {
            SLOW => std::thread::sleep(Duration::from_millis(20)),
            STALLED => {
                while hook_mode.load(Ordering::SeqCst) == STALLED {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            _ => {}
        }
        Ok(())
    }));
    let bytes_max = config.buffer_bytes_max;
    let dir = tempfile::tempdir().expect("tempdir");
    let (registry, _) = ShapeRegistry::open(dir.path(), config.clone()).expect("open");
    let registry = Arc::new(registry);

    // The accounted size of one op, to state the bound: each writer may pass the room check
    // just before the others fill the buffer, so the bound is exceeded by at most one op per
    // writer.
    registry.add_shape(sized(9, 0)).expect("probe");
    let op_bytes = registry.stats().pending_bytes;
    registry.flush().expect("flush");
    let model = Arc::new(Mutex::new(Model::new()));
    model
        .lock()
        .expect("model")
        .add(&sized(9, 0))
        .expect("probe");
    let ops_bound = ops_max + WRITERS as u64;
    let bytes_bound = bytes_max + WRITERS as u64 * op_bytes;
    assert!(
        bytes_max / op_bytes < ops_max,
        "the byte bound binds first ({op_bytes} bytes per op)"
    );

    // A monitor samples memory throughout.
    let done = Arc::new(AtomicBool::new(false));
    let monitor = {
        let (registry, done) = (Arc::clone(&registry), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut samples = 0u64;
            while !done.load(Ordering::SeqCst) {
                let stats = registry.stats();
                assert!(
                    stats.pending_ops <= ops_bound && stats.pending_bytes <= bytes_bound,
                    "buffer over its bound: {} ops, {} bytes (bound {ops_bound} ops, {bytes_bound} bytes)",
                    stats.pending_ops,
                    stats.pending_bytes
                );
                samples += 1;
                std::thread::sleep(Duration::from_micros(200));
            }
            samples
        })
    };
    let next_index = Arc::new((0..WRITERS).map(|_| AtomicU64::new(0)).collect::<Vec<_>>());
    // Writers add until told to stop (`limit` adds each) or refused; every acknowledged add
    // goes into the model. Returns the refusals' errors.
    let write = |limit: u64, stop_at_refusal: bool| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let (registry, model, next_index) = (
                    Arc::clone(&registry),
                    Arc::clone(&model),
                    Arc::clone(&next_index),
                );
                std::thread::spawn(move || {
                    let mut refusals = Vec::new();
                    for _ in 0..limit {
                        let index = next_index[writer].fetch_add(1, Ordering::SeqCst);
                        let new = sized(writer, index);
                        match registry.add_shape(new.clone()) {
                            Ok(_) => {
                                model.lock().expect("model").add(&new).expect("model add");
                            }
                            Err(RegistryError::Store(error @ Error::Backpressure { .. })) => {
                                refusals.push(error);
                                if stop_at_refusal {
                                    break;
                                }
                            }
                            Err(other) => panic!("writer {writer}: {other}"),
                        }
                    }
                    refusals
                })
            })
            .collect();
        writers
            .into_iter()
            .flat_map(|writer| writer.join().expect("writer"))
            .collect::<Vec<_>>()
    };

    // Slow: writers outrun SQLite and wait for room, memory stays bounded.
    mode.store(SLOW, Ordering::SeqCst);
    let _slow_refusals = write(60, false);
    let stats = registry.stats();
    assert!(
        stats.backpressure_waits > 0,
        "writers waited for room: {stats:?}"
    );

    // Stalled: the buffer fills; every blocking writer waits out the timeout and is refused.
    mode.store(STALLED, Ordering::SeqCst);
    let refusals = write(u64::MAX, true);
    assert_eq!(refusals.len(), WRITERS, "each writer ends with a refusal");
    for refusal in &refusals {
        match refusal {
            Error::Backpressure {
                waited_ms,
                pending_ops,
                pending_bytes,
            } => {
                assert!(*waited_ms >= timeout_ms, "refused after {waited_ms} ms");
                assert!(*pending_ops <= ops_bound && *pending_bytes <= bytes_bound);
            }
            other => panic!("{other}"),
        }
    }
    // The non-blocking path fails at once; the other writes wait, then are refused too.
    match registry.try_add_shape(sized(0, u64::MAX)) {
        Err(RegistryError::Store(Error::Backpressure { waited_ms: 0, .. })) => {}
        other => panic!("try_add_shape on a full buffer: {other:?}"),
    }
    for (what, outcome) in [
        ("remove", registry.remove_shape(&sized(0, 0).handle)),
        ("mark", registry.mark_snapshot_complete(&sized(0, 0).handle)),
    ] {
        match outcome {
            Err(RegistryError::Store(Error::Backpressure { waited_ms, .. })) => {
                assert!(waited_ms >= timeout_ms, "{what}");
            }
            other => panic!("{what} on a full buffer: {other:?}"),
        }
    }
    // Reads need no room: everything acknowledged is visible while SQLite is stalled.
    check_reads(&registry, &model.lock().expect("model")).expect("reads while stalled");
    let stats = registry.stats();
    assert!(
        stats.backpressure_refusals >= WRITERS as u64 + 3,
        "{stats:?}"
    );
    assert!(stats.peak_pending_bytes <= bytes_bound, "{stats:?}");
    assert!(
        stats.peak_pending_bytes + op_bytes > bytes_max,
        "the buffer was filled to its bound: {stats:?}"
    );

    // SQLite back to normal: nothing acknowledged was lost, nothing refused was written.
    mode.store(NORMAL, Ordering::SeqCst);
    registry.flush().expect("flush");
    done.store(true, Ordering::SeqCst);
    let samples = monitor.join().expect("memory stayed bounded");
    let model = model.lock().expect("model").clone();
    check_reads(&registry, &model).expect("reads after the stall");
    check_sqlite_rows(&registry, &model).expect("SQLite after the stall");
    let stats = registry.stats();
    assert_eq!(
        stats.last_op_key,
        model.count(),
        "refused writes are not logged"
    );
    eprintln!("{samples} memory samples, {op_bytes} bytes per op, {stats:?}");
    registry.close().expect("close");
}

/// Fails the next `failures` batches with `code`, then applies; records each attempt's keys.
struct Failing {
    failures: Arc<AtomicU32>,
    attempts: Arc<Mutex<Vec<Vec<u64>>>>,
}

fn failing_hook(code: i32) -> (Failing, ApplyHook) {
    let failing = Failing {
        failures: Arc::new(AtomicU32::new(0)),
        attempts: Arc::new(Mutex::new(Vec::new())),
    };
    let (failures, attempts) = (Arc::clone(&failing.failures), Arc::clone(&failing.attempts));
    let hook = hook(move |keys| {
        attempts.lock().expect("attempts").push(keys.to_vec());
        let fail = failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        if fail {
            Err(sqlite_error(code))
        } else {
            Ok(())
        }
    });
    (failing, hook)
}

/// Ops whose double application would show: adds, marks, removes and re-adds of handles
/// already in SQLite (`round` 1) or still buffered.
fn batch_ops(round: usize) -> Vec<Op> {
    let mut ops = Vec::new();
    for index in 0..12 {
        ops.push(Op::Add(shape(
            &format!("h{index:02}"),
            format!("c{index:02}/{round}").as_bytes(),
            index,
            &[index as u32 % 3],
            round as u8,
        )));
    }
    for index in 0..4 {
        ops.push(Op::MarkComplete(format!("h{index:02}")));
        ops.push(Op::Remove(format!("h{:02}", index + 4)));
    }
    ops.push(Op::Add(shape("h05", b"c05/again", 5, &[1], 9)));
    ops.push(Op::MarkStarted("h05".into()));
    ops
}

#[test]
fn a_transiently_failing_batch_is_retried_and_applied_exactly_once() {
    within(Duration::from_secs(60), "transient failures", || {
        for code in [ffi::SQLITE_BUSY, ffi::SQLITE_IOERR, ffi::SQLITE_FULL] {
            transient_failures(code);
        }
    });
}

fn transient_failures(code: i32) {
    let (failing, hook) = failing_hook(code);
    let mut config = Harness::config(SyncPolicy::Sync, 1_000);
    config.retry_backoff_max_ms = 20;
    config.apply_hook = Some(hook);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut harness = Harness::new(dir.path(), config).expect("open");
    let mut expected_failures = 0;
    // Round 0 on an empty database; round 1 removes and re-adds what round 0 flushed.
    for (round, failures) in [(0, 5u32), (1, 3)] {
        if round == 1 {
            for op in (0..12).map(|index| Op::Remove(format!("h{index:02}"))) {
                harness.step(&op).expect("remove");
            }
        }
        for op in batch_ops(round) {
            harness
                .step(&op)
                .unwrap_or_else(|problem| panic!("code {code}: {problem}"));
        }
        let before = harness.registry().stats();
        failing.attempts.lock().expect("attempts").clear();
        failing.failures.store(failures, Ordering::SeqCst);
        // Flush waits through the retries, then compares SQLite with the model.
        harness
            .step(&Op::Flush)
            .unwrap_or_else(|problem| panic!("code {code}: {problem}"));
        expected_failures += u64::from(failures);
        let stats = harness.registry().stats();
        assert_eq!(stats.flush_failures, expected_failures, "code {code}");
        assert_eq!(
            stats.flush_batches,
            before.flush_batches + 1,
            "one batch, committed once"
        );
        assert_eq!(stats.ops_flushed, harness.model().last_op_key());
        assert!(
            harness.registry().store().failure().is_none(),
            "transient: not failed"
        );
        let attempts = failing.attempts.lock().expect("attempts").clone();
        assert_eq!(attempts.len(), failures as usize + 1, "code {code}");
        let keys: Vec<u64> = (before.applied_op_key + 1..=before.last_op_key).collect();
        assert!(
            attempts.iter().all(|attempt| *attempt == keys),
            "every attempt retries the same batch: {attempts:?}"
        );
        assert_eq!(
            read_meta(harness.registry()).expect("meta"),
            (harness.model().count(), harness.model().last_op_key())
        );
    }
    harness.finish().expect("reopen");
}

#[test]
fn a_deterministically_failing_batch_fails_the_store_and_a_reopen_applies_everything() {
    within(Duration::from_secs(60), "deterministic failure", || {
        for code in [ffi::SQLITE_CONSTRAINT, ffi::SQLITE_CORRUPT] {
            deterministic_failure(code);
        }
    });
}

fn deterministic_failure(code: i32) {
    let (failing, hook) = failing_hook(code);
    let mut config = Harness::config(SyncPolicy::Sync, 1_000);
    config.retry_backoff_max_ms = 20;
    config.deterministic_failure_attempts = 2;
    let clean = config.clone();
    config.apply_hook = Some(hook);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut harness = Harness::new(dir.path(), config).expect("open");
    for op in batch_ops(0)
        .into_iter()
        .chain([Op::Flush])
        .chain(batch_ops(1).into_iter().skip(12))
    {
        harness
            .step(&op)
            .unwrap_or_else(|problem| panic!("code {code}: {problem}"));
    }
    let buffered = harness.registry().stats().pending_ops;
    assert!(buffered > 0);
    failing.failures.store(u32::MAX, Ordering::SeqCst);
    let registry = harness.registry();
    match registry.flush() {
        Err(RegistryError::Store(Error::StoreFailed { cause })) => {
            assert!(matches!(*cause, Error::Sqlite { .. }), "{cause}");
        }
        other => panic!("flush of a failing batch: {other:?}"),
    }
    assert!(matches!(
        registry.store().failure(),
        Some(Error::Sqlite { .. })
    ));
    let stats = registry.stats();
    assert_eq!(
        stats.flush_failures, 2,
        "tried deterministic_failure_attempts times"
    );
    assert_eq!(stats.pending_ops, buffered, "nothing dropped");
    // Writes are refused with a typed error and not logged.
    let last_op_key = stats.last_op_key;
    let refused = [
        ("add", registry.add_shape(shape("new", b"new", 0, &[], 0))),
        (
            "try_add",
            registry.try_add_shape(shape("new", b"new", 0, &[], 0)),
        ),
        ("remove", registry.remove_shape("h00")),
        ("mark", registry.mark_snapshot_started("h00")),
        ("reset", registry.reset()),
    ];
    for (what, outcome) in refused {
        assert!(
            matches!(
                outcome,
                Err(RegistryError::Store(Error::StoreFailed { .. }))
            ),
            "{what} on a failed store: {outcome:?}"
        );
    }
    assert_eq!(registry.stats().last_op_key, last_op_key);
    // Reads keep working and see every acknowledged op.
    check_reads(registry, harness.model())
        .unwrap_or_else(|problem| panic!("code {code}: {problem}"));
    // Reopened without the fault, the store replays and applies everything.
    harness
        .reopen_with(clean)
        .unwrap_or_else(|problem| panic!("code {code}: {problem}"));
    harness.step(&Op::Flush).expect("flush after reopen");
    check_sqlite(harness.registry(), harness.model()).expect("SQLite after reopen");
    harness.finish().expect("finish");
}

/// Every row of every walbuf table, in a fixed order, read on a connection of its own.
fn database_rows(database: &std::path::Path) -> Vec<Vec<rusqlite::types::Value>> {
    let connection = rusqlite::Connection::open(database).expect("open the database");
    let mut rows = Vec::new();
    for query in [
        "SELECT * FROM shapes ORDER BY handle",
        "SELECT * FROM relations ORDER BY oid, handle",
        "SELECT * FROM walbuf_meta",
    ] {
        let mut statement = connection.prepare(query).expect("prepare");
        let columns = statement.column_count();
        let mut found = statement.query([]).expect("query");
        while let Some(row) = found.next().expect("row") {
            rows.push(
                (0..columns)
                    .map(|column| row.get(column).expect("value"))
                    .collect(),
            );
        }
    }
    rows
}

#[test]
fn a_batch_failing_after_its_first_rows_is_rolled_back_whole() {
    within(Duration::from_secs(60), "mid-batch failure", || {
        let mut config = Harness::config(SyncPolicy::Sync, 1_000);
        // One attempt: what the database holds afterwards is that attempt's doing.
        config.deterministic_failure_attempts = 1;
        let dir = tempfile::tempdir().expect("tempdir");
        let database = dir.path().join(walbuf::store::DATABASE_FILE);
        let mut harness = Harness::new(dir.path(), config.clone()).expect("open");
        for op in batch_ops(0).into_iter().chain([Op::Flush]) {
            harness.step(&op).expect("first batch");
        }
        let committed = database_rows(&database);
        // A fault SQLite itself raises partway through the next batch: the insert of the
        // batch's last shape fails, after its other writes (marks, removes, a re-add, ten new
        // shapes and their relations) ran inside the same transaction.
        let poison = "zz-poison";
        rusqlite::Connection::open(&database)
            .expect("open the database")
            .execute_batch(&format!(
                "CREATE TRIGGER poison BEFORE INSERT ON shapes WHEN NEW.handle = '{poison}'
                 BEGIN SELECT RAISE(ABORT, 'injected fault'); END;"
            ))
            .expect("install the fault");
        let next: Vec<Op> = batch_ops(1)
            .into_iter()
            .skip(12)
            .chain((0..10).map(|index| {
                Op::Add(shape(
                    &format!("n{index:02}"),
                    format!("n{index:02}").as_bytes(),
                    index,
                    &[7, index as u32],
                    1,
                ))
            }))
            .chain([Op::Add(shape(poison, b"poison", 99, &[7], 1))])
            .collect();
        for op in &next {
            harness.step(op).expect("buffered op");
        }
        let registry = harness.registry();
        match registry.flush() {
            Err(RegistryError::Store(Error::StoreFailed { cause })) => {
                assert!(
                    cause.to_string().contains("injected fault"),
                    "the failure names its cause: {cause}"
                );
            }
            other => panic!("flush of a batch SQLite aborts: {other:?}"),
        }
        assert_eq!(registry.stats().flush_failures, 1);
        // Not one write of the failed batch reached the database, nor its op key.
        assert_eq!(
            database_rows(&database),
            committed,
            "a failed batch leaves the database as the last commit left it"
        );
        check_reads(registry, harness.model()).expect("reads see every acknowledged op");
        // Without the fault, a reopen applies the whole batch, once.
        rusqlite::Connection::open(&database)
            .expect("open the database")
            .execute_batch("DROP TRIGGER poison")
            .expect("remove the fault");
        harness.reopen_with(config).expect("reopen");
        harness.step(&Op::Flush).expect("flush after reopen");
        check_sqlite(harness.registry(), harness.model()).expect("SQLite after reopen");
        harness.finish().expect("finish");
    });
}

fn database_bytes(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut directories = vec![dir.to_path_buf()];
    while let Some(directory) = directories.pop() {
        for entry in std::fs::read_dir(&directory).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                directories.push(path);
            } else {
                let name = path
                    .strip_prefix(dir)
                    .expect("inside")
                    .display()
                    .to_string();
                files.push((name, std::fs::read(&path).expect("read")));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn a_database_of_another_version_or_schema_is_refused_and_left_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Harness::config(SyncPolicy::Sync, 1_000);
    {
        let mut harness = Harness::new(dir.path(), config.clone()).expect("open");
        for op in batch_ops(0) {
            harness.step(&op).expect("step");
        }
        harness.step(&Op::Flush).expect("flush");
        harness.registry().close().expect("close");
    }
    let database = dir.path().join(walbuf::store::DATABASE_FILE);
    let tamper = |sql: &str| {
        let connection = rusqlite::Connection::open(&database).expect("open database");
        connection.execute_batch(sql).expect("tamper");
    };
    for (sql, found) in [
        ("PRAGMA user_version = 2", "shapes v2"),
        (
            "PRAGMA user_version = 0",
            "walbuf tables without a schema version",
        ),
        (
            "PRAGMA user_version = 1; UPDATE walbuf_meta SET value = 'kv' WHERE name = 'schema'",
            "kv v1",
        ),
    ] {
        tamper(sql);
        let before = database_bytes(dir.path());
        assert!(
            before
                .iter()
                .any(|(name, _)| name == walbuf::store::DATABASE_FILE)
        );
        for attempt in 0..2 {
            match ShapeRegistry::open(dir.path(), config.clone()) {
                Err(Error::IncompatibleDatabase {
                    found: got,
                    expected,
                    path,
                }) => {
                    assert_eq!(got, found, "{sql}");
                    assert_eq!(expected, "shapes v1");
                    assert_eq!(path, database);
                }
                other => panic!("{sql} (attempt {attempt}): {other:?}"),
            }
            assert_eq!(
                database_bytes(dir.path()),
                before,
                "{sql}: never wiped or touched"
            );
        }
    }
    tamper("UPDATE walbuf_meta SET value = 'shapes' WHERE name = 'schema'");
    let (registry, report) = ShapeRegistry::open(dir.path(), config).expect("repaired");
    assert_eq!(report.ops_replayed, 0);
    let mut model = Model::new();
    for op in batch_ops(0) {
        match op {
            Op::Add(new) => drop(model.add(&new)),
            Op::Remove(handle) => drop(model.remove(&handle)),
            Op::MarkComplete(handle) => {
                drop(model.mark(&handle, walbuf::SnapshotState::Complete));
            }
            Op::MarkStarted(handle) => drop(model.mark(&handle, walbuf::SnapshotState::Started)),
            other => unreachable!("{other:?}"),
        }
    }
    check_reads(&registry, &model).expect("the data is intact");
    check_sqlite(&registry, &model).expect("the data is intact");
}

#[test]
fn a_second_open_of_a_directory_is_refused_as_locked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Harness::config(SyncPolicy::Sync, 1_000);
    let (first, _) = ShapeRegistry::open(dir.path(), config.clone()).expect("open");
    first.add_shape(shape("h1", b"c1", 0, &[], 0)).expect("add");
    // The log's idle sync marks and SQLite's shared-memory file may change meanwhile: the
    // database and its WAL may not.
    let sqlite_files = |dir: &std::path::Path| -> Vec<(String, Vec<u8>)> {
        database_bytes(dir)
            .into_iter()
            .filter(|(name, _)| name.starts_with("walbuf.db") && !name.ends_with("-shm"))
            .collect()
    };
    let before = sqlite_files(dir.path());
    for _ in 0..2 {
        match ShapeRegistry::open(dir.path(), config.clone()) {
            Err(Error::Locked { path }) => {
                assert_eq!(path, dir.path().join(walbuf::store::LOG_DIRECTORY));
            }
            other => panic!("second open: {other:?}"),
        }
    }
    assert_eq!(
        sqlite_files(dir.path()),
        before,
        "the refused open touched nothing"
    );
    // The first instance is undisturbed.
    first.add_shape(shape("h2", b"c2", 0, &[], 0)).expect("add");
    first.flush().expect("flush");
    assert_eq!(first.count_shapes().expect("count"), 2);
    first.close().expect("close");
    drop(first);
    let (second, _) = ShapeRegistry::open(dir.path(), config).expect("open once released");
    assert_eq!(second.count_shapes().expect("count"), 2);
}
