//! # walbuf-recovery
//!
//! The on-disk contract of the walbuf log: the byte format of segment headers and records,
//! their checksums, segment file naming, the scanner that finds a segment's valid prefix and
//! tells a torn tail from corruption, the recovery [`Mode`]s, and the [`replay()`] driver that
//! feeds recovered records to a [`Sink`].
//!
//! This crate is safe code only, knows nothing of SQLite or threads, and only ever *reads*:
//! the engine (`walbuf`) writes the log and acts on the [`Report`].
//!
//! ```
//! use walbuf_recovery::format::{encode_record, RecordKind, SegmentHeader};
//! use walbuf_recovery::scanner::scan_segment;
//!
//! let header = SegmentHeader { sequence: 1, first_op_key: 1, salt: 7, capacity_bytes: 4096 };
//! let mut segment = header.encode().to_vec();
//! segment.extend(encode_record(7, RecordKind::Op(1), 1, b"hello"));
//! segment.resize(4096, 0);
//!
//! let scan = scan_segment(&segment, 1 << 20).expect("valid header");
//! assert_eq!(scan.records[0].payload, b"hello");
//! assert!(scan.damage.is_none());
//! ```
#![forbid(unsafe_code)]

pub mod error;
pub mod format;
pub mod naming;
pub mod replay;
pub mod scanner;

pub use error::{Error, HeaderProblem, RecordProblem, Result};
pub use replay::{
    Cut, DirectorySource, Mode, Options, Problem, ProblemKind, Report, SegmentSource,
    SegmentSummary, Sink, replay,
};
