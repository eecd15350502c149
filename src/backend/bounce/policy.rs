//! The pool as a [`BouncePolicy`]: for `Swiotlb` itself, `&Swiotlb` and
//! `Arc<Swiotlb>`, and the per-mapping state [`SwiotlbSlot`].

use alloc::sync::Arc;

use crate::backend::compose::{BouncePolicy, BounceReason, BounceSlot};
use crate::base::addr::PhysAddr;
use crate::base::context::DeviceConfig;
use crate::base::error::MapErrorKind;

use super::Swiotlb;

/// A region of a [`Swiotlb`] held by one mapping: the state a bounced
/// handle carries until unmap gives it back. Not `Clone`: one region, one
/// release.
#[derive(Debug)]
pub struct SwiotlbSlot {
    slot: BounceSlot,
    first: usize,
    slots: usize,
    orig: PhysAddr,
    reason: BounceReason,
}

// SAFETY: the state is a token for a region of a pool (which is `Sync`);
// its pointer is only an address that the backend dereferences during its
// own calls, under the handle's ownership rules, from whichever thread.
unsafe impl Send for SwiotlbSlot {}
// SAFETY: `&SwiotlbSlot` gives out only copies of plain data (the address
// included), never access to the memory.
unsafe impl Sync for SwiotlbSlot {}

impl SwiotlbSlot {
    pub(super) fn new(
        slot: BounceSlot,
        first: usize,
        slots: usize,
        orig: PhysAddr,
        reason: BounceReason,
    ) -> Self {
        Self {
            slot,
            first,
            slots,
            orig,
            reason,
        }
    }

    /// Where the copy lives.
    pub fn slot(&self) -> BounceSlot {
        self.slot
    }

    /// The index of the region's first slot in the pool.
    pub fn first_slot(&self) -> usize {
        self.first
    }

    /// How many slots the region takes.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// The physical address of the original buffer.
    pub fn original(&self) -> PhysAddr {
        self.orig
    }

    /// Why the mapping was bounced.
    pub fn reason(&self) -> BounceReason {
        self.reason
    }
}

// SAFETY: (1) `alloc_slot` reserves the region under its area's lock, so it
// is this mapping's alone until `release_slot`; it is at least `len` bytes
// past the copy's start, aligned and padded as asked (`Placement`), inside
// the pool's memory, which the pool's creator promised devices can be given
// and nothing else references; the padding is zeroed before it is handed
// out. On error nothing was reserved. (2) `slot` returns what `alloc`
// stored, `None` for `not_bounced`.
unsafe impl BouncePolicy for Swiotlb {
    type State = Option<SwiotlbSlot>;
    type Phys = PhysAddr;
    const NEVER: bool = false;

    #[inline]
    fn not_bounced() -> Self::State {
        None
    }

    fn alloc(
        &self,
        orig: PhysAddr,
        len: usize,
        align: usize,
        pad_to: usize,
        reason: BounceReason,
        cfg: &DeviceConfig,
    ) -> Result<Self::State, MapErrorKind> {
        self.alloc_slot(orig, len, align, pad_to, reason, cfg.align_mask())
            .map(Some)
    }

    #[inline]
    fn slot(state: &Self::State) -> Option<BounceSlot> {
        state.as_ref().map(SwiotlbSlot::slot)
    }

    unsafe fn release(&self, state: Self::State) {
        if let Some(slot) = state {
            // SAFETY: forwarded: the state came from `alloc` of this pool
            // and the device is done with the region.
            unsafe { self.release_slot(slot) };
        }
    }
}

/// Forwards every call to the pool behind a reference or an `Arc`.
macro_rules! forward_policy {
    ($($l:lifetime)?, $t:ty) => {
        // SAFETY: forwards to `Swiotlb`, which keeps the contract.
        unsafe impl<$($l)?> BouncePolicy for $t {
            type State = Option<SwiotlbSlot>;
            type Phys = PhysAddr;
            const NEVER: bool = false;

            #[inline]
            fn not_bounced() -> Self::State {
                None
            }

            #[inline]
            fn alloc(
                &self,
                orig: PhysAddr,
                len: usize,
                align: usize,
                pad_to: usize,
                reason: BounceReason,
                cfg: &DeviceConfig,
            ) -> Result<Self::State, MapErrorKind> {
                <Swiotlb as BouncePolicy>::alloc(self, orig, len, align, pad_to, reason, cfg)
            }

            #[inline]
            fn slot(state: &Self::State) -> Option<BounceSlot> {
                <Swiotlb as BouncePolicy>::slot(state)
            }

            #[inline]
            unsafe fn release(&self, state: Self::State) {
                // SAFETY: forwarded from the caller.
                unsafe { <Swiotlb as BouncePolicy>::release(self, state) }
            }
        }
    };
}

forward_policy!('a, &'a Swiotlb);
forward_policy!(, Arc<Swiotlb>);
