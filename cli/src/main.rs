//! `walbuf`: the operator's command for a walbuf store (a directory holding `log/` and
//! `walbuf.db`) or a bare log directory.
//!
//! Subcommands live in a module each (`demo`, `verify`, `inspect`, `dump`, `recover`,
//! `bench`). Every subcommand returns an [`Outcome`] or an error; `main` turns them into the
//! exit codes documented in `--help`.

// The CLI's whole job is to print for an operator: the workspace's print lints guard the
// libraries, not this binary.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod demo;
mod dump;
mod error;
mod inspect;
mod location;
mod progress;
mod recover;
mod scan;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: the engine allocates on writer threads what the
/// flusher frees, which glibc's malloc serves slowly (a third of the instructions of a
/// `Periodic` add under callgrind). An embedding application picks its own.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit codes shared by every subcommand (also listed in `--help`).
mod exit {
    /// Success: the command did what was asked and every check passed.
    pub const OK: u8 = 0;
    /// A check failed: `verify` or `dump` found problems in the log, `recover` refused what
    /// it found, or `demo` did not get back what was acknowledged.
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
  1  a check failed: `verify` or `dump` found a problem in the log, `recover` refused what it
     found, or `demo` did not get back what was acknowledged
  2  usage error (bad arguments), a refusal (not a store, the store is open in another process,
     salvage asked of `recover`), or an I/O or engine error stopped the command

Logging: set RUST_LOG (e.g. RUST_LOG=walbuf=debug) to see the engine's tracing events on stderr;
the default shows warnings and errors only (for `bench`, the flusher's errors only: its trials
fail the last batch on purpose to abandon what is still buffered).";

/// walbuf: a crash-safe, memory-mapped, segmented write-ahead log in front of SQLite.
///
/// A store directory holds `log/` (the segments and the LOCK file) and `walbuf.db` (SQLite).
#[derive(Parser, Debug)]
#[command(name = "walbuf", version, after_help = EXIT_CODES_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// A burst of shape creation on the shape registry (writers, readers, removals, marks),
    /// checked against SQLite; then the same workload in a child process killed with SIGKILL,
    /// reopened, and checked to have lost no acknowledged op.
    #[command(after_help = EXIT_CODES_HELP)]
    Demo(demo::DemoArgs),
    /// The demo's child process (internal): runs the workload and prints each acknowledged op.
    #[command(hide = true)]
    DemoVictim(demo::victim::VictimArgs),
    /// Check a store (or a bare log directory) without changing it: every segment header,
    /// record checksum and op key above SQLite's watermark. Prints a summary and one line per
    /// problem (segment file and byte offset). Refuses a store open in another process.
    #[command(after_help = EXIT_CODES_HELP)]
    Verify(verify::VerifyArgs),
    /// Show what a store holds: segments, op-key ranges, record counts, bytes, the watermark,
    /// and the ops above it (pending). Read-only.
    #[command(after_help = EXIT_CODES_HELP)]
    Inspect(inspect::InspectArgs),
    /// Print the log's records, decoded (op key, kind, payload length, the shape op), as a
    /// table or JSON lines. Read-only.
    #[command(after_help = EXIT_CODES_HELP)]
    Dump(dump::DumpArgs),
    /// Open the store with the chosen recovery mode, print the recovery report, apply the
    /// replayed ops to SQLite and close.
    #[command(after_help = EXIT_CODES_HELP)]
    Recover(recover::RecoverArgs),
    /// Measure walbuf beside the baselines a user would pick instead, run alternately in the
    /// same session and reported as ratios: log appends (vs fdatasync per append, memcpy +
    /// CRC32), shape acks (vs SQLite one transaction per op, hand-batched SQLite), sustained
    /// flush, point reads (vs an indexed SQLite lookup) and recovery.
    #[command(after_help = EXIT_CODES_HELP)]
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    install_tracing(match cli.command {
        // Bench trials abandon what is still buffered at close by failing the flusher's last
        // batch on purpose (see `bench::ack_rows`): its warnings would drown the progress
        // lines. Errors still show, and RUST_LOG overrides this.
        Command::Bench(_) => "warn,walbuf::flusher=error",
        _ => "warn",
    });
    quiet_on_closed_stdout();
    let result = match &cli.command {
        Command::Demo(args) => demo::run(args),
        Command::DemoVictim(args) => demo::victim::run(args).map(|()| Outcome::Clean),
        Command::Verify(args) => verify::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Dump(args) => dump::run(args),
        Command::Recover(args) => recover::run(args),
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

/// A reader that stops early (`walbuf inspect DIR | head`) closes stdout: `println!` then
/// panics with a broken pipe. That is the reader's choice, not an error: end quietly, as a
/// process killed by SIGPIPE would, instead of printing a panic.
fn quiet_on_closed_stdout() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(i32::from(exit::OK));
        }
        default_hook(info);
    }));
}

/// Sends `tracing` events to stderr, filtered by `RUST_LOG`, else by `default_filter`
/// (warnings and errors). Only the CLI installs a subscriber; the libraries just emit events.
fn install_tracing(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
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
