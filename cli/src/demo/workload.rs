//! The shape workload on an open registry: writer threads creating shapes concurrently (each
//! following its [`Plan`]: adds, snapshot marks, some removals), reader threads resolving
//! acknowledged handles meanwhile, and a monitor sampling the buffer.
//!
//! Readers check read-your-writes as they go: a shape whose add was acknowledged (and that
//! the plan never removes) must resolve both ways, `handle_for_shape(comparable)` and
//! `shape_for_handle(handle)`.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::Rng;
use walbuf::log::Config as LogConfig;
use walbuf::{RegistryError, ShapeRegistry, StoreConfig, SyncPolicy};

use super::plan::{self, Plan, Step};

/// Reads a reader does between pauses, and the pause: readers resolve handles the whole time
/// without taking the two cores from the writers and the flusher.
const READS_PER_ROUND: u32 = 64;
const READER_PAUSE: Duration = Duration::from_micros(500);
/// Read latencies kept per reader.
const READ_SAMPLES_MAX: usize = 1 << 20;
/// How often the monitor samples the buffer.
const MONITOR_INTERVAL: Duration = Duration::from_millis(2);
/// Read failures described; the rest are counted.
const READ_PROBLEMS_DESCRIBED: usize = 5;

/// What the workload runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// The store's sync policy.
    pub policy: SyncPolicy,
    /// Writer threads.
    pub writers: u32,
    /// Reader threads.
    pub readers: u32,
    /// Size of each log segment.
    pub segment_size_bytes: u64,
}

/// The store configuration of the demo: the defaults, with the demo's sync policy and
/// segment size.
#[must_use]
pub fn store_config(settings: &Settings) -> StoreConfig {
    StoreConfig {
        log: LogConfig {
            segment_size_bytes: settings.segment_size_bytes,
            max_record_bytes: 64 * 1024,
            sync_policy: settings.policy,
            ..LogConfig::default()
        },
        ..StoreConfig::default()
    }
}

/// Called after each acknowledged op with the writer, the step's position in its plan, the
/// op key and the step. An error stops the workload.
pub type OnAck<'a> = &'a (dyn Fn(u32, u64, u64, Step) -> std::io::Result<()> + Sync);

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub struct Measurement {
    /// Steps acknowledged per writer.
    pub steps_per_writer: Vec<u64>,
    /// Acknowledged adds, removals and marks.
    pub adds: u64,
    /// Acknowledged removals.
    pub removes: u64,
    /// Acknowledged snapshot marks.
    pub marks: u64,
    /// From the first op to the last acknowledgement.
    pub elapsed: Duration,
    /// Ack latency of every op, in nanoseconds, sorted.
    pub ack_ns: Vec<u64>,
    /// Lookups done by the readers (each `handle_for_shape` + `shape_for_handle`).
    pub reads: u64,
    /// Latency of `handle_for_shape`, sampled, in nanoseconds, sorted.
    pub read_ns: Vec<u64>,
    /// Reads that did not see an acknowledged shape.
    pub read_misses: u64,
    /// The first of them, described.
    pub read_problems: Vec<String>,
    /// The most ops buffered at once (sampled).
    pub peak_pending_ops: u64,
}

impl Measurement {
    /// Every acknowledged op.
    #[must_use]
    pub fn ops(&self) -> u64 {
        self.adds + self.removes + self.marks
    }

    /// Acknowledged ops per second.
    #[must_use]
    pub fn ops_per_second(&self) -> f64 {
        self.ops() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The `p`-th percentile (0..=100) of sorted values (0 for none).
#[must_use]
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// What a writer thread brings back.
#[derive(Default)]
struct WriterResult {
    steps: u64,
    adds: u64,
    removes: u64,
    marks: u64,
    ack_ns: Vec<u64>,
}

/// What a reader thread brings back.
#[derive(Default)]
struct ReaderResult {
    reads: u64,
    read_ns: Vec<u64>,
    misses: u64,
}

/// Runs every writer through `shapes_per_writer` adds (and the steps due after them), with the
/// readers and the monitor alongside, until the writers finish, `stop` is set, or an op
/// fails. `on_ack` sees every acknowledged op.
///
/// # Errors
/// An op failed (the registry's error, naming the writer and step), or `on_ack` failed.
pub fn run(
    registry: &ShapeRegistry,
    settings: &Settings,
    shapes_per_writer: u32,
    stop: &AtomicBool,
    on_ack: OnAck<'_>,
) -> anyhow::Result<Measurement> {
    let added: Vec<AtomicU32> = (0..settings.writers).map(|_| AtomicU32::new(0)).collect();
    let writers_running = AtomicU32::new(settings.writers);
    let peak_pending_ops = AtomicU64::new(0);
    let read_problems = Mutex::new(Vec::new());
    let started = Instant::now();
    let (writer_results, reader_results) = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..settings.writers)
            .map(|writer| {
                let added = &added;
                let writers_running = &writers_running;
                scope.spawn(move || {
                    let result = write(registry, writer, shapes_per_writer, stop, added, on_ack);
                    if result.is_err() {
                        stop.store(true, Ordering::SeqCst);
                    }
                    writers_running.fetch_sub(1, Ordering::SeqCst);
                    result
                })
            })
            .collect();
        let readers: Vec<_> = (0..settings.readers)
            .map(|_| {
                let (added, writers_running, read_problems) =
                    (&added, &writers_running, &read_problems);
                scope.spawn(move || read(registry, added, writers_running, read_problems))
            })
            .collect();
        scope.spawn(|| {
            while writers_running.load(Ordering::SeqCst) > 0 {
                peak_pending_ops.fetch_max(registry.stats().pending_ops, Ordering::Relaxed);
                std::thread::sleep(MONITOR_INTERVAL);
            }
        });
        let writer_results: Vec<anyhow::Result<WriterResult>> = writers
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a writer thread panicked")))
            })
            .collect();
        let reader_results: Vec<ReaderResult> = readers
            .into_iter()
            .map(|handle| handle.join().unwrap_or_default())
            .collect();
        (writer_results, reader_results)
    });
    let elapsed = started.elapsed();
    let mut measurement = Measurement {
        elapsed,
        peak_pending_ops: peak_pending_ops.load(Ordering::Relaxed),
        read_problems: read_problems
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner),
        ..Measurement::default()
    };
    for result in writer_results {
        let result = result?;
        measurement.steps_per_writer.push(result.steps);
        measurement.adds += result.adds;
        measurement.removes += result.removes;
        measurement.marks += result.marks;
        measurement.ack_ns.extend(result.ack_ns);
    }
    for result in reader_results {
        measurement.reads += result.reads;
        measurement.read_misses += result.misses;
        measurement.read_ns.extend(result.read_ns);
    }
    measurement.ack_ns.sort_unstable();
    measurement.read_ns.sort_unstable();
    Ok(measurement)
}

