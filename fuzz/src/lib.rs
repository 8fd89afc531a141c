//! Support for walbuf's fuzz targets: the property checks of `tests/src/fuzz.rs` (compiled
//! here as [`checks`]) and an allocator that records the largest single allocation, so that
//! [`run`] can check that no input makes a check — or the code it drives — allocate by what a
//! length field claims.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

#[path = "../../tests/src/fuzz.rs"]
pub mod checks;

/// The system allocator, recording the largest allocation since [`run`] last reset it.
pub struct LargestAllocation;

static LARGEST_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the only
// addition is an atomic maximum, which neither allocates nor panics.
unsafe impl GlobalAlloc for LargestAllocation {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST_BYTES.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which `System` shares.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST_BYTES.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation goes there).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST_BYTES.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` with `layout`; the caller upholds the rest.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: LargestAllocation = LargestAllocation;

/// Runs `check` on `data`, then asserts that no single allocation during it exceeded
/// [`checks::allocation_limit_bytes`] for an input of this size.
///
/// # Panics
/// When `check` panics (a property violated) or the allocation limit was exceeded.
pub fn run(data: &[u8], check: fn(&[u8])) {
    LARGEST_BYTES.store(0, Ordering::Relaxed);
    check(data);
    let largest = LARGEST_BYTES.load(Ordering::Relaxed);
    let limit = checks::allocation_limit_bytes(data.len());
    assert!(
        largest <= limit,
        "an input of {} bytes made one allocation of {largest} bytes (limit {limit})",
        data.len()
    );
}
