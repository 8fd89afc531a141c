//! `walbuf inspect`, `dump` and `recover` on small stores made with the library: a store whose
//! last ops never reached SQLite (they wait in the log above the watermark) is inspected,
//! dumped (text and JSON), and recovered; recovery modes refuse what they must.

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use common::{make_store, text, walbuf};
use walbuf::store::{DATABASE_FILE, LOG_DIRECTORY};
use walbuf_recovery::scanner::scan_segment;

#[test]
fn inspect_shows_segments_watermark_and_pending_ops() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let made = make_store(dir.path(), 300, 7)?;
    assert!(made.last == made.applied + 7, "{made:?}");
    let run = walbuf(&["inspect", text(dir.path())?])?;
    assert_eq!(run.code, Some(0), "{run}");
    assert!(
        run.stdout.contains(&format!(
            "watermark:  op key {} applied to SQLite; 299 live entities",
            made.applied
        )),
        "{run}"
    );
    assert!(
        run.stdout.contains(&format!(
            "pending:    7 ops above the watermark (op keys {}..={}: add 7)",
            made.applied + 1,
            made.last
        )),
        "{run}"
    );
    assert!(run.stdout.contains("free: the store is closed"), "{run}");
    // One table row per segment, each naming its file.
    for name in common::segments(dir.path())? {
        assert!(run.stdout.contains(&name), "{name} listed: {run}");
    }
    Ok(())
}

#[test]
fn dump_decodes_every_record_as_text_and_json() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let made = make_store(dir.path(), 20, 3)?;
    let path = text(dir.path())?;

    let run = walbuf(&["dump", path])?;
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.stdout.contains("add \"shape-0000\" hash 0"), "{run}");
    assert!(run.stdout.contains("mark \"shape-0000\" complete"), "{run}");
    assert!(run.stdout.contains("remove \"shape-0001\""), "{run}");
    assert!(run.stdout.contains("pending"), "{run}");
    // A header and one line per op still in the log.
    let first_key: u64 = common::segments(dir.path())?
        .first()
        .context("a segment")?
        .trim_end_matches(".wal")
        .parse()?;
    let records = made.last - first_key + 1;
    assert_eq!(run.stdout.lines().count() as u64, records + 1, "{run}");

    let from = made.applied + 1;
    let run = walbuf(&["dump", path, "--json", "--from", &from.to_string()])?;
    assert_eq!(run.code, Some(0), "{run}");
    let lines: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), 3, "{run}");
    for (offset, line) in (0_u64..).zip(&lines) {
        assert_eq!(line["op_key"], from + offset, "{line}");
        assert_eq!(line["kind_name"], "add");
        assert_eq!(line["state"], "pending");
        assert_eq!(line["op"]["type"], "add");
        assert_eq!(line["op"]["handle"], format!("shape-{:04}", 20 + offset));
        assert_eq!(line["op"]["relations"][0]["schema"], "public");
        assert!(
            line["segment"]
                .as_str()
                .is_some_and(|segment| segment.ends_with(".wal"))
        );
    }
    // The live count after the op (the core's prefix): 19 live before the pending adds.
    assert_eq!(lines[0]["live_count"], 20);
    Ok(())
}

#[test]
fn recover_replays_pending_ops_into_sqlite() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let made = make_store(dir.path(), 30, 4)?;
    let run = walbuf(&["recover", text(dir.path())?])?;
    assert_eq!(run.code, Some(0), "{run}");
    assert!(
        run.stdout
            .contains(&format!("4 ops replayed above watermark {}", made.applied)),
        "{run}"
    );
    assert!(
        run.stdout.contains(&format!(
            "SQLite holds every op up to op key {} (33 live shapes)",
            made.last
        )),
        "{run}"
    );
    let meta =
        walbuf::sqlite::peek_meta(&dir.path().join(DATABASE_FILE))?.context("walbuf tables")?;
    assert_eq!(meta.applied_op_key, made.last);
    let run = walbuf(&["inspect", text(dir.path())?])?;
    assert!(run.stdout.contains("pending:    0 ops"), "{run}");
    Ok(())
}

