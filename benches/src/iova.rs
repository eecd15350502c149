//! The IOVA allocator (target 4) and its baseline: a plain first-fit
//! allocator over a `Mutex<BTreeMap>` of free ranges.

use std::collections::BTreeMap;
use std::sync::Mutex;

use dmacap::backend::iommu::{IovaAlloc, IovaAllocator};

/// Page frames handed out: `[BASE, LIMIT)` (48-bit IOVA space, 4 KiB pages).
pub const BASE: u64 = 1;
/// One past the last page frame.
pub const LIMIT: u64 = 1 << 36;

/// A first-fit range allocator: free ranges (start → pages) in a
/// `BTreeMap` behind one `Mutex`. An allocation takes the top of the lowest
/// free range that is long enough (so the range keeps its key and shrinks
/// in place); a free merges with both neighbours, growing the lower one in
/// place where it can. With the live ranges allocated in a row, as here, an
/// alloc + free pair is two lookups and two in-place updates: a strong
/// baseline, not a strawman.
#[derive(Debug)]
pub struct FirstFit {
    free: Mutex<BTreeMap<u64, u64>>,
}

impl FirstFit {
    /// Page frames `[base, limit)`, all free.
    pub fn new(base: u64, limit: u64) -> Self {
        Self {
            free: Mutex::new(BTreeMap::from([(base, limit - base)])),
        }
    }

    /// `pages` pages, or `None` if no free range is long enough.
    #[inline]
    pub fn alloc(&self, pages: u64) -> Option<u64> {
        let mut free = self.free.lock().unwrap();
        let (&start, len) = free.iter_mut().find(|(_, len)| **len >= pages)?;
        if *len == pages {
            free.remove(&start);
            return Some(start);
        }
        *len -= pages;
        Some(start + *len)
    }

    /// Gives `[pfn, pfn + pages)` back.
    #[inline]
    pub fn free(&self, pfn: u64, pages: u64) {
        let mut free = self.free.lock().unwrap();
        let end = pfn + pages;
        let next = free
            .range(end..)
            .next()
            .filter(|&(&n, _)| n == end)
            .map(|(&n, &l)| (n, l));
        if let Some(n) = next {
            free.remove(&n.0);
        }
        let more = next.map_or(0, |(_, l)| l);
        if let Some((&p, l)) = free.range_mut(..pfn).next_back() {
            assert!(p + *l <= pfn, "page {pfn:#x} freed twice");
            if p + *l == pfn {
                *l += pages + more;
                return;
            }
        }
        free.insert(pfn, pages + more);
    }
}

/// dmacap's allocator over the same space.
pub fn dmacap_allocator() -> IovaAllocator {
    IovaAllocator::new(BASE, LIMIT)
}

/// `n` live one-page ranges in dmacap's allocator.
pub fn dmacap_live(a: &IovaAllocator, n: usize) -> Vec<IovaAlloc> {
    (0..n).map(|_| a.alloc(1, LIMIT).expect("room")).collect()
}

/// `n` live one-page ranges in the baseline.
pub fn first_fit_live(a: &FirstFit, n: usize) -> Vec<u64> {
    (0..n).map(|_| a.alloc(1).expect("room")).collect()
}

/// One alloc + free of one page in dmacap's allocator.
#[inline(always)]
pub fn dmacap_pair(a: &IovaAllocator) {
    let x = a.alloc(1, LIMIT).expect("room");
    std::hint::black_box(x.pfn());
    // SAFETY: `x` came from `a`, and no device was ever given the range.
    unsafe { a.free(x) };
}

/// One alloc + free of one page in the baseline.
#[inline(always)]
pub fn first_fit_pair(a: &FirstFit) {
    let x = a.alloc(1).expect("room");
    std::hint::black_box(x);
    a.free(x, 1);
}
