//! `walbuf verify DIR`: exit 0 on a clean log or store written by the engine; exit 1 naming the
//! segment file and byte offset of each problem on a damaged one; read-only; refuses (exit 2)
//! a store another process has open; exit 2 when DIR is not a log.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, ensure};
use walbuf::SyncPolicy;
use walbuf::log::{Config, Log};
use walbuf_recovery::format::Record;
use walbuf_recovery::naming::sorted_segment_names;
use walbuf_recovery::scanner::scan_segment;

/// Small segments, so that a few hundred records span several of them.
const SEGMENT_SIZE_BYTES: u64 = 16 * 1024;
const MAX_RECORD_BYTES: u32 = 4 * 1024;
const RECORDS: u64 = 300;

fn walbuf(args: &[&str]) -> anyhow::Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_walbuf"))
        .args(args)
        .output()
        .context("cannot run the walbuf binary")
}

fn verify(dir: &Path) -> anyhow::Result<(Option<i32>, String, String)> {
    let dir = dir.to_str().context("temporary path is not UTF-8")?;
    let output = walbuf(&[
        "verify",
        dir,
        "--max-record-bytes",
        &MAX_RECORD_BYTES.to_string(),
    ])?;
    Ok((
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

fn config() -> Config {
    Config {
        segment_size_bytes: SEGMENT_SIZE_BYTES,
        max_record_bytes: MAX_RECORD_BYTES,
        sync_policy: SyncPolicy::Sync,
        ..Config::default()
    }
}

fn payload(index: u64) -> Vec<u8> {
    (0..100_u64).map(|byte| (index * 7 + byte) as u8).collect()
}

/// Writes `RECORDS` records with the engine and closes the log.
fn write_log(dir: &Path) -> anyhow::Result<()> {
    let mut nothing = |_: &Record<'_>| Ok(());
    let (log, _) = Log::open_dir(dir, config(), &mut nothing)?;
    for index in 0..RECORDS {
        log.append(1, &payload(index))?;
    }
    log.close()?;
    ensure!(
        log.stats().rotations >= 2,
        "the log spans at least three segments"
    );
    Ok(())
}

/// The segment files of `dir`, oldest first.
fn segments(dir: &Path) -> anyhow::Result<Vec<String>> {
    let names = std::fs::read_dir(dir)?
        .map(|entry| Ok(entry?.file_name().to_string_lossy().into_owned()))
        .collect::<anyhow::Result<Vec<String>>>()?;
    Ok(sorted_segment_names(names)
        .into_iter()
        .map(|(_, name)| name)
        .collect())
}

/// Every file of `dir` with its bytes.
fn snapshot(dir: &Path) -> anyhow::Result<BTreeMap<PathBuf, Vec<u8>>> {
    std::fs::read_dir(dir)?
        .map(|entry| {
            let path = entry?.path();
            let bytes = std::fs::read(&path)?;
            Ok((path, bytes))
        })
        .collect()
}

/// Flips one bit of the file at `offset`.
fn flip_bit(path: &Path, offset: u64) -> anyhow::Result<()> {
    let mut bytes = std::fs::read(path)?;
    let index = usize::try_from(offset)?;
    *bytes.get_mut(index).context("offset inside the file")? ^= 0x10;
    std::fs::write(path, bytes)?;
    Ok(())
}

#[test]
fn clean_log_exits_zero_with_a_summary() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write_log(dir.path())?;
    let (code, stdout, stderr) = verify(dir.path())?;
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains(&format!("records:   {RECORDS} (op keys 1..={RECORDS}")),
        "{stdout}"
    );
    let names = segments(dir.path())?;
    assert!(
        stdout.contains(&format!("segments:  {}", names.len())),
        "{stdout}"
    );
    assert!(stdout.contains("clean: no problems found"), "{stdout}");
    assert!(!stderr.contains("open in another process"), "{stderr}");
    Ok(())
}

#[test]
fn corrupted_record_names_segment_and_offset_and_changes_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write_log(dir.path())?;
    // A record in the middle of the first segment (which has successors, so all of it is
    // durable): find its offset by scanning the file, then damage a payload byte.
    let names = segments(dir.path())?;
    let name = names.first().context("a segment")?;
    let path = dir.path().join(name);
    let bytes = std::fs::read(&path)?;
    let scan =
        scan_segment(&bytes, MAX_RECORD_BYTES).map_err(|problem| anyhow::anyhow!("{problem}"))?;
    ensure!(
        scan.records.len() >= 4,
        "the first segment holds several records"
    );
    let victim = scan.records[scan.records.len() / 2];
    flip_bit(&path, victim.offset + 16 + 10)?;

    let before = snapshot(dir.path())?;
    let (code, stdout, stderr) = verify(dir.path())?;
    assert_eq!(code, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let expected = format!(
        "{name} at byte offset {}: corruption of durable bytes",
        victim.offset
    );
    assert!(
        stdout.contains(&expected),
        "expected {expected:?} in:\n{stdout}"
    );
    assert!(stdout.contains("checksum mismatch"), "{stdout}");
    // Salvage keeps every record that still verifies: one is lost, the rest are counted.
    assert!(
        stdout.contains(&format!("records:   {} ", RECORDS - 1)),
        "{stdout}"
    );
    assert_eq!(
        snapshot(dir.path())?,
        before,
        "verify must not change any file"
    );
    Ok(())
}

#[test]
fn damaged_header_of_a_later_segment_is_reported_at_offset_zero() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write_log(dir.path())?;
    let names = segments(dir.path())?;
    let name = names.get(1).context("a second segment")?;
    flip_bit(&dir.path().join(name), 20)?; // inside the sequence number
    let (code, stdout, _) = verify(dir.path())?;
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("{name} at byte offset 0: bad segment header")),
        "{stdout}"
    );
    Ok(())
}

