//! Reading one segment: its valid prefix, what ends it, and the durable mark it carries.
//!
//! The scanner works on the bytes of a whole segment file (read with plain file reads, never
//! through a mapping). It walks records from the header on, verifying every checksum and the
//! gapless op-key sequence, and stops at the first position that is not a valid record. What
//! it found there is one of:
//!
//! * **a clean end** — nothing but zeros from there to the end of the file (preallocated space
//!   that was never written, or unsynced bytes a power cut dropped);
//! * **damage** — some non-zero byte follows. Whether the damage is a *torn tail* (bytes that
//!   were never made durable) or *corruption* (damage to durable bytes) is decided with the
//!   [`DurableMark`]: the highest offset that any valid sync mark in the segment — before or
//!   after the damage — claims was durable. Damage below it is corruption; at or above it, a
//!   torn tail. (A segment followed by another segment is durable as a whole; the replay
//!   driver applies that rule.)
//!
//! After damage the scanner keeps looking, at every aligned offset, for records that still
//! verify: sync marks among them raise the durable mark, and op records among them are
//! reported in [`SegmentScan::beyond_damage`] for `Salvage` mode.

use crate::error::{HeaderProblem, RecordProblem};
use crate::format::{
    MIN_FRAME_LEN, RECORD_ALIGN, Record, RecordKind, SEGMENT_HEADER_LEN, SegmentHeader,
    decode_record,
};

/// The strongest durability claim found in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurableMark {
    /// Every byte of the segment below this offset had been made durable.
    pub offset: u64,
    /// The last op key inside that durable range (0 if none).
    pub op_key: u64,
}

/// The first position in a segment that is not a valid record, followed by non-zero bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damage {
    /// Byte offset where the valid prefix ends.
    pub offset: u64,
    /// Why the bytes there are not a valid record.
    pub problem: RecordProblem,
    /// Offset just past the last non-zero byte of the file: `extent_end - offset` bytes would
    /// be cut.
    pub extent_end: u64,
}

impl Damage {
    /// Bytes from the damage to the last non-zero byte.
    #[must_use]
    pub fn len_bytes(&self) -> u64 {
        self.extent_end.saturating_sub(self.offset)
    }
}

/// The result of scanning one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentScan<'a> {
    /// The verified header.
    pub header: SegmentHeader,
    /// The op records of the valid prefix, in order; their keys run gapless from
    /// `header.first_op_key`.
    pub records: Vec<Record<'a>>,
    /// Number of sync marks in the valid prefix.
    pub sync_marks: u64,
    /// Offset just past the valid prefix: where the next record would go.
    pub valid_end: u64,
    /// The strongest claim of any valid sync mark in the file.
    pub durable_mark: Option<DurableMark>,
    /// What ends the valid prefix, if it is not a clean end.
    pub damage: Option<Damage>,
    /// Op records that still verify after the damage (candidates for `Salvage`).
    pub beyond_damage: Vec<Record<'a>>,
    /// Length of the file scanned.
    pub file_len: u64,
}

impl SegmentScan<'_> {
    /// The op key of the last record in the valid prefix.
    #[must_use]
    pub fn last_op_key(&self) -> Option<u64> {
        self.records.last().map(|record| record.op_key)
    }

    /// The op key the next record appended to this segment would take (`u64::MAX` after a
    /// record with op key `u64::MAX`, which no record can follow).
    #[must_use]
    pub fn next_op_key(&self) -> u64 {
        self.last_op_key()
            .map_or(self.header.first_op_key, |key| key.saturating_add(1))
    }

    /// Whether the damage (if any) lies below the durable mark, so that bytes which had been
    /// made durable are damaged.
    #[must_use]
    pub fn damage_below_durable_mark(&self) -> bool {
        match (self.damage, self.durable_mark) {
            (Some(damage), Some(mark)) => damage.offset < mark.offset,
            _ => false,
        }
    }
}

