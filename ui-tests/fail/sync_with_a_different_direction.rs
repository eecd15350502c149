//! dma-debug: "DMA-API: device driver syncs DMA memory with different
//! direction [device address=...] [size=...] [mapped with DMA_FROM_DEVICE]
//! [synced with DMA_TO_DEVICE]".
//!
//! A C driver restates the direction at every sync, and can restate it
//! wrong. In dmacap the direction is the handle's type parameter, fixed at
//! map time: syncs take no direction (the handle knows it, and
//! `direction()` only reads it), so a sync cannot disagree with the map.

use dmacap::sim::SimPlatform;
use dmacap::DmaDirection;

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();

    let rx = dev
        .map_from_device(sim.memory().alloc_slice::<u8>(64).unwrap())
        .unwrap();
    sim.device(&dev).fill(rx.dma_addr(), 0xab, 64).unwrap();

    // SAFETY: the simulated fill returned, so the device has finished.
    let rx = unsafe { rx.sync_for_cpu(DmaDirection::ToDevice) };
    println!("{}", rx.contents()[0]);
}
