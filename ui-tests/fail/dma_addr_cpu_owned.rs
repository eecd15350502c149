//! Rejected: asking a CPU-owned handle for its DMA address.
//!
//! Handing out the DMA address is handing the buffer to the device, so only
//! a `DevOwned` handle has `dma_addr()`; after `sync_for_cpu` the handle is
//! `CpuOwned` and must go back through `sync_for_device` first.

use dmacap::sim::SimPlatform;

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();
    let nic = sim.device(&dev);

    let rx = dev
        .map_from_device(sim.memory().alloc_slice::<u8>(64).unwrap())
        .unwrap();
    nic.fill(rx.dma_addr(), 0x11, 64).unwrap();

    // SAFETY: the simulated fill returned, so the device has finished with
    // the buffer and nothing else is queued on it.
    let rx = unsafe { rx.sync_for_cpu() };
    assert_eq!(rx.contents()[0], 0x11);

    // Reposting the buffer to the device while the CPU still owns it.
    nic.fill(rx.dma_addr(), 0x22, 64).unwrap();

    let _buf = rx.unmap();
}
