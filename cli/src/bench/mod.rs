//! `walbuf bench`: walbuf beside baselines measured in the same run, reported as ratios.
//!
//! Absolute numbers on a shared machine are noise; ratios to a baseline run moments before or
//! after are not. So every row is run several times *alternately* with its baseline (system,
//! baseline, then baseline, system, …), each trial for a fixed wall time under the same
//! closed-loop driver (each writer thread issues its next operation when the previous one is
//! acknowledged, and times each acknowledgement). A row reports the median and the spread
//! (min–max) over its trials, and the median of the per-pair ratios. Before each trial the
//! whole system is `sync`ed, so that no trial pays for another's writeback.
//!
//! # Output
//! A markdown table, or with `--json` one JSON object per line (progress goes to stderr):
//!
//! ```text
//! {"group":"log","system":"walbuf-log-sync","writers":8,"ops_per_s":61234.0,
//!  "ops_per_s_min":…,"ops_per_s_max":…,"p50_us":…,"p99_us":…,"p999_us":…,"max_us":…,
//!  "baseline":"fdatasync-per-append","baseline_writers":8,"ratio":…,"ratio_min":…,
//!  "ratio_max":…,"syncs":…,"syncs_per_s":…,"rotations":…,"appends_per_sync":…,
//!  "disk_kib_per_sync":…,
//!  "trials":5}
//! ```
//!
//! Keys: `ops_per_s*` acknowledged operations per second (median, slowest and fastest trial);
//! `p50_us`/`p99_us`/`p999_us`/`max_us` ack latency in µs (median over trials); `ratio*` this row's
//! ops/s ÷ its baseline's, per alternated pair (median, min, max); `syncs` data syncs per trial
//! and `syncs_per_s`; `rotations` segment rotations per trial (median; null for a baseline);
//! `appends_per_sync` over all trials; `disk_kib_per_sync` what the block
//! device wrote per sync (kernel sector counter: it shows write amplification, and includes
//! other writers on the same disk); `trials`. A baseline's own row has `baseline`, `ratio*`
//! null. `null` also means "not applicable" elsewhere (no syncs, no counter).
//!
//! # Stable names
//! Group `log` (256-byte payloads, i.e. 280-byte frames; 64 MiB segments):
//!
//! | system | what | writers | baseline |
//! |---|---|---|---|
//! | `walbuf-log-sync` | `Log::append`, `SyncPolicy::Sync` (group commit) | 1, 8, 64 | `fdatasync-per-append` (1, 8, 8) |
//! | `walbuf-log-periodic` | `SyncPolicy::Periodic { interval_ms: 10 }` | 1, 8 | `memcpy-crc32` (same) |
//! | `walbuf-log-none` | `SyncPolicy::None` | 1, 8 | `memcpy-crc32` (same) |
//! | `walbuf-log-none-1seg` | `SyncPolicy::None`, 40 ms trials: inside the first segment, no rotation | 1 | `memcpy-crc32` (same, 40 ms) |
//! | `fdatasync-per-append` | `pwrite` 256 bytes + `fdatasync`, threads share one file | 1, 8 | – |
//! | `memcpy-crc32` | encode + CRC32 + copy of the same frame into a private buffer | 1, 8 | – |
//!
//! `fdatasync-per-append` runs with at most 8 threads: the 64-writer `Sync` row is compared
//! with the 8-thread figure. See [`raw`] for how the baselines are set up.

mod driver;
mod histogram;
mod log_rows;
mod raw;
mod report;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use walbuf::SyncPolicy;

use self::driver::{DiskCounter, Trial};
use self::raw::SyncFile;
use self::report::{Row, Spread, human_rate, markdown_table};

/// Arguments of `walbuf bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// A short run (2 trials of 0.2 s per row, about 15 s): rougher numbers.
    #[arg(long)]
    pub quick: bool,
    /// Print one JSON object per result row instead of a markdown table; progress and notes
    /// go to stderr.
    #[arg(long)]
    pub json: bool,
    /// Put the benchmark's files in a fresh subdirectory of DIR (deleted afterwards). Default:
    /// `bench-tmp/` in cargo's target directory (the work folder's disk), else the system's
    /// temporary directory.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Run only the rows of group GROUP (`log`), or whose system name contains GROUP (e.g.
    /// `sync`, `none`).
    #[arg(long, value_name = "GROUP")]
    pub filter: Option<String>,
    /// Trials per row, each alternated with a trial of its baseline [default: 5, or 2 with
    /// --quick].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub trials: Option<u32>,
    /// Wall time of each trial in milliseconds [default: 1000, or 200 with --quick].
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(10..))]
    pub trial_ms: Option<u64>,
}

