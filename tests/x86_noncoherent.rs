//! The non-coherent backend with the real x86_64 cache-maintenance
//! instructions (`clwb`/`clflushopt`/`clflush`, completed by `mfence`),
//! executed on this machine over real heap buffers, and the barrier
//! arithmetic of batches and scatter-gather lists.
//!
//! No device touches the memory here (the platform is the identity map of a
//! user-space process); the bytes are checked on the CPU side, and the
//! counters show what was issued and how often it was completed.
#![cfg(all(target_arch = "x86_64", not(miri)))]

use dmacap::arch::x86_64::{X86CacheOps, X86Flush};
use dmacap::backend::noncoherent::DirectNonCoherent;
use dmacap::buffer::LineAligned;
use dmacap::platform::IdentityMap;
use dmacap::{Bidirectional, Device, DeviceConfig, DmaMask, FromDevice, MapErrorKind, ToDevice};
use typenum::U64;

/// One 64-byte cache line of bytes, aligned to it.
#[derive(zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::Immutable, Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);
// SAFETY: aligned to 64 and 64 bytes long.
unsafe impl LineAligned<U64> for Line {}

type X86Dev = Device<DirectNonCoherent<IdentityMap, X86CacheOps>>;

fn device(ops: X86CacheOps) -> X86Dev {
    // SAFETY: no device ever receives these addresses; the test only runs
    // the CPU's cache maintenance over its own heap memory.
    let platform = unsafe { IdentityMap::new() };
    Device::new(
        DirectNonCoherent::new(platform, ops),
        DeviceConfig::new().dma_mask(DmaMask::bits(64)),
    )
}

fn lines(n: usize, fill: u8) -> Box<[Line]> {
    vec![Line([fill; 64]); n].into_boxed_slice()
}

#[test]
fn every_flavor_keeps_the_bytes_and_counts_lines() {
    for flavor in [X86Flush::Clflush, X86Flush::Clflushopt, X86Flush::Clwb] {
        let Some(ops) = X86CacheOps::with_flavor(flavor) else {
            eprintln!("{flavor:?} not supported here; skipped");
            continue;
        };
        let dev = device(ops);
        // Bidirectional: cleaned at map, invalidated at sync_for_cpu.
        let h = dev.map::<Bidirectional, _>(lines(4, 0x5a)).unwrap();
        assert_eq!(dev.stats().lines_cleaned(), 4);
        assert_eq!(dev.stats().barriers(), 1);
        // SAFETY: no device exists.
        let mut h = unsafe { h.sync_for_cpu() };
        assert_eq!(dev.stats().lines_invalidated(), 4);
        assert_eq!(dev.stats().barriers(), 2);
        assert!(h.contents().iter().all(|l| l.0 == [0x5a; 64]));
        h.contents_mut()[3].0[63] = 0xa5;
        let h = h.sync_for_device();
        assert_eq!(dev.stats().lines_cleaned(), 8);
        // SAFETY: no device exists.
        let back = unsafe { h.unmap() };
        assert_eq!(back[3].0[63], 0xa5, "{flavor:?}");
        assert_eq!(back[0].0[0], 0x5a);
        // ToDevice: nothing to invalidate on the way back.
        let h = dev.map::<ToDevice, _>(lines(2, 1)).unwrap();
        // SAFETY: no device exists.
        drop(unsafe { h.sync_for_cpu() });
        assert_eq!(dev.stats().lines_invalidated(), 8, "{flavor:?}");
    }
}

#[test]
fn single_handle_is_a_batch_of_one() {
    let dev = device(X86CacheOps::detect());
    let mut handles = Vec::new();
    for _ in 0..8 {
        handles.push(dev.map::<FromDevice, _>(lines(1, 0)).unwrap());
    }
    assert_eq!(dev.stats().barriers(), 8);

    let mut batch = dev.batch();
    for _ in 0..8 {
        batch.map_from_device(lines(1, 0)).unwrap();
    }
    let batched = batch.flush();
    assert_eq!(dev.stats().barriers(), 9, "eight maps, one barrier");
    assert_eq!(dev.stats().lines_cleaned(), 16);

    let mut back = dev.batch();
    for h in handles.into_iter().chain(batched) {
        // SAFETY: no device exists.
        unsafe { back.unmap_device_owned(h) };
    }
    let bufs = back.flush();
    assert_eq!(bufs.len(), 16);
    assert_eq!(dev.stats().barriers(), 10, "sixteen unmaps, one barrier");
    assert_eq!(dev.stats().lines_invalidated(), 16);
}

#[test]
fn sixty_four_entry_scatter_gather_costs_one_barrier() {
    let one_by_one = device(X86CacheOps::detect());
    let handles: Vec<_> = (0..64)
        .map(|_| one_by_one.map::<FromDevice, _>(lines(64, 0)).unwrap())
        .collect();
    assert_eq!(one_by_one.stats().barriers(), 64);

    let batched = device(X86CacheOps::detect());
    let sg = batched
        .map_sg::<FromDevice, _, _>((0..64).map(|_| lines(64, 0)))
        .unwrap();
    assert_eq!(batched.stats().barriers(), 1);
    assert_eq!(batched.stats().lines_cleaned(), 64 * 64);
    assert_eq!(one_by_one.stats().lines_cleaned(), 64 * 64);
    // 4 KiB buffers, 64 KiB max segments: one segment each.
    assert_eq!(sg.segments().count(), 64);

    // SAFETY: no device exists.
    let bufs = unsafe { sg.unmap() };
    assert_eq!(bufs.len(), 64);
    assert_eq!(batched.stats().barriers(), 2);
    for h in handles {
        // SAFETY: no device exists.
        drop(unsafe { h.unmap() });
    }
    assert_eq!(one_by_one.stats().barriers(), 128);
}

#[test]
fn misaligned_byte_buffer_is_refused_with_the_buffer() {
    let dev = device(X86CacheOps::detect());
    // A 100-byte buffer cannot fill whole 64-byte lines.
    let err = dev
        .map::<FromDevice, _>(vec![7u8; 100].into_boxed_slice())
        .unwrap_err();
    assert!(matches!(
        err.kind(),
        MapErrorKind::SharesCacheLine {
            len: 100,
            granule: 64,
            ..
        }
    ));
    assert_eq!(&*err.into_buffer(), &[7u8; 100][..]);
    assert_eq!(dev.stats().barriers(), 0);
    assert_eq!(dev.stats().lines_cleaned(), 0);
}
