//! Bounce buffering through a `Swiotlb` on the simulated platform: buffers a
//! device cannot use where they lie are copied through the pool in every
//! direction with the right bytes, neighbours and stale data never leak,
//! partial syncs copy only what they say, `min_align_mask` is kept, and a
//! full pool refuses cleanly, giving the buffer back.

use core::ptr::NonNull;
use std::sync::Arc;

use dmacap::backend::Backend;
use dmacap::backend::bounce::{MAX_MAPPING_SIZE, SLOT_SIZE, Swiotlb};
use dmacap::backend::compose::{
    BounceReason, Coherency, Coherent, Composed, NoBounce, NonCoherent, PhysJoin,
};
use dmacap::backend::direct::{Direct, DmaWindows};
use dmacap::buffer::CacheSafe;
use dmacap::sim::{BusTranslate, SimBuffer, SimCache, SimDevice, SimMemory};
use dmacap::{
    Device, DeviceConfig, Direction, DmaAddr, DmaBuffer, MapErrorKind, Mapped, Ownership, PhysAddr,
    RawBuffer,
};

/// RAM from just below 4 GiB: the first MiB is reachable by a 32-bit
/// device, the second is not.
const BASE: u64 = 0xfff0_0000;
const RAM: usize = 2 << 20;
const FOUR_GIB: u64 = 1 << 32;
/// The default pool: 32 slots.
const POOL: usize = 64 * 1024;
const LEN: usize = 300;

type Bounced<K, Bo = Swiotlb> = Device<Composed<SimMemory, Direct, K, Bo>>;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

/// A 32-bit device's view of RAM straddling 4 GiB: a pool of `pool_bytes`
/// at the bottom, and the rest of the low part taken (the returned filler),
/// so that every later allocation lies above 4 GiB.
fn low_pool(mem: &SimMemory, pool_bytes: usize) -> (Swiotlb, SimBuffer<[u8]>) {
    let pool = mem.swiotlb(pool_bytes, 1).unwrap();
    assert_eq!(pool.phys(), PhysAddr::new(BASE));
    let filler = mem
        .alloc_slice::<u8>((FOUR_GIB - BASE) as usize - pool_bytes)
        .unwrap();
    (pool, filler)
}

/// `len` bytes above 4 GiB, holding `fill`.
fn high(mem: &SimMemory, fill: &[u8]) -> SimBuffer<[u8]> {
    let mut b = mem.alloc_slice::<u8>(fill.len()).unwrap();
    assert!(mem.phys_of_buffer(&b).as_u64() >= FOUR_GIB);
    b.copy_from_slice(fill);
    b
}

/// Coherent RAM straddling 4 GiB and a 32-bit coherent device on it that
/// bounces through a pool of `pool_bytes`.
fn coherent_rig(
    pool_bytes: usize,
    cfg: DeviceConfig,
) -> (SimMemory, Bounced<Coherent>, SimBuffer<[u8]>) {
    let mem = SimMemory::with_base(PhysAddr::new(BASE), RAM);
    let (pool, low) = low_pool(&mem, pool_bytes);
    let dev = Device::new(
        Composed::from_parts(
            mem.clone(),
            Direct::new(DmaWindows::identity()),
            Coherent,
            pool,
        ),
        cfg,
    );
    (mem, dev, low)
}

/// The same on non-coherent RAM, with maintenance by the simulated cache.
fn noncoherent_rig(
    pool_bytes: usize,
    cfg: DeviceConfig,
) -> (SimMemory, Bounced<NonCoherent<SimCache>>, SimBuffer<[u8]>) {
    let mem = SimMemory::noncoherent(PhysAddr::new(BASE), RAM);
    let (pool, low) = low_pool(&mem, pool_bytes);
    let cache = mem.cache().unwrap();
    let dev = Device::new(
        Composed::from_parts(
            mem.clone(),
            Direct::new(DmaWindows::identity()),
            NonCoherent(cache),
            pool,
        ),
        cfg,
    );
    (mem, dev, low)
}

/// Whether `dma` (identity-mapped) lies in `pool`.
fn in_pool(pool: &Swiotlb, dma: DmaAddr, len: usize) -> bool {
    pool.contains(PhysAddr::new(dma.as_u64()), len)
}

