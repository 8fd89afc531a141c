//! Damage to durable bytes is detected and located, never mistaken for a torn tail:
//! * every single-bit flip of a written record in a segment that has a successor, or in the
//!   last segment below a sync mark's durable offset, makes `Log::open_with` refuse with
//!   `Corruption` naming that segment and the record's offset (proptest over record, byte and
//!   bit);
//! * a record garbled in the middle of a real log directory is reported as corruption with its
//!   segment file and offset, by `Log::open_dir` and by `replay` in `PointInTime` mode (which
//!   keeps exactly the prefix before it).

use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::sample::Index;
use walbuf::log::{Config, Log};
use walbuf::{Error, SyncPolicy};
use walbuf_recovery::format::{
    DEFAULT_MAX_RECORD_BYTES, SEGMENT_HEADER_LEN, SegmentHeader, decode_record,
};
use walbuf_recovery::scanner::scan_segment;
use walbuf_recovery::{DirectorySource, Mode, Options, ProblemKind};
use walbuf_tests::check::{Recovered, open_collect, proptest_cases, unique_payload};
use walbuf_tests::sim::SimStorage;

fn config() -> Config {
    Config {
        segment_size_bytes: 16 * 1024,
        max_record_bytes: 4096,
        ..Config::default()
    }
}

/// Writes a closed log of several segments into `dir`: runs of records under `None`
/// separated by records under `Sync`, so that sync marks are sparse.
fn write_log(dir: &std::path::Path) {
    let mut ignore = |_: &walbuf_recovery::format::Record<'_>| Ok(());
    let (log, _) = Log::open_dir(dir, config(), &mut ignore).expect("open");
    for index in 0..200_u64 {
        let payload = unique_payload(index, 20 + (index as usize * 37) % 700);
        let policy = if index % 7 == 6 {
            SyncPolicy::Sync
        } else {
            SyncPolicy::None
        };
        log.append_with(1 + (index % 127) as u8, &payload, policy)
            .expect("append");
    }
    assert!(log.stats().rotations >= 3, "{:?}", log.stats());
    log.close().expect("close");
}

/// The segment files of `dir`, sorted by name.
fn segment_files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("list")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .into_string()
                .expect("utf-8 name")
        })
        .filter(|name| name.ends_with(".wal"))
        .map(|name| {
            let bytes = std::fs::read(dir.join(&name)).expect("read segment");
            (name, bytes)
        })
        .collect();
    files.sort();
    files
}

/// A record of a segment: where it starts and how many bytes it takes.
#[derive(Debug, Clone, Copy)]
struct Place {
    segment: usize,
    offset: u64,
    len_bytes: u64,
}

/// Every record (op records and sync marks) of the valid prefix of `bytes`.
fn records(segment: usize, bytes: &[u8]) -> Vec<Place> {
    let header = SegmentHeader::decode(bytes).expect("header");
    let mut places = Vec::new();
    let mut offset = SEGMENT_HEADER_LEN;
    while let Ok(record) = decode_record(
        &bytes[offset as usize..],
        offset,
        header.salt,
        DEFAULT_MAX_RECORD_BYTES,
    ) {
        places.push(Place {
            segment,
            offset,
            len_bytes: record.padded_len(),
        });
        offset = record.end_offset();
    }
    places
}

struct Fixture {
    files: Vec<(String, Vec<u8>)>,
    /// Records whose bytes are durable for certain: every record of a segment with a
    /// successor, and the records of the last segment below its durable mark.
    durable: Vec<Place>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        write_log(dir.path());
        let files = segment_files(dir.path());
        let last = files.len() - 1;
        let mut durable = Vec::new();
        for (index, (_, bytes)) in files.iter().enumerate() {
            let places = records(index, bytes);
            if index < last {
                durable.extend(places);
            } else {
                let scan = scan_segment(bytes, DEFAULT_MAX_RECORD_BYTES).expect("scan");
                let mark = scan
                    .durable_mark
                    .expect("the last segment has a sync mark")
                    .offset;
                durable.extend(
                    places
                        .into_iter()
                        .filter(|place| place.offset + place.len_bytes <= mark),
                );
            }
        }
        let in_last = durable.iter().filter(|place| place.segment == last).count();
        assert!(
            in_last > 10,
            "the last segment must have records below its mark"
        );
        Fixture { files, durable }
    })
}

fn open_error(storage: SimStorage) -> Result<Vec<Recovered>, walbuf_recovery::Error> {
    match open_collect(storage, config(), Options::default()) {
        Ok((_, _, recovered)) => Ok(recovered),
        Err(Error::Recovery(error)) => Err(std::sync::Arc::try_unwrap(error).expect("sole owner")),
        Err(error) => panic!("unexpected error kind: {error}"),
    }
}

