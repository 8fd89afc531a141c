//! Read-your-writes and visibility under concurrency, under `SyncPolicy::Sync` and
//! `SyncPolicy::None`, with small batches and a short flush interval so that the flusher
//! commits and drops ops from the overlay while writers write and readers read.
//!
//! - Writers (disjoint handles) add, mark and remove; right after each acknowledged write the
//!   writer reads it back, and a removed shape is gone at once.
//! - Readers never see a handle whose add had not been submitted when the read ended, and see
//!   every add (and completed snapshot) that a writer published as acknowledged before the
//!   read began; listings are ordered, without duplicates, and hold every such shape.
//! - Under `Sync`, nothing a reader saw was above the log's durable op key, sampled right
//!   after the read (durability only grows, so that bound holds at the time of the read).
//!   The deterministic version freezes the simulated disk's sync with the op published but
//!   not durable, and checks that no read sees it until the sync is let go.
//! - Two concurrent adds of the same handle, or of the same comparable: exactly one wins.

#![allow(clippy::print_stderr)] // The seed and a summary, to replay and to judge a run.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use walbuf::shapes::{NewShape, RegistryError, ShapeRegistry, ShapeSchema, SnapshotState};
use walbuf::store::{Store, StoreConfig};
use walbuf::{SyncPolicy, log};
use walbuf_tests::check::{seed, within};
use walbuf_tests::model::{Model, check_sqlite_rows, shape};
use walbuf_tests::sim::{PersistenceOp, Phase, SimStorage};

const WRITERS: usize = 4;
const READERS: usize = 2;
/// Churned handles per writer: added, removed, re-added, marked at random.
const CHURN: usize = 6;

fn config(policy: SyncPolicy) -> StoreConfig {
    StoreConfig {
        log: log::Config {
            segment_size_bytes: 256 << 10,
            max_record_bytes: 16 << 10,
            sync_policy: policy,
            ..log::Config::default()
        },
        // Small batches, so that the flusher commits and cleans up all the time (under
        // `None` writers are faster: larger batches keep the flusher from lagging far).
        batch_ops_max: if policy == SyncPolicy::Sync { 7 } else { 32 },
        flush_interval_ms: 1,
        ..StoreConfig::default()
    }
}

fn steps(policy: SyncPolicy) -> u64 {
    match policy {
        SyncPolicy::Sync => 120,
        _ => 400,
    }
}

fn permanent_handle(writer: usize, index: u64) -> String {
    format!("w{writer}/p{index:05}")
}

/// A shape that is added once and never removed (its snapshot is marked complete).
fn permanent(writer: usize, index: u64) -> NewShape {
    let handle = permanent_handle(writer, index);
    let comparable = format!("{handle}/comparable");
    shape(
        &handle,
        comparable.as_bytes(),
        (writer as i64) << 32 | index as i64,
        // Groups of 16 per oid: relation lookups stay small as the registry grows.
        &[1_000 + (writer as u32) * 10_000 + (index / 16) as u32],
        0,
    )
}

fn churn_handle(writer: usize, slot: usize) -> String {
    format!("w{writer}/c{slot}")
}

/// Version `version` of a churned shape: same handle and comparable, other hash and bytes.
fn churned(writer: usize, slot: usize, version: u8) -> NewShape {
    let handle = churn_handle(writer, slot);
    let comparable = format!("{handle}/comparable");
    shape(
        &handle,
        comparable.as_bytes(),
        i64::from(version),
        &[200 + writer as u32],
        version,
    )
}

/// What one writer has published: adds of permanent shapes started and acknowledged, and
/// snapshot completions acknowledged (counts; permanent shapes are written in index order).
#[derive(Default)]
struct Progress {
    started: AtomicU64,
    acknowledged: AtomicU64,
    completed: AtomicU64,
}

