//! The non-coherent backend with the real cache-maintenance instructions of
//! the machine running the tests: on x86_64 `clwb`/`clflushopt`/`clflush`
//! completed by `mfence`; on aarch64 (under `qemu-aarch64` in CI) the EL0
//! flavour, `dc cvac`/`dc civac` completed by `dsb sy`. Executed over real
//! heap buffers, with the barrier arithmetic of batches and scatter-gather.
//!
//! No device touches the memory here (the platform is the identity map of a
//! user-space process); the bytes are checked on the CPU side, and the
//! counters show what was issued and how often it was completed.
#![cfg(all(any(target_arch = "x86_64", target_arch = "aarch64"), not(miri)))]

use dmacap::backend::noncoherent::DirectNonCoherent;
use dmacap::buffer::LineAligned;
use dmacap::platform::IdentityMap;
use dmacap::{Bidirectional, Device, DeviceConfig, DmaMask, FromDevice, MapErrorKind, ToDevice};

#[cfg(target_arch = "x86_64")]
mod arch {
    pub use dmacap::arch::x86_64::{X86CacheOps as Ops, X86Flush};
    pub type Granule = typenum::U64;
    pub const GRANULE: usize = 64;
    pub fn ops() -> Ops {
        Ops::detect()
    }
    /// The granule, as a type: one cache-line granule of bytes.
    #[derive(zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::Immutable, Clone, Copy)]
    #[repr(C, align(64))]
    pub struct Line(pub [u8; GRANULE]);
}

#[cfg(target_arch = "aarch64")]
mod arch {
    pub use dmacap::arch::aarch64::Aarch64CacheOps as Ops;
    pub type Granule = typenum::U128;
    pub const GRANULE: usize = 128;
    pub fn ops() -> Ops {
        Ops::new_el0()
    }
    /// The granule, as a type: one `ARCH_DMA_MINALIGN` of bytes.
    #[derive(zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::Immutable, Clone, Copy)]
    #[repr(C, align(128))]
    pub struct Line(pub [u8; GRANULE]);
}

use arch::{GRANULE, Line, Ops, ops};

// SAFETY: aligned to the granule and one granule long.
unsafe impl LineAligned<arch::Granule> for Line {}

type RealDev = Device<DirectNonCoherent<IdentityMap, Ops>>;

/// Cache lines per granule on this CPU.
fn lines_per(dev: &RealDev) -> usize {
    use dmacap::arch::CacheMaintenance;
    GRANULE / dev.backend().cache().line_size()
}

fn device(ops: Ops) -> RealDev {
    // SAFETY: no device ever receives these addresses; the test only runs
    // the CPU's cache maintenance over its own heap memory.
    let platform = unsafe { IdentityMap::new() };
    Device::new(
        DirectNonCoherent::new(platform, ops),
        DeviceConfig::new().dma_mask(DmaMask::bits(64)),
    )
}

fn lines(n: usize, fill: u8) -> Box<[Line]> {
    vec![Line([fill; GRANULE]); n].into_boxed_slice()
}

#[cfg(target_arch = "x86_64")]
#[test]
fn every_flavor_keeps_the_bytes_and_counts_lines() {
    use arch::X86Flush;
    for flavor in [X86Flush::Clflush, X86Flush::Clflushopt, X86Flush::Clwb] {
        let Some(ops) = Ops::with_flavor(flavor) else {
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
        assert!(h.contents().iter().all(|l| l.0 == [0x5a; GRANULE]));
        h.contents_mut()[3].0[GRANULE - 1] = 0xa5;
        let h = h.sync_for_device();
        assert_eq!(dev.stats().lines_cleaned(), 8);
        // SAFETY: no device exists.
        let back = unsafe { h.unmap() };
        assert_eq!(back[3].0[GRANULE - 1], 0xa5, "{flavor:?}");
        assert_eq!(back[0].0[0], 0x5a);
        // ToDevice: nothing to invalidate on the way back, and no barrier.
        let h = dev.map::<ToDevice, _>(lines(2, 1)).unwrap();
        let barriers = dev.stats().barriers();
        // SAFETY: no device exists.
        let h = unsafe { h.sync_for_cpu() };
        assert_eq!(dev.stats().barriers(), barriers, "{flavor:?}");
        drop(h);
        assert_eq!(dev.stats().lines_invalidated(), 8, "{flavor:?}");
        assert_eq!(
            dev.stats().barriers(),
            barriers,
            "{flavor:?}: unmap of ToDevice"
        );
    }
}

#[test]
fn single_handle_is_a_batch_of_one() {
    let dev = device(ops());
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
    assert_eq!(dev.stats().lines_cleaned(), 16 * lines_per(&dev));

    let mut back = dev.batch();
    for h in handles.into_iter().chain(batched) {
        // SAFETY: no device exists.
        unsafe { back.unmap_device_owned(h) };
    }
    let bufs = back.flush();
    assert_eq!(bufs.len(), 16);
    assert_eq!(dev.stats().barriers(), 10, "sixteen unmaps, one barrier");
    assert_eq!(dev.stats().lines_invalidated(), 16 * lines_per(&dev));
}

#[test]
fn sixty_four_entry_scatter_gather_costs_one_barrier() {
    let one_by_one = device(ops());
    let handles: Vec<_> = (0..64)
        .map(|_| one_by_one.map::<FromDevice, _>(lines(64, 0)).unwrap())
        .collect();
    assert_eq!(one_by_one.stats().barriers(), 64);

    let batched = device(ops());
    let sg = batched
        .map_sg::<FromDevice, _, _>((0..64).map(|_| lines(64, 0)))
        .unwrap();
    assert_eq!(batched.stats().barriers(), 1);
    assert_eq!(
        batched.stats().lines_cleaned(),
        64 * 64 * lines_per(&batched)
    );
    assert_eq!(
        one_by_one.stats().lines_cleaned(),
        64 * 64 * lines_per(&batched)
    );
    // 64-line buffers, 64 KiB max segments: one segment each.
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
    let dev = device(ops());
    // A 100-byte buffer cannot fill whole granules.
    let err = dev
        .map::<FromDevice, _>(vec![7u8; 100].into_boxed_slice())
        .unwrap_err();
    assert!(matches!(
        err.kind(),
        MapErrorKind::SharesCacheLine {
            len: 100,
            granule: GRANULE,
            ..
        }
    ));
    assert_eq!(&*err.into_buffer(), &[7u8; 100][..]);
    assert_eq!(dev.stats().barriers(), 0);
    assert_eq!(dev.stats().lines_cleaned(), 0);
}