/// Payload bytes of every record.
const PAYLOAD_BYTES: usize = 256;
/// Interval of the `Periodic` rows.
const PERIODIC_INTERVAL_MS: u64 = 10;
/// Trial length of `walbuf-log-none-1seg`: a 64 MiB segment holds 239 674 records of 280 bytes,
/// which takes more than 40 ms at up to 6 M appends/s.
const ONE_SEGMENT_TRIAL_MS: u64 = 40;
/// Most threads the `fdatasync-per-append` baseline runs with.
const SYNC_BASELINE_WRITERS_MAX: usize = 8;

/// What a row measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum System {
    /// walbuf's log under a sync policy.
    Log(SyncPolicy),
    /// walbuf's log under `SyncPolicy::None`, for a trial short enough to stay inside the
    /// first segment (no rotation): the append path alone.
    LogOneSegment,
    /// `pwrite` + `fdatasync` per append.
    FdatasyncPerAppend,
    /// Encode + checksum + copy into memory.
    MemcpyCrc32,
}

impl System {
    /// The stable name (see the module docs).
    fn name(self) -> &'static str {
        match self {
            Self::Log(SyncPolicy::Sync) => "walbuf-log-sync",
            Self::Log(SyncPolicy::Periodic { .. }) => "walbuf-log-periodic",
            Self::Log(SyncPolicy::None) => "walbuf-log-none",
            Self::LogOneSegment => "walbuf-log-none-1seg",
            Self::FdatasyncPerAppend => "fdatasync-per-append",
            Self::MemcpyCrc32 => "memcpy-crc32",
        }
    }
}

/// A system at a writer count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Subject {
    system: System,
    writers: usize,
}

/// A row of the plan: a subject and the baseline it is alternated with.
#[derive(Debug, Clone, Copy)]
struct Planned {
    group: &'static str,
    subject: Subject,
    baseline: Subject,
    /// A fixed trial length for this row and its baseline, instead of `--trial-ms`.
    trial_ms: Option<u64>,
}

/// Every row of the matrix, in output order.
fn plan() -> Vec<Planned> {
    let periodic = SyncPolicy::Periodic {
        interval_ms: PERIODIC_INTERVAL_MS,
    };
    let mut rows = Vec::new();
    for writers in [1, 8, 64] {
        rows.push(Planned {
            group: "log",
            subject: Subject {
                system: System::Log(SyncPolicy::Sync),
                writers,
            },
            baseline: Subject {
                system: System::FdatasyncPerAppend,
                writers: writers.min(SYNC_BASELINE_WRITERS_MAX),
            },
            trial_ms: None,
        });
    }
    for policy in [periodic, SyncPolicy::None] {
        for writers in [1, 8] {
            rows.push(Planned {
                group: "log",
                subject: Subject {
                    system: System::Log(policy),
                    writers,
                },
                baseline: Subject {
                    system: System::MemcpyCrc32,
                    writers,
                },
                trial_ms: None,
            });
        }
    }
    rows.push(Planned {
        group: "log",
        subject: Subject {
            system: System::LogOneSegment,
            writers: 1,
        },
        baseline: Subject {
            system: System::MemcpyCrc32,
            writers: 1,
        },
        trial_ms: Some(ONE_SEGMENT_TRIAL_MS),
    });
    rows
}

/// Whether `row` is selected by `--filter`.
fn selected(row: &Planned, filter: Option<&str>) -> bool {
    filter.is_none_or(|filter| row.group == filter || row.subject.system.name().contains(filter))
}

/// Where the run keeps its files, and the state shared by trials.
struct Bench {
    directory: PathBuf,
    disk: Option<DiskCounter>,
    sync_file: Option<SyncFile>,
    payload: Vec<u8>,
}

