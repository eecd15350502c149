//! dma-debug: "DMA-API: device driver syncs device write-only DMA memory to
//! device [device address=...] [size=...] [mapped with DMA_FROM_DEVICE]
//! [synced with DMA_TO_DEVICE]".
//!
//! Handing a receive buffer back to the device (`sync_for_device` on a
//! `FromDevice` mapping) is legal in dmacap, and is how buffers are
//! recycled (`pass/round_trip_from_device.rs`): it moves ownership, and the
//! device overwrites whatever is there. What Linux's message guards
//! against is the CPU writing data *for the device* into memory the device
//! only writes, data a bounce buffer never copies over and an invalidate
//! may discard. In dmacap CPU writes need `D: CpuWritable`, which
//! `FromDevice` is not: here a receive list is cleared before it is
//! reposted, through `SgMapped::contents_mut` (the single-handle form is
//! `cpu_write_from_device.rs`).

use dmacap::sim::SimPlatform;
use dmacap::FromDevice;

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();

    let list = dev
        .map_sg::<FromDevice, _, _>((0..4).map(|_| sim.memory().alloc_slice::<u8>(512).unwrap()))
        .unwrap();
    // SAFETY: the simulated device was never started.
    let mut list = unsafe { list.sync_for_cpu() };

    // Clear each buffer, then give the list back to the device.
    for i in 0..list.len() {
        list.contents_mut(i).unwrap().fill(0);
    }
    let list = list.sync_for_device();
    // SAFETY: as above.
    let _bufs = unsafe { list.unmap() };
}
