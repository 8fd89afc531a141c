//! Round trip on real files: random records (any kind 1..=127, payloads of 0..2000 bytes)
//! appended from several threads under each sync policy, into 64 KiB segments so that the log
//! rotates; after close and reopen, every acknowledged record comes back, in key order, with
//! keys gapless from 1, and appending continues at the next key.

use std::sync::Arc;

use proptest::prelude::*;
use walbuf::SyncPolicy;
use walbuf::log::{Config, Log};
use walbuf::storage::FsStorage;
use walbuf_recovery::Options;
use walbuf_tests::check::{Recovered, check_gapless, open_collect, proptest_cases};

fn config(policy: SyncPolicy) -> Config {
    Config {
        segment_size_bytes: 64 * 1024,
        max_record_bytes: 4096,
        sync_policy: policy,
        ..Config::default()
    }
}

fn open(dir: &std::path::Path, policy: SyncPolicy) -> (Log, Vec<Recovered>) {
    let storage = FsStorage::open(dir).expect("lock the directory");
    let (log, _report, recovered) =
        open_collect(storage, config(policy), Options::default()).expect("open");
    (log, recovered)
}

/// Per thread, the records it appends: (kind, payload).
fn workloads() -> impl Strategy<Value = Vec<Vec<(u8, Vec<u8>)>>> {
    let record = (1..=127_u8, proptest::collection::vec(any::<u8>(), 0..2000));
    proptest::collection::vec(proptest::collection::vec(record, 0..80), 1..=4)
}

fn round_trip(
    policy: SyncPolicy,
    workloads: Vec<Vec<(u8, Vec<u8>)>>,
) -> Result<walbuf::log::Stats, TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, recovered) = open(dir.path(), policy);
    prop_assert!(recovered.is_empty());
    let log = Arc::new(log);
    let threads: Vec<_> = workloads
        .into_iter()
        .map(|records| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                records
                    .into_iter()
                    .map(|(kind, payload)| {
                        let op_key = log.append(kind, &payload).expect("append");
                        Recovered {
                            op_key,
                            kind,
                            payload,
                        }
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut acknowledged: Vec<Recovered> = threads
        .into_iter()
        .flat_map(|thread| thread.join().expect("appender thread"))
        .collect();
    acknowledged.sort();
    let stats = log.stats();
    prop_assert_eq!(stats.appends, acknowledged.len() as u64);
    log.close().expect("close");
    drop(log);

    let (log, recovered) = open(dir.path(), policy);
    check_gapless(&recovered, 1).map_err(TestCaseError::fail)?;
    prop_assert_eq!(recovered.len(), acknowledged.len());
    prop_assert!(
        recovered == acknowledged,
        "recovered records differ from the acknowledged ones"
    );
    let next = log.append(1, b"next").expect("append after reopen");
    prop_assert_eq!(next, acknowledged.len() as u64 + 1);
    Ok(stats)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(proptest_cases(24)))]

    #[test]
    fn sync_round_trip(workloads in workloads()) {
        round_trip(SyncPolicy::Sync, workloads)?;
    }

    #[test]
    fn periodic_round_trip(workloads in workloads()) {
        round_trip(SyncPolicy::Periodic { interval_ms: 5 }, workloads)?;
    }

    #[test]
    fn none_round_trip(workloads in workloads()) {
        round_trip(SyncPolicy::None, workloads)?;
    }
}

/// The proptest cases are small; this one is sure to cross many segments, with every payload
/// size from 0 to 1999 bytes, from 4 threads.
#[test]
fn every_payload_size_round_trips_across_segments() {
    let workloads: Vec<Vec<(u8, Vec<u8>)>> = (0..4_usize)
        .map(|thread| {
            (0..500_usize)
                .map(|index| {
                    let len = thread * 500 + index;
                    ((len % 127) as u8 + 1, vec![(len % 251) as u8; len])
                })
                .collect()
        })
        .collect();
    for policy in [SyncPolicy::Sync, SyncPolicy::None] {
        let stats = round_trip(policy, workloads.clone()).expect("round trip");
        assert!(stats.rotations >= 30, "{policy:?}: {stats:?}");
    }
}
