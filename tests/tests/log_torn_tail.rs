//! A torn tail is cut, never mistaken for corruption: truncating the last segment file at every
//! offset inside its last op record (which also removes the sync marks written after it) or
//! inside its final sync mark gives a torn-tail cut at that record's offset and exactly the
//! valid prefix; the reopened log erases the tail, continues at the next key, and opens
//! cleanly again afterwards.

use std::path::Path;

use walbuf::SyncPolicy;
use walbuf::log::{Config, Log};
use walbuf::storage::FsStorage;
use walbuf_recovery::format::{
    DEFAULT_MAX_RECORD_BYTES, RecordKind, SEGMENT_HEADER_LEN, SegmentHeader, decode_record,
};
use walbuf_recovery::{Cut, Options, ProblemKind};
use walbuf_tests::check::{Recovered, check_gapless, open_collect, unique_payload};

fn config() -> Config {
    Config {
        segment_size_bytes: 16 * 1024,
        max_record_bytes: 4096,
        ..Config::default()
    }
}

/// Writes a closed log of a few segments under `SyncPolicy::None`: the sync thread only runs
/// at close, so the last segment's sync marks all follow its last op record.
fn write_log(dir: &Path) -> u64 {
    let mut ignore = |_: &walbuf_recovery::format::Record<'_>| Ok(());
    let (log, _) = Log::open_dir(
        dir,
        Config {
            sync_policy: SyncPolicy::None,
            ..config()
        },
        &mut ignore,
    )
    .expect("open");
    let count = 60_u64;
    for index in 0..count {
        // The last record is short, so that every offset inside it is cheap to try.
        let len = if index + 1 == count {
            45
        } else {
            300 + (index as usize * 53) % 900
        };
        log.append(1, &unique_payload(index, len)).expect("append");
    }
    assert!(log.stats().rotations >= 2, "{:?}", log.stats());
    log.close().expect("close");
    count
}

fn segment_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .into_string()
                .expect("utf-8 name")
        })
        .filter(|name| name.ends_with(".wal"))
        .collect();
    names.sort();
    names
}

/// (offset, padded length, is a sync mark) of every record of a segment.
fn records(bytes: &[u8]) -> Vec<(u64, u64, bool)> {
    let header = SegmentHeader::decode(bytes).expect("header");
    let mut records = Vec::new();
    let mut offset = SEGMENT_HEADER_LEN;
    while let Ok(record) = decode_record(
        &bytes[offset as usize..],
        offset,
        header.salt,
        DEFAULT_MAX_RECORD_BYTES,
    ) {
        records.push((
            offset,
            record.padded_len(),
            record.kind == RecordKind::SyncMark,
        ));
        offset = record.end_offset();
    }
    records
}

fn copy_log(from: &Path, to: &Path) {
    for name in segment_names(from) {
        std::fs::copy(from.join(&name), to.join(&name)).expect("copy segment");
    }
}

fn open(dir: &Path) -> (Log, walbuf_recovery::Report, Vec<Recovered>) {
    let storage = FsStorage::open(dir).expect("lock");
    open_collect(storage, config(), Options::default()).expect("a torn tail never refuses to open")
}

/// Truncates the last segment of a copy of `original` at every offset in `(start, end)` and
/// checks the cut, the prefix (`kept` records), and the log after it.
fn check_truncations(original: &Path, start: u64, end: u64, kept: u64) {
    let names = segment_names(original);
    let last = names.last().expect("segments").clone();
    let bytes = std::fs::read(original.join(&last)).expect("read");
    for truncate_at in start + 1..end {
        let dir = tempfile::tempdir().expect("tempdir");
        copy_log(original, dir.path());
        std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join(&last))
            .expect("open")
            .set_len(truncate_at)
            .expect("truncate");

        let (log, report, recovered) = open(dir.path());
        let left = &bytes[start as usize..truncate_at as usize];
        let expected_cut = left
            .iter()
            .rposition(|&byte| byte != 0)
            .map(|last_nonzero| Cut {
                segment: last.clone(),
                offset: start,
                len_bytes: last_nonzero as u64 + 1,
            });
        assert_eq!(report.cut, expected_cut, "truncated at {truncate_at}");
        if expected_cut.is_some() {
            assert!(
                matches!(report.problems.as_slice(), [problem] if matches!(problem.kind, ProblemKind::TornTail { .. })
                    && problem.offset == start && problem.segment == last),
                "truncated at {truncate_at}: {:?}",
                report.problems
            );
        } else {
            assert!(
                report.problems.is_empty(),
                "truncated at {truncate_at}: {:?}",
                report.problems
            );
        }
        assert_eq!(recovered.len() as u64, kept, "truncated at {truncate_at}");
        check_gapless(&recovered, 1).expect("gapless prefix");
        for (index, record) in recovered.iter().enumerate() {
            assert_eq!(
                record.payload[..8],
                (index as u64).to_le_bytes(),
                "record {index} intact"
            );
        }

        // The log continues after the prefix, and the erased tail never comes back.
        assert_eq!(log.append(2, b"after the cut").expect("append"), kept + 1);
        log.close().expect("close");
        drop(log);
        let (_log, report, recovered) = open(dir.path());
        assert!(
            report.problems.is_empty(),
            "clean after the cut: {:?}",
            report.problems
        );
        assert_eq!(recovered.len() as u64, kept + 1);
        assert_eq!(
            recovered.last().map(|record| record.payload.as_slice()),
            Some(&b"after the cut"[..])
        );
    }
}

#[test]
fn truncation_inside_the_last_op_record_is_a_torn_tail() {
    let original = tempfile::tempdir().expect("tempdir");
    let count = write_log(original.path());
    let names = segment_names(original.path());
    let bytes = std::fs::read(original.path().join(names.last().expect("segments"))).expect("read");
    let records = records(&bytes);
    let &(start, len, _) = records
        .iter()
        .rev()
        .find(|(_, _, mark)| !mark)
        .expect("an op record");
    assert!(
        records
            .iter()
            .any(|&(offset, _, mark)| mark && offset > start),
        "marks follow it"
    );
    check_truncations(original.path(), start, start + len, count - 1);
}

#[test]
fn truncation_inside_the_final_sync_mark_is_a_torn_tail() {
    let original = tempfile::tempdir().expect("tempdir");
    let count = write_log(original.path());
    let names = segment_names(original.path());
    let bytes = std::fs::read(original.path().join(names.last().expect("segments"))).expect("read");
    let &(start, len, mark) = records(&bytes).last().expect("records");
    assert!(mark, "a closed log ends with a sync mark");
    check_truncations(original.path(), start, start + len, count);
}
