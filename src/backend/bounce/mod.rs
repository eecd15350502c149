//! Bounce buffering through a swiotlb-like pool (feature `alloc`).
//!
//! A device that cannot use a buffer where it lies (beyond its DMA mask or
//! outside every bus window, a byte buffer sharing cache lines on a
//! non-coherent device, a sub-page buffer for an untrusted device behind an
//! IOMMU) can use a copy of it in a [`Swiotlb`]: memory it can reach,
//! carved into 2 KiB slots ([`SLOT_SIZE`]). The composed backend
//! ([`Composed`](crate::backend::compose::Composed)) asks the pool for a
//! region through [`BouncePolicy`], copies the buffer in at map time (in
//! every direction, so the device never sees what an earlier mapping left
//! there), copies back on `sync_for_cpu`, and releases the region at unmap.
//!
//! Like Linux's swiotlb:
//!
//! - one mapping takes at most [`MAX_SLOTS_PER_MAPPING`] contiguous slots
//!   ([`MAX_MAPPING_SIZE`], 256 KiB); a larger one is
//!   [`MapErrorKind::BounceTooLarge`], a full pool
//!   [`MapErrorKind::BouncePoolExhausted`] (and the pool is unchanged);
//! - the bounce address keeps the original's bits under the device's
//!   `min_align_mask` ([`DeviceConfig::min_align_mask`]);
//! - the region is aligned and padded as the backend asks (whole IOMMU
//!   pages for an untrusted device), and its padding is zeroed, so a device
//!   never sees stale data there;
//! - each used slot records the original address it stands for, so the
//!   original of a bounce address is found without a search
//!   ([`Swiotlb::original_of`]);
//! - the pool is split into areas, each behind its own lock; an allocation
//!   starts in the area of the calling CPU and tries the others.
//!
//! # Example
//!
//! ```
//! use dmacap::backend::compose::{Coherent, Composed};
//! use dmacap::backend::direct::{Direct, DmaWindows};
//! use dmacap::sim::SimMemory;
//! use dmacap::{Device, DeviceConfig, DmaMask, PhysAddr, ToDevice};
//!
//! // RAM straddling 4 GiB; the pool comes first, so it lies below.
//! let ram = SimMemory::with_base(PhysAddr::new(0xfff0_0000), 2 << 20);
//! let pool = ram.swiotlb(64 * 1024, 1).unwrap();
//! let below = ram.alloc_slice::<u8>(0x10_0000 - 64 * 1024).unwrap();
//! let backend = Composed::from_parts(ram.clone(), Direct::new(DmaWindows::identity()), Coherent, pool);
//! let dev = Device::new(backend, DeviceConfig::new().dma_mask(DmaMask::bits(32)));
//!
//! let mut buf = ram.alloc_slice::<u8>(100).unwrap();   // above 4 GiB
//! assert!(ram.phys_of_buffer(&buf).as_u64() >= 1 << 32);
//! buf.fill(7);
//! let tx = dev.map::<ToDevice, _>(buf).unwrap();       // bounced, not refused
//! assert!(tx.dma_addr().as_u64() < 1 << 32);
//! assert_eq!(dev.stats().bounced(), 1);
//! assert_eq!(dev.backend().bounce().used_slots(), 1);
//! // SAFETY: no device was started.
//! let _buf = unsafe { tx.unmap() };
//! assert_eq!(dev.backend().bounce().used_slots(), 0);
//! # drop(below);
//! ```
//!
//! [`DeviceConfig::min_align_mask`]: crate::DeviceConfig::min_align_mask
//! [`BouncePolicy`]: crate::backend::compose::BouncePolicy

mod area;
mod placement;
mod policy;

pub use policy::SwiotlbSlot;

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;
use core::ptr::NonNull;

use crate::backend::compose::{BounceReason, BounceSlot};
use crate::base::addr::PhysAddr;
use crate::base::error::MapErrorKind;
use crate::sync::{SpinMutex, cpu_hint, spin_lock};

use area::{Area, SlotMeta};
use placement::Placement;

/// Bytes per bounce slot (Linux's `IO_TLB_SIZE`).
pub const SLOT_SIZE: usize = 2048;

/// The most contiguous slots one mapping may take (Linux's
/// `IO_TLB_SEGSIZE`).
pub const MAX_SLOTS_PER_MAPPING: usize = 128;

