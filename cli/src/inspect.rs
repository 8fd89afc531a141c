//! `walbuf inspect DIR`: what a store (or bare log directory) holds — its segments with their
//! op-key ranges, record counts and bytes, the watermark SQLite holds, and the ops above it
//! (pending: acknowledged, not yet in SQLite; a reopen replays them). Read-only; works on an
//! open store too (a live view, which may change while it reads).

use std::collections::BTreeMap;
use std::path::PathBuf;

use walbuf::shapes::kind;
use walbuf_recovery::format::Record;
use walbuf_recovery::{ProblemKind, SegmentSummary};

use crate::Outcome;
use crate::scan::Target;

/// Arguments of `walbuf inspect`.
#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// The store directory (holding `log/` and `walbuf.db`), or a bare log directory.
    pub dir: PathBuf,
    /// Largest record frame to accept, in bytes (the log's `max_record_bytes`).
    #[arg(long, default_value_t = walbuf_recovery::format::DEFAULT_MAX_RECORD_BYTES)]
    pub max_record_bytes: u32,
}

/// Ops above the watermark, by record kind.
#[derive(Debug, Default)]
struct Pending {
    ops: u64,
    payload_bytes: u64,
    by_kind: BTreeMap<u8, u64>,
    first_op_key: Option<u64>,
    last_op_key: Option<u64>,
}

/// The name of a shape registry op kind, or the number.
pub fn kind_name(kind_byte: u8) -> String {
    match kind_byte {
        kind::ADD => "add".to_owned(),
        kind::REMOVE => "remove".to_owned(),
        kind::MARK => "mark".to_owned(),
        kind::RESET => "reset".to_owned(),
        other => format!("kind {other}"),
    }
}

/// Runs `walbuf inspect`.
///
/// # Errors
/// The directory cannot be read or holds no segments, or its database cannot be read.
pub fn run(args: &InspectArgs) -> anyhow::Result<Outcome> {
    let target = Target::open(&args.dir)?;
    let open_elsewhere = target.location.is_open_elsewhere()?;
    let mut pending = Pending::default();
    let mut sink = |record: &Record<'_>| {
        pending.ops += 1;
        pending.payload_bytes += record.payload.len() as u64;
        *pending.by_kind.entry(record.kind.to_byte()).or_default() += 1;
        pending.first_op_key.get_or_insert(record.op_key);
        pending.last_op_key = Some(record.op_key);
        Ok(())
    };
    let report = target.scan(
        "inspect",
        target.watermark,
        args.max_record_bytes,
        false,
        &mut sink,
    )?;

    println!("walbuf inspect {}", args.dir.display());
    println!("  {}", target.location.describe());
    println!(
        "  lock:       {}",
        if open_elsewhere {
            "held: the store is open in another process (a live view: it may change while read)"
        } else {
            "free: the store is closed"
        }
    );
    let segments = &report.segments;
    let log_bytes: u64 = segments.iter().map(|segment| segment.file_len).sum();
    let used_bytes: u64 = segments.iter().map(|segment| segment.valid_end).sum();
    let first_key = segments.first().map(|segment| segment.first_op_key);
    let range = match (first_key, report.last_op_key) {
        (Some(first), Some(last)) => format!("op keys {first}..={last}"),
        _ => "no op keys".to_owned(),
    };
    println!(
        "  log:        {} segment{}, {range}, {} records, {} used of {} on disk",
        segments.len(),
        plural(segments.len() as u64),
        report.records_scanned,
        size(used_bytes),
        size(log_bytes),
    );
    if target.location.is_store() {
        match target.meta {
            Some(meta) => println!(
                "  watermark:  op key {} applied to SQLite; {} live {}",
                meta.applied_op_key,
                meta.live_count,
                if meta.live_count == 1 {
                    "entity"
                } else {
                    "entities"
                }
            ),
            None => println!("  watermark:  none (no database, or no walbuf tables in it)"),
        }
    } else {
        println!(
            "  watermark:  unknown (no database): counting from the oldest segment, op key {}",
            target.watermark + 1
        );
    }
    let kinds = pending
        .by_kind
        .iter()
        .map(|(kind_byte, count)| format!("{} {count}", kind_name(*kind_byte)))
        .collect::<Vec<_>>()
        .join(", ");
    match (pending.first_op_key, pending.last_op_key) {
        (Some(first), Some(last)) => println!(
            "  pending:    {} op{} above the watermark (op keys {first}..={last}: {kinds}), {} of payload; \
             a reopen replays them",
            pending.ops,
            plural(pending.ops),
            size(pending.payload_bytes)
        ),
        _ => println!("  pending:    0 ops above the watermark: SQLite has everything logged"),
    }
    println!();
    print_segments(segments);
    if !report.problems.is_empty() {
        let torn_only = report
            .problems
            .iter()
            .all(|problem| matches!(problem.kind, ProblemKind::TornTail { .. }));
        println!();
        println!(
            "{} problem{} found{} (`walbuf verify` checks in full):",
            report.problems.len(),
            plural(report.problems.len() as u64),
            if torn_only {
                " (torn tails only: bytes never made durable, which opening the store cuts)"
            } else {
                ""
            }
        );
        for problem in &report.problems {
            println!("  {problem}");
        }
    }
    Ok(Outcome::Clean)
}

fn print_segments(segments: &[SegmentSummary]) {
    println!(
        "{:<26} {:>6} {:>12} {:>12} {:>8} {:>6} {:>10} {:>10}  durable up to",
        "segment", "seq", "first key", "last key", "records", "marks", "used", "capacity"
    );
    for segment in segments {
        let last = segment
            .last_op_key
            .map_or_else(|| "-".to_owned(), |key| key.to_string());
        let durable = segment
            .durable_mark
            .map_or_else(|| "-".to_owned(), |mark| format!("op key {}", mark.op_key));
        println!(
            "{:<26} {:>6} {:>12} {:>12} {:>8} {:>6} {:>10} {:>10}  {durable}",
            segment.name,
            segment.sequence,
            segment.first_op_key,
            last,
            segment.records,
            segment.sync_marks,
            size(segment.valid_end),
            size(segment.capacity_bytes),
        );
    }
}

fn plural(count: u64) -> &'static str {
    if count == 1 { "" } else { "s" }
}

/// A byte count for people: `812 B`, `4.0 KiB`, `16.0 MiB`, `1.2 GiB`.
#[must_use]
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(size(812), "812 B");
        assert_eq!(size(4096), "4.0 KiB");
        assert_eq!(size(16 << 20), "16.0 MiB");
        assert_eq!(size(3 << 30), "3.0 GiB");
    }

    #[test]
    fn kinds_are_named() {
        assert_eq!(kind_name(kind::ADD), "add");
        assert_eq!(kind_name(kind::RESET), "reset");
        assert_eq!(kind_name(9), "kind 9");
    }
}
