//! Rejected: unmapping a device-owned handle outside an `unsafe` block.
//!
//! Unmapping a `DevOwned` handle gives the memory back to the CPU, which is
//! only sound once the device has finished with it: like `sync_for_cpu`, it
//! is `unsafe`. (Unmapping a `CpuOwned` handle is safe.)

use dmacap::sim::SimPlatform;

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();
    let rx = dev
        .map_from_device(sim.memory().alloc_slice::<u8>(64).unwrap())
        .unwrap();
    sim.device(&dev).fill(rx.dma_addr(), 0xab, 64).unwrap();

    let buf = rx.unmap();
    assert_eq!(buf[0], 0xab);
}
