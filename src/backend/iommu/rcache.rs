//! Per-CPU caches of recently freed IOVA ranges (Linux's `iova_rcache`).
//!
//! One cache per size class (1, 2, 4, 8, 16 and 32 pages). Each CPU slot
//! has a *loaded* and a *previous* magazine of up to [`MAG_SIZE`] page
//! frame numbers; full magazines go to a bounded global depot, and empty
//! ones are refilled from it. A free that finds both magazines full and the
//! depot full hands the loaded magazine's ranges back to the tree.
//!
//! Lock order: a CPU slot, then the depot. Neither is held while the
//! caller takes the tree's lock.

use alloc::vec::Vec;

use crate::sync::{Mutex, SpinMutex, cpu_hint, lock, spin_lock};

/// Page frame numbers per magazine (Linux: 127, so that a magazine and its
/// count fill 1 KiB).
pub(crate) const MAG_SIZE: usize = 127;
/// Size classes cached: orders `0..ORDERS`, i.e. 1 to 32 pages.
pub(crate) const ORDERS: usize = 6;
/// The largest cached size, in pages.
pub(crate) const MAX_CACHED_PAGES: u64 = 1 << (ORDERS - 1);
/// CPU slots per size class; a thread uses slot `cpu_hint() % CPU_SLOTS`.
pub(crate) const CPU_SLOTS: usize = 4;
/// Full magazines the depot of one size class keeps at most.
pub(crate) const DEPOT_MAGS: usize = 32;

/// Up to [`MAG_SIZE`] page frame numbers of free ranges of one size.
#[derive(Default)]
pub(crate) struct Magazine {
    pfns: Vec<u64>,
}

impl Magazine {
    fn is_full(&self) -> bool {
        self.pfns.len() == MAG_SIZE
    }

    fn is_empty(&self) -> bool {
        self.pfns.is_empty()
    }

    fn push(&mut self, pfn: u64) {
        debug_assert!(!self.is_full());
        if self.pfns.capacity() == 0 {
            self.pfns.reserve_exact(MAG_SIZE);
        }
        self.pfns.push(pfn);
    }

    /// Takes the most recently pushed range that ends at or below
    /// `limit` (an exclusive page frame number).
    fn pop_below(&mut self, pages: u64, limit: u64) -> Option<u64> {
        let i = self.pfns.iter().rposition(|&p| p + pages <= limit)?;
        Some(self.pfns.swap_remove(i))
    }

    /// The page frame numbers it holds, emptying it.
    pub(crate) fn take(&mut self) -> Vec<u64> {
        core::mem::take(&mut self.pfns)
    }
}

/// One CPU slot's magazines.
#[derive(Default)]
struct CpuMags {
    loaded: Magazine,
    prev: Magazine,
}

/// One CPU slot, alone in its cache line(s): two threads on two slots
/// never write the same line.
#[repr(align(64))]
struct CpuSlot(SpinMutex<CpuMags>);

/// The cache of one size class.
struct SizeCache {
    cpus: [CpuSlot; CPU_SLOTS],
    depot: Mutex<Vec<Magazine>>,
}

impl SizeCache {
    fn new() -> Self {
        Self {
            cpus: core::array::from_fn(|_| CpuSlot(SpinMutex::new(CpuMags::default()))),
            depot: Mutex::new(Vec::new()),
        }
    }

    /// This CPU's slot.
    #[inline(always)]
    fn this_cpu(&self) -> &SpinMutex<CpuMags> {
        &self.cpus[cpu_hint() % CPU_SLOTS].0
    }
}

/// The caches of every size class.
pub(crate) struct RCache {
    sizes: [SizeCache; ORDERS],
}

/// The size class of an allocation of `pages` (a power of two up to
/// [`MAX_CACHED_PAGES`]).
#[inline]
pub(crate) fn order_of(pages: u64) -> usize {
    debug_assert!(pages.is_power_of_two() && pages <= MAX_CACHED_PAGES);
    pages.trailing_zeros() as usize
}

impl RCache {
    pub(crate) fn new() -> Self {
        Self {
            sizes: core::array::from_fn(|_| SizeCache::new()),
        }
    }

    /// A cached range of `pages` (a cacheable size) ending at or below
    /// `limit`: loaded magazine, then previous, then the depot.
    pub(crate) fn get(&self, pages: u64, limit: u64) -> Option<u64> {
        let cache = &self.sizes[order_of(pages)];
        let mut cpu = spin_lock(cache.this_cpu());
        if let Some(pfn) = cpu.loaded.pop_below(pages, limit) {
            return Some(pfn);
        }
        if let Some(pfn) = cpu.prev.pop_below(pages, limit) {
            let cpu = &mut *cpu;
            core::mem::swap(&mut cpu.loaded, &mut cpu.prev);
            return Some(pfn);
        }
        let mut depot = lock(&cache.depot);
        // A depot magazine may hold only ranges above `limit` (another
        // device's mask, in a shared allocator): take the newest that can
        // serve this one.
        let i = depot
            .iter()
            .rposition(|m| m.pfns.iter().any(|&p| p + pages <= limit))?;
        let mut mag = depot.swap_remove(i);
        drop(depot);
        let pfn = mag.pop_below(pages, limit);
        // The loaded magazine was empty: replacing it loses nothing.
        debug_assert!(cpu.loaded.is_empty());
        cpu.loaded = mag;
        pfn
    }

