//! Writeback under `Periodic`/`None`: the sync thread syncs each completed chunk of the active
//! segment (a sixteenth of it) without claiming it durable, so that a rotation finds little
//! left to write. These extra syncs run concurrently with appends, rotations and explicit
//! syncs; power loss at every persistence point (including each writeback) must still give
//! back every record made durable by a returned `Log::sync`, invent nothing, and keep keys
//! gapless.
//!
//! That writebacks really happened is counted on the storage (see [`Observed`]), not inferred
//! from the log's sync count: explicit syncs from several threads share one sync when they
//! arrive together, so the count alone cannot tell writebacks apart.
//!
//! A failure prints its seed; `WALBUF_SEED=<seed>` replays it.
#![allow(clippy::print_stderr)]

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::{Rng, SeedableRng};
use walbuf::SyncPolicy;
use walbuf::log::Config;
use walbuf::storage::{Region, SegmentFile, Storage, SyncPattern};
use walbuf_recovery::Options;
use walbuf_tests::check::{Ledger, PowerLossProbe, open_collect, seed, unique_payload};
use walbuf_tests::sim::{PowerLoss, SimSegment, SimStorage};

/// The writeback chunk (and alignment) of the 64 KiB segments below: a sixteenth of them.
const WRITEBACK_ALIGN_BYTES: u64 = 4096;

/// A [`SimStorage`] that counts the segments written back while they filled. A segment's first
/// writeback syncs `[0, n × 4 KiB)` short of its end, and no other sync looks like that: a
/// group or explicit sync starts at the durable offset (past the 64-byte header), a rotation's
/// sync ends at the segment's end, and the header's sync is 64 bytes long.
struct Observed {
    inner: SimStorage,
    segments_written_back: Arc<AtomicU64>,
}

struct ObservedSegment {
    inner: SimSegment,
    segments_written_back: Arc<AtomicU64>,
}

impl ObservedSegment {
    fn wrap(inner: SimSegment, storage: &Observed) -> Self {
        Self {
            inner,
            segments_written_back: Arc::clone(&storage.segments_written_back),
        }
    }
}

impl SegmentFile for ObservedSegment {
    fn capacity(&self) -> u64 {
        self.inner.capacity()
    }

    fn reserve(&self, len_bytes: u64) -> Option<Region> {
        self.inner.reserve(len_bytes)
    }

    fn write(&self, region: Region, parts: &[&[u8]]) {
        self.inner.write(region, parts);
    }

    fn sync(&self, offset: u64, len_bytes: u64) -> io::Result<()> {
        self.inner.sync(offset, len_bytes)?;
        if offset == 0
            && len_bytes > 0
            && len_bytes.is_multiple_of(WRITEBACK_ALIGN_BYTES)
            && len_bytes < self.capacity()
        {
            self.segments_written_back.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

impl Storage for Observed {
    type Segment = ObservedSegment;

    fn list(&self) -> io::Result<Vec<String>> {
        self.inner.list()
    }

    fn create(&self, name: &str, capacity_bytes: u64) -> io::Result<ObservedSegment> {
        Ok(ObservedSegment::wrap(
            self.inner.create(name, capacity_bytes)?,
            self,
        ))
    }

    fn create_for(
        &self,
        name: &str,
        capacity_bytes: u64,
        pattern: SyncPattern,
    ) -> io::Result<ObservedSegment> {
        Ok(ObservedSegment::wrap(
            self.inner.create_for(name, capacity_bytes, pattern)?,
            self,
        ))
    }

    fn open(
        &self,
        name: &str,
        capacity_bytes: u64,
        resume_offset: u64,
    ) -> io::Result<ObservedSegment> {
        Ok(ObservedSegment::wrap(
            self.inner.open(name, capacity_bytes, resume_offset)?,
            self,
        ))
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        self.inner.read(name)
    }

    fn read_into(&self, name: &str, bytes: &mut Vec<u8>) -> io::Result<()> {
        self.inner.read_into(name, bytes)
    }

    fn read_prefix(&self, name: &str, len: usize) -> io::Result<Vec<u8>> {
        self.inner.read_prefix(name, len)
    }

    fn erase_tail(&self, name: &str, offset: u64, capacity_bytes: u64) -> io::Result<()> {
        self.inner.erase_tail(name, offset, capacity_bytes)
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.inner.rename(from, to)
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.inner.remove(name)
    }

    fn sync_directory(&self) -> io::Result<()> {
        self.inner.sync_directory()
    }

    fn describe(&self, name: &str) -> PathBuf {
        self.inner.describe(name)
    }
}

fn config(policy: SyncPolicy, prepare_ahead: bool) -> Config {
    Config {
        // A sixteenth of this is 4 KiB: a writeback every few records.
        segment_size_bytes: 64 * 1024,
        max_record_bytes: 4096,
        sync_policy: policy,
        prepare_ahead,
        ..Config::default()
    }
}

/// `threads` threads each append `count` records under the log's policy and call `Log::sync`
/// every `sync_every` records; after each sync returns, the thread's records so far count as
/// acknowledged.
fn run(config: &Config, threads: u64, count: u64, sync_every: u64) {
    let seed = seed();
    eprintln!("seed {seed}");
    let inner = SimStorage::new();
    let disk = inner.disk();
    let segments_written_back = Arc::new(AtomicU64::new(0));
    let storage = Observed {
        inner,
        segments_written_back: Arc::clone(&segments_written_back),
    };
    let ledger = Ledger::new();
    let (log, _, recovered) =
        open_collect(storage, config.clone(), Options::default()).expect("open");
    assert!(recovered.is_empty());
    let probe = PowerLossProbe::install(&disk, &ledger, config, PowerLoss::all(), seed);
    let log = Arc::new(log);
    let handles: Vec<_> = (0..threads)
        .map(|thread| {
            let (log, ledger) = (Arc::clone(&log), ledger.clone());
            std::thread::spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (thread + 1));
                let mut pending = Vec::new();
                for index in 0..count {
                    let id = (seed << 20) ^ (thread << 16) ^ index;
                    let payload = unique_payload(id, rng.random_range(8..1500));
                    let kind = rng.random_range(1..=127);
                    ledger.submit(kind, &payload);
                    let key = log.append(kind, &payload).expect("append");
                    pending.push((key, kind, payload));
                    if (index + 1) % sync_every == 0 {
                        log.sync().expect("sync");
                        for (key, kind, payload) in pending.drain(..) {
                            ledger.acknowledge(key, kind, &payload);
                        }
                    }
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("appender thread");
    }
    let stats = log.stats();
    log.close().expect("close");
    disk.clear_hook();
    assert!(stats.rotations >= 3, "the workload must rotate: {stats:?}");
    let segments_written_back = segments_written_back.load(Ordering::Relaxed);
    assert!(
        segments_written_back > 0,
        "writebacks must have happened: {stats:?}"
    );
    probe.assert_clean(seed);
    eprintln!(
        "{} images checked, {segments_written_back} segments written back, {stats:?}",
        probe.images()
    );
}

#[test]
fn writeback_under_none_loses_nothing_synced_at_any_point() {
    run(&config(SyncPolicy::None, false), 1, 400, 37);
}

#[test]
fn writeback_with_concurrent_writers_and_preparation_loses_nothing_synced() {
    run(&config(SyncPolicy::None, true), 3, 150, 23);
}

#[test]
fn writeback_under_periodic_loses_nothing_synced_at_any_point() {
    run(
        &config(SyncPolicy::Periodic { interval_ms: 1 }, false),
        2,
        200,
        29,
    );
}
