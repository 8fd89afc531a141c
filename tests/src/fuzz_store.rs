//! The `store_ops` fuzz target's check: arbitrary bytes decoded into a configuration and a
//! sequence of shape-registry ops, flushes, reopens, power losses (also in the middle of an
//! op), process crashes, torn tails and corrupted durable records, run by the crash state
//! machine ([`crate::crash_model`]) against the reference model — the same oracle as the
//! proptest `store_crash_model`, shared rather than copied.

use walbuf::SyncPolicy;

use crate::crash_model::{CrashConfig, CrashStep, run_crash_steps};
use crate::model::{Op, decode_ops};
use crate::sim::{DirectoryLoss, PowerLoss};

/// Most steps one input runs (each opens SQLite and the log at least once: keep inputs
/// quick enough for thousands of executions).
pub const MAX_STEPS: usize = 32;

/// Decodes a configuration from the first byte and steps from the rest. Every byte string
/// decodes; a truncated last step is dropped.
#[must_use]
pub fn decode_store_input(data: &[u8]) -> (CrashConfig, Vec<CrashStep>) {
    let first = data.first().copied().unwrap_or(0);
    let config = CrashConfig {
        policy: match first % 3 {
            0 => SyncPolicy::Sync,
            1 => SyncPolicy::None,
            _ => SyncPolicy::Periodic { interval_ms: 2 },
        },
        batch_ops_max: [1, 3, 5_000][usize::from(first / 3 % 3)],
        segment_size_bytes: if first / 9 % 2 == 0 { 4096 } else { 16 * 1024 },
        idle_mark_ms: if first / 18 % 2 == 0 { 1 } else { 3_600_000 },
        prepare_ahead: first / 36 % 2 == 1,
    };
    let mut bytes = data.get(1..).unwrap_or_default();
    let mut steps = Vec::new();
    while steps.len() < MAX_STEPS {
        let Some((&tag, rest)) = bytes.split_first() else {
            break;
        };
        bytes = rest;
        let step = match tag % 16 {
            0..=9 => take_op(&mut bytes).map(CrashStep::Op),
            10 => Some(CrashStep::Op(Op::Reopen)),
            11 => take_loss(&mut bytes).map(|(loss, seed)| CrashStep::PowerLoss { loss, seed }),
            12 => Some(CrashStep::ProcessCrash),
            13 => {
                let op = take_op(&mut bytes);
                let point = take(&mut bytes);
                let loss = take_loss(&mut bytes);
                match (op, point, loss) {
                    (Some(op), Some(point), Some((loss, seed))) => {
                        Some(CrashStep::PowerLossDuring {
                            // A power loss interrupts a write or a flush, not a reopen.
                            op: if op == Op::Reopen { Op::Flush } else { op },
                            point: point % 24,
                            loss,
                            seed,
                        })
                    }
                    _ => None,
                }
            }
            14 => {
                let loss = take_loss(&mut bytes);
                let offset = take(&mut bytes).zip(take(&mut bytes));
                let mask = take(&mut bytes);
                match (loss, offset, mask) {
                    (Some((loss, seed)), Some((high, low)), Some(mask)) => {
                        Some(CrashStep::CorruptTail {
                            loss,
                            seed,
                            offset: u16::from_be_bytes([high, low]),
                            mask: mask.max(1),
                        })
                    }
                    _ => None,
                }
            }
            _ => take(&mut bytes).zip(take(&mut bytes)).map(|(pick, mask)| {
                CrashStep::CorruptDurable {
                    pick: u32::from(pick),
                    mask: mask.max(1),
                }
            }),
        };
        match step {
            Some(step) => steps.push(step),
            None => break,
        }
    }
    (config, steps)
}

fn take(bytes: &mut &[u8]) -> Option<u8> {
    let (&first, rest) = bytes.split_first()?;
    *bytes = rest;
    Some(first)
}

/// One op from the model's decoder, which reads a tag and up to two field bytes.
fn take_op(bytes: &mut &[u8]) -> Option<Op> {
    let len = bytes.len().min(3);
    let op = decode_ops(&bytes[..len]).into_iter().next()?;
    // The model's decoder reads whole ops only: consume what this op used.
    let used = (1..=len)
        .find(|used| decode_ops(&bytes[..*used]).first() == Some(&op))
        .unwrap_or(len);
    *bytes = &bytes[used..];
    Some(op)
}

fn take_loss(bytes: &mut &[u8]) -> Option<(PowerLoss, u64)> {
    let losses = PowerLoss::combinations(&DirectoryLoss::IN_ORDER);
    let which = take(bytes)?;
    let seed = take(bytes)?;
    Some((losses[usize::from(which) % losses.len()], u64::from(seed)))
}

/// The `store_ops` check: runs the decoded steps against the model.
///
/// # Panics
/// When the store disagrees with the model (or loses an acknowledged op, or fails to
/// reopen), with the step and the decoded input.
pub fn check_store_ops(data: &[u8]) {
    let (config, steps) = decode_store_input(data);
    if let Err(problem) = run_crash_steps(&steps, config) {
        panic!("store_ops: {problem}\nconfig {config:?}\nsteps {steps:#?}");
    }
}
