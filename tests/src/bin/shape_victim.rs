//! The victim of the process-kill tests: opens a shape registry under `SyncPolicy::Sync` and
//! runs a concurrent workload until it is killed, printing each op to stdout *before* it is
//! submitted (`S`) and the moment it is acknowledged (`A`), one flushed line each.
//!
//! Small segments, small batches, a short flush interval and an optional slow flush
//! transaction make rotations, flush commits and segment retirements frequent, so that a
//! random SIGKILL often lands inside one of them.
//!
//! Usage: `shape_victim DIR ROUND THREADS SEED [slow-flush]`
//!
//! Output lines:
//! - `R` just before it opens the registry (recovery starts);
//! - `O <open micros> <ops replayed>` once the registry is open;
//! - `S <thread> <seq> add|remove|complete <handle>` before an op is submitted;
//! - `A <thread> <seq> <op key>` once it is acknowledged (durable);
//! - `E <message>` and exit code 3 on an unexpected error.

#![allow(clippy::print_stdout)]

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use walbuf::shapes::{NewShape, Relation, ShapeRegistry};
use walbuf::store::{ApplyHook, StoreConfig};

/// The victim's store configuration (the parent reopens with the same).
fn config(slow_flush: bool, seed: u64) -> StoreConfig {
    let rng = Arc::new(Mutex::new(StdRng::seed_from_u64(seed ^ 0x5107)));
    StoreConfig {
        apply_hook: slow_flush.then(|| {
            ApplyHook(Arc::new(move |_: &[u64]| {
                // Hold the flush transaction open a while now and then: kills land in it.
                let pause = rng.lock().random_range(0..3_000u64);
                std::thread::sleep(Duration::from_micros(pause));
                Ok(())
            }))
        }),
        ..walbuf_tests::check::kill_victim_config()
    }
}

fn say(out: &Mutex<std::io::Stdout>, line: &str) {
    let mut out = out.lock();
    // A closed pipe means the parent is gone: nothing left to report to.
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        std::process::exit(0);
    }
}

fn fail(out: &Mutex<std::io::Stdout>, message: &str) -> ! {
    say(out, &format!("E {message}"));
    std::process::exit(3);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let out = Arc::new(Mutex::new(std::io::stdout()));
    if args.len() < 5 {
        fail(
            &out,
            "usage: shape_victim DIR ROUND THREADS SEED [slow-flush]",
        );
    }
    let dir = &args[1];
    let round: u32 = args[2].parse().unwrap_or_else(|_| fail(&out, "bad ROUND"));
    let threads: u32 = args[3]
        .parse()
        .unwrap_or_else(|_| fail(&out, "bad THREADS"));
    let seed: u64 = args[4].parse().unwrap_or_else(|_| fail(&out, "bad SEED"));
    let slow_flush = args.get(5).is_some_and(|arg| arg == "slow-flush");

    say(&out, "R");
    let started = Instant::now();
    let (registry, report) = ShapeRegistry::open(dir, config(slow_flush, seed))
        .unwrap_or_else(|error| fail(&out, &format!("open failed: {error}")));
    say(
        &out,
        &format!(
            "O {} {}",
            started.elapsed().as_micros(),
            report.ops_replayed
        ),
    );
    let registry = Arc::new(registry);
    let workers: Vec<_> = (0..threads)
        .map(|thread| {
            let registry = Arc::clone(&registry);
            let out = Arc::clone(&out);
            std::thread::spawn(move || work(&registry, &out, round, thread, seed))
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
}

/// One writer: adds new shapes, removes and completes its own, forever.
fn work(
    registry: &ShapeRegistry,
    out: &Mutex<std::io::Stdout>,
    round: u32,
    thread: u32,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ (u64::from(round) << 32) ^ u64::from(thread));
    let mut live: Vec<String> = Vec::new();
    for seq in 0u64.. {
        let choice = rng.random_range(0..100);
        if choice < 70 || live.is_empty() {
            let handle = format!("r{round}-t{thread}-{seq}");
            say(out, &format!("S {thread} {seq} add {handle}"));
            let shape = NewShape {
                handle: handle.clone(),
                shape: vec![b'd'; rng.random_range(50..400)],
                comparable: format!("c-{handle}").into_bytes(),
                hash: seq as i64,
                relations: vec![
                    Relation {
                        oid: (seq % 7) as u32 + 1,
                        schema: "public".into(),
                        table: "items".into(),
                    },
                    Relation {
                        oid: 100,
                        schema: "public".into(),
                        table: "users".into(),
                    },
                ],
            };
            match registry.add_shape(shape) {
                Ok(op_key) => say(out, &format!("A {thread} {seq} {op_key}")),
                Err(error) => fail(out, &format!("add {handle}: {error}")),
            }
            live.push(handle);
        } else {
            let index = rng.random_range(0..live.len());
            let remove = choice < 85;
            let handle = if remove {
                live.swap_remove(index)
            } else {
                live[index].clone()
            };
            let verb = if remove { "remove" } else { "complete" };
            say(out, &format!("S {thread} {seq} {verb} {handle}"));
            let result = if remove {
                registry.remove_shape(&handle)
            } else {
                registry.mark_snapshot_complete(&handle)
            };
            match result {
                Ok(op_key) => say(out, &format!("A {thread} {seq} {op_key}")),
                Err(error) => fail(out, &format!("{verb} {handle}: {error}")),
            }
        }
    }
}
