//! The property checks behind the cargo-fuzz targets in `fuzz/`, callable from plain tests.
//!
//! Each fuzz target is a one-line call to a `check_*` function here, and
//! `tests/tests/fuzz_regressions.rs` runs the same functions on the committed seeds, the saved
//! crash inputs and a few thousand seeded random inputs, so `cargo test` replays on stable
//! whatever the fuzzer once found. A check **panics** when a property is violated; an input
//! the code under test rightly rejects (a typed error) is not a violation.
//!
//! * [`check_decode_record`]: `walbuf_recovery::format::decode_record` against an independent
//!   reading of `docs/format.md` (its own CRC32, its own field order), plus re-encoding.
//! * [`check_scan_segment`]: `walbuf_recovery::scanner::scan_segment` and
//!   [`walbuf_recovery::replay()`] in every [`Mode`], on the input as a raw segment file *and* on
//!   a log directory the input describes ([`Plan`]: segments written with the real encoder,
//!   then damaged), checked against an independent scan and against what was written.
//!
//! This file uses only `std` and `walbuf_recovery`: the fuzz crate compiles it directly (with
//! `#[path]`), so that fuzzing builds neither the engine nor SQLite.

use std::fmt::Write as _;

use walbuf_recovery::error::{Error, HeaderProblem, RecordProblem};
use walbuf_recovery::format::{
    DEFAULT_MAX_RECORD_BYTES, KIND_SYNC_MARK, MAX_USER_KIND, MIN_FRAME_LEN, RECORD_ALIGN, Record,
    RecordKind, SEGMENT_HEADER_LEN, SegmentHeader, decode_record, encode_record,
};
use walbuf_recovery::naming::{segment_file_name, sorted_segment_names};
use walbuf_recovery::scanner::scan_segment;
use walbuf_recovery::{Mode, Options, Report, SegmentSource, replay};

/// The small record-size limit the checks scan with, so that length fields above it must be
/// rejected as `TooLarge` (and inputs of a few KiB reach the limit).
pub const SMALL_MAX_RECORD_BYTES: u32 = 1024;

/// Every recovery mode, in the order the checks run them.
pub const MODES: [Mode; 4] = [
    Mode::TolerateTornTail,
    Mode::PointInTime,
    Mode::Strict,
    Mode::Salvage,
];

/// The largest single allocation a check may make for an input of `input_len` bytes: copies
/// of the input and of the log directory built from it, and vectors of decoded records. The
/// fuzz crate's allocator enforces it, so a length field can never make the decoder or the
/// scanner allocate by what it claims (the checks also scan with `u32::MAX` as the limit).
#[must_use]
pub fn allocation_limit_bytes(input_len: usize) -> usize {
    16 * input_len + 2 * PLAN_MAX_DIRECTORY_BYTES + (1 << 20)
}

// ---------------------------------------------------------------------------------------------
// An independent reading of docs/format.md: its own CRC32, its own decoder.

const CRC_TABLE: [u32; 256] = {
    let mut table = [0_u32; 256];
    let mut index = 0;
    while index < 256 {
        let mut crc = index as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                0xedb8_8320 ^ (crc >> 1)
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[index] = crc;
        index += 1;
    }
    table
};

/// CRC32 (IEEE, as zlib) of the concatenation of `parts`.
fn crc32(parts: &[&[u8]]) -> u32 {
    let mut crc = !0_u32;
    for part in parts {
        for &byte in *part {
            crc = CRC_TABLE[((crc ^ u32::from(byte)) & 0xff) as usize] ^ (crc >> 8);
        }
    }
    !crc
}

fn le_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut buf = [0_u8; 4];
    buf.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(buf)
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut buf = [0_u8; 8];
    buf.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(buf)
}

/// A segment header as `docs/format.md` reads it (the checks, in the documented order).
fn spec_header(bytes: &[u8]) -> Result<SegmentHeader, HeaderProblem> {
    if bytes.len() < 64 {
        return Err(HeaderProblem::Truncated {
            len_bytes: bytes.len() as u64,
        });
    }
    if &bytes[0..8] != b"WALBUFSG" {
        return Err(HeaderProblem::BadMagic);
    }
    let version = le_u16(bytes, 8);
    let stored = le_u32(bytes, 60);
    let computed = crc32(&[&bytes[0..60]]);
    if stored != computed {
        return Err(if version == 1 {
            HeaderProblem::Checksum { stored, computed }
        } else {
            HeaderProblem::UnsupportedVersion { version }
        });
    }
    if version != 1 {
        return Err(HeaderProblem::UnsupportedVersion { version });
    }
    let bad = |field| Err(HeaderProblem::BadField { field });
    if le_u16(bytes, 10) != 64 || le_u32(bytes, 12) != 0 || bytes[48..60].iter().any(|&b| b != 0) {
        return bad("flags");
    }
    let header = SegmentHeader {
        sequence: le_u64(bytes, 16),
        first_op_key: le_u64(bytes, 24),
        salt: le_u64(bytes, 32),
        capacity_bytes: le_u64(bytes, 40),
    };
    if header.first_op_key == 0 {
        return bad("first_op_key");
    }
    if header.capacity_bytes < 84 || !header.capacity_bytes.is_multiple_of(8) {
        return bad("capacity_bytes");
    }
    Ok(header)
}

/// Whether two header problems are the same kind (`BadField` names are not part of the format).
fn same_header_problem(left: &HeaderProblem, right: &HeaderProblem) -> bool {
    match (left, right) {
        (HeaderProblem::BadField { .. }, HeaderProblem::BadField { .. }) => true,
        _ => left == right,
    }
}

/// A record as `docs/format.md` reads it, located within the bytes it was decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SpecRecord {
    /// The kind byte.
    kind: u8,
    op_key: u64,
    payload_len: usize,
    /// Frame length rounded up to 8: the bytes the record occupies.
    padded_len: u64,
}

impl SpecRecord {
    fn is_sync_mark(&self) -> bool {
        self.kind == KIND_SYNC_MARK
    }
}

