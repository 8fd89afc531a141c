//! [`FsStorage`]: a real log directory, locked for one process.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use rustix::fs::{Advice as FileAdvice, FallocateFlags};
use walbuf_recovery::naming::LOCK_FILE_NAME;

use super::{MappedSegment, Preparation, Storage, SyncPattern};
use crate::error::{Error, Result};

/// A log directory on a real filesystem, exclusively owned by this process through an
/// advisory lock (`flock`) on its `LOCK` file for as long as the value lives.
#[derive(Debug)]
pub struct FsStorage {
    directory: PathBuf,
    directory_handle: File,
    _lock: File,
}

impl FsStorage {
    /// Opens (creating if needed) the log directory at `directory` and locks it.
    ///
    /// # Errors
    /// [`Error::Locked`] if another process (or another open log in this one) holds it;
    /// [`Error::Io`] if it cannot be created or opened.
    pub fn open(directory: impl AsRef<Path>) -> Result<Self> {
        let directory = directory.as_ref().to_path_buf();
        std::fs::create_dir_all(&directory)
            .map_err(|source| Error::io("create directory", &directory, source))?;
        let lock_path = directory.join(LOCK_FILE_NAME);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|source| Error::io("open lock file", &lock_path, source))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(Error::Locked { path: directory }),
            Err(TryLockError::Error(source)) => return Err(Error::io("lock", &lock_path, source)),
        }
        let directory_handle = File::open(&directory)
            .map_err(|source| Error::io("open directory", &directory, source))?;
        Ok(Self {
            directory,
            directory_handle,
            _lock: lock,
        })
    }

    /// The directory this storage owns.
    #[must_use]
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    fn path(&self, name: &str) -> PathBuf {
        self.directory.join(name)
    }
}

/// Gives `file` real blocks for `[offset, offset + len)`. `fallocate` fails cleanly with
/// `ENOSPC`; a filesystem without it gets zeros written instead (never a sparse file, which
/// would turn a full disk into a SIGBUS on a mapped write).
fn allocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    match rustix::fs::fallocate(file, FallocateFlags::empty(), offset, len) {
        Ok(()) => Ok(()),
        Err(errno)
            if errno == rustix::io::Errno::OPNOTSUPP || errno == rustix::io::Errno::NOSYS =>
        {
            write_zeros(file, offset, len)
        }
        Err(errno) => Err(errno.into()),
    }
}

fn write_zeros(mut file: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::io::{Seek, SeekFrom};
    const CHUNK: usize = 1 << 20;
    let zeros = vec![0_u8; CHUNK];
    file.seek(SeekFrom::Start(offset))?;
    let mut left = len;
    while left > 0 {
        let step = left.min(CHUNK as u64) as usize;
        file.write_all(&zeros[..step])?;
        left -= step as u64;
    }
    Ok(())
}

impl Storage for FsStorage {
    type Segment = MappedSegment;

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.directory)? {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn create(&self, name: &str, capacity_bytes: u64) -> io::Result<MappedSegment> {
        self.create_for(name, capacity_bytes, SyncPattern::Frequent)
    }

    fn create_for(
        &self,
        name: &str,
        capacity_bytes: u64,
        pattern: SyncPattern,
    ) -> io::Result<MappedSegment> {
        let path = self.path(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        let prepared = allocate(&file, 0, capacity_bytes).and_then(|()| file.sync_all());
        if let Err(error) = prepared {
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(error);
        }
        let preparation = match pattern {
            SyncPattern::Frequent => Preparation::PrefaultAndSync,
            SyncPattern::Rare => Preparation::Prefault,
        };
        MappedSegment::map(file, capacity_bytes, 0, preparation)
    }

    fn open(
        &self,
        name: &str,
        capacity_bytes: u64,
        resume_offset: u64,
    ) -> io::Result<MappedSegment> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path(name))?;
        let len = file.metadata()?.len();
        if len < capacity_bytes {
            allocate(&file, len, capacity_bytes - len)?;
            file.sync_all()?;
        }
        // The segment was prepared when it was made: reopening it after a crash only maps
        // it, so that recovery does not write the rest of the segment before the store opens.
        MappedSegment::map(file, capacity_bytes, resume_offset, Preparation::AdviseOnly)
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.read_into(name, &mut bytes)?;
        Ok(bytes)
    }

    fn read_into(&self, name: &str, bytes: &mut Vec<u8>) -> io::Result<()> {
        let mut file = File::open(self.path(name))?;
        // Without this, readahead builds large page-cache folios over the segment that a later
        // mapping of it would inherit (see `MappedSegment::map`).
        let _ = rustix::fs::fadvise(&file, 0, None, FileAdvice::Random);
        walbuf_recovery::replay::read_whole_file_into(&mut file, bytes)
    }

    fn read_prefix(&self, name: &str, len: usize) -> io::Result<Vec<u8>> {
        let file = File::open(self.path(name))?;
        let _ = rustix::fs::fadvise(&file, 0, None, FileAdvice::Random);
        let mut bytes = Vec::with_capacity(len);
        file.take(len as u64).read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    fn erase_tail(&self, name: &str, offset: u64, capacity_bytes: u64) -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(self.path(name))?;
        // Dropping the blocks past `offset` and allocating them again leaves zeros, whatever
        // was there, without writing the whole range.
        file.set_len(offset)?;
        allocate(&file, offset, capacity_bytes.saturating_sub(offset))?;
        file.sync_all()
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let target = self.path(to);
        if target.exists() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} already exists", target.display()),
            ));
        }
        std::fs::rename(self.path(from), target)
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.path(name))
    }

    fn sync_directory(&self) -> io::Result<()> {
        self.directory_handle.sync_all()
    }

    fn describe(&self, name: &str) -> PathBuf {
        self.path(name)
    }
}