/// Writes garbage right after the last record of the store's last segment: a torn tail.
fn tear_tail(store: &std::path::Path) -> anyhow::Result<(String, u64)> {
    let name = common::segments(store)?
        .last()
        .context("a segment")?
        .clone();
    let path = store.join(LOG_DIRECTORY).join(&name);
    let mut bytes = std::fs::read(&path)?;
    let valid_end = scan_segment(&bytes, 1 << 20)
        .map_err(|problem| anyhow::anyhow!("{problem}"))?
        .valid_end;
    let end = usize::try_from(valid_end)?;
    bytes
        .get_mut(end..end + 24)
        .context("room after the last record")?
        .copy_from_slice(&[0xAB; 24]);
    std::fs::write(&path, &bytes)?;
    Ok((name, valid_end))
}

#[test]
fn strict_refuses_a_torn_tail_that_the_default_mode_cuts() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    make_store(dir.path(), 10, 2)?;
    let (segment, offset) = tear_tail(dir.path())?;
    let path = text(dir.path())?;

    let run = walbuf(&["recover", path, "--mode", "strict"])?;
    assert_eq!(run.code, Some(1), "{run}");
    assert!(
        run.stdout.contains(&segment) && run.stdout.contains(&offset.to_string()),
        "names segment {segment} and offset {offset}: {run}"
    );

    let run = walbuf(&["recover", path, "--mode", "tolerate-torn-tail"])?;
    assert_eq!(run.code, Some(0), "{run}");
    assert!(
        run.stdout
            .contains(&format!("cut from {segment} at byte offset {offset}")),
        "{run}"
    );
    assert!(run.stdout.contains("2 ops replayed"), "{run}");
    let run = walbuf(&["verify", path])?;
    assert_eq!(run.code, Some(0), "the tail was cut: {run}");
    Ok(())
}

#[test]
fn recover_refuses_salvage_an_open_store_and_a_non_store() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    make_store(dir.path(), 3, 0)?;
    let path = text(dir.path())?;

    let run = walbuf(&["recover", path, "--mode", "salvage"])?;
    assert_eq!(run.code, Some(2), "{run}");
    assert!(
        run.stderr.contains("salvage mode cannot open a store"),
        "{run}"
    );

    let never_fail = Arc::new(AtomicBool::new(false));
    let (registry, _) = walbuf::ShapeRegistry::open(dir.path(), common::config(&never_fail))?;
    let run = walbuf(&["recover", path])?;
    assert_eq!(run.code, Some(2), "{run}");
    assert!(run.stderr.contains("open in another process"), "{run}");
    registry.close()?;
    drop(registry);

    let empty = tempfile::tempdir()?;
    let run = walbuf(&["recover", text(empty.path())?])?;
    assert_eq!(run.code, Some(2), "{run}");
    assert!(run.stderr.contains("is not a walbuf store"), "{run}");
    assert!(
        std::fs::read_dir(empty.path())?.next().is_none(),
        "recover created nothing"
    );
    Ok(())
}

#[test]
fn inspect_and_dump_read_a_bare_log_directory() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    make_store(dir.path(), 5, 0)?;
    std::fs::remove_file(dir.path().join(DATABASE_FILE))?;
    let log = dir.path().join(LOG_DIRECTORY);
    // Without walbuf.db beside it, the log directory is a bare log.
    let moved = tempfile::tempdir()?;
    let bare = moved.path().join("segments");
    std::fs::rename(&log, &bare)?;
    let run = walbuf(&["inspect", text(&bare)?])?;
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.stdout.contains("log directory:"), "{run}");
    assert!(run.stdout.contains("watermark:  unknown"), "{run}");
    let run = walbuf(&["dump", text(&bare)?, "--json"])?;
    assert_eq!(run.code, Some(0), "{run}");
    // 5 adds, a mark and a removal.
    assert_eq!(run.stdout.lines().count(), 7, "{run}");
    assert!(run.stdout.contains("\"state\":\"-\""), "{run}");
    Ok(())
}

/// A reader that closes the pipe early (`walbuf inspect DIR | head`) ends the command quietly:
/// no panic on the broken pipe, exit 0.
#[test]
fn a_closed_stdout_ends_inspect_and_verify_quietly() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    make_store(dir.path(), 20, 3)?;
    for command in ["inspect", "verify"] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_walbuf"))
            .args([command, text(dir.path())?])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        // Close the reading end before the command writes anything.
        drop(child.stdout.take());
        let output = child.wait_with_output()?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{command}: {stderr}");
        assert_eq!(output.status.code(), Some(0), "{command}: {stderr}");
    }
    Ok(())
}