/// Decodes the record at the start of `bytes` by the reading of `docs/format.md`: the checks in
/// the documented order, the first failure named.
fn spec_record(
    bytes: &[u8],
    salt: u64,
    max_record_bytes: u32,
) -> Result<SpecRecord, RecordProblem> {
    if bytes.len() < 16 {
        // Not even the fixed header fits: the end of the file.
        return Err(if bytes.iter().all(|&b| b == 0) {
            RecordProblem::Zero
        } else {
            RecordProblem::Truncated {
                frame_len: 0,
                available_bytes: bytes.len() as u64,
            }
        });
    }
    let frame_len = le_u32(bytes, 0);
    if frame_len == 0 {
        return Err(RecordProblem::Zero);
    }
    if frame_len < 20 {
        return Err(RecordProblem::BadLength { frame_len });
    }
    if frame_len > max_record_bytes {
        return Err(RecordProblem::TooLarge {
            frame_len,
            max_bytes: max_record_bytes,
        });
    }
    let frame = frame_len as usize;
    let padded = frame.div_ceil(8) * 8;
    if padded > bytes.len() {
        return Err(RecordProblem::Truncated {
            frame_len,
            available_bytes: bytes.len() as u64,
        });
    }
    let stored = le_u32(bytes, frame - 4);
    let computed = crc32(&[&salt.to_le_bytes(), &bytes[..frame - 4]]);
    if stored != computed {
        return Err(RecordProblem::Checksum { stored, computed });
    }
    if bytes[5..8]
        .iter()
        .chain(&bytes[frame..padded])
        .any(|&b| b != 0)
    {
        return Err(RecordProblem::NonZeroPadding);
    }
    let kind = bytes[4];
    let payload_len = frame - 20;
    if !(1..=0x7f).contains(&kind) && kind != 0x80 {
        return Err(RecordProblem::UnknownKind { kind });
    }
    if kind == 0x80 && payload_len != 8 {
        return Err(RecordProblem::BadSyncMark);
    }
    Ok(SpecRecord {
        kind,
        op_key: le_u64(bytes, 8),
        payload_len,
        padded_len: padded as u64,
    })
}

/// A record of a segment's valid prefix, as the independent scan found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SpecEntry {
    offset: u64,
    record: SpecRecord,
}

/// One segment read by the rules of `docs/format.md` ("Reading a segment").
#[derive(Debug, Clone)]
struct SpecScan {
    header: SegmentHeader,
    /// The bytes that belong to the segment: the file, cut at the capacity.
    view_len: u64,
    /// Op records of the valid prefix.
    ops: Vec<SpecEntry>,
    /// Sync marks of the valid prefix: (offset, claimed durable offset).
    marks: Vec<(u64, u64)>,
    valid_end: u64,
    /// Why the valid prefix ends, if not at the end of the bytes.
    end_problem: Option<RecordProblem>,
    /// Just past the last non-zero byte at or after `valid_end` (`valid_end` if none).
    data_end: u64,
}

impl SpecScan {
    fn damaged(&self) -> bool {
        self.end_problem.is_some() && self.data_end > self.valid_end
    }

    fn contains_op(&self, bytes: &[u8], replayed: &Replayed) -> bool {
        self.ops.iter().any(|entry| {
            entry.offset == replayed.offset
                && entry.record.op_key == replayed.op_key
                && RecordKind::from_byte(entry.record.kind) == Some(replayed.kind)
                && payload_at(bytes, entry) == Some(&replayed.payload[..])
        })
    }
}

fn payload_at<'a>(bytes: &'a [u8], entry: &SpecEntry) -> Option<&'a [u8]> {
    let start = usize::try_from(entry.offset).ok()? + 16;
    bytes.get(start..start + entry.record.payload_len)
}

fn spec_scan(bytes: &[u8], max_record_bytes: u32) -> Result<SpecScan, HeaderProblem> {
    let header = spec_header(bytes)?;
    let view_len = (bytes.len() as u64).min(header.capacity_bytes);
    let view = &bytes[..view_len as usize];
    let mut scan = SpecScan {
        header,
        view_len,
        ops: Vec::new(),
        marks: Vec::new(),
        valid_end: 64,
        end_problem: None,
        data_end: 64,
    };
    // u128: a valid record may carry op key u64::MAX, after which no key is in sequence.
    let mut expected = u128::from(header.first_op_key);
    let mut offset = 64_u64;
    scan.end_problem = loop {
        if offset == view_len {
            break None;
        }
        let record = match spec_record(&view[offset as usize..], header.salt, max_record_bytes) {
            Ok(record) => record,
            Err(problem) => break Some(problem),
        };
        if record.is_sync_mark() {
            let claim = le_u64(view, offset as usize + 16);
            let plausible = (64..=offset).contains(&claim)
                && (record.op_key == 0 || u128::from(record.op_key) < expected);
            if !plausible {
                break Some(RecordProblem::BadSyncMark);
            }
            scan.marks.push((offset, claim));
        } else {
            if u128::from(record.op_key) != expected {
                break Some(RecordProblem::KeyOutOfSequence {
                    expected: u64::try_from(expected).unwrap_or(u64::MAX),
                    found: record.op_key,
                });
            }
            expected += 1;
            scan.ops.push(SpecEntry { offset, record });
        }
        offset += record.padded_len;
    };
    scan.valid_end = offset;
    scan.data_end = view[offset as usize..]
        .iter()
        .rposition(|&b| b != 0)
        .map_or(offset, |last| offset + last as u64 + 1);
    Ok(scan)
}

/// Whether some sync mark that verifies, at an aligned offset at or after `claim` (a mark
/// claims only bytes before itself), claims exactly `claim` with op key `op_key`.
fn mark_exists(view: &[u8], salt: u64, max_record_bytes: u32, claim: u64, op_key: u64) -> bool {
    let mut offset = claim.next_multiple_of(8);
    while let Some(rest) = view.get(offset as usize..) {
        // Cheap filters first: a sync mark's frame is 28 bytes and its kind byte 0x80.
        if rest.len() >= 32
            && le_u32(rest, 0) == 28
            && rest[4] == KIND_SYNC_MARK
            && le_u64(rest, 8) == op_key
            && le_u64(rest, 16) == claim
            && spec_record(rest, salt, max_record_bytes).is_ok()
        {
            return true;
        }
        if rest.len() < 32 {
            return false;
        }
        offset += 8;
    }
    false
}

// ---------------------------------------------------------------------------------------------
// decode_record

