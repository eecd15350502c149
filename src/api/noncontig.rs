//! Non-contiguous allocations (Linux's `dma_alloc_noncontiguous`): behind an
//! IOMMU, pages that need not be physically contiguous, linked into one
//! contiguous IOVA range with one IOTLB sync. The device sees one range;
//! the CPU sees the pages through a segment iterator. Ownership moves with
//! the same typestate as a mapped buffer: CPU-owned at first, then
//! [`sync_for_device`](NonContiguous::sync_for_device) and the `unsafe`
//! [`sync_for_cpu`](NonContiguous::sync_for_cpu).

use alloc::vec::Vec;
use core::fmt;
use core::marker::PhantomData;
use core::mem::ManuallyDrop;
use core::ptr::NonNull;

use crate::api::coherent::dma_alloc;
use crate::api::device::Device;
use crate::arch::CacheRange;
use crate::backend::Backend;
use crate::backend::compose::{BouncePolicy, Coherency, Composed, PhysJoin};
use crate::backend::iommu::{IommuDomain, IommuHardware, IovaRange, PAGE_SIZE};
use crate::base::addr::{DmaAddr, PhysAddr};
use crate::base::direction::{CpuOwned, CpuWritable, DevOwned, Direction, Ownership};
use crate::base::error::AllocError;
use crate::base::platform::{DmaAllocator, Side};

const PAGE: usize = PAGE_SIZE as usize;

/// A backend with an IOMMU domain: what non-contiguous allocations need.
type IommuBackend<P, H, K, Bo> = Composed<P, IommuDomain<H>, K, Bo>;

/// Pages linked into one IOVA range for direction `D`, owned by `S`.
///
/// # Invariants
///
/// Each of `pages` is one page from the platform's `alloc_dma`, at the
/// physical address beside it, linked at its index into `range` (all of
/// `len` bytes, rounded up to pages), which is synced; in `DevOwned` each
/// page is handed to the device and no CPU reference to it exists.
#[must_use = "a non-contiguous allocation: dropped while the device owns it, it is quarantined for good"]
pub struct NonContiguous<'d, D, S, P, H, K, Bo>
where
    D: Direction,
    S: Ownership,
    P: DmaAllocator,
    H: IommuHardware,
    K: Coherency,
    Bo: BouncePolicy,
    K::Phys: PhysJoin<Bo::Phys>,
{
    device: &'d Device<IommuBackend<P, H, K, Bo>>,
    pages: Vec<(NonNull<u8>, PhysAddr)>,
    len: usize,
    range: ManuallyDrop<IovaRange>,
    _state: PhantomData<(fn() -> D, S)>,
}

impl<P, H, K, Bo> Device<IommuBackend<P, H, K, Bo>>
where
    P: DmaAllocator,
    H: IommuHardware,
    K: Coherency,
    Bo: BouncePolicy,
    K::Phys: PhysJoin<Bo::Phys>,
{
    /// Allocates `len` zeroed bytes as separate pages linked into one IOVA
    /// range for direction `D` (one IOTLB sync), CPU-owned and not yet
    /// given to the device.
    ///
    /// # Errors
    ///
    /// [`AllocError::ZeroSize`]; [`AllocError::OutOfMemory`] if a page
    /// cannot be had; [`AllocError::Map`] if the IOVA space is exhausted or
    /// a link is refused. Every page and IOVA taken so far is given back.
    #[allow(clippy::type_complexity)]
    pub fn alloc_noncontiguous<D: Direction>(
        &self,
        len: usize,
    ) -> Result<NonContiguous<'_, D, CpuOwned, P, H, K, Bo>, AllocError> {
        if len == 0 {
            return Err(AllocError::ZeroSize);
        }
        let n = len.div_ceil(PAGE);
        let platform = self.platform();
        // Holds the pages until they are linked, and frees them on every
        // early return and on an unwinding hook; once linking starts, an
        // unwind leaks them instead (quarantined, counted): the page table
        // may then hold them.
        let mut held = Pages {
            device: self,
            pages: Vec::with_capacity(n),
            linked: false,
        };
        for _ in 0..n {
            let page = dma_alloc(self, PAGE, PAGE, !K::COHERENT)?;
            let Some(phys) = platform.phys_of(page, PAGE) else {
                // SAFETY: just allocated, never linked, no reference to it.
                unsafe { platform.free_dma(page, PAGE, PAGE) };
                return Err(AllocError::NoPhysAddr);
            };
            held.pages.push((page, phys));
        }
        let domain = self.backend().translation();
        let range = domain
            .alloc_range(n * PAGE, self.config())
            .map_err(AllocError::Map)?;
        held.linked = true;
        for (i, &(_, phys)) in held.pages.iter().enumerate() {
            // SAFETY: `range` is this domain's; the page stays allocated
            // until `unlink_and_free` has returned, and is handed to the
            // device (no CPU reference) whenever the device may use it: it
            // is CPU-owned now, and the device is given the address only
            // when `sync_for_device` has granted every page.
            let linked = unsafe { domain.link(&range, i * PAGE, phys, PAGE, D::VALUE) };
            if linked.is_err() {
                // SAFETY: the device was never given the range.
                unsafe { domain.unlink_and_free(range, self.context()) };
                held.linked = false; // unlinked: free the pages
                return Err(AllocError::Map(crate::base::error::MapErrorKind::Backend(
                    "the IOMMU page table refused a link",
                )));
            }
        }
        domain.sync(&range, self.context());
        let pages = core::mem::take(&mut held.pages);
        held.linked = false; // nothing left to free or count
        Ok(NonContiguous {
            device: self,
            pages,
            len,
            range: ManuallyDrop::new(range),
            _state: PhantomData,
        })
    }
}

