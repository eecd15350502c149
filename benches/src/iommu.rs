//! An IOMMU domain with hardware that does nothing (target 7).

use std::hint::black_box;

use dmacap::backend::compose::{Coherent, Composed, NoBounce};
use dmacap::backend::iommu::{InvalidationMode, IommuDomain, IommuHardware};
use dmacap::platform::IdentityMap;
use dmacap::{DevOwned, Device, DeviceConfig, DmaAddr, DmaMask, FromDevice, Mapped};

use crate::identity;

/// IOMMU "hardware" with no IOTLB and no device behind it: every request
/// is a no-op.
#[derive(Debug, Default)]
pub struct NopIommu;

// SAFETY: (1) it caches no translation, so when `sync` returns nothing
// cached can be in use, and no device access is in flight because no device
// exists; (2) it translates no device access at all (there is no device).
unsafe impl IommuHardware for NopIommu {
    #[inline]
    fn invalidate_range(&self, iova: DmaAddr, len: u64) {
        black_box((iova, len));
    }

    #[inline]
    fn invalidate_all(&self) {}

    #[inline]
    fn sync(&self) {}
}

/// Identity platform behind an IOMMU domain with strict invalidation,
/// coherent, no bouncing.
pub type IommuBackend = Composed<IdentityMap, IommuDomain<NopIommu>, Coherent, NoBounce>;
/// A device on it.
pub type IommuDev = Device<IommuBackend>;
/// A live mapping on it.
pub type IommuHandle<'d> = Mapped<'d, FromDevice, DevOwned, Box<[u8]>, IommuBackend>;

/// A trusted device with a 48-bit mask behind a strict IOMMU domain.
pub fn iommu_device() -> IommuDev {
    Device::new(
        Composed::from_parts(
            identity(),
            IommuDomain::new(NopIommu, InvalidationMode::Strict),
            Coherent,
            NoBounce,
        ),
        DeviceConfig::new().dma_mask(DmaMask::bits(48)),
    )
}

/// Bytes of each mapped buffer (one IOMMU page each).
pub const BUF_BYTES: usize = 64;

/// `n` live mappings of 64-byte buffers.
pub fn live(dev: &IommuDev, n: usize) -> Vec<Option<IommuHandle<'_>>> {
    (0..n)
        .map(|_| {
            Some(
                dev.map_from_device(vec![0u8; BUF_BYTES].into_boxed_slice())
                    .expect("map"),
            )
        })
        .collect()
}

/// Unmaps every live mapping.
pub fn teardown(live: Vec<Option<IommuHandle<'_>>>) {
    for h in live.into_iter().flatten() {
        // SAFETY: no device exists.
        drop(unsafe { h.unmap() });
    }
}

/// The next index of a walk through `n` (a power of two) slots in an order
/// that jumps around the page table: an odd stride visits every slot once.
#[inline(always)]
pub fn next(i: usize, n: usize) -> usize {
    (i + 0x9E37_79B9) & (n - 1)
}

/// Unmaps live mapping `i` (the carried DMA address is all unmap needs) and
/// maps its buffer again; with `walk`, also looks the physical address up
/// in the page table first, as an unmap without a carried address must.
#[inline(always)]
pub fn remap<'d>(dev: &'d IommuDev, slot: &mut Option<IommuHandle<'d>>, walk: bool) {
    let h = slot.take().expect("live");
    if walk {
        black_box(dev.backend().translation().walk(h.dma_addr()));
    }
    // SAFETY: no device exists.
    let buf = unsafe { h.unmap() };
    *slot = Some(dev.map_from_device(buf).expect("map"));
}
