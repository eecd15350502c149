//! The shapes a HAL needs: a handle whose direction is known only at run
//! time ([`AnyMapped`], as `virtio-drivers`' `BufferDirection`), and a table
//! that finds a live handle by its DMA address ([`ByDmaAddr`], for hooks
//! that get only the address back, as `Hal::unshare`).

use core::fmt;

use crate::api::device::Device;
use crate::api::handle::Mapped;
use crate::backend::Backend;
use crate::base::addr::DmaAddr;
use crate::base::buffer::{CacheSafe, DmaBuffer, Transfer};
use crate::base::direction::{
    Bidirectional, CpuOwned, CpuState, DevOwned, Direction, DmaDirection, FromDevice, Ownership,
    ToDevice,
};
use crate::base::error::MapError;

/// A mapping whose direction is a run-time value: one of the three typed
/// handles. Convert back with [`into_direction`](Self::into_direction)
/// (checked), or use the methods that exist in every direction.
#[must_use = "a mapped buffer: dropped while the device owns it, it is quarantined for good"]
pub enum AnyMapped<'d, S: Ownership, Buf: DmaBuffer, B: Backend> {
    /// Mapped [`ToDevice`].
    ToDevice(Mapped<'d, ToDevice, S, Buf, B>),
    /// Mapped [`FromDevice`].
    FromDevice(Mapped<'d, FromDevice, S, Buf, B>),
    /// Mapped [`Bidirectional`].
    Bidirectional(Mapped<'d, Bidirectional, S, Buf, B>),
}

/// Applies `$e` to the handle inside whatever variant `$any` is.
macro_rules! each {
    ($any:expr, $h:ident => $e:expr) => {
        match $any {
            AnyMapped::ToDevice($h) => $e,
            AnyMapped::FromDevice($h) => $e,
            AnyMapped::Bidirectional($h) => $e,
        }
    };
}

/// Same, rewrapping the result in the same variant.
macro_rules! each_wrap {
    ($any:expr, $h:ident => $e:expr) => {
        match $any {
            AnyMapped::ToDevice($h) => AnyMapped::ToDevice($e),
            AnyMapped::FromDevice($h) => AnyMapped::FromDevice($e),
            AnyMapped::Bidirectional($h) => AnyMapped::Bidirectional($e),
        }
    };
}

/// Directions an [`AnyMapped`] converts back to. Implemented for the three
/// directions (sealed through [`Direction`]).
pub trait FromAny: Direction + Sized {
    /// The handle if it was mapped in `Self`'s direction.
    #[allow(clippy::type_complexity)]
    fn from_any<'d, S: Ownership, Buf: DmaBuffer, B: Backend>(
        any: AnyMapped<'d, S, Buf, B>,
    ) -> Result<Mapped<'d, Self, S, Buf, B>, AnyMapped<'d, S, Buf, B>>;
}

macro_rules! from_any {
    ($($d:ident),*) => {$(
        impl FromAny for $d {
            fn from_any<'d, S: Ownership, Buf: DmaBuffer, B: Backend>(
                any: AnyMapped<'d, S, Buf, B>,
            ) -> Result<Mapped<'d, Self, S, Buf, B>, AnyMapped<'d, S, Buf, B>> {
                match any {
                    AnyMapped::$d(h) => Ok(h),
                    other => Err(other),
                }
            }
        }

        impl<'d, S: Ownership, Buf: DmaBuffer, B: Backend> From<Mapped<'d, $d, S, Buf, B>>
            for AnyMapped<'d, S, Buf, B>
        {
            fn from(h: Mapped<'d, $d, S, Buf, B>) -> Self {
                AnyMapped::$d(h)
            }
        }
    )*};
}

from_any!(ToDevice, FromDevice, Bidirectional);

impl<B: Backend> Device<B> {
    /// Maps `buf` in a direction chosen at run time. The contents must be
    /// able to travel in every direction.
    pub fn map_any<Buf: DmaBuffer>(
        &self,
        buf: Buf,
        dir: DmaDirection,
    ) -> Result<AnyMapped<'_, DevOwned, Buf, B>, MapError<Buf>>
    where
        Buf::Target: Transfer<ToDevice>
            + Transfer<FromDevice>
            + Transfer<Bidirectional>
            + CacheSafe<B::Granule>,
    {
        Ok(match dir {
            DmaDirection::ToDevice => AnyMapped::ToDevice(self.map(buf)?),
            DmaDirection::FromDevice => AnyMapped::FromDevice(self.map(buf)?),
            DmaDirection::Bidirectional => AnyMapped::Bidirectional(self.map(buf)?),
        })
    }
}

impl<'d, S: Ownership, Buf: DmaBuffer, B: Backend> AnyMapped<'d, S, Buf, B> {
    /// The direction it was mapped with.
    pub fn direction(&self) -> DmaDirection {
        each!(self, h => h.direction())
    }

    /// The mapping's length in bytes.
    pub fn byte_len(&self) -> usize {
        each!(self, h => h.byte_len())
    }

    /// The typed handle, if it was mapped in direction `D`; otherwise
    /// `self`, unchanged.
    #[allow(clippy::type_complexity)]
    pub fn into_direction<D: FromAny>(self) -> Result<Mapped<'d, D, S, Buf, B>, Self> {
        D::from_any(self)
    }
}

