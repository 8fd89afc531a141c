//! Power loss *during recovery*, on the simulated disk. `docs/recovery.md` promises that
//! recovery's own writes — deleting half-prepared segments, deleting what a point-in-time
//! recovery discards, erasing the torn tail, the directory sync, syncing the recovered prefix,
//! installing a new segment — are each idempotent, so a crash part-way leaves a log that the
//! next open recovers the same way.
//!
//! Each test takes crash images that give recovery real work (a torn tail; unsynced bytes and
//! unsynced directory operations kept in the page cache by a process crash; a half-prepared
//! segment; several segments, some at or below the watermark; a watermark past the log's end;
//! a point-in-time open that discards segments), opens each with the persistence hook
//! installed, and keeps every image a power cut would leave at every persistence point of the
//! open and of what immediately follows it (retiring the segments at or below the watermark,
//! as the store's flusher does, and two appends acknowledged under `Sync`), with every
//! [`PowerLoss`] variant. Each of those images must then open in the default mode, hold every
//! acknowledged record, hold only the records of the original log in their order (a prefix,
//! nothing twice, nothing invented), and converge: a power cut right after that open changes
//! nothing. A few images are recovered again under the hook (a crash during the second
//! recovery) and their images checked the same way.
//!
//! A failure prints its seed; `WALBUF_SEED=<seed>` replays it, and `WALBUF_CRASH_TRIALS=<n>`
//! (default 1) checks `n` times as many starting images.
#![allow(clippy::print_stderr)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use walbuf::SyncPolicy;
use walbuf::log::Config;
use walbuf_recovery::naming::is_prepared_file_name;
use walbuf_recovery::{Mode, Options};
use walbuf_tests::check::{Acknowledged, Ledger, Recovered, open_collect, seed, unique_payload};
use walbuf_tests::sim::{PowerLoss, SimDisk, SimStorage};

/// Every record the log assigned an op key to: op key → (kind, payload).
type Written = BTreeMap<u64, (u8, Vec<u8>)>;

fn config(prepare_ahead: bool) -> Config {
    Config {
        segment_size_bytes: 16 * 1024,
        max_record_bytes: 4096,
        sync_policy: SyncPolicy::Sync,
        prepare_ahead,
        ..Config::default()
    }
}

