//! The closed-loop driver every row runs under: `writers` threads, each issuing its next
//! operation as soon as the previous one is acknowledged, for a fixed wall time.
//!
//! Each thread reads the clock once per operation: the time between two consecutive
//! acknowledgements of a thread is the latency of the second one (the loop's own overhead is a
//! flag load and a histogram increment). Systems and baselines run under the same driver, so
//! that overhead is the same on both sides of a ratio.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};

use super::histogram::Histogram;

/// What one timed run of one system measured.
#[derive(Debug, Clone)]
pub struct Trial {
    /// Operations acknowledged.
    pub ops: u64,
    /// From the common start to the last acknowledgement.
    pub elapsed: Duration,
    /// Ack latency of every operation.
    pub latency: Histogram,
    /// Data syncs the system performed during the run (0 if it never syncs).
    pub syncs: u64,
    /// Segment rotations during the run (`None` for systems without segments).
    pub rotations: Option<u64>,
    /// Bytes the disk holding the files wrote during the run (from the kernel's sector
    /// counter, so it includes other writers on the same disk), if the counter is readable.
    pub disk_bytes_written: Option<u64>,
    /// For a recovery trial: how long the open took.
    pub open: Option<Duration>,
}

impl Trial {
    /// A trial that counted `ops` over `elapsed` in `syncs` syncs or commits, without
    /// latencies (throughput rows).
    pub fn throughput(ops: u64, elapsed: Duration, syncs: u64) -> Self {
        Self {
            ops,
            elapsed,
            latency: Histogram::default(),
            syncs,
            rotations: None,
            disk_bytes_written: None,
            open: None,
        }
    }

    /// Acknowledged operations per second.
    pub fn ops_per_s(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs `writers` threads for `duration`. Each thread first builds its operation with
/// `make_op(thread_index)` (untimed), then all start together and call it in a loop until the
/// time is up. Returns operations, elapsed time and the merged latency histogram
/// (`syncs`, `rotations` and `disk_bytes_written` are left for the caller to fill in).
///
/// # Errors
/// The first error of any thread (building its operation or running it).
pub fn closed_loop<M, Op>(writers: usize, duration: Duration, make_op: M) -> anyhow::Result<Trial>
where
    M: Fn(usize) -> anyhow::Result<Op> + Sync,
    Op: FnMut() -> anyhow::Result<()>,
{
    let barrier = Barrier::new(writers + 1);
    let stop = AtomicBool::new(false);
    let (start, outcomes) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..writers)
            .map(|index| {
                let (barrier, stop, make_op) = (&barrier, &stop, &make_op);
                scope.spawn(move || -> anyhow::Result<(u64, Histogram, Instant)> {
                    // Wait at the barrier even on failure, or the others would wait forever.
                    let op = make_op(index);
                    barrier.wait();
                    let mut op = op?;
                    let mut latency = Histogram::default();
                    let mut ops = 0_u64;
                    let mut last = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        op()?;
                        let now = Instant::now();
                        latency.record(u64::try_from((now - last).as_nanos()).unwrap_or(u64::MAX));
                        last = now;
                        ops += 1;
                    }
                    Ok((ops, latency, last))
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
        let outcomes: Vec<_> = handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a benchmark thread panicked")))
            })
            .collect();
        (start, outcomes)
    });
    let mut trial = Trial {
        ops: 0,
        elapsed: Duration::ZERO,
        latency: Histogram::default(),
        syncs: 0,
        rotations: None,
        disk_bytes_written: None,
        open: None,
    };
    for outcome in outcomes {
        let (ops, latency, last) = outcome?;
        trial.ops += ops;
        trial.latency.merge(&latency);
        trial.elapsed = trial.elapsed.max(last.saturating_duration_since(start));
    }
    debug_assert_eq!(trial.latency.len(), trial.ops, "one latency per operation");
    Ok(trial)
}

/// The kernel's count of sectors written by the block device holding a directory
/// (`/sys/dev/block/MAJOR:MINOR/stat`, field 7, in 512-byte units).
#[derive(Debug, Clone)]
pub struct DiskCounter {
    stat_path: std::path::PathBuf,
}

impl DiskCounter {
    /// The counter of the device `directory` lives on, if the kernel exposes one.
    pub fn for_directory(directory: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let device = std::fs::metadata(directory).ok()?.dev();
        // glibc's encoding of dev_t (major and minor are split across the word).
        let major = ((device >> 8) & 0xfff) | ((device >> 32) & !0xfff);
        let minor = (device & 0xff) | ((device >> 12) & !0xff);
        let counter = Self {
            stat_path: format!("/sys/dev/block/{major}:{minor}/stat").into(),
        };
        counter.bytes_written().map(|_| counter)
    }

    /// Bytes written by the device since boot.
    pub fn bytes_written(&self) -> Option<u64> {
        let text = std::fs::read_to_string(&self.stat_path).ok()?;
        let sectors: u64 = text.split_whitespace().nth(6)?.parse().ok()?;
        Some(sectors * 512)
    }

    /// Where the counter is read from.
    pub fn describe(&self) -> &Path {
        &self.stat_path
    }
}

/// Runs `body` between two readings of `disk`, and returns its result with the bytes written.
///
/// # Errors
/// Whatever `body` returns.
pub fn with_disk_bytes<T>(
    disk: Option<&DiskCounter>,
    body: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(T, Option<u64>)> {
    let before = disk.and_then(DiskCounter::bytes_written);
    let value = body()?;
    let after = disk.and_then(DiskCounter::bytes_written);
    let written = before
        .zip(after)
        .map(|(before, after)| after.saturating_sub(before));
    Ok((value, written))
}

/// Removes a directory tree the benchmark made, saying which one on failure.
///
/// # Errors
/// The tree could not be removed.
pub fn remove_tree(path: &Path) -> anyhow::Result<()> {
    std::fs::remove_dir_all(path).with_context(|| format!("cannot remove {}", path.display()))
}

/// What a victim process prints once its ops are all acknowledged.
pub const VICTIM_READY: &str = "ready";

/// Runs `walbuf bench --recovery-victim DIRECTORY --victim-ops OPS EXTRA…` (this binary) as a
/// child, waits for it to print [`VICTIM_READY`], kills it with SIGKILL — the state a crash
/// leaves — and syncs the file system, so that the reopen that follows pays for no writeback.
///
/// # Errors
/// The victim could not start, or it exited or failed before saying it was ready.
pub fn kill_victim(directory: &Path, ops: u64, extra: &[&str]) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the walbuf binary")?;
    let mut child = Command::new(exe)
        .arg("bench")
        .arg("--recovery-victim")
        .arg(directory)
        .arg("--victim-ops")
        .arg(ops.to_string())
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start the victim")?;
    let mut line = String::new();
    if let Some(stdout) = child.stdout.take() {
        BufReader::new(stdout).read_line(&mut line)?;
    }
    // SIGKILL, whatever the victim said.
    child.kill().context("cannot kill the victim")?;
    child.wait()?;
    ensure!(
        line.trim() == VICTIM_READY,
        "the victim failed before adding its ops"
    );
    rustix::fs::sync();
    Ok(())
}
