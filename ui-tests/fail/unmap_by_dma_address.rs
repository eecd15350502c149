//! dma-debug: "DMA-API: device driver tries to free an invalid DMA memory
//! address" (and "... DMA memory it has not allocated [device address=...]").
//!
//! A C driver keeps the `dma_addr_t` in its descriptor ring and unmaps by
//! it, so a stale, zeroed or error-value address (`DMA_MAPPING_ERROR` from a
//! failed map) reaches `dma_unmap_single`. In dmacap a DMA address is only a
//! number to give the device: nothing unmaps by address. The unmap is a
//! method of the handle, which carries the address, size, direction and
//! physical address itself, and a failed map yields no address at all. (A
//! HAL handed only an address looks its handle up in `ByDmaAddr`, where an
//! unknown address finds nothing: `pass/unmap_by_an_unknown_dma_address.rs`.)

use dmacap::sim::SimPlatform;
use dmacap::DmaAddr;

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();

    let tx = dev
        .map_to_device(sim.memory().alloc_slice::<u8>(64).unwrap())
        .unwrap();
    // The descriptor ring keeps only the bus address, as in C.
    let ring: [DmaAddr; 1] = [tx.dma_addr()];
    std::mem::forget(tx);

    // Completion: unmap the buffer by the address found in the descriptor.
    // SAFETY: the simulated device was never started.
    unsafe { dev.unmap(ring[0]) };
}
