//! The storage seam: every file operation the log performs goes through [`Storage`] and
//! [`SegmentFile`].
//!
//! Production uses [`FsStorage`] (real files; segments written through a memory mapping).
//! Tests plug in a simulated disk that tracks written versus durable bytes, so that they can
//! build the image a power cut would leave, fail a sync with `EIO`, or run out of space.
//!
//! Writes into a segment go through [`Region`]s: a segment hands out disjoint byte ranges with
//! [`SegmentFile::reserve`], and each region can be written exactly once. This is what makes
//! concurrent copies into one shared mapping sound without locks.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

mod fs;
#[allow(unsafe_code)] // The one module allowed to use `unsafe`: see its hazard analysis.
mod mmap;

pub use fs::FsStorage;
pub use mmap::{MappedSegment, Preparation};

/// A log directory: create, open, read, rename and delete files, and make the directory's
/// entries durable.
pub trait Storage: Send + Sync + 'static {
    /// An open segment file being appended to.
    type Segment: SegmentFile;

    /// Names of every file in the directory.
    ///
    /// # Errors
    /// The directory cannot be listed.
    fn list(&self) -> io::Result<Vec<String>>;

    /// Creates file `name` with `capacity_bytes` of really allocated, zeroed space (running out
    /// of space is an error here, never later), ready for writes from offset 0. The new
    /// directory entry is not durable until [`Storage::sync_directory`].
    ///
    /// # Errors
    /// `ENOSPC` when the space cannot be allocated, or any other I/O error.
    fn create(&self, name: &str, capacity_bytes: u64) -> io::Result<Self::Segment>;

    /// Like [`Storage::create`], for a segment that the log will sync in `pattern`: storage
    /// may prepare the file differently (the default ignores the hint). The file must meet
    /// the same contract either way; only the cost of later writes and syncs may differ.
    ///
    /// # Errors
    /// As [`Storage::create`].
    fn create_for(
        &self,
        name: &str,
        capacity_bytes: u64,
        pattern: SyncPattern,
    ) -> io::Result<Self::Segment> {
        let _ = pattern;
        self.create(name, capacity_bytes)
    }

    /// Opens the existing segment `name` of `capacity_bytes` for writing from `resume_offset`
    /// on; the file is extended (allocated) to `capacity_bytes` if it is shorter.
    ///
    /// # Errors
    /// Any I/O error.
    fn open(
        &self,
        name: &str,
        capacity_bytes: u64,
        resume_offset: u64,
    ) -> io::Result<Self::Segment>;

    /// The whole content of file `name`, read with plain reads (never through a mapping).
    ///
    /// # Errors
    /// Any I/O error.
    fn read(&self, name: &str) -> io::Result<Vec<u8>>;

    /// The whole content of file `name` into `bytes` (replacing what it held), read like
    /// [`Storage::read`]; recovery reads every segment into one buffer this way. The default
    /// calls [`Storage::read`]; an implementation that reuses the buffer's memory spares
    /// recovery a fresh segment-sized allocation per segment.
    ///
    /// # Errors
    /// Any I/O error.
    fn read_into(&self, name: &str, bytes: &mut Vec<u8>) -> io::Result<()> {
        *bytes = self.read(name)?;
        Ok(())
    }

    /// At most the first `len` bytes of file `name` (fewer if the file is shorter), read like
    /// [`Storage::read`]. The default reads the whole file.
    ///
    /// # Errors
    /// Any I/O error.
    fn read_prefix(&self, name: &str, len: usize) -> io::Result<Vec<u8>> {
        let mut bytes = self.read(name)?;
        bytes.truncate(len);
        Ok(bytes)
    }

    /// Erases file `name` from `offset` to `capacity_bytes` (the space reads as zeros and stays
    /// allocated) and makes that durable. Used by recovery to remove a torn tail before the
    /// segment is appended to again. Never called on a file that is open for writing.
    ///
    /// # Errors
    /// Any I/O error.
    fn erase_tail(&self, name: &str, offset: u64, capacity_bytes: u64) -> io::Result<()>;

    /// Renames `from` to `to` (atomically replacing nothing: `to` must not exist).
    ///
    /// # Errors
    /// Any I/O error.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;

    /// Deletes file `name`.
    ///
    /// # Errors
    /// Any I/O error.
    fn remove(&self, name: &str) -> io::Result<()>;

    /// Makes every create, rename and delete so far durable (fsync of the directory).
    ///
    /// # Errors
    /// Any I/O error.
    fn sync_directory(&self) -> io::Result<()>;

    /// A human-readable location for error messages (a path, or a simulated disk's name).
    fn describe(&self, name: &str) -> std::path::PathBuf;
}

