//! Errors. Every error says what failed and why, and every error of an
//! operation that took a buffer or a handle gives it back (rule 5).

use core::fmt;

use crate::base::addr::{DmaAddr, DmaMask, PhysAddr};

/// Why a mapping could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MapErrorKind {
    /// The buffer has no bytes; a device cannot be given an empty range.
    #[error("the buffer is empty: a zero-length range cannot be mapped")]
    ZeroLength,
    /// The platform could not name one contiguous physical range for the
    /// buffer.
    #[error("the platform has no contiguous physical address for {len} bytes at {cpu:#x}")]
    NoPhysAddr {
        /// The buffer's CPU address.
        cpu: usize,
        /// Its length in bytes.
        len: usize,
    },
    /// The range would run past the end of the address space.
    #[error("{len} bytes at {phys} run past the end of the address space")]
    AddressOverflow {
        /// Start of the range.
        phys: PhysAddr,
        /// Its length in bytes.
        len: usize,
    },
    /// No DMA window of the bus covers the whole buffer (Linux's
    /// `bus_dma_region` table has no entry for it).
    #[error("no DMA window covers {len} bytes at {phys}")]
    NoDmaWindow {
        /// Start of the buffer.
        phys: PhysAddr,
        /// Its length in bytes.
        len: usize,
    },
    /// The device cannot generate the DMA addresses the buffer would need,
    /// and this backend does not bounce.
    #[error("{len} bytes at DMA address {dma} lie beyond the device's mask {mask:?}")]
    BeyondMask {
        /// The DMA address the buffer would have.
        dma: DmaAddr,
        /// Its length in bytes.
        len: usize,
        /// The device's mask.
        mask: DmaMask,
    },
    /// A byte buffer would share a cache line with other data on a
    /// non-coherent backend: its address or its length is not a multiple of
    /// the backend's granule. (Bouncing it is the alternative, part 3.)
    #[error("{len} bytes at {phys} share a cache line with other data (granule {granule} bytes)")]
    SharesCacheLine {
        /// Start of the buffer (physical, like every other address in
        /// these errors).
        phys: PhysAddr,
        /// Its length in bytes.
        len: usize,
        /// The backend's granule.
        granule: usize,
    },
    /// An untrusted device would see the rest of the IOMMU pages holding
    /// the buffer, and this backend does not bounce.
    #[error(
        "{len} bytes at {phys} do not fill whole {page}-byte IOMMU pages, and the device is untrusted"
    )]
    UntrustedSubPage {
        /// Start of the buffer.
        phys: PhysAddr,
        /// Its length.
        len: usize,
        /// The IOMMU page size.
        page: usize,
    },
    /// An MMIO range the device cannot reach directly: MMIO is never
    /// bounced.
    #[error(
        "MMIO range of {len} bytes at {phys} is not reachable by the device and cannot be bounced"
    )]
    MmioNeedsBounce {
        /// Start of the range.
        phys: PhysAddr,
        /// Its length.
        len: usize,
    },
    /// The bounce pool has no run of free slots for the mapping.
    #[error("bounce pool exhausted: no free run of {slots} slots")]
    BouncePoolExhausted {
        /// Slots needed.
        slots: usize,
    },
    /// A mapping needs more contiguous bounce slots than one mapping may
    /// have.
    #[error("{len} bytes exceed the largest bounce mapping of {max} bytes")]
    BounceTooLarge {
        /// Bytes asked for.
        len: usize,
        /// The largest bounce mapping.
        max: usize,
    },
    /// The IOMMU domain has no free I/O virtual address range of this size
    /// under the device's mask.
    #[error("IOVA space exhausted: no free range of {len} bytes")]
    IovaExhausted {
        /// Bytes asked for.
        len: usize,
    },
    /// The IOMMU domain defers IOTLB invalidation (lazy mode), which
    /// leaves a window in which the device can still reach unmapped
    /// memory; that is refused for an untrusted device.
    #[error("lazy IOMMU invalidation is refused for untrusted devices")]
    LazyIommuUntrusted,
    /// A backend-specific reason, for backends written outside dmacap.
    #[error("the backend refused the mapping: {0}")]
    Backend(&'static str),
    /// The mapping was asked never to bounce (Linux's
    /// `DMA_ATTR_REQUIRE_COHERENT`), and this buffer would have to.
    #[error("{len} bytes at {phys} would have to be bounced ({reason}), which was refused")]
    WouldBounce {
        /// Where the buffer lies.
        phys: crate::base::addr::PhysAddr,
        /// Its length.
        len: usize,
        /// Why it would bounce.
        reason: &'static str,
    },
}

