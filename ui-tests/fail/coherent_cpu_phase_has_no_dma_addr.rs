//! Rejected: taking the DMA address of a coherent allocation in its
//! CPU-only phase.
//!
//! `CoherentBox` withholds the address: the memory is not mapped yet and
//! the CPU holds ordinary references into it, so no device may be told
//! where it is. Only `share()` (which ends the references) yields a
//! `Coherent` with `dma_addr`.

use dmacap::sim::SimPlatform;

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();
    let ring = dev.alloc_coherent::<[u32; 16]>().unwrap();
    let _addr = ring.dma_addr();
}
