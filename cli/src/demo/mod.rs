//! `walbuf demo`: the shape registry under a burst of shape creation, as after a redeploy,
//! then the same workload killed with SIGKILL and recovered.
//!
//! 1. **Burst** ([`workload`]): writer threads add shapes concurrently (with snapshot marks
//!    and some removals, per [`plan`]) while reader threads resolve acknowledged handles;
//!    then a flush, and [`check`]: the registry's reads and a direct read-only query of
//!    `walbuf.db` both hold exactly what was acknowledged.
//! 2. **Crash** ([`crash`]): the same workload in a child process ([`victim`]) that prints
//!    every op as it is acknowledged, killed mid-burst; the store is reopened (recovery) and
//!    every acknowledged op must be there.

pub mod check;
pub mod crash;
pub mod plan;
pub mod victim;
pub mod workload;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::Rng;
use walbuf::store::DATABASE_FILE;
use walbuf::{ShapeRegistry, SyncPolicy};

use self::crash::{CrashRun, SIGKILL};
use self::workload::{Measurement, Settings, percentile};
use crate::Outcome;
use crate::error::Refusal;
use crate::inspect::size;

/// The sync policy, as named on the command line.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyArg {
    /// An op is acknowledged once durable (group commit).
    Sync,
    /// Acknowledged once in the page cache; synced every 10 ms.
    Periodic,
    /// Acknowledged once in the page cache; the OS writes it back.
    None,
}

/// Interval of the `periodic` policy.
const PERIODIC_INTERVAL_MS: u64 = 10;

impl PolicyArg {
    /// The engine's policy.
    #[must_use]
    pub fn policy(self) -> SyncPolicy {
        match self {
            Self::Sync => SyncPolicy::Sync,
            Self::Periodic => SyncPolicy::Periodic {
                interval_ms: PERIODIC_INTERVAL_MS,
            },
            Self::None => SyncPolicy::None,
        }
    }

    /// The name on the command line.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Sync => "sync",
            Self::Periodic => "periodic",
            Self::None => "none",
        }
    }
}

impl From<SyncPolicy> for PolicyArg {
    fn from(policy: SyncPolicy) -> Self {
        match policy {
            SyncPolicy::Sync => Self::Sync,
            SyncPolicy::Periodic { .. } => Self::Periodic,
            SyncPolicy::None => Self::None,
        }
    }
}

/// Arguments of `walbuf demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Keep the stores under this directory (`DIR/burst` and `DIR/crash`, for `walbuf
    /// inspect`, `dump`, `verify`); it must be empty or not exist. Default: a temporary
    /// directory, deleted afterwards.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// A short run (a few seconds): fewer shapes, an earlier kill.
    #[arg(long)]
    pub quick: bool,
    /// The store's sync policy.
    #[arg(long, value_enum, default_value_t = PolicyArg::Sync)]
    pub policy: PolicyArg,
    /// Writer threads adding shapes.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub writers: u32,
    /// Reader threads resolving handles meanwhile.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=16))]
    pub readers: u32,
}

/// Sizes of a run.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    /// Shapes each writer adds in the burst.
    shapes_per_writer: u32,
    /// The child is killed after a random number of acknowledged ops in this range.
    kill_after: (u64, u64),
    /// Log segment size.
    segment_size_bytes: u64,
}

fn sizes(quick: bool) -> Sizes {
    if quick {
        Sizes {
            shapes_per_writer: 600,
            kill_after: (800, 2_000),
            segment_size_bytes: 8 << 20,
        }
    } else {
        Sizes {
            shapes_per_writer: 6_000,
            kill_after: (5_000, 15_000),
            segment_size_bytes: 16 << 20,
        }
    }
}

/// The whole demo must finish within this (a stuck store would otherwise hang `make run` and
/// CI): past it, the demo says so and exits with code 2.
fn deadline(quick: bool) -> Duration {
    Duration::from_secs(if quick { 120 } else { 600 })
}

