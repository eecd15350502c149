//! MMIO and peer-to-peer mappings (Linux's `DMA_ATTR_MMIO`): a device is
//! given another device's registers or memory BAR.
//!
//! Such a range is not RAM that Rust owns: the CPU never reads or writes it
//! through dmacap, it is never bounced (a bounce copy of registers is
//! meaningless; a range the device cannot reach is an error), it needs no
//! cache maintenance, and an IOMMU maps it non-cacheable. So its handle,
//! [`MmioMapped`], has no CPU accessors and no sync methods at all: only the
//! DMA address, and an unmap.

use core::fmt;
use core::marker::PhantomData;
use core::mem::ManuallyDrop;

use crate::api::device::Device;
use crate::backend::{Backend, MmioRequest};
use crate::base::addr::{DmaAddr, PhysAddr};
use crate::base::direction::Direction;
use crate::base::error::MapErrorKind;

/// An MMIO or peer-memory range mapped for device `'d`, for transfers in
/// direction `D`. Always device-owned: the CPU has no view of it.
///
/// # Invariants
///
/// `(dma, state)` is a live mapping of `[phys, phys + len)` made by the
/// device's backend with `map_mmio`, not unmapped; `len > 0`.
#[must_use = "an MMIO mapping: dropped, it stays mapped for good (the device keeps its access); \
              unmap it"]
pub struct MmioMapped<'d, D: Direction, B: Backend> {
    device: &'d Device<B>,
    phys: PhysAddr,
    len: usize,
    dma: DmaAddr,
    state: ManuallyDrop<B::State>,
    _dir: PhantomData<fn() -> D>,
}

impl<B: Backend> Device<B> {
    /// Maps `len` bytes of MMIO or peer memory at `phys` for direction `D`.
    ///
    /// Fails, with nothing mapped, for an empty or overflowing range, and
    /// when the device cannot reach the range without bouncing
    /// ([`MapErrorKind::MmioNeedsBounce`]).
    ///
    /// # Safety
    ///
    /// The caller promises `[phys, phys + len)` is MMIO or peer-device
    /// memory that this device may be given access to (a BAR the driver
    /// owns), never RAM that Rust code owns: the device will write it with
    /// no further check.
    ///
    /// # Example
    ///
    /// ```
    /// use dmacap::{PhysAddr, ToDevice};
    /// # let sim = dmacap::sim::SimPlatform::new(1 << 16);
    /// # let dev = sim.coherent_device();
    /// // A peer device's doorbell page.
    /// // SAFETY: 0xfe00_0000 is the peer's BAR in this (simulated) system.
    /// let bar = unsafe { dev.map_mmio::<ToDevice>(PhysAddr::new(0xfe00_0000), 4096) }.unwrap();
    /// let _tell_the_device = bar.dma_addr();
    /// // SAFETY: the device has finished using the BAR.
    /// unsafe { bar.unmap() };
    /// ```
    pub unsafe fn map_mmio<D: Direction>(
        &self,
        phys: PhysAddr,
        len: usize,
    ) -> Result<MmioMapped<'_, D, B>, MapErrorKind> {
        if len == 0 {
            return Err(MapErrorKind::ZeroLength);
        }
        if phys.last_of(len as u64).is_none() {
            return Err(MapErrorKind::AddressOverflow { phys, len });
        }
        let req = MmioRequest {
            phys,
            len,
            dir: D::VALUE,
            device: self.context(),
        };
        // SAFETY: the caller promises the range is MMIO the device may use.
        let (dma, state) = unsafe { self.backend().map_mmio(&req) }?;
        Ok(MmioMapped {
            device: self,
            phys,
            len,
            dma,
            state: ManuallyDrop::new(state),
            _dir: PhantomData,
        })
    }
}

impl<D: Direction, B: Backend> MmioMapped<'_, D, B> {
    /// The address the device must use.
    pub fn dma_addr(&self) -> DmaAddr {
        self.dma
    }

    /// The physical address of the range.
    pub fn phys(&self) -> PhysAddr {
        self.phys
    }

    /// The length of the range in bytes.
    pub fn byte_len(&self) -> usize {
        self.len
    }

    /// Removes the mapping and completes the removal (an IOTLB
    /// invalidation under an IOMMU).
    ///
    /// # Safety
    ///
    /// The device has finished every access through this mapping, observed
    /// by the driver, and will not use its DMA address again.
    pub unsafe fn unmap(self) {
        let mut this = ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped, so the state is taken once.
        let state = unsafe { ManuallyDrop::take(&mut this.state) };
        // SAFETY: a live mapping made by `map_mmio` (invariant), unmapped
        // once; the device is finished (caller).
        unsafe {
            this.device
                .backend()
                .unmap_mmio(this.dma, this.len, state, this.device.context())
        };
        this.device.backend().flush(this.device.context());
    }
}

impl<D: Direction, B: Backend> Drop for MmioMapped<'_, D, B> {
    fn drop(&mut self) {
        // The device may still be using the mapping: keep it (an IOVA stays
        // reserved) and count it, as for any dropped device-owned handle.
        self.device.stats().record_leak(0);
    }
}

impl<D: Direction, B: Backend> fmt::Debug for MmioMapped<'_, D, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MmioMapped<{}> {{ phys: {:#x}, bytes: {}, dma: {:#x} }}",
            D::NAME,
            self.phys.as_u64(),
            self.len,
            self.dma.as_u64()
        )
    }
}
