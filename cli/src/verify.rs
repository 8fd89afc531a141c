//! `walbuf verify DIR`: a read-only check of a store (`DIR/log` + `DIR/walbuf.db`) or of a
//! bare log directory.
//!
//! Reads the watermark SQLite holds (for a store) and runs the recovery driver in
//! [`walbuf_recovery::Mode::Salvage`] (which records every anomaly and carries on) over plain
//! file reads, with a sink that only counts. It never takes the store's lock and never writes:
//! a torn tail is reported, not cut. It refuses a store that another process has open.

use std::path::{Path, PathBuf};

use walbuf_recovery::format::Record;
use walbuf_recovery::{ProblemKind, Report};

use crate::Outcome;
use crate::scan::Target;

/// Arguments of `walbuf verify`.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The store directory (holding `log/` and `walbuf.db`), or a bare log directory (holding
    /// the `<op key>.wal` segment files).
    pub dir: PathBuf,
    /// Largest record frame to accept, in bytes (the log's `max_record_bytes`).
    #[arg(long, default_value_t = walbuf_recovery::format::DEFAULT_MAX_RECORD_BYTES)]
    pub max_record_bytes: u32,
}

/// Gaps described one per line; past this many they are only counted.
const GAPS_DESCRIBED_MAX: usize = 20;

/// Op keys missing between two records that came back (only `Salvage` can produce this).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Gap {
    /// First and last op key missing.
    missing: (u64, u64),
    /// The record after the gap: its op key and its byte offset within its segment.
    next_op_key: u64,
    next_offset: u64,
}

/// Counts the records recovery hands over, and the op-key range and gaps they span.
#[derive(Debug, Default)]
struct Counter {
    records: u64,
    first_op_key: Option<u64>,
    last_op_key: Option<u64>,
    /// Op keys skipped between consecutive records.
    missing_op_keys: u64,
    /// The first gaps, described.
    gaps: Vec<Gap>,
    gap_count: u64,
    payload_bytes: u64,
}

impl Counter {
    fn count(&mut self, record: &Record<'_>) {
        if let Some(last) = self.last_op_key
            && record.op_key > last + 1
        {
            self.missing_op_keys += record.op_key - last - 1;
            self.gap_count += 1;
            if self.gaps.len() < GAPS_DESCRIBED_MAX {
                self.gaps.push(Gap {
                    missing: (last + 1, record.op_key - 1),
                    next_op_key: record.op_key,
                    next_offset: record.offset,
                });
            }
        }
        self.first_op_key.get_or_insert(record.op_key);
        self.last_op_key = Some(record.op_key);
        self.records += 1;
        self.payload_bytes += record.payload.len() as u64;
    }
}

/// The segment holding `op_key`: the last one whose first op key is not above it.
fn segment_of(report: &Report, op_key: u64) -> &str {
    report
        .segments
        .iter()
        .rev()
        .find(|segment| segment.first_op_key <= op_key)
        .map_or("?", |segment| segment.name.as_str())
}

/// Runs `walbuf verify`.
///
/// # Errors
/// The directory cannot be read or holds no segment files, its database cannot be read, or
/// another process has the store open.
pub fn run(args: &VerifyArgs) -> anyhow::Result<Outcome> {
    let target = Target::open(&args.dir)?;
    target.location.ensure_closed("walbuf verify")?;
    let mut counter = Counter::default();
    let mut sink = |record: &Record<'_>| {
        counter.count(record);
        Ok(())
    };
    let report = target.scan(
        "verify",
        target.watermark,
        args.max_record_bytes,
        false,
        &mut sink,
    )?;
    print_report(&args.dir, &target, &report, &counter);
    Ok(if report.problems.is_empty() {
        Outcome::Clean
    } else {
        Outcome::CheckFailed
    })
}

/// The problems of a store's log, without printing anything (for the demo's final check).
///
/// # Errors
/// As [`run`].
pub fn problems(dir: &Path) -> anyhow::Result<Vec<walbuf_recovery::Problem>> {
    let target = Target::open(dir)?;
    target.location.ensure_closed("walbuf verify")?;
    let mut ignore = |_: &Record<'_>| Ok(());
    let report = target.scan(
        "verify",
        target.watermark,
        walbuf_recovery::format::DEFAULT_MAX_RECORD_BYTES,
        true,
        &mut ignore,
    )?;
    Ok(report.problems)
}

fn print_report(dir: &Path, target: &Target, report: &Report, counter: &Counter) {
    let segments = &report.segments;
    println!("walbuf verify {}", dir.display());
    println!("  {}", target.location.describe());
    if target.location.is_store() {
        match target.meta {
            Some(meta) => println!(
                "  watermark: op key {} applied to SQLite ({} live)",
                meta.applied_op_key, meta.live_count
            ),
            None => println!(
                "  watermark: none (no walbuf tables in the database): every logged op must be present"
            ),
        }
    }
    match (segments.first(), segments.last()) {
        (Some(first), Some(last)) if segments.len() > 1 => {
            println!(
                "  segments:  {} ({} .. {})",
                segments.len(),
                first.name,
                last.name
            );
        }
        (Some(only), _) => println!("  segments:  1 ({})", only.name),
        _ => println!("  segments:  0"),
    }
    let range = match (counter.first_op_key, counter.last_op_key) {
        (Some(first), Some(last)) => format!("op keys {first}..={last}"),
        _ => "no op keys".to_owned(),
    };
    let gaps = if counter.missing_op_keys > 0 {
        format!(", {} op keys missing in between", counter.missing_op_keys)
    } else {
        String::new()
    };
    if target.location.is_store() {
        println!(
            "  records:   {} scanned; {} above the watermark ({range}{gaps}), {} payload bytes",
            report.records_scanned, counter.records, counter.payload_bytes
        );
    } else {
        println!(
            "  records:   {} ({range}{gaps}), {} payload bytes",
            counter.records, counter.payload_bytes
        );
    }
    println!("  scanned in {} ms", report.elapsed.as_millis());
    if report.problems.is_empty() {
        println!("clean: no problems found");
        return;
    }
    let torn_tails = report
        .problems
        .iter()
        .filter(|problem| matches!(problem.kind, ProblemKind::TornTail { .. }))
        .count();
    println!(
        "{} problem{} found{}:",
        report.problems.len(),
        if report.problems.len() == 1 { "" } else { "s" },
        if torn_tails == report.problems.len() {
            " (torn tails only: bytes never made durable, which opening the store cuts)"
        } else {
            ""
        }
    );
    for problem in &report.problems {
        println!("  {problem}");
    }
    if counter.gaps.is_empty() {
        return;
    }
    // The report names the first damage of each segment; the gaps locate every later one.
    println!(
        "op keys lost ({} in {} gaps; every record that still verifies was kept):",
        counter.missing_op_keys, counter.gap_count
    );
    for gap in &counter.gaps {
        let (first, last) = gap.missing;
        println!(
            "  {}: op keys {first}..={last} missing before byte offset {} (op key {})",
            segment_of(report, gap.next_op_key),
            gap.next_offset,
            gap.next_op_key
        );
    }
    if counter.gap_count > counter.gaps.len() as u64 {
        println!(
            "  ... and {} more gaps",
            counter.gap_count - counter.gaps.len() as u64
        );
    }
}
