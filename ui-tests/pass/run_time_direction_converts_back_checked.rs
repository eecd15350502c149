//! Compiles and runs. dma-debug: "DMA-API: device driver frees DMA memory
//! with different direction" and "... syncs DMA memory with different
//! direction", for the one shape where the direction is a run-time value.
//!
//! Typed handles carry their direction in their type
//! (`fail/unmap_with_a_different_direction.rs`,
//! `fail/sync_with_a_different_direction.rs`). A HAL that gets the
//! direction as a value (`virtio-drivers`' `BufferDirection`) maps with
//! `map_any` and holds an `AnyMapped`: its syncs and unmap take no
//! direction either, and converting it back to a typed handle,
//! `into_direction::<D>()`, succeeds only for the direction it was mapped
//! with; any other hands it back unchanged.

use dmacap::sim::SimPlatform;
use dmacap::{DmaDirection, FromDevice, ToDevice};

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();

    let any = dev
        .map_any(sim.memory().alloc_slice::<u8>(64).unwrap(), DmaDirection::ToDevice)
        .unwrap();
    assert_eq!(any.direction(), DmaDirection::ToDevice);

    // Taken as a receive buffer: refused, handed back.
    let any = any.into_direction::<FromDevice>().unwrap_err();
    assert_eq!(any.direction(), DmaDirection::ToDevice);

    // As what it is: the typed handle.
    let tx = any.into_direction::<ToDevice>().unwrap();
    // SAFETY: the simulated device was never started.
    let tx = unsafe { tx.sync_for_cpu() };
    let buf = tx.unmap();
    assert_eq!(buf.len(), 64);
    assert_eq!(dev.leaked(), 0);
}
