//! Segments: rotation across many segment files (names, headers, sequence numbers and op keys
//! all chain), and retirement with `truncate_before` (whole segments below the key deleted from
//! the directory, durably; the reopened log starts above the watermark and keys continue) —
//! including a power cut at every persistence point of a retirement.
#![allow(clippy::print_stderr)]

use std::path::Path;
use std::sync::Arc;

use walbuf::SyncPolicy;
use walbuf::log::{Config, Log};
use walbuf::storage::FsStorage;
use walbuf_recovery::format::DEFAULT_MAX_RECORD_BYTES;
use walbuf_recovery::naming::{parse_segment_file_name, segment_file_name};
use walbuf_recovery::scanner::scan_segment;
use walbuf_recovery::{Options, ProblemKind};
use walbuf_tests::check::{
    Ledger, PowerLossProbe, Recovered, check_gapless, open_collect, seed, unique_payload,
};
use walbuf_tests::sim::{DirectoryLoss, PowerLoss, SimStorage};

fn config() -> Config {
    Config {
        segment_size_bytes: 8 * 1024,
        max_record_bytes: 2048,
        sync_policy: SyncPolicy::None,
        ..Config::default()
    }
}

fn open(
    dir: &Path,
    watermark: u64,
) -> walbuf::Result<(Log, walbuf_recovery::Report, Vec<Recovered>)> {
    let storage = FsStorage::open(dir)?;
    let options = Options {
        watermark,
        ..Options::default()
    };
    open_collect(storage, config(), options)
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .into_string()
                .expect("utf-8 name")
        })
        .collect();
    names.sort();
    names
}

fn segment_names(dir: &Path) -> Vec<String> {
    names(dir)
        .into_iter()
        .filter(|name| name.ends_with(".wal"))
        .collect()
}

