//! Page allocations (Linux's `dma_alloc_pages` / `dma_alloc_noncoherent`)
//! and maps that must never bounce (`DMA_ATTR_REQUIRE_COHERENT`).
//!
//! [`Device::alloc_pages`] allocates memory the device reaches where it
//! lies (below its mask, or anywhere behind an IOMMU), in whole cache-line
//! granules and whole IOMMU pages, maps it, and returns an ordinary
//! [`Mapped`] handle, CPU-owned and never yet given to the device: its
//! ownership then moves with the ordinary syncs and batches, and unmapping
//! it gives back a [`DmaPages`] buffer that frees itself.

use zerocopy::FromZeros;

use crate::api::coherent::dma_pages;
use crate::api::device::Device;
use crate::api::handle::Mapped;
use crate::backend::Backend;
use crate::backend::compose::NeverBounces;
use crate::base::buffer::{CacheSafe, DmaBuffer, DmaPages, Transfer};
use crate::base::direction::{CpuOwned, DevOwned, Direction};
use crate::base::error::{AllocError, MapError};
use crate::base::platform::DmaAllocator;

/// The handle [`Device::alloc_pages`] returns.
pub type PagesMapped<'d, D, T, B> =
    Mapped<'d, D, CpuOwned, DmaPages<[T], <B as Backend>::Platform>, B>;

impl<B: Backend> Device<B>
where
    B::Platform: DmaAllocator + Clone,
{
    /// Allocates `len` zeroed `T`s already mapped for direction `D`, as a
    /// CPU-owned handle that no device has been given yet: fill it, then
    /// [`sync_for_device`](Mapped::sync_for_device).
    ///
    /// The memory fills whole cache-line granules and IOMMU pages and lies
    /// where the device reaches it, so it is never bounced and needs no
    /// run-time cache-line check, whatever `T`.
    ///
    /// ```
    /// let sim = dmacap::sim::SimPlatform::noncoherent(1 << 20);
    /// let dev = sim.noncoherent_device();
    /// let mut cmd = dev.alloc_pages::<dmacap::ToDevice, u32>(16).unwrap();
    /// cmd.contents_mut()[0] = 0xc0de;
    /// let cmd = cmd.sync_for_device(); // cleaned; the device may read it
    /// # // SAFETY: no device runs.
    /// # drop(unsafe { cmd.unmap() });
    /// ```
    ///
    /// # Errors
    ///
    /// [`AllocError::ZeroSize`], [`AllocError::TooLarge`],
    /// [`AllocError::OutOfMemory`], or [`AllocError::Map`] (an IOVA space
    /// exhausted, say). Nothing is held on error.
    pub fn alloc_pages<D: Direction, T: FromZeros>(
        &self,
        len: usize,
    ) -> Result<PagesMapped<'_, D, T, B>, AllocError>
    where
        [T]: Transfer<D>,
    {
        let pages = dma_pages::<B, T>(self, len, None)?;
        let size = pages.allocated_bytes();
        // Whole granules and pages, its own, by construction: no line check;
        // reachable where it lies: no bounce.
        let handle = Mapped::<D, DevOwned, _, B>::map_issue_with(self, pages, false, true, size)
            .map_err(|e| AllocError::Map(e.kind()))?;
        handle.complete_sync();
        // SAFETY: no device was given the address; the map's maintenance
        // is complete.
        Ok(unsafe { handle.into_cpu_owned_never_granted() })
    }
}

impl<B: Backend> Device<B> {
    /// Maps `buf` where it lies: the backend's type proves it never
    /// bounces (Linux's `DMA_ATTR_REQUIRE_COHERENT`, decided at compile
    /// time). Otherwise as [`map`](Self::map).
    pub fn map_unbounced<D: Direction, Buf: DmaBuffer>(
        &self,
        buf: Buf,
    ) -> Result<Mapped<'_, D, DevOwned, Buf, B>, MapError<Buf>>
    where
        B: NeverBounces,
        Buf::Target: Transfer<D> + CacheSafe<B::Granule>,
    {
        Mapped::map(self, buf)
    }

    /// Maps `buf` where it lies, or fails with
    /// [`MapErrorKind::WouldBounce`](crate::MapErrorKind::WouldBounce) (the
    /// buffer handed back) where the backend would have bounced it: Linux's
    /// `DMA_ATTR_REQUIRE_COHERENT`, checked at run time for a backend whose
    /// type cannot prove it ([`map_unbounced`](Self::map_unbounced) can).
    pub fn map_require_unbounced<D: Direction, Buf: DmaBuffer>(
        &self,
        buf: Buf,
    ) -> Result<Mapped<'_, D, DevOwned, Buf, B>, MapError<Buf>>
    where
        Buf::Target: Transfer<D> + CacheSafe<B::Granule>,
    {
        let check = crate::base::buffer::check_at_map::<Buf::Target, B::Granule>();
        let handle = Mapped::map_issue_with(self, buf, check, true, 0)?;
        handle.complete_sync();
        handle.granted();
        Ok(handle)
    }
}
