//! `walbuf demo-victim` (hidden): the child process of the demo's crash run. It runs the shape
//! workload on the store in `--dir` and prints one line per acknowledged op, the moment it is
//! acknowledged, flushed line by line:
//!
//! ```text
//! <writer> <step position in the writer's plan> <op key> <step name> <handle>
//! ```
//!
//! The parent kills it with SIGKILL. It stops by itself when its stdout is closed (the parent
//! is gone) or after [`DEADLINE`].

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use walbuf::ShapeRegistry;

use super::PolicyArg;
use super::plan::{self, Step};
use super::workload::{self, Settings};

/// A victim nobody kills stops after this long.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Arguments of `walbuf demo-victim`.
#[derive(clap::Args, Debug)]
pub struct VictimArgs {
    /// The store directory.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// The store's sync policy.
    #[arg(long, value_enum, default_value_t = PolicyArg::Sync)]
    pub policy: PolicyArg,
    /// Writer threads.
    #[arg(long, default_value_t = 8)]
    pub writers: u32,
    /// Reader threads.
    #[arg(long, default_value_t = 2)]
    pub readers: u32,
    /// Size of each log segment, in MiB.
    #[arg(long, default_value_t = 16)]
    pub segment_mib: u64,
}

/// Runs the victim until it is killed, its stdout closes, or the deadline passes.
///
/// # Errors
/// The store cannot be opened, an op failed, or stdout failed.
pub fn run(args: &VictimArgs) -> anyhow::Result<()> {
    let settings = Settings {
        policy: args.policy.policy(),
        writers: args.writers,
        readers: args.readers,
        segment_size_bytes: args.segment_mib << 20,
    };
    let (registry, _report) = ShapeRegistry::open(&args.dir, workload::store_config(&settings))
        .with_context(|| format!("cannot open the store in {}", args.dir.display()))?;
    let stop = AtomicBool::new(false);
    let print = |writer: u32, position: u64, op_key: u64, step: Step| {
        let line = format!(
            "{writer} {position} {op_key} {} {}\n",
            step.name(),
            plan::handle(writer, step.index())
        );
        let mut out = std::io::stdout().lock();
        out.write_all(line.as_bytes())?;
        out.flush()
    };
    let result = std::thread::scope(|scope| {
        scope.spawn(|| {
            let started = std::time::Instant::now();
            while !stop.load(Ordering::SeqCst) && started.elapsed() < DEADLINE {
                std::thread::sleep(Duration::from_millis(50));
            }
            stop.store(true, Ordering::SeqCst);
        });
        let result = workload::run(&registry, &settings, u32::MAX, &stop, &print);
        stop.store(true, Ordering::SeqCst);
        result
    });
    registry.close().context("closing the store failed")?;
    result.map(|_| ())
}