/// Exits the process if the demo is still running after `limit`.
fn start_watchdog(limit: Duration) {
    let spawned = std::thread::Builder::new()
        .name("demo-watchdog".into())
        .spawn(move || {
            std::thread::sleep(limit);
            eprintln!(
                "walbuf demo: error: still running after {} s: the store made no progress (see RUST_LOG=walbuf=debug)",
                limit.as_secs()
            );
            std::process::exit(i32::from(crate::exit::ERROR));
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot start the demo's watchdog thread");
    }
}

/// Creates `dir` if needed; refuses one that holds anything.
fn prepare_empty(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    if entries.next().is_some() {
        return Err(Refusal::NotEmpty {
            path: dir.to_path_buf(),
        }
        .into());
    }
    Ok(())
}

/// What the burst measured after its flush and check.
struct Burst {
    measurement: Measurement,
    /// From the first op until SQLite had every op.
    flushed_after: Duration,
    ops_flushed: u64,
    flush_batches: u64,
    peak_pending_bytes: u64,
    verdict: check::Verdict,
}

/// Runs `walbuf demo`.
///
/// # Errors
/// A directory cannot be created or is not empty, or the store or the child failed.
pub fn run(args: &DemoArgs) -> anyhow::Result<Outcome> {
    let (temporary, root) = match &args.dir {
        Some(dir) => (None, dir.clone()),
        None => {
            let temporary = tempfile::Builder::new()
                .prefix("walbuf-demo-")
                .tempdir()
                .context("cannot create a temporary directory")?;
            let root = temporary.path().to_path_buf();
            (Some(temporary), root)
        }
    };
    prepare_empty(&root)?;
    start_watchdog(deadline(args.quick));
    let sizes = sizes(args.quick);
    let settings = Settings {
        policy: args.policy.policy(),
        writers: args.writers,
        readers: args.readers,
        segment_size_bytes: sizes.segment_size_bytes,
    };
    println!(
        "walbuf demo: the shape registry, {} policy, {} writers + {} readers; {}-byte shapes, \
         {}-byte comparables, 2 relations.\nStores in {}{}\n",
        args.policy.name(),
        settings.writers,
        settings.readers,
        plan::SHAPE_BYTES,
        plan::COMPARABLE_BYTES,
        root.display(),
        if temporary.is_some() {
            " (temporary)"
        } else {
            ""
        },
    );

    let burst_dir = root.join("burst");
    prepare_empty(&burst_dir)?;
    let burst = run_burst(&burst_dir, &settings, sizes.shapes_per_writer)?;
    print_burst(&burst, &settings);

    let crash_dir = root.join("crash");
    prepare_empty(&crash_dir)?;
    let (low, high) = sizes.kill_after;
    let kill_after = rand::rng().random_range(low..=high);
    let crashed = crash::run(&crash_dir, &settings, kill_after)?;
    print_crash(&crashed);

    let ok = burst.verdict.ok() && burst.measurement.read_misses == 0 && crashed.ok();
    println!();
    if ok {
        println!(
            "verified: SQLite holds exactly what was acknowledged, and the SIGKILL lost none of the \
             {} acknowledged ops.",
            crashed.acknowledged
        );
        if args.dir.is_some() {
            println!(
                "The stores are kept: try `walbuf inspect {}` or `walbuf dump {} --from {}`.",
                crash_dir.display(),
                crash_dir.display(),
                crashed.report.watermark + 1
            );
        }
        return Ok(Outcome::Clean);
    }
    println!("CHECK FAILED:");
    for problem in burst
        .measurement
        .read_problems
        .iter()
        .chain(&burst.verdict.problems)
        .chain(&crashed.problems)
        .chain(&crashed.verdict.problems)
        .chain(&crashed.verify_problems)
    {
        println!("  {problem}");
    }
    Ok(Outcome::CheckFailed)
}

fn run_burst(dir: &Path, settings: &Settings, shapes_per_writer: u32) -> anyhow::Result<Burst> {
    let (registry, _report) = ShapeRegistry::open(dir, workload::store_config(settings))
        .with_context(|| format!("cannot open a store in {}", dir.display()))?;
    let started = Instant::now();
    let stop = AtomicBool::new(false);
    let nothing = |_: u32, _: u64, _: u64, _: plan::Step| Ok(());
    let measurement = workload::run(&registry, settings, shapes_per_writer, &stop, &nothing)?;
    registry.flush().context("flushing the burst failed")?;
    let flushed_after = started.elapsed();
    let expected = plan::expectation(&measurement.steps_per_writer, false);
    let verdict = check::run(&registry, &dir.join(DATABASE_FILE), &expected)?;
    let stats = registry.stats();
    registry.close().context("closing the store failed")?;
    Ok(Burst {
        measurement,
        flushed_after,
        ops_flushed: stats.ops_flushed,
        flush_batches: stats.flush_batches,
        peak_pending_bytes: stats.peak_pending_bytes,
        verdict,
    })
}

fn milliseconds(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1e3)
}

fn latency(nanoseconds: u64) -> String {
    if nanoseconds < 10_000 {
        format!("{:.2} µs", nanoseconds as f64 / 1e3)
    } else {
        format!("{:.2} ms", nanoseconds as f64 / 1e6)
    }
}

/// One row of the demo's table: a label, a value, what it means.
fn row(label: &str, value: &str, details: &str) {
    println!("  {label:<14}{value:>14}   {details}");
}

fn seconds(duration: Duration) -> String {
    format!("{:.2} s", duration.as_secs_f64())
}