/// Appends `count` records of 100..600 bytes from 4 threads; returns the records by key.
fn append(log: &Arc<Log>, count: u64, first_id: u64) -> Vec<Recovered> {
    let threads: Vec<_> = (0..4)
        .map(|thread| {
            let log = Arc::clone(log);
            std::thread::spawn(move || {
                (0..count / 4)
                    .map(|index| {
                        let id = first_id + thread * count + index;
                        let payload = unique_payload(id, 100 + (id as usize * 31) % 500);
                        let op_key = log.append(3, &payload).expect("append");
                        Recovered {
                            op_key,
                            kind: 3,
                            payload,
                        }
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut records: Vec<Recovered> = threads
        .into_iter()
        .flat_map(|thread| thread.join().expect("thread"))
        .collect();
    records.sort();
    records
}

#[test]
fn rotation_chains_many_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _, _) = open(dir.path(), 0).expect("open");
    let log = Arc::new(log);
    let appended = append(&log, 2000, 0);
    let stats = log.stats();
    log.close().expect("close");
    drop(log);

    let segments = segment_names(dir.path());
    assert!(
        segments.len() >= 50,
        "{} segments: {stats:?}",
        segments.len()
    );
    assert_eq!(segments.len() as u64, stats.segments);
    assert_eq!(
        stats.rotations + 1,
        stats.segments,
        "one segment at open, one per rotation"
    );
    assert_eq!(
        names(dir.path()).len(),
        segments.len() + 1,
        "only segments and the lock file remain (no prepared files): {:?}",
        names(dir.path())
    );
    let mut next_key = 1;
    for (index, name) in segments.iter().enumerate() {
        let bytes = std::fs::read(dir.path().join(name)).expect("read");
        assert_eq!(
            bytes.len() as u64,
            config().segment_size_bytes,
            "{name} is preallocated in full"
        );
        let scan = scan_segment(&bytes, DEFAULT_MAX_RECORD_BYTES).expect("header");
        assert_eq!(scan.header.sequence, index as u64 + 1, "{name}");
        assert_eq!(scan.header.first_op_key, next_key, "{name}");
        assert_eq!(name, &segment_file_name(next_key));
        assert!(scan.damage.is_none(), "{name}: {:?}", scan.damage);
        assert!(!scan.records.is_empty(), "{name} holds records");
        next_key = scan.next_op_key();
    }
    assert_eq!(next_key, 2001);

    let (log, report, recovered) = open(dir.path(), 0).expect("reopen");
    assert_eq!(report.segments.len(), segments.len());
    assert_eq!(recovered, appended);
    assert_eq!(log.append(1, b"next").expect("append"), 2001);
}

#[test]
fn truncate_before_deletes_whole_segments_below_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _, _) = open(dir.path(), 0).expect("open");
    let log = Arc::new(log);
    let appended = append(&log, 800, 0);
    let before = segment_names(dir.path());
    let firsts: Vec<u64> = before
        .iter()
        .map(|name| parse_segment_file_name(name).expect("segment name"))
        .collect();
    assert!(before.len() >= 10);

    // A key inside the 6th segment: segments 1..=5 hold only keys below it.
    let key = firsts[5] + 3;
    assert_eq!(log.truncate_before(key).expect("retire"), 5);
    assert_eq!(
        segment_names(dir.path()),
        before[5..].to_vec(),
        "exactly the first five are gone"
    );
    assert_eq!(log.stats().segments_retired, 5);
    // Idempotent; and never the segment holding the key.
    assert_eq!(log.truncate_before(key).expect("retire again"), 0);
    assert_eq!(log.truncate_before(firsts[6]).expect("retire one more"), 1);
    assert_eq!(segment_names(dir.path()), before[6..].to_vec());
    let more = append(&log, 40, 10_000);
    log.close().expect("close");
    drop(log);

    // Ops below the oldest segment are gone: reopening as if none were applied downstream
    // is refused, with a typed error.
    let error = open(dir.path(), 0).expect_err("ops 1.. are missing");
    assert!(
        matches!(&error, walbuf::Error::Recovery(inner) if matches!(**inner, walbuf_recovery::Error::MissingOps { expected: 1, .. })),
        "{error}"
    );
    // With the watermark the application keeps, the log reopens and replays above it.
    let watermark = firsts[6] - 1;
    let (log, report, recovered) = open(dir.path(), watermark).expect("reopen above the watermark");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let expected: Vec<Recovered> = appended
        .into_iter()
        .chain(more)
        .filter(|record| record.op_key > watermark)
        .collect();
    assert_eq!(recovered, expected);
    assert_eq!(log.append(1, b"next").expect("append"), 841);
    // Retiring everything but the active segment leaves exactly one file.
    log.truncate_before(u64::MAX).expect("retire all");
    assert_eq!(segment_names(dir.path()).len(), 1);
}

/// Every file of the directory, by name, with its bytes.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    names(dir)
        .into_iter()
        .map(|name| {
            let bytes = std::fs::read(dir.join(&name)).expect("read");
            (name, bytes)
        })
        .collect()
}

#[test]
fn a_lost_middle_segment_refuses_the_open_and_touches_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _, _) = open(dir.path(), 0).expect("open");
    let log = Arc::new(log);
    let appended = append(&log, 400, 0);
    log.close().expect("close");
    drop(log);
    let segments = segment_names(dir.path());
    assert!(segments.len() >= 6, "{segments:?}");

    // Lose a segment in the middle: every op in it is unapplied (watermark 0).
    let lost = &segments[segments.len() / 2];
    let after_lost = &segments[segments.len() / 2 + 1];
    std::fs::remove_file(dir.path().join(lost)).expect("lose a segment");
    let before = snapshot(dir.path());
    let error = open(dir.path(), 0).expect_err("ops are provably missing");
    match &error {
        walbuf::Error::Recovery(inner) => match &**inner {
            walbuf_recovery::Error::Inconsistent { segment, .. } => {
                assert_eq!(segment, after_lost, "the error names where the loss shows");
            }
            other => panic!("a lost segment, not {other:?}"),
        },
        other => panic!("a recovery error, not {other:?}"),
    }
    assert!(error.to_string().contains(after_lost.as_str()), "{error}");
    // The refused open deleted, cut and rewrote nothing: the operator can still restore the
    // lost file, or choose point-in-time recovery.
    assert_eq!(
        snapshot(dir.path()),
        before,
        "a refused open changes no file"
    );

    // Point-in-time keeps exactly the ops before the loss and says what it discarded.
    let lost_first = parse_segment_file_name(lost).expect("segment name");
    let storage = FsStorage::open(dir.path()).expect("storage");
    let options = Options {
        mode: walbuf_recovery::Mode::PointInTime,
        ..Options::default()
    };
    let (log, report, recovered) =
        open_collect(storage, config(), options).expect("point-in-time opens");
    let kept: Vec<Recovered> = appended
        .into_iter()
        .filter(|record| record.op_key < lost_first)
        .collect();
    assert_eq!(recovered, kept);
    assert!(
        report
            .discarded_segments
            .iter()
            .any(|name| name == after_lost),
        "{:?}",
        report.discarded_segments
    );
    assert_eq!(log.append(1, b"next").expect("append"), lost_first);
}

