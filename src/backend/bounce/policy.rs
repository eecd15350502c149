//! The pool as a [`BouncePolicy`]: for `Swiotlb` itself, `&Swiotlb` and
//! `Arc<Swiotlb>`, and the per-mapping state [`SwiotlbSlot`].

use alloc::sync::Arc;

use crate::backend::compose::{BouncePolicy, BounceReason, BounceSlot};
use crate::base::addr::PhysAddr;
use crate::base::context::DeviceConfig;
use crate::base::error::MapErrorKind;

use super::Swiotlb;

/// A region of a [`Swiotlb`] held by one mapping: the state a bounced
/// handle carries until unmap gives it back. Compact (20 bytes): indices
/// into its pool, whose own metadata keeps the original address per slot
/// (as swiotlb does), so the handle carries no pointers. Not `Clone`: one
/// region, one release.
#[derive(Debug)]
pub struct SwiotlbSlot {
    pool: u32,
    first: u32,
    offset: u32,
    region_len: u32,
    slots: u16,
    reason: BounceReason,
}

impl SwiotlbSlot {
    pub(super) fn new(
        pool: u32,
        first: usize,
        slots: usize,
        offset: usize,
        region_len: usize,
        reason: BounceReason,
    ) -> Self {
        // A region is at most `MAX_SLOTS_PER_MAPPING` slots (256 KiB) of a
        // pool whose slot count fits `u32` (checked when the pool is made).
        Self {
            pool,
            first: first as u32,
            offset: offset as u32,
            region_len: region_len as u32,
            slots: slots as u16,
            reason,
        }
    }

    /// The index of the region's first slot in the pool.
    pub fn first_slot(&self) -> usize {
        self.first as usize
    }

    /// How many slots the region takes.
    pub fn slots(&self) -> usize {
        usize::from(self.slots)
    }

    /// Where the copy starts in the region.
    pub fn offset(&self) -> usize {
        self.offset as usize
    }

    /// The region's length, padding included.
    pub fn region_len(&self) -> usize {
        self.region_len as usize
    }

    /// Why the mapping was bounced.
    pub fn reason(&self) -> BounceReason {
        self.reason
    }

    /// The identity of the pool the region belongs to.
    pub(super) fn pool(&self) -> u32 {
        self.pool
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
        self.alloc_slot(
            orig,
            len,
            align,
            pad_to,
            reason,
            cfg.align_mask(),
            !cfg.is_trusted(),
        )
        .map(Some)
    }

    #[inline]
    fn slot(&self, state: &Self::State) -> Option<BounceSlot> {
        state.as_ref().map(|s| self.slot_of(s))
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
            fn slot(&self, state: &Self::State) -> Option<BounceSlot> {
                <Swiotlb as BouncePolicy>::slot(self, state)
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
