//! The reference design walbuf improves on, rebuilt from walbuf's own parts: the same engine
//! with the log switched off (a bench-only baseline; see `shared/REFERENCE.md` for the
//! design).
//!
//! The reference keeps acknowledged ops in memory only and writes them to SQLite in batches;
//! a crash loses them. [`open_registry`] gives a [`ShapeRegistry`] whose log lives in
//! [`MemoryStorage`]: segments are plain memory, a sync does nothing, deleting a segment frees
//! its memory. Everything else is walbuf as it ships — validation, the skiplist buffer, the
//! overlay, the background flusher with its batches and checkpoints — so the difference
//! between a walbuf row and this one is what making the log durable costs: files, their
//! mapping and page faults, syncs, segment preparation and writeback.
//!
//! The log still encodes, checksums and copies every record (into memory): that is walbuf's
//! own work, which the reference does too (it builds its op tuples and ETS entries).

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use anyhow::Context;
use walbuf::shapes::ShapeSchema;
use walbuf::storage::{Region, RegionCursor, SegmentFile, Storage};
use walbuf::store::{DATABASE_FILE, StoreConfig};
use walbuf::{ShapeRegistry, Store};

/// Bytes of one independently locked piece of a memory segment: writers copying into
/// different pieces never wait for each other, and a piece is allocated on its first write.
const CHUNK_BYTES: usize = 64 * 1024;

/// Locks `mutex`; a writer that panicked while holding it left only bytes behind, which are
/// still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The content of one memory file: `capacity` bytes in chunks, unwritten chunks read as zeros.
#[derive(Debug)]
struct MemoryFile {
    capacity: u64,
    chunks: Vec<Mutex<Vec<u8>>>,
}

impl MemoryFile {
    /// A zeroed file of `capacity` bytes (no memory is allocated until written).
    fn zeroed(capacity: u64) -> Self {
        let chunk_count = usize::try_from(capacity.div_ceil(CHUNK_BYTES as u64))
            .expect("a memory segment fits in the address space");
        Self {
            capacity,
            chunks: (0..chunk_count).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }

    /// Bytes of chunk `index` (the last one may be short).
    fn chunk_len(&self, index: usize) -> usize {
        let start = (index * CHUNK_BYTES) as u64;
        (self.capacity - start).min(CHUNK_BYTES as u64) as usize
    }

    /// Copies `bytes` to `offset` (which the caller has checked lies inside the file).
    fn write_at(&self, offset: u64, mut bytes: &[u8]) {
        let mut at = usize::try_from(offset).expect("offsets inside a segment fit in usize");
        while !bytes.is_empty() {
            let index = at / CHUNK_BYTES;
            let within = at % CHUNK_BYTES;
            let mut chunk = lock(&self.chunks[index]);
            if chunk.is_empty() {
                chunk.resize(self.chunk_len(index), 0);
            }
            let step = bytes.len().min(chunk.len() - within);
            chunk[within..within + step].copy_from_slice(&bytes[..step]);
            bytes = &bytes[step..];
            at += step;
        }
    }

    /// Zeroes `[offset, capacity)`.
    fn zero_from(&self, offset: u64) {
        let offset = usize::try_from(offset.min(self.capacity)).unwrap_or(usize::MAX);
        for (index, chunk) in self.chunks.iter().enumerate() {
            let start = index * CHUNK_BYTES;
            let mut chunk = lock(chunk);
            if start >= offset {
                // Wholly past the offset: back to unwritten.
                *chunk = Vec::new();
            } else if !chunk.is_empty() && offset - start < chunk.len() {
                chunk[offset - start..].fill(0);
            }
        }
    }

    /// The whole content, `capacity` bytes.
    fn read_all(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.capacity as usize);
        for (index, chunk) in self.chunks.iter().enumerate() {
            let chunk = lock(chunk);
            if chunk.is_empty() {
                bytes.resize(bytes.len() + self.chunk_len(index), 0);
            } else {
                bytes.extend_from_slice(&chunk);
            }
        }
        bytes
    }
}

/// A log directory held in memory: the log off. Files are named byte arrays; creating one
/// allocates nothing until it is written, syncs do nothing, removing a file frees its memory
/// once the log drops its open segment.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    files: Mutex<HashMap<String, Arc<MemoryFile>>>,
}

impl MemoryStorage {
    fn file(&self, name: &str) -> io::Result<Arc<MemoryFile>> {
        lock(&self.files)
            .get(name)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, name.to_owned()))
    }
}

impl Storage for MemoryStorage {
    type Segment = MemorySegment;

    fn list(&self) -> io::Result<Vec<String>> {
        Ok(lock(&self.files).keys().cloned().collect())
    }