/// A failed map: why, and the buffer, handed back unchanged.
///
/// # Example
///
/// ```
/// use dmacap::{FromDevice, MapErrorKind};
/// use dmacap::sim::SimPlatform;
///
/// let sim = SimPlatform::new(1 << 20);
/// let dev = sim.coherent_device();
/// let empty = sim.memory().alloc_slice::<u8>(0).unwrap();
/// let err = dev.map::<FromDevice, _>(empty).unwrap_err();
/// assert_eq!(err.kind(), MapErrorKind::ZeroLength);
/// let _buffer_back = err.into_buffer();
/// ```
#[derive(thiserror::Error)]
#[error("DMA map failed: {kind}")]
pub struct MapError<Buf> {
    kind: MapErrorKind,
    buffer: Buf,
}

impl<Buf> MapError<Buf> {
    pub(crate) fn new(buffer: Buf, kind: MapErrorKind) -> Self {
        Self { kind, buffer }
    }

    /// Why the map failed.
    pub fn kind(&self) -> MapErrorKind {
        self.kind
    }

    /// The buffer that was to be mapped, unchanged.
    pub fn into_buffer(self) -> Buf {
        self.buffer
    }

    /// Both parts.
    pub fn into_parts(self) -> (MapErrorKind, Buf) {
        (self.kind, self.buffer)
    }
}

impl<Buf> fmt::Debug for MapError<Buf> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapError")
            .field("kind", &self.kind)
            .field("buffer", &core::any::type_name::<Buf>())
            .finish()
    }
}

/// A requested range does not fit the mapping. The handle is handed back,
/// in the state it was in.
#[derive(thiserror::Error)]
#[error("range of {requested} elements does not fit a mapping of {available}")]
pub struct RangeError<H> {
    /// How many elements were asked for.
    pub requested: usize,
    /// How many the mapping has.
    pub available: usize,
    handle: H,
}

impl<H> RangeError<H> {
    pub(crate) fn new(handle: H, requested: usize, available: usize) -> Self {
        Self {
            requested,
            available,
            handle,
        }
    }

    /// The handle, unchanged.
    pub fn into_handle(self) -> H {
        self.handle
    }
}

impl<H> fmt::Debug for RangeError<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RangeError")
            .field("requested", &self.requested)
            .field("available", &self.available)
            .finish_non_exhaustive()
    }
}

/// Handles of one device offered to a list or batch of another: refused,
/// because that list's completions (barriers, IOTLB invalidations) run on
/// its own device only. What was offered is handed back, unchanged.
#[derive(thiserror::Error)]
#[error("a handle of device {offered:?} cannot join a list of device {list:?}")]
pub struct ForeignDeviceError<H> {
    /// The device the list belongs to.
    pub list: crate::base::platform::DeviceId,
    /// The device the refused handles belong to.
    pub offered: crate::base::platform::DeviceId,
    handle: H,
}

impl<H> ForeignDeviceError<H> {
    #[cfg_attr(not(feature = "alloc"), allow(dead_code))]
    pub(crate) fn new(
        handle: H,
        list: crate::base::platform::DeviceId,
        offered: crate::base::platform::DeviceId,
    ) -> Self {
        Self {
            list,
            offered,
            handle,
        }
    }

    /// What was offered, unchanged.
    pub fn into_inner(self) -> H {
        self.handle
    }
}

impl<H> fmt::Debug for ForeignDeviceError<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForeignDeviceError")
            .field("list", &self.list)
            .field("offered", &self.offered)
            .finish_non_exhaustive()
    }
}

/// Why a DMA allocation failed. Nothing is held: every pool, IOVA range and
/// page is as it was before the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AllocError {
    /// Zero bytes were asked for.
    #[error("a DMA allocation of zero bytes")]
    ZeroSize,
    /// The size overflows once rounded up to whole granules.
    #[error("a DMA allocation of {elems} elements of {elem_size} bytes overflows")]
    TooLarge {
        /// Elements asked for.
        elems: usize,
        /// Bytes per element.
        elem_size: usize,
    },
    /// The platform has no memory of this size and alignment that the
    /// device can reach.
    #[error("no DMA memory of {size} bytes aligned to {align} at or below physical {max_phys:#x}")]
    OutOfMemory {
        /// Bytes asked for (rounded to whole granules).
        size: usize,
        /// Alignment asked for.
        align: usize,
        /// The highest physical address the device reaches.
        max_phys: u64,
    },
    /// The platform allocated memory it cannot translate.
    #[error("the platform cannot give the physical address of its own allocation")]
    NoPhysAddr,
    /// The backend refused to map the allocation (it is never bounced).
    #[error("the allocation cannot be mapped for the device: {0}")]
    Map(MapErrorKind),
    /// The zone's address width exceeds what the device can address.
    #[error("a zone below 2^{zone_bits} does not fit a device that addresses {mask_bits} bits")]
    ZoneTooWide {
        /// The zone's width in bits.
        zone_bits: u32,
        /// The device's mask width in bits.
        mask_bits: u32,
    },
}