/// Retirement on the simulated disk, with a power cut at every persistence point (every
/// remove and the directory sync after them) in each of the in-order directory models.
#[test]
fn retirement_survives_power_loss_at_every_point() {
    retirement_under_power_loss(&DirectoryLoss::IN_ORDER);
}

/// The same with directory operations persisted in any order (POSIX promises nothing
/// without a directory sync): a power cut may bring back a later retired segment but not an
/// earlier one.
#[test]
fn retirement_survives_power_loss_with_unordered_directory_operations() {
    retirement_under_power_loss(&[DirectoryLoss::RandomSubset]);
}

fn retirement_under_power_loss(directory: &[DirectoryLoss]) {
    let seed = seed();
    eprintln!("seed {seed}");
    let config = Config {
        sync_policy: SyncPolicy::Sync,
        prepare_ahead: false,
        ..config()
    };
    let storage = SimStorage::new();
    let disk = storage.disk();
    let ledger = Ledger::new();
    let (log, _, _) = open_collect(storage, config.clone(), Options::default()).expect("open");
    for index in 0..120 {
        let payload = unique_payload(index, 300);
        ledger.submit(1, &payload);
        let key = log
            .append_with(1, &payload, SyncPolicy::None)
            .expect("append");
        ledger.acknowledge(key, 1, &payload);
    }
    log.sync().expect("sync");
    let segments = disk.file_names();
    assert!(segments.len() >= 5, "{segments:?}");
    let key = parse_segment_file_name(&segments[4]).expect("segment name");

    let probe = PowerLossProbe::install(
        &disk,
        &ledger,
        &config,
        PowerLoss::combinations(directory),
        seed,
    );
    probe.set_watermark(key - 1);
    assert_eq!(log.truncate_before(key).expect("retire"), 4);
    for index in 120..130 {
        let payload = unique_payload(index, 300);
        ledger.submit(1, &payload);
        let op_key = log.append(1, &payload).expect("append");
        ledger.acknowledge(op_key, 1, &payload);
    }
    log.close().expect("close");
    disk.clear_hook();
    let durable = disk.durable_file_names();
    assert!(
        segments[..4].iter().all(|name| !durable.contains(name))
            && durable.starts_with(&segments[4..]),
        "the removes are durable: {durable:?}"
    );
    assert!(probe.images() > 0);
    probe.assert_clean(seed);

    // And a plain reopen of what is left.
    let options = Options {
        watermark: key - 1,
        ..Options::default()
    };
    let (_log, report, recovered) = open_collect(disk.storage(), config, options).expect("reopen");
    assert!(
        !report
            .problems
            .iter()
            .any(|problem| matches!(problem.kind, ProblemKind::MissingOps { .. })),
        "{:?}",
        report.problems
    );
    check_gapless(&recovered, key).expect("gapless above the watermark");
    assert_eq!(recovered.last().map(|record| record.op_key), Some(130));
}
