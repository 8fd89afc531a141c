//! The raw baselines: what the hardware allows with no log around it.
//!
//! * `fdatasync-per-append`: `pwrite` of the record's bytes at the next offset of one shared,
//!   pre-written file, then `fdatasync`: one sync per append, the cost a log without group
//!   commit pays. The file is written once up front with 4 KiB `pwrite`s and synced, so its
//!   blocks are allocated and written (a sync commits no extent conversion) and its page-cache
//!   folios are 4 KiB (large writes would build large folios, and each sync would then write
//!   a whole large folio; see `shared/TOOLING.md`).
//! * `disk-write-limit`: the disk's sequential write bandwidth, in appends: one thread
//!   `pwrite`s 1 MiB chunks around a pre-written 256 MiB file and `fdatasync`s it after every
//!   64 MiB and at the end; ops are the bytes the disk took divided by one record's frame. A
//!   log that does not wait for syncs cannot sustain more appends than this for longer than
//!   the page cache absorbs.
//! * `memcpy-crc32`: each thread encodes the same frame as the log (header, checksum with a
//!   salt, trailer) and copies it into its own prefaulted buffer, wrapping around: the CPU and
//!   memory work of an append with no reservation, publication or page-cache cost.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use walbuf_recovery::format::{
    RecordKind, encode_record_header, encode_record_trailer, padded_frame_len, record_checksum,
};

use super::driver::{DiskCounter, Trial, closed_loop, with_disk_bytes};

/// Size of the shared file of `fdatasync-per-append` (written once, then reused in a ring).
const SYNC_FILE_BYTES: u64 = 64 << 20;
/// Size of the writes that pre-write it (small, so that page-cache folios stay small).
const PREWRITE_CHUNK_BYTES: usize = 4096;
/// Size of the file `disk-write-limit` writes around (pre-written once, like a recycled log).
const RING_FILE_BYTES: u64 = 256 << 20;
/// Size of each of its writes.
const RING_CHUNK_BYTES: usize = 1 << 20;
/// Bytes written between its syncs.
const RING_SYNC_EVERY_BYTES: u64 = 64 << 20;
/// Per-thread buffer of `memcpy-crc32`: far larger than the caches, like a segment.
const COPY_BUFFER_BYTES: usize = 32 << 20;

/// Creates `path` and writes `len` zero bytes into it in `chunk_bytes` writes, then syncs it:
/// its blocks are allocated and written, so later syncs commit no extent conversion.
fn prewritten_file(path: &Path, len: u64, chunk_bytes: usize) -> anyhow::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let chunk = vec![0_u8; chunk_bytes];
    for offset in (0..len).step_by(chunk_bytes) {
        file.write_all_at(&chunk, offset)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    file.sync_all()
        .with_context(|| format!("cannot sync {}", path.display()))?;
    Ok(file)
}

/// The file `fdatasync-per-append` writes to, kept across trials.
#[derive(Debug)]
pub struct SyncFile {
    file: File,
    path: PathBuf,
    /// Next byte to write (modulo the file's size): each trial continues where the last one
    /// stopped, so every trial writes pages that hold no pending data.
    next_offset: AtomicU64,
}

impl SyncFile {
    /// Creates and pre-writes the file under `directory`.
    ///
    /// # Errors
    /// Creating, writing or syncing it failed.
    pub fn create(directory: &Path) -> anyhow::Result<Self> {
        let path = directory.join("fdatasync-per-append.dat");
        let file = prewritten_file(&path, SYNC_FILE_BYTES, PREWRITE_CHUNK_BYTES)?;
        Ok(Self {
            file,
            path,
            next_offset: AtomicU64::new(0),
        })
    }

    /// One trial: `writers` threads each `pwrite` `payload` at the next free offset and
    /// `fdatasync` the file, for `duration`.
    ///
    /// # Errors
    /// A write or sync failed.
    pub fn trial(
        &self,
        payload: &[u8],
        writers: usize,
        duration: Duration,
        disk: Option<&DiskCounter>,
    ) -> anyhow::Result<Trial> {
        let len = payload.len() as u64;
        let (mut trial, disk_bytes) = with_disk_bytes(disk, || {
            closed_loop(writers, duration, |_| {
                Ok(move || {
                    let offset = self.next_offset.fetch_add(len, Ordering::Relaxed)
                        % (SYNC_FILE_BYTES - len);
                    self.file
                        .write_all_at(payload, offset)
                        .with_context(|| format!("pwrite {}", self.path.display()))?;
                    self.file
                        .sync_data()
                        .with_context(|| format!("fdatasync {}", self.path.display()))
                })
            })
        })?;
        trial.syncs = trial.ops;
        trial.disk_bytes_written = disk_bytes;
        Ok(trial)
    }
}

