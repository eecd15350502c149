//! dmacap's platform hooks on this machine: the identity [`PhysLookup`]
//! (the MMU maps every address to itself), a [`DmaAllocator`] of whole
//! pages over the non-cacheable pool (`.dma_nc`, 2 MiB at 0x4400_0000),
//! the bounce pool (cacheable RAM), and the MMIO mapping the PCI transport
//! asks for.

use core::cell::UnsafeCell;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};

use dmacap::PhysAddr;
use dmacap::backend::bounce::Swiotlb;
use dmacap::platform::{DmaAllocator, IdentityMap, PhysLookup};

use crate::mmu::{DMA_NC_BASE, DMA_NC_SIZE};

const PAGE: usize = 4096;
const PAGES: usize = DMA_NC_SIZE / PAGE;

/// The platform: identity translation, coherent memory from the
/// non-cacheable pool.
pub struct BarePlatform {
    identity: IdentityMap,
    locked: AtomicBool,
    /// `used[i]`: page `i` of the pool is allocated. Touched only with
    /// `locked` held.
    used: UnsafeCell<[bool; PAGES]>,
}

// SAFETY: `used` is only accessed while `locked` is held (see `with_used`).
unsafe impl Sync for BarePlatform {}

impl BarePlatform {
    /// The platform.
    ///
    /// # Safety
    ///
    /// Called once: the platform owns the non-cacheable pool, which nothing
    /// else uses, and the MMU runs the identity map of [`crate::mmu`].
    pub unsafe fn new() -> Self {
        Self {
            // SAFETY: the identity map is on and memory never moves
            // (caller).
            identity: unsafe { IdentityMap::new() },
            locked: AtomicBool::new(false),
            used: UnsafeCell::new([false; PAGES]),
        }
    }

    fn with_used<R>(&self, f: impl FnOnce(&mut [bool; PAGES]) -> R) -> R {
        while self
            .locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        // SAFETY: the lock is held, so this is the only reference.
        let r = f(unsafe { &mut *self.used.get() });
        self.locked.store(false, Ordering::Release);
        r
    }

    /// Pages of the pool allocated now.
    pub fn pages_in_use(&self) -> usize {
        self.with_used(|u| u.iter().filter(|&&b| b).count())
    }
}

// SAFETY: forwards to the identity, whose promise holds: the MMU maps every
// address to itself and nothing is ever remapped or moved.
unsafe impl PhysLookup for BarePlatform {
    #[inline]
    fn phys_of(&self, cpu: NonNull<u8>, len: usize) -> Option<PhysAddr> {
        self.identity.phys_of(cpu, len)
    }

    #[inline(always)]
    unsafe fn phys_of_allocation(&self, cpu: NonNull<u8>, len: usize) -> Option<PhysAddr> {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.identity.phys_of_allocation(cpu, len) }
    }
}

// SAFETY: (1) `alloc_dma` hands out whole pages of the pool, marked used
// under the lock until `free_dma`, zeroed, aligned (pages aligned to
// `align`, at most the pool's 2 MiB), physically contiguous (identity) and
// below `max_phys` (checked). (2) The whole pool is mapped Normal
// non-cacheable, so every allocation is uncached, asked or not. (3) The
// default volatile accesses. (4) Uncached memory needs nothing to be
// visible.
unsafe impl DmaAllocator for BarePlatform {
    fn alloc_dma(
        &self,
        size: usize,
        align: usize,
        max_phys: u64,
        _uncached: bool,
    ) -> Option<NonNull<u8>> {
        let pages = size.div_ceil(PAGE).max(1);
        let step = (align / PAGE).max(1);
        if align > DMA_NC_SIZE {
            return None;
        }
        let first = self.with_used(|used| {
            let mut i = 0;
            while i + pages <= PAGES {
                if used[i..i + pages].iter().all(|&b| !b) {
                    used[i..i + pages].iter_mut().for_each(|b| *b = true);
                    return Some(i);
                }
                i += step;
            }
            None
        })?;
        let addr = DMA_NC_BASE + first * PAGE;
        if (addr + pages * PAGE - 1) as u64 > max_phys {
            self.with_used(|used| {
                used[first..first + pages]
                    .iter_mut()
                    .for_each(|b| *b = false)
            });
            return None;
        }
        let ptr = NonNull::new(addr as *mut u8)?;
        // SAFETY: the pages were just reserved for this allocation alone;
        // the pool is mapped (non-cacheable) RAM.
        unsafe { ptr.as_ptr().write_bytes(0, pages * PAGE) };
        Some(ptr)
    }

    unsafe fn free_dma(&self, ptr: NonNull<u8>, size: usize, _align: usize) {
        let first = (ptr.as_ptr() as usize - DMA_NC_BASE) / PAGE;
        let pages = size.div_ceil(PAGE).max(1);
        self.with_used(|used| {
            used[first..first + pages]
                .iter_mut()
                .for_each(|b| *b = false)
        });
    }
}

/// The bounce pool's memory: 256 KiB of cacheable RAM (128 slots), for
/// the buffers `virtio-drivers` shares that do not own their cache lines
/// (a block request's 16-byte header and 1-byte status live on the stack).
#[repr(C, align(4096))]
struct BounceArea(UnsafeCell<[u8; 256 << 10]>);

// SAFETY: only the pool touches it, through raw pointers.
unsafe impl Sync for BounceArea {}

static BOUNCE: BounceArea = BounceArea(UnsafeCell::new([0; 256 << 10]));

/// The bounce pool.
///
/// # Safety
///
/// Called once.
pub unsafe fn bounce_pool() -> Swiotlb {
    let region = NonNull::new(BOUNCE.0.get().cast::<u8>()).unwrap();
    let phys = PhysAddr::new(region.as_ptr() as u64);
    // SAFETY: the static is the pool's alone from now on (called once, and
    // nothing else names `BOUNCE`); the identity map makes it physically
    // contiguous at its address; devices reach all of RAM.
    unsafe { Swiotlb::new(region, phys, 256 << 10, 1) }
}

/// `virtio_drivers::Hal::mmio_phys_to_virt` here: the identity (the
/// PCI MMIO window lies in the first gigabyte, mapped as device memory).
///
/// # Safety
///
/// `paddr` and `size` are a BAR region of a PCI function (what
/// `virtio-drivers` passes).
pub unsafe fn mmio_phys_to_virt(paddr: u64, size: usize) -> NonNull<u8> {
    assert!(
        paddr
            .checked_add(size as u64)
            .is_some_and(|end| end <= 0x4000_0000),
        "MMIO region {paddr:#x}+{size:#x} outside the device gigabyte"
    );
    NonNull::new(paddr as usize as *mut u8).expect("MMIO at address 0")
}
