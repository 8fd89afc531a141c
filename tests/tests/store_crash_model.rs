//! Issue 4, proof tier 3: a proptest state machine with crashes. Random sequences of shape
//! writes over small alphabets (so duplicates, re-adds and resets are common), flushes, clean
//! reopens, power losses (every sector loss × in-order directory loss), process crashes, torn
//! tails and corrupted durable records, run on a simulated log disk with small segments and
//! small batches, and checked against the reference model after every step
//! (`walbuf_tests::crash_model`): after a crash the store holds exactly the model's state
//! after the first `p` accepted writes, where `p` is where recovery resumed — every accepted
//! write under `Sync` or after a process crash, at least what was durable or applied
//! otherwise — and the run goes on from there. Failures shrink to a minimal sequence.
//!
//! `PROPTEST_CASES=N` runs more cases (`make crash` style long runs).

use std::time::Duration;

use proptest::prelude::*;
use walbuf::SyncPolicy;
use walbuf_tests::check::{proptest_cases, within};
use walbuf_tests::crash_model::{
    CrashConfig, CrashCounts, CrashStep, crash_config_strategy, crash_step_strategy,
    run_crash_steps,
};
use walbuf_tests::model::{Op, shape};
use walbuf_tests::sim::{DirectoryLoss, PowerLoss, SectorLoss};