fn expect_shape(registry: &ShapeRegistry, new: &NewShape, state: SnapshotState, what: &str) {
    let got = registry
        .shape_for_handle(&new.handle)
        .expect("read")
        .unwrap_or_else(|| panic!("{what}: {} is not visible", new.handle));
    assert_eq!(
        (
            &got.shape,
            &got.comparable,
            got.hash,
            &got.relations,
            got.snapshot
        ),
        (&new.shape, &new.comparable, new.hash, &new.relations, state),
        "{what}: {} reads back different",
        new.handle
    );
    assert_eq!(
        registry.handle_for_shape(&new.comparable).expect("read"),
        Some(new.handle.clone()),
        "{what}: comparable of {}",
        new.handle
    );
    assert!(
        registry
            .validate_handle(&new.handle, new.hash)
            .expect("read")
    );
    for oid in new.relations.iter().map(|relation| relation.oid) {
        assert!(
            registry
                .handles_for_relations(&[oid])
                .expect("read")
                .contains(&new.handle),
            "{what}: {} missing under oid {oid}",
            new.handle
        );
    }
}

fn expect_gone(registry: &ShapeRegistry, new: &NewShape, what: &str) {
    assert!(
        !registry.has_handle(&new.handle).expect("read"),
        "{what}: {} still live",
        new.handle
    );
    assert_eq!(
        registry.shape_for_handle(&new.handle).expect("read"),
        None,
        "{what}"
    );
    assert_eq!(
        registry.handle_for_shape(&new.comparable).expect("read"),
        None,
        "{what}"
    );
    for oid in new.relations.iter().map(|relation| relation.oid) {
        assert!(
            !registry
                .handles_for_relations(&[oid])
                .expect("read")
                .contains(&new.handle),
            "{what}: removed {} still listed under oid {oid}",
            new.handle
        );
    }
}

/// One writer: per step, adds a permanent shape, marks it started then complete, and does
/// one churn op; reads each acknowledged write back at once. Returns the op keys of its
/// permanent adds and the final version of each churned slot (`None`: removed).
fn writer(
    registry: &ShapeRegistry,
    id: usize,
    steps: u64,
    progress: &Progress,
    seed: u64,
) -> (Vec<u64>, Vec<Option<(u8, SnapshotState)>>) {
    let mut rng = StdRng::seed_from_u64(seed ^ (id as u64).wrapping_mul(0x9e37_79b9));
    let mut add_keys = Vec::new();
    let mut slots: Vec<Option<(u8, SnapshotState)>> = vec![None; CHURN];
    let mut versions = [0u8; CHURN];
    for step in 0..steps {
        let new = permanent(id, step);
        progress.started.store(step + 1, Ordering::SeqCst);
        add_keys.push(
            registry
                .add_shape(new.clone())
                .expect("add permanent shape"),
        );
        progress.acknowledged.store(step + 1, Ordering::SeqCst);
        expect_shape(registry, &new, SnapshotState::NotStarted, "after its add");

        registry
            .mark_snapshot_started(&new.handle)
            .expect("mark started");
        assert!(registry.snapshot_started(&new.handle).expect("read"));
        assert!(!registry.snapshot_complete(&new.handle).expect("read"));
        registry
            .mark_snapshot_complete(&new.handle)
            .expect("mark complete");
        assert!(registry.snapshot_complete(&new.handle).expect("read"));
        progress.completed.store(step + 1, Ordering::SeqCst);

        let slot = rng.random_range(0..CHURN);
        match slots[slot] {
            None => {
                versions[slot] = versions[slot].wrapping_add(1);
                let new = churned(id, slot, versions[slot]);
                registry
                    .add_shape(new.clone())
                    .expect("re-add churned shape");
                expect_shape(registry, &new, SnapshotState::NotStarted, "after a re-add");
                slots[slot] = Some((versions[slot], SnapshotState::NotStarted));
            }
            Some((version, _)) if rng.random_bool(0.6) => {
                registry
                    .remove_shape(&churn_handle(id, slot))
                    .expect("remove churned shape");
                expect_gone(
                    registry,
                    &churned(id, slot, version),
                    "right after its removal",
                );
                assert!(matches!(
                    registry.remove_shape(&churn_handle(id, slot)),
                    Err(RegistryError::UnknownHandle { .. })
                ));
                slots[slot] = None;
            }
            Some((version, _)) => {
                registry
                    .mark_snapshot_complete(&churn_handle(id, slot))
                    .expect("mark churned shape");
                expect_shape(
                    registry,
                    &churned(id, slot, version),
                    SnapshotState::Complete,
                    "after a mark",
                );
                slots[slot] = Some((version, SnapshotState::Complete));
            }
        }
        if id == 0 && step % 50 == 49 {
            registry.flush().expect("flush from a writer");
        }
    }
    (add_keys, slots)
}

