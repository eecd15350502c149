//! Rejected: tearing the device down while one of its mappings lives.
//!
//! Every handle borrows its `Device`, so dropping the device while a handle
//! is still used afterwards is a move out of a borrowed value.

use dmacap::sim::SimPlatform;

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();

    let tx = dev
        .map_to_device(sim.memory().alloc_slice::<u8>(64).unwrap())
        .unwrap();

    // Driver remove path in the wrong order.
    drop(dev);

    println!("still mapped at {:#x}", tx.dma_addr().as_u64());
    // SAFETY: no device access was ever started on the buffer.
    let _buf = unsafe { tx.unmap() };
}
