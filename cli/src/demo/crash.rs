//! The demo's crash run: the workload in a child process (`walbuf demo-victim`), killed with
//! SIGKILL mid-burst once it has acknowledged a chosen number of ops; then the store is
//! reopened here (recovery), flushed, and checked.
//!
//! The child prints each op the moment it is acknowledged, and every writer follows a fixed
//! [`plan`](super::plan), so the parent knows, per writer, every acknowledged step (which must
//! all have survived), the one step that may have been in flight (which may or may not have),
//! and that nothing after it can exist.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use walbuf::store::DATABASE_FILE;
use walbuf::{RecoveryReport, ShapeRegistry};

use super::check::{self, Verdict};
use super::plan::{self, Plan};
use super::victim;
use super::workload::{self, Settings};
use crate::verify;

/// The signal that kills the child.
pub const SIGKILL: i32 = 9;
/// A child that neither prints nor exits is killed after this long.
const WATCHDOG: Duration = Duration::from_secs(victim::DEADLINE.as_secs() + 10);

/// What the crash run found.
#[derive(Debug)]
pub struct CrashRun {
    /// The child was killed once it had acknowledged this many ops.
    pub kill_after: u64,
    /// Ops the child acknowledged (printed) before it died; a few more than `kill_after`
    /// arrive while the kill lands.
    pub acknowledged: u64,
    /// How long the child ran before the kill.
    pub ran_for: Duration,
    /// The signal that ended the child.
    pub signal: Option<i32>,
    /// The highest op key acknowledged.
    pub last_acknowledged_op_key: u64,
    /// What reopening the store found and did.
    pub report: RecoveryReport,
    /// Acknowledged ops whose effect the reopened store shows.
    pub recovered: u64,
    /// Writers whose op in flight at the kill had become durable (allowed either way).
    pub in_flight_durable: u64,
    /// How long the reopened store took to apply the replayed ops to SQLite.
    pub flush_elapsed: Duration,
    /// The registry and SQLite against the acknowledged ops.
    pub verdict: Verdict,
    /// Problems of the recovery itself (op keys), described.
    pub problems: Vec<String>,
    /// What `walbuf verify` finds in the closed store afterwards.
    pub verify_problems: Vec<String>,
}

impl CrashRun {
    /// Whether nothing acknowledged was lost and nothing was invented.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.verdict.ok()
            && self.problems.is_empty()
            && self.verify_problems.is_empty()
            && self.recovered == self.acknowledged
    }
}

/// Kills the child on drop unless it was already reaped.
struct Victim {
    child: Arc<Mutex<Child>>,
}

