//! The two-step IOVA API, after Linux 6.16's `dma_iova_try_alloc`,
//! `dma_iova_link`, `dma_iova_sync`, `dma_iova_unlink` and
//! `dma_iova_destroy`: allocate one IOVA range, link many physical ranges
//! into it (the pages need not be physically contiguous, only the IOVA
//! range is), sync once, and at the end unlink everything and free the
//! range with one IOTLB invalidation.
//!
//! ```text
//!   alloc_range(len)          one IOVA allocation
//!   link(range, off, phys..)  × n, entries installed, no invalidation
//!   sync(range)               one invalidation + wait
//!   unlink_and_free(range)    entries cleared, one invalidation, IOVA freed
//! ```

use crate::backend::compose::{MapAttrs, Translation};
use crate::backend::iommu::domain::IommuDomain;
use crate::backend::iommu::format::IoPageTable;
use crate::backend::iommu::iova::IovaAlloc;
use crate::backend::iommu::pagetable::{PageTableError, Prot};
use crate::backend::iommu::{IommuHardware, PAGE_SIZE, page_offset, pages_spanned};
use crate::base::addr::{DmaAddr, PhysAddr};
use crate::base::context::{DeviceConfig, DeviceContext};
use crate::base::direction::DmaDirection;
use crate::base::error::MapErrorKind;

/// An IOVA range allocated by [`IommuDomain::alloc_range`], into which
/// physical ranges are linked. It must be given back with
/// [`IommuDomain::unlink_and_free`]; dropped, its IOVA space is leaked
/// (never reused, so never unsafe).
#[derive(Debug)]
pub struct IovaRange {
    alloc: IovaAlloc,
    len: usize,
}

impl IovaRange {
    /// The first IOVA of the range (page-aligned).
    pub fn addr(&self) -> DmaAddr {
        self.alloc.addr()
    }

    /// The length asked for, in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always `false`: an empty range cannot be allocated.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Why a link was refused. Nothing was linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The bytes do not lie inside the range, or there are none.
    #[error("{len} bytes at offset {offset} do not fit a range of {range_len} bytes")]
    OutOfRange {
        /// Offset asked for.
        offset: usize,
        /// Bytes asked for.
        len: usize,
        /// The range's length.
        range_len: usize,
    },
    /// The offset in the range and the physical address lie at different
    /// places in their pages, so one IOVA page cannot map the bytes.
    #[error("offset {offset:#x} and physical address {phys} differ within their 4 KiB pages")]
    OffsetMismatch {
        /// Offset asked for.
        offset: usize,
        /// Physical address given.
        phys: PhysAddr,
    },
    /// The page table refused: a page is linked already (ranges linked
    /// into one IOVA page must be the same physical page, linked once), or
    /// the physical range is beyond the table's reach.
    #[error(transparent)]
    Table(#[from] PageTableError),
}

impl<H: IommuHardware, F: IoPageTable> IommuDomain<H, F> {
    /// Allocates an IOVA range of `len` bytes (whole pages, page-aligned)
    /// below the mask of the device with `cfg`. Lazy domains refuse
    /// untrusted devices, as for ordinary maps.
    ///
    /// To link a buffer that starts `k` bytes into a page, allocate
    /// `len + k` bytes and link it at offset `k`.
    pub fn alloc_range(&self, len: usize, cfg: &DeviceConfig) -> Result<IovaRange, MapErrorKind> {
        if len == 0 {
            return Err(MapErrorKind::ZeroLength);
        }
        self.check_trust(cfg)?;
        let pages = (len as u64).div_ceil(PAGE_SIZE);
        let alloc = self.alloc_pages(pages, len, cfg)?;
        Ok(IovaRange { alloc, len })
    }

    /// Links `len` bytes of physical memory at `phys` into `range` at
    /// `offset`, for transfers in `dir`, and returns their IOVA. `offset`
    /// and `phys` must lie at the same place in their pages. No
    /// invalidation is issued; call [`sync`](Self::sync) once after the
    /// last link, before the device is started.
    ///
    /// # Safety
    ///
    /// `range` came from this domain's [`alloc_range`](Self::alloc_range).
    /// From now until [`unlink_and_free`](Self::unlink_and_free) of it has
    /// returned (in lazy mode: until the flush queue holding it has been
    /// flushed), the device may access the whole pages holding
    /// `[phys, phys + len)` as `dir` allows: that memory must stay
    /// allocated, and no Rust reference may observe or be invalidated by
    /// the device's accesses (it is handed to the device, as a mapped
    /// buffer is).
    pub unsafe fn link(
        &self,
        range: &IovaRange,
        offset: usize,
        phys: PhysAddr,
        len: usize,
        dir: DmaDirection,
    ) -> Result<DmaAddr, LinkError> {
        let out = LinkError::OutOfRange {
            offset,
            len,
            range_len: range.len,
        };
        if len == 0 || offset.checked_add(len).is_none_or(|end| end > range.len) {
            return Err(out);
        }
        let p = phys.as_u64();
        if page_offset(offset as u64) != page_offset(p) {
            return Err(LinkError::OffsetMismatch { offset, phys });
        }
        let iova = range.addr().as_u64() + offset as u64;
        let first = PhysAddr::new(p - page_offset(p));
        let pages = pages_spanned(p, len as u64);
        crate::sync::lock(self.table()).map_pages(
            DmaAddr::new(iova - page_offset(iova)),
            first,
            pages,
            Prot::for_dma(dir, MapAttrs::RAM),
        )?;
        Ok(DmaAddr::new(iova))
    }

