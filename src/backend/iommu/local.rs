//! Thread-local IOVA magazines: the allocator's fast path.
//!
//! Linux's fast path is a per-CPU array pop under a *local* lock, which on
//! the CPU that owns the array costs no atomic instruction at all (it only
//! disables preemption). A user-space library cannot pin itself to a CPU,
//! so its per-CPU slots (`rcache`) need a real lock: a `lock cmpxchg` at
//! every allocation and every free. The nearest thing to Linux's local lock
//! that safe Rust has is a thread-local: one small array of recently freed
//! ranges per size class and thread, popped and pushed with plain loads and
//! stores.
//!
//! # Which allocator
//!
//! A thread keeps magazines for up to four allocators at once, in four
//! *ways* chosen by the allocator's address (direct-mapped: finding its
//! way is one compare). A way's *owner* is held by an `Arc`, so the pfns
//! it holds always belong to a live allocator's space. A free into an
//! allocator whose way another allocator holds sends that one's ranges home
//! (one lock per size class) and takes the way over: two allocators that
//! share a way and alternate in one thread trade it back and forth, which
//! costs what the locked slots cost.
//!
//! # What leaves the thread
//!
//! When a magazine is full, half of it goes to the owner's per-CPU slot
//! under one lock. When the thread exits, everything goes back (in its
//! thread-local destructors: after `JoinHandle::join` returns, not yet
//! when only `thread::scope`'s implicit join has). Ranges in
//! another live thread's magazines are invisible to this thread: the
//! allocator's free count and its drain on exhaustion see the calling
//! thread's magazines only (at most `LOCAL_CAP` = 16 ranges per size class
//! per other thread are out of reach until that thread frees into another
//! allocator, allocates them, or exits).
//!
//! Only in `std` builds outside the loom models (which check the locked
//! slots); elsewhere every call reports "not served here".

#[cfg(all(feature = "std", not(dmacap_loom)))]
mod imp {
    use alloc::sync::Arc;
    use core::cell::RefCell;

    use crate::backend::iommu::iova::Shared;

    /// Ranges one thread keeps per size class and allocator.
    pub(crate) const LOCAL_CAP: usize = 16;
    /// Ranges a full magazine hands to the owner's per-CPU slot at once.
    const SPILL: usize = LOCAL_CAP / 2;
    /// Size classes kept per thread: 1, 2, 4 and 8 pages (larger ones use
    /// the per-CPU slots only).
    pub(crate) const LOCAL_ORDERS: usize = 4;
    /// Whether ranges of `pages` pages are kept per thread (1 to 8 pages;
    /// larger ones go straight to the slots, without looking at the
    /// thread's magazines).
    #[inline(always)]
    pub(crate) fn keeps(pages: u64) -> bool {
        pages <= 1 << (LOCAL_ORDERS - 1)
    }
    /// Allocators a thread serves at once, each in the way its address
    /// selects (direct-mapped: one compare to find it).
    const WAYS: usize = 4;

    /// One size class: `pfns[..len]`, the newest last.
    #[derive(Clone, Copy)]
    struct Mag {
        len: usize,
        pfns: [u64; LOCAL_CAP],
    }

    /// The magazines this thread keeps for one allocator.
    ///
    /// # Invariant
    ///
    /// Every pfn held is a free range of `owner`'s space, of its size
    /// class, handed out by nobody; `owner` is `None` only when every
    /// magazine is empty and `hits` is zero.
    struct Way {
        owner: Option<Arc<Shared>>,
        mags: [Mag; LOCAL_ORDERS],
        /// Allocations served here and not yet added to `owner`'s count.
        hits: usize,
    }

    impl Way {
        const EMPTY: Self = Self {
            owner: None,
            mags: [Mag {
                len: 0,
                pfns: [0; LOCAL_CAP],
            }; LOCAL_ORDERS],
            hits: 0,
        };

        #[inline(always)]
        fn owned_by(&self, shared: &Arc<Shared>) -> bool {
            self.owner.as_ref().is_some_and(|o| Arc::ptr_eq(o, shared))
        }

        /// Gives every range and the hit count back to the owner and
        /// forgets it.
        fn release(&mut self) {
            let Some(owner) = self.owner.take() else {
                return;
            };
            // Empty first, hand back after: if a hand-back unwinds, the way
            // is empty and unowned (the invariant), and the ranges not yet
            // handed back are lost to the space, never handed out twice.
            let mags = self.mags;
            self.mags.iter_mut().for_each(|m| m.len = 0);
            let hits = core::mem::take(&mut self.hits);
            for (order, m) in mags.iter().enumerate() {
                owner.give_back(1 << order, &m.pfns[..m.len]);
            }
            owner.add_hits(hits);
        }
    }

    /// This thread's ways.
    struct Local {
        ways: [Way; WAYS],
    }

    impl Drop for Local {
        fn drop(&mut self) {
            self.ways.iter_mut().for_each(Way::release);
        }
    }

    std::thread_local! {
        static LOCAL: RefCell<Local> = const {
            RefCell::new(Local {
                ways: [Way::EMPTY, Way::EMPTY, Way::EMPTY, Way::EMPTY],
            })
        };
    }

