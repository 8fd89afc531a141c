//! The recovery driver: scans every segment in order, decides what each anomaly means under
//! the chosen [`Mode`], and feeds the records above the applied watermark to a [`Sink`].
//!
//! It only reads. What the caller must then do to the files (erase a cut tail, delete
//! discarded segments) is described in the [`Report`].

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, HeaderProblem, RecordProblem, Result};
use crate::format::{DEFAULT_MAX_RECORD_BYTES, Record};
use crate::naming::sorted_segment_names;
use crate::scanner::{DurableMark, SegmentScan, scan_segment};

/// How recovery treats anomalies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Mode {
    /// The default: a torn tail (bytes never made durable) is cut and reported; any damage to
    /// durable bytes, or missing ops, refuses to open with a typed error.
    #[default]
    TolerateTornTail,
    /// Keep the longest valid prefix of the log and discard everything after the first
    /// anomaly, reporting exactly what was discarded.
    PointInTime,
    /// Any anomaly, a torn tail included, is an error.
    Strict,
    /// Operator-only: skip damaged bytes, keep every record that still verifies, and report
    /// each skip. The resulting op keys may have gaps.
    Salvage,
}

impl Mode {
    /// The name used on the command line.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::TolerateTornTail => "tolerate-torn-tail",
            Self::PointInTime => "point-in-time",
            Self::Strict => "strict",
            Self::Salvage => "salvage",
        }
    }
}

/// Where recovery reads segments from: a directory, or a simulated disk in tests.
pub trait SegmentSource {
    /// Names of all files in the log directory (non-segment names are ignored).
    ///
    /// # Errors
    /// The directory cannot be listed.
    fn file_names(&self) -> Result<Vec<String>>;

    /// The whole content of one file, read with plain reads.
    ///
    /// # Errors
    /// The file cannot be read.
    fn read_file(&self, name: &str) -> Result<Vec<u8>>;

    /// The whole content of one file, read with plain reads into `bytes` (replacing what it
    /// held). Recovery reads every segment into one buffer this way: a source that can
    /// reuse the buffer's memory saves allocating (and the kernel zeroing) a fresh
    /// segment-sized buffer per segment. The default calls [`SegmentSource::read_file`].
    ///
    /// # Errors
    /// The file cannot be read.
    fn read_file_into(&self, name: &str, bytes: &mut Vec<u8>) -> Result<()> {
        *bytes = self.read_file(name)?;
        Ok(())
    }
}

/// A [`SegmentSource`] over a real directory.
#[derive(Debug, Clone)]
pub struct DirectorySource {
    path: PathBuf,
}

impl DirectorySource {
    /// A source reading the log directory at `path`.
    #[must_use]
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl SegmentSource for DirectorySource {
    fn file_names(&self) -> Result<Vec<String>> {
        let io_error = |source| Error::Io {
            path: self.path.clone(),
            source,
        };
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.path).map_err(io_error)? {
            let entry = entry.map_err(io_error)?;
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn read_file(&self, name: &str) -> Result<Vec<u8>> {
        let path = self.path.join(name);
        std::fs::read(&path).map_err(|source| Error::Io { path, source })
    }

    fn read_file_into(&self, name: &str, bytes: &mut Vec<u8>) -> Result<()> {
        let path = self.path.join(name);
        std::fs::File::open(&path)
            .and_then(|mut file| read_whole_file_into(&mut file, bytes))
            .map_err(|source| Error::Io { path, source })
    }
}

/// Reads all of `file` (from its current position) into `bytes`, replacing their content and
/// reusing their memory: how a [`SegmentSource::read_file_into`] over real files reads.
///
/// # Errors
/// The file cannot be read, or its length cannot be allocated.
pub fn read_whole_file_into(file: &mut std::fs::File, bytes: &mut Vec<u8>) -> std::io::Result<()> {
    use std::io::Read;
    bytes.clear();
    let len = usize::try_from(file.metadata()?.len()).unwrap_or(usize::MAX);
    bytes
        .try_reserve_exact(len)
        .map_err(std::io::Error::other)?;
    file.read_to_end(bytes)?;
    Ok(())
}

/// Receives the records recovery replays, in op-key order.
pub trait Sink {
    /// Takes one op record (never a sync mark) whose key is above the watermark.
    ///
    /// # Errors
    /// The record cannot be applied; recovery stops with [`Error::Sink`].
    fn replay(
        &mut self,
        record: &Record<'_>,
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>;

    /// About how many records recovery expects to replay in all, for reserving memory:
    /// said before the first record, from the segments' names (the op keys above the
    /// watermark in every segment but the last — exact, since keys are gapless across
    /// segments — plus their average per segment for the last one), and said again, higher,
    /// whenever a scanned segment shows that more will come (before its records: the records
    /// replayed so far and that segment's). An estimate, neither a bound nor a promise (a
    /// damaged log replays fewer). The default ignores it.
    fn expect_records(&mut self, estimate: u64) {
        let _ = estimate;
    }
}

impl<F> Sink for F
where
    F: FnMut(&Record<'_>) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>,
{
    fn replay(
        &mut self,
        record: &Record<'_>,
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self(record)
    }
}

/// Recovery settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// How anomalies are treated.
    pub mode: Mode,
    /// The highest op key already applied downstream: records at or below it are verified but
    /// not replayed, and gaps entirely at or below it are harmless.
    pub watermark: u64,
    /// Largest frame the scanner accepts.
    pub max_record_bytes: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            mode: Mode::default(),
            watermark: 0,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
        }
    }
}

/// One anomaly found during recovery, located by segment file and byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Segment file name.
    pub segment: String,
    /// Byte offset in that file.
    pub offset: u64,
    /// What was found.
    pub kind: ProblemKind,
}

