//! IOMMU translation (feature `alloc`): a device reaches memory through an
//! I/O page table of its own, at I/O virtual addresses (IOVAs) handed out
//! per mapping.
//!
//! [`IommuDomain`] is a [`Translation`](crate::backend::compose::Translation):
//! put it in a [`Composed`](crate::backend::compose::Composed) backend with a
//! coherency and a bounce policy. Its parts, each in its own module:
//!
//! - [`iova`]: the IOVA range allocator (top-down below the device's mask,
//!   in 4 KiB pages), with per-CPU caches of recently freed ranges
//!   ("magazines" of 127 entries backed by a depot, Linux's `iova_rcache`).
//! - [`format`]: the page-table format as a parameter of the domain
//!   ([`IoPageTable`]), with two formats:
//!   - [`pagetable`]: the software 4-level I/O page table (48-bit IOVA,
//!     4 KiB pages) with read, write and non-cacheable bits per page, which
//!     the simulator walks (the default);
//!   - [`arm_lpae`]: Arm VMSAv8-64 stage-1 descriptors in physical memory,
//!     which an SMMUv3 walks.
//! - [`domain`]: the domain itself: map, unmap, gathered IOTLB invalidation,
//!   strict or lazy ([`InvalidationMode`]).
//! - [`range`]: the two-step IOVA API (Linux 6.16's `dma_iova_*`): one IOVA
//!   range, many physical ranges linked into it, one IOTLB sync.
//! - [`IommuHardware`]: what the domain needs from the hardware
//!   (invalidate, then wait); a real driver implements it with its command
//!   queue, the simulator with `sim::SimIommu`.
//!
//! ```text
//!   map:    IOVA alloc (magazine → depot → tree) → install PTEs
//!   unmap:  clear PTEs → gather the IOVA (strict) | flush queue (lazy)
//!   flush:  one invalidation over the gathered span → sync → free IOVAs
//! ```

use crate::base::addr::DmaAddr;

pub mod arm_lpae;
pub mod domain;
pub mod fault;
mod flushq;
pub mod format;
mod gather;
pub mod iova;
mod local;
pub mod pagetable;
pub mod range;
mod rcache;
#[cfg(all(test, feature = "sim"))]
mod testhw;

pub use arm_lpae::{ArmStage1, Stage1Config, Stage1Options, Stage1Pte, TablePage, TablePages};
pub use domain::IommuDomain;
pub use fault::{Access, FaultReason, IommuFault};
pub use format::{IoPageTable, PageEntry};
pub use iova::{IovaAlloc, IovaAllocator};
pub use pagetable::{PageTable, PageTableError, Prot, Pte};
pub use range::{IovaRange, LinkError};

/// `log2` of the IOMMU page size.
pub const PAGE_SHIFT: u32 = 12;
/// The IOMMU page size in bytes: the granule at which a device is given
/// access.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// Bits of I/O virtual address the page table translates.
pub const IOVA_BITS: u32 = 48;

/// The offset of `addr` inside its IOMMU page.
#[inline]
pub(crate) const fn page_offset(addr: u64) -> u64 {
    addr & (PAGE_SIZE - 1)
}

/// How many IOMMU pages `[addr, addr + len)` touches (`len > 0`, no
/// overflow).
#[inline]
pub(crate) const fn pages_spanned(addr: u64, len: u64) -> u64 {
    (page_offset(addr) + len).div_ceil(PAGE_SIZE)
}

/// When the IOTLB is invalidated for unmapped ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidationMode {
    /// Every unmap is invalidated before the flush that follows it returns:
    /// once the buffer is back, the device cannot reach it. The IOVA is
    /// freed after the invalidation.
    Strict,
    /// Unmapped ranges go to a per-CPU flush queue; the IOTLB is
    /// invalidated for all of them at once when a queue is full, when
    /// [`IommuDomain::flush_queue`] is called, or when
    /// [`IommuDomain::tick`] finds the oldest entry older than
    /// `timeout_ms`. Until then the device may still reach unmapped
    /// memory through stale IOTLB entries, so this mode is refused for
    /// untrusted devices. IOVAs are freed only after the invalidation that
    /// covers them, so an IOVA is never reused while stale.
    Lazy {
        /// Entries per flush queue (Linux: 256).
        queue_len: usize,
        /// Age in milliseconds after which [`IommuDomain::tick`] flushes
        /// (Linux: 10).
        timeout_ms: u64,
    },
}

impl InvalidationMode {
    /// Linux's lazy mode: 256-entry queues, 10 ms timeout.
    pub const LAZY: Self = Self::Lazy {
        queue_len: 256,
        timeout_ms: 10,
    };

    /// Whether invalidation is deferred.
    pub const fn is_lazy(&self) -> bool {
        matches!(self, Self::Lazy { .. })
    }
}

/// The hardware side of an IOMMU: IOTLB invalidation. A real driver
/// implements it with its command queue (SMMUv3 `CMD_TLBI_*` then
/// `CMD_SYNC`; VT-d invalidation descriptors then a wait descriptor); the
/// simulator with `sim::SimIommu`.
///
/// Invalidations are *issued* by [`invalidate_range`](Self::invalidate_range)
/// and [`invalidate_all`](Self::invalidate_all) and *completed* by
/// [`sync`](Self::sync), so that many can share one wait.
///
/// # Safety
///
/// An implementation promises:
///
/// 1. When [`sync`](Self::sync) returns, the IOMMU no longer uses any
///    translation it cached for an IOVA covered by an invalidation issued
///    (by any thread) before `sync` was called, and no device access that
///    used such a translation is still in flight.
/// 2. The hardware translates device accesses only through the domain's
///    page table (see [`IommuDomain::walk`]) and translations it cached
///    from it, and enforces the permission bits of the entries.
pub unsafe trait IommuHardware: Send + Sync {
    /// Issues the invalidation of cached translations for
    /// `[iova, iova + len)`.
    fn invalidate_range(&self, iova: DmaAddr, len: u64);

    /// Issues the invalidation of every cached translation of the domain.
    fn invalidate_all(&self);

    /// Waits until every invalidation issued so far has completed.
    fn sync(&self);
}