/// Pages being gathered for a non-contiguous allocation: freed if the
/// allocation fails or a hook unwinds before they are linked; quarantined
/// (leaked and counted) if it unwinds while they are being linked.
struct Pages<'d, P, H, K, Bo>
where
    P: DmaAllocator,
    H: IommuHardware,
    K: Coherency,
    Bo: BouncePolicy,
    K::Phys: PhysJoin<Bo::Phys>,
{
    device: &'d Device<IommuBackend<P, H, K, Bo>>,
    pages: Vec<(NonNull<u8>, PhysAddr)>,
    linked: bool,
}

impl<P, H, K, Bo> Drop for Pages<'_, P, H, K, Bo>
where
    P: DmaAllocator,
    H: IommuHardware,
    K: Coherency,
    Bo: BouncePolicy,
    K::Phys: PhysJoin<Bo::Phys>,
{
    fn drop(&mut self) {
        if self.linked {
            self.device.stats().record_leak(self.pages.len() * PAGE);
            return;
        }
        for &(p, _) in &self.pages {
            // SAFETY: allocated for this allocation, never linked (or
            // unlinked again), no reference to it.
            unsafe { self.device.platform().free_dma(p, PAGE, PAGE) };
        }
    }
}

impl<'d, D, S, P, H, K, Bo> NonContiguous<'d, D, S, P, H, K, Bo>
where
    D: Direction,
    S: Ownership,
    P: DmaAllocator,
    H: IommuHardware,
    K: Coherency,
    Bo: BouncePolicy,
    K::Phys: PhysJoin<Bo::Phys>,
{
    /// The length in bytes.
    pub fn byte_len(&self) -> usize {
        self.len
    }

    /// The physical pages, in IOVA order: physically, they need not follow
    /// each other.
    pub fn phys_pages(&self) -> impl Iterator<Item = PhysAddr> + '_ {
        self.pages.iter().map(|&(_, phys)| phys)
    }

    /// The length of page `i`'s part of the contents.
    fn seg_len(&self, i: usize) -> usize {
        (self.len - i * PAGE).min(PAGE)
    }

    /// The same allocation in another state.
    fn into_state<S2: Ownership>(self) -> NonContiguous<'d, D, S2, P, H, K, Bo> {
        let mut this = ManuallyDrop::new(self);
        NonContiguous {
            device: this.device,
            pages: core::mem::take(&mut this.pages),
            len: this.len,
            // SAFETY: `this` is never dropped; the range moves once.
            range: ManuallyDrop::new(unsafe { ManuallyDrop::take(&mut this.range) }),
            _state: PhantomData,
        }
    }

    /// Unlinks the range (completed before it returns, in strict mode) and
    /// frees the pages.
    ///
    /// # Safety
    ///
    /// The device has finished with every page; called once, and the
    /// allocation is not used afterwards.
    unsafe fn release(&mut self) {
        let device = self.device;
        // SAFETY: taken once (caller).
        let range = unsafe { ManuallyDrop::take(&mut self.range) };
        // SAFETY: this domain's range; the device is finished (caller).
        unsafe {
            device
                .backend()
                .translation()
                .unlink_and_free(range, device.context())
        };
        for &(p, _) in &self.pages {
            // SAFETY: unlinked and invalidated: no device reaches it; no
            // reference to it exists.
            unsafe { device.platform().free_dma(p, PAGE, PAGE) };
        }
        self.pages.clear();
    }
}

