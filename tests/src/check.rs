//! Checks shared by the `log_*` tests: opening a log while collecting what recovery replays,
//! a ledger of submitted and acknowledged records, and the crash invariant
//! *acknowledged ⊆ recovered ⊆ submitted, keys gapless*.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use walbuf::log::{Config, Log};
use walbuf::storage::Storage;
use walbuf_recovery::format::{Record, RecordKind};
use walbuf_recovery::{Options, Report};

/// One record handed back by recovery.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Recovered {
    /// Its op key.
    pub op_key: u64,
    /// Its kind byte.
    pub kind: u8,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// Opens a log over `storage`, collecting every record recovery replays.
///
/// # Errors
/// Whatever [`Log::open_with`] returns.
pub fn open_collect<S: Storage>(
    storage: S,
    config: Config,
    options: Options,
) -> walbuf::Result<(Log<S>, Report, Vec<Recovered>)> {
    let mut recovered = Vec::new();
    let mut sink = |record: &Record<'_>| {
        let kind = match record.kind {
            RecordKind::Op(kind) => kind,
            RecordKind::SyncMark => return Err("recovery replayed a sync mark".into()),
        };
        recovered.push(Recovered {
            op_key: record.op_key,
            kind,
            payload: record.payload.to_vec(),
        });
        Ok(())
    };
    let (log, report) = Log::open_with(storage, config, options, &mut sink)?;
    Ok((log, report, recovered))
}

/// A payload of `len_bytes` (at least 8) that starts with `id` and is filled with bytes
/// derived from it, so that every id gives a distinct payload.
#[must_use]
pub fn unique_payload(id: u64, len_bytes: usize) -> Vec<u8> {
    let mut payload = id.to_le_bytes().to_vec();
    let mut state = id.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while payload.len() < len_bytes.max(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        payload.push(state as u8);
    }
    payload
}

#[derive(Debug, Default)]
struct LedgerState {
    /// Payload → kind of every record an appender was asked to write.
    submitted: HashMap<Vec<u8>, u8>,
    /// Op key → record of every append that returned `Ok` under `Sync`.
    acknowledged: BTreeMap<u64, (u8, Vec<u8>)>,
}

/// What a workload submitted and what the log acknowledged as durable, shared between the
/// appending threads and a persistence hook. Payloads must be unique (see
/// [`unique_payload`]).
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    state: Arc<Mutex<LedgerState>>,
}

/// The acknowledged records at one moment.
pub type Acknowledged = BTreeMap<u64, (u8, Vec<u8>)>;

impl Ledger {
    /// A new, empty ledger.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes that a record is about to be appended (call before `append`).
    ///
    /// # Panics
    /// If the payload was submitted before (payloads must be unique).
    pub fn submit(&self, kind: u8, payload: &[u8]) {
        let previous = self.state.lock().submitted.insert(payload.to_vec(), kind);
        assert!(previous.is_none(), "test bug: payloads must be unique");
    }

    /// Notes that an append under `Sync` returned `op_key` (call after it returned).
    pub fn acknowledge(&self, op_key: u64, kind: u8, payload: &[u8]) {
        let previous = self
            .state
            .lock()
            .acknowledged
            .insert(op_key, (kind, payload.to_vec()));
        assert!(previous.is_none(), "the log returned op key {op_key} twice");
    }

    /// The records acknowledged so far.
    #[must_use]
    pub fn acknowledged(&self) -> Acknowledged {
        self.state.lock().acknowledged.clone()
    }

    /// Checks the crash invariant against what a reopened log replayed (from watermark 0):
    /// keys gapless from 1, every record in `acknowledged` back unchanged, every record
    /// recovered one that was submitted, none twice.
    ///
    /// # Errors
    /// A description of the first violation.
    pub fn check(
        &self,
        acknowledged: &Acknowledged,
        recovered: &[Recovered],
    ) -> Result<(), String> {
        self.check_above(0, acknowledged, recovered)
    }

    /// [`Ledger::check`] for a log reopened with `watermark`: keys gapless from
    /// `watermark + 1`, and only acknowledged records above the watermark are required.
    ///
    /// # Errors
    /// A description of the first violation.
    pub fn check_above(
        &self,
        watermark: u64,
        acknowledged: &Acknowledged,
        recovered: &[Recovered],
    ) -> Result<(), String> {
        let state = self.state.lock();
        check_gapless(recovered, watermark + 1)?;
        let by_key: BTreeMap<u64, &Recovered> = recovered
            .iter()
            .map(|record| (record.op_key, record))
            .collect();
        for (op_key, (kind, payload)) in acknowledged.range(watermark + 1..) {
            match by_key.get(op_key) {
                None => {
                    return Err(format!(
                        "acknowledged op key {op_key} is missing ({} records recovered)",
                        recovered.len()
                    ));
                }
                Some(record) if record.kind != *kind || &record.payload != payload => {
                    return Err(format!(
                        "acknowledged op key {op_key} came back with other content"
                    ));
                }
                Some(_) => {}
            }
        }
        let mut seen = std::collections::HashSet::new();
        for record in recovered {
            match state.submitted.get(&record.payload) {
                Some(kind) if *kind == record.kind => {}
                _ => return Err(format!("op key {} was never submitted", record.op_key)),
            }
            if !seen.insert(&record.payload) {
                return Err(format!(
                    "op key {} repeats an earlier record",
                    record.op_key
                ));
            }
        }
        Ok(())
    }
}

