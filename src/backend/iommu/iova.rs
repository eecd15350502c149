//! The IOVA range allocator: page frames `[base, limit)` handed out
//! top-down below each device's limit, as Linux's `alloc_iova` does, with
//! per-CPU caches of recently freed ranges in front of it.
//!
//! Sizes of up to 32 pages are rounded up to a power of two so that freed
//! ranges can be cached and reused by size; every range is aligned to the
//! power of two at or above its size (Linux's `size_aligned`). An
//! allocation tries, in order: this CPU's loaded magazine, its previous
//! magazine, the depot, the tree of free ranges; and when the tree has no
//! room, it empties the caches into the tree and tries once more.

use alloc::collections::BTreeMap;

use alloc::sync::Arc;

use crate::backend::iommu::local;
use crate::backend::iommu::rcache::{MAX_CACHED_PAGES, RCache, order_of};
use crate::backend::iommu::{PAGE_SHIFT, PAGE_SIZE};
use crate::base::addr::DmaAddr;
use crate::sync::{AtomicUsize, Mutex, Ordering, bump, lock};

/// A range of IOVA pages handed out by an [`IovaAllocator`]: the proof
/// that the range is this holder's until it is freed.
#[derive(Debug, PartialEq, Eq)]
pub struct IovaAlloc {
    pfn: u64,
    pages: u64,
}

impl IovaAlloc {
    /// Rebuilds the allocation of a range that needed `needed` pages at
    /// page frame `pfn`, from what a mapping's handle carries.
    pub(crate) fn from_mapping(pfn: u64, needed: u64) -> Self {
        Self {
            pfn,
            pages: IovaAllocator::alloc_size(needed),
        }
    }

    /// The first page frame number.
    pub fn pfn(&self) -> u64 {
        self.pfn
    }

    /// Pages allocated (the request, rounded up for cacheable sizes).
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// The first I/O virtual address.
    pub fn addr(&self) -> DmaAddr {
        DmaAddr::new(self.pfn << PAGE_SHIFT)
    }

    /// The length in bytes.
    pub fn bytes(&self) -> u64 {
        self.pages << PAGE_SHIFT
    }

    /// One past the last page frame number.
    pub(crate) fn end_pfn(&self) -> u64 {
        self.pfn + self.pages
    }
}

/// Free page ranges: start → length, never adjacent, never overlapping.
#[derive(Default)]
struct FreeTree {
    free: BTreeMap<u64, u64>,
    /// Pages in `free`, kept with it so that counting costs nothing.
    total: u64,
}

impl FreeTree {
    /// The highest `pages`-page range aligned to `align` that ends at or
    /// below `limit`, taken out of the tree.
    fn alloc(&mut self, pages: u64, align: u64, limit: u64) -> Option<u64> {
        let (start, len, at) = self.free.range(..limit).rev().find_map(|(&start, &len)| {
            let end = (start + len).min(limit);
            let at = end.checked_sub(pages)? & !(align - 1);
            (at >= start).then_some((start, len, at))
        })?;
        self.free.remove(&start);
        if at > start {
            self.free.insert(start, at - start);
        }
        let tail = start + len - (at + pages);
        if tail > 0 {
            self.free.insert(at + pages, tail);
        }
        self.total -= pages;
        Some(at)
    }

    /// Gives `[pfn, pfn + pages)` back, merging it with its neighbours.
    fn insert(&mut self, pfn: u64, pages: u64) {
        self.total += pages;
        let mut start = pfn;
        let mut len = pages;
        if let Some((&p, &l)) = self.free.range(..pfn).next_back() {
            // Overlapping a free range would hand the IOVA out twice:
            // checked in every build.
            assert!(p + l <= pfn, "IOVA page {pfn:#x} freed twice");
            if p + l == pfn {
                self.free.remove(&p);
                start = p;
                len += l;
            }
        }
        if let Some((&n, &l)) = self.free.range(pfn..).next() {
            assert!(pfn + pages <= n, "IOVA page {n:#x} freed twice");
            if pfn + pages == n {
                self.free.remove(&n);
                len += l;
            }
        }
        self.free.insert(start, len);
    }
}

