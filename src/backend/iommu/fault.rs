//! What an IOMMU reports when it refuses a device access: one record per
//! fault, the same type for the simulated IOMMU (`sim::SimIommu::faults`)
//! and for a hardware IOMMU's driver (an SMMUv3's event queue turned into
//! records: `examples/qemu-aarch64`). `no_std`, no allocation.

use crate::base::addr::DmaAddr;

/// What a device access does to memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The device reads memory.
    Read,
    /// The device writes memory.
    Write,
}

/// Why the IOMMU refused a device access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultReason {
    /// No page table entry translates the address (an SMMU's
    /// `F_TRANSLATION`).
    Untranslated,
    /// The entry does not permit the access (a write to a page mapped for
    /// `ToDevice`, a read of one mapped for `FromDevice` where the format
    /// can express it; an SMMU's `F_PERMISSION`).
    Denied,
}

/// One fault: the address the device used, what it tried, and why it was
/// refused.
///
/// # Example
///
/// ```
/// use dmacap::DmaAddr;
/// use dmacap::backend::iommu::{Access, FaultReason, IommuFault};
///
/// // An SMMUv3 event record's type 0x10 (F_TRANSLATION) for a write.
/// let f = IommuFault { iova: DmaAddr::new(0xffff_e000), access: Access::Write, reason: FaultReason::Untranslated };
/// assert!(f.hits(DmaAddr::new(0xffff_e000), 0x2000));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IommuFault {
    /// The address the device used.
    pub iova: DmaAddr,
    /// What it tried to do.
    pub access: Access,
    /// Why it was refused.
    pub reason: FaultReason,
}

impl IommuFault {
    /// Whether the faulting address lies in `[start, start + len)`.
    pub fn hits(&self, start: DmaAddr, len: u64) -> bool {
        self.iova
            .as_u64()
            .checked_sub(start.as_u64())
            .is_some_and(|off| off < len)
    }
}
