//! Simulated power loss of a whole store, at every persistence point of its log: every sync,
//! sync mark, rotation (create, rename, directory sync), flush-driven segment retirement
//! (remove, directory sync) and tail erase, before and after each.
//!
//! A single writer runs a shape workload under `SyncPolicy::Sync` while the flusher applies
//! small batches to SQLite and retires 16 KiB segments. At each point the test keeps the image
//! a power cut would leave — the log's durable bytes (dropped, torn at a sector, kept at
//! random or garbled, with directory operations undone, kept or cut at a random prefix) and
//! SQLite's committed state (`synchronous=FULL`: a commit is durable when it returns) — plus
//! how many ops were acknowledged and submitted at that moment. Then each image is reopened
//! and must hold the state after exactly the first `p` ops, for the `p` recovery reports,
//! with acknowledged ≤ p ≤ submitted; flushing it must succeed (nothing applied twice) and
//! leave the same state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use walbuf::shapes::{NewShape, Relation, ShapeRegistry, ShapeSchema, SnapshotState};
use walbuf::store::{Store, StoreConfig};
use walbuf_tests::sim::{DirectoryLoss, PowerLoss, SimStorage};

/// The shapes after some prefix of the ops: handle → (comparable, snapshot state).
type State = BTreeMap<String, (Vec<u8>, SnapshotState)>;

#[derive(Debug, Clone)]
enum Op {
    Add(String, Vec<u8>),
    Remove(String),
    Complete(String),
    Reset,
}

fn apply(state: &mut State, op: &Op) {
    match op {
        Op::Add(handle, comparable) => {
            state.insert(
                handle.clone(),
                (comparable.clone(), SnapshotState::NotStarted),
            );
        }
        Op::Remove(handle) => {
            state.remove(handle);
        }
        Op::Complete(handle) => {
            if let Some(shape) = state.get_mut(handle) {
                shape.1 = SnapshotState::Complete;
            }
        }
        Op::Reset => state.clear(),
    }
}

/// A valid op sequence (every op accepted, so op key i is the i-th op).
fn workload(seed: u64, len: usize) -> Vec<Op> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut state = State::new();
    let mut ops = Vec::with_capacity(len);
    for index in 0..len {
        let live: Vec<String> = state.keys().cloned().collect();
        let roll = rng.random_range(0..100);
        let op = if roll < 2 && index > len / 2 {
            Op::Reset
        } else if roll < 60 || live.is_empty() {
            // Comparables are reused after a removal: re-adds of a released comparable.
            let comparable = format!("c{}", rng.random_range(0..40)).into_bytes();
            if state.values().any(|(held, _)| *held == comparable) {
                Op::Add(format!("h{index}"), format!("u{index}").into_bytes())
            } else {
                Op::Add(format!("h{index}"), comparable)
            }
        } else if roll < 85 {
            Op::Remove(live[rng.random_range(0..live.len())].clone())
        } else {
            Op::Complete(live[rng.random_range(0..live.len())].clone())
        };
        apply(&mut state, &op);
        ops.push(op);
    }
    ops
}

fn config() -> StoreConfig {
    walbuf_tests::check::sim_store_config()
}

fn submit(registry: &ShapeRegistry<SimStorage>, op: &Op) {
    let result = match op {
        Op::Add(handle, comparable) => registry.add_shape(NewShape {
            handle: handle.clone(),
            shape: vec![b's'; 200],
            comparable: comparable.clone(),
            hash: 1,
            relations: vec![Relation {
                oid: 7,
                schema: "public".into(),
                table: "t".into(),
            }],
        }),
        Op::Remove(handle) => registry.remove_shape(handle),
        Op::Complete(handle) => registry.mark_snapshot_complete(handle),
        Op::Reset => registry.reset(),
    };
    result.unwrap_or_else(|error| panic!("{op:?} refused: {error}"));
}

/// What the registry holds, read through its public API.
fn observe(registry: &ShapeRegistry<SimStorage>) -> Result<State, String> {
    let mut state = State::new();
    for shape in registry.list_shapes() {
        let shape = shape.map_err(|e| e.to_string())?;
        state.insert(shape.handle, (shape.comparable, shape.snapshot));
    }
    let count = registry.count_shapes().map_err(|e| e.to_string())?;
    if count != state.len() as u64 {
        return Err(format!("count {count} but {} listed", state.len()));
    }
    for (handle, (comparable, _)) in &state {
        let holder = registry
            .handle_for_shape(comparable)
            .map_err(|e| e.to_string())?;
        if holder.as_deref() != Some(handle.as_str()) {
            return Err(format!("comparable of {handle} resolves to {holder:?}"));
        }
    }
    Ok(state)
}

/// One captured crash image.
struct Image {
    point: String,
    log: SimStorage,
    database: Vec<u8>,
    acknowledged: u64,
    submitted: u64,
}

