//! Power loss at every persistence point, on the simulated disk: whatever a power cut leaves
//! (unsynced sectors dropped, kept at random, torn, garbled; directory operations since the
//! last directory sync undone, kept, or half done), reopening gives back every record whose
//! `append` under `Sync` had returned before the cut, invents nothing, and keeps keys gapless.
//!
//! A failure prints its seed; `WALBUF_SEED=<seed>` replays it.
#![allow(clippy::print_stderr)]

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use walbuf::SyncPolicy;
use walbuf::log::Config;
use walbuf_recovery::Options;
use walbuf_tests::check::{
    Ledger, PowerLossProbe, check_image, open_collect, seed, unique_payload,
};
use walbuf_tests::sim::{PowerLoss, SimStorage};

fn config() -> Config {
    Config {
        segment_size_bytes: 16 * 1024,
        max_record_bytes: 4096,
        sync_policy: SyncPolicy::Sync,
        prepare_ahead: false,
        ..Config::default()
    }
}

/// The same with the next segment prepared on a background thread (created, not yet
/// durable in the directory, at any moment).
fn config_preparing_ahead() -> Config {
    Config {
        prepare_ahead: true,
        ..config()
    }
}

/// Appends `count` records from each of `threads` threads, sizes from `rng`, every `none_every`-th
/// one (if not 0) under `SyncPolicy::None` (submitted, never acknowledged as durable).
fn workload<S: walbuf::storage::Storage>(
    log: &Arc<walbuf::Log<S>>,
    ledger: &Ledger,
    threads: u64,
    count: u64,
    none_every: u64,
    seed: u64,
) {
    let handles: Vec<_> = (0..threads)
        .map(|thread| {
            let (log, ledger) = (Arc::clone(log), ledger.clone());
            std::thread::spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (thread + 1));
                for index in 0..count {
                    let id = (seed << 20) ^ (thread << 16) ^ index;
                    let payload = unique_payload(id, rng.random_range(8..1500));
                    let kind = rng.random_range(1..=127);
                    ledger.submit(kind, &payload);
                    let policy = if none_every != 0 && index % none_every == 0 {
                        SyncPolicy::None
                    } else {
                        SyncPolicy::Sync
                    };
                    let key = log.append_with(kind, &payload, policy).expect("append");
                    if policy == SyncPolicy::Sync {
                        ledger.acknowledge(key, kind, &payload);
                    }
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("appender thread");
    }
}

fn run(config: &Config, sector_bytes: u64, threads: u64, count: u64, none_every: u64) {
    let seed = seed();
    eprintln!("seed {seed}");
    let storage = SimStorage::with_sector_bytes(sector_bytes);
    let disk = storage.disk();
    let ledger = Ledger::new();
    let (log, _, recovered) =
        open_collect(storage, config.clone(), Options::default()).expect("open");
    assert!(recovered.is_empty());
    let probe = PowerLossProbe::install(&disk, &ledger, config, PowerLoss::all(), seed);
    let log = Arc::new(log);
    workload(&log, &ledger, threads, count, none_every, seed);
    let stats = log.stats();
    log.close().expect("close");
    disk.clear_hook();
    assert!(stats.rotations >= 3, "the workload must rotate: {stats:?}");
    // Every sync of the log is a persistence point seen twice (before and after).
    let expected_images = 2 * stats.syncs * PowerLoss::all().len() as u64;
    assert!(
        probe.images() >= expected_images,
        "{} images checked, expected at least {expected_images}",
        probe.images()
    );
    probe.assert_clean(seed);
    eprintln!("{} images checked, {stats:?}", probe.images());
}

#[test]
fn one_writer_loses_nothing_acknowledged_at_any_point() {
    run(&config(), 4096, 1, 100, 0);
}

#[test]
fn concurrent_writers_lose_nothing_acknowledged_at_any_point() {
    run(&config(), 4096, 4, 20, 0);
}

/// 512-byte sectors: unsynced records tear inside themselves, not only between sectors.
#[test]
fn small_sectors_lose_nothing_acknowledged_at_any_point() {
    run(&config(), 512, 3, 30, 4);
}

#[test]
fn background_segment_preparation_loses_nothing_acknowledged_at_any_point() {
    run(&config_preparing_ahead(), 4096, 2, 40, 0);
}

#[test]
fn unsynced_appends_between_durable_ones_lose_nothing_acknowledged() {
    run(&config(), 4096, 3, 24, 3);
}

/// A process crash keeps the page cache: the reopened log finds records that were written but
/// never synced and continues after them. A power cut after the new session's first
/// acknowledged append must still lose nothing acknowledged (and the log must open).
#[test]
fn power_loss_after_reopening_over_unsynced_records_loses_nothing_acknowledged() {
    let seed = seed();
    eprintln!("seed {seed}");
    let storage = SimStorage::new();
    let disk = storage.disk();
    let ledger = Ledger::new();
    let (log, _, _) = open_collect(storage, config(), Options::default()).expect("open");
    // Durable records, then more than two sectors of records that are only in the page cache.
    for index in 0..4 {
        let payload = unique_payload(index, 100);
        ledger.submit(1, &payload);
        let key = log.append(1, &payload).expect("append");
        ledger.acknowledge(key, 1, &payload);
    }
    for index in 4..16 {
        let payload = unique_payload(index, 800);
        ledger.submit(1, &payload);
        log.append_with(1, &payload, SyncPolicy::None)
            .expect("append");
    }
    let crashed = disk.process_crash_image();
    drop(log);

    let crashed_disk = crashed.disk();
    let (log, _, recovered) =
        open_collect(crashed, config(), Options::default()).expect("reopen after crash");
    assert_eq!(recovered.len(), 16, "the page cache kept every record");
    let probe = PowerLossProbe::install(&crashed_disk, &ledger, &config(), PowerLoss::all(), seed);
    for index in 16..20 {
        let payload = unique_payload(index, 100);
        ledger.submit(1, &payload);
        let key = log.append(1, &payload).expect("append after reopen");
        ledger.acknowledge(key, 1, &payload);
    }
    log.close().expect("close");
    crashed_disk.clear_hook();
    probe.assert_clean(seed);
}

/// The final state after a clean close survives every kind of power loss (the close wrote a
/// last sync mark; nothing is left unsynced).
#[test]
fn clean_close_survives_any_power_loss() {
    let seed = seed();
    eprintln!("seed {seed}");
    let storage = SimStorage::new();
    let disk = storage.disk();
    let ledger = Ledger::new();
    let (log, _, _) = open_collect(storage, config(), Options::default()).expect("open");
    let log = Arc::new(log);
    // Everything submitted under `None`; after `close` all of it counts as acknowledged.
    for index in 0..80 {
        let payload = unique_payload(index, 300);
        ledger.submit(2, &payload);
        let key = log
            .append_with(2, &payload, SyncPolicy::None)
            .expect("append");
        ledger.acknowledge(key, 2, &payload);
    }
    log.close().expect("close");
    let acknowledged = ledger.acknowledged();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for how in PowerLoss::all() {
        for _ in 0..4 {
            let image = disk.power_loss_image(how, &mut rng);
            if let Err(problem) = check_image(image, &config(), 0, &ledger, &acknowledged) {
                panic!("power loss {how:?} after close (seed {seed}): {problem}");
            }
        }
    }
}
