//! Compiles and runs. dma-debug: "DMA-API: cacheline tracking EEXIST,
//! overlapping mappings aren't supported".
//!
//! On a non-coherent device, two mappings that share a cache line corrupt
//! each other: invalidating one discards the CPU's writes to the other.
//! Typed buffers below the granule do not compile
//! (`fail/typed_buffer_below_granule.rs`), but a byte buffer's alignment is
//! not in its type, so it is checked when mapped: a backend without a
//! bounce pool refuses one that does not fill whole lines with
//! `MapErrorKind::SharesCacheLine`, giving the buffer back. The same bytes
//! aligned to the granule map (`pass/byte_buffers_aligned_to_the_granule.rs`).

use dmacap::sim::SimPlatform;
use dmacap::MapErrorKind;

fn main() {
    let sim = SimPlatform::noncoherent(1 << 20);
    let dev = sim.noncoherent_device();

    // 60 bytes: the rest of its last line belongs to someone else.
    let mut short = sim.memory().alloc_slice_aligned::<u8>(60, 64).unwrap();
    short.fill(0x42);
    let err = dev.map_to_device(short).unwrap_err();
    assert!(
        matches!(
            err.kind(),
            MapErrorKind::SharesCacheLine {
                len: 60,
                granule: 64,
                ..
            }
        ),
        "{:?}",
        err.kind()
    );
    let msg = err.to_string();
    assert!(msg.contains("share a cache line"), "{msg}");
    let short = err.into_buffer();
    assert_eq!(&short[..], &[0x42; 60][..], "the buffer comes back unchanged");

    // 64 bytes starting 16 bytes into a line: it straddles two lines.
    let whole = sim.memory().alloc_slice_aligned::<u8>(80, 64).unwrap();
    let ptr = Box::leak(Box::new(whole));
    let straddling: &'static mut [u8] = &mut ptr[16..];
    let err = dev.map_from_device(straddling).unwrap_err();
    assert!(matches!(err.kind(), MapErrorKind::SharesCacheLine { len: 64, .. }));
    assert_eq!(err.into_buffer().len(), 64);

    assert_eq!(dev.leaked(), 0);
    drop(short);
}
