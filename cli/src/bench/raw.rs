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
/// Size of the writes that pre-write it.
const PREWRITE_CHUNK_BYTES: usize = 4096;
/// Size of the file `disk-write-limit` writes around (pre-written once, like a recycled log).
const RING_FILE_BYTES: u64 = 256 << 20;
/// Size of each of its writes.
const RING_CHUNK_BYTES: usize = 1 << 20;
/// Bytes written between its syncs.
const RING_SYNC_EVERY_BYTES: u64 = 64 << 20;
/// Per-thread buffer of `memcpy-crc32`: far larger than the caches, like a segment.
const COPY_BUFFER_BYTES: usize = 32 << 20;

/// A file written once up front with zeros and synced, so that its blocks are allocated and
/// written (a later sync commits no extent conversion), then written over in a ring by the
/// trials of one raw baseline, each continuing where the last one stopped (so that every
/// trial writes pages that hold no pending data). Kept across trials.
#[derive(Debug)]
pub struct PrewrittenFile {
    file: File,
    path: PathBuf,
    len: u64,
    /// Next byte to write, modulo `len`.
    next_offset: AtomicU64,
}

impl PrewrittenFile {
    /// The file of `fdatasync-per-append`, pre-written in 4 KiB writes (small, so that its
    /// page-cache folios stay small).
    ///
    /// # Errors
    /// Creating, writing or syncing it failed.
    pub fn for_sync_per_append(directory: &Path) -> anyhow::Result<Self> {
        Self::create(
            &directory.join("fdatasync-per-append.dat"),
            SYNC_FILE_BYTES,
            PREWRITE_CHUNK_BYTES,
        )
    }

    /// The file of `disk-write-limit`.
    ///
    /// # Errors
    /// Creating, writing or syncing it failed.
    pub fn for_write_limit(directory: &Path) -> anyhow::Result<Self> {
        Self::create(
            &directory.join("disk-write-limit.dat"),
            RING_FILE_BYTES,
            RING_CHUNK_BYTES,
        )
    }

    /// Creates `path` and writes `len` zero bytes into it in `chunk_bytes` writes, then
    /// syncs it.
    fn create(path: &Path, len: u64, chunk_bytes: usize) -> anyhow::Result<Self> {
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
        Ok(Self {
            file,
            path: path.to_path_buf(),
            len,
            next_offset: AtomicU64::new(0),
        })
    }

    /// Writes `bytes` at the next offset of the ring, which wraps at `span` bytes.
    fn write_next(&self, bytes: &[u8], span: u64) -> anyhow::Result<()> {
        let len = bytes.len() as u64;
        let offset = self.next_offset.fetch_add(len, Ordering::Relaxed) % span;
        self.file
            .write_all_at(bytes, offset)
            .with_context(|| format!("pwrite {}", self.path.display()))
    }

    fn sync_data(&self) -> anyhow::Result<()> {
        self.file
            .sync_data()
            .with_context(|| format!("fdatasync {}", self.path.display()))
    }

    /// One `fdatasync-per-append` trial: `writers` threads each `pwrite` `payload` at the
    /// next free offset and `fdatasync` the file, for `duration`.
    ///
    /// # Errors
    /// A write or sync failed.
    pub fn sync_per_append_trial(
        &self,
        payload: &[u8],
        writers: usize,
        duration: Duration,
        disk: Option<&DiskCounter>,
    ) -> anyhow::Result<Trial> {
        let (mut trial, disk_bytes) = with_disk_bytes(disk, || {
            closed_loop(writers, duration, |_| {
                Ok(move || {
                    self.write_next(payload, self.len - payload.len() as u64)?;
                    self.sync_data()
                })
            })
        })?;
        trial.syncs = trial.ops;
        trial.disk_bytes_written = disk_bytes;
        Ok(trial)
    }

    /// One `disk-write-limit` trial: writes 1 MiB chunks for `duration`, syncing every
    /// 64 MiB and at the end, and counts the bytes as appends of `payload_len`-byte records.
    ///
    /// # Errors
    /// A write or sync failed.
    pub fn write_limit_trial(
        &self,
        payload_len: usize,
        duration: Duration,
        disk: Option<&DiskCounter>,
    ) -> anyhow::Result<Trial> {
        let chunk = vec![0x5a_u8; RING_CHUNK_BYTES];
        let (mut trial, disk_bytes) = with_disk_bytes(disk, || -> anyhow::Result<Trial> {
            let started = std::time::Instant::now();
            let (mut written, mut syncs) = (0_u64, 0_u64);
            while started.elapsed() < duration {
                self.write_next(&chunk, self.len)?;
                written += RING_CHUNK_BYTES as u64;
                if written.is_multiple_of(RING_SYNC_EVERY_BYTES) {
                    self.sync_data()?;
                    syncs += 1;
                }
            }
            self.sync_data()?;
            syncs += 1;
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
