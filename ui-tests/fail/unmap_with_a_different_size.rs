//! dma-debug: "DMA-API: device driver frees DMA memory with different size
//! [device address=...] [map size=4088 bytes] [unmap size=512 bytes]".
//!
//! A C driver restates the length at unmap time and gets it wrong (the
//! qla2xxx and atlantic fixes). In dmacap the length is part of the handle
//! (the buffer's own length, or its type's size): `unmap` takes no size, so
//! there is nothing to get wrong.

use dmacap::sim::SimPlatform;

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();

    let cmd = dev
        .map_to_device(sim.memory().alloc_slice::<u8>(4088).unwrap())
        .unwrap();
    println!("command at {:#x}", cmd.dma_addr().as_u64());

    // Teardown, with the size of the structure the buffer used to hold.
    // SAFETY: the simulated device was never started.
    let _buf = unsafe { cmd.unmap(512) };
}
