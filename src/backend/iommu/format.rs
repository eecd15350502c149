//! The I/O page-table format as a parameter of the IOMMU domain.
//!
//! [`IommuDomain<H, F>`](crate::backend::iommu::IommuDomain) keeps its page
//! table in a format `F: IoPageTable`. Two formats exist:
//!
//! - [`PageTable`](crate::backend::iommu::PageTable), the default: the
//!   software model the simulator's IOMMU walks (host memory, arena
//!   indices, separate read and write bits).
//! - [`ArmStage1`](crate::backend::iommu::arm_lpae::ArmStage1): Arm
//!   VMSAv8-64 stage-1 descriptors (4 KiB granule, 48-bit input) in
//!   physical memory that an SMMUv3 walks.
//!
//! The shape follows Linux's `io_pgtable_ops` (`map_pages`, `unmap_pages`,
//! `iova_to_phys`) and its 2025 generic IOMMU page table: the domain owns
//! the IOVA space and the IOTLB; the format owns the entries. Unlike Linux,
//! unmap never reads back the physical address (the handle carries it), and
//! the walk exists only for hardware models and tests.

use core::fmt;

use crate::backend::iommu::pagetable::{PageTableError, Prot};
use crate::backend::iommu::{IOVA_BITS, PAGE_SIZE};
use crate::base::addr::{DmaAddr, PhysAddr};

/// The checks every format makes before a map changes anything: `pages`
/// non-zero, both addresses page-aligned, the IOVA range inside the 48-bit
/// space and the physical range inside the format's `output_bits`.
pub(crate) fn check_map_range(
    iova: DmaAddr,
    phys: PhysAddr,
    pages: u64,
    output_bits: u32,
) -> Result<(), PageTableError> {
    let (v, p) = (iova.as_u64(), phys.as_u64());
    if pages == 0 || !v.is_multiple_of(PAGE_SIZE) || !p.is_multiple_of(PAGE_SIZE) {
        return Err(PageTableError::Misaligned { iova, phys });
    }
    let bytes = pages.checked_mul(PAGE_SIZE);
    let fits = |start: u64, bits: u32| {
        bytes
            .and_then(|b| start.checked_add(b))
            .is_some_and(|end| end <= 1 << bits)
    };
    if !fits(v, IOVA_BITS) || !fits(p, output_bits) {
        return Err(PageTableError::OutOfRange { iova, phys, pages });
    }
    Ok(())
}

/// A leaf entry as a format's [`walk`](IoPageTable::walk) returns it.
pub trait PageEntry: Copy + PartialEq + fmt::Debug {
    /// The physical page the entry maps.
    fn phys(&self) -> PhysAddr;

    /// The access the entry grants the device, as the hardware enforces
    /// it (a format may grant more than was asked: see
    /// [`IoPageTable::map_pages`]).
    fn prot(&self) -> Prot;
}

/// An I/O page-table format: what [`IommuDomain`](crate::backend::iommu::IommuDomain)
/// needs to install and clear the entries of 4 KiB pages in a 48-bit IOVA
/// space.
///
/// # Safety
///
/// The domain's soundness rests on the table holding exactly the entries it
/// installed. An implementation promises:
///
/// 1. After [`map_pages`](Self::map_pages) returns `Ok`, the hardware that
///    walks the table translates each of the `pages` pages at `iova` to the
///    corresponding page at `phys`, granting the access `prot` asks for and
///    no more, except that a format that cannot express write-only access
///    may grant read access with write (Arm stage 1; documented on the
///    format). Every write is visible to the walker before `map_pages`
///    returns. On `Err`, no translation was added or changed.
/// 2. After [`unmap_pages`](Self::unmap_pages) returns, no page of the range
///    is translated by a walk that starts afterwards (cached translations
///    are the domain's business: it invalidates the IOTLB), and the return
///    value is the number of pages of the range that were mapped.
/// 3. No other method adds or changes a translation, and a page's
///    translation never changes while it is mapped.
/// 4. [`has_mappings`](Self::has_mappings) is `true` whenever some page is
///    mapped; after [`leak`](Self::leak), dropping the table frees no memory
///    the walker may read.
pub unsafe trait IoPageTable: Send {
    /// The leaf entry [`walk`](Self::walk) returns.
    type Entry: PageEntry;

    /// Bits of physical address the format can map (at most 52): a
    /// physical page at or above `1 << output_bits()` is refused.
    fn output_bits(&self) -> u32;

    /// Maps `pages` pages from `iova` to `phys` with `prot`. Both addresses
    /// must be page-aligned and `pages` non-zero. Refused, with no
    /// translation changed, if any page is mapped already, the range runs
    /// past the 48-bit IOVA space or the physical output, the format cannot
    /// express `prot`, or a table cannot be allocated.
    fn map_pages(
        &mut self,
        iova: DmaAddr,
        phys: PhysAddr,
        pages: u64,
        prot: Prot,
    ) -> Result<(), PageTableError>;

    /// Clears the entries of `pages` pages from `iova` (page-aligned) and
    /// returns how many were mapped. Tables stay.
    fn unmap_pages(&mut self, iova: DmaAddr, pages: u64) -> u64;

    /// The hardware's page walk: the leaf entry translating `iova`, if it is
    /// mapped. dmacap's own paths never call it (see
    /// [`IommuDomain::walks`](crate::backend::iommu::IommuDomain::walks)).
    fn walk(&self, iova: DmaAddr) -> Option<Self::Entry>;

    /// Whether any page is mapped.
    fn has_mappings(&self) -> bool;

    /// Tables allocated, the root included.
    fn tables(&self) -> usize;

    /// Called by the domain's drop when a page is still mapped (a handle was
    /// forgotten): the hardware may go on walking the table, so from now on
    /// dropping it must free none of the memory the walker reads.
    fn leak(&mut self);
}
