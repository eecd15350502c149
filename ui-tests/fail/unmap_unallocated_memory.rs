//! dma-debug: "DMA-API: device driver tries to free DMA memory it has not
//! allocated [device address=0x0000000000000000] [size=1600 bytes]".
//!
//! A probe's error path unmaps every slot of a receive ring, including the
//! ones it never got to map (in C: `dma_unmap_single` on a zeroed
//! `dma_addr_t`). In dmacap only a handle can be unmapped, and only a
//! successful map creates one; a buffer that was never mapped is a plain
//! buffer, with no `unmap` to call.

use dmacap::sim::SimPlatform;

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();

    let mapped = dev
        .map_from_device(sim.memory().alloc_slice::<u8>(1600).unwrap())
        .unwrap();
    // The probe failed before the second slot was mapped.
    let never_mapped = sim.memory().alloc_slice::<u8>(1600).unwrap();

    // Error unwinding: unmap both slots.
    // SAFETY: the simulated device was never started.
    let _first = unsafe { mapped.unmap() };
    // SAFETY: as above.
    let _second = unsafe { never_mapped.unmap() };
}
