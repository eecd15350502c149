//! dma-debug: "DMA-API: device driver frees DMA memory with wrong function
//! [device address=...] [size=...] [mapped as scatter-gather] [unmapped as
//! single]".
//!
//! A C driver maps a list with `dma_map_sg` and unmaps one of its entries
//! with `dma_unmap_single`. In dmacap the list owns its entries' handles
//! and lends them out by shared reference only: an entry cannot be taken
//! out and unmapped on its own; the list is unmapped as a whole, by
//! `SgMapped::unmap`.

use dmacap::sim::SimPlatform;
use dmacap::ToDevice;

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();

    let list = dev
        .map_sg::<ToDevice, _, _>((0..4).map(|_| sim.memory().alloc_slice::<u8>(512).unwrap()))
        .unwrap();

    // The first fragment was sent: release it on its own.
    // SAFETY: the simulated device was never started.
    let _first = unsafe { list.as_slice()[0].unmap() };

    // SAFETY: as above.
    let _rest = unsafe { list.unmap() };
}