/// The fuzz property of `decode_record`: the first 8 bytes of `data` (zero-extended) are the
/// salt, the rest are the bytes at the record's offset. With a small and with the default
/// record-size limit, `decode_record` must not panic and must agree with the independent
/// reading of `docs/format.md` — the same record, or the same [`RecordProblem`]; a record it
/// accepts must re-encode (`encode_record`) to exactly the bytes it was decoded from, must not
/// verify under another salt, and must fail its checksum when any covered bit is flipped.
///
/// # Panics
/// When a property is violated (that is the point).
pub fn check_decode_record(data: &[u8]) {
    let (salt_bytes, bytes) = data.split_at(data.len().min(8));
    let mut salt_buf = [0_u8; 8];
    salt_buf[..salt_bytes.len()].copy_from_slice(salt_bytes);
    let salt = u64::from_le_bytes(salt_buf);
    for max_record_bytes in [SMALL_MAX_RECORD_BYTES, DEFAULT_MAX_RECORD_BYTES] {
        let context = || {
            format!(
                "salt {salt:#x}, max_record_bytes {max_record_bytes}, {} record bytes: {}",
                bytes.len(),
                hex_prefix(bytes, 64)
            )
        };
        let decoded = decode_record(bytes, SEGMENT_HEADER_LEN, salt, max_record_bytes);
        let expected = spec_record(bytes, salt, max_record_bytes);
        let record = match (decoded, expected) {
            (Err(problem), Err(spec)) => {
                assert_eq!(
                    problem,
                    spec,
                    "decode_record names a different problem than docs/format.md\n{}",
                    context()
                );
                continue;
            }
            (Ok(record), Ok(spec)) => {
                assert_same_record(bytes, SEGMENT_HEADER_LEN, &record, &spec, &context);
                record
            }
            (decoded, spec) => panic!(
                "decode_record and docs/format.md disagree: decode_record {decoded:?}, \
                 format.md {spec:?}\n{}",
                context()
            ),
        };
        let padded = record.padded_len() as usize;
        assert!(
            u64::from(max_record_bytes) >= MIN_FRAME_LEN + record.payload.len() as u64,
            "accepted a frame above max_record_bytes\n{}",
            context()
        );
        let span = &bytes[..padded];
        let encoded = encode_record(salt, record.kind, record.op_key, record.payload);
        assert!(
            encoded == span,
            "re-encoding a decoded record does not give its bytes back\n{}",
            context()
        );
        // The same record decodes from exactly its span, whatever follows it.
        assert_eq!(
            decode_record(span, SEGMENT_HEADER_LEN, salt, max_record_bytes),
            Ok(record),
            "the record decodes differently from its own span\n{}",
            context()
        );
        assert!(
            matches!(
                decode_record(span, SEGMENT_HEADER_LEN, salt ^ 1, max_record_bytes),
                Err(RecordProblem::Checksum { .. })
            ),
            "a record verifies under another salt\n{}",
            context()
        );
        // CRC32 detects every single-bit error in the bytes it covers (and in itself). Flip a
        // few bits chosen from the input, past the length field (bytes 4..frame_len).
        let frame = (MIN_FRAME_LEN as usize) + record.payload.len();
        let mut flipped = span.to_vec();
        for round in 0..4_usize {
            let at = 4 + (salt as usize).wrapping_add(round * 7919) % (frame - 4);
            let bit = (salt >> (round * 3)) as u8 & 7;
            flipped[at] ^= 1 << bit;
            assert!(
                matches!(
                    decode_record(&flipped, SEGMENT_HEADER_LEN, salt, max_record_bytes),
                    Err(RecordProblem::Checksum { .. })
                ),
                "flipping bit {bit} of byte {at} did not break the checksum\n{}",
                context()
            );
            flipped[at] ^= 1 << bit;
        }
    }
}

fn assert_same_record(
    bytes: &[u8],
    offset: u64,
    record: &Record<'_>,
    spec: &SpecRecord,
    context: &dyn Fn() -> String,
) {
    let same = record.offset == offset
        && record.op_key == spec.op_key
        && record.kind.to_byte() == spec.kind
        && record.payload.len() == spec.payload_len
        && record.padded_len() == spec.padded_len
        && std::ptr::eq(record.payload.as_ptr(), bytes[16..].as_ptr());
    assert!(
        same,
        "decode_record and docs/format.md read different records: {record:?} vs {spec:?}\n{}",
        context()
    );
}

fn hex_prefix(bytes: &[u8], limit: usize) -> String {
    let mut out = String::new();
    for byte in bytes.iter().take(limit) {
        let _ = write!(out, "{byte:02x}");
    }
    if bytes.len() > limit {
        out.push_str("...");
    }
    out
}

// ---------------------------------------------------------------------------------------------
// scan_segment and replay

/// The fuzz property of the scanner and the recovery driver. `data` is used twice:
///
/// 1. **as a whole segment file** (header and all), scanned with a small and with an
///    unlimited record-size limit, and replayed in every [`Mode`] as a one-segment directory;
/// 2. **as a [`Plan`]**: a log directory of up to three segments written with the real
///    encoder (records, honest and dishonest sync marks), then damaged (truncated, bit flips,
///    overwrites, zeroed ranges, bytes past the capacity, removed or renamed segments),
///    scanned and replayed in every mode.
///
/// Checked every time: no panic; the scan agrees with an independent reading of
/// `docs/format.md` (the same header or header problem; the same valid prefix, record by
/// record, ending at the same offset for the same reason; damage exactly where non-zero bytes
/// follow that end; a durable mark that some verifying sync mark really claims and that no mark
/// of the prefix exceeds; salvage candidates that verify); no accepted frame above the limit;
/// every replayed record verifies in the segment bytes, keys above the watermark and strictly
/// increasing, and outside `Salvage` inside a valid prefix and gapless from watermark + 1;
/// `Strict` succeeds only on a log without anomalies; `PointInTime` and `Salvage` never fail;
/// when `Strict` or `TolerateTornTail` succeed they replay what `PointInTime` replays; the report
/// agrees with what was replayed (counts, next op key, cut in a kept segment, no replayed record
/// from a discarded one). For a plan, also: an undamaged log replays every record written,
/// `PointInTime` replays at least every record that lies wholly before the first damaged byte,
/// and a segment removed from the middle while it held unapplied ops makes `TolerateTornTail`
/// and `Strict` refuse.
///
/// # Panics
/// When a property is violated.
pub fn check_scan_segment(data: &[u8]) {
    check_raw_segment(data);
    check_plan(&Plan::decode(data));
}

fn check_raw_segment(data: &[u8]) {
    let context = || {
        format!(
            "raw segment of {} bytes: {}",
            data.len(),
            hex_prefix(data, 128)
        )
    };
    let mut first_op_key = 1;
    for max_record_bytes in [SMALL_MAX_RECORD_BYTES, u32::MAX] {
        if let Some(spec) = check_one_scan(data, max_record_bytes, &context) {
            first_op_key = spec.header.first_op_key;
        }
    }
    let directory = Directory {
        files: vec![(segment_file_name(first_op_key), data.to_vec())],
    };
    // The watermark recovery would be given (first key - 1), or a little above it.
    let watermark = (first_op_key - 1)
        .saturating_add(data.len() as u64 % 3)
        .min(u64::MAX - 1);
    check_replay(&directory, watermark, SMALL_MAX_RECORD_BYTES, &context);
}