/// A read of a permanent handle that was not yet acknowledged when the read began, and the
/// log's durable op key right after the read.
struct Early {
    writer: usize,
    index: u64,
    durable_after: u64,
}

/// One reader, until `done`: checks what writers published against what it reads.
fn reader(
    registry: &ShapeRegistry,
    progress: &[Progress],
    done: &AtomicBool,
    seed: u64,
) -> (Vec<Early>, u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut early = Vec::new();
    let mut reads = 0u64;
    while !done.load(Ordering::SeqCst) {
        reads += 1;
        let id = rng.random_range(0..WRITERS);
        let acknowledged = progress[id].acknowledged.load(Ordering::SeqCst);
        if acknowledged > 0 {
            let index = rng.random_range(0..acknowledged);
            let handle = permanent_handle(id, index);
            assert!(
                registry.has_handle(&handle).expect("read"),
                "{handle} was acknowledged before the read began but is not visible"
            );
            assert_eq!(
                registry
                    .handle_for_shape(&permanent(id, index).comparable)
                    .expect("read"),
                Some(handle)
            );
        }
        let completed = progress[id].completed.load(Ordering::SeqCst);
        if completed > 0 {
            let handle = permanent_handle(id, rng.random_range(0..completed));
            assert!(
                registry.snapshot_complete(&handle).expect("read"),
                "{handle}: completion acknowledged before the read began but not visible"
            );
        }
        // At or just past the acknowledged frontier: maybe submitted, maybe not.
        let index = acknowledged + rng.random_range(0..3);
        let seen = if rng.random_bool(0.5) {
            registry
                .has_handle(&permanent_handle(id, index))
                .expect("read")
        } else {
            registry
                .handle_for_shape(&permanent(id, index).comparable)
                .expect("read")
                .is_some()
        };
        let durable_after = registry.store().log().durable_op_key();
        let started = progress[id].started.load(Ordering::SeqCst);
        if index >= started {
            assert!(
                !seen,
                "{} is visible but its add had not been submitted",
                permanent_handle(id, index)
            );
        } else if seen {
            early.push(Early {
                writer: id,
                index,
                durable_after,
            });
        }
        if reads.is_multiple_of(256) {
            let floor: Vec<u64> = progress
                .iter()
                .map(|p| p.acknowledged.load(Ordering::SeqCst))
                .collect();
            let count = registry.count_shapes().expect("count");
            let listed: Vec<String> = registry
                .list_shapes()
                .map(|shape| shape.expect("list").handle)
                .collect();
            let ceiling: Vec<u64> = progress
                .iter()
                .map(|p| p.started.load(Ordering::SeqCst))
                .collect();
            assert!(
                count >= floor.iter().sum::<u64>(),
                "count {count} below the acknowledged permanent shapes {floor:?}"
            );
            assert!(
                count <= ceiling.iter().sum::<u64>() + (WRITERS * CHURN) as u64,
                "count {count} above everything submitted"
            );
            assert!(
                listed.windows(2).all(|pair| pair[0] < pair[1]),
                "a listing is out of order or repeats a handle"
            );
            for (id, (floor, ceiling)) in floor.iter().zip(&ceiling).enumerate() {
                let prefix = format!("w{id}/p");
                let permanents: Vec<&String> = listed
                    .iter()
                    .filter(|handle| handle.starts_with(&prefix))
                    .collect();
                for index in 0..*floor {
                    let handle = permanent_handle(id, index);
                    assert!(
                        permanents.binary_search(&&handle).is_ok(),
                        "{handle} acknowledged before the listing began but not listed"
                    );
                }
                assert!(
                    permanents.len() as u64 <= *ceiling,
                    "writer {id}: {} permanent shapes listed, {ceiling} submitted",
                    permanents.len()
                );
            }
        }
    }
    (early, reads)
}

