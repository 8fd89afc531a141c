//! The loss bound of `SyncPolicy::Periodic`: a power cut loses at most the records appended in
//! roughly the last `interval_ms`. Checked against what the simulated disk itself holds after
//! the cut (the log's own account of what is durable plays no part), with a segment large
//! enough that neither a rotation nor a chunk writeback syncs anything: only the periodic sync
//! can have made the older records durable.
//!
//! A failure prints its seed; `WALBUF_SEED=<seed>` replays it.
#![allow(clippy::print_stderr)]

use std::time::{Duration, Instant};

use rand::SeedableRng;
use walbuf::SyncPolicy;
use walbuf::log::Config;
use walbuf_recovery::Options;
use walbuf_tests::check::{Recovered, open_collect, seed, unique_payload};
use walbuf_tests::sim::{PowerLoss, SimStorage};

const INTERVAL_MS: u64 = 20;
/// How old a record must be to count on surviving: many intervals, so that a loaded machine
/// that runs the sync thread late does not fail the test, while a sync thread that never
/// syncs (or syncs far too rarely) does.
const SURVIVES_AFTER: Duration = Duration::from_millis(25 * INTERVAL_MS);
/// How long records are appended before the cut.
const APPENDING_FOR: Duration = Duration::from_millis(1_500);

#[test]
fn periodic_loses_only_the_last_interval_on_power_loss() {
    let seed = seed();
    eprintln!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let storage = SimStorage::new();
    let disk = storage.disk();
    let config = Config {
        // A writeback syncs each completed sixteenth of the active segment: 256 KiB here,
        // more than this test appends (about 1 500 records of 64 bytes).
        segment_size_bytes: 4 << 20,
        max_record_bytes: 4096,
        sync_policy: SyncPolicy::Periodic {
            interval_ms: INTERVAL_MS,
        },
        ..Config::default()
    };
    let (log, _, _) = open_collect(storage, config.clone(), Options::default()).expect("open");
    let started = Instant::now();
    let mut appended: Vec<(Recovered, Instant)> = Vec::new();
    while started.elapsed() < APPENDING_FOR {
        let payload = unique_payload(appended.len() as u64, 64);
        let op_key = log.append(1, &payload).expect("append");
        appended.push((
            Recovered {
                op_key,
                kind: 1,
                payload,
            },
            Instant::now(),
        ));
        std::thread::sleep(Duration::from_millis(1));
    }
    // The cut: every byte not yet synced is lost. The log is never closed (a close syncs).
    let cut = Instant::now();
    let image = disk.power_loss_image(PowerLoss::DROP_ALL, &mut rng);
    let segments: Vec<String> = disk
        .file_names()
        .into_iter()
        .filter(|name| name.ends_with(".wal"))
        .collect();
    assert_eq!(
        segments.len(),
        1,
        "one segment, no rotation: only the periodic sync can have synced the records"
    );
    drop(log);

    let (_, report, recovered) =
        open_collect(image, config, Options::default()).expect("reopen after the cut");
    // What survives is a prefix of what was appended, nothing invented.
    let appended_records: Vec<&Recovered> = appended.iter().map(|(record, _)| record).collect();
    assert!(
        recovered.len() <= appended.len()
            && recovered
                .iter()
                .zip(&appended_records)
                .all(|(got, want)| got == *want),
        "recovered is not a prefix of what was appended"
    );
    let old_enough = appended
        .iter()
        .filter(|(_, at)| cut.duration_since(*at) >= SURVIVES_AFTER)
        .count();
    assert!(old_enough > 0, "the test appended for too short a time");
    assert!(
        recovered.len() >= old_enough,
        "{} of {} records survived, but every record older than {SURVIVES_AFTER:?} should \
         have ({old_enough}); bytes cut {:?}",
        recovered.len(),
        appended.len(),
        report.cut
    );
    eprintln!(
        "{} appended, {} survived, {} lost (the last {:?})",
        appended.len(),
        recovered.len(),
        appended.len() - recovered.len(),
        appended
            .get(recovered.len())
            .map(|(_, at)| cut.duration_since(*at))
    );
}
