//! dma-debug: "DMA-API: device driver tries to sync DMA memory it has not
//! allocated [device address=...] [size=...]".
//!
//! A C driver syncs by `(dev, dma_addr, size, dir)`, so any address can be
//! passed, mapped or not. In dmacap a sync is a method of the handle and
//! consumes it: nothing syncs by address, and an unmapped buffer has no
//! handle to sync.

use dmacap::sim::SimPlatform;

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();

    let rx = dev
        .map_from_device(sim.memory().alloc_slice::<u8>(64).unwrap())
        .unwrap();
    let addr = rx.dma_addr();
    // SAFETY: the simulated device was never started.
    let _buf = unsafe { rx.unmap() };

    // The interrupt handler syncs the address its descriptor still holds.
    // SAFETY: the simulated device was never started.
    unsafe { dev.sync_for_cpu(addr) };
}