/// Scans `bytes` with `scan_segment`, checks it against [`spec_scan`], and returns the
/// independent scan (`None` for an unreadable header).
fn check_one_scan(
    bytes: &[u8],
    max_record_bytes: u32,
    context: &dyn Fn() -> String,
) -> Option<SpecScan> {
    let fail = |what: String| -> ! {
        panic!(
            "scan_segment (max_record_bytes {max_record_bytes}): {what}\n{}",
            context()
        )
    };
    let scanned = scan_segment(bytes, max_record_bytes);
    let spec = spec_scan(bytes, max_record_bytes);
    let (scan, spec) = match (scanned, spec) {
        (Err(problem), Err(expected)) => {
            if !same_header_problem(&problem, &expected) {
                fail(format!(
                    "header problem {problem:?}, docs/format.md says {expected:?}"
                ));
            }
            return None;
        }
        (Ok(scan), Ok(spec)) => (scan, spec),
        (scanned, spec) => fail(format!(
            "header: scan_segment {:?}, docs/format.md {:?}",
            scanned.map(|scan| scan.header),
            spec.map(|spec| spec.header)
        )),
    };
    if scan.header != spec.header {
        fail(format!("header {:?} vs {:?}", scan.header, spec.header));
    }
    if scan.file_len != spec.view_len {
        fail(format!(
            "file_len {} but the segment's bytes are {}",
            scan.file_len, spec.view_len
        ));
    }
    // The valid prefix really is valid, record by record, and ends where the format says.
    if scan.valid_end != spec.valid_end {
        fail(format!(
            "valid prefix ends at {} but docs/format.md ends it at {} ({:?})",
            scan.valid_end, spec.valid_end, spec.end_problem
        ));
    }
    if scan.records.len() != spec.ops.len() {
        fail(format!(
            "{} records in the valid prefix, docs/format.md finds {}",
            scan.records.len(),
            spec.ops.len()
        ));
    }
    let mut expected_key = scan.header.first_op_key;
    for (index, (record, entry)) in scan.records.iter().zip(&spec.ops).enumerate() {
        let at = entry.offset as usize;
        assert_same_record(&bytes[at..], entry.offset, record, &entry.record, &|| {
            format!("record {index} of the valid prefix\n{}", context())
        });
        if !matches!(record.kind, RecordKind::Op(_)) || record.op_key != expected_key {
            fail(format!(
                "record {index} is not op key {expected_key}: {record:?}"
            ));
        }
        if record.end_offset() > scan.valid_end || !record.offset.is_multiple_of(RECORD_ALIGN) {
            fail(format!("record {index} lies outside the valid prefix"));
        }
        expected_key = expected_key.wrapping_add(1);
    }
    if scan.sync_marks != spec.marks.len() as u64 {
        fail(format!(
            "{} sync marks in the valid prefix, docs/format.md finds {}",
            scan.sync_marks,
            spec.marks.len()
        ));
    }
    // Damage exactly when non-zero bytes follow the end of the valid prefix.
    match (scan.damage, spec.damaged()) {
        (None, false) => {}
        (Some(damage), true) => {
            if Some(damage.problem) != spec.end_problem
                || damage.offset != spec.valid_end
                || damage.extent_end != spec.data_end
            {
                fail(format!(
                    "damage {damage:?}, docs/format.md: {:?} at {} up to {}",
                    spec.end_problem, spec.valid_end, spec.data_end
                ));
            }
        }
        (damage, _) => fail(format!(
            "damage {damage:?}, docs/format.md: {:?} at {}, data up to {}",
            spec.end_problem, spec.valid_end, spec.data_end
        )),
    }
    // The durable mark: claimed by a mark that verifies, and at least every claim of the prefix.
    let view = &bytes[..spec.view_len as usize];
    let prefix_claim = spec.marks.iter().map(|&(_, claim)| claim).max();
    match scan.durable_mark {
        None if prefix_claim.is_some() => fail(format!(
            "no durable mark, though the prefix has a mark claiming {prefix_claim:?}"
        )),
        None => {}
        Some(mark) => {
            if prefix_claim.is_some_and(|claim| claim > mark.offset) {
                fail(format!(
                    "durable mark {mark:?} below a claim of the prefix ({prefix_claim:?})"
                ));
            }
            if mark.offset < SEGMENT_HEADER_LEN
                || !mark_exists(
                    view,
                    scan.header.salt,
                    max_record_bytes,
                    mark.offset,
                    mark.op_key,
                )
            {
                fail(format!("durable mark {mark:?} is claimed by no sync mark"));
            }
        }
    }
    // Salvage candidates verify, past the valid prefix, and only when there is damage.
    if !scan.beyond_damage.is_empty() && scan.damage.is_none() {
        fail("records beyond damage, but no damage".to_owned());
    }
    for record in &scan.beyond_damage {
        let at = record.offset as usize;
        let verified = record.offset >= scan.valid_end
            && record.offset.is_multiple_of(RECORD_ALIGN)
            && matches!(record.kind, RecordKind::Op(_))
            && spec_record(&view[at..], scan.header.salt, max_record_bytes).is_ok_and(|spec| {
                spec.op_key == record.op_key && spec.kind == record.kind.to_byte()
            })
            && std::ptr::eq(record.payload.as_ptr(), view[at + 16..].as_ptr());
        if !verified {
            fail(format!("salvage candidate {record:?} does not verify"));
        }
    }
    // No frame above the limit was accepted, anywhere.
    let limit = u64::from(max_record_bytes).next_multiple_of(RECORD_ALIGN);
    if let Some(record) = scan
        .records
        .iter()
        .chain(&scan.beyond_damage)
        .find(|record| record.padded_len() > limit)
    {
        fail(format!("accepted a record above the limit: {record:?}"));
    }
    Some(spec)
}

/// One record a replay handed to its sink.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Replayed {
    op_key: u64,
    kind: RecordKind,
    offset: u64,
    payload: Vec<u8>,
}

/// An in-memory log directory.
#[derive(Debug, Clone, Default)]
struct Directory {
    files: Vec<(String, Vec<u8>)>,
}

impl SegmentSource for Directory {
    fn file_names(&self) -> walbuf_recovery::Result<Vec<String>> {
        Ok(self.files.iter().map(|(name, _)| name.clone()).collect())
    }

    fn read_file(&self, name: &str) -> walbuf_recovery::Result<Vec<u8>> {
        self.files
            .iter()
            .find(|(file, _)| file == name)
            .map(|(_, bytes)| bytes.clone())
            .ok_or_else(|| Error::Io {
                path: name.into(),
                source: std::io::ErrorKind::NotFound.into(),
            })
    }
}

/// What one replay returned, and what its sink received (also when it then failed).
#[derive(Debug)]
struct Outcome {
    result: Result<Report, String>,
    replayed: Vec<Replayed>,
}

fn run_replay(directory: &Directory, options: Options) -> Outcome {
    let mut replayed = Vec::new();
    let mut sink = |record: &Record<'_>| {
        replayed.push(Replayed {
            op_key: record.op_key,
            kind: record.kind,
            offset: record.offset,
            payload: record.payload.to_vec(),
        });
        Ok(())
    };
    let result = replay(directory, options, &mut sink).map_err(|error| error.to_string());
    Outcome { result, replayed }
}

