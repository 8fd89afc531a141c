#![allow(clippy::print_stderr)] // The summary line is the point of `make crash`.

//! Real process kills: the `shape_victim` binary runs a concurrent shape workload under
//! `SyncPolicy::Sync`, printing each op before it is submitted and once it is acknowledged;
//! this test SIGKILLs it at a random moment — mid-burst, inside a slowed flush transaction,
//! around rotations and retirements (64 KiB segments), or while it is still recovering — and
//! reopens the store, checking after every kill:
//!
//! - acknowledged ⊆ recovered ⊆ submitted, per handle: the state is the one after its
//!   acknowledged ops, or after those plus the one op that was in flight;
//! - nothing applied twice (a second apply of an add would violate SQLite's unique index and
//!   fail the store), SQLite and the registry agree, the count is right;
//! - at the end, the log passes a `Strict` scan above the watermark.
//!
//! Half the time the checks run on a copy of the store, and the store is left as the kill
//! left it: the next victim's open then recovers its ops, and one such open in two is itself
//! killed, at a random moment of the time the last open took. The summary line counts those
//! kills (a long run fails if none landed).
//!
//! `make test` runs a short loop (10 trials of 5 kills); `make crash TRIALS=N` runs N trials.
//! A failure prints the trial's seed: rerun with `WALBUF_SEED=<seed>`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use walbuf::ShapeRegistry;
use walbuf::store::{DATABASE_FILE, LOG_DIRECTORY, StoreConfig};
use walbuf_recovery::replay::{DirectorySource, Mode, Options};

const KILLS_PER_TRIAL: u32 = 5;
const THREADS: u32 = 4;

/// What one handle went through, as far as the parent knows.
#[derive(Debug, Default, Clone)]
struct History {
    /// Acknowledged ops, in order.
    acknowledged: Vec<Verb>,
    /// The op submitted last and never acknowledged (the victim died during it).
    in_flight: Option<Verb>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Add,
    Remove,
    Complete,
}

/// A shape's state: absent, or live with its snapshot complete or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Absent,
    Live { complete: bool },
}

fn replay(verbs: impl IntoIterator<Item = Verb>) -> State {
    verbs
        .into_iter()
        .fold(State::Absent, |state, verb| match verb {
            Verb::Add => State::Live { complete: false },
            Verb::Remove => State::Absent,
            Verb::Complete => match state {
                State::Live { .. } => State::Live { complete: true },
                State::Absent => State::Absent,
            },
        })
}

impl History {
    fn allowed(&self) -> Vec<State> {
        let mut allowed = vec![replay(self.acknowledged.iter().copied())];
        if let Some(verb) = self.in_flight {
            allowed.push(replay(self.acknowledged.iter().copied().chain([verb])));
        }
        allowed
    }
}

/// Everything the victims said, across the kills of one trial.
#[derive(Default)]
struct Ledger {
    handles: BTreeMap<String, History>,
    /// `(round, thread, seq)` → the handle and verb submitted.
    submitted: BTreeMap<(u32, u32, u64), (String, Verb)>,
    acknowledged: u64,
}

impl Ledger {
    fn read(&mut self, round: u32, line: &str) -> Result<(), String> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["R"] | ["O", ..] => Ok(()),
            ["S", thread, seq, verb, handle] => {
                let verb = match *verb {
                    "add" => Verb::Add,
                    "remove" => Verb::Remove,
                    "complete" => Verb::Complete,
                    _ => return Err(format!("bad verb in {line:?}")),
                };
                let key = (round, parse(thread)?, parse(seq)?);
                self.submitted.insert(key, ((*handle).to_owned(), verb));
                self.handles
                    .entry((*handle).to_owned())
                    .or_default()
                    .in_flight = Some(verb);
                Ok(())
            }
            ["A", thread, seq, _op_key] => {
                let key = (round, parse(thread)?, parse(seq)?);
                let (handle, verb) = self
                    .submitted
                    .get(&key)
                    .ok_or_else(|| format!("ack of an op never submitted: {line:?}"))?;
                let history = self.handles.entry(handle.clone()).or_default();
                history.in_flight = None;
                history.acknowledged.push(*verb);
                self.acknowledged += 1;
                Ok(())
            }
            ["E", ..] => Err(format!("the victim failed: {line}")),
            _ => Err(format!("unexpected victim output {line:?}")),
        }
    }

    /// After a kill, an op in flight may or may not have happened; the next round's ops on
    /// other handles come after it. Record the outcome recovery chose, so that later rounds
    /// start from a known state.
    fn settle(&mut self, registry: &ShapeRegistry) -> Result<(), String> {
        for (handle, history) in &mut self.handles {
            let found = observe(registry, handle)?;
            let allowed = history.allowed();
            if !allowed.contains(&found) {
                return Err(format!(
                    "{handle}: recovered {found:?}, allowed {allowed:?} (history {history:?})"
                ));
            }
            if let Some(verb) = history.in_flight.take()
                && found != allowed[0]
            {
                history.acknowledged.push(verb);
            }
        }
        Ok(())
    }

    fn live(&self) -> u64 {
        self.handles
            .values()
            .filter(|history| replay(history.acknowledged.iter().copied()) != State::Absent)
            .count() as u64
    }
}

