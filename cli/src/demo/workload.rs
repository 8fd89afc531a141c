//! The demo's workload: concurrent appends into a fresh log, then a reopen (recovery) that
//! must hand back every acknowledged record, gapless and byte-identical.
//!
//! Payloads are reproducible from `(thread, sequence)`, so verification keeps only which
//! thread and sequence number each acknowledged op key belongs to, not the bytes.

use std::path::Path;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use walbuf::SyncPolicy;
use walbuf::log::{Config, Log, Stats};
use walbuf_recovery::format::{Record, RecordKind};

/// Bytes of every payload the demo appends.
pub const PAYLOAD_BYTES: usize = 256;
/// The record kind the demo's records carry.
const DEMO_KIND: u8 = 1;
/// Largest record frame the demo's logs accept: far above its payloads, and small enough to
/// fit any segment size the demo uses.
const MAX_RECORD_BYTES: u32 = 64 * 1024;
/// At most this many verification failures are described; the rest are only counted.
const MISMATCHES_DESCRIBED_MAX: usize = 5;

/// One run of the workload: a sync policy, a number of writer threads, a number of records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scenario {
    /// The log's sync policy.
    pub policy: SyncPolicy,
    /// Writer threads appending concurrently.
    pub threads: u32,
    /// Records appended in total (split evenly across the threads).
    pub records: u32,
    /// Size of each segment file.
    pub segment_size_bytes: u64,
}

/// What one run measured and found.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// The scenario run.
    pub scenario: Scenario,
    /// Wall time from the first append to the last acknowledgement.
    pub append_elapsed: Duration,
    /// The log's counters after close.
    pub stats: Stats,
    /// Wall time of the reopen (recovery scan, checks and replay into the verifier).
    pub recovery_elapsed: Duration,
    /// Records recovery handed back.
    pub records_recovered: u64,
    /// Every way in which what came back differs from what was acknowledged (empty: verified).
    pub mismatches: Vec<String>,
    /// Mismatches found in total (only the first few are described).
    pub mismatch_count: u64,
}

impl Measurement {
    /// Acknowledged appends per second.
    #[must_use]
    pub fn ops_per_second(&self) -> f64 {
        f64::from(self.scenario.records) / self.append_elapsed.as_secs_f64().max(1e-9)
    }

    /// Record bytes (frames with padding) appended per second, in MB (10^6 bytes).
    #[must_use]
    pub fn megabytes_per_second(&self) -> f64 {
        self.stats.bytes_appended as f64 / 1e6 / self.append_elapsed.as_secs_f64().max(1e-9)
    }

    /// Appends covered by one sync, on average (`None` when the log never synced).
    #[must_use]
    pub fn appends_per_sync(&self) -> Option<f64> {
        (self.stats.syncs > 0).then(|| self.stats.appends as f64 / self.stats.syncs as f64)
    }

    /// Whether every acknowledged record came back.
    #[must_use]
    pub fn verified(&self) -> bool {
        self.mismatch_count == 0
    }
}

/// A 512-byte filler, the same on every run, that payloads take windows of.
fn filler() -> [u8; 2 * PAYLOAD_BYTES] {
    let mut state: u64 = 0x5741_4c42_5546_0001; // "WALBUF", 1
    let mut bytes = [0_u8; 2 * PAYLOAD_BYTES];
    for chunk in bytes.chunks_exact_mut(8) {
        // splitmix64
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    bytes
}

/// The payload of the `sequence`-th record of writer `thread`: its identity in the first
/// 8 bytes, then a window of the filler that shifts with the identity.
fn payload(
    filler: &[u8; 2 * PAYLOAD_BYTES],
    thread: u32,
    sequence: u32,
    out: &mut [u8; PAYLOAD_BYTES],
) {
    const IDENTITY: usize = 8;
    let shift = (sequence
        .wrapping_mul(31)
        .wrapping_add(thread.wrapping_mul(7))
        % PAYLOAD_BYTES as u32) as usize;
    let (identity, rest) = out.split_at_mut(IDENTITY);
    identity[..4].copy_from_slice(&thread.to_le_bytes());
    identity[4..].copy_from_slice(&sequence.to_le_bytes());
    rest.copy_from_slice(&filler[shift..shift + PAYLOAD_BYTES - IDENTITY]);
}

/// The log configuration of a scenario.
#[must_use]
pub fn config(scenario: &Scenario) -> Config {
    Config {
        segment_size_bytes: scenario.segment_size_bytes,
        max_record_bytes: MAX_RECORD_BYTES,
        sync_policy: scenario.policy,
        ..Config::default()
    }
}

/// Runs `scenario` in `dir`, which must hold no log yet: appends, closes, reopens, verifies.
///
/// # Errors
/// The directory already holds files, or the log failed (open, append, close).
pub fn run(dir: &Path, scenario: Scenario) -> anyhow::Result<Measurement> {
    if std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .next()
        .is_some()
    {
        bail!(
            "{} is not empty: the demo writes fresh logs, give it an empty directory",
            dir.display()
        );
    }
    let config = config(&scenario);
    let filler = filler();

    let mut nothing_to_replay = |_: &Record<'_>| Ok(());
    let (log, _report) = Log::open_dir(dir, config.clone(), &mut nothing_to_replay)
        .with_context(|| format!("cannot open a log in {}", dir.display()))?;
    let (owners, append_elapsed) = append_concurrently(&log, &scenario, &filler)?;
    log.close().context("closing the log failed")?;
    let stats = log.stats();
    drop(log);

    let mut verifier = Verifier::new(&owners, &filler);
    let started = Instant::now();
    let (reopened, report) = Log::open_dir(dir, config, &mut |record: &Record<'_>| {
        verifier.check(record);
        Ok(())
    })
    .with_context(|| format!("reopening (recovering) the log in {} failed", dir.display()))?;
    let recovery_elapsed = started.elapsed();
    reopened
        .close()
        .context("closing the reopened log failed")?;
    drop(reopened);

    let mut mismatches = verifier.finish(&owners);
    for problem in &report.problems {
        mismatches.push(format!(
            "recovery reported a problem after a clean close: {problem}"
        ));
    }
    let mismatch_count = verifier.mismatch_count + report.problems.len() as u64;
    Ok(Measurement {
        scenario,
        append_elapsed,
        stats,
        recovery_elapsed,
        records_recovered: verifier.records,
        mismatches,
        mismatch_count,
    })
}

