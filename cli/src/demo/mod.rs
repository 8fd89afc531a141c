//! `walbuf demo`: the workload of [`workload`] in each sync policy at 1 and 8 writer threads,
//! each in a fresh log directory, printed as a table.

pub mod workload;

use std::path::PathBuf;

use anyhow::Context;
use walbuf::SyncPolicy;

use self::workload::{Measurement, PAYLOAD_BYTES, Scenario};
use crate::Outcome;

/// Arguments of `walbuf demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Write the logs under this directory (one empty subdirectory per run, e.g. `sync-8t`) and
    /// keep them for `walbuf verify`. Default: a temporary directory, deleted afterwards.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Far fewer records, so that the demo finishes in a few seconds.
    #[arg(long)]
    pub quick: bool,
}

/// Writer thread counts each policy runs with.
const THREAD_COUNTS: [u32; 2] = [1, 8];
/// Interval of the `Periodic` policy.
const PERIODIC_INTERVAL_MS: u64 = 10;

/// The runs, in order. `Sync` with one writer pays one sync per append, so it gets fewer
/// records to keep the whole demo around half a minute.
fn plan(quick: bool) -> Vec<Scenario> {
    let segment_size_bytes: u64 = if quick { 8 << 20 } else { 16 << 20 };
    let policies = [
        SyncPolicy::Sync,
        SyncPolicy::Periodic {
            interval_ms: PERIODIC_INTERVAL_MS,
        },
        SyncPolicy::None,
    ];
    let mut scenarios = Vec::new();
    for policy in policies {
        for threads in THREAD_COUNTS {
            let records = match (policy, threads, quick) {
                (SyncPolicy::Sync, 1, false) => 20_000,
                (SyncPolicy::Sync, _, false) => 100_000,
                (_, _, false) => 300_000,
                (SyncPolicy::Sync, 1, true) => 1_000,
                (SyncPolicy::Sync, _, true) => 5_000,
                (_, _, true) => 40_000,
            };
            scenarios.push(Scenario {
                policy,
                threads,
                records,
                segment_size_bytes,
            });
        }
    }
    scenarios
}

fn policy_label(policy: SyncPolicy) -> String {
    match policy {
        SyncPolicy::Periodic { interval_ms } => format!("periodic {interval_ms}ms"),
        SyncPolicy::Sync | SyncPolicy::None => policy.name().to_owned(),
    }
}

/// The subdirectory of one run, e.g. `periodic-8t`.
fn run_directory_name(scenario: &Scenario) -> String {
    format!("{}-{}t", scenario.policy.name(), scenario.threads)
}

/// Runs `walbuf demo`.
///
/// # Errors
/// A directory cannot be created or is not empty, or the log failed.
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
    let scenarios = plan(args.quick);
    let segment_mib = scenarios
        .first()
        .map_or(0, |scenario| scenario.segment_size_bytes >> 20);
    println!(
        "walbuf demo: {PAYLOAD_BYTES}-byte records from 1 and 8 threads per sync policy, {segment_mib} MiB \
         segments;\nclose, reopen (recovery) and check every acknowledged record. Logs in {}{}\n",
        root.display(),
        if temporary.is_some() {
            " (temporary)"
        } else {
            ""
        },
    );
    print_header();
    let mut measurements = Vec::new();
    for scenario in scenarios {
        let dir = root.join(run_directory_name(&scenario));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let measurement = workload::run(&dir, scenario)?;
        print_row(&measurement);
        if temporary.is_some() {
            // Only one run's segments on disk at a time.
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot delete {}", dir.display()))?;
        }
        measurements.push(measurement);
    }
    println!();
    print_notes(&measurements);
    let failed: Vec<&Measurement> = measurements
        .iter()
        .filter(|measurement| !measurement.verified())
        .collect();
    let acknowledged: u64 = measurements
        .iter()
        .map(|measurement| u64::from(measurement.scenario.records))
        .sum();
    if failed.is_empty() {
        println!(
            "verified: all {acknowledged} acknowledged records came back after reopen, gapless and byte-identical."
        );
        if args.dir.is_some() {
            println!(
                "The logs are kept: try `walbuf verify {}`.",
                root.join("sync-8t").display()
            );
        }
        return Ok(Outcome::Clean);
    }
    for measurement in failed {
        let scenario = &measurement.scenario;
        println!(
            "VERIFICATION FAILED for {} with {} threads ({} problems):",
            policy_label(scenario.policy),
            scenario.threads,
            measurement.mismatch_count
        );
        for mismatch in &measurement.mismatches {
            println!("  {mismatch}");
        }
    }
    Ok(Outcome::CheckFailed)
}

fn print_header() {
    println!(
        "{:<13} {:>7} {:>8} {:>10} {:>7} {:>8} {:>12} {:>8} {:>11} {:>9}  check",
        "policy",
        "threads",
        "records",
        "ops/s",
        "MB/s",
        "syncs",
        "appends/sync",
        "segments",
        "recovery ms",
        "recovered",
    );
}

fn print_row(measurement: &Measurement) {
    let scenario = &measurement.scenario;
    let appends_per_sync = measurement
        .appends_per_sync()
        .map_or_else(|| "-".to_owned(), |ratio| format!("{ratio:.1}"));
    println!(
        "{:<13} {:>7} {:>8} {:>10.0} {:>7.1} {:>8} {:>12} {:>8} {:>11.1} {:>9}  {}",
        policy_label(scenario.policy),
        scenario.threads,
        scenario.records,
        measurement.ops_per_second(),
        measurement.megabytes_per_second(),
        measurement.stats.syncs,
        appends_per_sync,
        measurement.stats.rotations + 1,
        measurement.recovery_elapsed.as_secs_f64() * 1e3,
        measurement.records_recovered,
        if measurement.verified() {
            "ok"
        } else {
            "FAILED"
        },
    );
}

/// What the table shows, in a few lines: the group-commit ratio, and what each column means.
fn print_notes(measurements: &[Measurement]) {
    let sync_rate = |threads: u32| {
        measurements
            .iter()
            .find(|measurement| {
                measurement.scenario.policy == SyncPolicy::Sync
                    && measurement.scenario.threads == threads
            })
            .map(Measurement::ops_per_second)
    };
    if let (Some(one), Some(eight)) = (sync_rate(1), sync_rate(8)) {
        println!(
            "group commit: durable (sync) appends from 8 threads ran at {:.1}x the rate of 1 thread.",
            eight / one.max(1e-9)
        );
    }
    println!(
        "ops/s and MB/s: acknowledged appends over the append phase (sync: durable before acknowledged;\n\
         periodic/none: in the page cache). syncs: data syncs, rotations and close included.\n\
         segments: segment files written. recovery ms: reopening the log, which scans and checks every record;\n\
         recovered: records it handed back, each compared with what was acknowledged (check)."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_covers_every_policy_and_thread_count() {
        for quick in [false, true] {
            let scenarios = plan(quick);
            assert_eq!(scenarios.len(), 6);
            let names: Vec<String> = scenarios.iter().map(run_directory_name).collect();
            assert_eq!(
                names,
                [
                    "sync-1t",
                    "sync-8t",
                    "periodic-1t",
                    "periodic-8t",
                    "none-1t",
                    "none-8t"
                ]
            );
            for scenario in scenarios {
                assert!((8 << 20..=64 << 20).contains(&scenario.segment_size_bytes));
            }
        }
    }
}