/// The kinds of anomaly.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemKind {
    /// Bytes never made durable at the end of the last segment (`len_bytes` would be cut).
    TornTail {
        /// Why the first cut byte is not a record.
        problem: RecordProblem,
        /// Bytes from the offset to the last non-zero byte.
        len_bytes: u64,
    },
    /// Damage to durable bytes.
    Corruption {
        /// What is wrong.
        problem: RecordProblem,
        /// Bytes from the offset to the last non-zero byte of the segment.
        len_bytes: u64,
    },
    /// An unreadable segment header.
    BadHeader(HeaderProblem),
    /// Ops are provably missing.
    MissingOps {
        /// The op key that should come next.
        expected: u64,
        /// The op key found (0 for none).
        found: u64,
    },
    /// Name and header disagree, or segment sequence numbers skip.
    Inconsistent(&'static str),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte offset {}: ", self.segment, self.offset)?;
        match &self.kind {
            ProblemKind::TornTail { problem, len_bytes } => {
                write!(
                    f,
                    "torn tail of {len_bytes} bytes (never made durable; cut on open): {problem}"
                )
            }
            ProblemKind::Corruption { problem, len_bytes } => {
                write!(
                    f,
                    "corruption of durable bytes ({len_bytes} bytes to the end of data): {problem}"
                )
            }
            ProblemKind::BadHeader(problem) => write!(f, "bad segment header: {problem}"),
            ProblemKind::MissingOps { expected, found } => {
                write!(f, "ops missing: expected op key {expected}, found {found}")
            }
            ProblemKind::Inconsistent(what) => write!(f, "inconsistent segment: {what}"),
        }
    }
}

/// What recovery found in one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSummary {
    /// File name.
    pub name: String,
    /// Sequence number from the header (0 if the header is unreadable).
    pub sequence: u64,
    /// First op key from the header (from the name if the header is unreadable).
    pub first_op_key: u64,
    /// Last op key of the valid prefix.
    pub last_op_key: Option<u64>,
    /// Op records in the valid prefix.
    pub records: u64,
    /// Sync marks in the valid prefix.
    pub sync_marks: u64,
    /// End of the valid prefix.
    pub valid_end: u64,
    /// The segment's capacity.
    pub capacity_bytes: u64,
    /// Size of the file.
    pub file_len: u64,
    /// The strongest durability claim in the segment.
    pub durable_mark: Option<DurableMark>,
    /// Whether the caller keeps this segment (false: discarded by `PointInTime`).
    pub kept: bool,
}

/// What recovery did and what the caller must do to the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The mode used.
    pub mode: Mode,
    /// The watermark recovery started from.
    pub watermark: u64,
    /// Every segment, in order.
    pub segments: Vec<SegmentSummary>,
    /// Op records verified.
    pub records_scanned: u64,
    /// Op records handed to the sink.
    pub records_replayed: u64,
    /// Every anomaly found (tolerated ones included).
    pub problems: Vec<Problem>,
    /// Where the valid log ends: the caller must erase the bytes of this segment from this
    /// offset on before appending (a torn tail, or the cut of `PointInTime`).
    pub cut: Option<Cut>,
    /// Segments the caller must delete (`PointInTime` discards everything after the cut).
    pub discarded_segments: Vec<String>,
    /// The last op key of the log kept.
    pub last_op_key: Option<u64>,
    /// The next op key to assign: past both the log and the watermark.
    pub next_op_key: u64,
    /// Wall time taken.
    pub elapsed: Duration,
}

