//! Rejected: `sync_for_cpu` outside an `unsafe` block.
//!
//! Taking a buffer back from the device is only sound once the driver has
//! observed the device's completion, which the compiler cannot check: the
//! call is `unsafe` and must carry that promise.

use dmacap::sim::SimPlatform;

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();
    let rx = dev
        .map_from_device(sim.memory().alloc_slice::<u8>(64).unwrap())
        .unwrap();
    sim.device(&dev).fill(rx.dma_addr(), 0xab, 64).unwrap();

    let rx = rx.sync_for_cpu();
    assert_eq!(rx.contents()[0], 0xab);
    let _buf = rx.unmap();
}
