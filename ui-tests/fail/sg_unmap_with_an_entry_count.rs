//! dma-debug: "DMA-API: device driver frees DMA sg list with different entry
//! count [map count=4] [unmap count=3]" (and, for syncs, "device driver
//! syncs DMA sg list with different entry count").
//!
//! A C driver passes `dma_unmap_sg` the count `dma_map_sg` returned (or a
//! stale one) instead of the count it passed in. In dmacap the list keeps
//! its entries: `SgMapped::unmap` and `sync_for_cpu` take no count. The one
//! partial operation, `sync_first_for_cpu(n)`, checks `n` and splits the
//! list in two.

use dmacap::sim::SimPlatform;
use dmacap::FromDevice;

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();

    let list = dev
        .map_sg::<FromDevice, _, _>((0..4).map(|_| sim.memory().alloc_slice::<u8>(512).unwrap()))
        .unwrap();
    // The request had three fragments before a fourth was added.
    let nents = 3;

    // SAFETY: the simulated device was never started.
    let _bufs = unsafe { list.unmap(nents) };
}