fn read_your_writes(policy: SyncPolicy) {
    let seed = seed();
    eprintln!("seed {seed} (WALBUF_SEED replays), {policy:?}");
    let dir = tempfile::tempdir().expect("tempdir");
    let (registry, _) = ShapeRegistry::open(dir.path(), config(policy)).expect("open");
    let registry = Arc::new(registry);
    let progress: Arc<Vec<Progress>> =
        Arc::new((0..WRITERS).map(|_| Progress::default()).collect());
    let done = Arc::new(AtomicBool::new(false));
    let steps = steps(policy);

    let readers: Vec<_> = (0..READERS)
        .map(|id| {
            let (registry, progress, done) = (
                Arc::clone(&registry),
                Arc::clone(&progress),
                Arc::clone(&done),
            );
            std::thread::spawn(move || reader(&registry, &progress, &done, seed + 1000 + id as u64))
        })
        .collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|id| {
            let (registry, progress) = (Arc::clone(&registry), Arc::clone(&progress));
            std::thread::spawn(move || writer(&registry, id, steps, &progress[id], seed))
        })
        .collect();
    let written: Vec<_> = writers
        .into_iter()
        .map(|writer| writer.join().expect("writer"))
        .collect();
    done.store(true, Ordering::SeqCst);
    let observed: Vec<_> = readers
        .into_iter()
        .map(|reader| reader.join().expect("reader"))
        .collect();

    let reads: u64 = observed.iter().map(|(_, reads)| reads).sum();
    let early: Vec<&Early> = observed.iter().flat_map(|(early, _)| early).collect();
    eprintln!(
        "{reads} reader iterations, {} reads of adds not yet acknowledged, stats {:?}",
        early.len(),
        registry.stats()
    );
    if policy == SyncPolicy::Sync {
        for seen in &early {
            let op_key = written[seen.writer].0[seen.index as usize];
            assert!(
                op_key <= seen.durable_after,
                "a reader saw {} (op key {op_key}) while the durable op key was {}",
                permanent_handle(seen.writer, seen.index),
                seen.durable_after
            );
        }
    }
    let stats = registry.stats();
    assert!(
        stats.flush_batches > 1,
        "the flusher ran concurrently: {stats:?}"
    );

    // The end state, against a model built from what each writer acknowledged.
    let mut model = Model::new();
    for (id, (_, slots)) in written.iter().enumerate() {
        for index in 0..steps {
            model.add(&permanent(id, index)).expect("model add");
            model
                .mark(&permanent_handle(id, index), SnapshotState::Complete)
                .expect("model mark");
        }
        for (slot, state) in slots.iter().enumerate() {
            if let Some((version, snapshot)) = state {
                model.add(&churned(id, slot, *version)).expect("model add");
                model
                    .mark(&churn_handle(id, slot), *snapshot)
                    .expect("model mark");
            }
        }
    }
    let listed: Vec<_> = registry
        .list_shapes()
        .collect::<Result<Vec<_>, _>>()
        .expect("list");
    assert_eq!(listed, model.list());
    assert_eq!(registry.count_shapes().expect("count"), model.count());
    registry.flush().expect("flush");
    check_sqlite_rows(&registry, &model).expect("SQLite holds what was acknowledged");
}

#[test]
fn writers_read_their_writes_and_readers_see_acknowledged_ops_under_sync() {
    within(Duration::from_secs(180), "read your writes (Sync)", || {
        read_your_writes(SyncPolicy::Sync);
    });
}

#[test]
fn writers_read_their_writes_and_readers_see_acknowledged_ops_under_none() {
    within(Duration::from_secs(180), "read your writes (None)", || {
        read_your_writes(SyncPolicy::None);
    });
}

