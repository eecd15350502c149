//! Rejected. dma-debug: "DMA-API: device driver frees DMA memory with
//! different CPU address [device address=...] [size=...] [cpu alloc
//! address=...] [cpu free address=...]".
//!
//! `dma_free_coherent(dev, size, cpu_addr, dma_handle)` takes the CPU
//! address, size and DMA address back from the driver, which can pass a
//! pointer into the allocation (or into another one) instead of the one it
//! was given. In dmacap the allocation is its handle, `Coherent<T>`, which
//! keeps all of them: `free` takes nothing but the handle.

use dmacap::sim::SimPlatform;
use zerocopy::byteorder::little_endian::U16;

#[derive(zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::Immutable)]
#[repr(C)]
struct Ring {
    flags: U16,
    idx: U16,
    ring: [U16; 8],
}

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();

    let boxed = dev.alloc_coherent::<Ring>().unwrap();
    // The driver remembers where the ring's entries start.
    let entries: *const U16 = boxed.ring.as_ptr();
    let ring = boxed.share().unwrap();

    // Teardown frees by the pointer it kept.
    // SAFETY: the simulated device was never started.
    unsafe { ring.free(entries) };
}
