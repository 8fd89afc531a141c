//! Criterion micro-benchmarks of `Log::append` of a 256-byte record under `SyncPolicy::None`
//! from one thread: reservation, checksum, copy into the mapping, publication.
//!
//! * `append_256_none_1_thread`: default configuration (64 MiB segments, prepared ahead);
//!   rotations (and the background preparation of segments) happen at their natural rate and
//!   are included. Full segments are retired between samples, untimed, so the disk use stays
//!   at a few segments.
//! * `append_256_none_1_thread_no_rotation`: each sample appends into a fresh log whose one
//!   segment is just large enough (opened and closed untimed, nothing prepared ahead): the
//!   append path alone.
//!
//! Run with `cargo bench -p walbuf --bench log_append`. The files go under cargo's target
//! directory (the work folder's disk).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use walbuf::SyncPolicy;
use walbuf::log::{Config, Log};
use walbuf_recovery::format::{Record, SEGMENT_HEADER_LEN, padded_frame_len};

/// Payload bytes of every record.
const PAYLOAD_BYTES: usize = 256;

fn append(c: &mut Criterion) {
    let directory =
        tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a temporary directory");
    let config = Config {
        sync_policy: SyncPolicy::None,
        ..Config::default()
    };
    let mut ignore = |_: &Record<'_>| Ok(());
    let (log, _report) =
        Log::open_dir(directory.path(), config, &mut ignore).expect("the log opens");
    let payload: Vec<u8> = (0..PAYLOAD_BYTES)
        .map(|index| (index * 31 % 251) as u8)
        .collect();

    let mut group = c.benchmark_group("log");
    group.throughput(Throughput::Elements(1));
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("append_256_none_1_thread", |b| {
        b.iter_custom(|iterations| {
            let started = Instant::now();
            for _ in 0..iterations {
                black_box(log.append(1, black_box(&payload)).expect("append"));
            }
            let elapsed = started.elapsed();
            let last_op_key = log.stats().last_op_key;
            log.truncate_before(last_op_key)
                .expect("retire full segments");
            elapsed
        });
    });
    log.close().expect("the log closes");
    drop(log);

    group.bench_function("append_256_none_1_thread_no_rotation", |b| {
        b.iter_custom(|iterations| {
            let directory =
                tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a temporary directory");
            let needed = SEGMENT_HEADER_LEN + iterations * padded_frame_len(PAYLOAD_BYTES);
            let config = Config {
                segment_size_bytes: (needed + 4096).next_multiple_of(1 << 20),
                max_record_bytes: 64 << 10,
                sync_policy: SyncPolicy::None,
                prepare_ahead: false,
                ..Config::default()
            };
            let mut ignore = |_: &Record<'_>| Ok(());
            let (log, _report) =
                Log::open_dir(directory.path(), config, &mut ignore).expect("the log opens");
            let started = Instant::now();
            for _ in 0..iterations {
                black_box(log.append(1, black_box(&payload)).expect("append"));
            }
            let elapsed = started.elapsed();
            assert_eq!(log.stats().rotations, 0, "the sample stayed in one segment");
            log.close().expect("the log closes");
            elapsed
        });
    });
    group.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
