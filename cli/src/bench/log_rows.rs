//! The walbuf rows of the `log` group: appends to a [`Log`] with its default configuration
//! (64 MiB segments prepared ahead) except for the sync policy.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use walbuf::SyncPolicy;
use walbuf::log::{Config, Log};
use walbuf_recovery::format::Record;

use super::driver::{DiskCounter, Trial, closed_loop, remove_tree};

/// The record kind appended.
const BENCH_KIND: u8 = 1;

/// Numbers the log directories of a run, so that no trial reuses another's files.
static NEXT_LOG_NUMBER: AtomicU64 = AtomicU64::new(1);

/// The longest wait for the log's background preparation after open.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Interval of the polls of [`settle`].
const SETTLE_POLL: Duration = Duration::from_millis(10);
/// Consecutive idle polls that count as settled.
const SETTLE_IDLE_POLLS: u32 = 3;
/// Name prefix of the log's thread that prepares the next segment.
const PREPARE_THREAD_PREFIX: &str = "walbuf-prepare";

/// One trial: opens a fresh log under `parent` with `policy`, appends `payload` from `writers`
/// threads for `duration`, closes the log and deletes it.
///
/// Not timed: opening (which creates the first segment), the preparation of the second segment
/// that opening starts in the background (see [`settle`]), and closing. Every later
/// preparation is timed: under `None`/`Periodic` segments fill in a fraction of a second, so
/// rotations and preparations are part of the steady state. Under `Sync` a 64 MiB segment
/// lasts seconds, longer than a trial: its rows show the log between preparations.
///
/// # Errors
/// The log failed to open, append or close, or its directory could not be removed.
pub fn trial(
    parent: &Path,
    policy: SyncPolicy,
    payload: &[u8],
    writers: usize,
    duration: Duration,
    disk: Option<&DiskCounter>,
) -> anyhow::Result<Trial> {
    let number = NEXT_LOG_NUMBER.fetch_add(1, Ordering::Relaxed);
    let directory = parent.join(format!("log-{}-{writers}w-{number}", policy.name()));
    let config = Config {
        sync_policy: policy,
        ..Config::default()
    };
    let mut ignore = |_: &Record<'_>| Ok(());
    let (log, _report) = Log::open_dir(&directory, config, &mut ignore)
        .with_context(|| format!("cannot open a log in {}", directory.display()))?;
    settle(SETTLE_TIMEOUT);
    let before = log.stats();
    let disk_before = disk.and_then(DiskCounter::bytes_written);
    let mut trial = closed_loop(writers, duration, |_| {
        let log = &log;
        Ok(move || {
            log.append(BENCH_KIND, payload).context("append")?;
            Ok(())
        })
    })?;
    let disk_after = disk.and_then(DiskCounter::bytes_written);
    let after = log.stats();
    log.close().context("close the log")?;
    drop(log);
    remove_tree(&directory)?;
    trial.syncs = after.syncs - before.syncs;
    trial.rotations = Some(after.rotations - before.rotations);
    trial.disk_bytes_written = disk_before
        .zip(disk_after)
        .map(|(before, after)| after.saturating_sub(before));
    anyhow::ensure!(
        after.appends - before.appends == trial.ops,
        "the log counted {} appends, the benchmark {}",
        after.appends - before.appends,
        trial.ops
    );
    Ok(trial)
}

/// Waits until the log's prepare thread is idle: asleep (state `S`, waiting for the next
/// rotation) in [`SETTLE_IDLE_POLLS`] polls in a row, or `timeout` passed. Without this, every
/// trial would start with the 64 MiB write of the next segment's preparation in flight, which
/// a long-running log pays once per segment.
pub fn settle(timeout: Duration) {
    let started = std::time::Instant::now();
    let mut idle_polls = 0;
    while idle_polls < SETTLE_IDLE_POLLS && started.elapsed() < timeout {
        std::thread::sleep(SETTLE_POLL);
        idle_polls = match prepare_thread_states() {
            Some(states) if states.iter().all(|state| *state == 'S') => idle_polls + 1,
            Some(_) => 0,
            // No /proc: fall back to a fixed wait of the same total length.
            None => idle_polls + 1,
        };
    }
    if idle_polls < SETTLE_IDLE_POLLS {
        eprintln!("note: the log's segment preparation was still busy after {timeout:?}");
    }
}

/// The scheduler state (`R`, `S`, `D`, …) of each of this process's prepare threads, or
/// `None` if `/proc/self/task` cannot be read.
fn prepare_thread_states() -> Option<Vec<char>> {
    let mut states = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // `tid (comm) state …`; comm may hold spaces or parentheses, so split at the last `)`.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if stat[open + 1..close].starts_with(PREPARE_THREAD_PREFIX)
            && let Some(state) = stat[close + 1..].trim_start().chars().next()
        {
            states.push(state);
        }
    }
    Some(states)
}
