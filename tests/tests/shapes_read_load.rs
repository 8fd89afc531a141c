//! The flusher under a heavy read load. Each read holds the overlay gate briefly, but eight
//! readers overlap all the time: a gate that let a new reader in while the flusher waited to
//! drop committed ops (as a recursive read lock does) starved the flusher for good, so
//! flushes never returned and the buffer filled up.

#![allow(clippy::print_stderr)] // The slowest flush, to judge a run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use walbuf::SyncPolicy;
use walbuf::shapes::NewShape;
use walbuf::shapes::ShapeRegistry;
use walbuf::store::StoreConfig;
use walbuf_tests::check::{Repeating, small_log_config, within};
use walbuf_tests::model;

fn shape(index: u64) -> NewShape {
    model::shape(
        &format!("h{index:08}"),
        format!("c{index}").as_bytes(),
        1,
        &[7],
        0,
    )
}

#[test]
fn flushes_complete_while_many_readers_hammer_the_overlay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StoreConfig {
        log: small_log_config(SyncPolicy::None),
        batch_ops_max: 64,
        flush_interval_ms: 3_600_000,
        ..StoreConfig::default()
    };
    let (registry, _) = ShapeRegistry::open(dir.path(), config).expect("open");
    let registry = Arc::new(registry);
    for index in 0..2_000u64 {
        registry.add_shape(shape(index)).expect("add");
    }
    registry.flush().expect("flush");
    let reading = Arc::clone(&registry);
    let readers = Repeating::start(8, move |reader, round| {
        let new = shape((reader + 7 * round) % 2_000);
        reading.shape_for_handle(&new.handle).expect("read");
        reading.handle_for_shape(&new.comparable).expect("read");
    });
    // The writes and flushes run on their own thread, so that a starved flusher fails the
    // test at the deadline instead of hanging it.
    let writing = Arc::clone(&registry);
    let worst = within(
        Duration::from_secs(120),
        "40 flushes under a read load (the readers starved the flusher)",
        move || {
            let mut worst = Duration::ZERO;
            for index in 2_000..2_040u64 {
                for more in 0..200 {
                    writing.add_shape(shape(index * 1_000 + more)).expect("add");
                }
                let started = Instant::now();
                writing.flush().expect("flush");
                worst = worst.max(started.elapsed());
            }
            worst
        },
    );
    readers.stop();
    eprintln!("slowest flush under the read load: {worst:?}");
}
