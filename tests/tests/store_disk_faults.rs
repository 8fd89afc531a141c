//! A store whose log disk fills up or fails a sync: the write gets a typed error, nothing
//! acknowledged before is lost, and the store reopened on what the disk holds is consistent.

use std::time::Duration;

use walbuf::Error;
use walbuf::shapes::{NewShape, RegistryError, ShapeRegistry, ShapeSchema};
use walbuf::store::{Store, StoreConfig};
use walbuf_tests::check::within;
use walbuf_tests::sim::{PowerLoss, SimStorage, SyncFault};

fn config() -> StoreConfig {
    walbuf_tests::check::sim_store_config()
}

/// [`config`] with a flusher that never runs while a test fills the disk: no batch threshold
/// or interval is reached, so SQLite applies nothing and no segment is retired (which would
/// free room on the simulated disk) until the test flushes.
fn config_without_flushes() -> StoreConfig {
    StoreConfig {
        batch_ops_max: 1_000_000,
        flush_interval_ms: 3_600_000,
        ..config()
    }
}

fn shape(index: u64) -> NewShape {
    NewShape {
        handle: format!("h{index:04}"),
        shape: vec![b's'; 300],
        comparable: format!("c{index}").into_bytes(),
        hash: 0,
        relations: Vec::new(),
    }
}

/// Adds shapes `first..first + limit` until one fails; returns how many were acknowledged
/// and the error.
fn add_until_failure(
    registry: &ShapeRegistry<SimStorage>,
    first: u64,
    limit: u64,
) -> (u64, Option<RegistryError>) {
    for added in 0..limit {
        if let Err(error) = registry.add_shape(shape(first + added)) {
            return (added, Some(error));
        }
    }
    (limit, None)
}

fn reopen_and_count(
    storage: SimStorage,
    database: &std::path::Path,
) -> (ShapeRegistry<SimStorage>, u64) {
    let (store, _) = Store::open_with(storage, database, ShapeSchema, config())
        .unwrap_or_else(|error| panic!("reopen failed: {error}"));
    let registry = ShapeRegistry::new(store);
    let count = registry.count_shapes().expect("count");
    (registry, count)
}

fn assert_all_present(registry: &ShapeRegistry<SimStorage>, acknowledged: u64) {
    for index in 0..acknowledged {
        assert!(
            registry.has_handle(&format!("h{index:04}")).expect("read"),
            "acknowledged shape {index} lost"
        );
    }
}

#[test]
fn a_full_disk_is_a_typed_error_and_loses_nothing_acknowledged() {
    within(Duration::from_secs(120), "disk full", || {
        let dir = tempfile::tempdir().expect("tempdir");
        let database = dir.path().join("walbuf.db");
        let storage = SimStorage::new();
        let disk = storage.disk();
        // Room for the first segment and two more: rotation number three finds the disk full.
        disk.set_capacity_bytes(Some(3 * 16 * 1024 + 1024));
        // Nothing flushes during the fill, so no segment is retired (which would free room):
        // 10 000 shapes of 300 bytes need far more than the disk holds, whatever the timing.
        let (store, _) =
            Store::open_with(storage, &database, ShapeSchema, config_without_flushes())
                .expect("open");
        let registry = ShapeRegistry::new(store);
        let (acknowledged, error) = add_until_failure(&registry, 0, 10_000);
        let error = error.expect("the disk never filled up");
        let disk_full = matches!(&error, RegistryError::Store(Error::DiskFull { .. }))
            || matches!(&error, RegistryError::Store(Error::Poisoned { cause }) if matches!(**cause, Error::DiskFull { .. }));
        assert!(disk_full, "expected a disk-full error, got {error}");
        assert!(acknowledged > 0);
        let stats = registry.stats();
        assert_eq!(stats.applied_op_key, 0, "the flusher ran: {stats:?}");
        // Every acknowledged op is readable now, and after a power cut and reopen.
        assert_all_present(&registry, acknowledged);
        drop(registry);
        disk.set_capacity_bytes(None);
        let image = disk.power_loss_image(PowerLoss::DROP_ALL, &mut rand::rng());
        let (registry, count) = reopen_and_count(image, &database);
        assert!(
            count >= acknowledged,
            "count {count} < acknowledged {acknowledged}"
        );
        assert_all_present(&registry, acknowledged);
        registry.flush().expect("flush after reopen");
        registry
            .add_shape(shape(1_000_000))
            .expect("writable again");
    });
}

#[test]
fn a_failed_sync_poisons_the_store_and_the_reopened_store_is_consistent() {
    within(Duration::from_secs(120), "failed sync", || {
        let dir = tempfile::tempdir().expect("tempdir");
        let database = dir.path().join("walbuf.db");
        let storage = SimStorage::new();
        let disk = storage.disk();
        let (store, _) = Store::open_with(storage, &database, ShapeSchema, config()).expect("open");
        let registry = ShapeRegistry::new(store);
        for index in 0..50 {
            registry.add_shape(shape(index)).expect("add");
        }
        let syncs = disk.counters().syncs;
        disk.fail_syncs(SyncFault::From { at: syncs + 1 });
        let (more, error) = add_until_failure(&registry, 50, 1_000);
        let error = error.expect("a failing sync must fail the write");
        assert!(
            matches!(&error, RegistryError::Store(error) if error.is_poisoned()),
            "expected a poisoned log, got {error}"
        );
        assert!(more < 1_000);
        // Later writes keep failing with the poison; reads keep working.
        assert!(matches!(
            registry.add_shape(shape(5_000)),
            Err(RegistryError::Store(_))
        ));
        assert_all_present(&registry, 50);
        drop(registry);
        disk.fail_syncs(SyncFault::Never);
        let image = disk.power_loss_image(PowerLoss::DROP_ALL, &mut rand::rng());
        let (registry, count) = reopen_and_count(image, &database);
        // What was acknowledged is there; the op whose sync failed may or may not be.
        assert!((50 + more..=51 + more).contains(&count), "count {count}");
        assert_all_present(&registry, 50 + more);
        registry.flush().expect("flush");
        registry
            .add_shape(shape(9_999))
            .expect("writable after reopen");
    });
}