/// A place where the valid log ends and the bytes after it must be erased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// Segment file name.
    pub segment: String,
    /// First byte to erase.
    pub offset: u64,
    /// Bytes from there to the last non-zero byte.
    pub len_bytes: u64,
}

impl Report {
    /// Bytes cut from the log (torn tail or point-in-time cut).
    #[must_use]
    pub fn bytes_cut(&self) -> u64 {
        self.cut.as_ref().map_or(0, |cut| cut.len_bytes)
    }

    /// The last segment kept, where appending may continue.
    #[must_use]
    pub fn last_kept_segment(&self) -> Option<&SegmentSummary> {
        self.segments.iter().rev().find(|segment| segment.kept)
    }
}

/// Runs recovery over every segment of `source`, feeding records above `options.watermark` to
/// `sink` in op-key order.
///
/// # Errors
/// I/O, or an anomaly the mode does not tolerate ([`Error::Corruption`], [`Error::BadHeader`],
/// [`Error::MissingOps`], [`Error::TornTailInStrictMode`], [`Error::Inconsistent`]), or a sink
/// failure.
pub fn replay(source: &dyn SegmentSource, options: Options, sink: &mut dyn Sink) -> Result<Report> {
    let started = Instant::now();
    let names = sorted_segment_names(source.file_names()?);
    let mut driver = Driver {
        options,
        report: Report {
            mode: options.mode,
            watermark: options.watermark,
            segments: Vec::with_capacity(names.len()),
            records_scanned: 0,
            records_replayed: 0,
            problems: Vec::new(),
            cut: None,
            discarded_segments: Vec::new(),
            last_op_key: None,
            next_op_key: options.watermark + 1,
            elapsed: Duration::ZERO,
        },
        expected: None,
        previous_sequence: None,
        stopped: false,
        last_fed: None,
        said_expected: 0,
    };
    driver.expect(expected_records(&names, options.watermark), sink);
    let count = names.len();
    let mut bytes = Vec::new();
    for (index, (name_key, name)) in names.into_iter().enumerate() {
        if driver.stopped {
            driver.discard(name, name_key);
            continue;
        }
        source.read_file_into(&name, &mut bytes)?;
        driver.segment(&name, name_key, &bytes, index + 1 == count, sink)?;
    }
    let log_next = driver.expected.unwrap_or(1);
    driver.report.next_op_key = log_next.max(options.watermark + 1);
    driver.report.elapsed = started.elapsed();
    Ok(driver.report)
}

/// The estimate [`Sink::expect_records`] gets, from the segments' names (their first op
/// keys, sorted): the keys above `watermark` in every segment but the last, and as many
/// again as the average of those segments for the last one.
fn expected_records(names: &[(u64, String)], watermark: u64) -> u64 {
    let first_unapplied = watermark.saturating_add(1);
    let (mut before_last, mut segments) = (0_u64, 0_u64);
    for pair in names.windows(2) {
        let [(key, _), (next_key, _)] = pair else {
            continue;
        };
        let records = next_key.saturating_sub((*key).max(first_unapplied));
        if records > 0 {
            before_last = before_last.saturating_add(records);
            segments += 1;
        }
    }
    before_last.saturating_add(before_last / segments.max(1))
}

struct Driver {
    options: Options,
    report: Report,
    /// The op key the next record must carry (None before the first segment).
    expected: Option<u64>,
    previous_sequence: Option<u64>,
    /// `PointInTime` stopped here: the rest is discarded.
    stopped: bool,
    /// The op key last handed to the sink.
    last_fed: Option<u64>,
    /// The highest estimate said to [`Sink::expect_records`].
    said_expected: u64,
}

/// What an anomaly does under the current mode.
enum Verdict {
    /// Fail recovery with this error.
    Fail(Error),
    /// Keep the prefix, discard the rest of the log.
    Stop,
    /// Keep going (tolerated, or salvaged).
    Continue,
}