    /// Caches a freed range of `pages` (a cacheable size). Returns the
    /// ranges that did not fit (every magazine and the depot full), which
    /// the caller gives back to the tree.
    #[cfg(test)]
    pub(crate) fn put(&self, pages: u64, pfn: u64) -> Option<Vec<u64>> {
        self.put_many(pages, &[pfn])
    }

    /// Caches freed ranges of `pages` (a cacheable size) under one lock of
    /// this CPU's slot. Returns the ranges that did not fit (every magazine
    /// and the depot full), which the caller gives back to the tree.
    pub(crate) fn put_many(&self, pages: u64, pfns: &[u64]) -> Option<Vec<u64>> {
        let cache = &self.sizes[order_of(pages)];
        let mut cpu = spin_lock(cache.this_cpu());
        let cpu = &mut *cpu;
        let mut spill: Option<Vec<u64>> = None;
        for &pfn in pfns {
            if cpu.loaded.is_full() {
                if !cpu.prev.is_full() {
                    core::mem::swap(&mut cpu.loaded, &mut cpu.prev);
                } else {
                    let mut full = core::mem::take(&mut cpu.loaded);
                    let mut depot = lock(&cache.depot);
                    if depot.len() < DEPOT_MAGS {
                        depot.push(full);
                    } else {
                        drop(depot);
                        spill.get_or_insert_with(Vec::new).extend(full.take());
                    }
                }
            }
            cpu.loaded.push(pfn);
        }
        spill
    }

    /// Pages held by every cache (free, not in the tree). Exact when no
    /// allocation or free runs at the same time.
    pub(crate) fn cached_pages(&self) -> u64 {
        let mut n = 0;
        for (order, cache) in self.sizes.iter().enumerate() {
            let pages = 1u64 << order;
            for slot in &cache.cpus {
                let cpu = spin_lock(&slot.0);
                n += (cpu.loaded.pfns.len() + cpu.prev.pfns.len()) as u64 * pages;
            }
            n += lock(&cache.depot)
                .iter()
                .map(|m| m.pfns.len() as u64 * pages)
                .sum::<u64>();
        }
        n
    }

    /// Empties every cache, calling `each(pages, pfn)` for every range
    /// held. Used when the tree is out of space, as Linux does before it
    /// gives up.
    pub(crate) fn drain(&self, mut each: impl FnMut(u64, u64)) {
        for (order, cache) in self.sizes.iter().enumerate() {
            let pages = 1u64 << order;
            for slot in &cache.cpus {
                let mut cpu = spin_lock(&slot.0);
                let (a, b) = (cpu.loaded.take(), cpu.prev.take());
                drop(cpu);
                a.into_iter().chain(b).for_each(|pfn| each(pages, pfn));
            }
            let mags = core::mem::take(&mut *lock(&cache.depot));
            for mut m in mags {
                m.take().into_iter().for_each(|pfn| each(pages, pfn));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magazines_fill_then_spill_to_the_depot_then_to_the_tree() {
        let c = RCache::new();
        // Loaded, then previous, fill; then full magazines go to the depot.
        let per_slot = 2 * MAG_SIZE;
        let to_fill_depot = per_slot + DEPOT_MAGS * MAG_SIZE;
        let mut spilled = 0;
        for pfn in 0..(to_fill_depot + MAG_SIZE) as u64 {
            if let Some(v) = c.put(1, pfn) {
                spilled += v.len();
            }
        }
        assert_eq!(spilled, MAG_SIZE, "one full magazine went back to the tree");
        let mut held = 0;
        c.drain(|pages, _| {
            assert_eq!(pages, 1);
            held += 1;
        });
        assert_eq!(held + spilled, to_fill_depot + MAG_SIZE);
    }

    #[test]
    fn get_respects_the_limit_and_prefers_the_newest() {
        let c = RCache::new();
        assert_eq!(c.put(4, 100), None);
        assert_eq!(c.put(4, 8), None);
        assert_eq!(c.put(4, 200), None);
        assert_eq!(c.get(4, 150), Some(8));
        assert_eq!(c.get(4, 150), Some(100));
        assert_eq!(c.get(4, 150), None);
        assert_eq!(c.get(4, 204), Some(200));
        assert_eq!(c.get(2, 1000), None);
    }

    #[test]
    fn an_empty_slot_refills_from_the_depot() {
        let c = RCache::new();
        let n = (3 * MAG_SIZE) as u64;
        for pfn in 0..n {
            assert_eq!(c.put(1, pfn), None);
        }
        // Everything comes back, through both magazines and the depot.
        let mut got: Vec<u64> = (0..n).map(|_| c.get(1, u64::MAX).unwrap()).collect();
        assert_eq!(c.get(1, u64::MAX), None);
        got.sort_unstable();
        assert_eq!(got, (0..n).collect::<Vec<_>>());
    }
}
