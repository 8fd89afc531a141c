//! Command-line usage: bad arguments exit 2; `--help` documents the exit codes and exits 0.

use std::process::{Command, Output};

use anyhow::Context;

fn walbuf(args: &[&str]) -> anyhow::Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_walbuf"))
        .args(args)
        .output()
        .context("cannot run the walbuf binary")
}

#[test]
fn bad_arguments_exit_two() -> anyhow::Result<()> {
    for args in [
        &[][..],
        &["frobnicate"][..],
        &["verify"][..],
        &["verify", "a", "b"][..],
        &["verify", "dir", "--max-record-bytes", "lots"][..],
        &["demo", "--bogus"][..],
        &["demo", "--dir"][..],
        &["demo", "--policy", "sometimes"][..],
        &["demo", "--writers", "0"][..],
        &["inspect"][..],
        &["inspect", "a", "b"][..],
        &["dump"][..],
        &["dump", "dir", "--from", "soon"][..],
        &["recover"][..],
        &["recover", "dir", "--mode", "optimistic"][..],
        &["verify", "/nonexistent/walbuf/store"][..],
        &["inspect", "/nonexistent/walbuf/store"][..],
        &["dump", "/nonexistent/walbuf/store"][..],
        &["recover", "/nonexistent/walbuf/store"][..],
    ] {
        let output = walbuf(args)?;
        assert_eq!(
            output.status.code(),
            Some(2),
            "walbuf {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            !output.stderr.is_empty(),
            "walbuf {args:?} says what is wrong"
        );
    }
    Ok(())
}

#[test]
fn help_documents_the_exit_codes() -> anyhow::Result<()> {
    for args in [
        &["--help"][..],
        &["verify", "--help"][..],
        &["demo", "--help"][..],
        &["inspect", "--help"][..],
        &["dump", "--help"][..],
        &["recover", "--help"][..],
    ] {
        let output = walbuf(args)?;
        assert_eq!(output.status.code(), Some(0), "walbuf {args:?}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains("Exit codes:"), "walbuf {args:?}:\n{stdout}");
        assert!(
            stdout.contains("1  a check failed"),
            "walbuf {args:?}:\n{stdout}"
        );
    }
    let help = walbuf(&["--help"])?;
    let stdout = String::from_utf8_lossy(&help.stdout);
    for subcommand in ["demo", "verify", "inspect", "dump", "recover", "bench"] {
        assert!(
            stdout.contains(subcommand),
            "{subcommand} listed:\n{stdout}"
        );
    }
    assert!(
        !stdout.contains("demo-victim"),
        "the demo's child process is not listed:\n{stdout}"
    );
    Ok(())
}