/// Replays `directory` in every mode and checks each outcome and the modes against each other.
/// Returns the outcomes, in the order of [`MODES`].
fn check_replay(
    directory: &Directory,
    watermark: u64,
    max_record_bytes: u32,
    context: &dyn Fn() -> String,
) -> Vec<Outcome> {
    // The independent scan of every segment file, in name order.
    let segments: Vec<(String, &[u8], Option<SpecScan>)> =
        sorted_segment_names(directory.files.iter().map(|(name, _)| name.clone()))
            .into_iter()
            .filter_map(|(_, name)| {
                let bytes = &directory.files.iter().find(|(file, _)| *file == name)?.1;
                let spec = spec_scan(bytes, max_record_bytes).ok();
                Some((name, &bytes[..], spec))
            })
            .collect();
    let outcomes: Vec<Outcome> = MODES
        .iter()
        .map(|&mode| {
            let options = Options {
                mode,
                watermark,
                max_record_bytes,
            };
            run_replay(directory, options)
        })
        .collect();
    for (&mode, outcome) in MODES.iter().zip(&outcomes) {
        let fail = |what: String| -> ! {
            panic!(
                "replay in {} mode, watermark {watermark}, max_record_bytes {max_record_bytes}: {what}\n{}",
                mode.name(),
                context()
            )
        };
        let replayed = &outcome.replayed;
        // What was fed must be valid, also when the replay then failed.
        if let Err(what) = check_replayed(&segments, replayed, mode, watermark, max_record_bytes) {
            fail(what);
        }
        let report = match &outcome.result {
            Ok(report) => report,
            Err(error) => {
                if matches!(mode, Mode::PointInTime | Mode::Salvage) {
                    fail(format!("failed ({error}), but this mode never fails"));
                }
                continue;
            }
        };
        if report.records_replayed != replayed.len() as u64 {
            fail(format!(
                "report says {} records replayed, the sink got {}",
                report.records_replayed,
                replayed.len()
            ));
        }
        if report.next_op_key <= watermark {
            fail(format!(
                "next op key {} not above the watermark",
                report.next_op_key
            ));
        }
        if let Some(last) = replayed.last() {
            // (After op key u64::MAX the log is full and the next key saturates.)
            if report.next_op_key <= last.op_key && last.op_key != u64::MAX {
                fail(format!(
                    "next op key {} would reuse replayed op key {}",
                    report.next_op_key, last.op_key
                ));
            }
            if report.last_op_key.is_none_or(|key| key < last.op_key) {
                fail(format!(
                    "last op key {:?} below the replayed op key {}",
                    report.last_op_key, last.op_key
                ));
            }
        }
        let kept = |name: &str| {
            report
                .segments
                .iter()
                .any(|segment| segment.name == name && segment.kept)
                && !report
                    .discarded_segments
                    .iter()
                    .any(|discarded| discarded == name)
        };
        if let Some(cut) = &report.cut {
            let spec = segments
                .iter()
                .find(|(name, _, _)| *name == cut.segment)
                .and_then(|(_, _, spec)| spec.as_ref());
            if !kept(&cut.segment) {
                fail(format!("the cut {cut:?} is in a segment that is not kept"));
            }
            if spec.is_none_or(|spec| spec.valid_end != cut.offset) {
                fail(format!(
                    "the cut {cut:?} is not at the end of that segment's valid prefix"
                ));
            }
        }
        for record in replayed {
            let from_kept_segment = segments.iter().any(|(name, bytes, spec)| {
                kept(name)
                    && spec.as_ref().is_some_and(|spec| {
                        spec.contains_op(bytes, record)
                            || verifies_at(bytes, spec, record, max_record_bytes)
                    })
            });
            if !from_kept_segment {
                fail(format!(
                    "op key {} was replayed from a segment the report does not keep \
                     (kept: {:?}, discarded: {:?})",
                    record.op_key,
                    report
                        .segments
                        .iter()
                        .map(|segment| (&segment.name, segment.kept))
                        .collect::<Vec<_>>(),
                    report.discarded_segments
                ));
            }
        }
        if mode == Mode::Strict {
            let clean = segments
                .iter()
                .all(|(_, _, spec)| spec.as_ref().is_some_and(|spec| !spec.damaged()));
            if !clean || !report.problems.is_empty() || report.cut.is_some() {
                fail(format!(
                    "succeeded on a log with anomalies: problems {:?}, cut {:?}",
                    report.problems, report.cut
                ));
            }
        }
    }
    // Strict ⊆ TolerateTornTail ⊆ PointInTime: when the stricter mode succeeds, the laxer one
    // replays the same records and cuts in the same place.
    let replayed_and_cut = |outcome: &Outcome| {
        outcome
            .result
            .as_ref()
            .ok()
            .map(|report| (outcome.replayed.clone(), report.cut.clone()))
    };
    let [tolerate, point_in_time, strict, _salvage] =
        [0, 1, 2, 3].map(|index| replayed_and_cut(&outcomes[index]));
    for (stricter, laxer, names) in [
        (&strict, &tolerate, "strict vs tolerate-torn-tail"),
        (
            &tolerate,
            &point_in_time,
            "tolerate-torn-tail vs point-in-time",
        ),
    ] {
        if let (Some(stricter), Some(laxer)) = (stricter, laxer)
            && stricter != laxer
        {
            panic!(
                "replay, watermark {watermark}: {names} replay or cut differently: {stricter:?} vs {laxer:?}\n{}",
                context()
            );
        }
    }
    if strict.is_some() && tolerate.is_none() {
        panic!(
            "replay, watermark {watermark}: strict succeeded but tolerate-torn-tail failed\n{}",
            context()
        );
    }
    outcomes
}

/// Whether `record` verifies at its offset in this segment (a salvage candidate).
fn verifies_at(bytes: &[u8], spec: &SpecScan, record: &Replayed, max_record_bytes: u32) -> bool {
    let view = &bytes[..spec.view_len as usize];
    let Some(rest) = usize::try_from(record.offset)
        .ok()
        .and_then(|at| view.get(at..))
    else {
        return false;
    };
    record.offset >= SEGMENT_HEADER_LEN
        && record.offset.is_multiple_of(RECORD_ALIGN)
        && spec_record(rest, spec.header.salt, max_record_bytes).is_ok_and(|found| {
            found.op_key == record.op_key
                && RecordKind::from_byte(found.kind) == Some(record.kind)
                && rest.get(16..16 + found.payload_len) == Some(&record.payload[..])
        })
}

