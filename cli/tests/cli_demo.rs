//! `walbuf demo --quick`: the burst is checked against SQLite, the child is killed with SIGKILL
//! and every acknowledged op is recovered (exit 0); with `--dir` it keeps stores that `verify`
//! finds clean and `inspect` reads, and it refuses a directory that already holds files.

mod common;

use common::{text, walbuf};

#[test]
fn quick_demo_recovers_every_acknowledged_op() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let run = walbuf(&["demo", "--quick", "--dir", text(root.path())?])?;
    assert_eq!(run.code, Some(0), "{run}");
    let stdout = &run.stdout;
    for row in [
        "acknowledged",
        "ack latency",
        "flushed",
        "peak buffer",
        "reads",
        "recovery",
    ] {
        assert!(
            stdout
                .lines()
                .any(|line| line.trim_start().starts_with(row)),
            "a {row:?} row:\n{stdout}"
        );
    }
    assert!(stdout.contains("killed with SIGKILL"), "{stdout}");
    let recovered = stdout
        .lines()
        .find(|line| line.trim_start().starts_with("recovered"))
        .unwrap_or_default();
    assert!(recovered.contains("acknowledged ops (all"), "{stdout}");
    assert!(stdout.contains("ops replayed above watermark"), "{stdout}");
    assert!(!stdout.contains("FAILED"), "{stdout}");
    assert!(stdout.contains("verified:"), "{stdout}");

    for store in ["burst", "crash"] {
        let path = root.path().join(store);
        let verified = walbuf(&["verify", text(&path)?])?;
        assert_eq!(verified.code, Some(0), "verify {store}: {verified}");
        let inspected = walbuf(&["inspect", text(&path)?])?;
        assert_eq!(inspected.code, Some(0), "inspect {store}: {inspected}");
        assert!(
            inspected.stdout.contains("pending:    0 ops"),
            "every op is in SQLite after the demo: {inspected}"
        );
    }
    Ok(())
}

#[test]
fn demo_refuses_a_directory_that_holds_files() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    std::fs::write(root.path().join("keep.txt"), b"mine")?;
    let run = walbuf(&["demo", "--quick", "--dir", text(root.path())?])?;
    assert_eq!(run.code, Some(2), "{run}");
    assert!(run.stderr.contains("is not empty"), "{run}");
    assert_eq!(std::fs::read(root.path().join("keep.txt"))?, b"mine");
    Ok(())
}