/// The check's value and details columns.
fn verdict_cells(verdict: &check::Verdict) -> (&'static str, String) {
    if verdict.ok() {
        (
            "ok",
            format!(
                "{} live shapes, the same through the registry and in walbuf.db; count_shapes agrees",
                verdict.live
            ),
        )
    } else {
        (
            "FAILED",
            format!(
                "{} problems (listed below); {} live shapes",
                verdict.problem_count, verdict.live
            ),
        )
    }
}

fn print_burst(burst: &Burst, settings: &Settings) {
    let m = &burst.measurement;
    println!(
        "burst: {} writers create shapes concurrently while {} readers resolve handles",
        settings.writers, settings.readers
    );
    row(
        "acknowledged",
        &format!("{:.0} ops/s", m.ops_per_second()),
        &format!(
            "{} ops ({} adds, {} marks, {} removes) in {}",
            m.ops(),
            m.adds,
            m.marks,
            m.removes,
            seconds(m.elapsed)
        ),
    );
    row(
        "ack latency",
        &format!("p50 {}", latency(percentile(&m.ack_ns, 50.0))),
        &format!("p99 {}", latency(percentile(&m.ack_ns, 99.0))),
    );
    let flush_rate = burst.ops_flushed as f64 / burst.flushed_after.as_secs_f64().max(1e-9);
    row(
        "flushed",
        &format!("{flush_rate:.0} ops/s"),
        &format!(
            "{} ops reached SQLite in {} batches, all within {} of the first op",
            burst.ops_flushed,
            burst.flush_batches,
            seconds(burst.flushed_after)
        ),
    );
    row(
        "peak buffer",
        &size(burst.peak_pending_bytes),
        &format!("{} ops at most (sampled)", m.peak_pending_ops),
    );
    row(
        "reads",
        &format!(
            "{:.0} /s",
            m.reads as f64 / m.elapsed.as_secs_f64().max(1e-9)
        ),
        &format!(
            "{} lookups; handle_for_shape p50 {}, p99 {}; {} missed an acknowledged shape",
            m.reads,
            latency(percentile(&m.read_ns, 50.0)),
            latency(percentile(&m.read_ns, 99.0)),
            m.read_misses
        ),
    );
    let (value, details) = verdict_cells(&burst.verdict);
    row("check", value, &details);
}

fn print_crash(crashed: &CrashRun) {
    let report = &crashed.report;
    println!();
    println!(
        "crash: the same workload in a child process, killed with {} after {} ({} acknowledged ops{})",
        match crashed.signal {
            Some(SIGKILL) => "SIGKILL".to_owned(),
            Some(signal) => format!("signal {signal}"),
            None => "no signal (it exited)".to_owned(),
        },
        seconds(crashed.ran_for),
        crashed.acknowledged,
        if crashed.acknowledged == crashed.kill_after {
            String::new()
        } else {
            format!("; the kill was sent at {}", crashed.kill_after)
        }
    );
    row(
        "recovered",
        &format!("{} of {}", crashed.recovered, crashed.acknowledged),
        &format!(
            "acknowledged ops ({}, up to op key {}); {} more, in flight at the kill (at most one per \
             writer), had also become durable",
            if crashed.recovered == crashed.acknowledged {
                "all"
            } else {
                "SOME LOST"
            },
            crashed.last_acknowledged_op_key,
            crashed.in_flight_durable,
        ),
    );
    row(
        "recovery",
        &milliseconds(report.elapsed),
        &format!(
            "{} ops replayed above watermark {} ({} segment{} scanned, {} bytes cut)",
            report.ops_replayed,
            report.watermark,
            report.segments_scanned,
            if report.segments_scanned == 1 {
                ""
            } else {
                "s"
            },
            report.bytes_cut
        ),
    );
    row(
        "flushed",
        &milliseconds(crashed.flush_elapsed),
        "after the reopen, SQLite had every replayed op",
    );
    let (value, details) = verdict_cells(&crashed.verdict);
    let value = if crashed.ok() { value } else { "FAILED" };
    row(
        "check",
        value,
        &format!(
            "{details}; walbuf verify: {}",
            if crashed.verify_problems.is_empty() {
                "clean"
            } else {
                "PROBLEMS"
            }
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_round_trip() {
        for policy in [PolicyArg::Sync, PolicyArg::Periodic, PolicyArg::None] {
            assert_eq!(PolicyArg::from(policy.policy()), policy);
        }
    }

    #[test]
    fn quick_is_smaller() {
        let (quick, full) = (sizes(true), sizes(false));
        assert!(quick.shapes_per_writer < full.shapes_per_writer);
        assert!(quick.kill_after.1 < full.kill_after.0 + full.kill_after.1);
        assert!(quick.kill_after.0 <= quick.kill_after.1);
    }
}
