//! The operations benchmarked for issue 10, shared by the criterion benches
//! (`benches/*.rs`) and the instruction-count binary (`src/bin/cyclecount.rs`)
//! so that both measure the very same code.
//!
//! Every platform here is the identity map of this user-space process and no
//! device ever exists: the DMA addresses are handed to `black_box`, never to
//! hardware. That is what makes the `unsafe` hand-backs sound (the device
//! "has finished" because there is none), and what the `IdentityMap`,
//! `Swiotlb` and `IommuHardware` contracts are discharged with below.

use std::hint::black_box;
use std::ptr::NonNull;

use dmacap::backend::Backend;
use dmacap::backend::direct::{DirectCoherent, IdentityCoherent};
use dmacap::buffer::CacheSafe;
use dmacap::platform::IdentityMap;
use dmacap::{Device, DeviceConfig, DmaMask};

pub mod bounce;
pub mod iommu;
pub mod iova;
pub mod pairs;
pub mod peer;
pub mod sizes;
#[cfg(target_arch = "x86_64")]
pub mod x86;

/// The identity platform.
pub fn identity() -> IdentityMap {
    // SAFETY: the benchmarks never give a DMA address to a device (there is
    // none: every address goes to `black_box`), so "virtual equals physical"
    // is never relied on by hardware; the buffers mapped are heap memory that
    // does not move while mapped.
    unsafe { IdentityMap::new() }
}

/// The direct-coherent device of target 1: identity translation, 64-bit mask.
pub type CoherentDev = Device<DirectCoherent<IdentityMap>>;

/// A direct-coherent device with a 64-bit mask.
pub fn coherent_device() -> CoherentDev {
    Device::new(
        DirectCoherent::new(identity()),
        DeviceConfig::new().dma_mask(DmaMask::bits(64)),
    )
}

/// The same device on a bus known at compile time to be the identity
/// (`IdentityCoherent`): no window table to search.
pub type IdentityBusDev = Device<IdentityCoherent<IdentityMap>>;

/// A direct-coherent device on the compile-time identity bus, 64-bit mask.
pub fn identity_bus_device() -> IdentityBusDev {
    Device::new(
        IdentityCoherent::identity_bus(identity()),
        DeviceConfig::new().dma_mask(DmaMask::bits(64)),
    )
}

/// One typed cycle: map (bidirectional) → give the DMA address away →
/// `sync_for_cpu` → read a byte → `sync_for_device` → `unmap`. Returns the
/// buffer.
#[inline(always)]
pub fn typed_cycle<B: Backend>(dev: &Device<B>, buf: Box<[u8]>) -> Box<[u8]>
where
    [u8]: CacheSafe<B::Granule>,
{
    let h = match dev.map_bidirectional(buf) {
        Ok(h) => h,
        Err(e) => refused(e.kind()),
    };
    black_box(h.dma_addr());
    // SAFETY: no device exists; nothing will ever use the address.
    let h = unsafe { h.sync_for_cpu() };
    black_box(h.contents()[0]);
    let h = h.sync_for_device();
    // SAFETY: as above.
    unsafe { h.unmap() }
}

/// The typed map → `unmap` alone, then the same read of a byte (from the
/// buffer given back): [`typed_cycle`] minus this is what the two syncs
/// cost.
#[inline(always)]
pub fn typed_map_unmap<B: Backend>(dev: &Device<B>, buf: Box<[u8]>) -> Box<[u8]>
where
    [u8]: CacheSafe<B::Granule>,
{
    let h = match dev.map_bidirectional(buf) {
        Ok(h) => h,
        Err(e) => refused(e.kind()),
    };
    black_box(h.dma_addr());
    // SAFETY: no device exists; nothing will ever use the address.
    let buf = unsafe { h.unmap() };
    black_box(buf[0]);
    buf
}

#[cold]
#[inline(never)]
fn refused(kind: dmacap::MapErrorKind) -> ! {
    panic!("map refused: {kind}")
}

/// What a hand-written driver keeps for a direct-mapped coherent device: the
/// bus offset and the DMA mask.
#[derive(Debug, Clone, Copy)]
pub struct HandDevice {
    /// Added to the physical address to make the DMA address.
    pub dma_offset: u64,
    /// The highest address the device can generate.
    pub mask: u64,
}

impl HandDevice {
    /// Identity bus, 64-bit mask: the same device as [`coherent_device`].
    pub const fn identity() -> Self {
        Self {
            dma_offset: 0,
            mask: u64::MAX,
        }
    }
}

/// The hand-written cycle of target 1: identity physical address, bus
/// offset, mask check, the DMA address to `black_box`, read a byte. A
/// coherent device needs no sync and no unmap.
#[inline(always)]
pub fn hand_cycle(dev: &HandDevice, buf: Box<[u8]>) -> Box<[u8]> {
    let len = buf.len() as u64;
    let ptr = Box::into_raw(buf);
    let phys = ptr.cast::<u8>() as usize as u64;
    let dma = phys.wrapping_add(dev.dma_offset);
    if dma.wrapping_add(len.wrapping_sub(1)) > dev.mask {
        hand_refused();
    }
    black_box(dma);
    // SAFETY: `ptr` came from `Box::into_raw` just above.
    let buf = unsafe { Box::from_raw(ptr) };
    black_box(buf[0]);
    buf
}

#[cold]
#[inline(never)]
fn hand_refused() -> ! {
    panic!("buffer beyond the device's mask")
}

/// A page-aligned heap region of `len` bytes that is never freed.
pub fn leaked_region(len: usize) -> NonNull<u8> {
    let layout = std::alloc::Layout::from_size_align(len, 4096).expect("layout");
    assert!(len > 0, "an empty region");
    // SAFETY: the layout has a non-zero size (asserted above).
    let p = unsafe { std::alloc::alloc_zeroed(layout) };
    NonNull::new(p).expect("out of memory")
}

/// A heap byte buffer of `len` bytes.
pub fn bytes(len: usize, fill: u8) -> Box<[u8]> {
    vec![fill; len].into_boxed_slice()
}
