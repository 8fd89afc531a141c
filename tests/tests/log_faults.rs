//! Faults on the simulated disk:
//! * a sync that fails with `EIO` — whichever sync it is: a group sync, the sync of a full
//!   segment at rotation, a new segment's header — poisons the log: the append waiting on it
//!   and every later append or sync fail with `Error::Poisoned` (its cause the I/O error),
//!   nobody hangs, and the log reopened from the crash or from any power-loss image holds
//!   every acknowledged record and nothing invented;
//! * a failed directory sync at rotation does the same;
//! * a full disk at rotation gives the typed `Error::DiskFull` (naming the file and size) and
//!   loses nothing acknowledged, with or without the background preparation of segments.
#![allow(clippy::print_stderr)]

use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use walbuf::log::{Config, Log};
use walbuf::{Error, SyncPolicy};
use walbuf_recovery::Options;
use walbuf_tests::check::{Ledger, check_image, open_collect, seed, unique_payload, within};
use walbuf_tests::sim::{PowerLoss, SimDisk, SimStorage, SyncFault};

const SEGMENT_BYTES: u64 = 8 * 1024;

fn config(prepare_ahead: bool) -> Config {
    Config {
        segment_size_bytes: SEGMENT_BYTES,
        max_record_bytes: 2048,
        sync_policy: SyncPolicy::Sync,
        prepare_ahead,
        ..Config::default()
    }
}