/// An IOVA range allocator over page frames `[base, limit)`.
///
/// Thread-safe. A free range of up to 32 pages goes first to the freeing
/// thread's own magazines (no lock, no atomic instruction: the fast path
/// of an alloc/free pair on one thread), then to per-CPU slots each with
/// its own lock, then to a depot, then to the tree of free ranges, which
/// has one lock. See the `local` and `rcache` modules.
///
/// # Example
///
/// ```
/// use dmacap::backend::iommu::IovaAllocator;
///
/// let a = IovaAllocator::new(1, 1 << 20); // page frames 1 .. 2^20 (4 GiB)
/// let x = a.alloc(3, 1 << 20).unwrap();   // rounded up to 4 pages
/// assert_eq!((x.pfn(), x.pages()), ((1 << 20) - 4, 4));
/// assert_eq!(a.free_pages(), (1 << 20) - 1 - 4);
/// // SAFETY: `x` came from `a`, and nothing uses the range any more.
/// unsafe { a.free(x) };
/// assert_eq!(a.alloc(4, 1 << 20).unwrap().pfn(), (1 << 20) - 4); // from the cache
/// assert_eq!(a.cache_hits(), 1);
/// ```
pub struct IovaAllocator {
    shared: Arc<Shared>,
}

/// The allocator's state that every thread reaches, and that a thread's
/// magazines keep alive while they hold ranges of it.
pub(crate) struct Shared {
    base: u64,
    limit: u64,
    tree: Mutex<FreeTree>,
    rcache: RCache,
    hits: AtomicUsize,
    misses: AtomicUsize,
}

impl Shared {
    /// Takes back free ranges of `pages` pages from a thread's magazine:
    /// into the per-CPU slots, and what does not fit there into the tree.
    pub(crate) fn give_back(&self, pages: u64, pfns: &[u64]) {
        if pfns.is_empty() {
            return;
        }
        if let Some(spill) = self.rcache.put_many(pages, pfns) {
            let mut tree = lock(&self.tree);
            spill.into_iter().for_each(|pfn| tree.insert(pfn, pages));
        }
    }

    /// Adds allocations a thread served from its magazines.
    #[cfg_attr(not(all(feature = "std", not(dmacap_loom))), allow(dead_code))]
    pub(crate) fn add_hits(&self, n: usize) {
        if n > 0 {
            bump(&self.hits, n);
        }
    }
}

impl IovaAllocator {
    /// An allocator of the page frames `[base, limit)`.
    ///
    /// # Panics
    ///
    /// If `base >= limit`.
    pub fn new(base: u64, limit: u64) -> Self {
        assert!(base < limit, "an IOVA space needs at least one page");
        let mut tree = FreeTree::default();
        tree.insert(base, limit - base);
        Self {
            shared: Arc::new(Shared {
                base,
                limit,
                tree: Mutex::new(tree),
                rcache: RCache::new(),
                hits: AtomicUsize::new(0),
                misses: AtomicUsize::new(0),
            }),
        }
    }

    /// What an allocation of `pages` takes: the next power of two for sizes
    /// that the caches hold (up to 32 pages), `pages` otherwise.
    #[inline]
    pub fn alloc_size(pages: u64) -> u64 {
        if pages <= MAX_CACHED_PAGES {
            pages.next_power_of_two()
        } else {
            pages
        }
    }

    /// Allocates a range of at least `pages` pages ending at or below page
    /// frame `limit` (exclusive), preferring high addresses. `None` if
    /// there is no room (or `pages` is zero).
    #[inline(always)]
    pub fn alloc(&self, pages: u64, limit: u64) -> Option<IovaAlloc> {
        let s = &*self.shared;
        if pages == 0 || pages > s.limit - s.base {
            return None;
        }
        let size = Self::alloc_size(pages);
        let limit = limit.min(s.limit);
        if local::keeps(size) {
            let order = order_of(size);
            if let Some(pfn) = local::pop(&self.shared, order, limit) {
                return Some(IovaAlloc { pfn, pages: size });
            }
        }
        self.alloc_slow(size, limit)
    }