    fn create(&self, name: &str, capacity_bytes: u64) -> io::Result<MemorySegment> {
        let mut files = lock(&self.files);
        if files.contains_key(name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                name.to_owned(),
            ));
        }
        let file = Arc::new(MemoryFile::zeroed(capacity_bytes));
        files.insert(name.to_owned(), Arc::clone(&file));
        Ok(MemorySegment {
            cursor: RegionCursor::new(0, capacity_bytes),
            file,
        })
    }

    fn open(
        &self,
        name: &str,
        capacity_bytes: u64,
        resume_offset: u64,
    ) -> io::Result<MemorySegment> {
        let mut file = self.file(name)?;
        if file.capacity < capacity_bytes {
            // Extend: a new file with the old content.
            let grown = MemoryFile::zeroed(capacity_bytes);
            grown.write_at(0, &file.read_all());
            file = Arc::new(grown);
            lock(&self.files).insert(name.to_owned(), Arc::clone(&file));
        }
        Ok(MemorySegment {
            cursor: RegionCursor::new(resume_offset, capacity_bytes),
            file,
        })
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        Ok(self.file(name)?.read_all())
    }

    fn erase_tail(&self, name: &str, offset: u64, _capacity_bytes: u64) -> io::Result<()> {
        self.file(name)?.zero_from(offset);
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut files = lock(&self.files);
        if files.contains_key(to) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, to.to_owned()));
        }
        let file = files
            .remove(from)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, from.to_owned()))?;
        files.insert(to.to_owned(), file);
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        lock(&self.files)
            .remove(name)
            .map(drop)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, name.to_owned()))
    }

    fn sync_directory(&self) -> io::Result<()> {
        Ok(())
    }

    fn describe(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("memory:{name}"))
    }
}

/// An open segment of a [`MemoryStorage`]; keeps its memory alive after removal until
/// dropped.
#[derive(Debug)]
pub struct MemorySegment {
    file: Arc<MemoryFile>,
    cursor: RegionCursor,
}

impl SegmentFile for MemorySegment {
    fn capacity(&self) -> u64 {
        self.cursor.capacity()
    }

    fn reserve(&self, len_bytes: u64) -> Option<Region> {
        self.cursor.reserve(len_bytes)
    }

    fn write(&self, region: Region, parts: &[&[u8]]) {
        let total: usize = parts.iter().map(|part| part.len()).sum();
        let (mut offset, _) = self.cursor.check(&region, total);
        for part in parts {
            self.file.write_at(offset, part);
            offset += part.len() as u64;
        }
    }

    fn sync(&self, _offset: u64, _len_bytes: u64) -> io::Result<()> {
        Ok(())
    }
}

/// Opens a fresh shape registry of the reference design in `directory`: its SQLite database
/// there (as walbuf's), its log in memory.
///
/// # Errors
/// The directory or the store could not be made.
pub fn open_registry(
    directory: &Path,
    config: StoreConfig,
) -> anyhow::Result<ShapeRegistry<MemoryStorage>> {
    std::fs::create_dir_all(directory)
        .with_context(|| format!("cannot create {}", directory.display()))?;
    let (store, _report) = Store::open_with(
        MemoryStorage::default(),
        &directory.join(DATABASE_FILE),
        ShapeSchema,
        config,
    )
    .with_context(|| format!("cannot open a log-off registry in {}", directory.display()))?;
    Ok(ShapeRegistry::new(store))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(segment: &MemorySegment, bytes: &[u8]) -> u64 {
        let region = segment.reserve(bytes.len() as u64).expect("the bytes fit");
        let offset = region.offset();
        segment.write(region, &[bytes]);
        offset
    }

    #[test]
    fn writes_read_back_across_chunks_and_unwritten_space_is_zero() {
        let storage = MemoryStorage::default();
        let capacity = (CHUNK_BYTES * 2 + 100) as u64;
        let segment = storage.create("a", capacity).expect("create");
        let first: Vec<u8> = (0..CHUNK_BYTES - 10).map(|index| index as u8).collect();
        let second = [7_u8; 30];
        append(&segment, &first);
        assert_eq!(append(&segment, &second), first.len() as u64);
        let bytes = storage.read("a").expect("read");
        assert_eq!(bytes.len() as u64, capacity);
        assert_eq!(&bytes[..first.len()], &first[..]);
        assert_eq!(&bytes[first.len()..first.len() + 30], &second[..]);
        assert!(bytes[first.len() + 30..].iter().all(|&byte| byte == 0));

        storage.erase_tail("a", 5, capacity).expect("erase");
        let erased = storage.read("a").expect("read");
        assert_eq!(&erased[..5], &first[..5]);
        assert!(erased[5..].iter().all(|&byte| byte == 0));
    }

    #[test]
    fn names_behave_like_a_directory() {
        let storage = MemoryStorage::default();
        drop(storage.create("a", 16).expect("create"));
        assert!(storage.create("a", 16).is_err(), "create never replaces");
        storage.rename("a", "b").expect("rename");
        assert_eq!(storage.list().expect("list"), vec!["b".to_owned()]);
        drop(storage.create("c", 16).expect("create"));
        assert!(storage.rename("b", "c").is_err(), "rename never replaces");
        storage.remove("b").expect("remove");
        assert!(storage.read("b").is_err());
        let reopened = storage.open("c", 32, 4).expect("open and grow");
        assert_eq!(reopened.capacity(), 32);
        assert_eq!(append(&reopened, &[1, 2]), 4);
    }

    #[test]
    fn a_registry_runs_on_memory_storage() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let registry =
            open_registry(directory.path(), StoreConfig::default()).expect("open registry");
        let body = super::super::workload::shape_body();
        for key in 0..100 {
            registry
                .add_shape(super::super::workload::shape_of(key, &body))
                .expect("add_shape");
        }
        registry.store().flush().expect("flush");
        assert_eq!(registry.store().stats().ops_flushed, 100);
        registry.close().expect("close");
    }
}
