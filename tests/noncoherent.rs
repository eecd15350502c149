//! The direct, non-coherent backend on the simulated write-back cache: with
//! the real maintenance every byte arrives, in every direction; with a
//! deliberately broken maintenance (no clean, no invalidate, no barrier)
//! the simulation shows the stale bytes a real machine would.

use dmacap::arch::{CacheMaintenance, CacheRange, lines_in};
use dmacap::backend::noncoherent::DirectNonCoherent;
use dmacap::sim::{SimCache, SimMemory, SimPlatform};
use dmacap::{Device, DeviceConfig, MapErrorKind};

/// A device on the simulated RAM whose cache maintenance is `C`.
type NcDevice<C> = Device<DirectNonCoherent<SimMemory, C>>;

/// The simulated cache's granule (64 bytes), which the wrappers keep.
type Granule = <SimCache as CacheMaintenance>::Granule;

const LEN: usize = 256;
/// The RAM of each test: small, so that Miri runs quickly.
const RAM: usize = 16 * 1024;

/// A fresh non-coherent platform. Every test of a broken cache gets its
/// own: operations a broken cache leaves queued must never be completed by
/// somebody else's barrier.
fn platform() -> SimPlatform {
    SimPlatform::noncoherent(RAM)
}

/// A device on `sim` whose maintenance is the simulated cache wrapped by
/// `wrap`.
fn device_with<C: CacheMaintenance>(sim: &SimPlatform, wrap: fn(SimCache) -> C) -> NcDevice<C> {
    let mem = sim.memory().clone();
    let cache = mem.cache().expect("non-coherent RAM");
    Device::new(
        DirectNonCoherent::new(mem, wrap(cache)),
        DeviceConfig::new(),
    )
}

/// `LEN` bytes of a recognisable pattern.
fn pattern(seed: u8) -> Vec<u8> {
    (0..LEN).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect()
}

// ---------------------------------------------------------------------------
// Deliberately broken maintenance, to show that the simulation catches it.
// ---------------------------------------------------------------------------

/// Issues no clean at all (but reports the lines as if it had).
struct NoClean(SimCache);

// SAFETY: deliberately broken: it breaks promise 1 (cleaning) and is used
// only to show that the simulated cache catches the missing clean. It never
// touches memory itself; what it forwards keeps `SimCache`'s promises.
unsafe impl CacheMaintenance for NoClean {
    type Granule = Granule;

    fn line_size(&self) -> usize {
        self.0.line_size()
    }

    unsafe fn clean(&self, r: CacheRange) -> usize {
        lines_in(r.cpu_addr(), r.len, self.line_size())
    }

    unsafe fn invalidate(&self, r: CacheRange) -> usize {
        // SAFETY: forwarded with the caller's promises.
        unsafe { self.0.invalidate(r) }
    }

    fn complete(&self) {
        self.0.complete();
    }
}

/// Issues no invalidate at all.
struct NoInvalidate(SimCache);

// SAFETY: deliberately broken: it breaks promise 2 (invalidating) and is
// used only to show that the simulated cache catches the missing
// invalidate. What it forwards keeps `SimCache`'s promises.
unsafe impl CacheMaintenance for NoInvalidate {
    type Granule = Granule;

    fn line_size(&self) -> usize {
        self.0.line_size()
    }

    unsafe fn clean(&self, r: CacheRange) -> usize {
        // SAFETY: forwarded with the caller's promises.
        unsafe { self.0.clean(r) }
    }

    unsafe fn invalidate(&self, r: CacheRange) -> usize {
        lines_in(r.cpu_addr(), r.len, self.line_size())
    }

    fn complete(&self) {
        self.0.complete();
    }
}

/// Issues every operation but never completes one: the missing barrier.
struct NoComplete(SimCache);

// SAFETY: deliberately broken: it breaks promises 1 and 2 (nothing is ever
// completed) and is used only to show that the simulated cache catches the
// missing barrier. The invalidates it leaves queued are never applied:
// nothing else completes on its RAM (each test has its own platform).
unsafe impl CacheMaintenance for NoComplete {
    type Granule = Granule;

    fn line_size(&self) -> usize {
        self.0.line_size()
    }

    unsafe fn clean(&self, r: CacheRange) -> usize {
        // SAFETY: forwarded with the caller's promises.
        unsafe { self.0.clean(r) }
    }

