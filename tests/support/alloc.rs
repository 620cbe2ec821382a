//! A counting global allocator for the test binaries that check memory:
//! it tracks, per thread, the bytes currently allocated and their peak, so
//! a test can see what the connection it drives holds without public API
//! for it. Include with `#[path = "support/alloc.rs"] mod alloc;` and
//! install with `#[global_allocator] static A: alloc::Counting = alloc::Counting;`.

#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The system allocator, counting.
pub struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

fn count_one() {
    let _ = COUNT.try_with(|c| c.set(c.get() + 1));
}

fn add(delta: isize) {
    // During thread teardown the counters may be gone: skip counting then.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is forwarded unchanged to `System`; the counters only
// touch const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        count_one();
        if !p.is_null() {
            add(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        count_one();
        if !p.is_null() {
            add(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        System.dealloc(p, layout);
        add(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let q = System.realloc(p, layout, new_size);
        count_one();
        if !q.is_null() {
            add(new_size as isize - layout.size() as isize);
        }
        q
    }
}

/// Bytes this thread has allocated and not freed (frees of memory allocated
/// by other threads count against it).
pub fn live() -> isize {
    LIVE.with(Cell::get)
}

/// Starts a measurement: the peak is reset to what is live now.
pub fn reset_peak() {
    let now = live();
    PEAK.with(|p| p.set(now));
}

/// The most this thread held since the last `reset_peak`.
pub fn peak() -> isize {
    PEAK.with(Cell::get)
}

/// How many allocations (reallocations included) this thread has made.
pub fn allocations() -> usize {
    COUNT.with(Cell::get)
}