impl Driver {
    fn segment(
        &mut self,
        name: &str,
        name_key: u64,
        bytes: &[u8],
        is_last: bool,
        sink: &mut dyn Sink,
    ) -> Result<()> {
        let scan = match scan_segment(bytes, self.options.max_record_bytes) {
            Ok(scan) => scan,
            Err(problem) => {
                self.report.segments.push(SegmentSummary {
                    name: name.to_owned(),
                    sequence: 0,
                    first_op_key: name_key,
                    last_op_key: None,
                    records: 0,
                    sync_marks: 0,
                    valid_end: 0,
                    capacity_bytes: 0,
                    file_len: bytes.len() as u64,
                    durable_mark: None,
                    kept: false,
                });
                let error = Error::BadHeader {
                    segment: name.to_owned(),
                    problem,
                };
                return match self.anomaly(name, 0, ProblemKind::BadHeader(problem), error, false) {
                    Verdict::Fail(error) => Err(error),
                    Verdict::Stop => {
                        self.stop_before_segment(name);
                        Ok(())
                    }
                    Verdict::Continue => Ok(()),
                };
            }
        };
        self.report.segments.push(summary(name, &scan));
        let header = scan.header;
        if header.first_op_key != name_key {
            let error = Error::Inconsistent {
                segment: name.to_owned(),
                problem: "file name and header disagree on the first op key",
            };
            let kind =
                ProblemKind::Inconsistent("file name and header disagree on the first op key");
            if let Some(verdict) = self.check(name, 0, kind, error) {
                return verdict;
            }
        }
        // A sequence gap is only a lost segment if the ops it would have held are not yet
        // applied: segments wholly at or below the watermark may be retired in any order.
        let sequence_gap_is_applied = header.first_op_key <= self.options.watermark + 1;
        if let Some(previous) = self.previous_sequence
            && previous.checked_add(1) != Some(header.sequence)
            && !sequence_gap_is_applied
        {
            let error = Error::Inconsistent {
                segment: name.to_owned(),
                problem: "segment sequence numbers are not consecutive (a segment is missing)",
            };
            let kind = ProblemKind::Inconsistent("segment sequence numbers are not consecutive");
            if let Some(verdict) = self.check(name, 0, kind, error) {
                return verdict;
            }
        }
        self.previous_sequence = Some(header.sequence);
        // The op keys must continue where the previous segment (or the watermark) ended,
        // unless the gap lies entirely at or below the watermark.
        let expected = self.expected.unwrap_or(self.options.watermark + 1);
        let gap_is_applied = header.first_op_key <= self.options.watermark + 1;
        let continues = match self.expected {
            // The oldest segment may start anywhere at or below the first unapplied key.
            None => gap_is_applied,
            Some(expected) => {
                header.first_op_key == expected
                    || (header.first_op_key > expected && gap_is_applied)
            }
        };
        if !continues {
            let error = Error::MissingOps {
                expected,
                found: header.first_op_key,
                context: format!("segment {name} starts at op key {}", header.first_op_key),
            };
            let kind = ProblemKind::MissingOps {
                expected,
                found: header.first_op_key,
            };
            if let Some(verdict) = self.check(name, 0, kind, error) {
                return verdict;
            }
        }
        // Only `Salvage` gets here with a segment that starts below `expected` (it overlaps
        // what was replayed): never go back.
        self.expected = Some(scan.next_op_key()).max(self.expected);
        self.report.records_scanned += scan.records.len() as u64;
        let to_replay = scan
            .records
            .iter()
            .filter(|record| record.op_key > self.options.watermark)
            .count();
        self.expect(self.report.records_replayed + to_replay as u64, sink);
        self.feed(&scan.records, sink)?;
        self.report.last_op_key = scan.last_op_key().max(self.report.last_op_key);

        let Some(damage) = scan.damage else {
            return Ok(());
        };
        let durable = !is_last || scan.damage_below_durable_mark();
        let kind = if durable {
            ProblemKind::Corruption {
                problem: damage.problem,
                len_bytes: damage.len_bytes(),
            }
        } else {
            ProblemKind::TornTail {
                problem: damage.problem,
                len_bytes: damage.len_bytes(),
            }
        };
        let error = if durable {
            Error::Corruption {
                segment: name.to_owned(),
                offset: damage.offset,
                problem: damage.problem,
            }
        } else {
            Error::TornTailInStrictMode {
                segment: name.to_owned(),
                offset: damage.offset,
                len_bytes: damage.len_bytes(),
            }
        };
        let cut = Cut {
            segment: name.to_owned(),
            offset: damage.offset,
            len_bytes: damage.len_bytes(),
        };
        match self.anomaly(name, damage.offset, kind, error, !durable) {
            Verdict::Fail(error) => return Err(error),
            Verdict::Stop => {
                self.report.cut = Some(cut);
                self.stopped = true;
                return Ok(());
            }
            Verdict::Continue => {}
        }
        if self.options.mode == Mode::Salvage && durable {
            // Keep every record that still verifies after the damage, in key order.
            let mut beyond: Vec<Record<'_>> = scan
                .beyond_damage
                .iter()
                .filter(|record| record.op_key >= self.expected.unwrap_or(0))
                .copied()
                .collect();
            beyond.sort_by_key(|record| record.op_key);
            beyond.dedup_by_key(|record| record.op_key);
            self.report.records_scanned += beyond.len() as u64;
            self.feed(&beyond, sink)?;
            if let Some(last) = beyond.last() {
                self.expected = Some(last.op_key.saturating_add(1));
                self.report.last_op_key = Some(last.op_key);
            }
        } else {
            // A tolerated torn tail: the valid prefix is the log; the rest is erased.
            self.report.cut = Some(cut);
        }
        if let (true, Some(mark)) = (is_last && !durable, scan.durable_mark) {
            // A mark that claims an op key the log no longer has proves ops missing.
            if mark.op_key > scan.last_op_key().unwrap_or(header.first_op_key - 1) {
                let error = Error::MissingOps {
                    expected: mark.op_key,
                    found: scan.last_op_key().unwrap_or(0),
                    context: format!(
                        "segment {name}: a sync mark says op key {} was durable",
                        mark.op_key
                    ),
                };
                let kind = ProblemKind::MissingOps {
                    expected: mark.op_key,
                    found: scan.last_op_key().unwrap_or(0),
                };
                match self.anomaly(name, damage.offset, kind, error, false) {
                    Verdict::Fail(error) => return Err(error),
                    // `PointInTime`: the valid prefix of this segment was replayed and `cut`
                    // marks its end; keep the segment (it is the last one anyway).
                    Verdict::Stop => self.stopped = true,
                    Verdict::Continue => {}
                }
            }
        }
        Ok(())
    }

