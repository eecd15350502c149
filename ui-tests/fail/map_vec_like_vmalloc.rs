//! dma-debug: "DMA-API: device driver maps memory from vmalloc area
//! [addr=...] [len=...]".
//!
//! vmalloc memory is virtually contiguous only, and a growable container
//! may move its contents; neither is memory a device can be given. In
//! dmacap only owned memory with a stable address implements `DmaBuffer`:
//! a `Vec<u8>` (it may reallocate) does not; `into_boxed_slice()` gives a
//! `Box<[u8]>`, which does. (Memory the platform cannot translate as one
//! physical range, such as a `RawBuffer` over vmalloc-like memory, is
//! refused at run time with `NoPhysAddr`: see `pass/raw_buffer_without_phys_addr.rs`.)

use dmacap::sim::SimPlatform;

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();

    let frame: Vec<u8> = vec![0; 1500];
    let _tx = dev.map_to_device(frame);
}