impl<'d, D, P, H, K, Bo> NonContiguous<'d, D, CpuOwned, P, H, K, Bo>
where
    D: Direction,
    P: DmaAllocator,
    H: IommuHardware,
    K: Coherency,
    Bo: BouncePolicy,
    K::Phys: PhysJoin<Bo::Phys>,
{
    /// The contents, page by page, for reading.
    pub fn segments(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.pages.iter().enumerate().map(|(i, &(p, _))| {
            // SAFETY: a page of this allocation, CPU-owned, its contents
            // initialised (zeroed, then written only as bytes); the borrow is
            // tied to `&self`.
            unsafe { core::slice::from_raw_parts(p.as_ptr(), self.seg_len(i)) }
        })
    }

    /// The contents, page by page, for writing (directions the CPU writes).
    pub fn segments_mut(&mut self) -> impl Iterator<Item = &mut [u8]> + '_
    where
        D: CpuWritable,
    {
        let len = self.len;
        self.pages.iter().enumerate().map(move |(i, &(p, _))| {
            // SAFETY: as for `segments`; distinct pages, and `&mut self`
            // makes the borrows exclusive.
            unsafe { core::slice::from_raw_parts_mut(p.as_ptr(), (len - i * PAGE).min(PAGE)) }
        })
    }

    /// Hands the whole range to the device: cleans every page (one
    /// barrier), then grants them.
    pub fn sync_for_device(self) -> NonContiguous<'d, D, DevOwned, P, H, K, Bo> {
        let device = self.device;
        let stats = device.stats();
        // Device-owned before the first clean is issued: if a maintenance
        // hook, the barrier or a grant unwinds, the pages are quarantined,
        // never freed under cleans still queued.
        let this = self.into_state::<DevOwned>();
        for &(p, phys) in &this.pages {
            // SAFETY: a live page of this allocation; the CPU's borrows
            // ended (the CPU-owned allocation was consumed).
            let lines = unsafe {
                device
                    .backend()
                    .coherency()
                    .clean(CacheRange::new(p, phys, PAGE))
            };
            stats.add_lines_cleaned(lines);
        }
        device.backend().flush(device.context());
        for &(p, _) in &this.pages {
            // SAFETY: no CPU reference to the page exists until it is taken
            // back by `sync_for_cpu` or `free`, and it stays allocated.
            unsafe {
                device
                    .platform()
                    .ownership_changed(p, PAGE, Side::Device, device.id())
            };
        }
        this
    }

    /// Unlinks and frees the allocation.
    pub fn free(self) {
        drop(self);
    }
}

impl<'d, D, P, H, K, Bo> NonContiguous<'d, D, DevOwned, P, H, K, Bo>
where
    D: Direction,
    P: DmaAllocator,
    H: IommuHardware,
    K: Coherency,
    Bo: BouncePolicy,
    K::Phys: PhysJoin<Bo::Phys>,
{
    /// The device's view: one contiguous range from this address.
    pub fn dma_addr(&self) -> DmaAddr {
        self.range.addr()
    }

    /// Takes the range back from the device: every page invalidated where
    /// the device writes, one barrier.
    ///
    /// # Safety
    ///
    /// As for [`Mapped::sync_for_cpu`](crate::Mapped::sync_for_cpu): the
    /// device has finished every access to the range, observed by the
    /// driver.
    pub unsafe fn sync_for_cpu(self) -> NonContiguous<'d, D, CpuOwned, P, H, K, Bo> {
        let device = self.device;
        for &(p, phys) in &self.pages {
            // SAFETY: granted by `sync_for_device`.
            unsafe {
                device
                    .platform()
                    .ownership_changed(p, PAGE, Side::Cpu, device.id())
            };
            if D::VALUE.device_writes() {
                // SAFETY: the device is finished (caller); no CPU reference
                // to the page exists.
                let lines = unsafe {
                    device
                        .backend()
                        .coherency()
                        .invalidate(CacheRange::new(p, phys, PAGE))
                };
                device.stats().add_lines_invalidated(lines);
            }
        }
        if D::VALUE.device_writes() {
            // Still device-owned until here: an unwinding barrier
            // quarantines the pages.
            device.backend().flush(device.context());
        }
        self.into_state::<CpuOwned>()
    }

    /// Takes the range back and frees it.
    ///
    /// # Safety
    ///
    /// As for [`sync_for_cpu`](Self::sync_for_cpu).
    pub unsafe fn free(self) {
        // SAFETY: forwarded from the caller.
        drop(unsafe { self.sync_for_cpu() });
    }
}

impl<D, S, P, H, K, Bo> Drop for NonContiguous<'_, D, S, P, H, K, Bo>
where
    D: Direction,
    S: Ownership,
    P: DmaAllocator,
    H: IommuHardware,
    K: Coherency,
    Bo: BouncePolicy,
    K::Phys: PhysJoin<Bo::Phys>,
{
    fn drop(&mut self) {
        if self.pages.is_empty() {
            return; // already released
        }
        if S::DEVICE_OWNED {
            // The device may still use it: quarantined, never freed.
            self.device.stats().record_leak(self.len);
        } else {
            // SAFETY: CPU-owned: the device is finished; the last use.
            unsafe { self.release() };
        }
    }
}

impl<D, S, P, H, K, Bo> fmt::Debug for NonContiguous<'_, D, S, P, H, K, Bo>
where
    D: Direction,
    S: Ownership,
    P: DmaAllocator,
    H: IommuHardware,
    K: Coherency,
    Bo: BouncePolicy,
    K::Phys: PhysJoin<Bo::Phys>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "NonContiguous<{}, {}> {{ bytes: {}, pages: {} }}",
            D::NAME,
            S::NAME,
            self.len,
            self.pages.len()
        )
    }
}