fn check_replayed(
    segments: &[(String, &[u8], Option<SpecScan>)],
    replayed: &[Replayed],
    mode: Mode,
    watermark: u64,
    max_record_bytes: u32,
) -> Result<(), String> {
    for (index, record) in replayed.iter().enumerate() {
        if !matches!(record.kind, RecordKind::Op(kind) if (1..=MAX_USER_KIND).contains(&kind)) {
            return Err(format!("replayed a record that is not an op: {record:?}"));
        }
        if record.op_key <= watermark {
            return Err(format!(
                "replayed op key {} at or below the watermark",
                record.op_key
            ));
        }
        if let Some(previous) = index.checked_sub(1).map(|previous| &replayed[previous]) {
            if record.op_key <= previous.op_key {
                return Err(format!(
                    "replayed op key {} after {}: not in op-key order",
                    record.op_key, previous.op_key
                ));
            }
            if mode != Mode::Salvage && record.op_key != previous.op_key + 1 {
                return Err(format!(
                    "replayed op key {} after {}: a gap outside salvage",
                    record.op_key, previous.op_key
                ));
            }
        } else if mode != Mode::Salvage && record.op_key != watermark + 1 {
            return Err(format!(
                "first replayed op key {} is not watermark + 1",
                record.op_key
            ));
        }
        let in_prefix = segments.iter().any(|(_, bytes, spec)| {
            spec.as_ref()
                .is_some_and(|spec| spec.contains_op(bytes, record))
        });
        if mode != Mode::Salvage && !in_prefix {
            return Err(format!(
                "replayed op key {} (offset {}) which is in no segment's valid prefix",
                record.op_key, record.offset
            ));
        }
        if mode == Mode::Salvage
            && !in_prefix
            && !segments.iter().any(|(_, bytes, spec)| {
                spec.as_ref().is_some_and(|spec| {
                    record.offset >= spec.valid_end
                        && verifies_at(bytes, spec, record, max_record_bytes)
                })
            })
        {
            return Err(format!(
                "salvaged op key {} (offset {}) which verifies nowhere past damage",
                record.op_key, record.offset
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Plans: structured inputs that build a mostly valid log directory with the real encoder.

/// The largest log directory a [`Plan`] builds, in bytes (three segments).
const PLAN_MAX_DIRECTORY_BYTES: usize = 3 * PLAN_MAX_SEGMENT_BYTES;
const PLAN_MAX_SEGMENT_BYTES: usize = 64 + 24 * (MIN_FRAME_LEN as usize + 600 + 8) + 8 * 64;

/// Reads a fuzz input front to back; past its end every read is zero, so any input decodes.
#[derive(Debug)]
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn u8(&mut self) -> u8 {
        let byte = self.data.get(self.at).copied().unwrap_or(0);
        self.at = self.at.saturating_add(1);
        byte
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u64(&mut self) -> u64 {
        let mut bytes = [0_u8; 8];
        for byte in &mut bytes {
            *byte = self.u8();
        }
        u64::from_le_bytes(bytes)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.u8()).collect()
    }
}

/// A log directory described by a fuzz input: segments of records written with the real
/// encoder the way the writer writes them, then damaged. Any byte string decodes to a plan
/// (missing bytes read as zeros), so libFuzzer's mutations of the input become changes of
/// record counts, sizes, sync-mark claims, damage kinds and positions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Op key of the first segment's first record.
    pub first_op_key: u64,
    /// Sequence number of the first segment.
    pub first_sequence: u64,
    /// The watermark recovery is given.
    pub watermark: u64,
    /// The record-size limit of the scan.
    pub max_record_bytes: u32,
    /// The segments, oldest first (one to three).
    pub segments: Vec<SegmentPlan>,
    /// Damage applied after writing, in order.
    pub mutations: Vec<Mutation>,
}

/// One segment of a [`Plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentPlan {
    /// The header's salt.
    pub salt: u64,
    /// Zeroed bytes between the last record and the capacity.
    pub slack_bytes: u64,
    /// What is written, in order.
    pub records: Vec<RecordPlan>,
}

/// One record written into a [`SegmentPlan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordPlan {
    /// The next op record: kind byte and payload. Skipped (as the writer would refuse it)
    /// when its frame exceeds the plan's record-size limit.
    Op {
        /// Kind byte, 1..=127.
        kind: u8,
        /// Payload length.
        len: u16,
        /// Payload byte `i` is `fill + 31 * i` (wrapping).
        fill: u8,
    },
    /// An honest sync mark claiming the end of an earlier record of the segment (`choice`
    /// picks which), with the op key of the last record below it.
    SyncMark {
        /// Picks the claimed boundary among those written so far.
        choice: u8,
    },
    /// A sync mark with an arbitrary claim and op key: no writer writes this, but it verifies.
    WildMark {
        /// The claimed durable offset.
        claim: u64,
        /// The op key field.
        op_key: u64,
    },
    /// An op record whose key is off the sequence by `delta` (not 0).
    WildOp {
        /// Signed distance from the key the sequence calls for.
        delta: i8,
    },
}

/// Damage applied to a written [`Plan`] directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    /// Cut the file to `at` modulo (its length + 1).
    Truncate {
        /// Segment index (modulo the segment count).
        segment: u8,
        /// Position.
        at: u16,
    },
    /// Flip one bit.
    FlipBit {
        /// Segment index.
        segment: u8,
        /// Position, modulo the written data + 8.
        at: u16,
        /// Bit, 0..8.
        bit: u8,
    },
    /// Overwrite bytes.
    Overwrite {
        /// Segment index.
        segment: u8,
        /// Position, modulo the written data + 8.
        at: u16,
        /// New bytes (1..=16).
        bytes: Vec<u8>,
    },
    /// Zero a range, as a power cut that dropped unsynced sectors does.
    Zero {
        /// Segment index.
        segment: u8,
        /// Start, modulo the written data + 8.
        at: u16,
        /// Length.
        len: u16,
    },
    /// Append bytes to the file (past its capacity: they must be ignored).
    Append {
        /// Segment index.
        segment: u8,
        /// Bytes appended.
        bytes: Vec<u8>,
    },
    /// Delete a segment file.
    Remove {
        /// Segment index.
        segment: u8,
    },
    /// Rename a segment file to the name of another first op key.
    Rename {
        /// Segment index.
        segment: u8,
        /// Added to the op key in the name.
        delta: i8,
    },
}

impl Mutation {
    fn segment(&self) -> u8 {
        match self {
            Self::Truncate { segment, .. }
            | Self::FlipBit { segment, .. }
            | Self::Overwrite { segment, .. }
            | Self::Zero { segment, .. }
            | Self::Append { segment, .. }
            | Self::Remove { segment }
            | Self::Rename { segment, .. } => *segment,
        }
    }
}

