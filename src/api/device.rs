//! One device's DMA context: its backend, its limits and its counters.
//!
//! The limits and counters themselves live in the base layer
//! ([`crate::base::context`]), because backends need them too; they are
//! re-exported here.

use crate::api::handle::Mapped;
use crate::backend::Backend;
use crate::base::buffer::{CacheSafe, DmaBuffer, Transfer};
pub use crate::base::context::{DeviceConfig, DeviceContext, DeviceStats};
use crate::base::direction::{Bidirectional, DevOwned, Direction, FromDevice, ToDevice};
use crate::base::error::MapError;
use crate::base::platform::DeviceId;

/// One device's DMA context: the backend that reaches memory for it, its
/// limits, and its counters.
///
/// Every handle borrows its device, so the device cannot be torn down (or
/// moved) while any mapping of it lives: dropping a `Device` with a live
/// handle does not compile.
///
/// # Example
///
/// ```
/// use dmacap::{Mapped, ToDevice, DevOwned, CpuOwned};
/// use dmacap::sim::SimPlatform;
///
/// let sim = SimPlatform::new(1 << 20);
/// let dev = sim.coherent_device();
/// let mut buf = sim.memory().alloc_slice::<u8>(64).unwrap();
/// buf.copy_from_slice(&[7; 64]);
/// let tx = dev.map_to_device(buf).expect("map");
/// let _bus_addr = tx.dma_addr(); // give this to the device
/// // ... the device reads the buffer and reports completion ...
/// // SAFETY: the simulated device did nothing and will do nothing more.
/// let buf = unsafe { tx.unmap() };
/// assert_eq!(buf[0], 7);
/// ```
#[derive(Debug)]
pub struct Device<B: Backend> {
    backend: B,
    ctx: DeviceContext,
}

impl<B: Backend> Device<B> {
    /// A device reached through `backend`, with the limits in `config`.
    pub fn new(backend: B, config: DeviceConfig) -> Self {
        Self {
            backend,
            ctx: DeviceContext::new(DeviceId::fresh(), config),
        }
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The platform hook of the device's backend (for the simulator: its
    /// RAM), without importing the `Backend` trait.
    pub fn platform(&self) -> &B::Platform {
        self.backend.platform()
    }

    /// The device's limits.
    pub fn config(&self) -> &DeviceConfig {
        self.ctx.config()
    }

    /// The device's counters.
    pub fn stats(&self) -> &DeviceStats {
        self.ctx.stats()
    }

    /// What backends see: limits and counters.
    pub fn context(&self) -> &DeviceContext {
        &self.ctx
    }

    /// The device's identity, unique for the life of the program.
    pub fn id(&self) -> DeviceId {
        self.ctx.id()
    }

    /// How many handles were dropped while this device owned them; their
    /// buffers are quarantined, never freed.
    pub fn leaked(&self) -> usize {
        self.ctx.stats().leaked()
    }

    /// Whether the device sees the CPU's caches (decided by the backend's
    /// type).
    pub const fn is_coherent(&self) -> bool {
        B::COHERENT
    }

    /// Maps `buf` for transfers in direction `D` and hands it to the device.
    ///
    /// On success the handle is device-owned: it gives the DMA address and
    /// nothing else until it is synced back or unmapped. On failure the
    /// buffer comes back inside the error.
    ///
    /// ```
    /// use dmacap::Bidirectional;
    /// # let sim = dmacap::sim::SimPlatform::new(1 << 16);
    /// # let dev = sim.coherent_device();
    /// let buf = sim.memory().alloc_slice::<u32>(16).unwrap();
    /// let h = dev.map::<Bidirectional, _>(buf).unwrap();
    /// # let _ = unsafe { h.unmap() };
    /// ```
    #[inline]
    pub fn map<D: Direction, Buf: DmaBuffer>(
        &self,
        buf: Buf,
    ) -> Result<Mapped<'_, D, DevOwned, Buf, B>, MapError<Buf>>
    where
        Buf::Target: Transfer<D> + CacheSafe<B::Granule>,
    {
        Mapped::map(self, buf)
    }

    /// [`map`](Self::map) for [`ToDevice`].
    #[inline]
    pub fn map_to_device<Buf: DmaBuffer>(
        &self,
        buf: Buf,
    ) -> Result<Mapped<'_, ToDevice, DevOwned, Buf, B>, MapError<Buf>>
    where
        Buf::Target: Transfer<ToDevice> + CacheSafe<B::Granule>,
    {
        Mapped::map(self, buf)
    }

    /// [`map`](Self::map) for [`FromDevice`].
    #[inline]
    pub fn map_from_device<Buf: DmaBuffer>(
        &self,
        buf: Buf,
    ) -> Result<Mapped<'_, FromDevice, DevOwned, Buf, B>, MapError<Buf>>
    where
        Buf::Target: Transfer<FromDevice> + CacheSafe<B::Granule>,
    {
        Mapped::map(self, buf)
    }

    /// [`map`](Self::map) for [`Bidirectional`].
    #[inline]
    pub fn map_bidirectional<Buf: DmaBuffer>(
        &self,
        buf: Buf,
    ) -> Result<Mapped<'_, Bidirectional, DevOwned, Buf, B>, MapError<Buf>>
    where
        Buf::Target: Transfer<Bidirectional> + CacheSafe<B::Granule>,
    {
        Mapped::map(self, buf)
    }
}
