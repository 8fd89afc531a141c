//! Criterion micro-benchmarks of the shape registry's hot paths (the shape workload of
//! `walbuf bench`: a 300-byte shape, a 32-byte comparable, 2 relations, random handles):
//!
//! * `handle_for_shape_buffered`: `handle_for_shape` of a shape still in the buffer (the
//!   overlay lookup; 10 000 buffered shapes, the flusher idle).
//! * `add_shape_none_idle_flusher`: `add_shape` under `SyncPolicy::None` with the flusher
//!   idle: validation, encoding, the log append, the buffer and index inserts. Each sample
//!   starts from a fresh registry (opened untimed).
//! * `replay_10k`: `ShapeRegistry::open` of a store whose log holds 10 000 ops above SQLite's
//!   watermark (a copy, made untimed, of a store left open and unflushed): scan, check and
//!   replay into the buffer. Per op: the sample time ÷ 10 000.
//!
//! Run with `cargo bench -p walbuf --bench shapes`. The files go under cargo's target
//! directory (the work folder's disk).

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use walbuf::store::{ApplyHook, StoreConfig};
use walbuf::{NewShape, Relation, ShapeRegistry, SyncPolicy};

/// Shapes buffered for the lookup benchmark.
const BUFFERED_SHAPES: u64 = 10_000;
/// Ops replayed by `replay_10k`.
const REPLAY_OPS: u64 = 10_000;

/// `splitmix64`.
fn mix(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn comparable_of(key: u64) -> Vec<u8> {
    format!("{:016x}{:016x}", mix(key), mix(key ^ 0x00C0_FFEE_0000_0000)).into_bytes()
}

/// The shape of `key`, as `walbuf bench` makes it.
fn shape_of(key: u64, body: &[u8]) -> NewShape {
    NewShape {
        handle: format!("{:016x}", mix(key ^ 0x5A5A_0000_0000_0000)),
        shape: body.to_vec(),
        comparable: comparable_of(key),
        hash: mix(key ^ 0x0123_4567) as i64,
        relations: vec![
            Relation {
                oid: 1_000_000 + (key as u32 & 0x3FFF_FFFF),
                schema: "public".into(),
                table: "items".into(),
            },
            Relation {
                oid: 16_384 + (key % 100) as u32,
                schema: "public".into(),
                table: "shared".into(),
            },
        ],
    }
}

/// A registry configuration under `None` whose flusher never runs on its own, and whose close
/// abandons the buffer (a failing apply hook) once `abandon` is set.
fn idle_config(abandon: &Arc<AtomicBool>) -> StoreConfig {
    let abandon = Arc::clone(abandon);
    StoreConfig {
        log: walbuf::log::Config {
            sync_policy: SyncPolicy::None,
            segment_size_bytes: 16 << 20,
            max_record_bytes: 1 << 20,
            prepare_ahead: false,
            ..walbuf::log::Config::default()
        },
        flush_interval_ms: 3_600_000,
        batch_ops_max: 1_000_000,
        buffer_ops_max: 4_000_000,
        buffer_bytes_max: 4 << 30,
        apply_hook: Some(ApplyHook(Arc::new(move |_keys: &[u64]| {
            if abandon.load(Ordering::Relaxed) {
                Err(rusqlite::Error::InvalidQuery)
            } else {
                Ok(())
            }
        }))),
        ..StoreConfig::default()
    }
}

fn body() -> Vec<u8> {
    vec![b's'; 300]
}

fn lookup(c: &mut Criterion) {
    let directory = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a directory");
    let abandon = Arc::new(AtomicBool::new(false));
    let (registry, _) =
        ShapeRegistry::open(directory.path(), idle_config(&abandon)).expect("the registry opens");
    let body = body();
    for key in 0..BUFFERED_SHAPES {
        registry.add_shape(shape_of(key, &body)).expect("add");
    }
    let comparables: Vec<Vec<u8>> = (0..4096)
        .map(|index| comparable_of(mix(index) % BUFFERED_SHAPES))
        .collect();
    let mut group = c.benchmark_group("shapes");
    group.throughput(Throughput::Elements(1));
    group.bench_function("handle_for_shape_buffered", |b| {
        let mut index = 0;
        b.iter(|| {
            index = (index + 1) % comparables.len();
            let handle = registry
                .handle_for_shape(black_box(&comparables[index]))
                .expect("lookup");
            assert!(handle.is_some(), "the shape is buffered");
            handle
        });
    });
    group.finish();
    abandon.store(true, Ordering::Relaxed);
    registry.close().expect("close");
}

fn add(c: &mut Criterion) {
    let body = body();
    let mut group = c.benchmark_group("shapes");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.bench_function("add_shape_none_idle_flusher", |b| {
        b.iter_custom(|iterations| {
            let directory = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a directory");
            let abandon = Arc::new(AtomicBool::new(false));
            let (registry, _) = ShapeRegistry::open(directory.path(), idle_config(&abandon))
                .expect("the registry opens");
            let shapes: Vec<NewShape> = (0..iterations).map(|key| shape_of(key, &body)).collect();
            let started = Instant::now();
            for shape in shapes {
                black_box(registry.add_shape(shape).expect("add"));
            }
            let elapsed = started.elapsed();
            abandon.store(true, Ordering::Relaxed);
            registry.close().expect("close");
            elapsed
        });
    });
    group.finish();
}

/// Copies the files of a store (the log's segments, the database) to `to`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy");
    for entry in std::fs::read_dir(from).expect("read the store") {
        let entry = entry.expect("an entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), &target).expect("copy a file");
        }
    }
}

fn replay(c: &mut Criterion) {
    let original = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a directory");
    let abandon = Arc::new(AtomicBool::new(false));
    let (registry, _) =
        ShapeRegistry::open(original.path(), idle_config(&abandon)).expect("the registry opens");
    let body = body();
    for key in 0..REPLAY_OPS {
        registry.add_shape(shape_of(key, &body)).expect("add");
    }
    // Left open and unflushed: its files are what a killed process leaves (the map's writes
    // are in the page cache, which the copies read).
    std::mem::forget(registry);

    let mut group = c.benchmark_group("shapes");
    group.throughput(Throughput::Elements(REPLAY_OPS));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("replay_10k", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let copy = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a directory");
                copy_tree(original.path(), copy.path());
                let abandon = Arc::new(AtomicBool::new(false));
                let started = Instant::now();
                let (registry, report) = ShapeRegistry::open(copy.path(), idle_config(&abandon))
                    .expect("the copy opens");
                total += started.elapsed();
                assert_eq!(report.ops_replayed, REPLAY_OPS, "every op replayed");
                abandon.store(true, Ordering::Relaxed);
                registry.close().expect("close");
            }
            total
        });
    });
    group.finish();
}

criterion_group!(benches, lookup, add, replay);
criterion_main!(benches);