#[test]
fn garbage_after_the_last_record_is_a_torn_tail() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write_log(dir.path())?;
    let names = segments(dir.path())?;
    let name = names.last().context("a segment")?;
    let path = dir.path().join(name);
    let mut bytes = std::fs::read(&path)?;
    let scan =
        scan_segment(&bytes, MAX_RECORD_BYTES).map_err(|problem| anyhow::anyhow!("{problem}"))?;
    let end = usize::try_from(scan.valid_end)?;
    bytes
        .get_mut(end..end + 24)
        .context("room after the last record")?
        .copy_from_slice(&[0xAB; 24]);
    std::fs::write(&path, &bytes)?;

    let (code, stdout, _) = verify(dir.path())?;
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("{name} at byte offset {end}: torn tail")),
        "{stdout}"
    );
    assert!(stdout.contains("torn tails only"), "{stdout}");
    Ok(())
}

#[test]
fn open_log_is_refused_and_keeps_its_lock() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut nothing = |_: &Record<'_>| Ok(());
    let (log, _) = Log::open_dir(dir.path(), config(), &mut nothing)?;
    for index in 0..10 {
        log.append(1, &payload(index))?;
    }
    let (code, stdout, stderr) = verify(dir.path())?;
    assert_eq!(code, Some(2), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains("is open in another process"), "{stderr}");
    assert!(stderr.contains("LOCK"), "names the lock file: {stderr}");
    // verify released whatever it took: the store is still ours, and still exclusive.
    log.append(1, &payload(10))?;
    let second = Log::open_dir(dir.path(), config(), &mut nothing);
    assert!(
        matches!(second, Err(walbuf::Error::Locked { .. })),
        "{second:?}"
    );
    log.close()?;
    Ok(())
}

#[test]
fn clean_store_exits_zero_and_reads_the_watermark() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let made = common::make_store(dir.path(), 40, 5)?;
    let run = common::walbuf(&["verify", common::text(dir.path())?])?;
    assert_eq!(run.code, Some(0), "{run}");
    assert!(
        run.stdout.contains(&format!(
            "watermark: op key {} applied to SQLite",
            made.applied
        )),
        "{run}"
    );
    let pending = made.last - made.applied;
    assert!(
        run.stdout.contains(&format!(
            "{pending} above the watermark (op keys {}..={})",
            made.applied + 1,
            made.last
        )),
        "{run}"
    );
    assert!(run.stdout.contains("clean: no problems found"), "{run}");
    // The store's log directory itself is understood as the store too.
    let log = dir.path().join(walbuf::store::LOG_DIRECTORY);
    let run = common::walbuf(&["verify", common::text(&log)?])?;
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.stdout.contains("watermark: op key"), "{run}");
    Ok(())
}

