//! Direct mapping for a device that does not snoop the CPU's caches: every
//! hand-over is paired with cache maintenance, issued per buffer and
//! completed once per flush.
//!
//! The maintenance follows Linux's arm64 rules for every architecture:
//!
//! | hand-over | `ToDevice` | `FromDevice` | `Bidirectional` |
//! |---|---|---|---|
//! | map, `sync_for_device` | clean | clean | clean |
//! | `sync_for_cpu`, unmap of a device-owned handle | nothing | invalidate | invalidate |
//!
//! where invalidate cleans and invalidates the partial first and last lines
//! (see [`crate::arch`]). Which instructions do it is the [`CacheMaintenance`]
//! parameter: `arch::x86_64::X86CacheOps`, `arch::aarch64::Aarch64CacheOps`
//! (each compiled on its own architecture), or the simulated write-back
//! cache of the `sim` module.

use crate::arch::CacheMaintenance;
use crate::backend::compose::{Composed, NoBounce, NonCoherent};
use crate::backend::direct::{Direct, DmaWindows};
use crate::base::platform::PhysLookup;

/// The direct, non-coherent backend: [`Direct`] translation, coherence by
/// cache maintenance `C` ([`NonCoherent<C>`]), [`NoBounce`].
///
/// Handles carry the physical address (maintenance by physical address
/// needs it, and it is never looked up again) and no other state. Unmap
/// itself does nothing: the CPU-side invalidate it needs is the
/// `sync_for_cpu` the handle issues first.
pub type DirectNonCoherent<P, C> = Composed<P, Direct, NonCoherent<C>, NoBounce>;

impl<P: PhysLookup, C: CacheMaintenance> Composed<P, Direct, NonCoherent<C>, NoBounce> {
    /// DMA addresses equal to physical addresses; coherence by `cache`.
    pub fn new(platform: P, cache: C) -> Self {
        Self::with_windows(platform, DmaWindows::identity(), cache)
    }

    /// DMA addresses through `windows`; coherence by `cache`.
    pub fn with_windows(platform: P, windows: DmaWindows, cache: C) -> Self {
        Composed::from_parts(platform, Direct::new(windows), NonCoherent(cache), NoBounce)
    }
}
