//! `walbuf`: the operator's command for a walbuf log directory.
//!
//! Subcommands live in a module each (`demo`, `verify`, `bench`). Every subcommand returns
//! an [`Outcome`] or an error; `main` turns them into the exit codes documented in `--help`.

// The CLI's whole job is to print for an operator: the workspace's print lints guard the
// libraries, not this binary.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod demo;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit codes shared by every subcommand (also listed in `--help`).
mod exit {
    /// Success: the command did what was asked and every check passed.
    pub const OK: u8 = 0;
    /// A check failed: `verify` found problems, or `demo` could not verify what it wrote.
    pub const CHECK_FAILED: u8 = 1;
    /// A usage error (bad arguments) or an I/O or engine error that stopped the command.
    pub const ERROR: u8 = 2;
}

/// What a subcommand concluded, when it ran to the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Every check passed.
    Clean,
    /// A check failed (the subcommand has already said what and where).
    CheckFailed,
}

const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success: every check passed
  1  a check failed: `verify` found a problem in the log, or `demo` did not get back what it wrote
  2  usage error (bad arguments), or an I/O or engine error stopped the command

Logging: set RUST_LOG (e.g. RUST_LOG=walbuf=debug) to see the engine's tracing events on stderr;
the default shows warnings and errors only.";

/// walbuf: a crash-safe, memory-mapped, segmented write-ahead log in front of SQLite.
#[derive(Parser, Debug)]
#[command(name = "walbuf", version, after_help = EXIT_CODES_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Append records from several threads in each sync policy, reopen (recovery), check
    /// that every acknowledged record came back, and print a table.
    #[command(after_help = EXIT_CODES_HELP)]
    Demo(demo::DemoArgs),
    /// Check a log directory without changing it: every segment header, record checksum and
    /// op key. Prints a summary and one line per problem (segment file and byte offset).
    #[command(after_help = EXIT_CODES_HELP)]
    Verify(verify::VerifyArgs),
    /// Measure append throughput and latency per sync policy and writer count, beside
    /// baselines run alternately in the same session (fdatasync per append, memcpy + CRC32),
    /// reported as ratios.
    #[command(after_help = EXIT_CODES_HELP)]
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    install_tracing();
    let result = match &cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Bench(args) => bench::run(args).map(|()| Outcome::Clean),
    };
    match result {
        Ok(Outcome::Clean) => ExitCode::from(exit::OK),
        Ok(Outcome::CheckFailed) => ExitCode::from(exit::CHECK_FAILED),
        Err(error) => {
            eprintln!("walbuf: error: {error:#}");
            ExitCode::from(exit::ERROR)
        }
    }
}

/// Sends `tracing` events to stderr, filtered by `RUST_LOG` (default: warnings and errors).
/// Only the CLI installs a subscriber; the libraries just emit events.
fn install_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Fails only if a subscriber is already installed, which nothing here does.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
