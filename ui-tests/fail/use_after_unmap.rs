//! Rejected: using a handle after `unmap` consumed it.
//!
//! `unmap` takes the handle by value and gives the buffer back, so its DMA
//! address can no longer be handed to the device afterwards.

use dmacap::sim::SimPlatform;

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();
    let nic = sim.device(&dev);

    let mut frame = sim.memory().alloc_slice::<u8>(64).unwrap();
    frame.fill(0x5a);
    let tx = dev.map_to_device(frame).unwrap();
    let mut wire = [0u8; 64];
    nic.read(tx.dma_addr(), &mut wire).unwrap();

    // SAFETY: the simulated read returned, so the device has finished with
    // the buffer and nothing else is queued on it.
    let frame = unsafe { tx.unmap() };
    drop(frame);

    // Retransmitting from a mapping that no longer exists.
    nic.read(tx.dma_addr(), &mut wire).unwrap();
}
