//! Rejected: mapping a type that not every bit pattern inhabits `ToDevice`
//! on a device without an IOMMU (issue 7, hole 1).
//!
//! A bus with no IOMMU enforces no direction: the device can write a buffer
//! it was given to read, and the buffer comes back from unmap holding
//! whatever it wrote. Before the fix a `Box<bool>` mapped this way came
//! back holding `0x02`. `ToDevice` contents must be `IntoBytes + FromBytes`;
//! `bool` is not `FromBytes`. (Behind an IOMMU too: an IOMMU grants whole
//! pages, see `fail/to_device_non_frombytes_behind_iommu.rs`.)

use dmacap::sim::SimPlatform;

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();

    let flag: Box<bool> = Box::new(true);
    let tx = dev.map_to_device(flag).unwrap();
    sim.device(&dev).write(tx.dma_addr(), &[2]).unwrap();
    // SAFETY: the simulated write returned: the device has finished.
    let flag = unsafe { tx.unmap() };
    if *flag {
        println!("set");
    }
}
