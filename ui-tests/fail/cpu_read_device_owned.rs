//! Rejected: reading a receive buffer while the device owns it.
//!
//! A handle fresh from `map_from_device` is `Mapped<FromDevice, DevOwned>`:
//! the device may be writing the buffer at any moment, so the handle has no
//! `contents()`. The CPU must first take it back with `sync_for_cpu`.

use dmacap::sim::SimPlatform;

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();
    let rx = dev
        .map_from_device(sim.memory().alloc_slice::<u8>(64).unwrap())
        .unwrap();
    sim.device(&dev).fill(rx.dma_addr(), 0xab, 64).unwrap();

    // Peeking at the packet without syncing it back from the device.
    let first = rx.contents()[0];
    println!("first byte: {first:#x}");

    // SAFETY: the simulated fill returned, so the device has finished with
    // the buffer and nothing else is queued on it.
    let _buf = unsafe { rx.unmap() };
}