    /// The way `shared` uses in every thread.
    #[inline(always)]
    fn way_of(shared: &Arc<Shared>) -> usize {
        // `Shared` is kilobytes long: distinct allocators differ in these
        // bits.
        (Arc::as_ptr(shared) as usize >> 8) % WAYS
    }

    /// A cached range of `1 << order` pages ending at or below `limit`,
    /// if this thread keeps ranges of `shared` and the newest one fits (no
    /// search: a range that does not fit sends the caller to the slots,
    /// which search).
    #[inline(always)]
    pub(crate) fn pop(shared: &Arc<Shared>, order: usize, limit: u64) -> Option<u64> {
        LOCAL
            .try_with(|l| {
                let mut l = l.try_borrow_mut().ok()?;
                let w = l.ways.get_mut(way_of(shared))?;
                if !w.owned_by(shared) {
                    return None;
                }
                let m = w.mags.get_mut(order)?;
                let top = m.len.checked_sub(1)?;
                let pfn = *m.pfns.get(top)?;
                if pfn + (1u64 << order) > limit {
                    return None;
                }
                m.len = top;
                w.hits += 1;
                Some(pfn)
            })
            .ok()
            .flatten()
    }

    /// Keeps a freed range of `1 << order` pages in this thread's
    /// magazines for `shared` (taking the way over from another allocator
    /// if need be). `false`: the caller frees it elsewhere.
    #[inline(always)]
    pub(crate) fn push(shared: &Arc<Shared>, order: usize, pfn: u64) -> bool {
        LOCAL
            .try_with(|l| {
                let Ok(mut l) = l.try_borrow_mut() else {
                    return false;
                };
                let Some(w) = l.ways.get_mut(way_of(shared)) else {
                    return false;
                };
                if w.owned_by(shared)
                    && let Some(m) = w.mags.get_mut(order)
                    && let Some(at) = m.pfns.get_mut(m.len)
                {
                    *at = pfn;
                    m.len += 1;
                    return true;
                }
                push_slow(w, shared, order, pfn)
            })
            .unwrap_or(false)
    }

    /// [`push`] when the way belongs to another allocator or this size
    /// class is full.
    #[cold]
    #[inline(never)]
    fn push_slow(w: &mut Way, shared: &Arc<Shared>, order: usize, pfn: u64) -> bool {
        if order >= LOCAL_ORDERS {
            // The caller checks `keeps`; refuse rather than index.
            return false;
        }
        if !w.owned_by(shared) {
            // Another allocator's ranges go home (one lock per size class
            // held): two allocators sharing a way in one thread trade it.
            w.release();
            w.owner = Some(Arc::clone(shared));
        }
        let m = &mut w.mags[order];
        let mut spill = None;
        if m.len == LOCAL_CAP {
            // The oldest half to the owner's slot, one lock; out of the
            // magazine before the hand-back, so an unwinding hand-back
            // loses ranges rather than leaving them in two places.
            let mut out = [0u64; SPILL];
            out.copy_from_slice(&m.pfns[..SPILL]);
            m.pfns.copy_within(SPILL.., 0);
            m.len -= SPILL;
            spill = Some(out);
        }
        m.pfns[m.len] = pfn;
        m.len += 1;
        if let Some(out) = spill {
            shared.give_back(1 << order, &out);
        }
        true
    }

    /// Pages held by this thread's magazines for `shared`, and the hits not
    /// yet added to its count.
    pub(crate) fn held(shared: &Arc<Shared>) -> (u64, usize) {
        LOCAL
            .try_with(|l| {
                let l = l.try_borrow().ok()?;
                let w = &l.ways[way_of(shared)];
                if !w.owned_by(shared) {
                    return None;
                }
                let pages = (w.mags.iter().enumerate())
                    .map(|(order, m)| (m.len as u64) << order)
                    .sum();
                Some((pages, w.hits))
            })
            .ok()
            .flatten()
            .unwrap_or((0, 0))
    }

    /// Gives this thread's ranges for `shared` back to it.
    pub(crate) fn drain(shared: &Arc<Shared>) {
        let _ = LOCAL.try_with(|l| {
            if let Ok(mut l) = l.try_borrow_mut() {
                let w = &mut l.ways[way_of(shared)];
                if w.owned_by(shared) {
                    w.release();
                }
            }
        });
    }
}

#[cfg(not(all(feature = "std", not(dmacap_loom))))]
mod imp {
    use alloc::sync::Arc;

    use crate::backend::iommu::iova::Shared;

    /// Nothing is kept per thread here.
    #[inline(always)]
    pub(crate) fn keeps(_: u64) -> bool {
        false
    }

    #[inline(always)]
    pub(crate) fn pop(_: &Arc<Shared>, _: usize, _: u64) -> Option<u64> {
        None
    }

    #[inline(always)]
    pub(crate) fn push(_: &Arc<Shared>, _: usize, _: u64) -> bool {
        false
    }

    pub(crate) fn held(_: &Arc<Shared>) -> (u64, usize) {
        (0, 0)
    }

    pub(crate) fn drain(_: &Arc<Shared>) {}
}

pub(crate) use imp::*;
