//! Opening refuses what it must, with typed errors: a second opener of a directory gets
//! `Locked` (and gets in once the first is gone); a segment with a bad magic, an unknown format
//! version (with or without a valid header checksum) or a damaged header gives `BadHeader`
//! naming the segment and the problem — never a guess.

use std::path::Path;

use walbuf::log::{Config, Log};
use walbuf::{Error, SyncPolicy};
use walbuf_recovery::HeaderProblem;
use walbuf_recovery::format::Record;

fn config() -> Config {
    Config {
        segment_size_bytes: 8 * 1024,
        max_record_bytes: 2048,
        sync_policy: SyncPolicy::None,
        ..Config::default()
    }
}

fn ignore() -> impl FnMut(&Record<'_>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    |_: &Record<'_>| Ok(())
}

#[test]
fn a_second_opener_is_locked_out_until_the_first_is_gone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) = Log::open_dir(dir.path(), config(), &mut ignore()).expect("open");
    log.append(1, b"first").expect("append");
    for _ in 0..2 {
        let error = Log::open_dir(dir.path(), config(), &mut ignore()).expect_err("locked");
        match &error {
            Error::Locked { path } => assert_eq!(path, dir.path()),
            other => panic!("expected Locked, got {other}"),
        }
    }
    assert_eq!(
        log.append(1, b"second").expect("the owner is unaffected"),
        2
    );
    drop(log);
    let mut count = 0;
    let mut counting = |_: &Record<'_>| {
        count += 1;
        Ok(())
    };
    let (_log, _) =
        Log::open_dir(dir.path(), config(), &mut counting).expect("the lock is released on drop");
    assert_eq!(count, 2);
}

/// Writes a closed log of three segments; returns the segment names.
fn write_log(dir: &Path) -> Vec<String> {
    let (log, _) = Log::open_dir(dir, config(), &mut ignore()).expect("open");
    while log.stats().segments < 3 {
        log.append(1, &[7; 500]).expect("append");
    }
    log.close().expect("close");
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

fn header_error(dir: &Path) -> (String, HeaderProblem) {
    let error =
        Log::open_dir(dir, config(), &mut ignore()).expect_err("a bad header refuses to open");
    match &error {
        Error::Recovery(inner) => match &**inner {
            walbuf_recovery::Error::BadHeader { segment, problem } => (segment.clone(), *problem),
            other => panic!("expected BadHeader, got {other}"),
        },
        other => panic!("expected a recovery error, got {other}"),
    }
}

/// Rewrites bytes of a segment's header; with `fix_checksum`, recomputes the header CRC.
fn patch_header(path: &Path, at: usize, bytes: &[u8], fix_checksum: bool) {
    let mut content = std::fs::read(path).expect("read");
    content[at..at + bytes.len()].copy_from_slice(bytes);
    if fix_checksum {
        let crc = crc32(&content[..60]);
        content[60..64].copy_from_slice(&crc.to_le_bytes());
    }
    std::fs::write(path, content).expect("write");
}

/// CRC32 (IEEE), bit by bit: the test does not borrow the implementation under test.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0_u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn bad_magic_is_a_typed_error_naming_the_segment() {
    for which in [0, 1, 2] {
        let dir = tempfile::tempdir().expect("tempdir");
        let names = write_log(dir.path());
        patch_header(&dir.path().join(&names[which]), 0, b"NOTAWAL!", false);
        assert_eq!(
            header_error(dir.path()),
            (names[which].clone(), HeaderProblem::BadMagic)
        );
    }
}

#[test]
fn an_unknown_format_version_is_a_typed_error() {
    for fix_checksum in [true, false] {
        for which in [0, 2] {
            let dir = tempfile::tempdir().expect("tempdir");
            let names = write_log(dir.path());
            patch_header(
                &dir.path().join(&names[which]),
                8,
                &2_u16.to_le_bytes(),
                fix_checksum,
            );
            assert_eq!(
                header_error(dir.path()),
                (
                    names[which].clone(),
                    HeaderProblem::UnsupportedVersion { version: 2 }
                ),
                "checksum fixed: {fix_checksum}"
            );
        }
    }
}

#[test]
fn a_damaged_header_is_a_checksum_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let names = write_log(dir.path());
    // The salt field of the middle segment.
    patch_header(&dir.path().join(&names[1]), 33, &[0xff], false);
    let (segment, problem) = header_error(dir.path());
    assert_eq!(segment, names[1]);
    assert!(
        matches!(problem, HeaderProblem::Checksum { .. }),
        "{problem:?}"
    );
}

#[test]
fn the_crc_in_this_test_matches_the_format() {
    // The check value of CRC-32/ISO-HDLC, so `patch_header` really fixes checksums.
    assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
}
