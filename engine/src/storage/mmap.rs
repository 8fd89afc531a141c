//! The memory-mapped segment writer: the only module of walbuf with `unsafe` code.
//!
//! Hazards and how each is closed:
//! * **Aliasing writes.** Threads copy into the mapping concurrently, through `&self`. Every
//!   write goes to a [`Region`] handed out by this segment's own [`RegionCursor`], which never
//!   hands out overlapping ranges and whose regions are consumed by the write: no two writes
//!   touch the same byte, so there is no data race.
//! * **Reads through the mapping.** There are none: this type never hands out a slice of the
//!   map; recovery reads files with plain `read`s.
//! * **Out-of-bounds writes.** A region always lies inside `[0, capacity)` and the map is
//!   exactly `capacity` bytes long.
//! * **SIGBUS on a full disk.** The file's blocks are allocated (`fallocate`) before it is
//!   mapped, so a store into the map never needs new space (see [`super::FsStorage`]).
//! * **The file changing underneath.** The directory is locked (`flock`) by the owning log; the
//!   file is never truncated while mapped.
//! * **Lifetime.** The map lives as long as the `MappedSegment`, which owns it.

use std::fs::File;
use std::io;

use memmap2::{Advice, MmapOptions, MmapRaw};

use super::{Region, RegionCursor, SegmentFile};

/// Page granularity used to prefault the mapping.
const PAGE_BYTES: u64 = 4096;

/// How [`MappedSegment::map`] prepares the mapping for the appends to come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Preparation {
    /// For many small syncs. Advise `MADV_RANDOM` before the first fault, so that the page
    /// cache keeps 4 KiB folios (a store dirties its whole folio, and a small sync should write
    /// a few KiB, not up to 2 MiB); touch every page (so that appends take no page fault);
    /// then sync the whole range once. Afterwards the file's blocks are *written* (not merely
    /// allocated), so a small sync writes only its own pages and commits no extent
    /// conversion. The price is one write of the whole range up front.
    PrefaultAndSync,
    /// For few large syncs. Advise `MADV_HUGEPAGE` (large folios make writeback of a large
    /// range markedly faster: measured 260 MB/s with 4 KiB folios, 630 MB/s with 2 MiB ones),
    /// and touch every page. The zeros stay dirty in the page cache and reach the disk together
    /// with the records written over them, so the range is written once.
    Prefault,
    /// For a segment resumed after recovery, whose remainder was prepared when the segment
    /// was made: advise `MADV_RANDOM` (so that small syncs stay small) and nothing more.
    /// Pages fault in as appends reach them, instead of the open touching and writing the
    /// whole remainder (up to the segment's size) before it returns.
    AdviseOnly,
}

/// A segment file mapped read-write, written only through [`Region`]s.
#[derive(Debug)]
pub struct MappedSegment {
    map: MmapRaw,
    cursor: RegionCursor,
    _file: File,
}

impl MappedSegment {
    /// Maps `file` (already allocated to `capacity` bytes) for writing from `resume_offset`
    /// on, and prepares the pages the writer will touch.
    ///
    /// The mapping is advised per `preparation` before its first fault (the advice decides
    /// the size of the page-cache folios the faults build), then one byte per page from
    /// `resume_offset` on is written (a zero over a zero) so that appends never take a major
    /// fault, and with [`Preparation::PrefaultAndSync`] the whole range is synced once.
    ///
    /// # Errors
    /// Mapping, advising or the initial sync failed.
    pub fn map(
        file: File,
        capacity: u64,
        resume_offset: u64,
        preparation: Preparation,
    ) -> io::Result<Self> {
        let len = usize::try_from(capacity)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment too large to map"))?;
        let map = MmapOptions::new().len(len).map_raw(&file)?;
        match preparation {
            Preparation::PrefaultAndSync | Preparation::AdviseOnly => map.advise(Advice::Random)?,
            Preparation::Prefault => {
                // Only a speed-up: a kernel without transparent huge pages refuses the advice,
                // and sequential advice is the next best thing.
                if map.advise(Advice::HugePage).is_err() {
                    map.advise(Advice::Sequential)?;
                }
            }
        }
        let segment = Self {
            map,
            cursor: RegionCursor::new(resume_offset, capacity),
            _file: file,
        };
        if preparation != Preparation::AdviseOnly {
            segment.prefault(resume_offset);
        }
        if preparation == Preparation::PrefaultAndSync && resume_offset < capacity {
            segment.sync(resume_offset, capacity - resume_offset)?;
        }
        Ok(segment)
    }

    /// Writes a zero to the (zero) first byte of every page from `from` on.
    fn prefault(&self, from: u64) {
        let base = self.map.as_mut_ptr();
        let mut page = from.next_multiple_of(PAGE_BYTES);
        while page < self.cursor.capacity() {
            // SAFETY: `page < capacity == map length`, so the pointer is inside the mapping.
            // No region at or past `from` has been handed out yet (the cursor starts at
            // `from` and this runs before the segment is shared), so no other access to this
            // byte can happen concurrently. The byte is zero (the file's space past the resume
            // offset was freshly allocated or erased), so writing zero changes no content.
            unsafe { base.add(page as usize).write_volatile(0) };
            page += PAGE_BYTES;
        }
    }
}

impl SegmentFile for MappedSegment {
    fn capacity(&self) -> u64 {
        self.cursor.capacity()
    }

    fn reserve(&self, len_bytes: u64) -> Option<Region> {
        self.cursor.reserve(len_bytes)
    }

    fn write(&self, region: Region, parts: &[&[u8]]) {
        let total: usize = parts.iter().map(|part| part.len()).sum();
        let (offset, _) = self.cursor.check(&region, total);
        let mut at = offset as usize;
        for part in parts {
            // SAFETY: `check` proved the region was handed out by this segment's cursor, which
            // never hands out overlapping ranges and keeps every range inside the mapping
            // (`region.end() <= capacity == map length`); the parts add up to exactly the
            // region's length, so `[at, at + part.len())` stays inside the region. The region
            // was moved into this call, so no other write can target these bytes, and nothing
            // reads the mapping. `part` is a separate allocation (never the mapping), so the
            // ranges do not overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    part.as_ptr(),
                    self.map.as_mut_ptr().add(at),
                    part.len(),
                );
            }
            at += part.len();
        }
    }

    fn sync(&self, offset: u64, len_bytes: u64) -> io::Result<()> {
        if len_bytes == 0 {
            return Ok(());
        }
        let end = offset.saturating_add(len_bytes).min(self.cursor.capacity());
        let offset = offset.min(end);
        self.map
            .flush_range(offset as usize, (end - offset) as usize)
    }
}
