//! `walbuf demo --quick`: runs every policy, verifies, exits 0; with `--dir` it keeps logs that
//! `walbuf verify` finds clean, and refuses a directory that already holds them.

use std::process::{Command, Output};

use anyhow::Context;

const RUNS: [&str; 6] = [
    "sync-1t",
    "sync-8t",
    "periodic-1t",
    "periodic-8t",
    "none-1t",
    "none-8t",
];

fn walbuf(args: &[&str]) -> anyhow::Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_walbuf"))
        .args(args)
        .output()
        .context("cannot run the walbuf binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn quick_demo_verifies_every_policy() -> anyhow::Result<()> {
    let output = walbuf(&["demo", "--quick"])?;
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&output.stderr)
    );
    for label in ["sync ", "periodic 10ms", "none "] {
        let rows = stdout
            .lines()
            .filter(|line| line.starts_with(label))
            .count();
        assert_eq!(rows, 2, "{label:?} at 1 and 8 threads:\n{stdout}");
    }
    assert!(stdout.contains("appends/sync"), "{stdout}");
    assert!(stdout.contains("recovery ms"), "{stdout}");
    assert!(!stdout.contains("FAILED"), "{stdout}");
    assert!(stdout.contains("gapless and byte-identical"), "{stdout}");
    Ok(())
}

#[test]
fn demo_logs_kept_in_dir_verify_clean() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let dir = root
        .path()
        .to_str()
        .context("temporary path is not UTF-8")?;
    let output = walbuf(&["demo", "--quick", "--dir", dir])?;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stdout));
    for run in RUNS {
        let path = root.path().join(run);
        let path = path.to_str().context("UTF-8 path")?;
        let verified = walbuf(&["verify", path, "--max-record-bytes", "65536"])?;
        assert_eq!(
            verified.status.code(),
            Some(0),
            "verify {run}:\n{}",
            text(&verified.stdout)
        );
    }
    // A second demo into the same directory would mix logs: it refuses (usage error).
    let again = walbuf(&["demo", "--quick", "--dir", dir])?;
    assert_eq!(again.status.code(), Some(2), "{}", text(&again.stdout));
    assert!(
        text(&again.stderr).contains("is not empty"),
        "{}",
        text(&again.stderr)
    );
    Ok(())
}
