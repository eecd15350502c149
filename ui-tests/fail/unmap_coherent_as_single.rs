//! Rejected. dma-debug: "DMA-API: device driver frees DMA memory with wrong
//! function [device address=...] [size=...] [mapped as coherent] [unmapped
//! as single]".
//!
//! A C driver tears a `dma_alloc_coherent` buffer down with
//! `dma_unmap_single`, as if it were a streaming mapping. In dmacap each
//! kind of mapping is its own handle type with its own teardown: a coherent
//! allocation is a `Coherent<T>`, freed (unmapped and given back to the
//! platform's allocator) by `Coherent::free`; it has no `unmap`, and the
//! streaming unmap paths take only `Mapped` handles.

use dmacap::sim::SimPlatform;

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();

    let table = dev.alloc_coherent_slice::<u64>(16).unwrap().share().unwrap();
    println!("descriptor table at {:#x}", table.dma_addr().as_u64());

    // Teardown through the streaming path.
    // SAFETY: the simulated device was never started.
    let _buf = unsafe { table.unmap() };
}