impl Plan {
    /// Decodes a plan from any bytes.
    #[must_use]
    pub fn decode(data: &[u8]) -> Self {
        let mut reader = Reader { data, at: 0 };
        let control = reader.u8();
        let segment_count = 1 + usize::from(control % 3);
        let first_op_key = match (control >> 2) & 3 {
            0 | 1 => 1 + u64::from(reader.u8() % 16),
            2 => 1 + u64::from(reader.u16()),
            _ => u64::MAX - u64::from(reader.u8() % 8),
        };
        let first_sequence = if control & 0x10 == 0 {
            1 + u64::from(reader.u8() % 4)
        } else {
            u64::MAX - u64::from(reader.u8() % 4)
        };
        let max_record_bytes = if control & 0x20 == 0 {
            DEFAULT_MAX_RECORD_BYTES
        } else {
            MIN_FRAME_LEN as u32 + u32::from(reader.u16() % 1024)
        };
        let base = first_op_key - 1;
        let choice = reader.u8();
        let watermark = match choice % 8 {
            0..=3 => base,
            4 => base.saturating_sub(1 + u64::from(reader.u8() % 4)),
            5 | 6 => base.saturating_add(1 + u64::from(reader.u8() % 64)),
            _ => base.saturating_add(u64::from(reader.u16())),
        }
        .min(u64::MAX - 1);
        let segments = (0..segment_count)
            .map(|_| {
                let salt = reader.u64();
                let slack_bytes = 8 * u64::from(reader.u8() % 64);
                let count = reader.u8() % 24;
                let records = (0..count)
                    .map(|_| {
                        let tag = reader.u8();
                        if tag & 0x80 == 0 {
                            let len = if tag & 0x40 == 0 {
                                u16::from(reader.u8() % 48)
                            } else {
                                reader.u16() % 600
                            };
                            RecordPlan::Op {
                                kind: 1 + (tag & 0x3f),
                                len,
                                fill: reader.u8(),
                            }
                        } else {
                            match tag & 0x7f {
                                0..=95 => RecordPlan::SyncMark {
                                    choice: reader.u8(),
                                },
                                96..=111 => RecordPlan::WildMark {
                                    claim: u64::from(reader.u16()),
                                    op_key: u64::from(reader.u8()),
                                },
                                _ => RecordPlan::WildOp {
                                    delta: match reader.u8() as i8 {
                                        0 => 1,
                                        delta => delta,
                                    },
                                },
                            }
                        }
                    })
                    .collect();
                SegmentPlan {
                    salt,
                    slack_bytes,
                    records,
                }
            })
            .collect();
        let mutation_count = reader.u8() % 6;
        let mutations = (0..mutation_count)
            .map(|_| {
                let segment = reader.u8();
                match reader.u8() % 10 {
                    0 | 1 => Mutation::Truncate {
                        segment,
                        at: reader.u16(),
                    },
                    2 | 3 => Mutation::FlipBit {
                        segment,
                        at: reader.u16(),
                        bit: reader.u8() % 8,
                    },
                    4 => {
                        let len = 1 + usize::from(reader.u8() % 16);
                        Mutation::Overwrite {
                            segment,
                            at: reader.u16(),
                            bytes: reader.bytes(len),
                        }
                    }
                    5 | 6 => Mutation::Zero {
                        segment,
                        at: reader.u16(),
                        len: reader.u16() % 512,
                    },
                    7 => {
                        let len = 1 + usize::from(reader.u8() % 16);
                        Mutation::Append {
                            segment,
                            bytes: reader.bytes(len),
                        }
                    }
                    8 => Mutation::Remove { segment },
                    _ => Mutation::Rename {
                        segment,
                        delta: reader.u8() as i8,
                    },
                }
            })
            .collect();
        Self {
            first_op_key,
            first_sequence,
            watermark,
            max_record_bytes,
            segments,
            mutations,
        }
    }
}

/// An op record as written, with where it lies.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Written {
    /// Index of the segment.
    segment: usize,
    offset: u64,
    end: u64,
    op_key: u64,
    kind: u8,
    payload: Vec<u8>,
}

/// A plan's directory before and after damage.
#[derive(Debug)]
struct Built {
    /// The files as written (name, bytes), in segment order.
    written_files: Vec<(String, Vec<u8>)>,
    /// The directory after the mutations.
    directory: Directory,
    /// Op records written, in order.
    ops: Vec<Written>,
    /// Whether only what a correct writer writes was written (no wild records).
    honest: bool,
    /// Whether a segment was removed or renamed.
    directory_changed: bool,
    /// Whether a segment was renamed (then names no longer say which file is which).
    renamed: bool,
}

fn build(plan: &Plan) -> Built {
    let mut written_files = Vec::new();
    let mut ops = Vec::new();
    let mut honest = true;
    // The key the next op record takes (None once past u64::MAX).
    let mut next_key = Some(plan.first_op_key);
    let mut sequence = plan.first_sequence;
    for (index, segment) in plan.segments.iter().enumerate() {
        let Some(first_key) = next_key else { break };
        let mut body: Vec<u8> = Vec::new();
        // (end offset, last op key below it) of every record boundary so far.
        let mut boundaries: Vec<(u64, u64)> = vec![(SEGMENT_HEADER_LEN, 0)];
        let mut last_key = 0;
        for record in &segment.records {
            let offset = SEGMENT_HEADER_LEN + body.len() as u64;
            let bytes = match record {
                RecordPlan::Op { kind, len, fill } => {
                    let Some(key) = next_key else { continue };
                    let payload: Vec<u8> = (0..*len)
                        .map(|index| fill.wrapping_add((index as u8).wrapping_mul(31)))
                        .collect();
                    if MIN_FRAME_LEN + payload.len() as u64 > u64::from(plan.max_record_bytes) {
                        continue;
                    }
                    ops.push(Written {
                        segment: index,
                        offset,
                        end: offset + walbuf_recovery::format::padded_frame_len(payload.len()),
                        op_key: key,
                        kind: *kind,
                        payload: payload.clone(),
                    });
                    next_key = key.checked_add(1);
                    last_key = key;
                    encode_record(segment.salt, RecordKind::Op(*kind), key, &payload)
                }
                RecordPlan::SyncMark { choice } => {
                    if MIN_FRAME_LEN + 8 > u64::from(plan.max_record_bytes) {
                        continue;
                    }
                    let (claim, key) = boundaries[usize::from(*choice) % boundaries.len()];
                    encode_record(
                        segment.salt,
                        RecordKind::SyncMark,
                        key,
                        &claim.to_le_bytes(),
                    )
                }
                RecordPlan::WildMark { claim, op_key } => {
                    honest = false;
                    encode_record(
                        segment.salt,
                        RecordKind::SyncMark,
                        *op_key,
                        &claim.to_le_bytes(),
                    )
                }
                RecordPlan::WildOp { delta } => {
                    honest = false;
                    let key = next_key
                        .unwrap_or(u64::MAX)
                        .wrapping_add_signed(i64::from(*delta));
                    encode_record(segment.salt, RecordKind::Op(1), key, b"wild")
                }
            };
            body.extend_from_slice(&bytes);
            boundaries.push((SEGMENT_HEADER_LEN + body.len() as u64, last_key));
        }
        let data_end = SEGMENT_HEADER_LEN + body.len() as u64;
        let capacity = (data_end + segment.slack_bytes)
            .next_multiple_of(RECORD_ALIGN)
            .max(SEGMENT_HEADER_LEN + 24);
        let header = SegmentHeader {
            sequence,
            first_op_key: first_key,
            salt: segment.salt,
            capacity_bytes: capacity,
        };
        let mut file = header.encode().to_vec();
        file.extend_from_slice(&body);
        file.resize(capacity as usize, 0);
        written_files.push((segment_file_name(first_key), file));
        if next_key == Some(first_key) {
            // No op record: a writer never rotates out of such a segment (and the next one
            // would take the same name).
            break;
        }
        // A writer never wraps the sequence; a plan may, but then it is not honest.
        sequence = sequence.checked_add(1).unwrap_or_else(|| {
            honest = false;
            0
        });
    }
    let mut files = written_files.clone();
    let mut directory_changed = false;
    let mut renamed = false;
    for mutation in &plan.mutations {
        if files.is_empty() {
            break;
        }
        let index = usize::from(mutation.segment()) % files.len();
        let file = &mut files[index].1;
        // Positions fall in the written data (or just past it) rather than the zeroed slack.
        let data_len = file
            .iter()
            .rposition(|&byte| byte != 0)
            .map_or(SEGMENT_HEADER_LEN as usize, |last| last + 1);
        let position = |at: u16| usize::from(at) % (data_len + 8).min(file.len().max(1));
        match mutation {
            Mutation::Truncate { at, .. } => {
                let len = usize::from(*at) % (file.len() + 1);
                file.truncate(len);
            }
            Mutation::FlipBit { at, bit, .. } => {
                if !file.is_empty() {
                    let at = position(*at);
                    file[at] ^= 1 << bit;
                }
            }
            Mutation::Overwrite { at, bytes, .. } => {
                let at = position(*at);
                for (offset, byte) in bytes.iter().enumerate() {
                    if let Some(slot) = file.get_mut(at + offset) {
                        *slot = *byte;
                    }
                }
            }
            Mutation::Zero { at, len, .. } => {
                let start = position(*at);
                let end = (start + usize::from(*len)).min(file.len());
                if start < end {
                    file[start..end].fill(0);
                }
            }
            Mutation::Append { bytes, .. } => file.extend_from_slice(bytes),
            Mutation::Remove { .. } => {
                files.remove(index);
                directory_changed = true;
            }
            Mutation::Rename { delta, .. } => {
                let key = files[index]
                    .0
                    .trim_end_matches(".wal")
                    .parse::<u64>()
                    .unwrap_or(1);
                files[index].0 =
                    segment_file_name(key.saturating_add_signed(i64::from(*delta)).max(1));
                // Two files of one name: keep the directory a set of names.
                let name = files[index].0.clone();
                if files.iter().filter(|(other, _)| *other == name).count() > 1 {
                    files.remove(index);
                }
                directory_changed = true;
                renamed = true;
            }
        }
    }
    Built {
        written_files,
        directory: Directory { files },
        ops,
        honest,
        directory_changed,
        renamed,
    }
}

