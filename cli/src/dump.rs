//! `walbuf dump DIR [--from KEY] [--json]`: the log's records, decoded, in op-key order.
//!
//! Every op record of a store carries the core's 8-byte prefix (the live count after the op,
//! little-endian) and then the schema's encoding; the shape registry's ops are decoded with
//! [`ShapeOp::decode`]. A record that does not decode is shown with the reason (a bare log
//! written by another program, say). Read-only, like `verify`; damage is reported on stderr.

use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::PathBuf;

use serde_json::json;
use walbuf::shapes::{ShapeOp, SnapshotState};
use walbuf_recovery::format::Record;
use walbuf_recovery::{Report, SegmentSummary};

use crate::Outcome;
use crate::inspect::kind_name;
use crate::scan::Target;

/// Bytes of core framing before the schema's encoding in a store's op record.
const OP_PREFIX_LEN: usize = 8;
/// Bytes of a comparable shown in text output before it is cut short.
const COMPARABLE_SHOWN_BYTES: usize = 8;

/// Arguments of `walbuf dump`.
#[derive(clap::Args, Debug)]
pub struct DumpArgs {
    /// The store directory (holding `log/` and `walbuf.db`), or a bare log directory.
    pub dir: PathBuf,
    /// Start at this op key (default: the oldest record in the log).
    #[arg(long, value_name = "KEY")]
    pub from: Option<u64>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Largest record frame to accept, in bytes (the log's `max_record_bytes`).
    #[arg(long, default_value_t = walbuf_recovery::format::DEFAULT_MAX_RECORD_BYTES)]
    pub max_record_bytes: u32,
}

/// A record's payload split into the live-count prefix and the decoded op.
struct Decoded {
    live_count: Option<u64>,
    op: Result<ShapeOp, String>,
}

fn decode(record: &Record<'_>) -> Decoded {
    let Some((prefix, rest)) = record.payload.split_first_chunk::<OP_PREFIX_LEN>() else {
        return Decoded {
            live_count: None,
            op: Err("payload shorter than the 8-byte op prefix".to_owned()),
        };
    };
    Decoded {
        live_count: Some(u64::from_le_bytes(*prefix)),
        op: ShapeOp::decode(record.kind.to_byte(), rest).map_err(|error| error.to_string()),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn state_name(state: SnapshotState) -> &'static str {
    match state {
        SnapshotState::NotStarted => "not-started",
        SnapshotState::Started => "started",
        SnapshotState::Complete => "complete",
    }
}

/// The op in one line of text.
fn describe(op: &ShapeOp) -> String {
    match op {
        ShapeOp::Add(shape) => {
            let shown = shape.comparable.len().min(COMPARABLE_SHOWN_BYTES);
            let relations = shape
                .relations
                .iter()
                .map(|relation| format!("{} {}.{}", relation.oid, relation.schema, relation.table))
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "add {:?} hash {} comparable {}{} ({} B) shape {} B relations [{relations}]",
                shape.handle,
                shape.hash,
                hex(&shape.comparable[..shown]),
                if shown < shape.comparable.len() {
                    ".."
                } else {
                    ""
                },
                shape.comparable.len(),
                shape.shape.len(),
            )
        }
        ShapeOp::Remove(removal) => format!("remove {:?} oids {:?}", removal.handle, removal.oids),
        ShapeOp::Mark { handle, state } => format!("mark {handle:?} {}", state_name(*state)),
        ShapeOp::Reset => "reset (every shape)".to_owned(),
    }
}

/// The op as JSON.
fn to_json(op: &ShapeOp) -> serde_json::Value {
    match op {
        ShapeOp::Add(shape) => json!({
            "type": "add",
            "handle": shape.handle,
            "hash": shape.hash,
            "comparable": hex(&shape.comparable),
            "shape": hex(&shape.shape),
            "relations": shape.relations.iter().map(|relation| json!({
                "oid": relation.oid,
                "schema": &*relation.schema,
                "table": &*relation.table,
            })).collect::<Vec<_>>(),
        }),
        ShapeOp::Remove(removal) => json!({
            "type": "remove",
            "handle": removal.handle,
            "comparable": hex(&removal.comparable),
            "oids": removal.oids,
        }),
        ShapeOp::Mark { handle, state } => json!({
            "type": "mark",
            "handle": handle.as_str(),
            "state": state_name(*state),
        }),
        ShapeOp::Reset => json!({ "type": "reset" }),
    }
}

/// Writes records as they come; remembers the first write error (a closed pipe ends the dump
/// quietly).
struct Printer<'a, W: Write> {
    out: W,
    json: bool,
    /// Ops at or below this key are in SQLite (a store); `None` for a bare log.
    applied_op_key: Option<u64>,
    /// Segment names by first op key, to name the file holding each record.
    segments: &'a [(u64, String)],
    records: u64,
}