/// Checks that `recovered` has op keys `first, first + 1, …` in order.
///
/// # Errors
/// Names the first key out of place.
pub fn check_gapless(recovered: &[Recovered], first: u64) -> Result<(), String> {
    for (index, record) in recovered.iter().enumerate() {
        let expected = first + index as u64;
        if record.op_key != expected {
            return Err(format!(
                "op key {} at position {index} where {expected} was expected",
                record.op_key
            ));
        }
    }
    Ok(())
}

/// Checks, at every persistence point of a simulated disk, that a power cut there would lose
/// nothing acknowledged: installed on a [`SimDisk`](crate::sim::SimDisk) as its hook, it builds the power-loss
/// images of that moment, reopens each, checks it against the [`Ledger`] (as it stood at that
/// moment) and appends one more record to it. Violations are collected, never panicked on
/// (the hook runs on the log's own threads).
#[derive(Debug, Clone)]
pub struct PowerLossProbe {
    failures: Arc<Mutex<Vec<String>>>,
    images: Arc<std::sync::atomic::AtomicU64>,
    watermark: Arc<std::sync::atomic::AtomicU64>,
}

impl PowerLossProbe {
    /// Installs the probe on `disk`: at every point (both phases), one image per entry of
    /// `losses`, reopened with `config`; random choices come from `seed` and the point's
    /// sequence number, so a failure replays with the same seed.
    #[must_use]
    pub fn install(
        disk: &crate::sim::SimDisk,
        ledger: &Ledger,
        config: &Config,
        losses: Vec<crate::sim::PowerLoss>,
        seed: u64,
    ) -> Self {
        use rand::SeedableRng;

        let probe = Self {
            failures: Arc::default(),
            images: Arc::default(),
            watermark: Arc::default(),
        };
        let (ledger, config, hook_probe) = (ledger.clone(), config.clone(), probe.clone());
        disk.set_hook(move |point, snapshot| {
            let acknowledged = ledger.acknowledged();
            let watermark = hook_probe
                .watermark
                .load(std::sync::atomic::Ordering::SeqCst);
            let mut rng = rand::rngs::StdRng::seed_from_u64(
                seed ^ point.sequence.wrapping_mul(0x2545_f491_4f6c_dd1d),
            );
            for &how in &losses {
                let image = snapshot.power_loss_image(how, &mut rng);
                hook_probe
                    .images
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Err(problem) = check_image(image, &config, watermark, &ledger, &acknowledged)
                {
                    hook_probe.fail(format!(
                        "{:?} {:?} of op {} ({:?}), {} acknowledged, power loss {how:?}: {problem}",
                        point.phase,
                        point.op,
                        point.sequence,
                        if point.failed { "failed" } else { "ok" },
                        acknowledged.len(),
                    ));
                }
            }
        });
        probe
    }

    /// Reopens images with this watermark from now on (call before retiring segments below
    /// it: records at or below it count as applied downstream).
    pub fn set_watermark(&self, watermark: u64) {
        self.watermark
            .store(watermark, std::sync::atomic::Ordering::SeqCst);
    }

    fn fail(&self, failure: String) {
        let mut failures = self.failures.lock();
        if failures.len() < 1000 {
            failures.push(failure);
        }
    }

    /// Images checked so far.
    #[must_use]
    pub fn images(&self) -> u64 {
        self.images.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The violations found so far.
    #[must_use]
    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().clone()
    }

