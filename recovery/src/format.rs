//! The byte layout of segment headers and records (`docs/format.md` is the prose version).
//!
//! Every integer is little-endian. A segment file is a [`SegmentHeader`] of
//! [`SEGMENT_HEADER_LEN`] bytes followed by records, each starting at a multiple of
//! [`RECORD_ALIGN`] bytes:
//!
//! ```text
//! record  = frame_len:u32 kind:u8 reserved:[u8;3]=0 op_key:u64 payload:[u8] crc:u32 padding=0
//! crc     = crc32(salt:u64 || frame_len .. end of payload)
//! frame_len = 16 + payload.len() + 4           (unpadded; never 0)
//! ```

use crate::error::{HeaderProblem, RecordProblem};

/// The eight bytes every segment file starts with.
pub const SEGMENT_MAGIC: [u8; 8] = *b"WALBUFSG";
/// The one format version this crate reads and writes.
pub const FORMAT_VERSION: u16 = 1;
/// Length of the segment header; the first record starts here.
pub const SEGMENT_HEADER_LEN: u64 = 64;
/// Records start at offsets that are multiples of this.
pub const RECORD_ALIGN: u64 = 8;
/// Bytes before the payload: length, kind, reserved, op key.
pub const RECORD_HEADER_LEN: u64 = 16;
/// Bytes after the payload: the CRC32.
pub const RECORD_TRAILER_LEN: u64 = 4;
/// The smallest valid frame: a record with an empty payload.
pub const MIN_FRAME_LEN: u64 = RECORD_HEADER_LEN + RECORD_TRAILER_LEN;
/// The default limit on one record's frame length (16 MiB).
pub const DEFAULT_MAX_RECORD_BYTES: u32 = 16 * 1024 * 1024;
/// Payload length of a [`RecordKind::SyncMark`] record: the durable offset as a `u64`.
pub const SYNC_MARK_PAYLOAD_LEN: usize = 8;

/// Record kind byte of a sync mark (see [`RecordKind::SyncMark`]).
pub const KIND_SYNC_MARK: u8 = 0x80;
/// The largest kind byte available to the log's users (schemas).
pub const MAX_USER_KIND: u8 = 0x7f;

/// What a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// A user operation; the byte (1..=127) is chosen by the schema. Op records carry
    /// strictly increasing, gapless op keys.
    Op(u8),
    /// A durability mark written by the log's sync thread: its payload is a segment offset
    /// below which every byte of this segment had been made durable *before* the mark was
    /// written, and its op key is the last op key inside that durable range (0 for none).
    /// Marks do not take op keys of their own.
    SyncMark,
}

impl RecordKind {
    /// Decodes a kind byte; `None` for 0 and for reserved values.
    #[must_use]
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1..=MAX_USER_KIND => Some(Self::Op(byte)),
            KIND_SYNC_MARK => Some(Self::SyncMark),
            _ => None,
        }
    }

    /// The kind byte written to disk.
    #[must_use]
    pub fn to_byte(self) -> u8 {
        match self {
            Self::Op(byte) => byte,
            Self::SyncMark => KIND_SYNC_MARK,
        }
    }
}

/// The fixed header at the start of every segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Position of this segment in the log: each new segment takes the previous one's plus 1.
    pub sequence: u64,
    /// Op key of the first op record this segment holds (or will hold).
    pub first_op_key: u64,
    /// Random per-segment value mixed into every record checksum, so that bytes left from
    /// any other segment or an earlier use of the file can never verify here.
    pub salt: u64,
    /// The segment's preallocated size in bytes (a multiple of [`RECORD_ALIGN`]).
    pub capacity_bytes: u64,
}