/// The first offset at which `after` reads differently from `before` as a segment (within
/// `before`'s capacity, the bytes past a file's end missing); `None` when they read the same.
fn first_difference(before: &[u8], after: &[u8]) -> Option<usize> {
    let common = before.len().min(after.len());
    if let Some(at) = (0..common).find(|&at| before[at] != after[at]) {
        return Some(at);
    }
    // Only bytes past the capacity (appended) may differ beyond the common part.
    let capacity = before.len();
    (after.len() < capacity).then_some(after.len())
}

/// Builds the directory a plan describes and checks every scan and every replay of it, plus
/// what is known from having written it.
/// A segment removed from the middle of an honest log, holding ops above the watermark, leaves
/// ops provably missing (a later segment survives): the modes that refuse anomalies must
/// refuse, whatever else the mutations did.
fn check_lost_segments(
    plan: &Plan,
    built: &Built,
    outcomes: &[Outcome],
    context: &dyn Fn() -> String,
) {
    let present: Vec<&str> = built
        .directory
        .files
        .iter()
        .map(|(name, _)| name.as_str())
        .collect();
    let is_present = |name: &str| present.contains(&name);
    let lost = built
        .written_files
        .iter()
        .enumerate()
        .find(|(index, (name, _))| {
            !is_present(name)
                && built
                    .ops
                    .iter()
                    .any(|op| op.segment == *index && op.op_key > plan.watermark)
                && built.written_files[index + 1..]
                    .iter()
                    .any(|(later, _)| is_present(later))
        });
    let Some((_, (lost, _))) = lost else { return };
    for (&mode, outcome) in MODES.iter().zip(outcomes) {
        if matches!(mode, Mode::TolerateTornTail | Mode::Strict) && outcome.result.is_ok() {
            panic!(
                "{} mode opened a log missing segment {lost}, which held unapplied ops\n{}",
                mode.name(),
                context()
            );
        }
    }
}

fn check_plan(plan: &Plan) {
    let built = build(plan);
    let context = || format!("{plan:?}");
    for (_, bytes) in &built.directory.files {
        check_one_scan(bytes, plan.max_record_bytes, &context);
    }
    let outcomes = check_replay(
        &built.directory,
        plan.watermark,
        plan.max_record_bytes,
        &context,
    );
    if built.honest && !built.renamed && plan.first_op_key <= plan.watermark + 1 {
        check_lost_segments(plan, &built, &outcomes, &context);
    }
    if !built.honest || built.directory_changed || plan.first_op_key > plan.watermark + 1 {
        return;
    }
    // Every record that lies wholly before the first damaged byte is replayed by
    // point-in-time recovery (and by every mode that succeeds).
    let mut guaranteed = Vec::new();
    for (index, ((_, before), (_, after))) in built
        .written_files
        .iter()
        .zip(&built.directory.files)
        .enumerate()
    {
        let damage = first_difference(before, after);
        guaranteed.extend(
            built
                .ops
                .iter()
                .filter(|op| op.segment == index)
                .filter(|op| damage.is_none_or(|at| op.end <= at as u64))
                .filter(|op| op.op_key > plan.watermark)
                .map(|op| (op.op_key, op.kind, op.payload.clone())),
        );
        if damage.is_some() {
            break;
        }
    }
    let undamaged = built
        .written_files
        .iter()
        .zip(&built.directory.files)
        .all(|((_, before), (_, after))| first_difference(before, after).is_none());
    for (&mode, outcome) in MODES.iter().zip(&outcomes) {
        let fail = |what: String| -> ! {
            panic!(
                "replay of a written log in {} mode: {what}\n{}",
                mode.name(),
                context()
            )
        };
        let replayed = match &outcome.result {
            Ok(_) => &outcome.replayed,
            Err(error) if undamaged => fail(format!("failed on an undamaged log: {error}")),
            Err(_) => continue,
        };
        let got: Vec<(u64, u8, Vec<u8>)> = replayed
            .iter()
            .map(|record| (record.op_key, record.kind.to_byte(), record.payload.clone()))
            .collect();
        if undamaged && got != guaranteed {
            fail(format!(
                "an undamaged log replayed {} records, {} were written above the watermark",
                got.len(),
                guaranteed.len()
            ));
        }
        if mode != Mode::Salvage && !got.starts_with(&guaranteed) {
            fail(format!(
                "lost records written before the first damaged byte: replayed {:?}, expected at least {:?}",
                got.iter().map(|record| record.0).collect::<Vec<_>>(),
                guaranteed.iter().map(|record| record.0).collect::<Vec<_>>()
            ));
        }
    }
}
