//! `virtio_hal!`'s MMIO mapping: without one, `mmio_phys_to_virt` panics
//! naming the `Hal`; with `mmio = f`, it calls `f` (a PCI transport maps
//! its BARs so; `examples/qemu-aarch64` uses it on bare metal).

use core::ptr::NonNull;

use dmacap::backend::direct::DirectCoherent;
use dmacap::sim::SimMemory;
use dmacap::virtio::virtio_drivers::{Hal, PhysAddr};

dmacap::virtio_hal!(
    /// No MMIO mapping.
    DmaOnly, DirectCoherent<SimMemory>
);

/// An identity MMIO mapping, shifted so the test can tell it ran.
///
/// # Safety
///
/// None needed: it only computes an address.
unsafe fn shifted(paddr: PhysAddr, size: usize) -> NonNull<u8> {
    NonNull::new((paddr as usize + size) as *mut u8).unwrap()
}

dmacap::virtio_hal!(
    /// With an MMIO mapping.
    WithMmio, DirectCoherent<SimMemory>, mmio = shifted
);

#[test]
fn mmio_goes_through_the_given_function() {
    // SAFETY: `shifted` only computes an address.
    let p = unsafe { WithMmio::mmio_phys_to_virt(0x1000_0000, 0x40) };
    assert_eq!(p.as_ptr() as usize, 0x1000_0040);
}

#[test]
#[should_panic(expected = "DmaOnly: MMIO address 0x10000000: this adapter serves DMA only")]
fn mmio_without_a_function_panics_naming_the_hal() {
    // SAFETY: panics before anything is accessed.
    let _ = unsafe { DmaOnly::mmio_phys_to_virt(0x1000_0000, 0x40) };
}
