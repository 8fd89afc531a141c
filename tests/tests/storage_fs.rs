//! A real full disk, on real files (`FsStorage`): a size-limited tmpfs fills up under a log
//! appending with `Sync`. The append that needs a new segment gets the typed `Error::DiskFull`
//! (from `fallocate`, naming the file and its size), the process is never killed by SIGBUS (a
//! sparse segment written through its mapping on a full disk would be), and the log reopened
//! on the same mount, once some space is freed, holds every acknowledged record unchanged and
//! takes appends again.
//!
//! Needs root (it mounts a tmpfs); skips with a message when the mount fails. The log runs in a
//! child process (this test binary again, see `full_disk_child`), so that a SIGBUS is reported
//! as such and the mount is always unmounted.
#![allow(clippy::print_stderr)]

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use walbuf::log::Config;
use walbuf::storage::FsStorage;
use walbuf::{Error, SyncPolicy};
use walbuf_recovery::Options;
use walbuf_tests::check::{Ledger, open_collect, unique_payload};

/// Tells the child test where the mount is; without it, `full_disk_child` does nothing.
const CHILD_MOUNT_ENV: &str = "WALBUF_STORAGE_FS_CHILD_MOUNT";

const MOUNT_BYTES: u64 = 1 << 20;
const SEGMENT_BYTES: u64 = 64 * 1024;
/// A file of this size is put on the mount before the log fills it, and deleted after the
/// disk is full, so that the reopen finds room.
const BALLAST_BYTES: u64 = 192 * 1024;

/// A tmpfs of `MOUNT_BYTES` mounted on a temporary directory; unmounted on drop.
struct TinyTmpfs {
    mount_point: PathBuf,
    _directory: tempfile::TempDir,
}

impl TinyTmpfs {
    /// Mounts it, or says why it cannot and returns `None`.
    fn mount() -> Option<Self> {
        let directory = tempfile::tempdir().expect("tempdir");
        let mount_point = directory.path().join("mnt");
        std::fs::create_dir(&mount_point).expect("mount point");
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={MOUNT_BYTES}"), "tmpfs"])
            .arg(&mount_point)
            .output();
        match output {
            Ok(output) if output.status.success() => Some(Self {
                mount_point,
                _directory: directory,
            }),
            Ok(output) => {
                eprintln!(
                    "skipped: cannot mount a tmpfs (needs root): {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                );
                None
            }
            Err(error) => {
                eprintln!("skipped: cannot run mount: {error}");
                None
            }
        }
    }
}

impl Drop for TinyTmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.mount_point)
            .status()
            .is_ok_and(|status| status.success());
        if !unmounted {
            // Something still holds it open: detach it now, it goes when released.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.mount_point)
                .status();
        }
    }
}

#[test]
fn a_full_tmpfs_is_a_typed_disk_full_error_never_sigbus_and_loses_nothing_acknowledged() {
    let Some(tmpfs) = TinyTmpfs::mount() else {
        return;
    };
    let output = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "full_disk_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_MOUNT_ENV, &tmpfs.mount_point)
        .output()
        .expect("run the child");
    drop(tmpfs);
    let report = format!(
        "child stdout:\n{}\nchild stderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_ne!(
        output.status.signal(),
        Some(7),
        "the log was killed by SIGBUS on a full disk (a sparse segment?)\n{report}"
    );
    assert!(output.status.success(), "{:?}\n{report}", output.status);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let summary = stderr
        .lines()
        .find(|line| line.starts_with("full disk checked"))
        .unwrap_or_else(|| panic!("the child did not run its checks\n{report}"));
    eprintln!("{summary}");
}

/// The child's part of the test above: does nothing unless run by it.
#[test]
fn full_disk_child() {
    let Some(mount_point) = std::env::var_os(CHILD_MOUNT_ENV) else {
        return;
    };
    fill_and_reopen(Path::new(&mount_point));
}

fn config() -> Config {
    Config {
        segment_size_bytes: SEGMENT_BYTES,
        max_record_bytes: 2048,
        sync_policy: SyncPolicy::Sync,
        ..Config::default()
    }
}

fn fill_and_reopen(mount_point: &Path) {
    let directory = mount_point.join("log");
    let ballast = mount_point.join("ballast");
    std::fs::write(&ballast, vec![1_u8; BALLAST_BYTES as usize]).expect("write ballast");
    let ledger = Ledger::new();
    let storage = FsStorage::open(&directory).expect("open storage");
    let (log, _, recovered) = open_collect(storage, config(), Options::default()).expect("open");
    assert!(recovered.is_empty());
    // The mount holds about 12 segments besides the ballast: far fewer than this many records.
    let limit = 4 * MOUNT_BYTES / 200;
    let mut error = None;
    for index in 0..limit {
        let payload = unique_payload(index, 200 + (index as usize * 97) % 600);
        ledger.submit(1, &payload);
        match log.append(1, &payload) {
            Ok(key) => ledger.acknowledge(key, 1, &payload),
            Err(failure) => {
                error = Some(failure);
                break;
            }
        }
    }
    let error = error.expect("the disk never filled up");
    let disk_full = match &error {
        Error::Poisoned { cause } => &**cause,
        other => other,
    };
    match disk_full {
        Error::DiskFull { path, len_bytes } => {
            assert_eq!(*len_bytes, SEGMENT_BYTES, "{error}");
            assert!(path.starts_with(&directory), "names the file: {path:?}");
        }
        other => panic!("expected DiskFull, got {other}"),
    }
    let stats = log.stats();
    assert!(stats.rotations >= 2, "{stats:?}");
    let acknowledged = ledger.acknowledged();
    assert!(!acknowledged.is_empty());
    drop(log);
    // Free some room, reopen on the same mount: every acknowledged record is back, and the log
    // takes appends again.
    std::fs::remove_file(&ballast).expect("remove ballast");
    let storage = FsStorage::open(&directory).expect("reopen storage");
    let (log, _, recovered) = open_collect(storage, config(), Options::default()).expect("reopen");
    ledger
        .check(&acknowledged, &recovered)
        .unwrap_or_else(|problem| panic!("after reopen: {problem}"));
    let payload = unique_payload(u64::MAX, 300);
    ledger.submit(1, &payload);
    log.append(1, &payload).expect("writable after reopen");
    log.close().expect("close");
    eprintln!(
        "full disk checked: {} records acknowledged, {} rotations, error: {error}",
        acknowledged.len(),
        stats.rotations
    );
}