    /// Records an anomaly that is never tolerated by default; returns `Some` when the caller
    /// must return at once.
    fn check(
        &mut self,
        name: &str,
        offset: u64,
        kind: ProblemKind,
        error: Error,
    ) -> Option<Result<()>> {
        match self.anomaly(name, offset, kind, error, false) {
            Verdict::Fail(error) => Some(Err(error)),
            Verdict::Stop => {
                self.stop_before_segment(name);
                Some(Ok(()))
            }
            Verdict::Continue => None,
        }
    }

    fn anomaly(
        &mut self,
        name: &str,
        offset: u64,
        kind: ProblemKind,
        error: Error,
        torn_tail: bool,
    ) -> Verdict {
        self.report.problems.push(Problem {
            segment: name.to_owned(),
            offset,
            kind,
        });
        match self.options.mode {
            Mode::Strict => Verdict::Fail(error),
            Mode::TolerateTornTail if torn_tail => Verdict::Continue,
            Mode::TolerateTornTail => Verdict::Fail(error),
            Mode::PointInTime if torn_tail => Verdict::Continue,
            Mode::PointInTime => Verdict::Stop,
            Mode::Salvage => Verdict::Continue,
        }
    }

    /// `PointInTime` found an anomaly at the start of segment `name`: it and everything after
    /// it are discarded.
    fn stop_before_segment(&mut self, name: &str) {
        self.stopped = true;
        if let Some(summary) = self.report.segments.last_mut()
            && summary.name == name
        {
            summary.kept = false;
        }
        if !self
            .report
            .discarded_segments
            .iter()
            .any(|discarded| discarded == name)
        {
            self.report.discarded_segments.push(name.to_owned());
        }
    }

    fn discard(&mut self, name: String, name_key: u64) {
        self.report.segments.push(SegmentSummary {
            name: name.clone(),
            sequence: 0,
            first_op_key: name_key,
            last_op_key: None,
            records: 0,
            sync_marks: 0,
            valid_end: 0,
            capacity_bytes: 0,
            file_len: 0,
            durable_mark: None,
            kept: false,
        });
        self.report.discarded_segments.push(name);
    }

    /// Says `estimate` to the sink if it is higher than what was said before.
    fn expect(&mut self, estimate: u64, sink: &mut dyn Sink) {
        if estimate > self.said_expected {
            self.said_expected = estimate;
            sink.expect_records(estimate);
        }
    }