/// Who wrote each op key: `owners[op_key - 1] = (thread, sequence)`.
type Owners = Vec<(u32, u32)>;

/// What one writer thread did: the op keys acknowledged to it in order, and when it started
/// and finished appending.
type WriterOutcome = Result<(Vec<u64>, Instant, Instant), walbuf::Error>;

/// Appends `scenario.records` records from `scenario.threads` threads; returns who owns each
/// acknowledged op key, and the wall time of the appends.
fn append_concurrently(
    log: &Log,
    scenario: &Scenario,
    filler: &[u8; 2 * PAYLOAD_BYTES],
) -> anyhow::Result<(Owners, Duration)> {
    let threads = scenario.threads.max(1);
    let start = Barrier::new(threads as usize);
    let failed = AtomicBool::new(false);
    let results: Vec<(u32, WriterOutcome)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let share =
                    scenario.records / threads + u32::from(thread < scenario.records % threads);
                let (start, failed) = (&start, &failed);
                scope.spawn(move || {
                    let mut keys = Vec::with_capacity(share as usize);
                    let mut buffer = [0_u8; PAYLOAD_BYTES];
                    start.wait();
                    let began = Instant::now();
                    for sequence in 0..share {
                        if failed.load(Ordering::Relaxed) {
                            break;
                        }
                        payload(filler, thread, sequence, &mut buffer);
                        match log.append(DEMO_KIND, &buffer) {
                            Ok(key) => keys.push(key),
                            Err(error) => {
                                failed.store(true, Ordering::Relaxed);
                                return (thread, Err(error));
                            }
                        }
                    }
                    (thread, Ok((keys, began, Instant::now())))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });

    let total = scenario.records as usize;
    let mut owners: Vec<Option<(u32, u32)>> = vec![None; total];
    let mut first_start: Option<Instant> = None;
    let mut last_end: Option<Instant> = None;
    for (thread, result) in results {
        let (keys, began, ended) =
            result.with_context(|| format!("append from writer thread {thread} failed"))?;
        first_start = Some(first_start.map_or(began, |first| first.min(began)));
        last_end = Some(last_end.map_or(ended, |last| last.max(ended)));
        for (sequence, key) in (0_u32..).zip(keys) {
            // A fresh log assigns op keys 1..=records: anything else is a broken promise.
            let slot = usize::try_from(key)
                .ok()
                .and_then(|key| key.checked_sub(1))
                .and_then(|index| owners.get_mut(index))
                .with_context(|| {
                    format!("the log acknowledged op key {key}, outside 1..={total}")
                })?;
            if slot.replace((thread, sequence)).is_some() {
                bail!("the log acknowledged op key {key} twice");
            }
        }
    }
    let owners = owners
        .into_iter()
        .enumerate()
        .map(|(index, owner)| {
            owner.with_context(|| format!("op key {} was never acknowledged", index + 1))
        })
        .collect::<anyhow::Result<Owners>>()?;
    let elapsed = match (first_start, last_end) {
        (Some(first), Some(last)) => last.saturating_duration_since(first),
        _ => Duration::ZERO,
    };
    Ok((owners, elapsed))
}