/// The reason a handle's mapping was bounced, read from its state.
fn reason_of<D, S, Buf, K>(
    h: &Mapped<'_, D, S, Buf, Composed<SimMemory, Direct, K, Swiotlb>>,
) -> Option<BounceReason>
where
    D: Direction,
    S: Ownership,
    Buf: DmaBuffer,
    K: Coherency,
    K::Phys: PhysJoin<PhysAddr>,
{
    h.backend_state().bounce().as_ref().map(|s| s.reason())
}

/// ToDevice, FromDevice and Bidirectional round trips of buffers above
/// 4 GiB on a 32-bit device, through the pool.
fn round_trips<B>(mem: &SimMemory, dev: &Device<B>, pool: impl Fn() -> (usize, usize))
where
    B: Backend + BusTranslate,
    [u8]: CacheSafe<B::Granule>,
{
    let engine = SimDevice::new(dev, mem.clone());
    let (free, total) = pool();
    assert_eq!(free, total);

    // ToDevice: the device reads the copy, below 4 GiB.
    let tx = dev.map_to_device(high(mem, &pattern(LEN, 1))).unwrap();
    assert!(tx.dma_addr().as_u64() + (LEN as u64) <= FOUR_GIB);
    assert_eq!(pool().0, total - 1);
    let mut got = vec![0; LEN];
    engine.read(tx.dma_addr(), &mut got).unwrap();
    assert_eq!(got, pattern(LEN, 1));
    // SAFETY: the simulated read returned.
    let tx = unsafe { tx.unmap() };
    assert_eq!(&tx[..], &pattern(LEN, 1)[..]);
    assert_eq!(pool().0, total);

    // FromDevice: what the device wrote into the copy reaches the buffer.
    let rx = dev.map_from_device(high(mem, &[0; LEN])).unwrap();
    engine.write(rx.dma_addr(), &pattern(LEN, 2)).unwrap();
    // SAFETY: the simulated write returned.
    let rx = unsafe { rx.sync_for_cpu() };
    assert_eq!(rx.contents(), &pattern(LEN, 2)[..]);
    assert_eq!(&rx.unmap()[..], &pattern(LEN, 2)[..]);

    // Bidirectional: both ways, twice, through one mapping.
    let bi = dev.map_bidirectional(high(mem, &pattern(LEN, 3))).unwrap();
    let dma = bi.dma_addr();
    engine.read(dma, &mut got).unwrap();
    assert_eq!(got, pattern(LEN, 3));
    engine.write(dma, &pattern(LEN, 4)).unwrap();
    // SAFETY: the simulated accesses returned.
    let mut bi = unsafe { bi.sync_for_cpu() };
    assert_eq!(bi.contents(), &pattern(LEN, 4)[..]);
    bi.contents_mut().copy_from_slice(&pattern(LEN, 5));
    let bi = bi.sync_for_device();
    assert_eq!(bi.dma_addr(), dma);
    engine.read(dma, &mut got).unwrap();
    assert_eq!(got, pattern(LEN, 5));
    engine.write(dma, &pattern(LEN, 6)).unwrap();
    // SAFETY: as above.
    let bi = unsafe { bi.unmap() };
    assert_eq!(&bi[..], &pattern(LEN, 6)[..]);

    assert_eq!(dev.stats().bounced(), 3);
    assert_eq!(dev.stats().bounced_bytes(), 3 * LEN);
    assert_eq!(pool(), (total, total));
}

// (a), (f)
#[test]
fn beyond_mask_is_bounced_coherent() {
    let (mem, dev, _low) = coherent_rig(POOL, DeviceConfig::new());
    let pool = dev.backend().bounce();
    round_trips(&mem, &dev, || (pool.free_slots(), pool.total_slots()));

    // The state says why, and the address is in the pool.
    let tx = dev.map_to_device(high(&mem, &[9; 10])).unwrap();
    assert_eq!(reason_of(&tx), Some(BounceReason::Unreachable));
    assert!(in_pool(pool, tx.dma_addr(), 10));
    // SAFETY: no device access was started.
    drop(unsafe { tx.unmap() });
    assert_eq!(pool.used_slots(), 0);
}