    fn feed(&mut self, records: &[Record<'_>], sink: &mut dyn Sink) -> Result<()> {
        for record in records
            .iter()
            .filter(|record| record.op_key > self.options.watermark)
        {
            // `Salvage` may meet records at or below one it replayed (a segment overlapping
            // the previous one): the sink gets strictly increasing op keys only.
            if self.last_fed.is_some_and(|last| record.op_key <= last) {
                continue;
            }
            sink.replay(record).map_err(|source| Error::Sink {
                op_key: record.op_key,
                source,
            })?;
            self.last_fed = Some(record.op_key);
            self.report.records_replayed += 1;
        }
        Ok(())
    }
}

fn summary(name: &str, scan: &SegmentScan<'_>) -> SegmentSummary {
    SegmentSummary {
        name: name.to_owned(),
        sequence: scan.header.sequence,
        first_op_key: scan.header.first_op_key,
        last_op_key: scan.last_op_key(),
        records: scan.records.len() as u64,
        sync_marks: scan.sync_marks,
        valid_end: scan.valid_end,
        capacity_bytes: scan.header.capacity_bytes,
        file_len: scan.file_len,
        durable_mark: scan.durable_mark,
        kept: true,
    }
}

#[cfg(test)]
mod tests {
    //! Regressions found by the scan_segment fuzz target; the inputs are in
    //! fuzz/regressions/scan_segment/.
    use super::*;
    use crate::format::{RecordKind, SegmentHeader, encode_record};
    use crate::naming::segment_file_name;

    const SALT: u64 = 0x5a17;

    struct Memory(Vec<(String, Vec<u8>)>);

    impl SegmentSource for Memory {
        fn file_names(&self) -> Result<Vec<String>> {
            Ok(self.0.iter().map(|(name, _)| name.clone()).collect())
        }

        fn read_file(&self, name: &str) -> Result<Vec<u8>> {
            Ok(self
                .0
                .iter()
                .find(|(file, _)| file == name)
                .map(|(_, bytes)| bytes.clone())
                .unwrap_or_default())
        }
    }

    /// A segment file named for `name_key` holding op records `keys`, then `extra` bytes.
    fn segment(
        name_key: u64,
        sequence: u64,
        first_op_key: u64,
        keys: impl IntoIterator<Item = u64>,
        extra: &[u8],
    ) -> (String, Vec<u8>) {
        let header = SegmentHeader {
            sequence,
            first_op_key,
            salt: SALT,
            capacity_bytes: 1024,
        };
        let mut bytes = header.encode().to_vec();
        for key in keys {
            bytes.extend(encode_record(SALT, RecordKind::Op(1), key, b"op"));
        }
        bytes.extend_from_slice(extra);
        bytes.resize(1024, 0);
        (segment_file_name(name_key), bytes)
    }

    fn run(source: &Memory, mode: Mode) -> (Result<Report>, Vec<u64>) {
        let options = Options {
            mode,
            ..Options::default()
        };
        run_with(source, options)
    }

    /// Replays `source` with `options`: the result, and the op keys the sink heard.
    fn run_with(source: &Memory, options: Options) -> (Result<Report>, Vec<u64>) {
        let mut keys = Vec::new();
        let mut sink = |record: &Record<'_>| {
            keys.push(record.op_key);
            Ok(())
        };
        let result = replay(source, options, &mut sink);
        (result, keys)
    }

    /// A sink that keeps what it heard: `Err(estimate)` for an estimate, `Ok(key)` for a
    /// record.
    #[derive(Default)]
    struct Hearing(Vec<std::result::Result<u64, u64>>);

    impl Sink for Hearing {
        fn replay(
            &mut self,
            record: &Record<'_>,
        ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
            self.0.push(Ok(record.op_key));
            Ok(())
        }

        fn expect_records(&mut self, estimate: u64) {
            self.0.push(Err(estimate));
        }
    }

    /// What a sink hears from a replay of `segments` above `watermark`.
    fn heard(
        segments: Vec<(String, Vec<u8>)>,
        watermark: u64,
    ) -> Vec<std::result::Result<u64, u64>> {
        let mut sink = Hearing::default();
        let options = Options {
            watermark,
            ..Options::default()
        };
        replay(&Memory(segments), options, &mut sink).expect("replays");
        sink.0
    }

