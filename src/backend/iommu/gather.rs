//! Gathered unmaps (Linux's `iommu_iotlb_gather`): the IOVA ranges a
//! thread has unmapped in strict mode whose invalidation it has not issued
//! yet. Its next flush invalidates their span once and then frees them.
//!
//! With `std` (or under loom) each thread has its own list, so a flush
//! completes exactly the unmaps its thread issued, as
//! [`Translation::flush`](crate::backend::compose::Translation::flush)
//! promises, and threads do not wait for each other's invalidations.
//! Without `std` there is no thread identity: all threads share one list,
//! and a flush holds it until its invalidation has completed, so a thread
//! whose unmaps another thread's flush took still returns only after they
//! are invalidated.

use alloc::vec::Vec;

use crate::backend::iommu::iova::IovaAlloc;
use crate::sync::{Mutex, lock};

/// One thread's gathered ranges and the page span that covers them.
#[derive(Default)]
pub(crate) struct Gathered {
    start: u64,
    end: u64,
    allocs: Vec<IovaAlloc>,
}

impl Gathered {
    fn add(&mut self, a: IovaAlloc) {
        if self.allocs.is_empty() {
            (self.start, self.end) = (a.pfn(), a.end_pfn());
        } else {
            self.start = self.start.min(a.pfn());
            self.end = self.end.max(a.end_pfn());
        }
        self.allocs.push(a);
    }

    /// The page frames `[start, end)` covering every range.
    pub(crate) fn span(&self) -> (u64, u64) {
        (self.start, self.end)
    }

    /// The ranges, to be freed once invalidated.
    pub(crate) fn into_allocs(self) -> Vec<IovaAlloc> {
        self.allocs
    }
}

/// Every thread's gathered ranges.
#[cfg(any(feature = "std", dmacap_loom))]
pub(crate) struct GatherLists {
    lists: Mutex<Vec<(crate::sync::ThreadId, Gathered)>>,
}

#[cfg(any(feature = "std", dmacap_loom))]
impl GatherLists {
    pub(crate) fn new() -> Self {
        Self {
            lists: Mutex::new(Vec::new()),
        }
    }

    /// Gathers `a` on the calling thread's list.
    pub(crate) fn add(&self, a: IovaAlloc) {
        let me = crate::sync::current_thread_id();
        let mut lists = lock(&self.lists);
        match lists.iter_mut().find(|(t, _)| *t == me) {
            Some((_, g)) => g.add(a),
            None => {
                let mut g = Gathered::default();
                g.add(a);
                lists.push((me, g));
            }
        }
    }

    /// Runs `complete` on the calling thread's gathered ranges, if any,
    /// taking them off the list.
    pub(crate) fn flush(&self, complete: impl FnOnce(Gathered)) {
        let me = crate::sync::current_thread_id();
        if crate::sync::mutated(crate::sync::Mutation::GatherTakesAll) {
            // The mutation: every thread's ranges, completed unlocked.
            let all = core::mem::take(&mut *lock(&self.lists));
            let mut g = Gathered::default();
            all.into_iter()
                .flat_map(|(_, l)| l.into_allocs())
                .for_each(|a| g.add(a));
            if !g.allocs.is_empty() {
                complete(g);
            }
            return;
        }
        let mine = {
            let mut lists = lock(&self.lists);
            let i = lists.iter().position(|(t, _)| *t == me);
            i.map(|i| lists.swap_remove(i).1)
        };
        // Only this thread adds to its list, so nobody else can be
        // completing these ranges: no lock is needed while waiting.
        if let Some(g) = mine {
            complete(g);
        }
    }
}

/// The one list shared by all threads (no thread identity without `std`).
#[cfg(not(any(feature = "std", dmacap_loom)))]
pub(crate) struct GatherLists {
    list: Mutex<Gathered>,
}

#[cfg(not(any(feature = "std", dmacap_loom)))]
impl GatherLists {
    pub(crate) fn new() -> Self {
        Self {
            list: Mutex::new(Gathered::default()),
        }
    }

    /// Gathers `a`.
    pub(crate) fn add(&self, a: IovaAlloc) {
        lock(&self.list).add(a);
    }

    /// Runs `complete` on every gathered range, if any, holding the list
    /// until it returns.
    pub(crate) fn flush(&self, complete: impl FnOnce(Gathered)) {
        let mut list = lock(&self.list);
        if !list.allocs.is_empty() {
            complete(core::mem::take(&mut *list));
        }
    }
}