fn check(image: Image, states: &[State], dir: &std::path::Path) -> Result<(), String> {
    let database = dir.join("image.db");
    let _ = std::fs::remove_file(dir.join("image.db-wal"));
    let _ = std::fs::remove_file(dir.join("image.db-shm"));
    std::fs::write(&database, &image.database).map_err(|e| e.to_string())?;
    let (store, report) = Store::open_with(image.log, &database, ShapeSchema, config())
        .map_err(|error| format!("reopen failed: {error}"))?;
    let registry = ShapeRegistry::new(store);
    let recovered = report.next_op_key - 1;
    if recovered < image.acknowledged || recovered > image.submitted {
        return Err(format!(
            "recovered {recovered} ops, but {} were acknowledged and {} submitted",
            image.acknowledged, image.submitted
        ));
    }
    let expected = &states[recovered as usize];
    let found = observe(&registry)?;
    if &found != expected {
        return Err(format!(
            "after {recovered} ops: found {found:?}, expected {expected:?}"
        ));
    }
    registry
        .flush()
        .map_err(|error| format!("flush after recovery: {error}"))?;
    let flushed = observe(&registry)?;
    if &flushed != expected {
        return Err(format!(
            "after flushing: found {flushed:?}, expected {expected:?}"
        ));
    }
    registry.close().map_err(|e| e.to_string())?;
    Ok(())
}

/// SQLite's side of these images is thrown away: keep its fsyncs off the real disk when a
/// memory filesystem is there (SQLite's own durability is not what this test checks).
fn scratch_dir() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("tempdir")
}

#[test]
fn power_loss_at_every_persistence_point_of_a_store_loses_nothing_acknowledged() {
    let seed = walbuf_tests::check::seed();
    let ops = workload(seed, 160);
    let mut states = vec![State::new()];
    for op in &ops {
        let mut next = states.last().cloned().unwrap_or_default();
        apply(&mut next, op);
        states.push(next);
    }

    let dir = scratch_dir();
    let database = dir.path().join("walbuf.db");
    let storage = SimStorage::new();
    let disk = storage.disk();
    let acknowledged = Arc::new(AtomicU64::new(0));
    let submitted = Arc::new(AtomicU64::new(0));
    let images: Arc<Mutex<Vec<Image>>> = Arc::default();
    let (store, _) =
        Store::open_with(storage, &database, ShapeSchema, config()).expect("open the store");
    let registry = ShapeRegistry::new(store);
    {
        let (acknowledged, submitted, images) = (
            Arc::clone(&acknowledged),
            Arc::clone(&submitted),
            Arc::clone(&images),
        );
        let snapshot_path = dir.path().join("snapshot.db");
        let reader = rusqlite::Connection::open_with_flags(
            &database,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("read-only connection");
        let reader = Mutex::new(reader);
        let losses = PowerLoss::combinations(&DirectoryLoss::IN_ORDER);
        let mut rng = StdRng::seed_from_u64(seed ^ 0x1ee7);
        disk.set_hook(move |point, snapshot| {
            // Read the counters first: whatever was acknowledged by now is durable now.
            let acknowledged = acknowledged.load(Ordering::SeqCst);
            // SQLite's committed state at this moment (a consistent snapshot).
            let _ = std::fs::remove_file(&snapshot_path);
            let copied = reader
                .lock()
                .execute("VACUUM INTO ?1", [snapshot_path.to_string_lossy().as_ref()]);
            let database = match copied {
                Ok(_) => std::fs::read(&snapshot_path).expect("read the snapshot"),
                Err(error) => panic!("snapshot of SQLite failed: {error}"),
            };
            let submitted = submitted.load(Ordering::SeqCst);
            let random = losses[rng.random_range(0..losses.len())];
            for how in [PowerLoss::DROP_ALL, random] {
                images.lock().push(Image {
                    point: format!("{:?} {:?} ({how:?})", point.phase, point.op),
                    log: snapshot.power_loss_image(how, &mut rng),
                    database: database.clone(),
                    acknowledged,
                    submitted,
                });
            }
        });
    }
    // A watchdog: a durability pipeline that stalls must fail the test, not hang it.
    let registry = Arc::new(registry);
    let (workload_registry, workload_ops) = (Arc::clone(&registry), ops.clone());
    let (workload_acknowledged, workload_submitted) =
        (Arc::clone(&acknowledged), Arc::clone(&submitted));
    walbuf_tests::check::within(
        std::time::Duration::from_secs(120),
        "the workload",
        move || {
            for op in &workload_ops {
                workload_submitted.fetch_add(1, Ordering::SeqCst);
                submit(&workload_registry, op);
                workload_acknowledged.fetch_add(1, Ordering::SeqCst);
            }
            workload_registry.flush().expect("flush");
        },
    );
    assert_eq!(observe(&registry).expect("observe"), states[ops.len()]);
    registry.close().expect("close");
    disk.clear_hook();

    let images = std::mem::take(&mut *images.lock());
    let stats_line = format!("seed {seed}: {} images", images.len());
    assert!(
        images.len() > 100,
        "too few persistence points: {stats_line}"
    );
    let check_dir = scratch_dir();
    let mut failures = Vec::new();
    for image in images {
        let point = image.point.clone();
        if let Err(problem) = check(image, &states, check_dir.path()) {
            failures.push(format!("{point}: {problem}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{stats_line} (rerun with WALBUF_SEED={seed}); {} failed, first: {:#?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}
