//! Rejected: keeping a CPU view of the buffer across `sync_for_device`.
//!
//! `contents()` borrows the handle, and `sync_for_device` consumes it, so a
//! slice of the packet cannot be read after the buffer was reposted to the
//! device (which may be overwriting it with the next packet).

use dmacap::sim::SimPlatform;

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();
    let nic = sim.device(&dev);

    let h = dev
        .map_from_device(sim.memory().alloc_slice::<u8>(64).unwrap())
        .unwrap();
    nic.fill(h.dma_addr(), 0x42, 64).unwrap();
    // SAFETY: the simulated fill returned, so the device has finished with
    // the buffer and nothing else is queued on it.
    let h = unsafe { h.sync_for_cpu() };

    let s = h.contents();
    let h = h.sync_for_device();
    nic.fill(h.dma_addr(), 0x43, 64).unwrap();
    println!("{}", s[0]);

    // SAFETY: the simulated fill returned, as above.
    let _buf = unsafe { h.unmap() };
}