impl<W: Write> Printer<'_, W> {
    fn header(&mut self) -> io::Result<()> {
        if self.json {
            return Ok(());
        }
        writeln!(
            self.out,
            "{:>10}  {:<34} {:<7} {:>7} {:>6} {:<8}  op",
            "op key", "segment:offset", "kind", "bytes", "live", "state"
        )
    }

    fn segment_of(&self, op_key: u64) -> &str {
        self.segments
            .iter()
            .rev()
            .find(|(first, _)| *first <= op_key)
            .map_or("?", |(_, name)| name.as_str())
    }

    fn state(&self, op_key: u64) -> &'static str {
        match self.applied_op_key {
            Some(applied) if op_key <= applied => "applied",
            Some(_) => "pending",
            None => "-",
        }
    }

    fn record(&mut self, record: &Record<'_>) -> io::Result<()> {
        self.records += 1;
        let decoded = decode(record);
        let kind_byte = record.kind.to_byte();
        let segment = self.segment_of(record.op_key).to_owned();
        let state = self.state(record.op_key);
        if self.json {
            let mut line = json!({
                "op_key": record.op_key,
                "segment": segment,
                "offset": record.offset,
                "kind": kind_byte,
                "kind_name": kind_name(kind_byte),
                "payload_bytes": record.payload.len(),
                "state": state,
                "live_count": decoded.live_count,
            });
            match &decoded.op {
                Ok(op) => line["op"] = to_json(op),
                Err(problem) => line["decode_error"] = json!(problem),
            }
            return writeln!(self.out, "{line}");
        }
        let live = decoded
            .live_count
            .map_or_else(|| "-".to_owned(), |count| count.to_string());
        let op = match &decoded.op {
            Ok(op) => describe(op),
            Err(problem) => format!("(not a shape op: {problem})"),
        };
        writeln!(
            self.out,
            "{:>10}  {:<34} {:<7} {:>7} {:>6} {:<8}  {op}",
            record.op_key,
            format!("{segment}:{}", record.offset),
            kind_name(kind_byte),
            record.payload.len(),
            live,
            state,
        )
    }
}