// (a), (f) with cache maintenance of the slot.
#[test]
fn beyond_mask_is_bounced_noncoherent() {
    let (mem, dev, _low) = noncoherent_rig(POOL, DeviceConfig::new());
    let pool = dev.backend().bounce();
    round_trips(&mem, &dev, || (pool.free_slots(), pool.total_slots()));
    assert!(dev.stats().lines_cleaned() > 0);
    assert!(dev.stats().lines_invalidated() > 0);
}

/// A raw byte range inside a larger simulated buffer, so that a test can
/// watch the bytes around it: the buffer's parts, and the sub-range.
struct Window {
    parts: Option<(NonNull<[u8]>, SimMemory)>,
    base: NonNull<u8>,
}

impl Window {
    /// `block` (filled with `fill`), given up so that its bytes are only
    /// reached through raw pointers from now on.
    fn new(mut block: SimBuffer<[u8]>, fill: u8) -> Self {
        block.fill(fill);
        let (ptr, keep) = block.into_raw_parts();
        Self {
            base: ptr.cast(),
            parts: Some((ptr, keep)),
        }
    }

    /// `len` bytes at `at` as a mappable buffer.
    ///
    /// # Safety
    ///
    /// The range is inside the block and the caller touches it only
    /// through the returned buffer until it is given back.
    unsafe fn sub(&self, at: usize, len: usize) -> RawBuffer {
        // SAFETY: inside the block (caller).
        let p = unsafe { self.base.add(at) };
        // SAFETY: valid, initialised, touched by nothing else (caller), and
        // the block stays allocated until `self` is dropped, after the
        // buffer came back.
        unsafe { RawBuffer::new(NonNull::slice_from_raw_parts(p, len)) }
    }

    /// The bytes `[at, at + len)`, read through the raw pointer.
    fn read(&self, at: usize, len: usize) -> Vec<u8> {
        // SAFETY: the tests read only ranges inside the block that no
        // mapping's CPU view borrows at the time.
        unsafe { core::slice::from_raw_parts(self.base.add(at).as_ptr(), len) }.to_vec()
    }

    /// Writes `byte` over `[at, at + len)`.
    fn write(&self, at: usize, len: usize, byte: u8) {
        // SAFETY: as for `read`: the tests write only bytes of the block
        // outside every mapped range.
        unsafe { self.base.add(at).write_bytes(byte, len) }
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        if let Some((ptr, keep)) = self.parts.take() {
            // SAFETY: the parts of one `into_raw_parts`, and every sub-range
            // buffer has been given back.
            drop(unsafe { SimBuffer::from_raw_parts(ptr, keep) });
        }
    }
}

// (b)
#[test]
fn misaligned_bytes_on_noncoherent_are_bounced_and_neighbours_kept() {
    // Everything below 4 GiB here: only the cache lines force the bounce.
    let (mem, dev, low) = noncoherent_rig(POOL, DeviceConfig::new());
    drop(low);
    let engine = SimDevice::new(&dev, mem.clone());
    let pool = dev.backend().bounce();
    let block = mem.alloc_slice_aligned::<u8>(128, 64).unwrap();
    assert!(mem.phys_of_buffer(&block).as_u64() < FOUR_GIB);
    let w = Window::new(block, 0x5a);
    let (at, len) = (10, 30);

    // Without a pool the same buffer is refused.
    let plain = Device::new(
        Composed::from_parts(
            mem.clone(),
            Direct::identity(),
            NonCoherent(mem.cache().unwrap()),
            NoBounce,
        ),
        DeviceConfig::new(),
    );
    // SAFETY: inside the block, used only through the buffer.
    let err = plain
        .map_from_device(unsafe { w.sub(at, len) })
        .unwrap_err();
    assert!(matches!(err.kind(), MapErrorKind::SharesCacheLine { .. }));
    let _back: RawBuffer = err.into_buffer();

    // FromDevice: the device writes the copy while the CPU writes the
    // neighbours in the same lines; neither loses.
    // SAFETY: as above.
    let rx = dev.map_from_device(unsafe { w.sub(at, len) }).unwrap();
    assert_eq!(reason_of(&rx), Some(BounceReason::SharesCacheLine));
    assert!(in_pool(pool, rx.dma_addr(), len));
    w.write(0, at, 0x77);
    w.write(at + len, 128 - at - len, 0x88);
    engine.fill(rx.dma_addr(), 0xab, len).unwrap();
    // A real cache may write dirty lines back at any moment.
    mem.evict_dirty();
    // SAFETY: the simulated write returned.
    let rx = unsafe { rx.sync_for_cpu() };
    assert_eq!(rx.contents(), &[0xab; 30][..]);
    let _back: RawBuffer = rx.unmap();
    assert_eq!(w.read(0, at), vec![0x77; at]);
    assert_eq!(w.read(at, len), vec![0xab; len]);
    assert_eq!(w.read(at + len, 128 - at - len), vec![0x88; 128 - at - len]);

    // ToDevice: the device reads what the CPU wrote, neighbours untouched.
    w.write(at, len, 0x3c);
    // SAFETY: as above.
    let tx = dev.map_to_device(unsafe { w.sub(at, len) }).unwrap();
    w.write(0, at, 0x11);
    let mut got = vec![0; len];
    engine.read(tx.dma_addr(), &mut got).unwrap();
    assert_eq!(got, vec![0x3c; len]);
    // SAFETY: the simulated read returned.
    let _back: RawBuffer = unsafe { tx.unmap() };
    assert_eq!(w.read(0, at), vec![0x11; at]);
    assert_eq!(w.read(at + len, 128 - at - len), vec![0x88; 128 - at - len]);

    assert_eq!(dev.stats().bounced(), 2);
    assert_eq!(pool.free_slots(), pool.total_slots());
}