    unsafe fn invalidate(&self, r: CacheRange) -> usize {
        // SAFETY: forwarded with the caller's promises (it is never
        // completed, so the bytes are never written).
        unsafe { self.0.invalidate(r) }
    }

    fn complete(&self) {}
}

// ---------------------------------------------------------------------------
// The flows, generic over the maintenance.
// ---------------------------------------------------------------------------

/// The CPU fills a transmit buffer and maps it; returns what the device
/// reads.
fn to_device<C: CacheMaintenance<Granule = Granule>>(
    sim: &SimPlatform,
    dev: &NcDevice<C>,
) -> Vec<u8> {
    let mut tx = sim.memory().alloc_slice_aligned::<u8>(LEN, 64).unwrap();
    tx.copy_from_slice(&pattern(0xa5));
    let tx = dev.map_to_device(tx).unwrap();
    let mut seen = vec![0u8; LEN];
    sim.device(dev).read(tx.dma_addr(), &mut seen).unwrap();
    // SAFETY: the simulated read has returned: the device is finished.
    let tx = unsafe { tx.unmap() };
    // The CPU's own view is never disturbed by a transmit.
    assert_eq!(&tx[..], &pattern(0xa5)[..]);
    seen
}

/// What the CPU saw of two received packets.
#[derive(Debug, PartialEq)]
struct Received {
    first: Vec<u8>,
    second: Vec<u8>,
}

/// A receive buffer the CPU dirtied with 0xee before mapping; the device
/// writes two packets into it, recycled through `sync_for_device`.
/// `evict` makes the cache write dirty lines back after each device write.
fn from_device<C: CacheMaintenance<Granule = Granule>>(
    sim: &SimPlatform,
    dev: &NcDevice<C>,
    evict: bool,
) -> Received {
    let engine = sim.device(dev);
    let mut rx = sim.memory().alloc_slice_aligned::<u8>(LEN, 64).unwrap();
    rx.fill(0xee);
    let rx = dev.map_from_device(rx).unwrap();

    engine.write(rx.dma_addr(), &pattern(1)).unwrap();
    if evict {
        sim.memory().evict_dirty();
    }
    // SAFETY: the simulated write has returned: the device is finished.
    let rx = unsafe { rx.sync_for_cpu() };
    let first = rx.contents().to_vec();

    let rx = rx.sync_for_device();
    engine.write(rx.dma_addr(), &pattern(2)).unwrap();
    if evict {
        sim.memory().evict_dirty();
    }
    // SAFETY: as above.
    let rx = unsafe { rx.sync_for_cpu() };
    let second = rx.contents().to_vec();
    drop(rx.unmap());
    Received { first, second }
}

/// What each side saw of a bidirectional exchange.
#[derive(Debug, PartialEq)]
struct Exchange {
    device_saw_request: Vec<u8>,
    cpu_saw_reply: Vec<u8>,
    device_saw_second_request: Vec<u8>,
}

/// The CPU writes a request, the device reads it and writes a reply in
/// place, the CPU reads the reply and writes a second request.
fn bidirectional<C: CacheMaintenance<Granule = Granule>>(
    sim: &SimPlatform,
    dev: &NcDevice<C>,
) -> Exchange {
    let engine = sim.device(dev);
    let mut buf = sim.memory().alloc_slice_aligned::<u8>(LEN, 64).unwrap();
    buf.copy_from_slice(&pattern(0x10));
    let buf = dev.map_bidirectional(buf).unwrap();

    let mut device_saw_request = vec![0u8; LEN];
    engine
        .read(buf.dma_addr(), &mut device_saw_request)
        .unwrap();
    engine.write(buf.dma_addr(), &pattern(0x20)).unwrap();
    // SAFETY: the simulated accesses have returned.
    let mut buf = unsafe { buf.sync_for_cpu() };
    let cpu_saw_reply = buf.contents().to_vec();

    buf.contents_mut().copy_from_slice(&pattern(0x30));
    let buf = buf.sync_for_device();
    let mut device_saw_second_request = vec![0u8; LEN];
    engine
        .read(buf.dma_addr(), &mut device_saw_second_request)
        .unwrap();
    // SAFETY: as above.
    drop(unsafe { buf.unmap() });
    Exchange {
        device_saw_request,
        cpu_saw_reply,
        device_saw_second_request,
    }
}