fn parse<T: std::str::FromStr>(field: &str) -> Result<T, String> {
    field.parse().map_err(|_| format!("bad number {field:?}"))
}

fn observe(registry: &ShapeRegistry, handle: &str) -> Result<State, String> {
    let live = registry.has_handle(handle).map_err(|e| e.to_string())?;
    if !live {
        return Ok(State::Absent);
    }
    let complete = registry
        .snapshot_complete(handle)
        .map_err(|e| e.to_string())?;
    Ok(State::Live { complete })
}

/// The parent reopens with the victim's settings (minus its flush pause).
fn config() -> StoreConfig {
    walbuf_tests::check::kill_victim_config()
}

/// What one victim did before its kill.
struct Killed {
    lines: Vec<String>,
    /// From its start to the line saying its open returned, if it got that far.
    opened_after: Option<Duration>,
}

impl Killed {
    /// Killed inside its open: it said it was opening, and never that it had opened.
    fn during_open(&self) -> bool {
        self.opened_after.is_none() && self.lines.iter().any(|line| line == "R")
    }
}

/// Runs one victim and kills it. `aim` is how long a victim took to open last time: a kill
/// meant for the recovery lands at a random moment within it. `recovering` says the store
/// holds ops the victim's open must replay; such an open is aimed at more often.
fn run_victim(
    dir: &std::path::Path,
    round: u32,
    seed: u64,
    rng: &mut StdRng,
    aim: Duration,
    recovering: bool,
) -> Killed {
    let slow_flush = rng.random_bool(0.5);
    let mut command = Command::new(env!("CARGO_BIN_EXE_shape_victim"));
    command
        .arg(dir)
        .arg(round.to_string())
        .arg(THREADS.to_string())
        .arg(seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if slow_flush {
        command.arg("slow-flush");
    }
    let mut child = command.spawn().expect("spawn the victim");
    let stdout = child.stdout.take().expect("victim stdout");
    let started = Instant::now();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let opened_after = Arc::new(Mutex::new(None));
    let reader = {
        let lines = Arc::clone(&lines);
        let opened_after = Arc::clone(&opened_after);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with('O') {
                    *opened_after.lock() = Some(started.elapsed());
                }
                lines.lock().push(line);
            }
        })
    };
    // One kill in five lands during the victim's open (one in two when it has ops to
    // replay), at a random moment of the time the last open took; the rest mid-workload.
    let during_recovery = rng.random_bool(if recovering { 0.5 } else { 0.2 });
    if during_recovery {
        let window = u64::try_from(aim.as_micros()).unwrap_or(u64::MAX).max(1);
        std::thread::sleep(Duration::from_micros(rng.random_range(0..window)));
    } else {
        while opened_after.lock().is_none() && started.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(5..250)));
    }
    child.kill().expect("SIGKILL the victim");
    let status = child.wait().expect("reap the victim");
    reader.join().expect("reader thread");
    let lines = std::mem::take(&mut *lines.lock());
    assert!(
        status.code().is_none() || lines.iter().any(|line| line.starts_with('E')),
        "the victim exited by itself ({status}): {:?}",
        lines.last()
    );
    let opened_after = *opened_after.lock();
    Killed {
        lines,
        opened_after,
    }
}

