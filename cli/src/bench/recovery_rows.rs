//! The `recovery` group: how long opening a store takes when the last process died with ops
//! not yet in SQLite, and how fast recovery replays them.
//!
//! Each trial makes a store in a child process (`walbuf bench --recovery-victim DIR
//! --victim-ops N`, hidden): it opens a registry under `SyncPolicy::None` with the flusher held
//! idle (one-hour interval, batch size above N), adds N shapes, says so, and waits; the parent
//! kills it with SIGKILL — the state a crash leaves, with every op in the log (written through
//! the map, so in the page cache) and none in SQLite. Then the parent times
//! `ShapeRegistry::open` of the directory: lock, scan and check the segments, replay the ops
//! above SQLite's watermark into the buffer. The log is warm in the page cache (a process
//! kill, not a power cut), so this is the CPU cost of recovery, not the disk's.
//!
//! `ops_per_s` is ops replayed per second of open; the row's `open_ms` the open time.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use walbuf::store::StoreConfig;
use walbuf::{ShapeRegistry, SyncPolicy};

use super::ack_rows::abandoning_config;
use super::driver::{Trial, VICTIM_READY, kill_victim, remove_tree};
use super::histogram::Histogram;
use super::workload::{op_key, shape_body, shape_of};

static NEXT_TRIAL: AtomicU64 = AtomicU64::new(1);

/// The configuration of the victim: the flusher never runs on its own. The buffer's bounds
/// are twice what the ops need, so that they stay below the soft bound, past which writers
/// would ask the flusher for a batch.
fn idle_config(ops: u64, abandon: &Arc<AtomicBool>) -> anyhow::Result<StoreConfig> {
    Ok(StoreConfig {
        flush_interval_ms: 3_600_000,
        batch_ops_max: usize::try_from(ops + 1)?,
        buffer_ops_max: 2 * (ops + 1).max(1_000_000),
        buffer_bytes_max: 4 << 30,
        ..abandoning_config(SyncPolicy::None, abandon)
    })
}

/// The child's side: adds `ops` shapes to a registry in `directory`, prints [`VICTIM_READY`], and
/// waits to be killed.
///
/// # Errors
/// The registry failed.
pub fn victim(directory: &Path, ops: u64) -> anyhow::Result<()> {
    let abandon = Arc::new(AtomicBool::new(false));
    let (registry, _report) = ShapeRegistry::open(directory, idle_config(ops, &abandon)?)
        .with_context(|| format!("cannot open a registry in {}", directory.display()))?;
    let body = shape_body();
    for sequence in 0..ops {
        registry.add_shape(shape_of(op_key(1, 0, sequence), &body))?;
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{VICTIM_READY}")?;
    stdout.flush()?;
    drop(stdout);
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// One trial: a victim leaves `ops` unflushed ops under `parent`; the open is timed.
///
/// # Errors
/// The victim failed, the open failed, or it replayed another number of ops.
pub fn trial(parent: &Path, ops: u64) -> anyhow::Result<Trial> {
    let number = NEXT_TRIAL.fetch_add(1, Ordering::Relaxed);
    let directory = parent.join(format!("recovery-{ops}-{number}"));
    kill_victim(&directory, ops, &[])?;

    let abandon = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let (registry, report) =
        ShapeRegistry::open(&directory, abandoning_config(SyncPolicy::None, &abandon))
            .with_context(|| format!("cannot reopen {}", directory.display()))?;
    let open = started.elapsed();
    ensure!(
        report.ops_replayed == ops,
        "recovery replayed {} ops, the victim acknowledged {ops}",
        report.ops_replayed
    );
    abandon.store(true, Ordering::Relaxed);
    registry.close().context("close the registry")?;
    drop(registry);
    remove_tree(&directory)?;
    let mut latency = Histogram::default();
    latency.record(u64::try_from(open.as_nanos()).unwrap_or(u64::MAX));
    Ok(Trial {
        ops,
        elapsed: open,
        latency,
        syncs: 0,
        rotations: None,
        disk_bytes_written: None,
        open: Some(open),
    })
}
