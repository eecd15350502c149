//! Target 6: the size of a handle over a `Box<[u8]>` in each composition.

use std::mem::size_of;
use std::sync::Arc;

use dmacap::backend::Backend;
use dmacap::backend::bounce::Swiotlb;
use dmacap::backend::compose::{Coherent, Composed, NoBounce};
use dmacap::backend::direct::Direct;
use dmacap::backend::iommu::IommuDomain;
use dmacap::platform::IdentityMap;
use dmacap::{Bidirectional, DevOwned, Mapped};

use crate::iommu::NopIommu;

/// The size of a device-owned bidirectional handle over a `Box<[u8]>` on
/// backend `B`.
pub fn handle<B: Backend + 'static>() -> usize {
    size_of::<Mapped<'static, Bidirectional, DevOwned, Box<[u8]>, B>>()
}

/// The non-coherent flavour of this architecture.
#[cfg(target_arch = "x86_64")]
type Nc = dmacap::backend::compose::NonCoherent<dmacap::arch::x86_64::X86CacheOps>;
#[cfg(target_arch = "aarch64")]
type Nc = dmacap::backend::compose::NonCoherent<dmacap::arch::aarch64::Aarch64CacheOps>;

/// `(composition, handle bytes)` for every composition over the identity
/// platform; the first row is the `Box<[u8]>` itself.
pub fn table() -> Vec<(&'static str, usize)> {
    type P = IdentityMap;
    type Mmu = IommuDomain<NopIommu>;
    let mut rows = vec![
        ("Box<[u8]> itself", size_of::<Box<[u8]>>()),
        (
            "DirectCoherent (Direct, Coherent, NoBounce)",
            handle::<dmacap::backend::direct::DirectCoherent<P>>(),
        ),
        (
            "IdentityCoherent (Direct<IdentityBus>, Coherent, NoBounce)",
            handle::<dmacap::backend::direct::IdentityCoherent<P>>(),
        ),
        (
            "Direct, Coherent, Swiotlb",
            handle::<Composed<P, Direct, Coherent, Swiotlb>>(),
        ),
        (
            "Direct, Coherent, &'static Swiotlb",
            handle::<Composed<P, Direct, Coherent, &'static Swiotlb>>(),
        ),
        (
            "Direct, Coherent, Arc<Swiotlb>",
            handle::<Composed<P, Direct, Coherent, Arc<Swiotlb>>>(),
        ),
        (
            "IommuDomain, Coherent, NoBounce",
            handle::<Composed<P, Mmu, Coherent, NoBounce>>(),
        ),
        (
            "IommuDomain, Coherent, Swiotlb",
            handle::<Composed<P, Mmu, Coherent, Swiotlb>>(),
        ),
    ];
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    rows.extend([
        (
            "DirectNonCoherent (Direct, NonCoherent, NoBounce)",
            handle::<Composed<P, Direct, Nc, NoBounce>>(),
        ),
        (
            "Direct, NonCoherent, Swiotlb",
            handle::<Composed<P, Direct, Nc, Swiotlb>>(),
        ),
        (
            "IommuDomain, NonCoherent, NoBounce",
            handle::<Composed<P, Mmu, Nc, NoBounce>>(),
        ),
        (
            "IommuDomain, NonCoherent, Swiotlb",
            handle::<Composed<P, Mmu, Nc, Swiotlb>>(),
        ),
    ]);
    rows
}