fn run(steps: Vec<CrashStep>, config: CrashConfig) -> Result<CrashCounts, String> {
    // A hang (a waiter never woken, a close that never returns) fails the case.
    within(Duration::from_secs(60), "crash model case", move || {
        run_crash_steps(&steps, config)
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: proptest_cases(256),
        max_shrink_iters: 2_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_crash_recovers_a_prefix_that_keeps_everything_acknowledged(
        config in crash_config_strategy(),
        steps in proptest::collection::vec(crash_step_strategy(), 1..50),
    ) {
        run(steps, config).map_err(TestCaseError::fail)?;
    }
}

fn config(policy: SyncPolicy, batch_ops_max: usize, idle_mark_ms: u64) -> CrashConfig {
    CrashConfig {
        policy,
        batch_ops_max,
        segment_size_bytes: 4096,
        idle_mark_ms,
        prepare_ahead: false,
    }
}

fn add(handle: &str, comparable: &[u8], oids: &[u32]) -> CrashStep {
    CrashStep::Op(Op::Add(shape(handle, comparable, 1, oids, 0)))
}

const DROP_ALL: CrashStep = CrashStep::PowerLoss {
    loss: PowerLoss::DROP_ALL,
    seed: 1,
};

/// Sequences that must hold whatever the random cases draw: crashes right after a reset,
/// across rotations (enough ops to fill several 4 KiB segments) and retirements, a torn tail
/// after a reset, and a corrupted durable record, under every policy.
#[test]
fn named_crash_sequences_recover_the_model_prefix() {
    let many = |prefix: &str, count: usize| -> Vec<CrashStep> {
        (0..count)
            .map(|index| {
                add(
                    &format!("{prefix}{index}"),
                    format!("{prefix}c{index}").as_bytes(),
                    &[1],
                )
            })
            .collect()
    };
    // (name, steps, at least this many corrupted durable records, torn tails garbled)
    let mut sequences: Vec<(&str, Vec<CrashStep>, u64, u64)> = vec![
        (
            "a crash right after a reset never resurrects shapes",
            vec![
                add("a", b"A", &[1]),
                add("b", b"B", &[2]),
                CrashStep::Op(Op::Flush),
                CrashStep::Op(Op::Reset),
                DROP_ALL,
                CrashStep::ProcessCrash,
                add("a", b"B", &[3]),
                CrashStep::Op(Op::Reset),
                CrashStep::ProcessCrash,
            ],
            0,
            0,
        ),
        (
            "a torn tail after buffered removes and marks",
            vec![
                add("a", b"A", &[1]),
                CrashStep::Op(Op::MarkComplete("a".into())),
                add("b", b"B", &[1]),
                CrashStep::Op(Op::Remove("a".into())),
                CrashStep::CorruptTail {
                    loss: PowerLoss {
                        sectors: SectorLoss::KeepRandom,
                        directory: DirectoryLoss::Kept,
                    },
                    seed: 7,
                    offset: 0,
                    mask: 0x5a,
                },
                add("a", b"A", &[2]),
                CrashStep::Op(Op::RemoveIncomplete),
                CrashStep::ProcessCrash,
            ],
            0,
            1,
        ),
    ];
    let mut rotations = many("r", 60);
    rotations.push(DROP_ALL);
    rotations.extend(many("s", 40));
    rotations.push(CrashStep::CorruptDurable { pick: 5, mask: 1 });
    rotations.extend(many("t", 30));
    rotations.push(CrashStep::PowerLoss {
        loss: PowerLoss {
            sectors: SectorLoss::Garbage,
            directory: DirectoryLoss::RandomPrefix,
        },
        seed: 3,
    });
    rotations.push(CrashStep::Op(Op::Reset));
    rotations.push(CrashStep::CorruptDurable {
        pick: 0,
        mask: 0x80,
    });
    // A power loss at every persistence point of one add that rotates the log, and of a
    // flush that retires segments.
    let mut mid_op = many("m", 25);
    for point in 0..12 {
        mid_op.push(CrashStep::PowerLossDuring {
            op: Op::Add(shape(&format!("x{point}"), b"X", 1, &[1], 0)),
            point,
            loss: PowerLoss::DROP_ALL,
            seed: u64::from(point),
        });
        mid_op.extend(many(&format!("y{point}_"), 3));
        mid_op.push(CrashStep::PowerLossDuring {
            op: Op::Flush,
            point,
            loss: PowerLoss {
                sectors: SectorLoss::TornAtSector,
                directory: DirectoryLoss::RandomPrefix,
            },
            seed: u64::from(point),
        });
        mid_op.push(CrashStep::Op(Op::Remove(format!("x{point}"))));
    }
    sequences.push(("power losses inside an add and a flush", mid_op, 0, 0));
    sequences.push((
        "rotations, retirements and crashes between them",
        rotations,
        1,
        0,
    ));
    for (name, steps, corruptions, torn_tails) in sequences {
        let crashes = steps
            .iter()
            .filter(|step| !matches!(step, CrashStep::Op(_)))
            .count() as u64;
        for policy in [
            SyncPolicy::Sync,
            SyncPolicy::None,
            SyncPolicy::Periodic { interval_ms: 2 },
        ] {
            for batch_ops_max in [1, 5_000] {
                for idle_mark_ms in [1, 3_600_000] {
                    let config = config(policy, batch_ops_max, idle_mark_ms);
                    // Without syncs (and with every segment retired at once), no record may be
                    // provably durable to corrupt.
                    let corruptions = if policy == SyncPolicy::Sync || batch_ops_max > 1 {
                        corruptions
                    } else {
                        0
                    };
                    let counts = run(steps.clone(), config)
                        .unwrap_or_else(|problem| panic!("{name} ({config:?}): {problem}"));
                    assert!(
                        counts.crashes == crashes
                            && counts.corruptions >= corruptions
                            && counts.torn_tails == torn_tails,
                        "{name} ({config:?}): the steps did not all happen: {counts:?}"
                    );
                    if policy == SyncPolicy::Sync {
                        assert_eq!(counts.ops_lost, 0, "{name} ({config:?}): {counts:?}");
                        let during = steps
                            .iter()
                            .any(|step| matches!(step, CrashStep::PowerLossDuring { .. }));
                        assert!(
                            !during || counts.mid_op > 0,
                            "{name} ({config:?}): no crash inside an op: {counts:?}"
                        );
                    }
                }
            }
        }
    }
}