/// Scans the bytes of one segment file. `max_record_bytes` bounds the frame length the scanner
/// accepts (it never allocates according to a length field).
///
/// # Errors
/// The header is unreadable; nothing after it can be trusted.
pub fn scan_segment(bytes: &[u8], max_record_bytes: u32) -> Result<SegmentScan<'_>, HeaderProblem> {
    let header = SegmentHeader::decode(bytes)?;
    // Bytes past the declared capacity are not part of the segment; bytes missing below it
    // (a file cut short) read as the zeros they would have been.
    let end = bytes
        .len()
        .min(usize::try_from(header.capacity_bytes).unwrap_or(usize::MAX));
    let bytes = &bytes[..end];
    let mut scan = SegmentScan {
        header,
        records: Vec::new(),
        sync_marks: 0,
        valid_end: SEGMENT_HEADER_LEN,
        durable_mark: None,
        damage: None,
        beyond_damage: Vec::new(),
        file_len: end as u64,
    };
    // None after a record with op key u64::MAX: no op record can follow it.
    let mut expected_key = Some(header.first_op_key);
    let mut offset = SEGMENT_HEADER_LEN;
    let problem = loop {
        let rest = &bytes[offset as usize..];
        if rest.is_empty() {
            break None;
        }
        let record = match decode_record(rest, offset, header.salt, max_record_bytes) {
            Ok(record) => record,
            Err(problem) => break Some(problem),
        };
        match record.kind {
            RecordKind::Op(_) => {
                if Some(record.op_key) != expected_key {
                    break Some(RecordProblem::KeyOutOfSequence {
                        expected: expected_key.unwrap_or(u64::MAX),
                        found: record.op_key,
                    });
                }
                expected_key = record.op_key.checked_add(1);
                scan.records.push(record);
            }
            RecordKind::SyncMark => {
                let claim_ok = mark_claim(&record).is_some_and(|mark| {
                    mark.op_key == 0 || expected_key.is_none_or(|expected| mark.op_key < expected)
                });
                if !claim_ok {
                    break Some(RecordProblem::BadSyncMark);
                }
                scan.sync_marks += 1;
                raise_mark(&mut scan.durable_mark, &record);
            }
        }
        offset = record.end_offset();
    };
    scan.valid_end = offset;
    if let Some(problem) = problem {
        let tail = &bytes[offset as usize..];
        if let Some(last_nonzero) = last_nonzero(tail) {
            scan.damage = Some(Damage {
                offset,
                problem,
                extent_end: offset + last_nonzero as u64 + 1,
            });
            scan_beyond_damage(bytes, offset, max_record_bytes, &mut scan);
        }
    }
    Ok(scan)
}

/// Index of the last non-zero byte: 64 bytes at a time from the end (the unwritten rest of
/// a segment is tens of megabytes of zeros, and a byte-wise scan of it dominated recovery).
fn last_nonzero(bytes: &[u8]) -> Option<usize> {
    const CHUNK: usize = 64;
    let mut end = bytes.len();
    while end >= CHUNK {
        let chunk = &bytes[end - CHUNK..end];
        if chunk.iter().fold(0u8, |any, byte| any | byte) != 0 {
            break;
        }
        end -= CHUNK;
    }
    bytes[..end].iter().rposition(|&byte| byte != 0)
}

/// Whether `bytes` start with a record header `decode_record` could accept: a frame length
/// in range, a known kind and zero reserved bytes. A cheap necessary condition, never
/// sufficient (the checksum decides).
fn plausible_record_header(bytes: &[u8], max_record_bytes: u32) -> bool {
    let Some(header) = bytes.first_chunk::<8>() else {
        return false;
    };
    let frame_len = u64::from(u32::from_le_bytes([
        header[0], header[1], header[2], header[3],
    ]));
    let kind_known = RecordKind::from_byte(header[4]).is_some();
    frame_len >= MIN_FRAME_LEN
        && frame_len <= u64::from(max_record_bytes)
        && kind_known
        && header[5..8] == [0, 0, 0]
}

/// Looks for records that still verify at every aligned offset from `from` on.
fn scan_beyond_damage<'a>(
    bytes: &'a [u8],
    from: u64,
    max_record_bytes: u32,
    scan: &mut SegmentScan<'a>,
) {
    let salt = scan.header.salt;
    let mut offset = from;
    while let Some(rest) = bytes.get(offset as usize..) {
        if rest.is_empty() {
            break;
        }
        // Most offsets past damage hold garbage: reject them on the header's fixed fields
        // before checksumming a frame that may claim up to `max_record_bytes` (checksumming
        // every candidate made a garbage tail quadratic to scan).
        if !plausible_record_header(rest, max_record_bytes) {
            offset += RECORD_ALIGN;
            continue;
        }
        match decode_record(rest, offset, salt, max_record_bytes) {
            Ok(record) => {
                match record.kind {
                    RecordKind::Op(_) => scan.beyond_damage.push(record),
                    RecordKind::SyncMark => {
                        if mark_claim(&record).is_some() {
                            raise_mark(&mut scan.durable_mark, &record);
                        }
                    }
                }
                offset = record.end_offset();
            }
            Err(_) => offset += RECORD_ALIGN,
        }
    }
}

/// The claim of a sync mark, if it is possible: it can only claim bytes before itself.
fn mark_claim(record: &Record<'_>) -> Option<DurableMark> {
    let claimed = record.sync_mark_offset()?;
    (SEGMENT_HEADER_LEN..=record.offset)
        .contains(&claimed)
        .then_some(DurableMark {
            offset: claimed,
            op_key: record.op_key,
        })
}