/// The largest region one mapping may take, padding and `min_align_mask`
/// offset included: 256 KiB.
pub const MAX_MAPPING_SIZE: usize = SLOT_SIZE * MAX_SLOTS_PER_MAPPING;

/// A pool of bounce slots over memory the device can reach.
///
/// Share one pool between devices as `Arc<Swiotlb>` or `&'static Swiotlb`
/// (both are [`BouncePolicy`]s too), or give a device its own.
///
/// # Invariants
///
/// `base` points to `nslots * SLOT_SIZE` bytes, physically contiguous from
/// `phys` (a multiple of [`SLOT_SIZE`]), valid for reads and writes for as
/// long as the pool lives (and longer: the memory is never given back), and
/// touched by the CPU only through raw pointers: by the pool when it zeroes
/// a region it has just reserved, and by the backend while it holds the
/// region. Area `a` (behind `areas[a]`) owns slots
/// `[a * per_area, a * per_area + len)`, where the last area also takes the
/// remainder; a slot's bit is set exactly while a live region holds it.
///
/// [`BouncePolicy`]: crate::backend::compose::BouncePolicy
pub struct Swiotlb {
    id: u32,
    base: NonNull<u8>,
    phys: PhysAddr,
    nslots: usize,
    per_area: usize,
    areas: Box<[AreaLock]>,
}

/// One area behind its lock, alone in its cache lines (two CPUs working in
/// two areas never write the same line). A spin lock: held for one bitmap
/// search or update, and its unlock is a plain store.
#[repr(align(64))]
struct AreaLock(SpinMutex<Area>);

impl AreaLock {
    #[inline(always)]
    fn lock(&self) -> impl core::ops::DerefMut<Target = Area> + '_ {
        spin_lock(&self.0)
    }
}

// SAFETY: the pool owns its memory (contract of `new`); `base` is only used
// to build pointers into regions that the area locks hand out to one
// mapping at a time, and to zero a region right after reserving it. All
// other state is behind the areas' mutexes.
unsafe impl Send for Swiotlb {}
// SAFETY: as above: every `&self` method either locks an area or touches
// only a region it reserved under that lock and has not handed out yet.
unsafe impl Sync for Swiotlb {}

