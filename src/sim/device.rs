//! A simulated DMA engine: it reads and writes memory at DMA addresses,
//! through the bus translation of the backend the device is attached to.

use std::vec;

use crate::api::device::Device;
use crate::backend::Backend;
use crate::backend::compose::Composed;
use crate::backend::direct::{BusWindows, Direct, DmaWindows};
use crate::base::addr::{DmaAddr, PhysAddr};
use crate::sim::memory::{PhysAccessError, SimMemory};

pub use crate::backend::iommu::fault::Access;

/// Why a simulated device access failed. Nothing was read or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SimFault {
    /// The device cannot generate this address: it lies beyond its mask.
    #[error("{access:?} at DMA address {dma} is beyond the device's mask")]
    BeyondMask {
        /// The faulting address.
        dma: DmaAddr,
        /// The access.
        access: Access,
    },
    /// No bus window or I/O page translates this address (an IOMMU fault).
    #[error("{access:?} at DMA address {dma} is not translated")]
    Untranslated {
        /// The faulting address.
        dma: DmaAddr,
        /// The access.
        access: Access,
    },
    /// The translation exists but does not permit this access.
    #[error("{access:?} at DMA address {dma} is not permitted")]
    Denied {
        /// The faulting address.
        dma: DmaAddr,
        /// The access.
        access: Access,
    },
    /// The address is RAM, but no mapping hands it to a device now: the
    /// driver gave the device an address it does not own.
    #[error("{access:?} at DMA address {dma} reaches {phys}, which no device owns")]
    NotDeviceOwned {
        /// The faulting address.
        dma: DmaAddr,
        /// The first physical byte not owned.
        phys: PhysAddr,
        /// The access.
        access: Access,
    },
    /// The translated physical address is not RAM.
    #[error("{access:?} at DMA address {dma} reaches {phys}, which is not RAM")]
    NotRam {
        /// The faulting address.
        dma: DmaAddr,
        /// Where it led.
        phys: PhysAddr,
        /// The access.
        access: Access,
    },
}

/// The hardware side of a backend: how the bus (or IOMMU) routes one device
/// access. This is the model of the interconnect, not a software reverse
/// translation: dmacap's mapping code never calls it.
pub trait BusTranslate {
    /// The physical address behind `dma`, and how many bytes from there are
    /// contiguous in the same translation, for an access of kind `access`.
    fn translate(&self, dma: DmaAddr, access: Access) -> Result<(PhysAddr, u64), SimFault>;
}

impl BusTranslate for DmaWindows {
    fn translate(&self, dma: DmaAddr, access: Access) -> Result<(PhysAddr, u64), SimFault> {
        self.bus_to_phys(dma)
            .ok_or(SimFault::Untranslated { dma, access })
    }
}

impl<W: BusWindows> BusTranslate for Direct<W> {
    fn translate(&self, dma: DmaAddr, access: Access) -> Result<(PhysAddr, u64), SimFault> {
        self.bus()
            .bus_to_phys(dma)
            .ok_or(SimFault::Untranslated { dma, access })
    }
}

impl<P, T: BusTranslate, K, Bo> BusTranslate for Composed<P, T, K, Bo> {
    fn translate(&self, dma: DmaAddr, access: Access) -> Result<(PhysAddr, u64), SimFault> {
        self.translation().translate(dma, access)
    }
}

/// A device's DMA engine on the simulated platform.
///
/// It moves real bytes: every access is translated by the backend's bus
/// model and lands in (or comes from) the simulated RAM, so a test passes
/// only if the bytes arrive.
///
/// # Example
///
/// ```
/// use dmacap::sim::SimPlatform;
///
/// let sim = SimPlatform::new(1 << 16);
/// let dev = sim.coherent_device();
/// let engine = sim.device(&dev);
/// let rx = dev.map_from_device(sim.memory().alloc_slice::<u8>(3).unwrap()).unwrap();
/// engine.write(rx.dma_addr(), b"abc").unwrap();
/// // SAFETY: the simulated write has completed.
/// let rx = unsafe { rx.sync_for_cpu() };
/// assert_eq!(rx.contents(), b"abc");
/// ```
pub struct SimDevice<'a, B: Backend> {
    device: &'a Device<B>,
    memory: SimMemory,
}

impl<B: Backend> core::fmt::Debug for SimDevice<'_, B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SimDevice")
            .field("config", self.device.config())
            .field("memory", &self.memory)
            .finish()
    }
}

impl<'a, B: Backend + BusTranslate> SimDevice<'a, B> {
    /// The DMA engine of `device`, attached to `memory`.
    pub fn new(device: &'a Device<B>, memory: SimMemory) -> Self {
        Self { device, memory }
    }