/// Checks the records recovery replays against what was acknowledged.
struct Verifier<'a> {
    owners: &'a [(u32, u32)],
    filler: &'a [u8; 2 * PAYLOAD_BYTES],
    next_op_key: u64,
    records: u64,
    mismatch_count: u64,
    mismatches: Vec<String>,
    expected: [u8; PAYLOAD_BYTES],
}

impl<'a> Verifier<'a> {
    fn new(owners: &'a [(u32, u32)], filler: &'a [u8; 2 * PAYLOAD_BYTES]) -> Self {
        Self {
            owners,
            filler,
            next_op_key: 1,
            records: 0,
            mismatch_count: 0,
            mismatches: Vec::new(),
            expected: [0; PAYLOAD_BYTES],
        }
    }

    fn mismatch(&mut self, description: impl FnOnce() -> String) {
        self.mismatch_count += 1;
        if self.mismatches.len() < MISMATCHES_DESCRIBED_MAX {
            self.mismatches.push(description());
        }
    }

    fn check(&mut self, record: &Record<'_>) {
        self.records += 1;
        let key = record.op_key;
        if key != self.next_op_key {
            let expected = self.next_op_key;
            self.mismatch(|| format!("recovery returned op key {key} where {expected} was next"));
        }
        self.next_op_key = key + 1;
        if record.kind != RecordKind::Op(DEMO_KIND) {
            let kind = record.kind;
            self.mismatch(|| format!("op key {key}: kind {kind:?}, appended as Op({DEMO_KIND})"));
        }
        let owner = usize::try_from(key)
            .ok()
            .and_then(|key| key.checked_sub(1))
            .and_then(|index| self.owners.get(index))
            .copied();
        let Some((thread, sequence)) = owner else {
            self.mismatch(|| format!("op key {key} came back but was never acknowledged"));
            return;
        };
        payload(self.filler, thread, sequence, &mut self.expected);
        if record.payload != self.expected {
            let offset = record.offset;
            let len = record.payload.len();
            self.mismatch(|| {
                format!(
                    "op key {key} (segment offset {offset}): {len}-byte payload differs from what writer \
                     {thread} appended as its record {sequence}"
                )
            });
        }
    }

    /// The descriptions of every mismatch, including acknowledged records that never came back.
    fn finish(&mut self, owners: &[(u32, u32)]) -> Vec<String> {
        let acknowledged = owners.len() as u64;
        if self.next_op_key <= acknowledged {
            let (from, missing) = (self.next_op_key, acknowledged + 1 - self.next_op_key);
            self.mismatch(|| format!("{missing} acknowledged records did not come back (op keys {from}..={acknowledged})"));
        }
        if self.records != acknowledged {
            let records = self.records;
            self.mismatch(|| {
                format!("recovery returned {records} records, {acknowledged} were acknowledged")
            });
        }
        std::mem::take(&mut self.mismatches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_reproducible_and_distinct() {
        let filler = filler();
        let (mut a, mut b, mut c) = ([0; PAYLOAD_BYTES], [0; PAYLOAD_BYTES], [0; PAYLOAD_BYTES]);
        payload(&filler, 3, 17, &mut a);
        payload(&filler, 3, 17, &mut b);
        payload(&filler, 3, 18, &mut c);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(
            a[8..],
            c[8..],
            "the filler window shifts with the sequence number"
        );
    }

    #[test]
    fn quick_scenario_round_trips() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let scenario = Scenario {
            policy: SyncPolicy::Periodic { interval_ms: 10 },
            threads: 3,
            records: 2_000,
            segment_size_bytes: 256 * 1024,
        };
        let measurement = run(dir.path(), scenario)?;
        assert!(measurement.verified(), "{:?}", measurement.mismatches);
        assert_eq!(measurement.records_recovered, 2_000);
        assert!(
            measurement.stats.rotations >= 1,
            "records span several segments"
        );
        Ok(())
    }

    #[test]
    fn verifier_notices_a_changed_byte_and_a_missing_record() {
        let filler = filler();
        let owners = vec![(0, 0), (0, 1)];
        let mut verifier = Verifier::new(&owners, &filler);
        let mut bytes = [0; PAYLOAD_BYTES];
        payload(&filler, 0, 0, &mut bytes);
        bytes[100] ^= 1;
        verifier.check(&Record {
            offset: 64,
            op_key: 1,
            kind: RecordKind::Op(DEMO_KIND),
            payload: &bytes,
        });
        let mismatches = verifier.finish(&owners);
        assert_eq!(verifier.mismatch_count, 3, "{mismatches:?}");
        assert!(mismatches[0].contains("op key 1"));
        assert!(mismatches[1].contains("op keys 2..=2"));
    }
}