impl Swiotlb {
    /// A pool over the `len` bytes at `region`, which lie at physical
    /// address `phys`, split into `areas` areas (each with its own lock).
    ///
    /// `len` is rounded down to whole slots. `areas` is reduced so that every
    /// area holds at least [`MAX_SLOTS_PER_MAPPING`] slots (as Linux does),
    /// and is at least 1: see [`areas`](Self::areas).
    ///
    /// # Safety
    ///
    /// The caller promises that `region` is valid for reads and writes of
    /// `len` bytes, that those bytes belong to the pool alone from now on,
    /// forever (no reference to them exists or will be made, nothing else
    /// reads or writes them, they are never freed, moved or remapped), and
    /// that they are physically contiguous from `phys`, memory the devices
    /// using the pool can be given access to.
    ///
    /// # Panics
    ///
    /// If `len` is less than one slot, `phys` is not a multiple of
    /// [`SLOT_SIZE`], or `phys + len` overflows.
    pub unsafe fn new(region: NonNull<u8>, phys: PhysAddr, len: usize, areas: usize) -> Self {
        let nslots = len / SLOT_SIZE;
        assert!(
            nslots > 0,
            "a bounce pool needs at least one {SLOT_SIZE}-byte slot"
        );
        assert!(
            phys.is_aligned(SLOT_SIZE as u64),
            "a bounce pool must start on a {SLOT_SIZE}-byte boundary, not at {phys}"
        );
        assert!(
            phys.last_of((nslots * SLOT_SIZE) as u64).is_some(),
            "the bounce pool runs past the end of the physical address space"
        );
        let count = areas.clamp(1, (nslots / MAX_SLOTS_PER_MAPPING).max(1));
        let per_area = nslots / count;
        let areas: Vec<_> = (0..count)
            .map(|a| {
                let len = if a + 1 == count {
                    nslots - a * per_area
                } else {
                    per_area
                };
                AreaLock(SpinMutex::new(Area::new(len)))
            })
            .collect();
        assert!(
            u32::try_from(nslots).is_ok(),
            "a bounce pool of more than 2^32 slots"
        );
        // Distinct per pool, so a slot released to the wrong pool is caught.
        static NEXT_ID: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);
        Self {
            id: NEXT_ID.fetch_add(1, core::sync::atomic::Ordering::Relaxed),
            base: region,
            phys,
            nslots,
            per_area,
            areas: areas.into_boxed_slice(),
        }
    }

    /// Slots in the pool.
    pub fn total_slots(&self) -> usize {
        self.nslots
    }

    /// Slots not held by a mapping. Each area is counted under its lock,
    /// so the sum is exact when no mapping is made or torn down meanwhile.
    pub fn free_slots(&self) -> usize {
        self.areas.iter().map(|a| a.lock().free()).sum()
    }

    /// Slots held by live mappings (and by leaked ones, forever).
    pub fn used_slots(&self) -> usize {
        self.nslots - self.free_slots()
    }

    /// The number of areas (each with its own lock).
    pub fn areas(&self) -> usize {
        self.areas.len()
    }

    /// The physical address of the pool's first byte.
    pub fn phys(&self) -> PhysAddr {
        self.phys
    }

    /// The pool's length in bytes.
    pub fn len_bytes(&self) -> usize {
        self.nslots * SLOT_SIZE
    }

    /// Whether `[phys, phys + len)` lies inside the pool (Linux's
    /// `is_swiotlb_buffer`).
    pub fn contains(&self, phys: PhysAddr, len: usize) -> bool {
        phys.as_u64()
            .checked_sub(self.phys.as_u64())
            .and_then(|off| off.checked_add(len as u64))
            .is_some_and(|end| end <= self.len_bytes() as u64)
    }

    /// The area holding global slot `slot`, and the slot's index in it.
    fn area_of(&self, slot: usize) -> (usize, usize) {
        let a = (slot / self.per_area).min(self.areas.len() - 1);
        (a, slot - a * self.per_area)
    }

    /// The physical address of the original byte that the bounce byte at
    /// `phys` holds a copy of, if `phys` is a byte of a live mapping's copy
    /// (not padding, not a free slot). Looked up in the slot's record, never
    /// searched: for diagnostics, and to check a handle's bookkeeping.
    pub fn original_of(&self, phys: PhysAddr) -> Option<PhysAddr> {
        if !self.contains(phys, 1) {
            return None;
        }
        let off = (phys.as_u64() - self.phys.as_u64()) as usize;
        let (a, i) = self.area_of(off / SLOT_SIZE);
        let meta = self.areas[a].lock().meta(i)?;
        let in_slot = off % SLOT_SIZE;
        (usize::from(meta.lo) <= in_slot && in_slot < usize::from(meta.hi))
            .then(|| PhysAddr::new(meta.orig.wrapping_add(in_slot as u64)))
    }

    /// Reserves a region laid out as `p`, starting in the calling CPU's
    /// area; returns its first global slot. Changes nothing on failure.
    fn reserve(&self, p: &Placement, orig: PhysAddr) -> Option<usize> {
        let count = self.areas.len();
        let first = cpu_hint() % count;
        (0..count).map(|k| (first + k) % count).find_map(|a| {
            let start = a * self.per_area;
            let mut area = self.areas[a].lock();
            let slot_phys = |i: usize| self.phys.as_u64() + ((start + i) * SLOT_SIZE) as u64;
            let i = area.find(p.slots, |i| p.fits(slot_phys(i)))?;
            if crate::sync::mutated(crate::sync::Mutation::BounceChoiceUnlocked) {
                // The mutation: the lock is released between finding the
                // run and taking it.
                drop(area);
                area = self.areas[a].lock();
            }
            // Slot `k` starts `k * SLOT_SIZE - offset` bytes after the
            // original's first byte; the copy covers `[offset, offset + len)`
            // of the region.
            let orig_base = orig.as_u64().wrapping_sub(p.offset as u64);
            area.take(i, p.slots, |k| {
                let (s, e) = (k * SLOT_SIZE, (k + 1) * SLOT_SIZE);
                let lo = p.offset.clamp(s, e) - s;
                let hi = (p.offset + p.len).clamp(s, e) - s;
                SlotMeta {
                    orig: orig_base.wrapping_add(s as u64),
                    // Both are at most SLOT_SIZE, which fits in a u16.
                    lo: lo as u16,
                    hi: hi as u16,
                }
            });
            Some(start + i)
        })
    }

    /// Reserves a region for `len` bytes whose original lies at `orig`:
    /// see [`BouncePolicy::alloc`](crate::backend::compose::BouncePolicy::alloc).
    /// With `zero_padding` the region's padding is zeroed (for an untrusted
    /// device, which is given the whole region; a trusted one is given only
    /// the copy, and the padding is left as it is, as Linux's swiotlb does);
    /// the copy part is left for the caller to fill.
    ///
    /// # Errors
    ///
    /// [`MapErrorKind::BounceTooLarge`] if the region needs more than
    /// [`MAX_SLOTS_PER_MAPPING`] slots, [`MapErrorKind::BouncePoolExhausted`]
    /// if no area has a suitable run of free slots (the pool is then
    /// unchanged).
    // The arguments are the request, as Linux's `swiotlb_tbl_map_single`
    // takes them; a struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub fn alloc_slot(
        &self,
        orig: PhysAddr,
        len: usize,
        align: usize,
        pad_to: usize,
        reason: BounceReason,
        min_align_mask: u64,
        zero_padding: bool,
    ) -> Result<SwiotlbSlot, MapErrorKind> {
        let p = Placement::new(orig, len, align, pad_to, min_align_mask)?;
        let first = self
            .reserve(&p, orig)
            .ok_or(MapErrorKind::BouncePoolExhausted { slots: p.slots })?;
        let region_off = first * SLOT_SIZE;
        // SAFETY: the region `[region_off, region_off + region_len)` lies
        // inside the pool (the area found it among its slots), so the
        // offsets stay inside the allocation `base` points to.
        let region = unsafe { self.base.add(region_off) };
        if zero_padding {
            // SAFETY: the region was reserved just now, under the area's
            // lock, so nothing else uses it; it is valid for writes
            // (invariant), no reference to it exists, and both pieces lie
            // inside it.
            unsafe {
                region.write_bytes(0, p.offset);
                region
                    .add(p.offset + p.len)
                    .write_bytes(0, p.region_len - p.offset - p.len);
            }
        }
        let region_phys = PhysAddr::new(self.phys.as_u64() + region_off as u64);
        let slot = BounceSlot {
            // SAFETY: `offset < region_len`: inside the region.
            cpu: unsafe { region.add(p.offset) },
            phys: PhysAddr::new(region_phys.as_u64() + p.offset as u64),
            region_phys,
            region_len: p.region_len,
        };
        let _ = (slot, orig);
        Ok(SwiotlbSlot::new(
            self.id,
            first,
            p.slots,
            p.offset,
            p.region_len,
            reason,
        ))
    }

    /// Where `slot`'s copy and region lie: computed from the pool's base and
    /// the slot's indices.
    ///
    /// # Panics
    ///
    /// If `slot` belongs to another pool.
    #[inline]
    pub fn slot_of(&self, slot: &SwiotlbSlot) -> BounceSlot {
        assert!(slot.pool() == self.id, "a bounce slot of another pool");
        let region_off = slot.first_slot() * SLOT_SIZE;
        // SAFETY: the region lies inside the pool (it was reserved here), and
        // the copy starts inside the region.
        let region = unsafe { self.base.add(region_off) };
        let region_phys = PhysAddr::new(self.phys.as_u64() + region_off as u64);
        BounceSlot {
            // SAFETY: as above.
            cpu: unsafe { region.add(slot.offset()) },
            phys: PhysAddr::new(region_phys.as_u64() + slot.offset() as u64),
            region_phys,
            region_len: slot.region_len(),
        }
    }

    /// Frees exactly the slots of `slot`'s region.
    ///
    /// # Safety
    ///
    /// `slot` came from this pool's [`alloc_slot`](Self::alloc_slot), and no
    /// device or CPU uses its region any more.
    ///
    /// # Panics
    ///
    /// If the region's slots are not in use in this pool (detectably a slot
    /// from another pool, or released twice).
    pub unsafe fn release_slot(&self, slot: SwiotlbSlot) {
        let (first, n) = (slot.first_slot(), slot.slots());
        assert!(
            slot.pool() == self.id && first + n <= self.nslots,
            "bounce slot released to a pool it does not belong to"
        );
        // A region never spans two areas: it was found inside one.
        let (a, i) = self.area_of(first);
        self.areas[a].lock().give_back(i, n);
    }
}

impl fmt::Debug for Swiotlb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Swiotlb")
            .field("phys", &self.phys)
            .field("total_slots", &self.nslots)
            .field("free_slots", &self.free_slots())
            .field("areas", &self.areas.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