impl<'d, Buf: DmaBuffer, B: Backend> AnyMapped<'d, DevOwned, Buf, B> {
    /// The address the device must use.
    pub fn dma_addr(&self) -> DmaAddr {
        each!(self, h => h.dma_addr())
    }

    /// As [`Mapped::sync_for_cpu`].
    ///
    /// # Safety
    ///
    /// As for [`Mapped::sync_for_cpu`].
    pub unsafe fn sync_for_cpu(self) -> AnyMapped<'d, CpuOwned, Buf, B> {
        // SAFETY: forwarded from the caller.
        each_wrap!(self, h => unsafe { h.sync_for_cpu() })
    }

    /// As [`Mapped::unmap`] of a device-owned handle.
    ///
    /// # Safety
    ///
    /// As for [`Mapped::unmap`].
    pub unsafe fn unmap(self) -> Buf {
        // SAFETY: forwarded from the caller.
        each!(self, h => unsafe { h.unmap() })
    }
}

impl<'d, S: CpuState, Buf: DmaBuffer, B: Backend> AnyMapped<'d, S, Buf, B> {
    /// As [`Mapped::sync_for_device`].
    pub fn sync_for_device(self) -> AnyMapped<'d, DevOwned, Buf, B> {
        each_wrap!(self, h => h.sync_for_device())
    }

    /// As [`Mapped::unmap`] of a CPU-owned handle.
    pub fn unmap(self) -> Buf {
        each!(self, h => h.unmap())
    }
}

impl<Buf: DmaBuffer, B: Backend> AnyMapped<'_, CpuOwned, Buf, B> {
    /// The contents, for reading.
    pub fn contents(&self) -> &Buf::Target {
        each!(self, h => h.contents())
    }

    /// The contents, for writing, if the direction lets the CPU write
    /// ([`ToDevice`], [`Bidirectional`]); `None` for [`FromDevice`].
    pub fn contents_mut(&mut self) -> Option<&mut Buf::Target> {
        match self {
            AnyMapped::ToDevice(h) => Some(h.contents_mut()),
            AnyMapped::FromDevice(_) => None,
            AnyMapped::Bidirectional(h) => Some(h.contents_mut()),
        }
    }
}

impl<S: Ownership, Buf: DmaBuffer, B: Backend> fmt::Debug for AnyMapped<'_, S, Buf, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        each!(self, h => fmt::Debug::fmt(h, f))
    }
}

/// Something a device was given by address: a device-owned handle, a
/// shared coherent allocation.
pub trait HasDmaAddr {
    /// Its DMA address.
    fn dma_addr(&self) -> DmaAddr;
}

impl<D: Direction, Buf: DmaBuffer, B: Backend> HasDmaAddr for Mapped<'_, D, DevOwned, Buf, B> {
    fn dma_addr(&self) -> DmaAddr {
        Mapped::<'_, D, DevOwned, Buf, B>::dma_addr(self)
    }
}

impl<Buf: DmaBuffer, B: Backend> HasDmaAddr for AnyMapped<'_, DevOwned, Buf, B> {
    fn dma_addr(&self) -> DmaAddr {
        AnyMapped::dma_addr(self)
    }
}

impl<T: ?Sized + crate::base::buffer::DmaTarget, B: Backend> HasDmaAddr
    for crate::api::coherent::Coherent<'_, T, B>
where
    B::Platform: crate::base::platform::DmaAllocator,
{
    fn dma_addr(&self) -> DmaAddr {
        crate::api::coherent::Coherent::dma_addr(self)
    }
}

/// Live handles by DMA address: for hooks that get only the address back
/// (`virtio-drivers`' `Hal::unshare(paddr, ..)`, `dma_dealloc(paddr, ..)`),
/// so the handle is found without any reverse translation and unmapped
/// with everything it carries. Each address is held once.
#[cfg(feature = "alloc")]
pub struct ByDmaAddr<H: HasDmaAddr> {
    live: alloc::collections::BTreeMap<u64, H>,
}

#[cfg(feature = "alloc")]
impl<H: HasDmaAddr> Default for ByDmaAddr<H> {
    fn default() -> Self {
        Self {
            live: alloc::collections::BTreeMap::new(),
        }
    }
}

#[cfg(feature = "alloc")]
impl<H: HasDmaAddr> ByDmaAddr<H> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps `handle` and returns its DMA address. If the table already
    /// holds a handle at that address (impossible for live mappings of one
    /// device), `handle` comes back in the error.
    pub fn insert(&mut self, handle: H) -> Result<DmaAddr, H> {
        let dma = handle.dma_addr();
        match self.live.entry(dma.as_u64()) {
            alloc::collections::btree_map::Entry::Occupied(_) => Err(handle),
            alloc::collections::btree_map::Entry::Vacant(v) => {
                v.insert(handle);
                Ok(dma)
            }
        }
    }

    /// The handle given `dma`, taken out of the table.
    pub fn take(&mut self, dma: DmaAddr) -> Option<H> {
        self.live.remove(&dma.as_u64())
    }

    /// How many handles the table holds.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }
}

#[cfg(feature = "alloc")]
impl<H: HasDmaAddr> fmt::Debug for ByDmaAddr<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ByDmaAddr {{ live: {} }}", self.live.len())
    }
}
