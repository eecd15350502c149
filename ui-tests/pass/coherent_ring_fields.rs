//! A coherent ring: built through references in its CPU-only phase, then
//! shared and accessed only by typed, volatile field reads and writes.

use dmacap::sim::SimPlatform;
use dmacap::{dma_read, dma_write};
use zerocopy::byteorder::little_endian::{U16, U64};

#[derive(zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::Immutable)]
#[repr(C)]
struct Desc {
    addr: U64,
    flags: U16,
    next: U16,
    _pad: [u8; 4],
}

fn main() {
    let sim = SimPlatform::noncoherent(1 << 20);
    let dev = sim.noncoherent_device();
    let mut descs = dev.alloc_coherent_slice::<Desc>(4).unwrap();
    descs[1].next = U16::new(2);
    let mut descs = descs.share().unwrap();
    dma_write!(descs[2], Desc, flags, U16::new(1));
    assert_eq!(dma_read!(descs[1], Desc, next).get(), 2);
    assert_eq!(dma_read!(descs[2], Desc, flags).get(), 1);
    // SAFETY: no device runs.
    unsafe { descs.free() };
}