/// The device writes a whole receive buffer; the CPU takes back a prefix
/// that ends inside a cache line, then the rest by unmapping. Returns the
/// prefix the CPU saw and the whole buffer after unmap.
fn prefix<C: CacheMaintenance<Granule = Granule>>(
    sim: &SimPlatform,
    dev: &NcDevice<C>,
) -> (Vec<u8>, Vec<u8>) {
    let rx = sim.memory().alloc_slice_aligned::<u8>(LEN, 64).unwrap();
    let rx = dev.map_from_device(rx).unwrap();
    sim.device(dev).write(rx.dma_addr(), &pattern(3)).unwrap();
    // SAFETY: the simulated write has returned.
    let rx = unsafe { rx.sync_prefix_for_cpu(100) }.unwrap();
    let seen = rx.contents().to_vec();
    let whole = rx.unmap().to_vec();
    (seen, whole)
}

// ---------------------------------------------------------------------------
// The real maintenance: every byte arrives.
// ---------------------------------------------------------------------------

#[test]
fn to_device_device_reads_what_the_cpu_wrote() {
    let sim = platform();
    let dev = sim.noncoherent_device();
    assert!(!dev.is_coherent());
    assert_eq!(to_device(&sim, &dev), pattern(0xa5));
}

#[test]
fn from_device_cpu_reads_both_packets() {
    let sim = platform();
    let dev = sim.noncoherent_device();
    let want = Received {
        first: pattern(1),
        second: pattern(2),
    };
    assert_eq!(from_device(&sim, &dev, false), want);
    // Evictions find nothing dirty after the clean at map time.
    assert_eq!(from_device(&sim, &dev, true), want);
    assert_eq!(sim.memory().allocated_bytes(), 0);
}

#[test]
fn bidirectional_both_sides_read_what_the_other_wrote() {
    let sim = platform();
    let dev = sim.noncoherent_device();
    assert_eq!(
        bidirectional(&sim, &dev),
        Exchange {
            device_saw_request: pattern(0x10),
            cpu_saw_reply: pattern(0x20),
            device_saw_second_request: pattern(0x30),
        }
    );
}

#[test]
fn prefix_sync_shows_the_prefix_and_unmap_the_rest() {
    let sim = platform();
    let dev = sim.noncoherent_device();
    let (seen, whole) = prefix(&sim, &dev);
    assert_eq!(seen, &pattern(3)[..100]);
    assert_eq!(whole, pattern(3));
    // The prefix touches lines 0 and 1; unmap invalidates lines 1 to 3
    // (line 1 again: bytes 100 to 127 were not synced yet).
    assert_eq!(dev.stats().lines_invalidated(), 2 + 3);
}

#[test]
fn bidirectional_prefix_keeps_the_cpu_edit_and_the_device_tail() {
    let sim = platform();
    let dev = sim.noncoherent_device();
    let buf = sim.memory().alloc_slice_aligned::<u8>(LEN, 64).unwrap();
    let buf = dev.map_bidirectional(buf).unwrap();
    sim.device(&dev).write(buf.dma_addr(), &pattern(4)).unwrap();
    // SAFETY: the simulated write has returned.
    let mut buf = unsafe { buf.sync_prefix_for_cpu(100) }.unwrap();
    // The CPU edits the prefix, dirtying part of line 1 (bytes 64 to 99),
    // which the invalidate of the tail at unmap covers only in part.
    buf.contents_mut().fill(0x77);
    let whole = buf.unmap();
    let mut want = pattern(4);
    want[..100].fill(0x77);
    assert_eq!(&whole[..], &want[..]);
}

