//! Rejected. Beyond Linux (dma-debug cannot see it): a reference into
//! coherent memory the device shares. A C driver, and a Rust one holding a
//! `&Ring`, reads `ring->idx` as if it were ordinary memory, while the
//! device may write it at any moment: a data race the compiler assumes
//! away (torn, cached or reordered reads).
//!
//! In dmacap the CPU-only phase, `CoherentBox<T>`, dereferences to `T`;
//! `share()` consumes it and returns `Coherent<T>`, which has no `Deref`,
//! no field access and no method that returns a reference into the memory.
//! The CPU reads and writes one value at a time, each a volatile access:
//! `dma_read!(ring, Ring, idx)`, `dma_write!(ring, Ring, idx, v)`.

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

    let mut ring = dev.alloc_coherent::<Ring>().unwrap();
    ring.flags = U16::new(1); // CPU-only phase: a plain field store
    let ring = ring.share().unwrap();

    // Shared: the device may be updating `idx` right now.
    let idx: &U16 = &ring.idx;
    println!("device consumed up to {}", idx.get());

    // SAFETY: the simulated device was never started.
    unsafe { ring.free() };
}