// (c)
#[test]
fn partial_sync_copies_only_the_prefix() {
    let (mem, dev, _low) = coherent_rig(POOL, DeviceConfig::new());
    let engine = SimDevice::new(&dev, mem.clone());
    let block = mem.alloc_slice::<u8>(256).unwrap();
    assert!(mem.phys_of_buffer(&block).as_u64() >= FOUR_GIB);
    let w = Window::new(block, 0x11);

    // SAFETY: the whole block, used only through the buffer.
    let rx = dev.map_from_device(unsafe { w.sub(0, 256) }).unwrap();
    engine.fill(rx.dma_addr(), 0x22, 256).unwrap();
    // SAFETY: the simulated write returned.
    let rx = unsafe { rx.sync_prefix_for_cpu(100) }.unwrap();
    assert_eq!(rx.contents(), &[0x22; 100][..]);
    // The tail of the original still holds what it held: only the prefix
    // was copied back.
    assert_eq!(w.read(100, 156), vec![0x11; 156]);
    // Unmap takes the rest back.
    let _back: RawBuffer = rx.unmap();
    assert_eq!(w.read(0, 256), vec![0x22; 256]);
    assert_eq!(dev.backend().bounce().used_slots(), 0);
}

// (d)
#[test]
fn min_align_mask_keeps_the_low_bits() {
    let cfg = DeviceConfig::new().min_align_mask(0xfff);
    let (mem, dev, _low) = coherent_rig(POOL, cfg);
    let engine = SimDevice::new(&dev, mem.clone());
    let pool = dev.backend().bounce();
    let block = mem.alloc_slice_aligned::<u8>(3 * 4096, 4096).unwrap();
    let block_phys = mem.phys_of_buffer(&block).as_u64();
    let w = Window::new(block, 0);

    let mut handles = Vec::new();
    for (i, &at) in [0x9a4usize, 0x1123, 0x2ffc].iter().enumerate() {
        let len = 100 + i;
        w.write(at, len, i as u8 + 1);
        // SAFETY: disjoint ranges of the block, used only through them.
        let tx = dev.map_to_device(unsafe { w.sub(at, len) }).unwrap();
        let orig = block_phys + at as u64;
        assert_eq!(tx.dma_addr().as_u64() & 0xfff, orig & 0xfff);
        assert!(in_pool(pool, tx.dma_addr(), len));
        // The original is found from the slot record.
        let bounce = PhysAddr::new(tx.dma_addr().as_u64());
        assert_eq!(pool.original_of(bounce), Some(PhysAddr::new(orig)));
        let mut got = vec![0; len];
        engine.read(tx.dma_addr(), &mut got).unwrap();
        assert_eq!(got, vec![i as u8 + 1; len]);
        handles.push(tx);
    }
    for tx in handles {
        // SAFETY: the simulated reads returned.
        let _back: RawBuffer = unsafe { tx.unmap() };
    }
    assert_eq!(pool.free_slots(), pool.total_slots());
}