    #[test]
    fn the_sink_hears_each_segments_records_before_they_come() {
        // One segment: nothing to estimate from the names; its count comes before its records.
        let one = heard(vec![segment(1, 1, 1, 1..=3, &[])], 0);
        assert_eq!(one, vec![Err(3), Ok(1), Ok(2), Ok(3)]);

        // Three segments of 2, 2 and 5 above a watermark of 1: the names say 1 + 2 and an
        // average of 1 for the last (4); the last segment's scan raises it to 3 + 5.
        let three = heard(
            vec![
                segment(1, 1, 1, 1..=2, &[]),
                segment(3, 2, 3, 3..=4, &[]),
                segment(5, 3, 5, 5..=9, &[]),
            ],
            1,
        );
        let estimates: Vec<u64> = three.iter().filter_map(|heard| heard.err()).collect();
        assert_eq!(estimates, vec![4, 8]);
        let before_last = three
            .iter()
            .position(|heard| *heard == Ok(5))
            .expect("key 5");
        assert_eq!(
            three[before_last - 1],
            Err(8),
            "said before the last segment's records"
        );
        assert_eq!(three.iter().filter(|heard| heard.is_ok()).count(), 8);

        // The watermark inside the last segment: only the keys above it are expected.
        let inside = heard(
            vec![segment(1, 1, 1, 1..=3, &[]), segment(4, 2, 4, 4..=9, &[])],
            5,
        );
        assert_eq!(inside, vec![Err(4), Ok(6), Ok(7), Ok(8), Ok(9)]);
    }

    #[test]
    fn the_estimate_counts_unapplied_keys_and_an_average_last_segment() {
        let names = |keys: &[u64]| -> Vec<(u64, String)> {
            keys.iter()
                .map(|&key| (key, segment_file_name(key)))
                .collect()
        };
        assert_eq!(expected_records(&[], 0), 0);
        assert_eq!(expected_records(&names(&[1]), 0), 0);
        // Two full segments of 100 keys, then the last: 200 + 100.
        assert_eq!(expected_records(&names(&[1, 101, 201]), 0), 300);
        // The watermark is inside the first: 50 + 100 known, 75 on average.
        assert_eq!(expected_records(&names(&[1, 101, 201]), 50), 225);
        // Segments wholly applied count nothing, nor in the average: 50 + 100, and 75.
        assert_eq!(expected_records(&names(&[1, 101, 201]), 300), 0);
        assert_eq!(expected_records(&names(&[1, 101, 201, 301]), 150), 225);
    }

    #[test]
    fn salvage_never_replays_backwards() {
        // The second segment overlaps the first (keys 2..=4 again): salvage skips what it
        // replayed already, and next_op_key stays past everything replayed.
        let source = Memory(vec![
            segment(1, 1, 1, 1..=4, &[]),
            segment(2, 2, 2, 2..=6, &[]),
        ]);
        let (report, keys) = run(&source, Mode::Salvage);
        let report = report.expect("salvage never fails");
        assert_eq!(keys, [1, 2, 3, 4, 5, 6]);
        assert_eq!(report.next_op_key, 7);
        assert_eq!(report.last_op_key, Some(6));

        let source = Memory(vec![
            segment(1, 1, 1, 1..=4, &[]),
            segment(2, 2, 2, 2..=3, &[]),
        ]);
        let (report, keys) = run(&source, Mode::Salvage);
        assert_eq!(keys, [1, 2, 3, 4]);
        assert_eq!(report.expect("salvage never fails").next_op_key, 5);
    }

    #[test]
    fn salvage_past_op_key_u64_max() {
        let mut beyond = vec![0xab; 8];
        beyond.extend(encode_record(SALT, RecordKind::Op(1), u64::MAX, b"op"));
        let source = Memory(vec![
            segment(1, 1, 1, 1..=2, &beyond),
            segment(3, 2, 3, 3..=4, &[]),
        ]);
        let (report, keys) = run(&source, Mode::Salvage);
        let report = report.expect("salvage never fails");
        assert_eq!(keys, [1, 2, u64::MAX]);
        assert_eq!(report.next_op_key, u64::MAX);
    }

    #[test]
    fn sequence_u64_max_then_another_segment() {
        let source = Memory(vec![
            segment(1, u64::MAX, 1, 1..=2, &[]),
            segment(3, 0, 3, 3..=4, &[]),
        ]);
        let (result, _) = run(&source, Mode::TolerateTornTail);
        assert!(matches!(result, Err(Error::Inconsistent { .. })));
    }