/// How the log will sync a segment it creates: a hint for [`Storage::create_for`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyncPattern {
    /// Many small syncs, each of the few kilobytes appended since the last one (group commit
    /// under `SyncPolicy::Sync`). Each should write only those bytes, so preparation is worth
    /// a lot of up-front work (on Linux: turning the whole preallocated space into written
    /// blocks, so that no sync has to commit an extent conversion).
    Frequent,
    /// Few large syncs (`SyncPolicy::Periodic`/`None`: every interval, and the whole rest of
    /// the segment when it is full). Preparation should write as little as possible: every
    /// byte it writes competes with the log's own writeback for the disk.
    Rare,
}

/// One segment file open for appending.
pub trait SegmentFile: Send + Sync + 'static {
    /// The segment's size in bytes.
    fn capacity(&self) -> u64;

    /// Claims the next `len_bytes` bytes of the segment, or `None` if they do not fit. Regions
    /// are handed out in increasing offset order and never overlap.
    fn reserve(&self, len_bytes: u64) -> Option<Region>;

    /// Copies `parts`, one after another, into `region`. The parts' total length must equal
    /// the region's length.
    ///
    /// # Panics
    /// If the region belongs to another segment or the lengths differ (a bug in the caller).
    fn write(&self, region: Region, parts: &[&[u8]]);

    /// Makes bytes `[offset, offset + len_bytes)` durable (`msync`/`fdatasync`).
    ///
    /// # Errors
    /// The sync failed: the bytes' state on disk is unknown and the caller must treat the log as
    /// failed (never retry a failed sync and count it a success).
    fn sync(&self, offset: u64, len_bytes: u64) -> io::Result<()>;
}

/// A byte range of one segment, handed out once by [`SegmentFile::reserve`] and consumed by
/// [`SegmentFile::write`]. Not `Clone`: each range is written at most once.
#[derive(Debug)]
#[must_use = "a reserved region must be written"]
pub struct Region {
    cursor_id: u64,
    offset: u64,
    len_bytes: u64,
}

impl Region {
    /// Offset of the first byte.
    #[must_use]
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Length in bytes.
    #[must_use]
    pub fn len_bytes(&self) -> u64 {
        self.len_bytes
    }

    /// Offset just past the region.
    #[must_use]
    pub fn end(&self) -> u64 {
        self.offset + self.len_bytes
    }
}

/// Hands out the disjoint [`Region`]s of one segment. Every cursor has a process-unique id
/// that its regions carry, so a segment can check that a region is its own.
#[derive(Debug)]
pub struct RegionCursor {
    id: u64,
    next: AtomicU64,
    capacity: u64,
}

static NEXT_CURSOR_ID: AtomicU64 = AtomicU64::new(1);

impl RegionCursor {
    /// A cursor over `[start, capacity)`.
    #[must_use]
    pub fn new(start: u64, capacity: u64) -> Self {
        Self {
            id: NEXT_CURSOR_ID.fetch_add(1, Ordering::Relaxed),
            next: AtomicU64::new(start.min(capacity)),
            capacity,
        }
    }

    /// Claims the next `len_bytes` bytes, or `None` if they do not fit.
    pub fn reserve(&self, len_bytes: u64) -> Option<Region> {
        let mut current = self.next.load(Ordering::Relaxed);
        loop {
            let end = current.checked_add(len_bytes)?;
            if end > self.capacity {
                return None;
            }
            match self
                .next
                .compare_exchange_weak(current, end, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    return Some(Region {
                        cursor_id: self.id,
                        offset: current,
                        len_bytes,
                    });
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Whether `region` was handed out by this cursor; panics otherwise, and returns the
    /// region's `(offset, len)` for the write.
    ///
    /// # Panics
    /// If the region belongs to another cursor, or `total_len` differs from its length.
    #[must_use]
    pub fn check(&self, region: &Region, total_len: usize) -> (u64, u64) {
        assert_eq!(
            region.cursor_id, self.id,
            "a region was written to a segment that did not reserve it"
        );
        assert_eq!(
            region.len_bytes, total_len as u64,
            "write length differs from the region"
        );
        debug_assert!(region.end() <= self.capacity);
        (region.offset, region.len_bytes)
    }

    /// The segment's size in bytes.
    #[must_use]
    pub fn capacity(&self) -> u64 {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_disjoint_and_bounded() {
        let cursor = RegionCursor::new(64, 128);
        let first = cursor.reserve(40).expect("fits");
        let second = cursor.reserve(24).expect("fits");
        assert_eq!((first.offset(), first.end()), (64, 104));
        assert_eq!((second.offset(), second.end()), (104, 128));
        assert!(cursor.reserve(1).is_none());
    }

    #[test]
    #[should_panic(expected = "did not reserve it")]
    fn foreign_region_is_refused() {
        let one = RegionCursor::new(0, 64);
        let other = RegionCursor::new(0, 64);
        let region = other.reserve(8).expect("fits");
        let _ = one.check(&region, 8);
    }
}