    /// Completes the links of `range` with one IOTLB invalidation of the
    /// range and one wait (for IOMMUs that cache non-present entries), and
    /// counts it on `dev`.
    pub fn sync(&self, range: &IovaRange, dev: &DeviceContext) {
        self.hardware()
            .invalidate_range(range.addr(), range.alloc.bytes());
        self.complete_invalidation(dev);
    }

    /// Unlinks everything linked into `range` and frees it: in strict mode
    /// with one IOTLB invalidation (together with this thread's other
    /// gathered unmaps) before returning; in lazy mode through the flush
    /// queue.
    ///
    /// # Safety
    ///
    /// `range` came from this domain's [`alloc_range`](Self::alloc_range),
    /// and the device has finished every access to what was linked into
    /// it.
    pub unsafe fn unlink_and_free(&self, range: IovaRange, dev: &DeviceContext) {
        let IovaRange { alloc, .. } = range;
        crate::sync::lock(self.table()).unmap_pages(alloc.addr(), alloc.pages());
        self.retire(alloc, dev);
        if !self.mode().is_lazy() {
            Translation::flush(self, dev);
        }
    }
}

#[cfg(all(test, feature = "sim"))]
mod tests {
    use super::*;
    use crate::api::device::Device;
    use crate::backend::compose::{Coherent, Composed, NoBounce};
    use crate::backend::iommu::InvalidationMode;
    use crate::backend::iommu::testhw::{Op, Recorder};
    use crate::sim::SimMemory;

    type Dev = Device<Composed<SimMemory, IommuDomain<Recorder>, Coherent, NoBounce>>;

    fn device(domain: IommuDomain<Recorder>) -> Dev {
        let mem = SimMemory::with_base(PhysAddr::new(0x8000_0000), 1 << 16);
        Device::new(
            Composed::from_parts(mem, domain, Coherent, NoBounce),
            DeviceConfig::new(),
        )
    }

    #[test]
    fn link_sync_unlink_strict() {
        let dev = device(IommuDomain::new(
            Recorder::default(),
            InvalidationMode::Strict,
        ));
        let d = dev.backend().translation();
        let free0 = d.free_pages();
        assert_eq!(
            d.alloc_range(0, dev.config()).unwrap_err(),
            MapErrorKind::ZeroLength
        );
        let r = d.alloc_range(3 * 4096 + 0x10, dev.config()).unwrap();
        assert_eq!(d.free_pages(), free0 - 4);
        // A buffer starting 0x10 into a page, then a whole page elsewhere.
        // SAFETY: nothing will access the (unbacked) pages.
        let a = unsafe {
            d.link(
                &r,
                0x10,
                PhysAddr::new(0x9000_0010),
                4096 - 0x10,
                DmaDirection::ToDevice,
            )
        };
        assert_eq!(a, Ok(DmaAddr::new(r.addr().as_u64() + 0x10)));
        // SAFETY: as above.
        let b = unsafe {
            d.link(
                &r,
                2 * 4096,
                PhysAddr::new(0x7000_0000),
                4096,
                DmaDirection::FromDevice,
            )
        };
        assert_eq!(b, Ok(DmaAddr::new(r.addr().as_u64() + 2 * 4096)));
        let pa = d.walk(r.addr()).unwrap();
        assert_eq!(
            (pa.phys(), pa.can_read(), pa.can_write()),
            (PhysAddr::new(0x9000_0000), true, false)
        );
        assert_eq!(
            d.walk(DmaAddr::new(r.addr().as_u64() + 4096)),
            None,
            "a hole"
        );
        let pb = d.walk(b.unwrap()).unwrap();
        assert_eq!(
            (pb.phys(), pb.can_read(), pb.can_write()),
            (PhysAddr::new(0x7000_0000), false, true)
        );
        assert!(d.hardware().take().is_empty(), "links invalidate nothing");

        d.sync(&r, dev.context());
        assert_eq!(
            d.hardware().take(),
            [Op::Range(r.addr(), 4 * 4096), Op::Sync]
        );
        let start = r.addr();
        // SAFETY: from this domain; no device ran.
        unsafe { d.unlink_and_free(r, dev.context()) };
        assert_eq!(d.hardware().take(), [Op::Range(start, 4 * 4096), Op::Sync]);
        assert_eq!(d.walk(start), None);
        assert_eq!(d.free_pages(), free0);
        assert_eq!(dev.stats().iotlb_invalidations(), 2);
    }

    #[test]
    fn unlink_is_queued_in_lazy_mode_and_exhaustion_holds_nothing() {
        let dom = IommuDomain::with_aperture(
            Recorder::default(),
            InvalidationMode::LAZY,
            DmaAddr::new(1 << 20),
            4 * 4096,
        );
        let dev = device(dom);
        let d = dev.backend().translation();
        assert_eq!(
            d.alloc_range(5 * 4096, dev.config()).unwrap_err(),
            MapErrorKind::IovaExhausted { len: 5 * 4096 }
        );
        assert_eq!(d.free_pages(), 4);
        let r = d.alloc_range(4 * 4096, dev.config()).unwrap();
        // SAFETY: nothing will access the (unbacked) page.
        unsafe {
            d.link(
                &r,
                0,
                PhysAddr::new(0x9000_0000),
                4096,
                DmaDirection::ToDevice,
            )
        }
        .unwrap();
        // SAFETY: from this domain; no device ran.
        unsafe { d.unlink_and_free(r, dev.context()) };
        assert!(d.hardware().take().is_empty());
        assert_eq!((d.queued(), d.free_pages()), (1, 0));
        d.flush_queue(dev.context());
        assert_eq!(d.hardware().take(), [Op::All, Op::Sync]);
        assert_eq!(d.free_pages(), 4);
    }
}