// (e), (f)
#[test]
fn exhaustion_and_oversize_refuse_cleanly() {
    let (mem, dev, _low) = coherent_rig(POOL, DeviceConfig::new());
    let pool = dev.backend().bounce();
    assert_eq!(pool.total_slots(), 32);
    let held: Vec<_> = (0..3)
        .map(|i| {
            dev.map_to_device(high(&mem, &pattern(16 * 1024, i)))
                .unwrap()
        })
        .collect();
    assert_eq!(pool.free_slots(), 8);

    // Ten slots are needed, eight are free: refused, buffer back, pool as
    // it was.
    let big = high(&mem, &pattern(20 * 1024, 9));
    let big_phys = mem.phys_of_buffer(&big);
    let err = dev.map_to_device(big).unwrap_err();
    assert_eq!(err.kind(), MapErrorKind::BouncePoolExhausted { slots: 10 });
    let big = err.into_buffer();
    assert_eq!(mem.phys_of_buffer(&big), big_phys);
    assert_eq!(&big[..], &pattern(20 * 1024, 9)[..]);
    assert_eq!(pool.free_slots(), 8);

    // Fill the pool; then even one byte is refused.
    let last = dev.map_to_device(high(&mem, &[1; 16 * 1024])).unwrap();
    assert_eq!(pool.free_slots(), 0);
    let err = dev.map_from_device(high(&mem, &[0; 1])).unwrap_err();
    assert_eq!(err.kind(), MapErrorKind::BouncePoolExhausted { slots: 1 });
    assert_eq!(pool.free_slots(), 0);

    // Over 256 KiB can never be bounced, full pool or not.
    drop(big);
    let huge = high(&mem, &vec![0; MAX_MAPPING_SIZE + 1]);
    let err = dev.map_to_device(huge).unwrap_err();
    assert_eq!(
        err.kind(),
        MapErrorKind::BounceTooLarge {
            len: MAX_MAPPING_SIZE + 1,
            max: MAX_MAPPING_SIZE
        }
    );
    assert_eq!(err.into_buffer().len(), MAX_MAPPING_SIZE + 1);
    assert_eq!(pool.free_slots(), 0);

    // SAFETY: no device access was started.
    drop(unsafe { last.unmap() });
    for h in held {
        // SAFETY: as above.
        drop(unsafe { h.unmap() });
    }
    assert_eq!(pool.free_slots(), pool.total_slots());
    assert_eq!(dev.stats().bounced(), 4);
}

/// The stale-data check on any coherency: the device's secret from one
/// mapping never reaches it through the next mapping of the same slots.
fn no_stale_data<B>(mem: &SimMemory, dev: &Device<B>, pool: &Swiotlb, check_padding: bool)
where
    B: Backend + BusTranslate,
    [u8]: CacheSafe<B::Granule>,
{
    let engine = SimDevice::new(dev, mem.clone());
    assert_eq!(pool.total_slots(), 2);
    // A: the device writes a secret over both slots.
    let a = dev.map_from_device(high(mem, &[0; 2 * SLOT_SIZE])).unwrap();
    let a_dma = a.dma_addr();
    engine.fill(a_dma, 0x5e, 2 * SLOT_SIZE).unwrap();
    // SAFETY: the simulated write returned.
    let a = unsafe { a.unmap() };
    assert!(a.iter().all(|&b| b == 0x5e));

    // B, to the device, in the same (only) slots: the device reads B.
    let b = dev.map_to_device(high(mem, &pattern(100, 7))).unwrap();
    assert_eq!(b.dma_addr(), a_dma);
    let mut got = vec![0; 100];
    engine.read(b.dma_addr(), &mut got).unwrap();
    assert_eq!(got, pattern(100, 7));
    if check_padding {
        // The rest of B's slot is zeroed padding, not the secret. A trusted
        // device is granted only the copy, so this is a rogue read of what
        // the bus would let it see.
        let mut pad = vec![0xff; SLOT_SIZE - 100];
        // SAFETY: the padding is pool memory no reference points to and
        // nothing writes while the mapping lives.
        unsafe { engine.read_unchecked(DmaAddr::new(a_dma.as_u64() + 100), &mut pad) }.unwrap();
        assert!(pad.iter().all(|&b| b == 0));
    }
    // SAFETY: the simulated read returned.
    drop(unsafe { b.unmap() });

    // C, from the device: before the device writes, the slot holds C's own
    // bytes (copied in at map time), not the secret.
    let c = dev.map_from_device(high(mem, &[0; 2 * SLOT_SIZE])).unwrap();
    assert_eq!(c.dma_addr(), a_dma);
    let mut seen = vec![0xff; 2 * SLOT_SIZE];
    engine.read(c.dma_addr(), &mut seen).unwrap();
    assert!(seen.iter().all(|&b| b == 0));
    // SAFETY: the simulated read returned.
    drop(unsafe { c.unmap() });
    assert_eq!(pool.free_slots(), 2);
}

