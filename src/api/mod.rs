//! The typed API, the top layer: what driver code holds and calls.
//!
//! - [`handle`]: [`Mapped`](handle::Mapped), the typestate handle of one
//!   mapping.
//! - [`device`]: [`Device`](device::Device), which every handle borrows.
//! - [`batch`]: many hand-overs, one completion.
//! - [`sg`]: scatter-gather lists.
//! - [`mmio`]: MMIO and peer-to-peer mappings.
//! - [`coherent`]: coherent allocations, CPU-only then shared.
//! - [`noncontig`]: pages linked into one IOVA range behind an IOMMU.
//! - [`erased`]: a handle whose direction is a run-time value, and live
//!   handles by DMA address, for HALs.
//! - [`width`]: address-width proofs, for maps that cannot fail.
//! - [`pages`]: page allocations in the ordinary typestate, and maps that
//!   must never bounce.
//! - `virtio` (feature `virtio`): a `virtio_drivers::Hal` over a device.
//!
//! It builds on the backend layer ([`crate::backend`]) and the base layer
//! ([`crate::base`]); nothing beneath imports it.

pub mod batch;
pub mod coherent;
pub mod device;
pub mod erased;
pub mod handle;
pub mod mmio;
#[cfg(feature = "alloc")]
pub mod noncontig;
pub mod pages;
#[cfg(feature = "alloc")]
pub mod sg;
#[cfg(feature = "virtio")]
pub mod virtio;
pub mod width;
