//! Shared by the CLI tests: running the binary, and small stores made with the library.

// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use walbuf::store::{ApplyHook, LOG_DIRECTORY};
use walbuf::{NewShape, Relation, ShapeRegistry, StoreConfig, SyncPolicy};
use walbuf_recovery::naming::sorted_segment_names;

/// What a run of the binary printed and how it ended.
pub struct Run {
    /// The exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Every run of the binary must end within this; a hung one is killed and fails the test.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `walbuf` with `args` (killed after [`RUN_TIMEOUT`]).
///
/// # Errors
/// The binary cannot be run, or did not finish in time.
pub fn walbuf<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> anyhow::Result<Run> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_walbuf"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run the walbuf binary")?;
    let mut stdout = child.stdout.take().context("stdout piped")?;
    let mut stderr = child.stderr.take().context("stderr piped")?;
    let stdout = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout.read_to_end(&mut bytes);
        bytes
    });
    let stderr = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stderr.read_to_end(&mut bytes);
        bytes
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("walbuf did not finish within {RUN_TIMEOUT:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    Ok(Run {
        code: status.code(),
        stdout: text(stdout.join().unwrap_or_default()),
        stderr: text(stderr.join().unwrap_or_default()),
    })
}

/// The path as a `&str` (temporary paths are UTF-8 here).
///
/// # Errors
/// It is not UTF-8.
pub fn text(path: &Path) -> anyhow::Result<&str> {
    path.to_str().context("path is not UTF-8")
}

/// A small store's settings: 64 KiB segments, so that a few hundred shapes span several;
/// a short retry backoff, so that closing while SQLite fails is quick.
pub fn config(fail_flushes: &Arc<AtomicBool>) -> StoreConfig {
    let fail = Arc::clone(fail_flushes);
    let mut config = StoreConfig {
        retry_backoff_max_ms: 20,
        apply_hook: Some(ApplyHook(Arc::new(move |_keys: &[u64]| {
            if fail.load(Ordering::SeqCst) {
                // Busy: a transient failure, retried until the store closes.
                Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                    None,
                ))
            } else {
                Ok(())
            }
        }))),
        ..StoreConfig::default()
    };
    config.log.segment_size_bytes = 64 * 1024;
    config.log.max_record_bytes = 4 * 1024;
    config.log.sync_policy = SyncPolicy::Sync;
    config
}

/// The `index`-th test shape.
pub fn shape(index: u32) -> NewShape {
    NewShape {
        handle: format!("shape-{index:04}"),
        shape: format!("{{\"table\":\"items\",\"where\":\"id = {index}\"}}").into_bytes(),
        comparable: index.to_le_bytes().repeat(8),
        hash: i64::from(index) * 31,
        relations: vec![Relation {
            oid: 16_384 + index % 4,
            schema: "public".into(),
            table: format!("items_{}", index % 4).into(),
        }],
    }
}

/// What [`make_store`] wrote.
#[derive(Debug, Clone, Copy)]
pub struct Made {
    /// Ops SQLite holds (the watermark).
    pub applied: u64,
    /// The last op key logged.
    pub last: u64,
}

/// Makes a closed store in `dir`: `flushed` shapes added, one marked and one removed, all
/// applied to SQLite; then `pending` more adds that SQLite never gets (its batches fail until
/// the store is closed), so they wait in the log above the watermark.
///
/// # Errors
/// The store fails.
pub fn make_store(dir: &Path, flushed: u32, pending: u32) -> anyhow::Result<Made> {
    let fail = Arc::new(AtomicBool::new(false));
    let (registry, _) = ShapeRegistry::open(dir, config(&fail))?;
    for index in 0..flushed {
        registry.add_shape(shape(index))?;
    }
    if flushed >= 2 {
        registry.mark_snapshot_complete(&shape(0).handle)?;
        registry.remove_shape(&shape(1).handle)?;
    }
    registry.flush()?;
    let applied = registry.stats().applied_op_key;
    fail.store(true, Ordering::SeqCst);
    for index in flushed..flushed + pending {
        registry.add_shape(shape(index))?;
    }
    let last = registry.stats().last_op_key;
    registry.close()?;
    drop(registry);
    Ok(Made { applied, last })
}

/// The segment files of a store, oldest first.
///
/// # Errors
/// The log directory cannot be listed.
pub fn segments(store: &Path) -> anyhow::Result<Vec<String>> {
    let names = std::fs::read_dir(store.join(LOG_DIRECTORY))?
        .map(|entry| Ok(entry?.file_name().to_string_lossy().into_owned()))
        .collect::<anyhow::Result<Vec<String>>>()?;
    Ok(sorted_segment_names(names)
        .into_iter()
        .map(|(_, name)| name)
        .collect())
}