fn exactly_one_wins(policy: SyncPolicy) {
    const ROUNDS: usize = 200;
    let dir = tempfile::tempdir().expect("tempdir");
    let (registry, _) = ShapeRegistry::open(dir.path(), config(policy)).expect("open");
    let registry = Arc::new(registry);
    let barrier = Arc::new(Barrier::new(2));
    // Round r: both racers add handle "same/r" (comparables differ), then handles
    // "a/r" and "b/r" with the one comparable "shared/r".
    let racers: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|side| {
            let (registry, barrier) = (Arc::clone(&registry), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let mut outcomes = Vec::new();
                for round in 0..ROUNDS {
                    let same = shape(
                        &format!("same/{round:03}"),
                        format!("same/{round:03}/{side}").as_bytes(),
                        0,
                        &[1],
                        u8::from(side == "b"),
                    );
                    barrier.wait();
                    let by_handle = registry.add_shape(same);
                    let shared = shape(
                        &format!("{side}/{round:03}"),
                        format!("shared/{round:03}").as_bytes(),
                        0,
                        &[2],
                        0,
                    );
                    barrier.wait();
                    let by_comparable = registry.add_shape(shared);
                    outcomes.push((by_handle, by_comparable));
                }
                outcomes
            })
        })
        .collect();
    let outcomes: Vec<Vec<_>> = racers
        .into_iter()
        .map(|racer| racer.join().expect("racer"))
        .collect();
    let mut winners = Vec::new();
    for (round, (a, b)) in outcomes[0].iter().zip(&outcomes[1]).enumerate() {
        let handle_winner = match (&a.0, &b.0) {
            (Ok(_), Err(RegistryError::DuplicateHandle { handle }))
            | (Err(RegistryError::DuplicateHandle { handle }), Ok(_)) => {
                assert_eq!(handle, &format!("same/{round:03}"));
                if a.0.is_ok() { "a" } else { "b" }
            }
            other => panic!("round {round}, same handle: expected exactly one win, got {other:?}"),
        };
        let comparable_winner = match (&a.1, &b.1) {
            (Ok(_), Err(RegistryError::DuplicateComparable { existing })) => {
                assert_eq!(existing, &format!("a/{round:03}"));
                "a"
            }
            (Err(RegistryError::DuplicateComparable { existing }), Ok(_)) => {
                assert_eq!(existing, &format!("b/{round:03}"));
                "b"
            }
            other => {
                panic!("round {round}, same comparable: expected exactly one win, got {other:?}")
            }
        };
        winners.push((handle_winner, comparable_winner));
    }
    let check = |registry: &ShapeRegistry, when: &str| {
        for (round, (handle_winner, comparable_winner)) in winners.iter().enumerate() {
            let same = registry
                .shape_for_handle(&format!("same/{round:03}"))
                .expect("read")
                .expect("the winner is live");
            assert_eq!(
                same.comparable,
                format!("same/{round:03}/{handle_winner}").into_bytes(),
                "{when}: round {round}"
            );
            let loser = if *handle_winner == "a" { "b" } else { "a" };
            assert_eq!(
                registry
                    .handle_for_shape(format!("same/{round:03}/{loser}").as_bytes())
                    .expect("read"),
                None,
                "{when}: the losing add left its comparable behind"
            );
            assert_eq!(
                registry
                    .handle_for_shape(format!("shared/{round:03}").as_bytes())
                    .expect("read"),
                Some(format!("{comparable_winner}/{round:03}")),
                "{when}: round {round}"
            );
        }
        assert_eq!(
            registry.count_shapes().expect("count"),
            2 * ROUNDS as u64,
            "{when}"
        );
        assert_eq!(
            registry.handles_for_relations(&[1]).expect("read").len(),
            ROUNDS
        );
        assert_eq!(
            registry.handles_for_relations(&[2]).expect("read").len(),
            ROUNDS
        );
    };
    check(&registry, "buffered or flushed");
    assert_eq!(
        registry.stats().last_op_key,
        2 * ROUNDS as u64,
        "losers are not logged"
    );
    registry.flush().expect("flush");
    check(&registry, "flushed");
    let rows: u64 = registry
        .store()
        .read_sqlite("count rows", |c| {
            c.query_row("SELECT count(*) FROM shapes", [], |row| {
                row.get::<_, i64>(0)
            })
        })
        .expect("read")
        .cast_unsigned();
    assert_eq!(rows, 2 * ROUNDS as u64);
    registry.close().expect("close");
    drop(registry);
    let (registry, _) = ShapeRegistry::open(dir.path(), config(policy)).expect("reopen");
    check(&registry, "reopened");
}

#[test]
fn of_two_concurrent_adds_of_a_handle_or_comparable_exactly_one_wins() {
    within(Duration::from_secs(180), "exactly one wins", || {
        exactly_one_wins(SyncPolicy::Sync);
        exactly_one_wins(SyncPolicy::None);
    });
}