/// Copies a killed victim's store (no process holds it) file by file.
fn copy_store(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_store(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// What a trial did: acknowledged ops, and the kills that landed while a victim's open was
/// still recovering ops a previous kill left (with those ops, in all).
struct TrialOutcome {
    acknowledged: u64,
    recovery_kills: u64,
    recovery_kill_ops: u64,
}

fn trial(seed: u64) -> Result<TrialOutcome, String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut ledger = Ledger::default();
    // How long the last victim took to open (first guess: 10 ms).
    let mut aim = Duration::from_millis(10);
    // Ops the store left by the last kill holds above its watermark: the next victim's open
    // must replay them.
    let mut pending = 0;
    let mut recovery_kills = 0;
    let mut recovery_kill_ops = 0;
    for round in 0..KILLS_PER_TRIAL {
        let killed = run_victim(
            dir.path(),
            round,
            seed.wrapping_add(u64::from(round)),
            &mut rng,
            aim,
            pending > 0,
        );
        if let Some(opened_after) = killed.opened_after {
            aim = opened_after;
        }
        if killed.during_open() && pending > 0 {
            recovery_kills += 1;
            recovery_kill_ops += pending;
        }
        for line in &killed.lines {
            ledger.read(round, line)?;
        }
        // Half the time (never after the last kill), the store is left as the kill left it,
        // so that the next victim's open has ops to recover (and may itself be killed), and
        // the checks below run on a copy. Recovery is deterministic: the copy recovers
        // exactly what the store will.
        let leave_crashed = round + 1 < KILLS_PER_TRIAL && rng.random_bool(0.5);
        let copy = if leave_crashed {
            let copy = tempfile::tempdir().map_err(|e| e.to_string())?;
            copy_store(dir.path(), copy.path())
                .map_err(|error| format!("round {round}: copy the store: {error}"))?;
            Some(copy)
        } else {
            None
        };
        let checked = copy.as_ref().map_or(dir.path(), tempfile::TempDir::path);
        let (registry, report) = ShapeRegistry::open(checked, config())
            .map_err(|error| format!("round {round}: reopen failed: {error}"))?;
        pending = if leave_crashed {
            report.ops_replayed
        } else {
            0
        };
        ledger.settle(&registry).map_err(|error| {
            format!("round {round} (replayed {}): {error}", report.ops_replayed)
        })?;
        let count = registry.count_shapes().map_err(|e| e.to_string())?;
        if count != ledger.live() {
            return Err(format!(
                "round {round}: count {count}, expected {}",
                ledger.live()
            ));
        }
        // Every listed shape was submitted (nothing invented).
        for shape in registry.list_shapes() {
            let shape = shape.map_err(|e| e.to_string())?;
            if !ledger.handles.contains_key(&shape.handle) {
                return Err(format!("round {round}: invented shape {}", shape.handle));
            }
        }
        registry
            .flush()
            .map_err(|error| format!("round {round}: flush after recovery failed: {error}"))?;
        registry.close().map_err(|e| e.to_string())?;
    }
    // SQLite agrees with the ledger, and the log is clean above the watermark.
    let database = dir.path().join(DATABASE_FILE);
    let connection = rusqlite::Connection::open(&database).map_err(|e| e.to_string())?;
    let rows: i64 = connection
        .query_row("SELECT count(*) FROM shapes", [], |row| row.get(0))
        .map_err(|e| e.to_string())?;
    let rows = rows.cast_unsigned();
    if rows != ledger.live() {
        return Err(format!(
            "SQLite has {rows} shapes, expected {}",
            ledger.live()
        ));
    }
    let meta = walbuf::sqlite::peek_meta(&database)
        .map_err(|e| e.to_string())?
        .ok_or("no walbuf_meta")?;
    let options = Options {
        mode: Mode::Strict,
        watermark: meta.applied_op_key,
        ..Options::default()
    };
    let mut ignore = |_: &walbuf_recovery::format::Record<'_>| Ok(());
    walbuf_recovery::replay(
        &DirectorySource::new(dir.path().join(LOG_DIRECTORY)),
        options,
        &mut ignore,
    )
    .map_err(|error| format!("strict scan after the trial: {error}"))?;
    Ok(TrialOutcome {
        acknowledged: ledger.acknowledged,
        recovery_kills,
        recovery_kill_ops,
    })
}

#[test]
fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    let trials: u64 = std::env::var("WALBUF_CRASH_TRIALS")
        .ok()
        .and_then(|trials| trials.parse().ok())
        .unwrap_or(10);
    let base = walbuf_tests::check::seed();
    let mut acknowledged = 0;
    let mut recovery_kills = 0;
    let mut recovery_kill_ops = 0;
    for trial_index in 0..trials {
        let seed = base.wrapping_add(trial_index);
        let outcome =
            walbuf_tests::check::within(Duration::from_secs(300), "crash trial", move || {
                trial(seed)
            });
        match outcome {
            Ok(outcome) => {
                acknowledged += outcome.acknowledged;
                recovery_kills += outcome.recovery_kills;
                recovery_kill_ops += outcome.recovery_kill_ops;
            }
            Err(error) => panic!("trial failed (rerun with WALBUF_SEED={seed}): {error}"),
        }
    }
    eprintln!(
        "{trials} trials, {} kills ({recovery_kills} during an open recovering ops a kill \
         left, {recovery_kill_ops} ops in all), {acknowledged} acknowledged ops, all recovered",
        trials * u64::from(KILLS_PER_TRIAL)
    );
    assert!(acknowledged > 0, "the victims never acknowledged anything");
    // A long run must have crashed recoveries with work to do, or it did not test them.
    if trials >= 50 {
        assert!(
            recovery_kills > 0,
            "no kill landed during an open with ops to recover"
        );
    }
}