fn raise_mark(current: &mut Option<DurableMark>, record: &Record<'_>) {
    if let Some(claim) = mark_claim(record)
        && current.is_none_or(|mark| claim.offset > mark.offset)
    {
        *current = Some(claim);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_nonzero_finds_the_last_set_byte_anywhere() {
        for len in [0usize, 1, 63, 64, 65, 200] {
            assert_eq!(last_nonzero(&vec![0; len]), None, "zeros of {len}");
            for at in 0..len {
                let mut bytes = vec![0; len];
                bytes[at] = 1;
                assert_eq!(last_nonzero(&bytes), Some(at), "{len} with a byte at {at}");
                if at + 1 < len {
                    bytes[len - 1] = 9;
                    assert_eq!(last_nonzero(&bytes), Some(len - 1));
                }
            }
        }
    }
    use crate::format::{DEFAULT_MAX_RECORD_BYTES, encode_record};

    const SALT: u64 = 0x5eed;

    fn segment(capacity: usize, records: &[Vec<u8>]) -> Vec<u8> {
        let header = SegmentHeader {
            sequence: 1,
            first_op_key: 1,
            salt: SALT,
            capacity_bytes: capacity as u64,
        };
        let mut bytes = header.encode().to_vec();
        for record in records {
            bytes.extend_from_slice(record);
        }
        bytes.resize(capacity, 0);
        bytes
    }

    fn op(key: u64, payload: &[u8]) -> Vec<u8> {
        encode_record(SALT, RecordKind::Op(1), key, payload)
    }

    fn mark(key: u64, offset: u64) -> Vec<u8> {
        encode_record(SALT, RecordKind::SyncMark, key, &offset.to_le_bytes())
    }

    #[test]
    fn clean_segment() {
        let bytes = segment(
            1024,
            &[op(1, b"a"), op(2, b"bb"), mark(2, 112), op(3, b"c")],
        );
        let scan = scan_segment(&bytes, DEFAULT_MAX_RECORD_BYTES).expect("header");
        assert_eq!(scan.records.len(), 3);
        assert_eq!(scan.damage, None);
        assert_eq!(scan.next_op_key(), 4);
        assert_eq!(scan.durable_mark.map(|mark| mark.offset), Some(112));
    }

    #[test]
    fn garbage_after_prefix_is_damage_with_extent() {
        let mut bytes = segment(1024, &[op(1, b"a"), op(2, b"b")]);
        bytes[200] = 7;
        let scan = scan_segment(&bytes, DEFAULT_MAX_RECORD_BYTES).expect("header");
        assert_eq!(scan.records.len(), 2);
        let damage = scan.damage.expect("damage");
        assert_eq!(damage.offset, scan.valid_end);
        assert_eq!(damage.extent_end, 201);
        assert!(!scan.damage_below_durable_mark());
    }

    #[test]
    fn mark_after_gap_makes_damage_corruption() {
        let first = op(1, b"aaaa");
        let second = op(2, b"bbbb");
        let mark_offset = 64 + first.len() as u64 + second.len() as u64;
        let mut bytes = segment(1024, &[first.clone(), second, mark(2, mark_offset)]);
        // Damage the second record: the mark claims it durable.
        bytes[64 + first.len() + 17] ^= 1;
        let scan = scan_segment(&bytes, DEFAULT_MAX_RECORD_BYTES).expect("header");
        assert_eq!(scan.records.len(), 1);
        assert!(scan.damage_below_durable_mark());
    }

    #[test]
    fn out_of_sequence_key_is_damage() {
        let bytes = segment(1024, &[op(1, b"a"), op(3, b"b")]);
        let scan = scan_segment(&bytes, DEFAULT_MAX_RECORD_BYTES).expect("header");
        assert_eq!(scan.records.len(), 1);
        assert!(matches!(
            scan.damage.map(|damage| damage.problem),
            Some(RecordProblem::KeyOutOfSequence {
                expected: 2,
                found: 3
            })
        ));
        assert_eq!(scan.beyond_damage.len(), 1);
    }

    #[test]
    fn op_key_u64_max_ends_the_sequence_without_overflow() {
        // Found by the scan_segment fuzz target (fuzz/regressions/scan_segment/scanner-overflow).
        let header = SegmentHeader {
            sequence: 1,
            first_op_key: u64::MAX - 1,
            salt: SALT,
            capacity_bytes: 1024,
        };
        let mut bytes = header.encode().to_vec();
        for key in [u64::MAX - 1, u64::MAX, u64::MAX] {
            bytes.extend(op(key, b"k"));
        }
        bytes.resize(1024, 0);
        let scan = scan_segment(&bytes, DEFAULT_MAX_RECORD_BYTES).expect("header");
        assert_eq!(scan.last_op_key(), Some(u64::MAX));
        assert_eq!(scan.next_op_key(), u64::MAX);
        assert!(matches!(
            scan.damage.map(|damage| damage.problem),
            Some(RecordProblem::KeyOutOfSequence {
                found: u64::MAX,
                ..
            })
        ));
    }

    #[test]
    fn short_file_reads_as_zeros() {
        let mut bytes = segment(1024, &[op(1, b"a")]);
        bytes.truncate(100);
        let scan = scan_segment(&bytes, DEFAULT_MAX_RECORD_BYTES).expect("header");
        assert_eq!(scan.records.len(), 1);
        assert_eq!(scan.damage, None);
    }
}