// (g) A trusted device is given only the copy: the padding behind it is
// out of its reach and not zeroed (as in Linux's swiotlb); an untrusted one
// is given the whole zeroed region.
#[test]
fn stale_data_never_reaches_the_device_coherent() {
    let (mem, dev, _low) = coherent_rig(2 * SLOT_SIZE, DeviceConfig::new());
    no_stale_data(&mem, &dev, dev.backend().bounce(), false);
    let untrusted = DeviceConfig::new().trusted(false);
    let (mem, dev, _low) = coherent_rig(2 * SLOT_SIZE, untrusted);
    no_stale_data(&mem, &dev, dev.backend().bounce(), true);
}

// (g) with cache maintenance. The padding is zeroed in the CPU's view; the
// backend cleans only the copy, which is all a trusted device is given.
#[test]
fn stale_data_never_reaches_the_device_noncoherent() {
    let (mem, dev, _low) = noncoherent_rig(2 * SLOT_SIZE, DeviceConfig::new());
    no_stale_data(&mem, &dev, dev.backend().bounce(), false);
}

// (h)
#[test]
fn no_bounce_refuses_beyond_mask() {
    let mem = SimMemory::with_base(PhysAddr::new(BASE), RAM);
    let (_pool, _low) = low_pool(&mem, POOL);
    let dev = Device::new(
        Composed::from_parts(mem.clone(), Direct::identity(), Coherent, NoBounce),
        DeviceConfig::new(),
    );
    let buf = high(&mem, &pattern(LEN, 1));
    let phys = mem.phys_of_buffer(&buf);
    let err = dev.map_to_device(buf).unwrap_err();
    assert!(matches!(
        err.kind(),
        MapErrorKind::BeyondMask { len: LEN, .. }
    ));
    let buf = err.into_buffer();
    assert_eq!(mem.phys_of_buffer(&buf), phys);
    assert_eq!(&buf[..], &pattern(LEN, 1)[..]);
    assert_eq!(dev.stats().bounced(), 0);
}

/// A pool below the mask is needed: one the device cannot reach either
/// gives the translation's error, and nothing stays reserved.
#[test]
fn unreachable_pool_gives_the_slot_back() {
    let mem = SimMemory::with_base(PhysAddr::new(FOUR_GIB), 1 << 20);
    let pool = mem.swiotlb(POOL, 1).unwrap();
    let dev = Device::new(
        Composed::from_parts(mem.clone(), Direct::identity(), Coherent, pool),
        DeviceConfig::new(),
    );
    let err = dev
        .map_to_device(mem.alloc_slice::<u8>(10).unwrap())
        .unwrap_err();
    assert!(matches!(err.kind(), MapErrorKind::BeyondMask { .. }));
    let pool = dev.backend().bounce();
    assert_eq!(pool.free_slots(), pool.total_slots());
}

