//! `walbuf bench`: throughput benchmarks (placeholder; another engineer fills this module).

/// Arguments of `walbuf bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {}

/// Runs the benchmarks.
///
/// # Errors
/// None yet.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let _ = args;
    println!("walbuf bench: not yet");
    Ok(())
}