/// Under `Sync`, with the op published but its sync frozen on the simulated disk, no read
/// sees it — though validation already counts it (a second add of its handle is refused) —
/// and once the sync is let go, every read does.
#[test]
fn under_sync_an_op_is_invisible_until_it_is_durable() {
    within(Duration::from_secs(120), "invisible until durable", || {
        let storage = SimStorage::new();
        let disk = storage.disk();
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = Store::open_with(
            storage,
            &dir.path().join("walbuf.db"),
            ShapeSchema,
            config(SyncPolicy::Sync),
        )
        .expect("open");
        let registry = Arc::new(ShapeRegistry::new(store));
        registry
            .add_shape(shape("before", b"before", 0, &[1], 0))
            .expect("add");

        // Syncs take 50 ms before they touch the disk, so that the test sees the op
        // published and then holds the sync before it happens.
        disk.set_sync_delay(Duration::from_millis(50));
        let hold = Arc::new(AtomicBool::new(false));
        // Counts the hook's turns while `hold` is set: a turn after the test set it means a
        // sync is held, and every sync before it has published its durable key.
        let held_turns = Arc::new(AtomicU64::new(0));
        {
            let (hold, held_turns) = (Arc::clone(&hold), Arc::clone(&held_turns));
            disk.set_hook(move |point, _| {
                if point.phase == Phase::Before && matches!(point.op, PersistenceOp::Sync { .. }) {
                    while hold.load(Ordering::SeqCst) {
                        held_turns.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            });
        }
        let mut conclusive = 0;
        let mut attempts = 0;
        while conclusive < 5 {
            attempts += 1;
            let round = attempts;
            let new = shape(
                &format!("h{round}"),
                format!("c{round}").as_bytes(),
                0,
                &[9],
                0,
            );
            let expected_key = registry.stats().last_op_key + 1;
            let count = registry.count_shapes().expect("count");
            let writer = {
                let (registry, new) = (Arc::clone(&registry), new.clone());
                std::thread::spawn(move || registry.add_shape(new))
            };
            let log = registry.store().log();
            while log.published_op_key() < expected_key {
                std::thread::yield_now();
            }
            let turns = held_turns.load(Ordering::SeqCst);
            hold.store(true, Ordering::SeqCst);
            while held_turns.load(Ordering::SeqCst) == turns {
                std::thread::sleep(Duration::from_millis(1));
            }
            let durable = log.durable_op_key();
            if durable < expected_key {
                conclusive += 1;
                // Frozen: the op is published, not durable, and cannot become durable.
                assert!(!registry.has_handle(&new.handle).expect("read"));
                assert_eq!(registry.shape_for_handle(&new.handle).expect("read"), None);
                assert_eq!(
                    registry.handle_for_shape(&new.comparable).expect("read"),
                    None
                );
                assert!(
                    !registry
                        .handles_for_relations(&[9])
                        .expect("read")
                        .contains(&new.handle)
                );
                assert_eq!(registry.count_shapes().expect("count"), count);
                assert!(
                    registry
                        .list_shapes()
                        .all(|shape| shape.expect("list").handle != new.handle)
                );
                // Validation sees every submitted op, durable or not.
                assert!(matches!(
                    registry.add_shape(shape(&new.handle, b"other", 0, &[], 0)),
                    Err(RegistryError::DuplicateHandle { .. })
                ));
                assert!(registry.store().visible_op_key() < expected_key);
                assert_eq!(log.durable_op_key(), durable, "the sync is held");
                assert!(!writer.is_finished(), "acknowledged before durable");
            }
            hold.store(false, Ordering::SeqCst);
            let op_key = writer.join().expect("writer").expect("add");
            assert_eq!(op_key, expected_key);
            assert!(log.durable_op_key() >= op_key);
            assert!(registry.has_handle(&new.handle).expect("read"));
            assert_eq!(registry.count_shapes().expect("count"), count + 1);
        }
        eprintln!("{conclusive} conclusive rounds in {attempts}");
        disk.clear_hook();
        disk.set_sync_delay(Duration::ZERO);
        registry.flush().expect("flush");
    });
}