/// How many times the default number of starting images to check.
fn trials() -> usize {
    std::env::var("WALBUF_CRASH_TRIALS")
        .ok()
        .and_then(|trials| trials.parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// A copy of `storage`'s disk as it stands (written and durable bytes, pending directory
/// operations), independent of the original.
fn copy(disk: &SimDisk) -> SimStorage {
    disk.process_crash_image()
}

/// What an original workload submitted and what the log gave back.
#[derive(Debug, Default, Clone)]
struct History {
    /// Every (kind, payload) submitted, in order.
    submitted: Vec<(u8, Vec<u8>)>,
    /// Op key → record, for every append that returned.
    written: Written,
}

impl History {
    /// A ledger knowing every submitted record, with `acknowledged` acknowledged.
    fn ledger(&self, acknowledged: &Acknowledged) -> Ledger {
        let ledger = Ledger::new();
        for (kind, payload) in &self.submitted {
            ledger.submit(*kind, payload);
        }
        for (op_key, (kind, payload)) in acknowledged {
            ledger.acknowledge(*op_key, *kind, payload);
        }
        ledger
    }
}

/// A crash image of the original workload: where recovery starts.
struct Start {
    label: String,
    /// Process crash or power loss, and the kind of point (phase and operation).
    kind: String,
    image: SimStorage,
    acknowledged: Acknowledged,
}

/// Runs a single writer appending `count` records (every third under `SyncPolicy::None`, so
/// that unsynced bytes follow durable ones), and keeps, at every persistence point, the image
/// a process crash would leave (page cache kept: unsynced bytes and directory operations for
/// recovery to make durable) and one a power cut would leave (a random [`PowerLoss`]: torn or
/// garbled tails, half-done directory operations).
fn original_workload(config: &Config, count: u64, seed: u64) -> (History, Vec<Start>) {
    let storage = SimStorage::with_sector_bytes(512);
    let disk = storage.disk();
    let (log, _, _) = open_collect(storage, config.clone(), Options::default()).expect("open");
    let acknowledged: Arc<Mutex<Acknowledged>> = Arc::default();
    let starts: Arc<Mutex<Vec<Start>>> = Arc::default();
    {
        let (acknowledged, starts) = (Arc::clone(&acknowledged), Arc::clone(&starts));
        let losses = PowerLoss::all();
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
        disk.set_hook(move |point, snapshot| {
            let acknowledged = acknowledged.lock().clone();
            let how = losses[rng.random_range(0..losses.len())];
            let label = format!("{:?} {:?} of op {}", point.phase, point.op, point.sequence);
            let operation = format!("{:?}", point.op);
            let operation = operation.split(' ').next().unwrap_or_default().to_owned();
            let kind = format!("{:?} {operation}", point.phase);
            let mut starts = starts.lock();
            starts.push(Start {
                label: format!("process crash at {label}"),
                kind: format!("process crash, {kind}"),
                image: snapshot.process_crash_image(),
                acknowledged: acknowledged.clone(),
            });
            starts.push(Start {
                label: format!("power loss {how:?} at {label}"),
                kind: format!("power loss, {kind}"),
                image: snapshot.power_loss_image(how, &mut rng),
                acknowledged,
            });
        });
    }
    let mut history = History::default();
    let mut rng = StdRng::seed_from_u64(seed);
    for index in 0..count {
        let payload = unique_payload((seed << 24) ^ index, rng.random_range(8..1200));
        let kind = rng.random_range(1..=127);
        history.submitted.push((kind, payload.clone()));
        let policy = if index % 3 == 2 {
            SyncPolicy::None
        } else {
            SyncPolicy::Sync
        };
        let op_key = log.append_with(kind, &payload, policy).expect("append");
        history.written.insert(op_key, (kind, payload.clone()));
        if policy == SyncPolicy::Sync {
            acknowledged.lock().insert(op_key, (kind, payload));
        }
    }
    disk.clear_hook();
    let rotations = log.stats().rotations;
    assert!(rotations >= 3, "the workload must rotate: {rotations}");
    drop(log);
    let starts = std::mem::take(&mut *starts.lock());
    (history, starts)
}

/// What a starting image asks of recovery, found by recovering a copy of it without a hook.
fn work_of(start: &Start, config: &Config) -> BTreeSet<&'static str> {
    let disk = start.image.disk();
    let mut work = BTreeSet::new();
    let names = disk.file_names();
    if names.iter().any(|name| is_prepared_file_name(name)) {
        work.insert("prepared segment");
    }
    if names != disk.durable_file_names() {
        work.insert("unsynced directory");
    }
    if names
        .iter()
        .any(|name| disk.read(name).ok() != disk.read_durable(name).ok())
    {
        work.insert("unsynced bytes");
    }
    let before = names.len();
    let (log, report, _) = open_collect(copy(&disk), config.clone(), Options::default())
        .unwrap_or_else(|error| panic!("{}: the starting image must open: {error}", start.label));
    if report.cut.is_some() {
        work.insert("torn tail");
    }
    if log.stats().segments as usize > report.segments.len() || before == 0 {
        work.insert("new segment");
    }
    if report.segments.len() >= 2 {
        work.insert("several segments");
    }
    work
}

/// One image a power cut during recovery (or right after it) leaves.
struct Captured {
    label: String,
    image: SimStorage,
    acknowledged: Acknowledged,
}

/// What one recovery under the hook saw.
struct Recovery {
    captured: Vec<Captured>,
    /// Records the open replayed, then the records appended after it.
    reference: Written,
    /// The records appended after the open.
    appended: Vec<(u8, Vec<u8>)>,
    ledger: Ledger,
}

/// Opens `image` with `options` while capturing, at every persistence point (both phases),
/// one image per entry of `losses`; then, still capturing, retires every segment at or below
/// the watermark and appends `appends` records under `Sync`. `salt` makes the appended
/// payloads unique.
fn recover_capturing(
    image: SimStorage,
    config: &Config,
    options: Options,
    ledger: Ledger,
    appends: u64,
    salt: u64,
    losses: &[PowerLoss],
) -> Result<Recovery, String> {
    let disk = image.disk();
    let captured: Arc<Mutex<Vec<Captured>>> = Arc::default();
    {
        let (captured, ledger, losses) = (Arc::clone(&captured), ledger.clone(), losses.to_vec());
        let mut rng = StdRng::seed_from_u64(salt);
        disk.set_hook(move |point, snapshot| {
            let acknowledged = ledger.acknowledged();
            for &how in &losses {
                captured.lock().push(Captured {
                    label: format!(
                        "{:?} {:?} of op {} ({how:?})",
                        point.phase, point.op, point.sequence
                    ),
                    image: snapshot.power_loss_image(how, &mut rng),
                    acknowledged: acknowledged.clone(),
                });
            }
        });
    }
    let opened = open_collect(image, config.clone(), options);
    let mut appended = Vec::new();
    let result = opened
        .map_err(|error| format!("the recovery under the hook failed: {error}"))
        .and_then(|(log, _report, recovered)| {
            let mut reference: Written = recovered
                .into_iter()
                .map(|record| (record.op_key, (record.kind, record.payload)))
                .collect();
            // What the store's flusher does once the watermark is committed.
            log.truncate_before(options.watermark + 1)
                .map_err(|error| format!("retiring after recovery: {error}"))?;
            for index in 0..appends {
                let payload = unique_payload(salt ^ (1 << 63) ^ index, 100);
                ledger.submit(3, &payload);
                let op_key = log
                    .append(3, &payload)
                    .map_err(|error| format!("append after recovery: {error}"))?;
                ledger.acknowledge(op_key, 3, &payload);
                reference.insert(op_key, (3, payload.clone()));
                appended.push((3, payload));
            }
            disk.clear_hook();
            drop(log);
            Ok(reference)
        });
    disk.clear_hook();
    let reference = result?;
    let captured = std::mem::take(&mut *captured.lock());
    Ok(Recovery {
        captured,
        reference,
        appended,
        ledger,
    })
}

/// Opens `image` in the default mode with `watermark` and checks it: every acknowledged record
/// above the watermark back, every record one of `original` (the starting log's) or
/// `reference` (what the interrupted recovery replayed and appended) at its op key, gapless,
/// nothing twice; then a power cut right after the open (every unsynced byte and directory
/// operation lost) must recover exactly the same. Returns the records.
fn check_captured(
    image: SimStorage,
    config: &Config,
    options: Options,
    ledger: &Ledger,
    acknowledged: &Acknowledged,
    original: &Written,
    reference: &Written,
) -> Result<Vec<Recovered>, String> {
    let disk = image.disk();
    let watermark = options.watermark;
    let (log, report, recovered) = open_collect(image, config.clone(), options)
        .map_err(|error| format!("reopen failed: {error}"))?;
    ledger.check_above(watermark, acknowledged, &recovered)?;
    for record in &recovered {
        let expected = reference
            .get(&record.op_key)
            .or_else(|| original.get(&record.op_key));
        if let Some((kind, payload)) = expected
            && (record.kind != *kind || &record.payload != payload)
        {
            return Err(format!(
                "op key {} holds another record than the log had at that key",
                record.op_key
            ));
        }
    }
    // Convergence: what the open returned is durable, directory included.
    let mut rng = StdRng::seed_from_u64(report.next_op_key);
    let again = disk.power_loss_image(PowerLoss::DROP_ALL, &mut rng);
    drop(log);
    let default_mode = Options {
        mode: Mode::default(),
        ..options
    };
    let (log, second, recovered_again) = open_collect(again, config.clone(), default_mode)
        .map_err(|error| format!("second reopen failed: {error}"))?;
    if recovered_again != recovered || second.next_op_key != report.next_op_key {
        return Err(format!(
            "a power cut after the reopen changed the log: {} records up to op key {}, then \
             {} up to {}",
            recovered.len(),
            report.next_op_key - 1,
            recovered_again.len(),
            second.next_op_key - 1
        ));
    }
    let expected_key = report.next_op_key;
    match log.append(1, b"after reopen") {
        Ok(key) if key == expected_key => {}
        Ok(key) => {
            return Err(format!(
                "append after reopen got op key {key}, expected {expected_key}"
            ));
        }
        Err(error) => return Err(format!("append after reopen failed: {error}")),
    }
    Ok(recovered)
}

/// Counts of what a test checked.
#[derive(Debug, Default)]
struct Tally {
    starts: usize,
    recovery_images: usize,
    nested_images: usize,
    /// The kinds of persistence points the recoveries were cut at.
    operations: BTreeSet<String>,
    failures: Vec<String>,
}

impl Tally {
    fn fail(&mut self, failure: String) {
        if self.failures.len() < 200 {
            self.failures.push(failure);
        }
    }

    fn assert_clean(&self, seed: u64) {
        eprintln!(
            "seed {seed}: {} starting images, {} images during recovery, {} during a second \
             recovery",
            self.starts, self.recovery_images, self.nested_images
        );
        assert!(
            self.failures.is_empty(),
            "{} violations (rerun with WALBUF_SEED={seed}); first ones:\n{}",
            self.failures.len(),
            self.failures
                .iter()
                .take(8)
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// The watermarks a starting image is recovered with, by `choice`: 0; just below the last
/// segment (so that every earlier segment is at or below it and is retired); the last
/// recovered op key (nothing to replay); one past the log's end (a new segment is needed).
fn watermark_for(choice: usize, start: &Start, config: &Config, history: &History) -> u64 {
    let disk = start.image.disk();
    let (_log, report, _) = open_collect(copy(&disk), config.clone(), Options::default())
        .expect("the starting image opens");
    let last = report.last_op_key.unwrap_or(0);
    match choice % 4 {
        0 => 0,
        1 => report
            .last_kept_segment()
            .map_or(0, |segment| segment.first_op_key.saturating_sub(1)),
        2 => last,
        _ => {
            if history.written.contains_key(&(last + 1)) {
                last + 1
            } else {
                last
            }
        }
    }
}

fn run_recoveries(prepare_ahead: bool, per_kind: usize, nested_every: usize) {
    let seed = seed();
    eprintln!("seed {seed}");
    let config = config(prepare_ahead);
    let (history, starts) = original_workload(&config, 90, seed);
    let mut seen: BTreeMap<(String, BTreeSet<&'static str>), usize> = BTreeMap::new();
    let mut tally = Tally::default();
    let mut kinds = BTreeSet::new();
    let mut scenarios = Vec::new();
    for (index, start) in starts.iter().enumerate() {
        let work = work_of(start, &config);
        if work.iter().all(|&kind| kind == "several segments") {
            continue;
        }
        let count = seen.entry((start.kind.clone(), work.clone())).or_default();
        if *count >= per_kind * trials() {
            continue;
        }
        *count += 1;
        kinds.extend(work.iter().copied());
        // Every start with watermark 0, and with one of the others in turn.
        for choice in [0, 1 + (*count + index) % 3] {
            scenarios.push((
                index,
                watermark_for(choice, start, &config, &history),
                work.clone(),
            ));
        }
    }
    for (index, watermark, work) in scenarios {
        let start = &starts[index];
        let options = Options {
            watermark,
            ..Options::default()
        };
        tally.starts += 1;
        let label = format!("{} [{work:?}, watermark {watermark}]", start.label);
        let ledger = history.ledger(&start.acknowledged);
        let recovery = match recover_capturing(
            copy(&start.image.disk()),
            &config,
            options,
            ledger,
            2,
            seed ^ (index as u64) << 8,
            &PowerLoss::all(),
        ) {
            Ok(recovery) => recovery,
            Err(problem) => {
                tally.fail(format!("{label}: {problem}"));
                continue;
            }
        };
        for (position, captured) in recovery.captured.iter().enumerate() {
            tally.recovery_images += 1;
            let operation = captured.label.split([' ', '{']).nth(1).unwrap_or_default();
            tally.operations.insert(operation.to_owned());
            let checked = check_captured(
                copy(&captured.image.disk()),
                &config,
                options,
                &recovery.ledger,
                &captured.acknowledged,
                &history.written,
                &recovery.reference,
            );
            if let Err(problem) = checked {
                tally.fail(format!(
                    "{label}, power cut during recovery at {}: {problem}",
                    captured.label
                ));
                continue;
            }
            if nested_every == 0 || position % nested_every != tally.starts % nested_every {
                continue;
            }
            // A crash during the recovery of that image, too.
            let mut nested_history = history.clone();
            nested_history
                .submitted
                .extend(recovery.appended.iter().cloned());
            let nested = recover_capturing(
                copy(&captured.image.disk()),
                &config,
                options,
                nested_history.ledger(&captured.acknowledged),
                0,
                seed ^ (position as u64) << 32 ^ index as u64,
                &[
                    PowerLoss::DROP_ALL,
                    PowerLoss::all()[(position + index) % 16],
                ],
            );
            let nested = match nested {
                Ok(nested) => nested,
                Err(problem) => {
                    tally.fail(format!(
                        "{label}, at {}: second recovery: {problem}",
                        captured.label
                    ));
                    continue;
                }
            };
            for inner in nested.captured {
                tally.nested_images += 1;
                let mut reference = recovery.reference.clone();
                reference.extend(nested.reference.clone());
                if let Err(problem) = check_captured(
                    inner.image,
                    &config,
                    options,
                    &nested.ledger,
                    &inner.acknowledged,
                    &history.written,
                    &reference,
                ) {
                    tally.fail(format!(
                        "{label}, power cut during recovery at {}, then during the second at {}: {problem}",
                        captured.label, inner.label
                    ));
                }
            }
        }
    }
    eprintln!("starting images by kind and work: {seen:?}");
    tally.assert_clean(seed);
    for kind in ["torn tail", "unsynced bytes", "unsynced directory"] {
        assert!(
            kinds.contains(kind),
            "no starting image had {kind}: {seen:?}"
        );
    }
    if prepare_ahead {
        assert!(
            kinds.contains("prepared segment"),
            "no half-prepared segment: {seen:?}"
        );
    }
    // Every kind of write recovery (and the retirement after it) makes was cut part-way.
    for operation in [
        "Sync",
        "DirectorySync",
        "Create",
        "Rename",
        "Remove",
        "EraseTail",
    ] {
        assert!(
            tally.operations.contains(operation),
            "no power cut at a {operation} of a recovery: {:?}",
            tally.operations
        );
    }
}

#[test]
fn power_loss_during_recovery_loses_nothing_and_converges() {
    run_recoveries(false, 1, 53);
}

#[test]
fn power_loss_during_recovery_with_prepared_segments_loses_nothing_and_converges() {
    run_recoveries(true, 1, 53);
}

/// A point-in-time recovery after a damaged durable record in a middle segment: it deletes the
/// later segments, erases the damaged segment from the bad record on, and syncs the directory.
/// A power cut at any point of it (and of two acknowledged appends after it) leaves a log that
/// either opens in the default mode with exactly the kept prefix (and what was appended after
/// it), or — while the damage is still there — is refused in the default mode, as before the
/// recovery; a point-in-time open of it then keeps exactly the same prefix. Never a record the
/// first recovery discarded, never a shorter prefix.
#[test]
fn power_loss_during_point_in_time_recovery_keeps_the_same_prefix() {
    let seed = seed();
    eprintln!("seed {seed}");
    let config = config(false);
    let storage = SimStorage::with_sector_bytes(512);
    let disk = storage.disk();
    let (log, _, _) = open_collect(storage, config.clone(), Options::default()).expect("open");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut history = History::default();
    for index in 0..100 {
        let payload = unique_payload((seed << 24) ^ index, rng.random_range(8..1200));
        history.submitted.push((5, payload.clone()));
        let op_key = log.append(5, &payload).expect("append");
        history.written.insert(op_key, (5, payload));
    }
    log.close().expect("close");
    drop(log);
    let segments: Vec<String> = disk
        .file_names()
        .into_iter()
        .filter(|name| !is_prepared_file_name(name))
        .collect();
    assert!(
        segments.len() >= 4,
        "the workload must rotate: {segments:?}"
    );
    // A byte of the second segment's first records' payload (past the header).
    let damaged = &segments[1];
    disk.corrupt(damaged, 64 + 16 + rng.random_range(0..8), 0x40)
        .expect("corrupt");
    let refused = open_collect(copy(&disk), config.clone(), Options::default());
    assert!(
        matches!(refused, Err(walbuf::Error::Recovery(_))),
        "the default open refuses the damage"
    );
    let point_in_time = Options {
        mode: Mode::PointInTime,
        ..Options::default()
    };
    let (_log, report, kept) =
        open_collect(copy(&disk), config.clone(), point_in_time).expect("point-in-time open");
    assert!(
        !report.discarded_segments.is_empty() && report.cut.is_some(),
        "{report:?}"
    );
    // Only the kept prefix and what is appended after it may ever come back.
    let kept_history = History {
        submitted: kept
            .iter()
            .map(|record| (record.kind, record.payload.clone()))
            .collect(),
        written: kept
            .iter()
            .map(|record| (record.op_key, (record.kind, record.payload.clone())))
            .collect(),
    };
    let recovery = recover_capturing(
        copy(&disk),
        &config,
        point_in_time,
        kept_history.ledger(&kept_history.written),
        2,
        seed,
        &PowerLoss::all(),
    )
    .expect("point-in-time recovery under the hook");
    assert_eq!(recovery.reference.len(), kept.len() + 2);
    let (mut refused_images, mut opened_images) = (0, 0);
    let mut failures = Vec::new();
    for captured in &recovery.captured {
        let appended_acknowledged = captured.acknowledged.len() > kept.len();
        let default_open = open_collect(
            copy(&captured.image.disk()),
            config.clone(),
            Options::default(),
        );
        let options = match default_open {
            Ok(_) => {
                opened_images += 1;
                Options::default()
            }
            Err(walbuf::Error::Recovery(_)) if !appended_acknowledged => {
                refused_images += 1;
                point_in_time
            }
            Err(error) => {
                failures.push(format!("{}: default open failed: {error}", captured.label));
                continue;
            }
        };
        let checked = check_captured(
            copy(&captured.image.disk()),
            &config,
            options,
            &recovery.ledger,
            &captured.acknowledged,
            &kept_history.written,
            &recovery.reference,
        )
        .and_then(|recovered| {
            if recovered.len() < kept.len() || recovered[..kept.len()] != kept[..] {
                Err(format!(
                    "{} records, not the kept prefix of {}",
                    recovered.len(),
                    kept.len()
                ))
            } else {
                Ok(())
            }
        });
        if let Err(problem) = checked {
            failures.push(format!("{} ({options:?}): {problem}", captured.label));
        }
    }
    eprintln!(
        "{} images during point-in-time recovery: {opened_images} open in the default mode, \
         {refused_images} still refused",
        recovery.captured.len()
    );
    assert!(opened_images > 0 && refused_images > 0);
    assert!(
        failures.is_empty(),
        "{} failures (seed {seed}): {:#?}",
        failures.len(),
        &failures[..failures.len().min(8)]
    );
}

/// A regression, found by this file: a process crash between a rotation's rename and its
/// directory sync leaves the new segment's directory entry in the page cache only. An open
/// that resumed appending in that segment without syncing the directory (it synced it only
/// when it removed a file) let an append acknowledged under `Sync` be lost by a power cut: the
/// rename was undone, and the next open deleted the file as a half-prepared segment. Every
/// open now syncs the directory.
#[test]
fn an_append_acknowledged_after_recovery_survives_power_loss() {
    let config = config(false);
    let storage = SimStorage::new();
    let disk = storage.disk();
    let (log, _, _) = open_collect(storage, config.clone(), Options::default()).expect("open");
    let crashed: Arc<Mutex<Option<SimStorage>>> = Arc::default();
    {
        let crashed = Arc::clone(&crashed);
        disk.set_hook(move |point, snapshot| {
            let renamed = matches!(point.op, walbuf_tests::sim::PersistenceOp::Rename { .. })
                && point.phase == walbuf_tests::sim::Phase::After;
            let mut crashed = crashed.lock();
            if renamed && crashed.is_none() {
                *crashed = Some(snapshot.process_crash_image());
            }
        });
    }
    for index in 0..40 {
        log.append(1, &unique_payload(index, 1000)).expect("append");
    }
    disk.clear_hook();
    drop(log);
    let image = crashed.lock().take().expect("the workload rotated");
    let image_disk = image.disk();
    let (log, _, _) = open_collect(image, config.clone(), Options::default()).expect("reopen");
    let key = log
        .append(1, b"acknowledged after recovery")
        .expect("append");
    let mut rng = StdRng::seed_from_u64(1);
    let after = image_disk.power_loss_image(PowerLoss::DROP_ALL, &mut rng);
    drop(log);
    let (_log, _, recovered) = open_collect(after, config, Options::default()).expect("open");
    assert!(
        recovered.iter().any(|record| record.op_key == key),
        "op key {key}, acknowledged under Sync, was lost ({} records recovered)",
        recovered.len()
    );
}