impl SegmentHeader {
    /// Encodes the header into its [`SEGMENT_HEADER_LEN`] bytes.
    #[must_use]
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN as usize] {
        let mut bytes = [0_u8; SEGMENT_HEADER_LEN as usize];
        bytes[0..8].copy_from_slice(&SEGMENT_MAGIC);
        bytes[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes[10..12].copy_from_slice(&(SEGMENT_HEADER_LEN as u16).to_le_bytes());
        // 12..16: flags, zero in version 1.
        bytes[16..24].copy_from_slice(&self.sequence.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.first_op_key.to_le_bytes());
        bytes[32..40].copy_from_slice(&self.salt.to_le_bytes());
        bytes[40..48].copy_from_slice(&self.capacity_bytes.to_le_bytes());
        // 48..60: reserved, zero.
        let crc = crc32fast::hash(&bytes[0..60]);
        bytes[60..64].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Decodes and verifies a header from the start of `bytes`.
    ///
    /// # Errors
    /// A [`HeaderProblem`] saying what is wrong: too short, bad magic, an unknown version,
    /// a bad checksum or an impossible field.
    pub fn decode(bytes: &[u8]) -> Result<Self, HeaderProblem> {
        let Some(bytes) = bytes.get(..SEGMENT_HEADER_LEN as usize) else {
            return Err(HeaderProblem::Truncated {
                len_bytes: bytes.len() as u64,
            });
        };
        if bytes[0..8] != SEGMENT_MAGIC {
            return Err(HeaderProblem::BadMagic);
        }
        let version = read_u16(bytes, 8);
        let stored_crc = read_u32(bytes, 60);
        let computed_crc = crc32fast::hash(&bytes[0..60]);
        if stored_crc != computed_crc {
            // A version we do not know may use a different checksum, but a bad checksum on a
            // known version is damage: report the version first only when it is unknown.
            if version != FORMAT_VERSION {
                return Err(HeaderProblem::UnsupportedVersion { version });
            }
            return Err(HeaderProblem::Checksum {
                stored: stored_crc,
                computed: computed_crc,
            });
        }
        if version != FORMAT_VERSION {
            return Err(HeaderProblem::UnsupportedVersion { version });
        }
        let header_len = read_u16(bytes, 10);
        let flags = read_u32(bytes, 12);
        if u64::from(header_len) != SEGMENT_HEADER_LEN || flags != 0 || bytes[48..60] != [0; 12] {
            return Err(HeaderProblem::BadField { field: "flags" });
        }
        let header = Self {
            sequence: read_u64(bytes, 16),
            first_op_key: read_u64(bytes, 24),
            salt: read_u64(bytes, 32),
            capacity_bytes: read_u64(bytes, 40),
        };
        if header.first_op_key == 0 {
            return Err(HeaderProblem::BadField {
                field: "first_op_key",
            });
        }
        if header.capacity_bytes < SEGMENT_HEADER_LEN + MIN_FRAME_LEN
            || !header.capacity_bytes.is_multiple_of(RECORD_ALIGN)
        {
            return Err(HeaderProblem::BadField {
                field: "capacity_bytes",
            });
        }
        Ok(header)
    }
}

/// One record decoded from a segment, borrowing its payload from the scanned bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Byte offset of the record's first byte within its segment file.
    pub offset: u64,
    /// The op key (for a sync mark: the last op key its durable range covers).
    pub op_key: u64,
    /// What the record is.
    pub kind: RecordKind,
    /// The payload bytes.
    pub payload: &'a [u8],
}

impl Record<'_> {
    /// Bytes the record occupies in the segment, padding included.
    #[must_use]
    pub fn padded_len(&self) -> u64 {
        padded_frame_len(self.payload.len())
    }

    /// Offset just past this record (and its padding).
    #[must_use]
    pub fn end_offset(&self) -> u64 {
        self.offset + self.padded_len()
    }

    /// For a sync mark, the durable offset it claims.
    #[must_use]
    pub fn sync_mark_offset(&self) -> Option<u64> {
        match self.kind {
            RecordKind::SyncMark => self.payload.try_into().ok().map(u64::from_le_bytes),
            RecordKind::Op(_) => None,
        }
    }
}

/// Unpadded frame length of a record with a payload of `payload_len` bytes.
#[must_use]
pub fn frame_len(payload_len: usize) -> u64 {
    MIN_FRAME_LEN + payload_len as u64
}

/// Space a record with a payload of `payload_len` bytes takes in a segment, padding included.
#[must_use]
pub fn padded_frame_len(payload_len: usize) -> u64 {
    frame_len(payload_len).next_multiple_of(RECORD_ALIGN)
}

/// The fixed 16 bytes in front of a payload.
#[must_use]
pub fn encode_record_header(kind: RecordKind, op_key: u64, payload_len: usize) -> [u8; 16] {
    let frame_len = u32::try_from(frame_len(payload_len)).unwrap_or(u32::MAX);
    let mut header = [0_u8; RECORD_HEADER_LEN as usize];
    header[0..4].copy_from_slice(&frame_len.to_le_bytes());
    header[4] = kind.to_byte();
    header[8..16].copy_from_slice(&op_key.to_le_bytes());
    header
}

/// The checksum of a record: CRC32 over the segment salt, the record header and the payload.
#[must_use]
pub fn record_checksum(salt: u64, header: &[u8; 16], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&salt.to_le_bytes());
    hasher.update(header);
    hasher.update(payload);
    hasher.finalize()
}

/// The bytes that follow a payload: CRC32 then zero padding up to [`RECORD_ALIGN`].
/// Returns the buffer and how many of its bytes to write.
#[must_use]
pub fn encode_record_trailer(checksum: u32, payload_len: usize) -> ([u8; 12], usize) {
    let mut trailer = [0_u8; 12];
    trailer[0..4].copy_from_slice(&checksum.to_le_bytes());
    let len = (padded_frame_len(payload_len) - RECORD_HEADER_LEN - payload_len as u64) as usize;
    (trailer, len)
}

/// Encodes a whole record, padding included, into a new buffer.
#[must_use]
pub fn encode_record(salt: u64, kind: RecordKind, op_key: u64, payload: &[u8]) -> Vec<u8> {
    let header = encode_record_header(kind, op_key, payload.len());
    let checksum = record_checksum(salt, &header, payload);
    let (trailer, trailer_len) = encode_record_trailer(checksum, payload.len());
    let mut bytes = Vec::with_capacity(padded_frame_len(payload.len()) as usize);
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(payload);
    bytes.extend_from_slice(&trailer[..trailer_len]);
    bytes
}