    /// Panics with the first violations, if any.
    ///
    /// # Panics
    /// If any image lost an acknowledged record, invented one, or failed to reopen.
    pub fn assert_clean(&self, seed: u64) {
        let failures = self.failures();
        assert!(
            failures.is_empty(),
            "{} of {} power-loss images violate the invariant (seed {seed}); first ones:\n{}",
            failures.len(),
            self.images(),
            failures
                .iter()
                .take(8)
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// Reopens `image` with `watermark`, checks what it holds against the ledger, and appends
/// one more record.
///
/// # Errors
/// The violation found.
pub fn check_image(
    image: crate::sim::SimStorage,
    config: &Config,
    watermark: u64,
    ledger: &Ledger,
    acknowledged: &Acknowledged,
) -> Result<(), String> {
    let options = Options {
        watermark,
        ..Options::default()
    };
    let (log, _report, recovered) = open_collect(image, config.clone(), options)
        .map_err(|error| format!("reopen failed: {error}"))?;
    ledger.check_above(watermark, acknowledged, &recovered)?;
    let next = watermark + recovered.len() as u64 + 1;
    match log.append(1, b"after reopen") {
        Ok(key) if key == next => Ok(()),
        Ok(key) => Err(format!(
            "append after reopen got op key {key}, expected {next}"
        )),
        Err(error) => Err(format!("append after reopen failed: {error}")),
    }
}

/// The seed of a randomized test: `WALBUF_SEED` if set, else a fresh one (print it).
#[must_use]
pub fn seed() -> u64 {
    std::env::var("WALBUF_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(rand::random)
}

/// The proptest case count: `PROPTEST_CASES` if set (for longer runs), else `default`.
#[must_use]
pub fn proptest_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(default)
}

/// Runs `work` on its own thread and returns its result, or panics if it takes longer than
/// `limit` (a hang: a waiter never woken). A panic of `work` is passed on.
///
/// # Panics
/// On timeout, or if `work` panics.
pub fn within<T: Send + 'static>(
    limit: std::time::Duration,
    what: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (sender, receiver) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let result = work();
        let _ = sender.send(());
        result
    });
    match receiver.recv_timeout(limit) {
        Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        },
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what} did not finish within {limit:?}: hung")
        }
    }
}

/// A log of 1 MiB segments with records up to 64 KiB under `policy`: the log settings of the
/// registry tests on real files (small segments, so that a test of a few thousand shapes
/// rotates).
#[must_use]
pub fn small_log_config(policy: walbuf::SyncPolicy) -> walbuf::log::Config {
    walbuf::log::Config {
        segment_size_bytes: 1 << 20,
        max_record_bytes: 64 << 10,
        sync_policy: policy,
        ..walbuf::log::Config::default()
    }
}

/// The store settings of the simulated-disk store tests (`store_power_loss`,
/// `store_disk_faults`): `Sync`, 16 KiB segments prepared inline, quick idle marks, batches
/// of 8 flushed every millisecond — so that rotations, retirements and flush commits happen
/// within a few hundred ops.
#[must_use]
pub fn sim_store_config() -> walbuf::store::StoreConfig {
    walbuf::store::StoreConfig {
        log: Config {
            segment_size_bytes: 16 * 1024,
            max_record_bytes: 4 * 1024,
            sync_policy: walbuf::SyncPolicy::Sync,
            idle_mark_ms: 1,
            prepare_ahead: false,
            ..Config::default()
        },
        batch_ops_max: 8,
        flush_interval_ms: 1,
        ..walbuf::store::StoreConfig::default()
    }
}

/// The store settings of the process-kill victim (`shape_victim`) and of the test that
/// reopens its stores (`crash_kill`): `Sync`, 64 KiB segments, batches of 64 flushed every
/// 2 ms. The victim adds its flush-pausing hook on top.
#[must_use]
pub fn kill_victim_config() -> walbuf::store::StoreConfig {
    walbuf::store::StoreConfig {
        log: Config {
            segment_size_bytes: 64 * 1024,
            max_record_bytes: 16 * 1024,
            sync_policy: walbuf::SyncPolicy::Sync,
            ..Config::default()
        },
        batch_ops_max: 64,
        flush_interval_ms: 2,
        ..walbuf::store::StoreConfig::default()
    }
}

/// Background threads, each repeating a step until stopped: the load a test runs beside
/// what it checks (readers, churning writers).
pub struct Repeating {
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Repeating {
    /// Starts `threads` threads; thread `thread` calls `step(thread, round)` for round 0, 1,
    /// 2, … until [`Repeating::stop`] (or the value is dropped).
    pub fn start(threads: u64, step: impl Fn(u64, u64) + Send + Sync + 'static) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let step = Arc::new(step);
        let threads = (0..threads)
            .map(|thread| {
                let stop = Arc::clone(&stop);
                let step = Arc::clone(&step);
                std::thread::spawn(move || {
                    let mut round = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        step(thread, round);
                        round += 1;
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }

    /// Stops the threads and waits for them.
    ///
    /// # Panics
    /// If a step panicked.
    pub fn stop(mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            if let Err(panic) = thread.join() {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

impl Drop for Repeating {
    fn drop(&mut self) {
        // A test that fails before `stop` must not leave its load running.
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
