//! Listings stepped slowly while the flusher commits small batches and drops them from the
//! overlay in chunks between the steps, and two threads churn handles interleaved (in handle
//! order) with an untouched set: every untouched live shape is listed once, in order, with
//! its snapshot state, under each sync policy, with and without a buffered reset before.
//! (A listing holds the overlay gate per step and starts again past its cursor when the
//! flusher dropped ops in between: these fail if it did not, or started from elsewhere.)

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use walbuf::SyncPolicy;
use walbuf::shapes::{NewShape, RegistryError, ShapeRegistry, SnapshotState};
use walbuf::store::StoreConfig;
use walbuf_tests::check::{Repeating, small_log_config};

/// Untouched shapes (and as many churned handles between them).
const SHAPES: usize = 1_500;

fn config(policy: SyncPolicy, batch_ops_max: usize) -> StoreConfig {
    StoreConfig {
        log: small_log_config(policy),
        batch_ops_max,
        flush_interval_ms: 1,
        ..StoreConfig::default()
    }
}

fn shape(handle: &str) -> NewShape {
    NewShape {
        handle: handle.into(),
        shape: format!("definition of {handle}").into_bytes(),
        comparable: format!("comparable of {handle}").into_bytes(),
        hash: 1,
        relations: vec![],
    }
}

fn untouched(index: usize) -> String {
    format!("h{index:05}a")
}

fn churned(index: usize) -> String {
    format!("h{index:05}b")
}

fn reset_away(index: usize) -> String {
    format!("h{index:05}z")
}

/// A churning thread's write: the races between the two threads make some of them refused.
fn tolerate_refusal(outcome: Result<u64, RegistryError>) {
    match outcome {
        Ok(_)
        | Err(
            RegistryError::UnknownHandle { .. }
            | RegistryError::DuplicateHandle { .. }
            | RegistryError::DuplicateComparable { .. },
        ) => {}
        Err(error) => panic!("churn write failed: {error}"),
    }
}

fn listings_under_churn(
    policy: SyncPolicy,
    batch_ops_max: usize,
    with_reset: bool,
    run_for: Duration,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (registry, _) =
        ShapeRegistry::open(dir.path(), config(policy, batch_ops_max)).expect("open");
    let registry = Arc::new(registry);
    if with_reset {
        for index in 0..SHAPES {
            registry.add_shape(shape(&reset_away(index))).expect("add");
        }
        registry.flush().expect("flush");
        registry.reset().expect("reset");
    }
    // Untouched from the listings' start: a third removed and added again, some marked.
    let mut expected = BTreeMap::new();
    for index in 0..SHAPES {
        registry.add_shape(shape(&untouched(index))).expect("add");
        expected.insert(untouched(index), SnapshotState::NotStarted);
    }
    for index in (0..SHAPES).step_by(3) {
        registry.remove_shape(&untouched(index)).expect("remove");
        registry
            .add_shape(shape(&untouched(index)))
            .expect("add again");
    }
    for index in (0..SHAPES).step_by(5) {
        registry
            .mark_snapshot_started(&untouched(index))
            .expect("mark");
        expected.insert(untouched(index), SnapshotState::Started);
    }
    for index in (0..SHAPES).step_by(7) {
        registry
            .mark_snapshot_complete(&untouched(index))
            .expect("mark");
        expected.insert(untouched(index), SnapshotState::Complete);
    }
    let expected: Vec<(String, SnapshotState)> = expected.into_iter().collect();

    let churning = Arc::clone(&registry);
    let churners = Repeating::start(2, move |first, round| {
        let index = usize::try_from(first + 2 * round).expect("a small index");
        let handle = churned(index % SHAPES);
        if !churning.has_handle(&handle).expect("read") {
            tolerate_refusal(churning.add_shape(shape(&handle)));
        } else if index % 3 == 0 {
            tolerate_refusal(churning.mark_snapshot_started(&handle));
        } else {
            tolerate_refusal(churning.remove_shape(&handle));
        }
    });

    let deadline = Instant::now() + run_for;
    let mut listings = 0;
    while listings == 0 || Instant::now() < deadline {
        let mut listed = Vec::new();
        let mut last: Option<String> = None;
        for (step, shape) in registry.list_shapes().enumerate() {
            let shape = shape.expect("list");
            if let Some(last) = &last {
                assert!(
                    *last < shape.handle,
                    "listing {listings}: {last} then {}: out of order or twice",
                    shape.handle
                );
            }
            assert!(
                !shape.handle.ends_with('z'),
                "listing {listings}: {} was reset away",
                shape.handle
            );
            last = Some(shape.handle.clone());
            if shape.handle.ends_with('a') {
                listed.push((shape.handle, shape.snapshot));
            }
            // Slow steps, so that the flusher drops chunks between them.
            if step % 3 == 0 {
                std::thread::sleep(Duration::from_micros(30));
            }
        }
        if listed != expected {
            let missing: Vec<_> = expected
                .iter()
                .filter(|shape| !listed.contains(shape))
                .take(5)
                .collect();
            let extra: Vec<_> = listed
                .iter()
                .filter(|shape| !expected.contains(shape))
                .take(5)
                .collect();
            panic!(
                "listing {listings}: {} untouched shapes listed of {}; missing {missing:?}; \
                 extra {extra:?}",
                listed.len(),
                expected.len()
            );
        }
        listings += 1;
    }
    churners.stop();
}

#[test]
fn listings_under_churn_and_small_batches_under_none() {
    listings_under_churn(SyncPolicy::None, 16, false, Duration::from_secs(2));
}

#[test]
fn listings_after_a_buffered_reset_under_none() {
    for _ in 0..3 {
        listings_under_churn(SyncPolicy::None, 16, true, Duration::from_millis(500));
    }
}

#[test]
fn listings_under_churn_under_sync() {
    listings_under_churn(SyncPolicy::Sync, 16, true, Duration::from_secs(2));
}

#[test]
fn listings_under_churn_and_large_batches_under_periodic() {
    listings_under_churn(
        SyncPolicy::Periodic { interval_ms: 2 },
        512,
        true,
        Duration::from_secs(2),
    );
}