/// Decodes and verifies the record at the start of `bytes`; `offset` is only recorded in
/// the result. `bytes` may extend past the record.
///
/// Never allocates and never trusts the length field beyond `max_record_bytes` and the bytes
/// actually present.
///
/// # Errors
/// A [`RecordProblem`] naming the first check that failed.
pub fn decode_record(
    bytes: &[u8],
    offset: u64,
    salt: u64,
    max_record_bytes: u32,
) -> Result<Record<'_>, RecordProblem> {
    let Some(header) = bytes.get(..RECORD_HEADER_LEN as usize) else {
        return if bytes.iter().all(|&byte| byte == 0) {
            Err(RecordProblem::Zero)
        } else {
            Err(RecordProblem::Truncated {
                frame_len: 0,
                available_bytes: bytes.len() as u64,
            })
        };
    };
    let frame_len = read_u32(header, 0);
    if frame_len == 0 {
        return Err(RecordProblem::Zero);
    }
    if u64::from(frame_len) < MIN_FRAME_LEN {
        return Err(RecordProblem::BadLength { frame_len });
    }
    if frame_len > max_record_bytes {
        return Err(RecordProblem::TooLarge {
            frame_len,
            max_bytes: max_record_bytes,
        });
    }
    let padded = u64::from(frame_len).next_multiple_of(RECORD_ALIGN);
    let Some(frame) = bytes.get(..padded as usize) else {
        return Err(RecordProblem::Truncated {
            frame_len,
            available_bytes: bytes.len() as u64,
        });
    };
    let payload_end = (u64::from(frame_len) - RECORD_TRAILER_LEN) as usize;
    let header: &[u8; 16] = frame[..16].try_into().map_err(|_| RecordProblem::Zero)?;
    let payload = &frame[16..payload_end];
    let stored = read_u32(frame, payload_end);
    let computed = record_checksum(salt, header, payload);
    if stored != computed {
        return Err(RecordProblem::Checksum { stored, computed });
    }
    if header[5..8] != [0; 3] || frame[frame_len as usize..].iter().any(|&byte| byte != 0) {
        return Err(RecordProblem::NonZeroPadding);
    }
    let kind =
        RecordKind::from_byte(header[4]).ok_or(RecordProblem::UnknownKind { kind: header[4] })?;
    if kind == RecordKind::SyncMark && payload.len() != SYNC_MARK_PAYLOAD_LEN {
        return Err(RecordProblem::BadSyncMark);
    }
    Ok(Record {
        offset,
        op_key: read_u64(header, 8),
        kind,
        payload,
    })
}

fn read_u16(bytes: &[u8], at: usize) -> u16 {
    let mut buf = [0_u8; 2];
    buf.copy_from_slice(&bytes[at..at + 2]);
    u16::from_le_bytes(buf)
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut buf = [0_u8; 4];
    buf.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(buf)
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut buf = [0_u8; 8];
    buf.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let header = SegmentHeader {
            sequence: 7,
            first_op_key: 42,
            salt: 0xdead_beef,
            capacity_bytes: 4096,
        };
        assert_eq!(SegmentHeader::decode(&header.encode()), Ok(header));
    }

    #[test]
    fn header_unknown_version_is_typed() {
        let header = SegmentHeader {
            sequence: 1,
            first_op_key: 1,
            salt: 1,
            capacity_bytes: 4096,
        };
        let mut bytes = header.encode();
        bytes[8] = 9;
        assert_eq!(
            SegmentHeader::decode(&bytes),
            Err(HeaderProblem::UnsupportedVersion { version: 9 })
        );
    }

    #[test]
    fn record_round_trip_and_alignment() {
        for len in 0..40 {
            let payload: Vec<u8> = (0..len as u8).collect();
            let bytes = encode_record(99, RecordKind::Op(3), 5, &payload);
            assert_eq!(bytes.len() as u64 % RECORD_ALIGN, 0);
            let record = decode_record(&bytes, 64, 99, DEFAULT_MAX_RECORD_BYTES).expect("valid");
            assert_eq!(record.payload, &payload[..]);
            assert_eq!(record.op_key, 5);
            assert_eq!(record.padded_len(), bytes.len() as u64);
        }
    }

    #[test]
    fn wrong_salt_never_verifies() {
        let bytes = encode_record(1, RecordKind::Op(1), 1, b"hello");
        assert!(matches!(
            decode_record(&bytes, 64, 2, DEFAULT_MAX_RECORD_BYTES),
            Err(RecordProblem::Checksum { .. })
        ));
    }

    #[test]
    fn zeroes_are_the_clean_end() {
        assert_eq!(
            decode_record(&[0; 64], 64, 1, DEFAULT_MAX_RECORD_BYTES),
            Err(RecordProblem::Zero)
        );
    }
}
