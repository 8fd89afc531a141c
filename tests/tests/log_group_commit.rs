//! Group commit: with 8 threads appending under `SyncPolicy::Sync`, one sync covers many
//! appends, so the log's sync counter stays far below its append counter — counted, never
//! timed. On the simulated disk the log's counter is also checked against the syncs the disk
//! really received, so the counter cannot flatter the log.
#![allow(clippy::print_stderr)]

use std::sync::Arc;

use walbuf::log::{Config, Log, Stats};
use walbuf::storage::Storage;
use walbuf::{Error, SyncPolicy};
use walbuf_recovery::Options;
use walbuf_tests::check::open_collect;
use walbuf_tests::sim::SimStorage;

const THREADS: u64 = 8;
const APPENDS_PER_THREAD: u64 = 250;

fn config() -> Config {
    Config {
        segment_size_bytes: 1 << 20,
        max_record_bytes: 4096,
        sync_policy: SyncPolicy::Sync,
        ..Config::default()
    }
}

/// Runs the 8-thread workload; every append returns only once durable.
fn hammer<S: Storage>(log: Log<S>) -> Result<Stats, Error> {
    let log = Arc::new(log);
    let threads: Vec<_> = (0..THREADS)
        .map(|thread| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || -> Result<(), Error> {
                for index in 0..APPENDS_PER_THREAD {
                    let payload = [thread as u8; 256];
                    let key = log.append(1, &payload)?;
                    assert!(
                        log.stats().durable_op_key >= key,
                        "acknowledged before durable ({index})"
                    );
                }
                Ok(())
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("thread")?;
    }
    log.close()?;
    Ok(log.stats())
}

#[test]
fn eight_sync_writers_share_syncs_on_real_files() {
    // Under the target directory, on the same disk as the work tree (a tmpfs would make
    // syncs free, and there would be nothing to group).
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let mut ignore = |_: &walbuf_recovery::format::Record<'_>| Ok(());
    let (log, _) = Log::open_dir(dir.path(), config(), &mut ignore).expect("open");
    let stats = hammer(log).expect("workload");
    eprintln!("real files: {stats:?}");
    assert_eq!(stats.appends, THREADS * APPENDS_PER_THREAD);
    assert!(stats.syncs > 0);
    // One sync per append would be 2000; group commit shares each sync among several of the
    // 8 writers.
    assert!(
        stats.syncs * 3 <= stats.appends,
        "group commit did not group: {} syncs for {} appends",
        stats.syncs,
        stats.appends
    );
}

#[test]
fn the_sync_counter_matches_the_syncs_the_disk_received() {
    let (log, disk) = sim_log(config());
    let at_open = disk.counters().syncs;
    let stats = hammer(log).expect("workload");
    eprintln!("simulated disk: {stats:?}, {:?}", disk.counters());
    assert_eq!(stats.rotations, 0, "one segment holds the workload");
    assert_eq!(
        disk.counters().syncs - at_open,
        stats.syncs,
        "the log counts exactly the syncs it issues (close included, which syncs once more)"
    );
    assert!(
        stats.syncs * 4 <= stats.appends,
        "group commit did not group: {} syncs for {} appends",
        stats.syncs,
        stats.appends
    );
}

/// The simulated disk with a device latency (so that writers queue up behind a sync as they
/// do on a real disk), and a log on it.
fn sim_log(config: Config) -> (Log<SimStorage>, walbuf_tests::sim::SimDisk) {
    let storage = SimStorage::new();
    let disk = storage.disk();
    disk.set_sync_delay(std::time::Duration::from_micros(200));
    let (log, _, _) = open_collect(
        storage,
        Config {
            prepare_ahead: false,
            ..config
        },
        Options::default(),
    )
    .expect("open");
    (log, disk)
}

/// Gathering (waiting for the writers the last sync released before starting the next one)
/// must never delay a lone writer: each of its syncs wakes one waiter, so none waits.
#[test]
fn a_lone_sync_writer_never_gathers() {
    let (log, _disk) = sim_log(config());
    for index in 0..200u32 {
        log.append(1, &index.to_le_bytes()).expect("append");
    }
    let stats = log.stats();
    assert_eq!(
        stats.gathers, 0,
        "a lone writer waited for company: {stats:?}"
    );
    assert!(
        stats.syncs >= 200,
        "one sync per acknowledged append: {stats:?}"
    );
}

/// With 8 writers the sync thread gathers them (its counter moves), and with gathering off
/// it never waits; both keep every append acknowledged only once durable (`hammer`).
#[test]
fn eight_sync_writers_are_gathered_unless_gathering_is_off() {
    let (log, _disk) = sim_log(config());
    let on = hammer(log).expect("workload");
    eprintln!("gathering on: {on:?}");
    assert!(on.gathers > 0, "8 writers were never gathered: {on:?}");
    let (log, _disk) = sim_log(Config {
        group_commit_wait_us: 0,
        ..config()
    });
    let off = hammer(log).expect("workload");
    eprintln!("gathering off: {off:?}");
    assert_eq!(off.gathers, 0, "gathering is off: {off:?}");
}