/// The file `disk-write-limit` writes around, kept across trials.
#[derive(Debug)]
pub struct RingFile {
    file: File,
    path: PathBuf,
    /// Where the next trial starts writing.
    next_offset: u64,
}

impl RingFile {
    /// Creates and pre-writes the file under `directory`.
    ///
    /// # Errors
    /// Creating, writing or syncing it failed.
    pub fn create(directory: &Path) -> anyhow::Result<Self> {
        let path = directory.join("disk-write-limit.dat");
        let file = prewritten_file(&path, RING_FILE_BYTES, RING_CHUNK_BYTES)?;
        Ok(Self {
            file,
            path,
            next_offset: 0,
        })
    }

    /// One trial: writes for `duration`, syncs, and counts the bytes as appends of
    /// `payload_len`-byte records.
    ///
    /// # Errors
    /// A write or sync failed.
    pub fn trial(
        &mut self,
        payload_len: usize,
        duration: Duration,
        disk: Option<&DiskCounter>,
    ) -> anyhow::Result<Trial> {
        let chunk = vec![0x5a_u8; RING_CHUNK_BYTES];
        let (mut trial, disk_bytes) = with_disk_bytes(disk, || -> anyhow::Result<Trial> {
            let started = std::time::Instant::now();
            let (mut written, mut syncs) = (0_u64, 0_u64);
            let sync = |syncs: &mut u64| -> anyhow::Result<()> {
                *syncs += 1;
                self.file
                    .sync_data()
                    .with_context(|| format!("fdatasync {}", self.path.display()))
            };
            while started.elapsed() < duration {
                let offset = self.next_offset % RING_FILE_BYTES;
                self.file
                    .write_all_at(&chunk, offset)
                    .with_context(|| format!("pwrite {}", self.path.display()))?;
                self.next_offset += RING_CHUNK_BYTES as u64;
                written += RING_CHUNK_BYTES as u64;
                if written.is_multiple_of(RING_SYNC_EVERY_BYTES) {
                    sync(&mut syncs)?;
                }
            }
            sync(&mut syncs)?;
            Ok(Trial::throughput(
                written / padded_frame_len(payload_len),
                started.elapsed(),
                syncs,
            ))
        })?;
        trial.disk_bytes_written = disk_bytes;
        Ok(trial)
    }
}

/// One trial of `memcpy-crc32`: `writers` threads each encode and copy `payload` as a log
/// record into their own prefaulted buffer, for `duration`.
///
/// # Errors
/// None in practice (the signature matches the other systems).
pub fn copy_trial(payload: &[u8], writers: usize, duration: Duration) -> anyhow::Result<Trial> {
    let padded = padded_frame_len(payload.len()) as usize;
    closed_loop(writers, duration, |index| {
        let mut buffer = vec![1_u8; COPY_BUFFER_BYTES];
        let salt = 0x5eed_0000_0000_0001_u64 ^ index as u64;
        let mut op_key = (index as u64) << 40;
        let mut at = 0_usize;
        Ok(move || {
            op_key += 1;
            let header = encode_record_header(RecordKind::Op(1), op_key, payload.len());
            let checksum = record_checksum(salt, &header, payload);
            let (trailer, trailer_len) = encode_record_trailer(checksum, payload.len());
            if at + padded > buffer.len() {
                at = 0;
            }
            let frame = &mut buffer[at..at + padded];
            let (head, rest) = frame.split_at_mut(header.len());
            head.copy_from_slice(&header);
            let (body, tail) = rest.split_at_mut(payload.len());
            body.copy_from_slice(payload);
            tail.copy_from_slice(&trailer[..trailer_len]);
            std::hint::black_box(&mut buffer);
            at += padded;
            Ok(())
        })
    })
}