#[test]
fn counters_for_one_receive() {
    let sim = platform();
    let dev = sim.noncoherent_device();
    let rx = sim.memory().alloc_slice_aligned::<u8>(LEN, 64).unwrap();
    let rx = dev.map_from_device(rx).unwrap();
    let s = dev.stats();
    // Map: clean 4 lines, one barrier.
    assert_eq!(
        (s.lines_cleaned(), s.lines_invalidated(), s.barriers()),
        (4, 0, 1)
    );
    sim.device(&dev).write(rx.dma_addr(), &pattern(5)).unwrap();
    // SAFETY: the simulated write has returned.
    let rx = unsafe { rx.sync_for_cpu() };
    // sync_for_cpu: invalidate 4 lines, one barrier.
    assert_eq!(
        (s.lines_cleaned(), s.lines_invalidated(), s.barriers()),
        (4, 4, 2)
    );
    assert_eq!(rx.contents(), &pattern(5)[..]);
    drop(rx.unmap());
    // Unmap of a CPU-owned handle: nothing left to do.
    assert_eq!(
        (s.lines_cleaned(), s.lines_invalidated(), s.barriers()),
        (4, 4, 2)
    );
}

#[test]
fn a_buffer_sharing_a_cache_line_is_refused_and_given_back() {
    let sim = platform();
    let dev = sim.noncoherent_device();
    let mem = sim.memory();

    // Aligned start, length not a multiple of the line.
    let short = mem.alloc_slice_aligned::<u8>(100, 64).unwrap();
    let before = mem.allocated_bytes();
    let err = dev.map_from_device(short).unwrap_err();
    assert!(matches!(
        err.kind(),
        MapErrorKind::SharesCacheLine {
            len: 100,
            granule: 64,
            ..
        }
    ));
    let short = err.into_buffer();
    assert_eq!(short.len(), 100);
    assert_eq!(mem.allocated_bytes(), before);

    // A whole number of lines, starting inside one.
    let pad = mem.alloc_slice::<u8>(1).unwrap();
    let shifted = mem.alloc_slice::<u8>(LEN).unwrap();
    let cpu = shifted.as_ptr() as usize;
    assert_ne!(cpu % 64, 0);
    let phys = dmacap::platform::PhysLookup::phys_of(
        mem,
        core::ptr::NonNull::new(cpu as *mut u8).unwrap(),
        LEN,
    )
    .unwrap();
    let before = mem.allocated_bytes();
    let (kind, shifted) = dev.map_to_device(shifted).unwrap_err().into_parts();
    assert_eq!(
        kind,
        MapErrorKind::SharesCacheLine {
            phys,
            len: LEN,
            granule: 64
        }
    );
    assert_eq!(shifted.as_ptr() as usize, cpu);
    assert_eq!(mem.allocated_bytes(), before);
    assert_eq!(dev.stats().lines_cleaned(), 0);
    assert_eq!(dev.stats().barriers(), 0);
    drop((pad, short, shifted));
    assert_eq!(mem.allocated_bytes(), 0);
}

#[test]
fn a_coherent_device_on_noncoherent_ram_sees_stale_bytes() {
    // Declaring a non-coherent device coherent skips the maintenance.
    let sim = platform();
    let dev = sim.coherent_device();
    let mut tx = sim.memory().alloc_slice::<u8>(LEN).unwrap();
    tx.copy_from_slice(&pattern(6));
    let tx = dev.map_to_device(tx).unwrap();
    let mut seen = vec![0u8; LEN];
    sim.device(&dev).read(tx.dma_addr(), &mut seen).unwrap();
    assert_eq!(seen, vec![0; LEN]);
    // SAFETY: the simulated read has returned.
    drop(unsafe { tx.unmap() });
}

#[test]
#[should_panic(expected = "needs non-coherent RAM")]
fn a_noncoherent_device_needs_noncoherent_ram() {
    SimPlatform::new(RAM).noncoherent_device();
}

// ---------------------------------------------------------------------------
// Broken maintenance: the simulation shows the stale bytes.
// ---------------------------------------------------------------------------

#[test]
fn no_clean_device_reads_stale_memory() {
    let sim = platform();
    let dev = device_with(&sim, NoClean);
    assert_eq!(to_device(&sim, &dev), vec![0; LEN]);
    // The counters cannot tell: the broken cache claims the lines.
    assert_eq!(dev.stats().lines_cleaned(), 4);
}

#[test]
fn no_clean_bidirectional_device_reads_stale_requests() {
    let sim = platform();
    let dev = device_with(&sim, NoClean);
    let got = bidirectional(&sim, &dev);
    // The device never sees a request; the CPU still reads the reply (the
    // invalidate discards its dirty request lines).
    assert_eq!(got.device_saw_request, vec![0; LEN]);
    assert_eq!(got.cpu_saw_reply, pattern(0x20));
    assert_eq!(got.device_saw_second_request, pattern(0x20));
}