#[test]
fn the_intact_fixture_opens() {
    let fixture = fixture();
    let recovered =
        open_error(SimStorage::from_files(fixture.files.clone())).expect("intact log opens");
    assert_eq!(recovered.len(), 200);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(proptest_cases(256)))]

    #[test]
    fn every_bit_flip_of_a_durable_record_is_corruption(record in any::<Index>(), byte in any::<Index>(), bit in 0..8_u8) {
        let fixture = fixture();
        let place = *record.get(&fixture.durable);
        let at = place.offset + byte.index(place.len_bytes as usize) as u64;
        let storage = SimStorage::from_files(fixture.files.clone());
        let name = &fixture.files[place.segment].0;
        storage.disk().corrupt(name, at, 1 << bit).expect("corrupt");
        match open_error(storage) {
            Err(walbuf_recovery::Error::Corruption { segment, offset, .. }) => {
                prop_assert_eq!(&segment, name);
                prop_assert_eq!(offset, place.offset);
            }
            Err(other) => prop_assert!(false, "flip at {name}:{at} gave {other}"),
            Ok(_) => prop_assert!(false, "flip at {name}:{at} went unnoticed"),
        }
    }
}

/// Every byte of every durable record, one bit each (the exhaustive companion of the
/// proptest, through the recovery driver alone to stay fast).
#[test]
fn every_byte_of_every_durable_record_is_covered() {
    let fixture = fixture();
    let mut sink = |_: &walbuf_recovery::format::Record<'_>| Ok(());
    for place in &fixture.durable {
        for at in place.offset..place.offset + place.len_bytes {
            let storage = SimStorage::from_files(fixture.files.clone());
            let name = &fixture.files[place.segment].0;
            storage
                .disk()
                .corrupt(name, at, 1 << (at % 8))
                .expect("corrupt");
            match walbuf_recovery::replay(&storage, Options::default(), &mut sink) {
                Err(walbuf_recovery::Error::Corruption {
                    segment, offset, ..
                }) => {
                    assert_eq!(
                        (&segment, offset),
                        (name, place.offset),
                        "flip at {name}:{at}"
                    );
                }
                other => panic!("flip at {name}:{at}: {other:?}"),
            }
        }
    }
}

/// Garbles 8 bytes in the middle of a record, on real files.
fn garble(dir: &std::path::Path, name: &str, place: Place) {
    use std::io::{Seek, SeekFrom, Write};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join(name))
        .expect("open segment");
    file.seek(SeekFrom::Start(place.offset + place.len_bytes / 2 - 4))
        .expect("seek");
    file.write_all(&[0xa5; 8]).expect("garble");
}

#[test]
fn a_garbled_record_in_the_middle_is_reported_with_segment_and_offset() {
    for segment_choice in ["middle", "last"] {
        let dir = tempfile::tempdir().expect("tempdir");
        write_log(dir.path());
        let files = segment_files(dir.path());
        let segment = if segment_choice == "middle" {
            files.len() / 2
        } else {
            files.len() - 1
        };
        let (name, bytes) = &files[segment];
        let places = records(segment, bytes);
        let scan = scan_segment(bytes, DEFAULT_MAX_RECORD_BYTES).expect("scan");
        let place = places[places.len() / 3];
        if segment_choice == "last" {
            let mark = scan.durable_mark.expect("mark").offset;
            assert!(
                place.offset + place.len_bytes <= mark,
                "the garbled record must be durable"
            );
        }
        garble(dir.path(), name, place);

        let mut ignore = |_: &walbuf_recovery::format::Record<'_>| Ok(());
        let error = Log::open_dir(dir.path(), config(), &mut ignore)
            .expect_err("corruption refuses to open");
        let Error::Recovery(error) = &error else {
            panic!("{segment_choice}: expected a recovery error, got {error}");
        };
        match &**error {
            walbuf_recovery::Error::Corruption {
                segment, offset, ..
            } => {
                assert_eq!((segment, *offset), (name, place.offset), "{segment_choice}");
            }
            other => panic!("{segment_choice}: expected corruption, got {other}"),
        }
        assert!(
            error.to_string().contains(name),
            "the message names the file: {error}"
        );

        // Point-in-time keeps exactly the records before the damage and says what it discarded.
        let options = Options {
            mode: Mode::PointInTime,
            max_record_bytes: config().max_record_bytes,
            ..Options::default()
        };
        let mut kept = 0_u64;
        let mut count = |_: &walbuf_recovery::format::Record<'_>| {
            kept += 1;
            Ok(())
        };
        let report =
            walbuf_recovery::replay(&DirectorySource::new(dir.path()), options, &mut count)
                .expect("point-in-time tolerates corruption");
        let problem = &report.problems[0];
        assert_eq!((&problem.segment, problem.offset), (name, place.offset));
        assert!(
            matches!(problem.kind, ProblemKind::Corruption { .. }),
            "{problem}"
        );
        let cut = report.cut.as_ref().expect("a cut");
        assert_eq!((&cut.segment, cut.offset), (name, place.offset));
        let later: Vec<&String> = files[segment + 1..].iter().map(|(name, _)| name).collect();
        assert_eq!(report.discarded_segments.iter().collect::<Vec<_>>(), later);
        let before: u64 = files[..segment]
            .iter()
            .map(|(_, bytes)| {
                scan_segment(bytes, DEFAULT_MAX_RECORD_BYTES)
                    .expect("scan")
                    .records
                    .len() as u64
            })
            .sum::<u64>()
            + scan
                .records
                .iter()
                .filter(|record| record.offset < place.offset)
                .count() as u64;
        assert_eq!(kept, before, "{segment_choice}: exactly the prefix is kept");
    }
}