/// Appends from `threads` threads under `Sync` until each gets an error (or `per_thread`
/// records are in); returns the first error of each thread.
fn append_until_error(
    log: &Arc<Log<SimStorage>>,
    ledger: &Ledger,
    threads: u64,
    per_thread: u64,
) -> Vec<Option<Error>> {
    let handles: Vec<_> = (0..threads)
        .map(|thread| {
            let (log, ledger) = (Arc::clone(log), ledger.clone());
            std::thread::spawn(move || {
                for index in 0..per_thread {
                    let payload =
                        unique_payload((thread << 32) | index, 200 + (index as usize * 97) % 600);
                    ledger.submit(1, &payload);
                    match log.append(1, &payload) {
                        Ok(key) => ledger.acknowledge(key, 1, &payload),
                        Err(error) => return Some(error),
                    }
                }
                None
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|handle| handle.join().expect("appender"))
        .collect()
}

/// Every acknowledged record survives a process crash and every kind of power loss now.
fn check_survivors(
    disk: &SimDisk,
    config: &Config,
    ledger: &Ledger,
    seed: u64,
) -> Result<(), String> {
    let acknowledged = ledger.acknowledged();
    check_image(disk.process_crash_image(), config, 0, ledger, &acknowledged)
        .map_err(|problem| format!("process crash: {problem}"))?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for how in PowerLoss::all() {
        check_image(
            disk.power_loss_image(how, &mut rng),
            config,
            0,
            ledger,
            &acknowledged,
        )
        .map_err(|problem| format!("power loss {how:?}: {problem}"))?;
    }
    Ok(())
}

fn assert_poisoned_by_eio(error: &Error, context: &str) {
    let Error::Poisoned { cause } = error else {
        panic!("{context}: expected Poisoned, got {error}");
    };
    match &**cause {
        Error::Io { source, path, .. } => {
            assert_eq!(source.raw_os_error(), Some(5), "{context}: {cause}");
            assert!(
                path.starts_with("sim:/"),
                "{context}: the cause names the file: {cause}"
            );
        }
        other => panic!("{context}: expected an I/O cause, got {other}"),
    }
    assert!(
        error.to_string().contains("reopen"),
        "the error says what to do: {error}"
    );
}

/// The log must be poisoned for good: appends and close say so. (`Log::sync` is checked
/// apart, see `sync_on_a_poisoned_log_reports_the_poison`.)
fn assert_stays_poisoned(log: &Log<SimStorage>, context: &str) {
    assert!(log.poisoned().is_some(), "{context}");
    for policy in [SyncPolicy::Sync, SyncPolicy::None] {
        let error = log.append_with(1, b"later", policy).expect_err("poisoned");
        assert_poisoned_by_eio(&error, context);
    }
    assert_poisoned_by_eio(&log.close().expect_err("poisoned"), context);
}

/// `Log::sync` is documented to fail with `Poisoned` "if a sync fails (now or before)". When
/// the failed sync was a new segment's header sync, every record appended is already durable,
/// and `sync` returns `Ok` on the poisoned log.
#[test]
fn sync_on_a_poisoned_log_reports_the_poison() {
    let storage = SimStorage::new();
    let disk = storage.disk();
    let (log, _, _) = open_collect(
        storage,
        // No idle sync marks: they would take sync numbers at moments of their own.
        Config {
            idle_mark_ms: 600_000,
            ..config(false)
        },
        Options::default(),
    )
    .expect("open");
    // Fill the first segment, then fail the header sync of the second.
    while log.stats().last_op_key * 600 < SEGMENT_BYTES {
        log.append(1, &[1; 500]).expect("append");
    }
    disk.fail_syncs(SyncFault::From {
        at: disk.counters().syncs + 2,
    });
    let error = loop {
        if let Err(error) = log.append(1, &[2; 500]) {
            break error;
        }
    };
    assert_poisoned_by_eio(&error, "header sync fails");
    assert_eq!(
        log.stats().durable_op_key,
        log.stats().last_op_key,
        "all appended is durable"
    );
    assert_poisoned_by_eio(&log.sync().expect_err("poisoned"), "sync after the poison");
}

/// Fails the k-th segment sync after open, for every k over a workload that rotates several
/// times, with one writer (so that k hits each kind of sync in turn).
#[test]
fn any_failed_sync_poisons_and_loses_nothing_acknowledged() {
    let seed = seed();
    eprintln!("seed {seed}");
    let mut failed_at_rotation = 0;
    for k in 1..=60 {
        let storage = SimStorage::new();
        let disk = storage.disk();
        let ledger = Ledger::new();
        let (log, _, _) = open_collect(storage, config(false), Options::default()).expect("open");
        disk.fail_syncs(SyncFault::Once {
            at: disk.counters().syncs + k,
        });
        let log = Arc::new(log);
        let (worker_log, worker_ledger) = (Arc::clone(&log), ledger.clone());
        let errors = within(
            Duration::from_secs(20),
            "a writer facing a failed sync",
            move || append_until_error(&worker_log, &worker_ledger, 1, 100),
        );
        let context = format!("sync {k} fails");
        let error = errors[0]
            .as_ref()
            .unwrap_or_else(|| panic!("{context}: no append failed"));
        assert_poisoned_by_eio(error, &context);
        if log.stats().rotations > 0
            && matches!(error, Error::Poisoned { cause } if cause.to_string().contains("header"))
        {
            failed_at_rotation += 1;
        }
        assert_eq!(disk.counters().failed_syncs, 1, "{context}");
        assert_stays_poisoned(&log, &context);
        if let Err(problem) = check_survivors(&disk, &config(false), &ledger, seed ^ k) {
            panic!("{context} (seed {seed}): {problem}");
        }
    }
    assert!(
        failed_at_rotation > 0,
        "some k must hit a new segment's header sync"
    );
}

/// Every sync from the k-th on fails, with four writers: each gets `Poisoned`, none hangs.
#[test]
fn concurrent_writers_all_see_the_poison() {
    let seed = seed();
    eprintln!("seed {seed}");
    for k in [1, 2, 5, 17, 40] {
        let storage = SimStorage::new();
        let disk = storage.disk();
        let ledger = Ledger::new();
        let (log, _, _) = open_collect(storage, config(true), Options::default()).expect("open");
        disk.fail_syncs(SyncFault::From {
            at: disk.counters().syncs + k,
        });
        let log = Arc::new(log);
        let (worker_log, worker_ledger) = (Arc::clone(&log), ledger.clone());
        let errors = within(
            Duration::from_secs(20),
            "writers facing failed syncs",
            move || append_until_error(&worker_log, &worker_ledger, 4, 200),
        );
        let context = format!("syncs from {k} on fail");
        for error in &errors {
            assert_poisoned_by_eio(
                error
                    .as_ref()
                    .unwrap_or_else(|| panic!("{context}: a writer never failed")),
                &context,
            );
        }
        assert_stays_poisoned(&log, &context);
        if let Err(problem) = check_survivors(&disk, &config(true), &ledger, seed ^ k) {
            panic!("{context} (seed {seed}): {problem}");
        }
    }
}

#[test]
fn a_failed_directory_sync_at_rotation_poisons_and_loses_nothing_acknowledged() {
    let seed = seed();
    eprintln!("seed {seed}");
    for rotation in 1..=3 {
        let storage = SimStorage::new();
        let disk = storage.disk();
        let ledger = Ledger::new();
        let (log, _, _) = open_collect(storage, config(false), Options::default()).expect("open");
        disk.fail_directory_syncs(SyncFault::Once {
            at: disk.counters().directory_syncs + rotation,
        });
        let log = Arc::new(log);
        let (worker_log, worker_ledger) = (Arc::clone(&log), ledger.clone());
        let errors = within(
            Duration::from_secs(20),
            "a writer facing a failed directory sync",
            move || append_until_error(&worker_log, &worker_ledger, 1, 200),
        );
        let context = format!("directory sync of rotation {rotation} fails");
        assert_poisoned_by_eio(errors[0].as_ref().expect("an append failed"), &context);
        assert_eq!(log.stats().rotations, rotation - 1, "{context}");
        assert_stays_poisoned(&log, &context);
        if let Err(problem) = check_survivors(&disk, &config(false), &ledger, seed ^ rotation) {
            panic!("{context} (seed {seed}): {problem}");
        }
    }
}

/// The disk holds three segments: the third rotation cannot create a fourth.
#[test]
fn a_full_disk_at_rotation_is_disk_full_and_loses_nothing_acknowledged() {
    let seed = seed();
    eprintln!("seed {seed}");
    for prepare_ahead in [false, true] {
        let storage = SimStorage::new();
        let disk = storage.disk();
        disk.set_capacity_bytes(Some(3 * SEGMENT_BYTES));
        let ledger = Ledger::new();
        let config = config(prepare_ahead);
        let (log, _, _) = open_collect(storage, config.clone(), Options::default()).expect("open");
        let log = Arc::new(log);
        let (worker_log, worker_ledger) = (Arc::clone(&log), ledger.clone());
        let errors = within(
            Duration::from_secs(20),
            "a writer on a full disk",
            move || append_until_error(&worker_log, &worker_ledger, 1, 1000),
        );
        let context = format!("prepare_ahead {prepare_ahead}");
        let error = errors[0]
            .as_ref()
            .unwrap_or_else(|| panic!("{context}: the disk never filled"));
        // The typed error, directly or as the cause the log was poisoned with.
        let disk_full = match error {
            Error::Poisoned { cause } => &**cause,
            other => other,
        };
        match disk_full {
            Error::DiskFull { path, len_bytes } => {
                assert_eq!(*len_bytes, SEGMENT_BYTES, "{context}");
                assert!(
                    path.starts_with("sim:/"),
                    "{context}: names the file: {path:?}"
                );
            }
            other => panic!("{context}: expected DiskFull, got {other}"),
        }
        assert_eq!(log.stats().rotations, 2, "{context}");
        assert!(disk.counters().creates_refused >= 1, "{context}");
        assert!(!ledger.acknowledged().is_empty());
        if let Err(problem) = check_survivors(&disk, &config, &ledger, seed) {
            panic!("{context} (seed {seed}): {problem}");
        }
        // Reopened on the same (still full) disk, everything acknowledged is there.
        drop(log);
        let (_log, _, recovered) = open_collect(disk.storage(), config, Options::default())
            .expect("reopen on the full disk");
        ledger
            .check(&ledger.acknowledged(), &recovered)
            .unwrap_or_else(|problem| panic!("{context}: {problem}"));
    }
}