    /// Three segments of four ops each (keys 1..=12, sequences 1..=3); `drop` leaves one out.
    fn three_segments_without(drop: usize) -> Memory {
        let mut segments = vec![
            segment(1, 1, 1, 1..=4, &[]),
            segment(5, 2, 5, 5..=8, &[]),
            segment(9, 3, 9, 9..=12, &[]),
        ];
        segments.remove(drop);
        Memory(segments)
    }

    #[test]
    fn a_lost_middle_segment_is_refused_not_cut() {
        let source = three_segments_without(1);
        for mode in [Mode::TolerateTornTail, Mode::Strict] {
            let (result, _) = run(&source, mode);
            match result {
                Err(Error::Inconsistent { segment, problem }) => {
                    assert_eq!(segment, segment_file_name(9), "{mode:?}");
                    assert!(problem.contains("missing"), "{mode:?}: {problem}");
                }
                other => panic!("{mode:?}: a lost segment must refuse the open: {other:?}"),
            }
        }
        // Point-in-time keeps the prefix before the loss and names what it discards.
        let (result, keys) = run(&source, Mode::PointInTime);
        let report = result.expect("point-in-time never fails");
        assert_eq!(keys, [1, 2, 3, 4]);
        assert_eq!(report.next_op_key, 5);
        assert_eq!(report.discarded_segments, [segment_file_name(9)]);
        // Salvage keeps every valid record and reports the gap.
        let (result, keys) = run(&source, Mode::Salvage);
        let report = result.expect("salvage never fails");
        assert_eq!(keys, [1, 2, 3, 4, 9, 10, 11, 12]);
        assert!(
            report
                .problems
                .iter()
                .any(|problem| problem.segment == segment_file_name(9))
        );
    }

    #[test]
    fn an_op_key_gap_between_consecutive_segments_is_refused() {
        // Sequences 1, 2, 3 are consecutive, but the third segment starts at key 13: keys
        // 9..=12 are provably missing.
        let source = Memory(vec![
            segment(1, 1, 1, 1..=4, &[]),
            segment(5, 2, 5, 5..=8, &[]),
            segment(13, 3, 13, 13..=16, &[]),
        ]);
        for mode in [Mode::TolerateTornTail, Mode::Strict] {
            let (result, _) = run(&source, mode);
            assert!(
                matches!(
                    result,
                    Err(Error::MissingOps {
                        expected: 9,
                        found: 13,
                        ..
                    })
                ),
                "{mode:?}: {result:?}"
            );
        }
        let (result, keys) = run(&source, Mode::PointInTime);
        assert_eq!(keys, [1, 2, 3, 4, 5, 6, 7, 8]);
        let report = result.expect("point-in-time never fails");
        assert_eq!(report.discarded_segments, [segment_file_name(13)]);
    }

    #[test]
    fn a_lost_segment_wholly_at_or_below_the_watermark_is_harmless() {
        let source = three_segments_without(1);
        let at = |watermark| Options {
            watermark,
            ..Options::default()
        };
        for watermark in [8, 9, 12] {
            let (result, keys) = run_with(&source, at(watermark));
            let report = result.expect("the gap is applied");
            assert_eq!(keys, (watermark + 1..=12).collect::<Vec<_>>());
            assert_eq!(report.next_op_key, 13);
        }
        // One op short of covering the gap: op key 8 is unapplied and lost.
        assert!(run_with(&source, at(7)).0.is_err());
    }

    #[test]
    fn point_in_time_keeps_the_segment_it_cuts() {
        // Ops 1 and 2, then a sync mark at offset 112 claiming offset 112 durable and op key 5:
        // the mark breaks the prefix (a torn tail, since its claim does not reach the damage),
        // yet proves op keys 3..=5 missing.
        let mark = encode_record(SALT, RecordKind::SyncMark, 5, &112_u64.to_le_bytes());
        let source = Memory(vec![segment(1, 1, 1, 1..=2, &mark)]);
        let (result, keys) = run(&source, Mode::PointInTime);
        let report = result.expect("point-in-time never fails");
        assert_eq!(keys, [1, 2]);
        assert_eq!(report.cut.as_ref().map(|cut| cut.offset), Some(112));
        assert!(report.discarded_segments.is_empty());
        assert!(report.segments[0].kept);
        assert!(
            report
                .problems
                .iter()
                .any(|problem| matches!(problem.kind, ProblemKind::MissingOps { expected: 5, .. }))
        );
        let (result, _) = run(&source, Mode::TolerateTornTail);
        assert!(matches!(result, Err(Error::MissingOps { expected: 5, .. })));
    }
}
