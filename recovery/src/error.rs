//! Typed errors and problem descriptions of the on-disk contract.

use std::path::PathBuf;

/// What is wrong with a segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderProblem {
    /// The file is shorter than a header.
    #[error("file too short for a segment header ({len_bytes} bytes)")]
    Truncated {
        /// Bytes present.
        len_bytes: u64,
    },
    /// The file does not start with the segment magic.
    #[error("not a walbuf segment (bad magic)")]
    BadMagic,
    /// The segment was written by a format version this build does not know.
    #[error("unsupported segment format version {version}")]
    UnsupportedVersion {
        /// The version found.
        version: u16,
    },
    /// The header checksum does not match.
    #[error("segment header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        /// Checksum stored in the header.
        stored: u32,
        /// Checksum of the bytes present.
        computed: u32,
    },
    /// A field holds a value no writer produces.
    #[error("segment header field `{field}` is invalid")]
    BadField {
        /// Name of the field.
        field: &'static str,
    },
}

/// Why the bytes at some offset are not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordProblem {
    /// A zero length field: preallocated space that was never written.
    #[error("zero length (unwritten space)")]
    Zero,
    /// A length below the smallest frame.
    #[error("invalid record length {frame_len}")]
    BadLength {
        /// The length field.
        frame_len: u32,
    },
    /// A length above the configured maximum record size.
    #[error("record length {frame_len} exceeds the maximum of {max_bytes} bytes")]
    TooLarge {
        /// The length field.
        frame_len: u32,
        /// The configured limit.
        max_bytes: u32,
    },
    /// The record runs past the end of the file.
    #[error(
        "record of {frame_len} bytes runs past the end of the file ({available_bytes} bytes left)"
    )]
    Truncated {
        /// The length field (0 when not even the header fits).
        frame_len: u32,
        /// Bytes left in the file.
        available_bytes: u64,
    },
    /// The checksum does not match the bytes.
    #[error("record checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        /// Checksum stored in the record.
        stored: u32,
        /// Checksum of the bytes present.
        computed: u32,
    },
    /// Reserved bytes or alignment padding are not zero.
    #[error("non-zero reserved or padding bytes")]
    NonZeroPadding,
    /// A kind byte that no writer produces.
    #[error("unknown record kind {kind:#04x}")]
    UnknownKind {
        /// The kind byte.
        kind: u8,
    },
    /// A sync mark with a malformed payload or an impossible claim.
    #[error("malformed sync mark")]
    BadSyncMark,
    /// A checksummed op record whose op key breaks the gapless sequence.
    #[error("op key {found} where {expected} was expected")]
    KeyOutOfSequence {
        /// The key the sequence calls for.
        expected: u64,
        /// The key found.
        found: u64,
    },
}

/// Errors of the recovery crate: each names the segment file and, where it applies, the byte
/// offset of the problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading a file or listing the directory failed.
    #[error("I/O error on {path}: {source}", path = path.display())]
    Io {
        /// File or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A segment header is unreadable.
    #[error("segment {segment}: bad header: {problem}")]
    BadHeader {
        /// Segment file name.
        segment: String,
        /// What is wrong.
        problem: HeaderProblem,
    },
    /// Bytes that had been made durable are damaged.
    #[error("segment {segment}: corruption at byte offset {offset}: {problem}")]
    Corruption {
        /// Segment file name.
        segment: String,
        /// Byte offset of the damaged record.
        offset: u64,
        /// What is wrong there.
        problem: RecordProblem,
    },
    /// `Strict` mode found a torn tail (it tolerates nothing).
    #[error(
        "segment {segment}: torn tail at byte offset {offset} ({len_bytes} bytes) in strict mode"
    )]
    TornTailInStrictMode {
        /// Segment file name.
        segment: String,
        /// Offset of the first byte that is not a valid record.
        offset: u64,
        /// Bytes from there to the last non-zero byte.
        len_bytes: u64,
    },
    /// Ops are provably missing: a gap in op keys, a lost segment, or a log that ends below an
    /// op key a durable mark says was written.
    #[error("ops missing: expected op key {expected}, found {found} ({context})")]
    MissingOps {
        /// The op key that should come next.
        expected: u64,
        /// What was found instead (0 for nothing).
        found: u64,
        /// Where: segment name or a description.
        context: String,
    },
    /// A segment's name and header disagree, or sequence numbers are not consecutive.
    #[error("segment {segment}: {problem}")]
    Inconsistent {
        /// Segment file name.
        segment: String,
        /// What disagrees.
        problem: &'static str,
    },
    /// The replay sink refused a record.
    #[error("replay of op key {op_key} failed: {source}")]
    Sink {
        /// The op key being replayed.
        op_key: u64,
        /// The sink's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The recovery crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