    /// The per-CPU slots, the depot, then the tree.
    #[inline(never)]
    fn alloc_slow(&self, size: u64, limit: u64) -> Option<IovaAlloc> {
        let s = &*self.shared;
        let cached = size <= MAX_CACHED_PAGES;
        let pfn = match cached.then(|| s.rcache.get(size, limit)).flatten() {
            Some(pfn) => {
                bump(&s.hits, 1);
                pfn
            }
            None => {
                if cached {
                    bump(&s.misses, 1);
                }
                self.alloc_from_tree(size, limit)?
            }
        };
        Some(IovaAlloc { pfn, pages: size })
    }

    /// From the tree; if it has no room, after emptying the caches into it.
    fn alloc_from_tree(&self, size: u64, limit: u64) -> Option<u64> {
        let align = size.next_power_of_two();
        if let Some(pfn) = lock(&self.shared.tree).alloc(size, align, limit) {
            return Some(pfn);
        }
        self.drain_caches();
        lock(&self.shared.tree).alloc(size, align, limit)
    }

    /// Gives every cached range back to the tree: the calling thread's
    /// magazines, every per-CPU slot and the depot. (Other live threads'
    /// magazines are theirs until they free elsewhere or exit.)
    pub fn drain_caches(&self) {
        local::drain(&self.shared);
        let mut back = alloc::vec::Vec::new();
        self.shared
            .rcache
            .drain(|pages, pfn| back.push((pfn, pages)));
        let mut tree = lock(&self.shared.tree);
        for (pfn, pages) in back {
            tree.insert(pfn, pages);
        }
    }

    /// Gives `a` back: to this thread's magazine or a per-CPU cache for
    /// cacheable sizes, to the tree otherwise.
    ///
    /// # Safety
    ///
    /// `a` came from this allocator, and no device can use the range any
    /// more: its page table entries are cleared and the IOTLB invalidation
    /// covering them has completed.
    #[inline(always)]
    pub unsafe fn free(&self, a: IovaAlloc) {
        let s = &*self.shared;
        if !(s.base <= a.pfn && a.end_pfn() <= s.limit) {
            foreign_free(&a);
        }
        if local::keeps(a.pages) && local::push(&self.shared, order_of(a.pages), a.pfn) {
            return;
        }
        self.free_slow(a);
    }

    /// Into a per-CPU slot, or the tree for large ranges.
    #[inline(never)]
    fn free_slow(&self, a: IovaAlloc) {
        let s = &*self.shared;
        if a.pages <= MAX_CACHED_PAGES {
            s.give_back(a.pages, &[a.pfn]);
        } else {
            lock(&s.tree).insert(a.pfn, a.pages);
        }
    }

    /// Pages not allocated: free in the tree or held by the caches (the
    /// calling thread's magazines included; another live thread's are not
    /// seen). Exact when no allocation or free runs at the same time and no
    /// other live thread has freed into this allocator. A thread's
    /// magazines come back in its thread-local destructors: after
    /// `JoinHandle::join` returns, not yet when `thread::scope` returns
    /// after an implicit join.
    ///
    /// Counted from the tree and the caches when asked (a diagnostic), so
    /// that allocation and free update no shared counter.
    pub fn free_pages(&self) -> u64 {
        let tree = lock(&self.shared.tree).total;
        tree + self.shared.rcache.cached_pages() + local::held(&self.shared).0
    }

    /// Pages in the space, `limit - base`.
    pub fn total_pages(&self) -> u64 {
        self.shared.limit - self.shared.base
    }

    /// The space, as IOVAs: `[base, limit)` in bytes.
    pub fn aperture(&self) -> (DmaAddr, DmaAddr) {
        (
            DmaAddr::new(self.shared.base * PAGE_SIZE),
            DmaAddr::new(self.shared.limit * PAGE_SIZE),
        )
    }

    /// Allocations of cacheable size served by a magazine or the depot
    /// (statistics: exact on one thread; another thread's magazine hits
    /// are added when it spills, moves to another allocator, or exits).
    pub fn cache_hits(&self) -> usize {
        self.shared.hits.load(Ordering::Relaxed) + local::held(&self.shared).1
    }