#[cfg(test)]
mod tests {
    //! The segment files' space is really allocated, whichever path made it: never a sparse
    //! file, whose mapped write on a full disk would kill the process with SIGBUS instead of
    //! failing with `ENOSPC` up front. (The full-disk behaviour itself, on a real mount, is in
    //! `tests/tests/storage_fs.rs`.)
    #![allow(clippy::print_stderr)]

    use std::os::unix::fs::MetadataExt;

    use super::*;

    const CAPACITY_BYTES: u64 = 1 << 20;

    /// Bytes of storage the filesystem has given `path` (`st_blocks` counts 512-byte units).
    fn allocated_bytes(path: &Path) -> u64 {
        std::fs::metadata(path).expect("metadata").blocks() * 512
    }

    /// Whether the filesystem of `directory` has `fallocate` and accounts its blocks in
    /// `st_blocks`; if not, says why the test is skipped.
    fn filesystem_allocates(directory: &Path) -> bool {
        let probe_path = directory.join("fallocate-probe");
        let probe = File::create(&probe_path).expect("create probe");
        let supported = match rustix::fs::fallocate(
            &probe,
            FallocateFlags::empty(),
            0,
            CAPACITY_BYTES,
        ) {
            Ok(()) => {
                if allocated_bytes(&probe_path) >= CAPACITY_BYTES {
                    true
                } else {
                    eprintln!(
                        "skipped: the filesystem of {} does not count fallocated blocks in st_blocks",
                        directory.display()
                    );
                    false
                }
            }
            Err(errno) => {
                eprintln!(
                    "skipped: fallocate is not supported on {} ({errno})",
                    directory.display()
                );
                false
            }
        };
        drop(probe);
        std::fs::remove_file(&probe_path).expect("remove probe");
        supported
    }

    /// A storage in a fresh directory, if its filesystem allocates (else the test is skipped).
    fn allocating_storage() -> Option<(tempfile::TempDir, FsStorage)> {
        let directory = tempfile::tempdir().expect("tempdir");
        if !filesystem_allocates(directory.path()) {
            return None;
        }
        let storage = FsStorage::open(directory.path()).expect("open");
        Some((directory, storage))
    }

    /// `name` holds `byte` up to `kept` and zeros after it.
    fn assert_kept_then_zeros(storage: &FsStorage, name: &str, kept: usize, byte: u8) {
        let bytes = storage.read(name).expect("read");
        assert!(bytes[..kept].iter().all(|&b| b == byte), "prefix kept");
        assert!(bytes[kept..].iter().all(|&b| b == 0), "the rest is zeros");
    }

    fn assert_allocated(storage: &FsStorage, name: &str, context: &str) {
        let path = storage.describe(name);
        let length = std::fs::metadata(&path).expect("metadata").len();
        assert_eq!(length, CAPACITY_BYTES, "{context}: length");
        let allocated = allocated_bytes(&path);
        assert!(
            allocated >= length,
            "{context}: {name} is sparse: {allocated} bytes allocated of {length}"
        );
    }

    #[test]
    fn created_segments_have_every_block_allocated() {
        let Some((_directory, storage)) = allocating_storage() else {
            return;
        };
        for (name, pattern) in [
            ("frequent.tmp", SyncPattern::Frequent),
            ("rare.tmp", SyncPattern::Rare),
        ] {
            let segment = storage
                .create_for(name, CAPACITY_BYTES, pattern)
                .expect("create");
            assert_allocated(&storage, name, &format!("created for {pattern:?}"));
            drop(segment);
        }
    }

    /// `open` maps without touching the pages (`Preparation::AdviseOnly`), so only the
    /// allocation can have given the extension its blocks.
    #[test]
    fn a_short_segment_opened_is_extended_with_allocated_blocks() {
        let Some((_directory, storage)) = allocating_storage() else {
            return;
        };
        std::fs::write(storage.describe("1.wal"), [7_u8; 4096]).expect("write prefix");
        let segment = storage
            .open("1.wal", CAPACITY_BYTES, 4096)
            .expect("open segment");
        assert_allocated(&storage, "1.wal", "short segment opened");
        drop(segment);
        assert_kept_then_zeros(&storage, "1.wal", 4096, 7);
    }

    /// `erase_tail` drops the tail's blocks and allocates them again: no mapping touches them.
    #[test]
    fn an_erased_tail_is_allocated_again() {
        let Some((_directory, storage)) = allocating_storage() else {
            return;
        };
        let mut file = File::create(storage.describe("1.wal")).expect("create");
        file.write_all(&vec![9_u8; CAPACITY_BYTES as usize])
            .expect("fill");
        file.sync_all().expect("sync");
        drop(file);
        storage
            .erase_tail("1.wal", 8192, CAPACITY_BYTES)
            .expect("erase tail");
        assert_allocated(&storage, "1.wal", "erased tail");
        assert_kept_then_zeros(&storage, "1.wal", 8192, 9);
    }
}