#[test]
fn no_clean_receive_is_corrupted_by_eviction() {
    // Without eviction the missing clean goes unnoticed: the invalidate
    // discards the dirty lines the CPU left.
    let sim = platform();
    let dev = device_with(&sim, NoClean);
    assert_eq!(
        from_device(&sim, &dev, false),
        Received {
            first: pattern(1),
            second: pattern(2),
        }
    );

    // With an eviction after the device's write, the CPU's stale 0xee
    // lands on top of the packet, and the CPU reads its own old data.
    let sim = platform();
    let dev = device_with(&sim, NoClean);
    let got = from_device(&sim, &dev, true);
    assert_eq!(got.first, vec![0xee; LEN]);
    // The recycled buffer has no dirty lines left: the second packet
    // survives.
    assert_eq!(got.second, pattern(2));
}

#[test]
fn no_invalidate_cpu_reads_stale_data() {
    let sim = platform();
    let dev = device_with(&sim, NoInvalidate);
    assert_eq!(
        from_device(&sim, &dev, false),
        Received {
            first: vec![0xee; LEN],
            second: vec![0xee; LEN],
        }
    );
    // Transmit needs no invalidate: it still works.
    assert_eq!(to_device(&sim, &dev), pattern(0xa5));
}

#[test]
fn no_invalidate_bidirectional_cpu_reads_its_own_request() {
    let sim = platform();
    let dev = device_with(&sim, NoInvalidate);
    assert_eq!(
        bidirectional(&sim, &dev),
        Exchange {
            device_saw_request: pattern(0x10),
            cpu_saw_reply: pattern(0x10),
            device_saw_second_request: pattern(0x30),
        }
    );
}

#[test]
fn no_invalidate_prefix_is_stale() {
    let sim = platform();
    let dev = device_with(&sim, NoInvalidate);
    let (seen, whole) = prefix(&sim, &dev);
    assert_eq!(seen, vec![0; 100]);
    assert_eq!(whole, vec![0; LEN]);
}

#[test]
fn no_complete_transmit_is_stale() {
    let sim = platform();
    let dev = device_with(&sim, NoComplete);
    assert_eq!(to_device(&sim, &dev), vec![0; LEN]);
    // Everything was issued; nothing was completed.
    assert!(dev.backend().cache().0.pending() > 0);
}

#[test]
fn no_complete_receive_is_stale() {
    let sim = platform();
    let dev = device_with(&sim, NoComplete);
    assert_eq!(
        from_device(&sim, &dev, false),
        Received {
            first: vec![0xee; LEN],
            second: vec![0xee; LEN],
        }
    );
}

#[test]
fn no_complete_bidirectional_is_stale_both_ways() {
    let sim = platform();
    let dev = device_with(&sim, NoComplete);
    assert_eq!(
        bidirectional(&sim, &dev),
        Exchange {
            device_saw_request: vec![0; LEN],
            cpu_saw_reply: pattern(0x10),
            device_saw_second_request: pattern(0x20),
        }
    );
}

/// The ready-made strict IOMMU over a non-coherent cache moves bytes both
/// ways and gives its IOVA pages back.
#[test]
fn ready_made_noncoherent_iommu_moves_bytes() {
    let sim = SimPlatform::noncoherent(1 << 20);
    let dev = sim.noncoherent_iommu_device(dmacap::DeviceConfig::new());
    let free = dev.backend().translation().free_pages();
    let mut tx = sim.memory().alloc_slice_aligned::<u8>(128, 64).unwrap();
    tx.fill(0x3c);
    let tx = dev.map_to_device(tx).unwrap();
    let rx = dev
        .map_from_device(sim.memory().alloc_slice_aligned::<u8>(128, 64).unwrap())
        .unwrap();
    sim.device(&dev)
        .copy(tx.dma_addr(), rx.dma_addr(), 128)
        .unwrap();
    // SAFETY: the simulated copy returned: the device has finished.
    let rx = unsafe { rx.sync_for_cpu() };
    assert!(rx.contents().iter().all(|&b| b == 0x3c));
    drop(rx.unmap());
    // SAFETY: as above.
    drop(unsafe { tx.unmap() });
    assert_eq!(dev.backend().translation().free_pages(), free);
}