    /// Allocations of cacheable size that went to the tree.
    pub fn cache_misses(&self) -> usize {
        self.shared.misses.load(Ordering::Relaxed)
    }
}

/// A range freed to an allocator it does not belong to: in every build.
#[cold]
#[inline(never)]
#[track_caller]
fn foreign_free(a: &IovaAlloc) -> ! {
    panic!(
        "IOVA pages {:#x}+{} freed to an allocator they do not belong to",
        a.pfn, a.pages
    )
}

impl core::fmt::Debug for IovaAllocator {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IovaAllocator")
            .field("base", &self.shared.base)
            .field("limit", &self.shared.limit)
            .field("free_pages", &self.free_pages())
            .field("cache_hits", &self.cache_hits())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn top_down_aligned_and_below_the_limit() {
        let a = IovaAllocator::new(1, 1024);
        let x = a.alloc(1, 1024).unwrap();
        assert_eq!(x.pfn(), 1023);
        let y = a.alloc(3, 1024).unwrap();
        assert_eq!((y.pfn(), y.pages()), (1016, 4), "4-aligned, below x");
        let z = a.alloc(40, 512).unwrap();
        assert_eq!(
            (z.pfn(), z.pages()),
            (448, 40),
            "64-aligned, below the limit"
        );
        assert_eq!(a.free_pages(), 1023 - 1 - 4 - 40);
        // SAFETY: all three came from `a` and are unused.
        unsafe {
            a.free(z);
            a.free(y);
            a.free(x);
        }
        assert_eq!(a.free_pages(), 1023);
    }

    #[test]
    fn exhaustion_and_draining_the_caches() {
        let a = IovaAllocator::new(0, 8);
        let xs: Vec<_> = (0..8).map(|_| a.alloc(1, 8).unwrap()).collect();
        assert!(a.alloc(1, 8).is_none());
        assert_eq!(a.free_pages(), 0);
        for x in xs {
            // SAFETY: from `a`, unused.
            unsafe { a.free(x) };
        }
        // All eight sit in the 1-page cache; an 8-page request drains it
        // into the tree, which coalesces them.
        let big = a.alloc(8, 8).unwrap();
        assert_eq!(big.pfn(), 0);
        assert!(a.alloc(1, 8).is_none());
        // SAFETY: from `a`, unused.
        unsafe { a.free(big) };
        assert_eq!(a.free_pages(), 8);
        assert!(a.alloc(0, 8).is_none());
        assert!(a.alloc(9, 8).is_none());
        assert_eq!(a.free_pages(), 8);
    }

    /// Ranges held in a thread's magazines go home when the thread exits,
    /// so the free count is exact again after a join; and no range is ever
    /// handed out twice while threads free into each other's allocators.
    #[test]
    fn thread_magazines_go_home_and_never_hand_out_twice() {
        extern crate std;
        use std::collections::BTreeSet;
        use std::sync::Mutex as StdMutex;

        let a = IovaAllocator::new(0, 1 << 16);
        let b = IovaAllocator::new(1 << 16, 1 << 17);
        let live = StdMutex::new(BTreeSet::new());
        std::thread::scope(|s| {
            let threads: Vec<_> = (0..3)
                .map(|t| {
                    let (a, b, live) = (&a, &b, &live);
                    s.spawn(move || {
                        let mut mine = Vec::new();
                        // Fewer under Miri, which checks the thread-local
                        // destructors and the cross-thread hand-backs the same way.
                        let rounds = if cfg!(miri) { 40 } else { 3000u64 };
                        for i in 0..rounds {
                            let alloc = if (i + t) % 3 == 0 { b } else { a };
                            let pages = 1 << (i % 5);
                            let x = alloc.alloc(pages, u64::MAX).unwrap();
                            for p in x.pfn()..x.end_pfn() {
                                assert!(
                                    live.lock().unwrap().insert(p),
                                    "page {p:#x} handed out twice"
                                );
                            }
                            mine.push((alloc, x));
                            if i % 4 != 0 {
                                let (alloc, x) = mine.swap_remove((i as usize * 7) % mine.len());
                                for p in x.pfn()..x.end_pfn() {
                                    live.lock().unwrap().remove(&p);
                                }
                                // SAFETY: from `alloc`, never given to a device.
                                unsafe { alloc.free(x) };
                            }
                        }
                        for (alloc, x) in mine {
                            for p in x.pfn()..x.end_pfn() {
                                live.lock().unwrap().remove(&p);
                            }
                            // SAFETY: as above.
                            unsafe { alloc.free(x) };
                        }
                    })
                })
                .collect();
            // An explicit join waits for the thread's exit, thread-local
            // destructors included (the scope's implicit join only waits
            // for the closure to return).
            threads.into_iter().for_each(|t| t.join().unwrap());
        });
        // Every thread has exited: its magazines went home.
        assert_eq!(a.free_pages(), 1 << 16);
        assert_eq!(b.free_pages(), 1 << 16);
        a.drain_caches();
        assert_eq!(a.alloc(1 << 16, u64::MAX).map(|x| x.pages()), Some(1 << 16));
    }

