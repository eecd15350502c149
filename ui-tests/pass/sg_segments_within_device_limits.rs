//! Compiles and runs. dma-debug (`CONFIG_DMA_API_DEBUG_SG`): "DMA-API:
//! mapping sg segment longer than device claims to support [len=...]
//! [max=...]" and "DMA-API: mapping sg segment across boundary [start=...]
//! [end=...] [boundary=...]".
//!
//! Buffer lengths and addresses are run-time values, so this cannot be a
//! compile error; instead it cannot happen. The device's limits
//! (`DeviceConfig::max_segment_size`, `segment_boundary`, Linux's
//! `dma_set_max_seg_size`/`dma_set_seg_boundary`) live in the `Device`,
//! and the only view of a list the device is given, `SgMapped::segments()`,
//! splits every buffer into segments within them. No buffer is refused and
//! none is lost.

use dmacap::backend::direct::DmaWindows;
use dmacap::sim::SimPlatform;
use dmacap::{DeviceConfig, FromDevice};

fn main() {
    let sim = SimPlatform::new(1 << 20);
    // At most 1 KiB per segment, none crossing a 4 KiB boundary.
    let dev = sim.coherent_device_with(
        DeviceConfig::new()
            .max_segment_size(1024)
            .segment_boundary(0xfff),
        DmaWindows::identity(),
    );
    let engine = sim.device(&dev);

    // A 3000-byte buffer (longer than a segment), and 1000 bytes placed to
    // cross a 4 KiB boundary.
    let long = sim.memory().alloc_slice_aligned::<u8>(3000, 4096).unwrap();
    let page = sim.memory().alloc_slice_aligned::<u8>(8192, 4096).unwrap();
    let page = Box::leak(Box::new(page));
    let across: &'static mut [u8] = &mut page[3596..4596];

    let long = dev.map_sg::<FromDevice, _, _>([long]).unwrap();
    let segs: Vec<_> = long.segments().map(|(_, len)| len).collect();
    assert_eq!(segs, [1024, 1024, 952], "split at the maximum segment size");

    let across = dev.map_sg::<FromDevice, _, _>([across]).unwrap();
    let segs: Vec<_> = across.segments().collect();
    assert_eq!(segs.len(), 2, "split at the boundary");
    assert_eq!(segs[0].0.as_u64() % 4096, 3596);
    assert_eq!((segs[0].1, segs[1].1), (500, 500));
    assert_eq!(segs[1].0.as_u64() % 4096, 0);

    for (dma, len) in long.segments().chain(across.segments()) {
        assert!(len <= dev.config().max_segment());
        let last = dma.as_u64() + len as u64 - 1;
        assert_eq!(dma.as_u64() >> 12, last >> 12, "no segment crosses 4 KiB");
        engine.fill(dma, 0x5a, len).unwrap(); // the device accepts each
    }

    // SAFETY: the simulated fills returned, so the device has finished.
    let (long, across) = unsafe { (long.sync_for_cpu(), across.sync_for_cpu()) };
    assert!(long.contents(0).unwrap().iter().all(|&b| b == 0x5a));
    assert!(across.contents(0).unwrap().iter().all(|&b| b == 0x5a));
    assert_eq!(long.unmap()[0].len(), 3000);
    assert_eq!(across.unmap()[0].len(), 1000);
    assert_eq!(dev.leaked(), 0);
}
