//! Writeback under `Periodic`/`None`: the sync thread syncs each completed chunk of the active
//! segment (a sixteenth of it) without claiming it durable, so that a rotation finds little
//! left to write. These extra syncs run concurrently with appends, rotations and explicit
//! syncs; power loss at every persistence point (including each writeback) must still give
//! back every record made durable by a returned `Log::sync`, invent nothing, and keep keys
//! gapless.
//!
//! A failure prints its seed; `WALBUF_SEED=<seed>` replays it.
#![allow(clippy::print_stderr)]

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use walbuf::SyncPolicy;
use walbuf::log::Config;
use walbuf_recovery::Options;
use walbuf_tests::check::{Ledger, PowerLossProbe, open_collect, seed, unique_payload};
use walbuf_tests::sim::{PowerLoss, SimStorage};

fn config(policy: SyncPolicy, prepare_ahead: bool) -> Config {
    Config {
        // A sixteenth of this is 4 KiB: a writeback every few records.
        segment_size_bytes: 64 * 1024,
        max_record_bytes: 4096,
        sync_policy: policy,
        prepare_ahead,
        ..Config::default()
    }
}

/// `threads` threads each append `count` records under the log's policy and call `Log::sync`
/// every `sync_every` records; after each sync returns, the thread's records so far count as
/// acknowledged.
fn run(config: &Config, threads: u64, count: u64, sync_every: u64) {
    let seed = seed();
    eprintln!("seed {seed}");
    let storage = SimStorage::new();
    let disk = storage.disk();
    let ledger = Ledger::new();
    let (log, _, recovered) =
        open_collect(storage, config.clone(), Options::default()).expect("open");
    assert!(recovered.is_empty());
    let probe = PowerLossProbe::install(&disk, &ledger, config, PowerLoss::all(), seed);
    let log = Arc::new(log);
    let handles: Vec<_> = (0..threads)
        .map(|thread| {
            let (log, ledger) = (Arc::clone(&log), ledger.clone());
            std::thread::spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (thread + 1));
                let mut pending = Vec::new();
                for index in 0..count {
                    let id = (seed << 20) ^ (thread << 16) ^ index;
                    let payload = unique_payload(id, rng.random_range(8..1500));
                    let kind = rng.random_range(1..=127);
                    ledger.submit(kind, &payload);
                    let key = log.append(kind, &payload).expect("append");
                    pending.push((key, kind, payload));
                    if (index + 1) % sync_every == 0 {
                        log.sync().expect("sync");
                        for (key, kind, payload) in pending.drain(..) {
                            ledger.acknowledge(key, kind, &payload);
                        }
                    }
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("appender thread");
    }
    let stats = log.stats();
    log.close().expect("close");
    disk.clear_hook();
    assert!(stats.rotations >= 3, "the workload must rotate: {stats:?}");
    let explicit_syncs = threads * (count / sync_every);
    assert!(
        stats.syncs > explicit_syncs + stats.rotations,
        "writebacks must have happened: {stats:?}"
    );
    probe.assert_clean(seed);
    eprintln!("{} images checked, {stats:?}", probe.images());
}

#[test]
fn writeback_under_none_loses_nothing_synced_at_any_point() {
    run(&config(SyncPolicy::None, false), 1, 400, 37);
}

#[test]
fn writeback_with_concurrent_writers_and_preparation_loses_nothing_synced() {
    run(&config(SyncPolicy::None, true), 3, 150, 23);
}

#[test]
fn writeback_under_periodic_loses_nothing_synced_at_any_point() {
    run(
        &config(SyncPolicy::Periodic { interval_ms: 1 }, false),
        2,
        200,
        29,
    );
}