/// One writer: its plan's steps, each timed from call to acknowledgement.
fn write(
    registry: &ShapeRegistry,
    writer: u32,
    shapes: u32,
    stop: &AtomicBool,
    added: &[AtomicU32],
    on_ack: OnAck<'_>,
) -> anyhow::Result<WriterResult> {
    let mut result = WriterResult::default();
    for (position, step) in (0_u64..).zip(Plan::new(shapes)) {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let shape = plan::new_shape(writer, step.index());
        let handle = shape.handle.clone();
        let started = Instant::now();
        let acknowledged: Result<u64, RegistryError> = match step {
            Step::Add(_) => registry.add_shape(shape),
            Step::MarkStarted(_) => registry.mark_snapshot_started(&handle),
            Step::MarkComplete(_) => registry.mark_snapshot_complete(&handle),
            Step::Remove(_) => registry.remove_shape(&handle),
        };
        let op_key = acknowledged
            .with_context(|| format!("writer {writer}: {} {handle} failed", step.name()))?;
        result.ack_ns.push(started.elapsed().as_nanos() as u64);
        match step {
            Step::Add(index) => {
                result.adds += 1;
                if let Some(count) = added.get(writer as usize) {
                    count.store(index + 1, Ordering::Release);
                }
            }
            Step::Remove(_) => result.removes += 1,
            Step::MarkStarted(_) | Step::MarkComplete(_) => result.marks += 1,
        }
        result.steps += 1;
        on_ack(writer, position, op_key, step)
            .with_context(|| format!("writer {writer}: reporting op key {op_key} failed"))?;
    }
    Ok(result)
}

/// One reader: resolves random acknowledged shapes (among those never removed) both ways.
fn read(
    registry: &ShapeRegistry,
    added: &[AtomicU32],
    writers_running: &AtomicU32,
    problems: &Mutex<Vec<String>>,
) -> ReaderResult {
    let mut rng = rand::rng();
    let mut result = ReaderResult::default();
    if added.is_empty() {
        return result;
    }
    while writers_running.load(Ordering::SeqCst) > 0 {
        for _ in 0..READS_PER_ROUND {
            let writer = rng.random_range(0..added.len());
            let count = added[writer].load(Ordering::Acquire);
            if count == 0 {
                continue;
            }
            let index = rng.random_range(0..count);
            if plan::is_removed_later(index) {
                continue;
            }
            let writer = writer as u32;
            let handle = plan::handle(writer, index);
            let comparable = plan::comparable(writer, index);
            let started = Instant::now();
            let holder = registry.handle_for_shape(&comparable);
            let elapsed = started.elapsed();
            let shape = registry.shape_for_handle(&handle);
            result.reads += 1;
            if result.read_ns.len() < READ_SAMPLES_MAX {
                result.read_ns.push(elapsed.as_nanos() as u64);
            }
            let found = matches!(&holder, Ok(Some(found)) if *found == handle)
                && matches!(&shape, Ok(Some(shape)) if shape.hash == plan::hash(writer, index));
            if !found {
                result.misses += 1;
                let mut problems = problems.lock().unwrap_or_else(PoisonError::into_inner);
                if problems.len() < READ_PROBLEMS_DESCRIBED {
                    problems.push(format!(
                        "{handle} (acknowledged): handle_for_shape gave {holder:?}, shape_for_handle gave {}",
                        match &shape {
                            Ok(Some(_)) => "a shape".to_owned(),
                            Ok(None) => "none".to_owned(),
                            Err(error) => format!("an error: {error}"),
                        }
                    ));
                }
            }
        }
        std::thread::sleep(READER_PAUSE);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_sorted_values() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 50.0), 51);
        assert_eq!(percentile(&values, 99.0), 99);
        assert_eq!(percentile(&values, 100.0), 100);
        assert_eq!(percentile(&[], 50.0), 0);
    }
}