/// Runs `walbuf dump`.
///
/// # Errors
/// The directory cannot be read or holds no segments, its database cannot be read, or
/// stdout fails (other than a closed pipe).
pub fn run(args: &DumpArgs) -> anyhow::Result<Outcome> {
    let target = Target::open(&args.dir)?;
    if target.location.is_open_elsewhere()? {
        eprintln!(
            "note: the store is open in another process: records being appended may show up as a torn tail"
        );
    }
    // Start where asked, or at the oldest segment: segments whose ops were all applied are
    // retired, so the log may start at any op key.
    let oldest = target.segments.first().map_or(1, |(first, _)| *first);
    let from = args.from.unwrap_or(oldest).max(oldest).max(1);
    let stdout = io::stdout();
    // On a terminal the records are the progress; elsewhere the bar goes to stderr.
    let quiet = stdout.is_terminal();
    let mut printer = Printer {
        out: BufWriter::new(stdout.lock()),
        json: args.json,
        applied_op_key: target.meta.map(|meta| meta.applied_op_key),
        segments: &target.segments,
        records: 0,
    };
    let mut write_error: Option<io::Error> = None;
    let result = match printer.header() {
        Err(error) => {
            write_error = Some(error);
            None
        }
        Ok(()) => {
            let mut sink = |record: &Record<'_>| {
                printer.record(record).map_err(|error| {
                    let kind = error.kind();
                    write_error = Some(error);
                    Box::new(io::Error::from(kind)) as Box<dyn std::error::Error + Send + Sync>
                })
            };
            Some(target.scan("dump", from - 1, args.max_record_bytes, quiet, &mut sink))
        }
    };
    let flushed = printer.out.flush();
    if let Some(error) = write_error.or(flushed.err()) {
        if error.kind() == io::ErrorKind::BrokenPipe {
            return Ok(Outcome::Clean);
        }
        return Err(anyhow::Error::new(error).context("cannot write to stdout"));
    }
    let Some(report) = result else {
        return Ok(Outcome::Clean);
    };
    let report = report?;
    report_problems(&report, printer.records);
    Ok(if report.problems.is_empty() {
        Outcome::Clean
    } else {
        Outcome::CheckFailed
    })
}

/// Says on stderr what the scan could not read (stdout holds only records).
fn report_problems(report: &Report, records: u64) {
    if report.problems.is_empty() {
        return;
    }
    let kept: u64 = report
        .segments
        .iter()
        .map(|segment: &SegmentSummary| segment.records)
        .sum();
    eprintln!(
        "walbuf dump: {} problem{} in the log ({records} records dumped, {kept} in valid prefixes; \
         `walbuf verify` says more):",
        report.problems.len(),
        if report.problems.len() == 1 { "" } else { "s" }
    );
    for problem in &report.problems {
        eprintln!("  {problem}");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use walbuf::shapes::{Relation, Shape};

    use super::*;

    #[test]
    fn ops_read_well_in_text_and_json() {
        let add = ShapeOp::Add(Arc::new(Shape {
            handle: "h-1".into(),
            shape: vec![1; 300],
            comparable: vec![0xab; 32],
            hash: -7,
            relations: vec![Relation {
                oid: 16384,
                schema: "public".into(),
                table: "items".into(),
            }],
            snapshot: SnapshotState::NotStarted,
        }));
        let text = describe(&add);
        assert!(text.starts_with("add \"h-1\" hash -7 comparable abababababababab.. (32 B)"));
        assert!(
            text.ends_with("shape 300 B relations [16384 public.items]"),
            "{text}"
        );
        let value = to_json(&add);
        assert_eq!(value["handle"], "h-1");
        assert_eq!(value["relations"][0]["oid"], 16384);
        let mark = ShapeOp::Mark {
            handle: Arc::new("h-1".to_owned()),
            state: SnapshotState::Complete,
        };
        assert_eq!(describe(&mark), "mark \"h-1\" complete");
        assert_eq!(to_json(&ShapeOp::Reset)["type"], "reset");
    }

    /// Removes and marks, whole, in both outputs (the text and JSON a dump prints for them).
    #[test]
    fn removes_and_marks_read_the_same_in_text_and_json() {
        let remove = ShapeOp::Remove(Arc::new(walbuf::shapes::Removal {
            handle: "h-1".into(),
            comparable: vec![0xab, 0x01],
            oids: vec![16384, 16390],
        }));
        assert_eq!(describe(&remove), "remove \"h-1\" oids [16384, 16390]");
        assert_eq!(
            to_json(&remove),
            json!({"type": "remove", "handle": "h-1", "comparable": "ab01", "oids": [16384, 16390]})
        );
        let mark = ShapeOp::Mark {
            handle: Arc::new("h-\"2\"".to_owned()),
            state: SnapshotState::Started,
        };
        assert_eq!(describe(&mark), "mark \"h-\\\"2\\\"\" started");
        assert_eq!(
            to_json(&mark),
            json!({"type": "mark", "handle": "h-\"2\"", "state": "started"})
        );
    }
}