/// One pool shared (`Arc`) by two devices, used from several threads.
#[test]
fn shared_pool_across_devices_and_threads() {
    let mem = SimMemory::with_base(PhysAddr::new(BASE), RAM);
    let (pool, _low) = low_pool(&mem, 512 * 1024);
    let pool = Arc::new(pool);
    let make = || {
        Device::new(
            Composed::from_parts(mem.clone(), Direct::identity(), Coherent, Arc::clone(&pool)),
            DeviceConfig::new(),
        )
    };
    let devs: [Bounced<Coherent, Arc<Swiotlb>>; 2] = [make(), make()];
    let rounds = if cfg!(miri) { 3 } else { 50 };
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let (dev, mem) = (&devs[usize::from(t) % 2], mem.clone());
            s.spawn(move || {
                let engine = SimDevice::new(dev, mem.clone());
                for r in 0..rounds {
                    let len = 1 + (usize::from(t) * 700 + r * 333) % 5000;
                    let rx = dev.map_from_device(high(&mem, &vec![0; len])).unwrap();
                    engine.write(rx.dma_addr(), &pattern(len, t)).unwrap();
                    // SAFETY: the simulated write returned.
                    let rx = unsafe { rx.unmap() };
                    assert_eq!(&rx[..], &pattern(len, t)[..]);
                }
            });
        }
    });
    assert_eq!(
        devs[0].stats().bounced() + devs[1].stats().bounced(),
        4 * rounds
    );
    assert_eq!(pool.free_slots(), pool.total_slots());
}

/// The translation a bounced device uses is the plain direct one: the
/// pool changes nothing for buffers it can reach.
#[test]
fn reachable_buffers_are_not_bounced() {
    let (mem, dev, low) = coherent_rig(POOL, DeviceConfig::new());
    drop(low);
    let buf = mem.alloc_slice::<u8>(64).unwrap();
    let phys = mem.phys_of_buffer(&buf);
    assert!(phys.as_u64() < FOUR_GIB);
    assert!(
        dev.backend()
            .translation()
            .translate(phys, 64, dev.config())
            .is_ok()
    );
    let rx = dev.map_from_device(buf).unwrap();
    assert_eq!(rx.dma_addr().as_u64(), phys.as_u64());
    assert_eq!(reason_of(&rx), None);
    assert_eq!(dev.stats().bounced(), 0);
    // SAFETY: no device access was started.
    drop(unsafe { rx.unmap() });
}

/// An untrusted device is given the whole region (copy and padding): on a
/// non-coherent device the zeroed padding must be cleaned to memory too.
/// Needs `Composed::map` to clean the extent it maps, not only the copy.
#[test]
fn stale_padding_never_reaches_an_untrusted_noncoherent_device() {
    let cfg = DeviceConfig::new().trusted(false);
    let (mem, dev, _low) = noncoherent_rig(2 * SLOT_SIZE, cfg);
    no_stale_data(&mem, &dev, dev.backend().bounce(), true);
}

/// A map that fails after the slot was reserved (here: the pool itself is
/// beyond the mask) counts no bounce.
#[test]
fn failed_map_counts_no_bounce() {
    let mem = SimMemory::with_base(PhysAddr::new(FOUR_GIB), 1 << 20);
    let pool = mem.swiotlb(POOL, 1).unwrap();
    let dev = Device::new(
        Composed::from_parts(mem.clone(), Direct::identity(), Coherent, pool),
        DeviceConfig::new(),
    );
    let err = dev
        .map_to_device(mem.alloc_slice::<u8>(10).unwrap())
        .unwrap_err();
    assert!(matches!(err.kind(), MapErrorKind::BeyondMask { .. }));
    assert_eq!(dev.stats().bounced(), 0);
}

/// A bounced handle carries indices into its pool, not pointers: any
/// composition with a pool is at most 48 bytes over the `Box<[u8]>` it maps
/// (issue 10, target 6; it was 104).
#[test]
fn a_handle_through_a_bounce_pool_is_at_most_48_bytes_over_its_box() {
    use dmacap::backend::compose::{Coherent, Composed};
    use dmacap::backend::direct::Direct;
    use dmacap::backend::iommu::IommuDomain;
    use dmacap::platform::IdentityMap;
    use dmacap::sim::{SimCache, SimIommu};
    use dmacap::{DevOwned, Mapped, ToDevice};
    type H<B> = Mapped<'static, ToDevice, DevOwned, Box<[u8]>, B>;
    let boxed = std::mem::size_of::<Box<[u8]>>();
    let direct = std::mem::size_of::<H<Composed<IdentityMap, Direct, Coherent, Arc<Swiotlb>>>>();
    let iommu = std::mem::size_of::<
        H<Composed<IdentityMap, IommuDomain<SimIommu>, NonCoherent<SimCache>, Arc<Swiotlb>>>,
    >();
    assert!(direct - boxed <= 48, "{direct}");
    assert!(iommu - boxed <= 48, "{iommu}");
}
