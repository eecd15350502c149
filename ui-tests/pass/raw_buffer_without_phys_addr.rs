//! Compiles and runs. dma-debug: "DMA-API: device driver maps memory from
//! vmalloc area [addr=...] [len=...]" (and "... from invalid area").
//!
//! Owned containers that are not stable memory (`Vec`) do not compile
//! (`fail/map_vec_like_vmalloc.rs`). Memory dmacap cannot own enters through
//! `RawBuffer`, whose `unsafe` constructor vouches only that nobody else
//! touches it; whether it has one contiguous physical range is the
//! platform's answer (`PhysLookup::phys_of`). Memory it cannot translate,
//! like vmalloc memory or, here, heap memory outside the simulated RAM, is
//! refused at map time with `MapErrorKind::NoPhysAddr`, and the
//! `RawBuffer` comes back so the caller can release it.

use std::ptr::NonNull;

use dmacap::sim::SimPlatform;
use dmacap::{MapErrorKind, RawBuffer};

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();

    // Memory the platform knows nothing about.
    let heap: &'static mut [u8] = Box::leak(vec![7u8; 256].into_boxed_slice());
    let cpu = heap.as_ptr() as usize;
    let ptr = NonNull::from(heap);
    // SAFETY: the leaked allocation is valid, initialised, reached only
    // through this `RawBuffer`, and freed below only after it came back.
    let raw = unsafe { RawBuffer::new(ptr) };

    let err = dev.map_to_device(raw).unwrap_err();
    assert_eq!(err.kind(), MapErrorKind::NoPhysAddr { cpu, len: 256 });
    let msg = err.to_string();
    assert!(msg.contains("no contiguous physical address"), "{msg}");

    let back = err.into_buffer().into_inner();
    assert_eq!(back, ptr, "the same memory comes back");
    // SAFETY: `back` is the pointer of the leaked box, which nothing else
    // references any more.
    let heap = unsafe { Box::from_raw(back.as_ptr()) };
    assert!(heap.iter().all(|&b| b == 7));
    assert_eq!(dev.leaked(), 0);
}
