//! `walbuf recover DIR [--mode MODE]`: opens the shape registry in DIR with the chosen
//! recovery mode (which takes the lock, cuts a torn tail, and replays every logged op above
//! SQLite's watermark), prints the recovery report, waits until SQLite has every op, and
//! closes the store.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use walbuf::recovery::Mode;
use walbuf::{Error, RecoveryReport, ShapeRegistry, StoreConfig};

use crate::Outcome;
use crate::error::Refusal;
use crate::inspect::size;
use crate::location::Location;
use crate::progress::{OpsProgress, Spinner};

/// Said when the replayed ops could not be applied.
const FLUSH_FAILED: &str = "waiting for SQLite to apply the replayed ops failed";
/// How often the flush progress is sampled.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// A recovery mode, as named on the command line.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeArg {
    /// Cut a torn tail (bytes never made durable); refuse any other damage (the default of
    /// every open).
    TolerateTornTail,
    /// Keep the longest valid prefix of the log, discard everything after the first anomaly,
    /// and report what was discarded.
    PointInTime,
    /// Refuse any anomaly, a torn tail included.
    Strict,
    /// Keep every record that still verifies past damage (not supported for opening a store:
    /// see `walbuf verify`).
    Salvage,
}

impl ModeArg {
    /// The engine's mode.
    #[must_use]
    pub fn mode(self) -> Mode {
        match self {
            Self::TolerateTornTail => Mode::TolerateTornTail,
            Self::PointInTime => Mode::PointInTime,
            Self::Strict => Mode::Strict,
            Self::Salvage => Mode::Salvage,
        }
    }
}

/// Arguments of `walbuf recover`.
#[derive(clap::Args, Debug)]
pub struct RecoverArgs {
    /// The store directory (holding `log/` and `walbuf.db`).
    pub dir: PathBuf,
    /// How recovery treats anomalies in the log.
    #[arg(long, value_enum, default_value_t = ModeArg::TolerateTornTail)]
    pub mode: ModeArg,
}

/// Runs `walbuf recover`.
///
/// # Errors
/// DIR is not a store, another process has it open, salvage was asked for, or opening,
/// flushing or closing the store failed for a reason other than what recovery found in the
/// log (that is a failed check: exit 1).
pub fn run(args: &RecoverArgs) -> anyhow::Result<Outcome> {
    let location = Location::resolve(&args.dir)?;
    let (Some(database), true) = (&location.database, location.log.is_dir()) else {
        return Err(Refusal::NotAStore {
            command: "walbuf recover",
            path: args.dir.clone(),
        }
        .into());
    };
    if !database.is_file() {
        return Err(Refusal::NotAStore {
            command: "walbuf recover",
            path: args.dir.clone(),
        }
        .into());
    }
    if args.mode == ModeArg::Salvage {
        return Err(Refusal::SalvageCannotOpen {
            path: location.root.clone(),
        }
        .into());
    }
    location.ensure_closed("walbuf recover")?;
    let mode = args.mode.mode();
    let config = StoreConfig {
        recovery_mode: mode,
        ..StoreConfig::default()
    };
    println!(
        "walbuf recover {} --mode {}",
        args.dir.display(),
        mode.name()
    );
    let spinner = Spinner::start(format!(
        "recovering {} ({} mode)",
        location.root.display(),
        mode.name()
    ));
    let opened = ShapeRegistry::open(&location.root, config);
    spinner.finish();
    let (registry, report) = match opened {
        Ok(opened) => opened,
        Err(Error::Recovery(error))
            if !matches!(
                *error,
                walbuf::recovery::Error::Io { .. } | walbuf::recovery::Error::Sink { .. }
            ) =>
        {
            println!("recovery refused to open the store: {error}");
            if mode != Mode::PointInTime {
                println!(
                    "nothing was changed. `walbuf verify {}` lists every problem; `--mode point-in-time` \
                     keeps the longest valid prefix and discards the rest.",
                    args.dir.display()
                );
            }
            return Ok(Outcome::CheckFailed);
        }
        Err(error) => {
            return Err(error)
                .with_context(|| format!("cannot open the store in {}", args.dir.display()));
        }
    };
    print_report(&report);

    let started = Instant::now();
    let flushed = if report.ops_replayed > 0 {
        // The replayed ops reach SQLite through the flusher: show them arriving.
        let mut progress = OpsProgress::new("applying replayed ops to SQLite", report.ops_replayed);
        let done = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let flushing = scope.spawn(|| {
                let flushed = registry.flush();
                done.store(true, Ordering::SeqCst);
                flushed
            });
            while !done.load(Ordering::SeqCst) {
                let applied = registry.stats().applied_op_key;
                progress.set(applied.saturating_sub(report.watermark));
                std::thread::sleep(PROGRESS_INTERVAL);
            }
            progress.finish();
            match flushing.join() {
                Ok(flushed) => flushed.context(FLUSH_FAILED),
                Err(_) => Err(anyhow::anyhow!(
                    "{FLUSH_FAILED}: the flushing thread panicked"
                )),
            }
        })
    } else {
        registry.flush().context(FLUSH_FAILED)
    };
    flushed?;
    let flush_elapsed = started.elapsed();
    let stats = registry.stats();
    let live = registry
        .count_shapes()
        .context("cannot count the live shapes")?;
    registry.close().context("closing the store failed")?;
    println!(
        "  flushed:   SQLite holds every op up to op key {} ({live} live shapes), in {:.1} ms",
        stats.applied_op_key,
        flush_elapsed.as_secs_f64() * 1e3
    );
    println!("store closed: recovered.");
    Ok(Outcome::Clean)
}

fn print_report(report: &RecoveryReport) {
    let log = &report.log;
    println!(
        "  recovered: {} segment{} scanned, {} records verified, {} ops replayed above watermark {}, in {:.1} ms",
        report.segments_scanned,
        if report.segments_scanned == 1 {
            ""
        } else {
            "s"
        },
        report.records_scanned,
        report.ops_replayed,
        report.watermark,
        report.elapsed.as_secs_f64() * 1e3,
    );
    println!(
        "  log:       op keys up to {}, next op key {}",
        log.last_op_key
            .map_or_else(|| "none".to_owned(), |key| key.to_string()),
        report.next_op_key
    );
    match &log.cut {
        Some(cut) => println!(
            "  cut:       {} cut from {} at byte offset {}",
            size(cut.len_bytes),
            cut.segment,
            cut.offset
        ),
        None => println!("  cut:       nothing"),
    }
    if !log.discarded_segments.is_empty() {
        println!(
            "  discarded: {} (after the point-in-time cut)",
            log.discarded_segments.join(", ")
        );
    }
    for problem in &log.problems {
        println!("  problem:   {problem}");
    }
}