    /// Splits `[dma, dma + len)` into physically contiguous pieces, checking
    /// every one before any byte moves.
    fn route(
        &self,
        dma: DmaAddr,
        len: usize,
        access: Access,
    ) -> Result<vec::Vec<(PhysAddr, usize)>, SimFault> {
        let mask = self.device.config().mask();
        if len > 0 && !mask.covers(dma, len as u64) {
            return Err(SimFault::BeyondMask { dma, access });
        }
        let mut pieces = vec::Vec::new();
        let mut done = 0usize;
        while done < len {
            let at = DmaAddr::new(dma.as_u64() + done as u64);
            let (phys, run) = self.device.backend().translate(at, access)?;
            let n = (len - done).min(usize::try_from(run).unwrap_or(usize::MAX));
            // Refuse a piece that is not entirely RAM before touching any.
            if !self.memory.contains(phys, n) {
                return Err(SimFault::NotRam {
                    dma: at,
                    phys,
                    access,
                });
            }
            pieces.push((phys, n));
            done += n;
        }
        Ok(pieces)
    }

    /// Reads `out.len()` bytes at `dma` into `out`.
    pub fn read(&self, dma: DmaAddr, out: &mut [u8]) -> Result<(), SimFault> {
        let pieces = self.route(dma, out.len(), Access::Read)?;
        self.check_owned(&pieces, dma, Access::Read)?;
        let mut at = 0;
        for (phys, n) in pieces {
            self.memory
                .read_phys(self.device.id(), phys, &mut out[at..at + n])
                .map_err(|e| self.fault(e, dma, Access::Read))?;
            at += n;
        }
        Ok(())
    }

    /// Writes `data` at `dma`.
    pub fn write(&self, dma: DmaAddr, data: &[u8]) -> Result<(), SimFault> {
        let pieces = self.route(dma, data.len(), Access::Write)?;
        self.check_owned(&pieces, dma, Access::Write)?;
        let mut at = 0;
        for (phys, n) in pieces {
            self.memory
                .write_phys(self.device.id(), phys, &data[at..at + n])
                .map_err(|e| self.fault(e, dma, Access::Write))?;
            at += n;
        }
        Ok(())
    }

    /// Reads `out.len()` bytes at `dma` as a rogue device would: through
    /// the translation (so an IOMMU still faults on what it does not map),
    /// but whether or not any handle handed the memory to the device. This
    /// shows what a device *could* read beyond its buffers, such as the
    /// rest of an IOMMU page shared with other data.
    ///
    /// # Safety
    ///
    /// As for [`SimMemory::read_phys_unchecked`]: no `&mut` to the bytes
    /// read is live and nobody writes them during the call.
    pub unsafe fn read_unchecked(&self, dma: DmaAddr, out: &mut [u8]) -> Result<(), SimFault> {
        let pieces = self.route(dma, out.len(), Access::Read)?;
        let mut at = 0;
        for (phys, n) in pieces {
            // SAFETY: forwarded from the caller.
            unsafe { self.memory.read_phys_unchecked(phys, &mut out[at..at + n]) }
                .map_err(|e| self.fault(e, dma, Access::Read))?;
            at += n;
        }
        Ok(())
    }

    /// Refuses the whole access if any piece is not device-owned, before a
    /// byte moves.
    fn check_owned(
        &self,
        pieces: &[(PhysAddr, usize)],
        dma: DmaAddr,
        access: Access,
    ) -> Result<(), SimFault> {
        pieces.iter().try_for_each(|&(phys, n)| {
            self.memory
                .check_device_owned(self.device.id(), phys, n)
                .map_err(|e| self.fault(e, dma, access))
        })
    }

    fn fault(&self, e: PhysAccessError, dma: DmaAddr, access: Access) -> SimFault {
        match e {
            PhysAccessError::NotDeviceOwned { phys } => {
                SimFault::NotDeviceOwned { dma, phys, access }
            }
            PhysAccessError::OutsideRam { phys, .. } => SimFault::NotRam { dma, phys, access },
        }
    }

    /// Copies `len` bytes from `src` to `dst`, as a copy engine does. Both
    /// ranges are checked before any byte moves.
    pub fn copy(&self, src: DmaAddr, dst: DmaAddr, len: usize) -> Result<(), SimFault> {
        self.route(dst, len, Access::Write)?;
        let mut data = vec![0u8; len];
        self.read(src, &mut data)?;
        self.write(dst, &data)
    }

    /// Fills `len` bytes at `dma` with `byte`.
    pub fn fill(&self, dma: DmaAddr, byte: u8, len: usize) -> Result<(), SimFault> {
        self.write(dma, &vec![byte; len])
    }
}
