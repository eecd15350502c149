//! # dmacap: DMA capabilities in types
//!
//! Driver code written against dmacap cannot touch a buffer the device
//! owns, sync in the wrong direction, forget a map error, unmap twice, or
//! tear a device down under a live mapping: the compiler rejects it.
//!
//! ```
//! use dmacap::{Mapped, FromDevice, ToDevice, CpuOwned, DevOwned};
//! use dmacap::sim::SimPlatform;
//!
//! let sim = SimPlatform::new(1 << 20);          // simulated RAM
//! let dev = sim.coherent_device();              // a device on it
//! let nic = sim.device(&dev);                   // the device's DMA engine
//!
//! let mut tx = sim.memory().alloc_slice::<u8>(4).unwrap();
//! tx.copy_from_slice(b"ping");
//! let tx = dev.map_to_device(tx).unwrap();      // Mapped<ToDevice, DevOwned>
//! let rx = dev.map_from_device(sim.memory().alloc_slice::<u8>(4).unwrap()).unwrap();
//!
//! nic.copy(tx.dma_addr(), rx.dma_addr(), 4).unwrap();   // the device works
//!
//! // SAFETY: the simulated device finished: `copy` returned.
//! let rx = unsafe { rx.sync_for_cpu() };        // Mapped<FromDevice, CpuOwned>
//! assert_eq!(rx.contents(), b"ping");
//! // SAFETY: as above.
//! let _tx_buf = unsafe { tx.unmap() };
//! let _rx_buf = rx.unmap();                    // safe: the CPU owns it
//! ```
//!
//! The layers, top to bottom:
//!
//! - [`Mapped`]: the typestate handle. Direction ([`ToDevice`],
//!   [`FromDevice`], [`Bidirectional`]) and ownership ([`CpuOwned`],
//!   [`DevOwned`], [`CpuOwnedPrefix`]) are type parameters.
//! - [`Device`]: one device's DMA context, borrowed by its handles.
//! - [`DmaBuffer`]: owned memory with a stable address.
//! - [`backend::Backend`]: the architecture layer (Linux's `dma_map_ops`);
//!   [`backend::direct`] is the direct-mapped, coherent one.
//! - [`platform::PhysLookup`]: the platform hook from CPU to physical address.
//! - `sim` (feature `sim`): a simulated platform that moves real bytes.
//!
//! See `design.md` in the repository for the reasoning behind each unsafe
//! contract.

#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

// The layers, top to bottom; the folders are the same. No module imports
// from a layer above its own (`tests/layers.rs` checks it).
pub mod api;
pub mod arch;
pub mod backend;
pub mod base;
#[cfg(feature = "sim")]
pub mod sim;
mod sync;
/// The loom models' test hooks (mutation switches, CPU pinning): only in
/// the loom shadow build, never in dmacap itself.
#[cfg(dmacap_loom)]
#[doc(hidden)]
pub use sync::loom_hooks as __loom;

// The typed API's and the base layer's modules under their short paths.
#[cfg(feature = "virtio")]
pub use api::virtio;
pub use api::{batch, coherent, device, erased, handle, mmio, pages, width};
#[cfg(feature = "alloc")]
pub use api::{noncontig, sg};
pub use base::{addr, buffer, context, direction, error, platform};

/// The README's tour, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
mod readme {}

/// The type-level numbers dmacap's granules and address widths are written
/// in, re-exported so that `LineAligned<typenum::U64>` needs no dependency
/// of your own.
pub use typenum;

pub use addr::{DmaAddr, DmaMask, PhysAddr};
pub use buffer::{DmaBuffer, RawBuffer, Transfer};
pub use coherent::{Coherent, CoherentBox};
pub use context::{DeviceConfig, DeviceStats};
pub use device::Device;
pub use direction::{
    Bidirectional, CpuOwned, CpuOwnedPrefix, CpuState, CpuWritable, DevOwned, DeviceWritable,
    Direction, DmaDirection, FromDevice, Ownership, ToDevice,
};
pub use error::{AllocError, ForeignDeviceError, MapError, MapErrorKind, RangeError};
pub use handle::Mapped;
pub use mmio::MmioMapped;