impl Bench {
    /// One trial of `subject` lasting `duration`, after syncing everything written so far.
    fn trial(&mut self, subject: Subject, duration: Duration) -> anyhow::Result<Trial> {
        rustix::fs::sync();
        let disk = self.disk.as_ref();
        match subject.system {
            System::Log(policy) => log_rows::trial(
                &self.directory,
                policy,
                &self.payload,
                subject.writers,
                duration,
                disk,
            ),
            System::LogOneSegment => {
                let trial = log_rows::trial(
                    &self.directory,
                    SyncPolicy::None,
                    &self.payload,
                    subject.writers,
                    duration,
                    disk,
                )?;
                if let Some(rotations) = trial.rotations.filter(|rotations| *rotations > 0) {
                    eprintln!(
                        "note: {} rotated {} times in {duration:?}: it measures more than the \
                         append path",
                        subject.system.name(),
                        rotations
                    );
                }
                Ok(trial)
            }
            System::FdatasyncPerAppend => {
                if self.sync_file.is_none() {
                    self.sync_file = Some(SyncFile::create(&self.directory)?);
                    rustix::fs::sync();
                }
                let Some(file) = &self.sync_file else {
                    bail!("the baseline file was not created");
                };
                file.trial(&self.payload, subject.writers, duration, disk)
            }
            System::MemcpyCrc32 => raw::copy_trial(&self.payload, subject.writers, duration),
        }
    }
}

/// The default parent of the run's directory: `bench-tmp/` in the cargo target directory the
/// binary was built in (recognized by its `CACHEDIR.TAG`), else the temporary directory.
fn default_parent() -> PathBuf {
    let exe = std::env::current_exe().ok();
    let target = exe
        .as_deref()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .filter(|target| target.join("CACHEDIR.TAG").is_file());
    match target {
        Some(target) => target.join("bench-tmp"),
        None => std::env::temp_dir(),
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|text| text.trim().to_owned())
        .unwrap_or_else(|_| "?".to_owned())
}

/// Runs `walbuf bench`.
///
/// # Errors
/// The filter selects nothing, the directory cannot be made, or a system failed.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let trials = args.trials.unwrap_or(if args.quick { 2 } else { 5 }) as usize;
    let trial_ms = args.trial_ms.unwrap_or(if args.quick { 200 } else { 1000 });
    let rows: Vec<Planned> = plan()
        .into_iter()
        .filter(|row| selected(row, args.filter.as_deref()))
        .collect();
    if rows.is_empty() {
        let mut names: Vec<&str> = plan().iter().map(|row| row.subject.system.name()).collect();
        names.dedup();
        bail!(
            "--filter {:?} selects nothing: use a group (log) or part of a system name ({})",
            args.filter.as_deref().unwrap_or(""),
            names.join(", ")
        );
    }

    let parent = args.dir.clone().unwrap_or_else(default_parent);
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let run_directory = tempfile::Builder::new()
        .prefix("walbuf-bench-")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a directory in {}", parent.display()))?;
    let disk = DiskCounter::for_directory(run_directory.path());
    let mut bench = Bench {
        directory: run_directory.path().to_path_buf(),
        disk,
        sync_file: None,
        payload: (0..PAYLOAD_BYTES)
            .map(|index| (index * 31 % 251) as u8)
            .collect(),
    };

    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let load_before = read_trimmed("/proc/loadavg");
    eprintln!(
        "walbuf bench: {} rows × {trials} trials × {trial_ms} ms, alternated with baselines, in {}",
        rows.len(),
        bench.directory.display()
    );

    let mut trials_of: HashMap<Subject, Vec<Trial>> = HashMap::new();
    let mut ratios_of: HashMap<usize, Vec<f64>> = HashMap::new();
    let total_runs = rows.len() * trials * 2;
    let mut runs_done = 0;
    for round in 0..trials {
        for (index, row) in rows.iter().enumerate() {
            let order = if round % 2 == 0 {
                [row.subject, row.baseline]
            } else {
                [row.baseline, row.subject]
            };
            let duration = Duration::from_millis(row.trial_ms.unwrap_or(trial_ms));
            let mut pair = [0.0_f64; 2];
            for subject in order {
                let trial = bench.trial(subject, duration).with_context(|| {
                    format!("{} with {} writers", subject.system.name(), subject.writers)
                })?;
                runs_done += 1;
                eprintln!(
                    "[{runs_done}/{total_runs}] {} ×{}: {} ops/s",
                    subject.system.name(),
                    subject.writers,
                    human_rate(trial.ops_per_s())
                );
                pair[usize::from(subject != row.subject)] = trial.ops_per_s();
                trials_of.entry(subject).or_default().push(trial);
            }
            ratios_of
                .entry(index)
                .or_default()
                .push(pair[0] / pair[1].max(1e-9));
        }
    }
    let load_after = read_trimmed("/proc/loadavg");

    let mut output = Vec::new();
    for (index, row) in rows.iter().enumerate() {
        let summary = Row::summarize(
            row.group,
            row.subject.system.name(),
            row.subject.writers,
            trials_of.get(&row.subject).map_or(&[][..], Vec::as_slice),
            Some((
                row.baseline.system.name(),
                row.baseline.writers,
                ratios_of.get(&index).map_or(&[][..], Vec::as_slice),
            )),
        );
        output.extend(summary);
    }
    let mut baselines: Vec<(&'static str, Subject)> = Vec::new();
    for row in &rows {
        if !baselines.iter().any(|(_, known)| *known == row.baseline) {
            baselines.push((row.group, row.baseline));
        }
    }
    for (group, subject) in baselines {
        let summary = Row::summarize(
            group,
            subject.system.name(),
            subject.writers,
            trials_of.get(&subject).map_or(&[][..], Vec::as_slice),
            None,
        );
        output.extend(summary);
    }

    if args.json {
        for row in &output {
            println!("{}", row.to_json()?);
        }
        return Ok(());
    }
    println!("## walbuf bench: log group\n");
    println!(
        "{cores} cores, Linux {}; {trials} trials × {trial_ms} ms per row, each alternated with \
         its baseline; {PAYLOAD_BYTES}-byte payloads; files in {} (disk counter: {}).\n",
        read_trimmed("/proc/sys/kernel/osrelease"),
        bench.directory.display(),
        bench.disk.as_ref().map_or_else(
            || "none".to_owned(),
            |disk| disk.describe().display().to_string()
        ),
    );
    print!("{}", markdown_table(&output));
    println!();
    print_noise(&output, &trials_of, &rows, &load_before, &load_after);
    print_targets(&output);
    Ok(())
}

