//! Compiles and runs. dma-debug: "DMA-API: device driver tries to free DMA
//! memory it has not allocated [device address=...]" and "... tries to free
//! an invalid DMA memory address", for the one shape where a driver does
//! get only an address back.
//!
//! Nothing in dmacap unmaps by DMA address (`fail/unmap_by_dma_address.rs`).
//! A HAL whose hook receives only the address (`virtio-drivers`'
//! `Hal::unshare(paddr, ..)`) keeps its live handles in `ByDmaAddr` and
//! looks the handle up: an address that was never mapped, or was already
//! taken back, finds nothing (`None`), so nothing is unmapped; a live one
//! yields the handle, which unmaps with the size, direction and physical
//! address it carries.

use dmacap::erased::ByDmaAddr;
use dmacap::sim::SimPlatform;
use dmacap::DmaAddr;

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();

    let mut live = ByDmaAddr::new();
    let tx = dev
        .map_to_device(sim.memory().alloc_slice::<u8>(64).unwrap())
        .unwrap();
    let dma = live.insert(tx).unwrap();

    // An address the device was never given, and the all-ones error value.
    assert!(live.take(DmaAddr::new(dma.as_u64() + 64)).is_none());
    assert!(live.take(DmaAddr::new(u64::MAX)).is_none());
    assert_eq!(live.len(), 1, "the live handle is untouched");

    // The real address finds the handle; taking it twice finds nothing.
    let tx = live.take(dma).unwrap();
    assert!(live.take(dma).is_none());
    // SAFETY: the simulated device was never started.
    let buf = unsafe { tx.unmap() };
    assert_eq!(buf.len(), 64);
    assert_eq!(dev.leaked(), 0);
}