#[test]
fn corrupted_store_segment_names_segment_and_offset() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    common::make_store(dir.path(), 40, 0)?;
    let names = common::segments(dir.path())?;
    let name = names.first().context("a segment")?;
    let log_dir = dir.path().join(walbuf::store::LOG_DIRECTORY);
    let path = log_dir.join(name);
    let bytes = std::fs::read(&path)?;
    let scan =
        scan_segment(&bytes, MAX_RECORD_BYTES).map_err(|problem| anyhow::anyhow!("{problem}"))?;
    ensure!(scan.records.len() >= 4, "the segment holds several records");
    let victim = scan.records[scan.records.len() / 2];
    flip_bit(&path, victim.offset + 16 + 10)?;
    let before = snapshot(&log_dir)?;

    let run = common::walbuf(&["verify", common::text(dir.path())?])?;
    assert_eq!(run.code, Some(1), "{run}");
    let expected = format!("{name} at byte offset {}:", victim.offset);
    assert!(
        run.stdout.contains(&expected),
        "expected {expected:?} in {run}"
    );
    assert!(run.stdout.contains("checksum mismatch"), "{run}");
    assert_eq!(
        snapshot(&log_dir)?,
        before,
        "verify must not change any file"
    );
    Ok(())
}

#[test]
fn open_store_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    common::make_store(dir.path(), 5, 0)?;
    let never_fail = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (registry, _) = walbuf::ShapeRegistry::open(dir.path(), common::config(&never_fail))?;
    let run = common::walbuf(&["verify", common::text(dir.path())?])?;
    assert_eq!(run.code, Some(2), "{run}");
    assert!(run.stderr.contains("is open in another process"), "{run}");
    assert!(run.stdout.is_empty(), "{run}");
    registry.close()?;
    drop(registry);
    let run = common::walbuf(&["verify", common::text(dir.path())?])?;
    assert_eq!(run.code, Some(0), "closed again: {run}");
    Ok(())
}

#[test]
fn not_a_log_directory_exits_two() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (code, _, stderr) = verify(dir.path())?;
    assert_eq!(code, Some(2), "an empty directory: {stderr}");
    assert!(stderr.contains("no segment files"), "{stderr}");

    let (code, _, stderr) = verify(&dir.path().join("missing"))?;
    assert_eq!(code, Some(2), "a missing directory: {stderr}");

    let file = dir.path().join("file");
    std::fs::write(&file, b"x")?;
    let (code, _, stderr) = verify(&file)?;
    assert_eq!(code, Some(2), "a file: {stderr}");
    Ok(())
}

#[test]
fn later_damage_in_the_same_segment_is_located_by_the_gap_it_leaves() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write_log(dir.path())?;
    let names = segments(dir.path())?;
    let name = names.first().context("a segment")?;
    let path = dir.path().join(name);
    let bytes = std::fs::read(&path)?;
    let scan =
        scan_segment(&bytes, MAX_RECORD_BYTES).map_err(|problem| anyhow::anyhow!("{problem}"))?;
    ensure!(
        scan.records.len() >= 6,
        "the first segment holds several records"
    );
    let (first, second) = (scan.records[1], scan.records[4]);
    let after_second = scan.records[5];
    flip_bit(&path, first.offset + 16 + 3)?;
    flip_bit(&path, second.offset + 16 + 3)?;

    let (code, stdout, _) = verify(dir.path())?;
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "{name} at byte offset {}: corruption",
            first.offset
        )),
        "{stdout}"
    );
    let gap = format!(
        "{name}: op keys {key}..={key} missing before byte offset {} (op key {})",
        after_second.offset,
        after_second.op_key,
        key = second.op_key
    );
    assert!(stdout.contains(&gap), "expected {gap:?} in:\n{stdout}");
    assert!(stdout.contains("2 op keys missing in between"), "{stdout}");
    Ok(())
}

#[test]
fn log_with_retired_segments_is_clean() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write_log(dir.path())?;
    let mut nothing = |_: &Record<'_>| Ok(());
    let (log, _) = Log::open_dir(dir.path(), config(), &mut nothing)?;
    ensure!(
        log.truncate_before(RECORDS / 2)? >= 1,
        "some segments retired"
    );
    log.close()?;
    drop(log);
    let oldest = segments(dir.path())?
        .first()
        .cloned()
        .context("a segment")?;
    let first_key: u64 = oldest.trim_end_matches(".wal").parse()?;
    ensure!(
        first_key > 1,
        "the oldest segment no longer starts at op key 1"
    );

    let (code, stdout, stderr) = verify(dir.path())?;
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains(&format!("(op keys {first_key}..={RECORDS})")),
        "{stdout}"
    );
    Ok(())
}

#[test]
fn missing_middle_segment_is_reported() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write_log(dir.path())?;
    let names = segments(dir.path())?;
    ensure!(names.len() >= 3, "three segments");
    std::fs::remove_file(dir.path().join(&names[1]))?;
    let (code, stdout, _) = verify(dir.path())?;
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("{} at byte offset 0: ops missing", names[2])),
        "{stdout}"
    );
    Ok(())
}