/// How noisy the run was: the spread of every row's trials, and the load average.
fn print_noise(
    output: &[Row],
    trials_of: &HashMap<Subject, Vec<Trial>>,
    rows: &[Planned],
    load_before: &str,
    load_after: &str,
) {
    let spread_of = |subject: &Subject| {
        trials_of
            .get(subject)
            .and_then(|trials| Spread::of(trials.iter().map(Trial::ops_per_s)))
            .map_or(0.0, |spread| spread.relative_percent())
    };
    let walbuf = rows
        .iter()
        .map(|row| spread_of(&row.subject))
        .fold(0.0_f64, f64::max);
    let baseline = rows
        .iter()
        .map(|row| spread_of(&row.baseline))
        .fold(0.0_f64, f64::max);
    println!(
        "Noise: widest spread (max − min) / median of ops/s over a row's trials: walbuf rows \
         {walbuf:.0}%, baselines {baseline:.0}%. Load average before: {load_before}; after: \
         {load_after}. {} rows.",
        output.len()
    );
}

/// Issue 2's targets, as measured (a report, never an assertion).
fn print_targets(output: &[Row]) {
    let find = |system: &str, writers: usize| {
        output
            .iter()
            .find(|row| row.system == system && row.writers == writers)
    };
    let mut lines = Vec::new();
    for system in [
        "walbuf-log-none",
        "walbuf-log-periodic",
        "walbuf-log-none-1seg",
    ] {
        if let Some(row) = find(system, 1) {
            lines.push(format!(
                "- {system}, 1 writer ≥ 2 M appends/s: {} → {}",
                human_rate(row.ops_per_s),
                if row.ops_per_s >= 2e6 {
                    "met"
                } else {
                    "missed"
                }
            ));
        }
    }
    if let Some(row) = find("walbuf-log-sync", 8)
        && let Some(ratio) = row.ratio
    {
        lines.push(format!(
            "- walbuf-log-sync, 8 writers ≥ 5× fdatasync-per-append ×8 (alternated pairs): \
             {ratio:.2}× → {}",
            if ratio >= 5.0 { "met" } else { "missed" }
        ));
        if let Some(single) = find("fdatasync-per-append", 1) {
            let ratio = row.ops_per_s / single.ops_per_s.max(1e-9);
            lines.push(format!(
                "- walbuf-log-sync, 8 writers ≥ 5× fdatasync-per-append ×1 (ratio of medians): \
                 {ratio:.2}× → {}",
                if ratio >= 5.0 { "met" } else { "missed" }
            ));
        }
    }
    if !lines.is_empty() {
        println!("\nTargets (issue 2, 2 cores):");
        for line in lines {
            println!("{line}");
        }
    }
}
