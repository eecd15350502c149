//! Compiles and runs: typed buffers of any element size on a coherent
//! device (granule `U1`), and `LineAligned` typed buffers on a non-coherent
//! one.

use dmacap::buffer::LineAligned;
use dmacap::sim::SimPlatform;
use typenum::U64;

#[derive(zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::Immutable, zerocopy::KnownLayout)]
#[repr(C, align(64))]
struct Descriptor {
    addr: u64,
    len: u32,
    flags: u32,
    reserved: [u8; 48],
}
// SAFETY: aligned to 64 and 64 bytes long.
unsafe impl LineAligned<U64> for Descriptor {}

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();
    let words = sim.memory().alloc_slice::<u32>(16).unwrap();
    let h = dev.map_from_device(words).unwrap();
    sim.device(&dev).write(h.dma_addr(), &7u32.to_ne_bytes()).unwrap();
    // SAFETY: the simulated write returned.
    let h = unsafe { h.sync_for_cpu() };
    assert_eq!(h.contents()[0], 7);
    drop(h);

    let nc = SimPlatform::noncoherent(1 << 20);
    let dev = nc.noncoherent_device();
    let mut ring = nc.memory().alloc_slice::<Descriptor>(4).unwrap();
    ring[1].len = 1500;
    let h = dev.map_bidirectional(ring).unwrap();
    let mut len = [0u8; 4];
    nc.device(&dev)
        .read(dmacap::DmaAddr::new(h.dma_addr().as_u64() + 64 + 8), &mut len)
        .unwrap();
    assert_eq!(u32::from_ne_bytes(len), 1500);
    // SAFETY: the simulated read returned.
    drop(unsafe { h.unmap() });
}
