//! The simulated platform (feature `sim`): RAM with physical addresses and
//! devices that move real bytes through a backend's translation.
//!
//! It is public so that driver authors can test their own drivers against
//! it: a driver that hands a device the wrong address, or reads a buffer
//! before the device wrote it, gets wrong bytes or a [`SimFault`] here.
//!
//! The simulated device touches only memory that a handle has handed to it
//! (through [`PhysLookup::ownership_changed`](crate::base::platform::PhysLookup::ownership_changed)),
//! and it reaches that memory through the handle's own pointer. An access to
//! anything else (a buffer the CPU owns, one that is not mapped, a neighbour)
//! is a [`SimFault::NotDeviceOwned`], never a write under a live Rust
//! reference: the simulator stays sound whatever a test makes the device do.
//!
//! - [`SimMemory`]: the RAM and its allocator; [`SimBuffer`]: a buffer in it.
//!   The RAM is coherent, or sits behind a simulated write-back CPU cache
//!   that devices do not snoop ([`SimMemory::noncoherent`]), maintained by
//!   [`SimCache`]: there, a missing clean, invalidate or barrier makes the
//!   device or the CPU read wrong bytes.
//! - [`SimDevice`]: a device's DMA engine, reading and writing at DMA
//!   addresses through [`BusTranslate`].
//! - [`SimIommu`]: an IOMMU with an IOTLB and a fault log, for devices
//!   behind an [`IommuDomain`](crate::backend::iommu::IommuDomain).
//! - [`SimPlatform`]: both, plus ready-made devices.
//! - [`FaultPlan`], [`FaultyTranslation`], [`FaultyBounce`],
//!   [`FaultyPlatform`]: wrappers that make chosen map, IOVA, bounce-slot,
//!   look-up and allocation calls fail, to test error paths.

mod bounce;
mod cache;
mod device;
mod fault;
mod iommu;
mod memory;

pub use cache::SimCache;
pub use device::{Access, BusTranslate, SimDevice, SimFault};
pub use fault::{FaultPlan, FaultyBounce, FaultyPlatform, FaultyTranslation};
pub use iommu::{FaultReason, IommuFault, SimIommu, SimIommuBackend, SimNonCoherentIommuBackend};
pub use memory::{PhysAccessError, SimAllocError, SimBuffer, SimMemory};

use crate::api::device::{Device, DeviceConfig};
use crate::backend::Backend;
use crate::backend::direct::{DirectCoherent, DmaWindows};
use crate::backend::noncoherent::DirectNonCoherent;
use crate::base::addr::PhysAddr;

/// A simulated machine: RAM at a physical base address, and the means to
/// attach devices to it.
///
/// # Example
///
/// ```
/// use dmacap::sim::SimPlatform;
///
/// let sim = SimPlatform::new(1 << 20);
/// let dev = sim.coherent_device();
/// assert!(dev.is_coherent());
/// assert_eq!(sim.memory().phys_base().as_u64(), SimPlatform::DEFAULT_BASE);
/// ```
#[derive(Debug, Clone)]
pub struct SimPlatform {
    memory: SimMemory,
}

impl SimPlatform {
    /// Where RAM starts unless told otherwise: 2 GiB, as on many arm64
    /// systems, so that physical and DMA addresses are visibly not small
    /// integers.
    pub const DEFAULT_BASE: u64 = 0x8000_0000;

    /// `size` bytes of coherent RAM at [`DEFAULT_BASE`](Self::DEFAULT_BASE).
    pub fn new(size: usize) -> Self {
        Self::with_base(PhysAddr::new(Self::DEFAULT_BASE), size)
    }

    /// `size` bytes of RAM at [`DEFAULT_BASE`](Self::DEFAULT_BASE) behind a
    /// simulated write-back CPU cache that devices do not snoop
    /// ([`SimMemory::noncoherent`]). Attach devices with
    /// [`noncoherent_device`](Self::noncoherent_device).
    ///
    /// ```
    /// use dmacap::sim::SimPlatform;
    ///
    /// let sim = SimPlatform::noncoherent(1 << 16);
    /// let dev = sim.noncoherent_device();
    /// assert!(!dev.is_coherent());
    /// let engine = sim.device(&dev);
    ///
    /// let rx = sim.memory().alloc_slice_aligned::<u8>(64, 64).unwrap();
    /// let rx = dev.map_from_device(rx).unwrap();
    /// engine.fill(rx.dma_addr(), 7, 64).unwrap();
    /// // SAFETY: the simulated write has completed.
    /// let rx = unsafe { rx.sync_for_cpu() }; // invalidates: the CPU sees it
    /// assert_eq!(rx.contents(), &[7; 64]);
    /// ```
    pub fn noncoherent(size: usize) -> Self {
        Self {
            memory: SimMemory::noncoherent(PhysAddr::new(Self::DEFAULT_BASE), size),
        }
    }

    /// `size` bytes of RAM at `phys_base`.
    pub fn with_base(phys_base: PhysAddr, size: usize) -> Self {
        Self {
            memory: SimMemory::with_base(phys_base, size),
        }
    }

    /// The RAM.
    pub fn memory(&self) -> &SimMemory {
        &self.memory
    }

    /// A coherent, directly mapped device with Linux's default limits
    /// (32-bit mask) and DMA addresses equal to physical addresses.
    ///
    /// On non-coherent RAM ([`noncoherent`](Self::noncoherent)) this is a
    /// device wrongly declared coherent: no maintenance is done, and the
    /// device and the CPU do not see each other's bytes.
    pub fn coherent_device(&self) -> Device<DirectCoherent<SimMemory>> {
        self.coherent_device_with(DeviceConfig::new(), DmaWindows::identity())
    }

    /// A coherent, directly mapped device with the given limits and bus
    /// windows.
    pub fn coherent_device_with(
        &self,
        config: DeviceConfig,
        windows: DmaWindows,
    ) -> Device<DirectCoherent<SimMemory>> {
        Device::new(
            DirectCoherent::with_windows(self.memory.clone(), windows),
            config,
        )
    }

    /// A non-coherent, directly mapped device with Linux's default limits
    /// (32-bit mask) and DMA addresses equal to physical addresses: every
    /// hand-over is paired with [`SimCache`] maintenance.
    ///
    /// # Panics
    ///
    /// If the RAM is coherent (made by [`new`](Self::new) or
    /// [`with_base`](Self::with_base)), which has no cache to maintain.
    pub fn noncoherent_device(&self) -> Device<DirectNonCoherent<SimMemory, SimCache>> {
        self.noncoherent_device_with(DeviceConfig::new(), DmaWindows::identity())
    }

    /// A non-coherent, directly mapped device with the given limits and bus
    /// windows.
    ///
    /// # Panics
    ///
    /// If the RAM is coherent, as for
    /// [`noncoherent_device`](Self::noncoherent_device).
    pub fn noncoherent_device_with(
        &self,
        config: DeviceConfig,
        windows: DmaWindows,
    ) -> Device<DirectNonCoherent<SimMemory, SimCache>> {
        let cache = self.memory.cache().expect(
            "a non-coherent device needs non-coherent RAM: make the platform with \
             SimPlatform::noncoherent",
        );
        Device::new(
            DirectNonCoherent::with_windows(self.memory.clone(), windows, cache),
            config,
        )
    }

    /// The DMA engine of `device`, reaching this RAM.
    pub fn device<'a, B: Backend + BusTranslate>(&self, device: &'a Device<B>) -> SimDevice<'a, B> {
        SimDevice::new(device, self.memory.clone())
    }
}
