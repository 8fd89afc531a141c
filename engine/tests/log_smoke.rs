//! Basic behaviour of the log on real files.

use std::sync::Arc;

use walbuf::log::{Config, Log};
use walbuf::{Error, SyncPolicy};
use walbuf_recovery::format::Record;

fn collect(dir: &std::path::Path, config: Config) -> (Log, Vec<(u64, Vec<u8>)>) {
    let mut records = Vec::new();
    let mut sink = |record: &Record<'_>| {
        records.push((record.op_key, record.payload.to_vec()));
        Ok(())
    };
    let (log, _report) = Log::open_dir(dir, config, &mut sink).expect("open");
    (log, records)
}

fn small_config(policy: SyncPolicy) -> Config {
    Config {
        segment_size_bytes: 64 * 1024,
        max_record_bytes: 4096,
        sync_policy: policy,
        ..Config::default()
    }
}

#[test]
fn concurrent_appends_rotate_and_come_back_gapless() {
    for policy in [
        SyncPolicy::Sync,
        SyncPolicy::Periodic { interval_ms: 5 },
        SyncPolicy::None,
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, records) = collect(dir.path(), small_config(policy));
        assert!(records.is_empty());
        let log = Arc::new(log);
        let threads: Vec<_> = (0..8)
            .map(|thread| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    (0..500)
                        .map(|i| {
                            let payload = format!("t{thread}-{i}-{}", "x".repeat(i % 300));
                            let key = log.append(1, payload.as_bytes()).expect("append");
                            (key, payload.into_bytes())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut acknowledged: Vec<(u64, Vec<u8>)> = threads
            .into_iter()
            .flat_map(|thread| thread.join().expect("thread"))
            .collect();
        acknowledged.sort();
        let stats = log.stats();
        assert!(stats.rotations > 5, "{stats:?}");
        if policy == SyncPolicy::Sync {
            assert!(stats.syncs < stats.appends, "{stats:?}");
        }
        log.close().expect("close");
        drop(log);
        let (_log, recovered) = collect(dir.path(), small_config(policy));
        assert_eq!(recovered, acknowledged);
        assert!(
            recovered
                .iter()
                .enumerate()
                .all(|(i, (key, _))| *key == i as u64 + 1)
        );
    }
}

#[test]
fn second_opener_is_locked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_log, _) = collect(dir.path(), small_config(SyncPolicy::Sync));
    let mut sink = |_: &Record<'_>| Ok(());
    let error =
        Log::open_dir(dir.path(), small_config(SyncPolicy::Sync), &mut sink).expect_err("locked");
    assert!(matches!(error, Error::Locked { .. }), "{error}");
}