impl Victim {
    fn kill(&self) {
        let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        // Fails only if the child was already reaped.
        let _ = child.kill();
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        if let Ok(None) = child.try_wait() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One parsed line of the child's output.
struct Ack {
    writer: u32,
    position: u64,
    op_key: u64,
    step: String,
    handle: String,
}

fn parse(line: &str) -> Option<Ack> {
    let mut fields = line.split(' ');
    let ack = Ack {
        writer: fields.next()?.parse().ok()?,
        position: fields.next()?.parse().ok()?,
        op_key: fields.next()?.parse().ok()?,
        step: fields.next()?.to_owned(),
        handle: fields.next()?.to_owned(),
    };
    fields.next().is_none().then_some(ack)
}

/// Runs the child in `dir` (an empty directory), kills it after `kill_after` acknowledged
/// ops, reopens and checks.
///
/// # Errors
/// The child cannot be started, exits by itself, prints something unexpected, or the store
/// cannot be reopened, flushed or closed.
pub fn run(dir: &Path, settings: &Settings, kill_after: u64) -> anyhow::Result<CrashRun> {
    let executable = std::env::current_exe().context("cannot find the walbuf executable")?;
    let mut command = Command::new(executable);
    command
        .arg("demo-victim")
        .arg("--dir")
        .arg(dir)
        .args(["--policy", super::PolicyArg::from(settings.policy).name()])
        .args(["--writers", &settings.writers.to_string()])
        .args(["--readers", &settings.readers.to_string()])
        .args([
            "--segment-mib",
            &(settings.segment_size_bytes >> 20).to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().context("cannot start the victim process")?;
    let stdout = child.stdout.take().context("the victim has no stdout")?;
    let mut stderr = child.stderr.take().context("the victim has no stderr")?;
    let victim = Victim {
        child: Arc::new(Mutex::new(child)),
    };
    let started = Instant::now();
    let (done, watchdog_wait) = mpsc::channel::<()>();
    let watchdog_child = Arc::clone(&victim.child);
    let watchdog = std::thread::spawn(move || {
        if let Err(RecvTimeoutError::Timeout) = watchdog_wait.recv_timeout(WATCHDOG) {
            let mut child = watchdog_child
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let _ = child.kill();
        }
    });
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });

    let mut plans: Vec<Plan> = (0..settings.writers).map(|_| Plan::new(u32::MAX)).collect();
    let mut steps_per_writer = vec![0_u64; settings.writers as usize];
    let mut acknowledged = 0_u64;
    let mut last_op_key = 0_u64;
    let mut killed_at = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("cannot read the victim's output")?;
        let Some(ack) = parse(&line) else {
            bail!("the victim printed an unexpected line: {line:?}");
        };
        let writer = ack.writer as usize;
        let (Some(plan), Some(steps)) = (plans.get_mut(writer), steps_per_writer.get_mut(writer))
        else {
            bail!("the victim printed an unknown writer: {line:?}");
        };
        let expected = plan.next();
        let matches = expected.is_some_and(|step| {
            step.name() == ack.step && plan::handle(ack.writer, step.index()) == ack.handle
        });
        if !matches || ack.position != *steps {
            bail!(
                "the victim's writer {writer} acknowledged {line:?}, but its plan says {expected:?} at step {steps}"
            );
        }
        *steps += 1;
        acknowledged += 1;
        last_op_key = last_op_key.max(ack.op_key);
        if acknowledged == kill_after {
            victim.kill();
            killed_at = Some(started.elapsed());
        }
    }
    let status = {
        let mut child = victim.child.lock().unwrap_or_else(PoisonError::into_inner);
        child.wait().context("cannot wait for the victim")?
    };
    let _ = done.send(());
    let _ = watchdog.join();
    let stderr_text = stderr_reader.join().unwrap_or_default();
    let Some(ran_for) = killed_at else {
        bail!(
            "the victim ended by itself ({status}) after {acknowledged} acknowledged ops, before it \
             could be killed after {kill_after}; its stderr:\n{stderr_text}"
        );
    };

    // Reopen: recovery replays every logged op above SQLite's watermark.
    let config = workload::store_config(settings);
    let (registry, report) = ShapeRegistry::open(dir, config)
        .with_context(|| format!("reopening the killed store in {} failed", dir.display()))?;
    let mut problems = Vec::new();
    if status.signal() != Some(SIGKILL) {
        problems.push(format!("the victim ended with {status}, not by SIGKILL"));
    }
    if report.next_op_key <= last_op_key {
        problems.push(format!(
            "the recovered log ends at op key {}, but op key {last_op_key} was acknowledged",
            report.next_op_key.saturating_sub(1)
        ));
    }
    let flush_started = Instant::now();
    registry
        .flush()
        .context("applying the replayed ops to SQLite failed")?;
    let flush_elapsed = flush_started.elapsed();
    let expected = plan::expectation(&steps_per_writer, true);
    let verdict = check::run(&registry, &dir.join(DATABASE_FILE), &expected)?;
    registry
        .close()
        .context("closing the reopened store failed")?;
    drop(registry);
    let verify_problems = verify::problems(dir)?
        .iter()
        .map(ToString::to_string)
        .collect();

    let mut recovered = 0;
    for (writer, &steps) in (0_u32..).zip(&steps_per_writer) {
        recovered += Plan::new(u32::MAX)
            .take(usize::try_from(steps).unwrap_or(usize::MAX))
            .filter(|step| !verdict.failed.contains(&(writer, step.index())))
            .count() as u64;
    }
    Ok(CrashRun {
        kill_after,
        acknowledged,
        ran_for,
        signal: status.signal(),
        last_acknowledged_op_key: last_op_key,
        report,
        recovered,
        in_flight_durable: verdict.in_flight_applied,
        flush_elapsed,
        verdict,
        problems,
        verify_problems,
    })
}