    /// Four allocators alternating in one thread: each keeps its ranges
    /// (or trades a shared way), the counts stay exact, and the thread's
    /// own magazines are drained when its allocator runs dry.
    #[test]
    fn one_thread_many_allocators() {
        let all: Vec<_> = (0..6)
            .map(|i| IovaAllocator::new(i * 64, i * 64 + 64))
            .collect();
        for round in 0..if cfg!(miri) { 24 } else { 200u64 } {
            for a in &all {
                let x = a.alloc(1 + round % 8, u64::MAX).unwrap();
                // SAFETY: from `a`, unused.
                unsafe { a.free(x) };
            }
        }
        for a in &all {
            assert_eq!(a.free_pages(), 64);
            let xs: Vec<_> = (0..64).map(|_| a.alloc(1, u64::MAX).unwrap()).collect();
            assert!(a.alloc(1, u64::MAX).is_none());
            for x in xs {
                // SAFETY: from `a`, unused.
                unsafe { a.free(x) };
            }
            // The 64 single pages sit in this thread's magazine and the
            // slots; one 64-page range needs all of them back in the tree.
            assert_eq!(a.alloc(64, u64::MAX).map(|x| x.pfn()), Some(x_base(a)));
        }
    }

    /// A free on this thread lands in its own magazine, not the locked
    /// per-CPU slots, and the next alloc of that size takes it back from
    /// there: the pair touches no lock.
    #[test]
    #[cfg(all(feature = "std", not(dmacap_loom)))]
    fn a_pair_stays_in_the_thread_magazine() {
        let a = IovaAllocator::new(0, 1024);
        let x = a.alloc(1, u64::MAX).unwrap();
        let pfn = x.pfn();
        // SAFETY: from `a`, unused.
        unsafe { a.free(x) };
        assert_eq!(local::held(&a.shared).0, 1, "in this thread's magazine");
        assert_eq!(a.shared.rcache.cached_pages(), 0, "not in a per-CPU slot");
        let y = a.alloc(1, u64::MAX).unwrap();
        assert_eq!(y.pfn(), pfn);
        assert_eq!(local::held(&a.shared), (0, 1), "served from it: one hit");
        // SAFETY: as above.
        unsafe { a.free(y) };
    }

    fn x_base(a: &IovaAllocator) -> u64 {
        a.aperture().0.as_u64() >> PAGE_SHIFT
    }

    #[test]
    fn tree_merges_neighbours() {
        let mut t = FreeTree::default();
        t.insert(10, 2);
        t.insert(14, 2);
        t.insert(12, 2);
        assert_eq!(t.free.iter().collect::<Vec<_>>(), [(&10, &6)]);
        assert_eq!(t.alloc(2, 2, 13), Some(10));
        assert_eq!(t.free.iter().collect::<Vec<_>>(), [(&12, &4)]);
        assert_eq!(t.alloc(8, 8, 100), None);
    }
}
