//! The shape registry against a plain in-memory model (`walbuf_tests::model`): random op
//! sequences over small alphabets of handles, comparables and oids (so that duplicates,
//! re-adds and removes of the same handle are common), interleaved with flushes and with
//! close + reopen; after every step every read agrees with the model, and after every flush
//! SQLite's own tables do.
//!
//! Each case picks a sync policy and a batch size: with a batch of 1 or 3 ops the flusher
//! also runs in the background, between and during the steps, and splits the ops into
//! batches at every possible point.

use std::time::Duration;

use proptest::prelude::*;
use walbuf::SyncPolicy;
use walbuf_tests::check::{proptest_cases, within};
use walbuf_tests::model::{Harness, Op, op_strategy, run_ops, shape};

fn policy() -> impl Strategy<Value = SyncPolicy> {
    prop_oneof![
        3 => Just(SyncPolicy::None),
        1 => Just(SyncPolicy::Sync),
        1 => Just(SyncPolicy::Periodic { interval_ms: 2 }),
    ]
}

fn run(ops: Vec<Op>, policy: SyncPolicy, batch_ops_max: usize) -> Result<(), TestCaseError> {
    // A hang (a waiter never woken) fails the case instead of stalling the suite.
    within(Duration::from_secs(120), "model case", move || {
        run_ops(&ops, Harness::config(policy, batch_ops_max))
    })
    .map_err(TestCaseError::fail)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: proptest_cases(48),
        max_shrink_iters: 2_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_read_agrees_with_the_model_after_every_step(
        policy in policy(),
        batch_ops_max in prop_oneof![Just(1usize), Just(3), Just(5_000)],
        ops in proptest::collection::vec(op_strategy(true), 1..60),
    ) {
        run(ops, policy, batch_ops_max)?;
    }
}

/// The sequences the issue names, spelled out: they run in every test run, whatever the
/// random cases draw.
#[test]
fn named_sequences_agree_with_the_model() {
    let add = |handle: &str, comparable: &[u8], oids: &[u32]| {
        Op::Add(shape(handle, comparable, 1, oids, 0))
    };
    let sequences: Vec<(&str, Vec<Op>)> = vec![
        (
            "re-add a comparable while its removal is buffered, flushed at every point",
            vec![
                add("h1", b"C", &[5]),
                Op::Flush,
                Op::Remove("h1".into()),
                add("h2", b"C", &[5]),
                Op::Flush,
                Op::Remove("h2".into()),
                add("h1", b"C", &[6]),
                Op::Reopen,
                add("h2", b"C", &[]),
            ],
        ),
        (
            "re-add the same handle with another comparable across a flushed add",
            vec![
                add("h1", b"C", &[1, 1, 2]),
                Op::MarkComplete("h1".into()),
                Op::Flush,
                Op::Remove("h1".into()),
                add("h1", b"D", &[2]),
                add("h2", b"C", &[1]),
                Op::MarkStarted("h1".into()),
                Op::Flush,
                Op::Reopen,
            ],
        ),
        (
            "reset between a flushed add and a buffered one, then the sweep",
            vec![
                add("a", b"A", &[1]),
                add("b", b"B", &[1]),
                Op::MarkComplete("b".into()),
                Op::Flush,
                Op::Reset,
                add("b", b"A", &[2]),
                Op::MarkComplete("b".into()),
                add("c", b"B", &[1]),
                Op::RemoveIncomplete,
                Op::Reopen,
                Op::Reset,
                Op::Reset,
                Op::Flush,
            ],
        ),
    ];
    for (name, ops) in sequences {
        for batch_ops_max in [1, 2, 5_000] {
            for policy in [SyncPolicy::None, SyncPolicy::Sync] {
                if let Err(problem) = run_ops(&ops, Harness::config(policy, batch_ops_max)) {
                    panic!("{name} (batch {batch_ops_max}, {policy:?}): {problem}");
                }
            }
        }
    }
}
