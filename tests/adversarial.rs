//! The adversarial suite of issue 7: the eight ways the code before
//! commit b2a69ef let safe code (plus the documented `unsafe` steps, used
//! exactly as their `# Safety` sections allow) reach undefined behaviour or
//! defeat dmacap's ownership claims, each tried again as an attacker would.
//!
//! Every test moves real bytes through the simulator (`SimPlatform`,
//! `SimMemory`, `SimDevice`, `SimIommu`, `SimCache`) and checks bytes,
//! counters and free counts. Where the attack itself no longer compiles,
//! the test runs the closest legal program and the compile error is pinned
//! by a trybuild case under `ui-tests/fail/` (named in the test's comment).
//!
//! | hole | test(s) | ui case |
//! |---|---|---|
//! | 1 device writes a `ToDevice` buffer | `hole1_*` | `to_device_non_frombytes_on_direct_bus`, `to_device_non_frombytes_behind_iommu` |
//! | 2 foreign handle in an sg list | `hole2_*` | `sg_list_hands_out_no_handles` |
//! | 3 bounce pool granted to every device | `hole3_*` | – |
//! | 4 safe IOMMU programming | `hole4_*` | `translation_map_needs_unsafe` |
//! | 5 `CacheSafe` / `Settle` not sealed | `hole5_*` | `cache_safe_is_sealed`, `settle_is_sealed` |
//! | 6 `Mapped: Sync` over a `!Sync` target | `hole6_*` (and `tests/auto_traits.rs`) | `mapped_cell_target_not_sync` |
//! | 7 unwinding through a flush frees | `hole7_*` | – |
//! | 8 dropped domain frees live tables | `hole8_*` | – |
//!
//! Buffers are small and loops short (shorter still under Miri), so that
//! the suite runs under Miri with both borrow models.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};

use dmacap::arch::{CacheMaintenance, CacheRange};
use dmacap::backend::bounce::Swiotlb;
use dmacap::backend::compose::{Coherent, Composed, MapAttrs, NoBounce, Translation};
use dmacap::backend::direct::Direct;
use dmacap::backend::iommu::{InvalidationMode, IommuDomain, IommuHardware};
use dmacap::backend::noncoherent::DirectNonCoherent;
use dmacap::buffer::LineAligned;
use dmacap::platform::{PhysLookup, Side};
use dmacap::sim::{
    FaultReason, SimBuffer, SimCache, SimDevice, SimFault, SimIommu, SimMemory, SimPlatform,
};
use dmacap::typenum::U64;
use dmacap::{
    Bidirectional, Device, DeviceConfig, DmaAddr, DmaBuffer, DmaDirection, DmaMask, FromDevice,
    PhysAddr,
};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Simulated RAM of each test: small, so that Miri runs quickly.
const RAM: usize = 64 * 1024;
/// The length of most buffers: two 64-byte lines.
const LEN: usize = 128;

/// `len` bytes of a recognisable pattern.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(29) ^ seed)
        .collect()
}

/// The physical range `[start, start + len)` as numbers.
fn range_of(start: PhysAddr, len: usize) -> (u64, u64) {
    (start.as_u64(), start.as_u64() + len as u64)
}

/// Whether two physical ranges share a byte.
fn overlap(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// `IommuDomain::leaked_page_tables` counts for the whole program, and the
/// test harness runs tests on many threads: every test that makes an IOMMU
/// domain holds this lock, so that hole 8's counts see only their own
/// domains.
static DOMAINS: Mutex<()> = Mutex::new(());

fn domains() -> MutexGuard<'static, ()> {
    DOMAINS.lock().unwrap_or_else(|e| e.into_inner())
}

fn leaked_tables() -> usize {
    IommuDomain::<SimIommu>::leaked_page_tables()
}

// ===========================================================================
// Hole 1: a device writes a `ToDevice` buffer.
// ===========================================================================

/// Hole 1, the sound half. Without an IOMMU nothing stops a device from
/// writing a buffer it was given to read, and the simulator does not stop it
/// either: a `ToDevice` byte buffer on a direct device comes back from
/// unmap holding the device's bytes. That is sound only because `u8` is
/// `FromBytes`; the old code allowed the same for a `Box<bool>` (any
/// `IntoBytes` type), which then held `0x02`. Mapping a non-`FromBytes`
/// type `ToDevice` on a direct device no longer compiles
/// (`ui-tests/fail/to_device_non_frombytes_on_direct_bus.rs`).
#[test]
fn hole1_direct_device_writes_a_to_device_byte_buffer_and_the_cpu_sees_it() {
    let sim = SimPlatform::new(RAM);
    let dev = sim.coherent_device();
    let engine = sim.device(&dev);

    let mut tx = sim.memory().alloc_slice::<u8>(16).unwrap();
    tx.copy_from_slice(b"to the device...");
    let tx = dev.map_to_device(tx).unwrap();
    let mut wire = [0u8; 16];
    engine.read(tx.dma_addr(), &mut wire).unwrap();
    assert_eq!(&wire, b"to the device...");
    // The rogue write the bus does not stop.
    engine.write(tx.dma_addr(), &[0x02; 16]).unwrap();
    // SAFETY: the simulated write returned: the device has finished.
    let tx = unsafe { tx.unmap() };
    assert_eq!(&tx[..], &[0x02; 16], "the CPU sees the device's bytes");
    assert_eq!(dev.leaked(), 0);
    drop(tx);
    assert_eq!(sim.memory().allocated_bytes(), 0);
    assert_eq!(sim.memory().device_owned_bytes(), 0);
}

/// Hole 1 behind an IOMMU, and why the IOMMU is not enough. The IOMMU maps
/// a `ToDevice` buffer read-only and the simulated device's write through
/// its own IOVA is `Denied`. But an IOMMU grants whole pages: a sub-page
/// `ToDevice` buffer that shares a page with a writable mapping of the same
/// device is written through the neighbour's IOVA (an attack found by the
/// adversarial review of the first fix, which let `bool` through behind an
/// IOMMU; Miri reported the `bool` holding `0x02`). So `ToDevice` needs
/// `FromBytes` on every backend (`ui-tests/fail/to_device_non_frombytes_behind_iommu.rs`),
/// and what the device writes there is a valid byte, read back as such.
#[test]
fn hole1_iommu_denies_the_write_but_a_page_neighbour_still_reaches_it() {
    let _domains = domains();
    let sim = SimPlatform::new(RAM);
    let mem = sim.memory();
    let dev = sim.iommu_device(InvalidationMode::Strict, DeviceConfig::new());
    let engine = sim.device(&dev);

    let mut flag = mem.alloc::<u8>().unwrap();
    *flag = 1;
    let rx = mem.alloc_slice::<u8>(16).unwrap(); // the same 4 KiB page
    let (pf, pr) = (mem.phys_of_buffer(&flag), mem.phys_of_buffer(&rx));
    assert_eq!(pf.as_u64() >> 12, pr.as_u64() >> 12, "one page");
    let tx = dev.map_to_device(flag).unwrap();
    let rx = dev.map_from_device(rx).unwrap();

    let mut seen = [0u8; 1];
    engine.read(tx.dma_addr(), &mut seen).unwrap();
    assert_eq!(seen, [1]);
    let dma = tx.dma_addr();
    assert_eq!(
        engine.write(dma, &[0x02]),
        Err(SimFault::Denied {
            dma,
            access: dmacap::sim::Access::Write
        })
    );
    let faults = dev.backend().translation().hardware().faults();
    assert_eq!(faults.len(), 1);
    assert_eq!(faults[0].reason, FaultReason::Denied);
    // Through the writable neighbour's IOVA, in the same page.
    let via_neighbour = DmaAddr::new(rx.dma_addr().as_u64() - (pr.as_u64() - pf.as_u64()));
    engine.write(via_neighbour, &[0x02]).unwrap();

    // SAFETY: the simulated accesses returned: the device has finished.
    let flag = unsafe { tx.unmap() };
    // SAFETY: as above.
    drop(unsafe { rx.unmap() });
    assert_eq!(
        *flag, 2,
        "a valid `u8`: the only kind of value a ToDevice buffer holds"
    );
    assert_eq!(dev.leaked(), 0);
    assert_eq!(mem.device_owned_bytes(), 0);
}

// ===========================================================================
// Hole 2: a foreign device's handle inside a scatter-gather list.
// ===========================================================================

/// Hole 2. The old `SgMapped::as_mut_slice` handed out `&mut Mapped`, so
/// `mem::swap` moved device X's handle into device Y's list; Y's unmap then
/// completed only Y's IOTLB invalidation, X's IOVA stayed cached in X's
/// IOTLB over memory that was freed and reused, and X wrote into Y's next
/// buffer. The swap no longer compiles
/// (`ui-tests/fail/sg_list_hands_out_no_handles.rs`). The closest legal
/// program swaps the *contents* instead, tries to append X's list to Y's
/// (refused, handed back), and every list's completion lands on its own
/// device: both IOTLBs are invalidated, both IOVA spaces are whole again,
/// and X's old addresses reach nothing, not even memory reused for Y.
#[test]
fn hole2_lists_give_contents_not_handles_and_complete_on_their_own_device() {
    let _domains = domains();
    let sim = SimPlatform::new(RAM);
    let mem = sim.memory();
    let x = sim.iommu_device(InvalidationMode::Strict, DeviceConfig::new());
    let y = sim.iommu_device(InvalidationMode::Strict, DeviceConfig::new());
    let (ex, ey) = (sim.device(&x), sim.device(&y));
    let free_x = x.backend().translation().free_pages();
    let free_y = y.backend().translation().free_pages();

    let bufs = || (0..2).map(|_| mem.alloc_slice::<u8>(LEN).unwrap());
    let lx = x.map_sg::<Bidirectional, _, _>(bufs()).unwrap();
    let ly = y.map_sg::<Bidirectional, _, _>(bufs()).unwrap();
    for (i, (dma, n)) in lx.segments().enumerate() {
        ex.fill(dma, 0xa0 + i as u8, n).unwrap();
    }
    for (i, (dma, n)) in ly.segments().enumerate() {
        ey.fill(dma, 0xb0 + i as u8, n).unwrap();
    }
    let (x0, _) = lx.segments().next().unwrap();

    // SAFETY: the fills returned: both devices have finished.
    let mut lx = unsafe { lx.sync_for_cpu() };
    // SAFETY: as above.
    let mut ly = unsafe { ly.sync_for_cpu() };
    // What the attacker wanted: X's first buffer in Y's list. What is left:
    // the bytes, swapped between CPU-owned lists.
    lx.contents_mut(0)
        .unwrap()
        .swap_with_slice(ly.contents_mut(0).unwrap());
    for b in ly.iter_contents_mut() {
        b[0] = 0x59;
    }
    assert!(lx.contents(2).is_none());
    let firsts: Vec<u8> = lx.iter_contents().map(|b| b[1]).collect();
    assert_eq!(firsts, [0xb0, 0xa1]);
    assert_eq!(ly.contents(0).unwrap()[1], 0xa0);

    let mut lx = lx.sync_for_device();
    let ly = ly.sync_for_device();
    // A list of another device cannot join: refused and handed back whole.
    let err = lx.append(ly).unwrap_err();
    assert_eq!((err.list, err.offered), (x.id(), y.id()));
    let ly = err.into_inner();
    assert_eq!((lx.len(), ly.len()), (2, 2));

    // Each device reads its own list, with the swapped bytes.
    let mut seen = vec![0u8; LEN];
    ex.read(x0, &mut seen).unwrap();
    assert_eq!(seen, [0xb0; LEN]);
    let (y0, _) = ly.segments().next().unwrap();
    ey.read(y0, &mut seen).unwrap();
    let mut want = vec![0xa0; LEN];
    want[0] = 0x59;
    assert_eq!(seen, want);

    let inv = (
        x.stats().iotlb_invalidations(),
        y.stats().iotlb_invalidations(),
    );
    // SAFETY: the reads returned: both devices have finished.
    let bx = unsafe { lx.unmap() };
    // SAFETY: as above.
    let by = unsafe { ly.unmap() };
    assert_eq!(x.stats().iotlb_invalidations(), inv.0 + 1);
    assert_eq!(y.stats().iotlb_invalidations(), inv.1 + 1);
    assert_eq!(x.backend().translation().free_pages(), free_x);
    assert_eq!(y.backend().translation().free_pages(), free_y);
    assert_eq!(bx[0][0], 0xb0);
    assert_eq!(by[0][..2], [0x59, 0xa0]);

    // X's freed memory is reused for Y's next buffer: X's old IOVA reaches
    // nothing (its IOTLB entry was invalidated), Y's own mapping works.
    let reused_phys = mem.phys_of_buffer(&bx[0]);
    drop(bx);
    let next = mem.alloc_slice::<u8>(LEN).unwrap();
    assert_eq!(
        mem.phys_of_buffer(&next),
        reused_phys,
        "the bytes are reused"
    );
    let next = y.map_from_device(next).unwrap();
    assert!(matches!(
        ex.write(x0, &[0xee; LEN]),
        Err(SimFault::Untranslated { .. })
    ));
    assert_eq!(x.backend().translation().hardware().stale_hits(), 0);
    ey.fill(next.dma_addr(), 0x77, LEN).unwrap();
    // SAFETY: the fill returned.
    let next = unsafe { next.sync_for_cpu() };
    assert_eq!(next.contents(), &[0x77; LEN][..]);
    drop(next.unmap());
    drop(by);
    assert_eq!(x.leaked() + y.leaked(), 0);
    assert_eq!(mem.allocated_bytes(), 0);
}

// ===========================================================================
// Hole 3: the simulated bounce pool was granted to every device forever.
// ===========================================================================

/// A 64 KiB machine whose RAM starts at 0x8000, with a two-slot bounce pool
/// at its bottom and the rest of the memory a 16-bit device can address
/// taken by a filler, so that every later buffer lies beyond the mask and
/// is bounced.
struct BounceRig {
    mem: SimMemory,
    pool: Arc<Swiotlb>,
    _filler: SimBuffer<[u8]>,
}

type BounceDev = Device<Composed<SimMemory, Direct, Coherent, Arc<Swiotlb>>>;

impl BounceRig {
    fn new() -> Self {
        let mem = SimMemory::with_base(PhysAddr::new(0x8000), RAM);
        let pool = Arc::new(mem.swiotlb(4096, 1).unwrap());
        assert_eq!(pool.phys(), PhysAddr::new(0x8000));
        let filler = mem.alloc_slice::<u8>(0x1_0000 - 0x9000).unwrap();
        Self {
            mem,
            pool,
            _filler: filler,
        }
    }

    /// A 16-bit coherent device bouncing through the shared pool.
    fn device(&self) -> BounceDev {
        Device::new(
            Composed::from_parts(
                self.mem.clone(),
                Direct::identity(),
                Coherent,
                self.pool.clone(),
            ),
            DeviceConfig::new().dma_mask(DmaMask::bits(16)),
        )
    }

    /// `len` bytes beyond every device's reach, holding `fill`.
    fn high(&self, fill: &[u8]) -> SimBuffer<[u8]> {
        let mut b = self.mem.alloc_slice::<u8>(fill.len()).unwrap();
        assert!(self.mem.phys_of_buffer(&b).as_u64() >= 0x1_0000);
        b.copy_from_slice(fill);
        b
    }
}

/// Hole 3. The old simulator granted the whole bounce pool to every device
/// for good: a device with no mapping at all read another mapping's live
/// and released bounce copies and overwrote live ones. Now a bounced
/// mapping's slot is granted to its own device only, only while that
/// device owns the mapping: device B (no mapping) reaches nothing of A's
/// slot, A reaches its own, B its own, and after unmap nobody reaches the
/// released slot, although it still holds A's bytes.
#[test]
fn hole3_a_bounce_slot_is_reached_by_its_own_device_only_while_mapped() {
    let rig = BounceRig::new();
    let (a, b) = (rig.device(), rig.device());
    let ea = SimDevice::new(&a, rig.mem.clone());
    let eb = SimDevice::new(&b, rig.mem.clone());
    let secret = pattern(LEN, 0x5e);

    let tx = a.map_to_device(rig.high(&secret)).unwrap();
    assert_eq!(a.stats().bounced(), 1);
    let slot = PhysAddr::new(tx.dma_addr().as_u64());
    assert!(
        rig.pool.contains(slot, LEN),
        "identity bus: the DMA address is the slot"
    );
    // Exactly the copy is granted, not the pool.
    assert_eq!(rig.mem.device_owned_bytes(), LEN);

    let mut seen = vec![0u8; LEN];
    assert!(matches!(
        eb.read(tx.dma_addr(), &mut seen),
        Err(SimFault::NotDeviceOwned { .. })
    ));
    assert_eq!(seen, [0; LEN], "nothing was read");
    assert!(matches!(
        eb.write(tx.dma_addr(), &[0xbb; LEN]),
        Err(SimFault::NotDeviceOwned { .. })
    ));
    assert!(rig.mem.check_device_owned(b.id(), slot, LEN).is_err());
    assert!(rig.mem.check_device_owned(a.id(), slot, LEN).is_ok());
    ea.read(tx.dma_addr(), &mut seen).unwrap();
    assert_eq!(seen, secret, "A's copy is intact");

    // B maps its own buffer: the other slot, reached by B alone.
    let rx = b.map_from_device(rig.high(&[0; LEN])).unwrap();
    assert_eq!(rig.pool.used_slots(), 2);
    eb.fill(rx.dma_addr(), 0x5b, LEN).unwrap();
    assert!(matches!(
        ea.write(rx.dma_addr(), &[0xaa; LEN]),
        Err(SimFault::NotDeviceOwned { .. })
    ));
    assert!(matches!(
        eb.write(tx.dma_addr(), &[0xbb; LEN]),
        Err(SimFault::NotDeviceOwned { .. })
    ));

    // A unmaps: its slot is released and nobody reaches it, A included.
    // SAFETY: A's read returned: the device has finished.
    let back = unsafe { tx.unmap() };
    assert_eq!(&back[..], &secret[..]);
    for e in [&ea, &eb] {
        assert!(matches!(
            e.read(DmaAddr::new(slot.as_u64()), &mut seen),
            Err(SimFault::NotDeviceOwned { .. })
        ));
    }
    // What the old pool gave away: the released slot still holds A's copy.
    // SAFETY: the released slot is referenced by nothing, and nothing
    // writes it during the read (no other thread uses this RAM).
    unsafe { rig.mem.read_phys_unchecked(slot, &mut seen) }.unwrap();
    assert_eq!(seen, secret);

    // SAFETY: B's fill returned: the device has finished.
    let rx = unsafe { rx.sync_for_cpu() };
    assert_eq!(rx.contents(), &[0x5b; LEN][..], "B's bytes, not A's");
    drop(rx.unmap());
    drop(back);
    assert_eq!(rig.mem.device_owned_bytes(), 0);
    assert_eq!(rig.pool.used_slots(), 0);
    assert_eq!(a.leaked() + b.leaked(), 0);
}

/// Hole 3, the race. A driver thread maps and unmaps bounced buffers of
/// device A over and over (copy in, hand over, take back, copy out,
/// release), a second thread plays device A (it writes each mapping while
/// the driver waits for it), and a third plays device B, which has no
/// mapping and keeps trying A's current slot. With the old pool-wide grant
/// B's accesses succeeded and raced the CPU's copies: a data race in a
/// program with no `unsafe` beyond honest `sync_for_cpu` calls (Miri
/// reported it). Now every access of B is refused, A's bytes always arrive
/// whole, and Miri finds no race.
#[test]
fn hole3_racing_devices_against_bounced_map_and_unmap() {
    let iterations = if cfg!(miri) { 3 } else { 64 };
    let rig = BounceRig::new();
    let (a, b) = (rig.device(), rig.device());
    let ea = SimDevice::new(&a, rig.mem.clone());
    let eb = SimDevice::new(&b, rig.mem.clone());
    let published = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let (to_device, device_gets) = mpsc::channel::<Option<DmaAddr>>();
    let (device_done, driver_sees) = mpsc::channel::<()>();

    std::thread::scope(|s| {
        // Device A: writes each buffer it is handed, then reports done.
        s.spawn(|| {
            let device_gets = device_gets;
            while let Ok(Some(dma)) = device_gets.recv() {
                ea.fill(dma, 0xda, LEN).unwrap();
                device_done.send(()).unwrap();
            }
        });
        // Device B: no mapping, keeps trying whatever A has now.
        s.spawn(|| {
            let mut tries = 0usize;
            while !stop.load(Ordering::Acquire) {
                let dma = DmaAddr::new(published.load(Ordering::Acquire));
                if dma.as_u64() != 0 {
                    let mut seen = [0u8; 16];
                    assert!(eb.read(dma, &mut seen).is_err());
                    assert_eq!(seen, [0; 16]);
                    assert!(eb.write(dma, &[0xbb; 16]).is_err());
                    tries += 1;
                }
                std::thread::yield_now();
            }
            tries
        });
        // The driver of A.
        for i in 0..iterations {
            let fill = pattern(LEN, i as u8);
            let h = a.map_bidirectional(rig.high(&fill)).unwrap();
            published.store(h.dma_addr().as_u64(), Ordering::Release);
            to_device.send(Some(h.dma_addr())).unwrap();
            driver_sees.recv().unwrap();
            // SAFETY: device A reported completion over the channel (which
            // orders its writes before this call) and was given nothing
            // else to do.
            let h = unsafe { h.sync_for_cpu() };
            assert_eq!(h.contents(), &[0xda; LEN][..]);
            drop(h.unmap());
            std::thread::yield_now();
        }
        to_device.send(None).unwrap();
        stop.store(true, Ordering::Release);
    });
    assert_eq!(rig.mem.device_owned_bytes(), 0);
    assert_eq!(rig.pool.used_slots(), 0);
    assert_eq!(a.stats().bounced(), iterations);
    assert_eq!(a.leaked() + b.leaked(), 0);
}

// ===========================================================================
// Hole 4: safe IOMMU programming from outside.
// ===========================================================================

/// Hole 4. The old `Translation::map` was safe: through
/// `dev.backend().translation()` safe code installed IOMMU entries for any
/// physical range, so device Y was made to write device X's buffer. That
/// call now needs `unsafe` (`ui-tests/fail/translation_map_needs_unsafe.rs`).
/// Through the safe API, Y has no entry for X's buffer and every write
/// faults; the raw call, used as its contract allows (a buffer its owner
/// gave up, mapped read-only), works, is enforced, and is torn down.
#[test]
fn hole4_raw_translation_is_unsafe_and_the_safe_api_keeps_devices_apart() {
    let _domains = domains();
    let sim = SimPlatform::new(RAM);
    let mem = sim.memory();
    let x = sim.iommu_device(InvalidationMode::Strict, DeviceConfig::new());
    let y = sim.iommu_device(InvalidationMode::Strict, DeviceConfig::new());
    let (ex, ey) = (sim.device(&x), sim.device(&y));

    let buf = mem.alloc_slice::<u8>(LEN).unwrap();
    let phys_x = DmaAddr::new(mem.phys_of_buffer(&buf).as_u64());
    let rx = x.map_from_device(buf).unwrap();
    // Y at X's IOVA, and at the buffer's physical address: Y's domain has
    // no entry at all.
    for dma in [rx.dma_addr(), phys_x] {
        assert!(matches!(
            ey.write(dma, &[0x66; 8]),
            Err(SimFault::Untranslated { .. })
        ));
    }
    ex.fill(rx.dma_addr(), 0x11, LEN).unwrap();
    // SAFETY: the fill returned.
    let rx = unsafe { rx.sync_for_cpu() };
    assert_eq!(rx.contents(), &[0x11; LEN][..], "X's bytes, nothing of Y");
    drop(rx.unmap());

    // The raw path, within its contract.
    let mut own = mem.alloc_slice::<u8>(64).unwrap();
    own.copy_from_slice(&pattern(64, 4));
    let (ptr, keep) = own.into_raw_parts();
    let cpu = ptr.cast::<u8>();
    let phys = mem.phys_of(cpu, 64).unwrap();
    let t = y.backend().translation();
    // SAFETY: the 64 bytes at `phys` are a buffer its owner gave up
    // (`into_raw_parts`) until it is rebuilt below, after the unmap; the
    // device may read it (`ToDevice`), nothing more.
    let (iova, ()) =
        unsafe { t.map(phys, 64, DmaDirection::ToDevice, MapAttrs::RAM, y.context()) }.unwrap();
    // SAFETY: no CPU reference to the bytes exists (given up) until they
    // are taken back below, and `cpu` is valid for them all that time.
    unsafe { mem.ownership_changed(cpu, 64, Side::Device, y.id()) };
    let mut seen = [0u8; 64];
    ey.read(iova, &mut seen).unwrap();
    assert_eq!(&seen[..], &pattern(64, 4)[..]);
    assert!(matches!(
        ey.write(iova, &[0; 64]),
        Err(SimFault::Denied { .. })
    ));
    // X has no entry for Y's IOVA either.
    assert!(ex.read(iova, &mut seen).is_err());
    // SAFETY: given to `y` above and not taken back since.
    unsafe { mem.ownership_changed(cpu, 64, Side::Cpu, y.id()) };
    // SAFETY: the mapping made above, never unmapped; Y's read returned.
    unsafe { t.unmap(iova, 64, (), y.context()) };
    t.flush(y.context());
    assert!(matches!(
        ey.read(iova, &mut seen),
        Err(SimFault::Untranslated { .. })
    ));
    // SAFETY: the parts of one `into_raw_parts`, used once.
    let own = unsafe { SimBuffer::<[u8]>::from_raw_parts(ptr, keep) };
    assert_eq!(&own[..], &pattern(64, 4)[..]);
    drop(own);
    assert_eq!(x.leaked() + y.leaked(), 0);
    assert_eq!(mem.device_owned_bytes(), 0);
}

// ===========================================================================
// Hole 5: `CacheSafe` and `Settle` were not sealed.
// ===========================================================================

/// A receive descriptor that honestly fills one 64-byte line.
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Debug, PartialEq)]
#[repr(C, align(64))]
struct Desc {
    addr: u64,
    len: u32,
    flags: u32,
    reserved: [u8; 48],
}

// SAFETY: aligned to 64 and 64 bytes long (dmacap re-checks it at compile
// time wherever `Desc` is mapped).
unsafe impl LineAligned<U64> for Desc {}

/// Hole 5. The old `CacheSafe` could be implemented downstream with its
/// check constants overridden (a 4-byte typed buffer mapped on a 64-byte
/// granule), and `batch::Settle`'s hidden methods could be called on a
/// device-owned handle (granting it a second time). Both are sealed now
/// (`ui-tests/fail/cache_safe_is_sealed.rs`, `settle_is_sealed.rs`). The
/// legal program: a type that honestly fills a line maps on the
/// non-coherent device with the right bytes both ways, a byte buffer that
/// shares a line is refused at run time, and batches grant each mapping
/// exactly once, exactly its bytes.
#[test]
fn hole5_line_aligned_types_map_and_batches_grant_exactly_once() {
    let sim = SimPlatform::noncoherent(RAM);
    let mem = sim.memory();
    let dev = sim.noncoherent_device();
    let engine = sim.device(&dev);

    let mut d = mem.alloc::<Desc>().unwrap();
    d.addr = 0x1234_5678_9abc;
    d.len = 1500;
    let h = dev.map_bidirectional(d).unwrap();
    let dma = h.dma_addr();
    assert_eq!(mem.device_owned_bytes(), 64);
    let mut seen = [0u8; 64];
    engine.read(h.dma_addr(), &mut seen).unwrap();
    assert_eq!(&seen[..8], &0x1234_5678_9abcu64.to_ne_bytes());
    engine
        .write(
            DmaAddr::new(h.dma_addr().as_u64() + 12),
            &1u32.to_ne_bytes(),
        )
        .unwrap();
    // SAFETY: the simulated accesses returned.
    let h = unsafe { h.sync_for_cpu() };
    assert_eq!(
        h.contents().flags,
        1,
        "invalidated: the device's write is seen"
    );
    assert_eq!(mem.device_owned_bytes(), 0);

    // A byte buffer that shares a line is refused, and comes back.
    let odd = mem.alloc_slice_aligned::<u8>(100, 64).unwrap();
    let err = dev.map_from_device(odd).unwrap_err();
    assert!(matches!(
        err.kind(),
        dmacap::MapErrorKind::SharesCacheLine { .. }
    ));
    drop(err.into_buffer());

    // Batches grant each hand-over once, at the flush.
    let mut to_dev = dev.batch();
    to_dev.sync_for_device(h);
    assert_eq!(
        mem.device_owned_bytes(),
        0,
        "nothing granted before the flush"
    );
    let mut hs = to_dev.flush();
    assert_eq!(mem.device_owned_bytes(), 64);
    let h = hs.pop().unwrap();
    let (h,) = dev
        .fixed_batch()
        .sync_for_device(
            // SAFETY: the device did nothing since the hand-over.
            unsafe { h.sync_for_cpu() },
        )
        .flush();
    assert_eq!(mem.device_owned_bytes(), 64, "granted once, not twice");
    // SAFETY: the device did nothing since the hand-over.
    let (h,) = unsafe { dev.fixed_batch().sync_for_cpu(h) }.flush();
    assert_eq!(mem.device_owned_bytes(), 0, "one take-back ends the grant");
    assert!(matches!(
        engine.read(dma, &mut seen),
        Err(SimFault::NotDeviceOwned { .. })
    ));
    let d = h.unmap();
    assert_eq!(d.len, 1500);
    assert_eq!(dev.leaked(), 0);
    drop(d);
    assert_eq!(mem.allocated_bytes(), 0);
}

// ===========================================================================
// Hole 6: `Mapped` was `Sync` over a `!Sync` target.
// ===========================================================================

/// A buffer of cells in simulated RAM: the buffer itself is `Send + Sync`
/// (nothing of it is reachable through `&CellBuf`), its contents are not
/// `Sync`. The old `Mapped` was `Sync` because `CellBuf` is.
struct CellBuf(SimBuffer<[u8]>);

// SAFETY: the pointer is that of a `SimBuffer<[u8]>` given up by
// `into_raw_parts`; `Cell<u8>` has the layout and bit validity of `u8`, so
// (1) it is valid, aligned and initialised for the cells, (2) the
// reservation is held by `SimBuffer`'s own contract, and (3) rebuilding
// gives back the same `SimBuffer`.
unsafe impl DmaBuffer for CellBuf {
    type Target = [Cell<u8>];
    type Keep = SimMemory;

    fn into_raw_parts(self) -> (NonNull<[Cell<u8>]>, SimMemory) {
        let (ptr, keep) = self.0.into_raw_parts();
        let cells = NonNull::slice_from_raw_parts(ptr.cast::<Cell<u8>>(), ptr.len());
        (cells, keep)
    }

    unsafe fn from_raw_parts(ptr: NonNull<[Cell<u8>]>, keep: SimMemory) -> Self {
        let bytes = NonNull::slice_from_raw_parts(ptr.cast::<u8>(), ptr.len());
        // SAFETY: the parts came from one `into_raw_parts` of a `SimBuffer`
        // (the caller's promise), cast back.
        Self(unsafe { SimBuffer::from_raw_parts(bytes, keep) })
    }
}

/// Hole 6. `&Mapped` hands out `&Buf::Target`; the old `Mapped` was `Sync`
/// whenever `Buf` was, so a `[Cell<u8>]` target was written and read from
/// two threads at once (a data race Miri reported). Sharing such a handle
/// no longer compiles (`ui-tests/fail/mapped_cell_target_not_sync.rs`;
/// the auto traits are pinned in `tests/auto_traits.rs`). The legal
/// programs: cells written on one thread reach the device, and a handle
/// over plain bytes is shared by reference across threads.
#[test]
fn hole6_cells_stay_on_one_thread_and_bytes_are_shared() {
    let sim = SimPlatform::new(RAM);
    let dev = sim.coherent_device();
    let engine = sim.device(&dev);

    let tx = dev
        .map_to_device(CellBuf(sim.memory().alloc_slice::<u8>(8).unwrap()))
        .unwrap();
    // SAFETY: the device has done nothing with the buffer.
    let tx = unsafe { tx.sync_for_cpu() };
    for (i, c) in tx.contents().iter().enumerate() {
        c.set(0x30 + i as u8); // through `&`: fine on one thread
    }
    let tx = tx.sync_for_device();
    let mut wire = [0u8; 8];
    engine.read(tx.dma_addr(), &mut wire).unwrap();
    assert_eq!(&wire, b"01234567");
    // SAFETY: the read returned.
    drop(unsafe { tx.unmap() });

    let mut buf = sim.memory().alloc_slice::<u8>(LEN).unwrap();
    buf.copy_from_slice(&pattern(LEN, 6));
    let h = dev.map_to_device(buf).unwrap();
    // SAFETY: the device has done nothing with the buffer.
    let h = unsafe { h.sync_for_cpu() };
    let shared = &h;
    let sums: Vec<u32> = std::thread::scope(|s| {
        let readers: Vec<_> = (0..2)
            .map(|_| s.spawn(move || shared.contents().iter().map(|&b| u32::from(b)).sum()))
            .collect();
        readers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let want: u32 = pattern(LEN, 6).iter().map(|&b| u32::from(b)).sum();
    assert_eq!(sums, [want, want]);
    drop(h.unmap());
    assert_eq!(dev.leaked(), 0);
    assert_eq!(sim.memory().allocated_bytes(), 0);
}

// ===========================================================================
// Hole 7: unwinding through a flush freed handles with queued maintenance.
// ===========================================================================

/// The simulated cache, whose barrier panics once when armed: before
/// completing anything, so the invalidates it was to complete stay queued
/// on the calling thread.
struct PanickyCache {
    inner: SimCache,
    armed: Arc<AtomicBool>,
}

// SAFETY: every operation is forwarded to `SimCache`, which keeps the
// promises. An armed `complete` unwinds without returning; the promises
// speak only of what holds after `complete()` (returns), so an unwinding
// barrier promises nothing, and the operations stay queued for this
// thread's next barrier, as `SimCache` documents.
unsafe impl CacheMaintenance for PanickyCache {
    type Granule = <SimCache as CacheMaintenance>::Granule;

    fn line_size(&self) -> usize {
        self.inner.line_size()
    }

    unsafe fn clean(&self, r: CacheRange) -> usize {
        // SAFETY: forwarded with the caller's promises.
        unsafe { self.inner.clean(r) }
    }

    unsafe fn invalidate(&self, r: CacheRange) -> usize {
        // SAFETY: forwarded with the caller's promises.
        unsafe { self.inner.invalidate(r) }
    }

    fn complete(&self) {
        if self.armed.swap(false, Ordering::SeqCst) {
            panic!("the completion barrier failed (armed by the test)");
        }
        self.inner.complete();
    }
}

type PanickyDev = Device<DirectNonCoherent<SimMemory, PanickyCache>>;

/// A non-coherent device whose barrier the returned flag arms.
fn panicky_device(sim: &SimPlatform) -> (PanickyDev, Arc<AtomicBool>) {
    let mem = sim.memory().clone();
    let armed = Arc::new(AtomicBool::new(false));
    let cache = PanickyCache {
        inner: mem.cache().unwrap(),
        armed: armed.clone(),
    };
    let dev = Device::new(DirectNonCoherent::new(mem, cache), DeviceConfig::new());
    (dev, armed)
}

/// What must hold after a barrier unwound over `victims` (physical ranges
/// of the buffers whose invalidate it was to complete): nothing was freed,
/// the handles were counted as leaked, a fresh allocation reuses none of
/// their bytes, and when the queued invalidates finally complete (at this
/// thread's next barrier) they land on the quarantined memory, not on the
/// fresh buffer the CPU is reading.
fn nothing_freed(
    sim: &SimPlatform,
    allocated_before: usize,
    leaked: usize,
    leaked_now: usize,
    victims: &[(u64, u64)],
) {
    let mem = sim.memory();
    assert_eq!(mem.allocated_bytes(), allocated_before, "nothing was freed");
    assert_eq!(leaked_now, leaked, "every handle quarantined and counted");
    let mut fresh = mem.alloc_slice_aligned::<u8>(LEN, 64).unwrap();
    let fresh_range = range_of(mem.phys_of_buffer(&fresh), LEN);
    assert!(
        victims.iter().all(|&v| !overlap(v, fresh_range)),
        "a fresh allocation must not reuse quarantined bytes"
    );
    fresh.fill(0x11);
    let view: &[u8] = &fresh;
    let cache = mem.cache().unwrap();
    assert!(cache.pending() > 0, "the failed barrier left work queued");
    cache.complete();
    assert_eq!(cache.pending(), 0);
    assert_eq!(
        view,
        &[0x11; LEN][..],
        "the late invalidate hit no live buffer"
    );
}

/// Hole 7, a single `Mapped::sync_for_cpu`. The old handle turned CPU-owned
/// before its barrier: when the barrier unwound it was dropped as CPU-owned
/// and its buffer freed with the invalidate still queued, which later
/// landed on whatever reused the bytes (Miri reported the write under a
/// live reference). Now it stays device-owned until the barrier returns,
/// and an unwinding barrier quarantines it.
#[test]
fn hole7_single_sync_for_cpu_unwinding_quarantines() {
    let sim = SimPlatform::noncoherent(RAM);
    let mem = sim.memory();
    let (dev, armed) = panicky_device(&sim);
    let engine = sim.device(&dev);
    let buf = mem.alloc_slice_aligned::<u8>(LEN, 64).unwrap();
    let victim = range_of(mem.phys_of_buffer(&buf), LEN);
    let rx = dev.map_from_device(buf).unwrap();
    engine.fill(rx.dma_addr(), 0xd5, LEN).unwrap();
    let allocated = mem.allocated_bytes();

    armed.store(true, Ordering::SeqCst);
    // SAFETY: the simulated fill returned: the device has finished.
    let r = catch_unwind(AssertUnwindSafe(|| unsafe { rx.sync_for_cpu() }));
    assert!(r.is_err(), "the barrier unwound");
    assert_eq!(dev.stats().leaked_bytes(), LEN);
    nothing_freed(&sim, allocated, 1, dev.leaked(), &[victim]);
}

/// Hole 7, `Batch::flush` of a batch of `sync_for_cpu`: the old batch held
/// CPU-owned handles while its barrier ran and dropped them as such when
/// it unwound. Now it holds `PendingToCpu` (device-owned) items until the
/// flush returns.
#[test]
fn hole7_batch_flush_unwinding_quarantines() {
    let sim = SimPlatform::noncoherent(RAM);
    let mem = sim.memory();
    let (dev, armed) = panicky_device(&sim);
    let engine = sim.device(&dev);
    let mut maps = dev.batch();
    let mut victims = Vec::new();
    for _ in 0..3 {
        let buf = mem.alloc_slice_aligned::<u8>(LEN, 64).unwrap();
        victims.push(range_of(mem.phys_of_buffer(&buf), LEN));
        maps.map_from_device(buf).unwrap();
    }
    let rx = maps.flush();
    for (i, h) in rx.iter().enumerate() {
        engine.fill(h.dma_addr(), 0xc0 + i as u8, LEN).unwrap();
    }
    let allocated = mem.allocated_bytes();

    let mut back = dev.batch();
    for h in rx {
        // SAFETY: the simulated fills returned: the device has finished.
        unsafe { back.sync_for_cpu(h) };
    }
    armed.store(true, Ordering::SeqCst);
    let r = catch_unwind(AssertUnwindSafe(|| back.flush()));
    assert!(r.is_err(), "the barrier unwound");
    nothing_freed(&sim, allocated, 3, dev.leaked(), &victims);
}

/// Hole 7, `FixedBatch::flush` of two `sync_for_cpu` items (a `FromDevice`
/// and a `Bidirectional` handle).
#[test]
fn hole7_fixed_batch_flush_unwinding_quarantines() {
    let sim = SimPlatform::noncoherent(RAM);
    let mem = sim.memory();
    let (dev, armed) = panicky_device(&sim);
    let engine = sim.device(&dev);
    let (b1, b2) = (
        mem.alloc_slice_aligned::<u8>(LEN, 64).unwrap(),
        mem.alloc_slice_aligned::<u8>(LEN, 64).unwrap(),
    );
    let victims = [
        range_of(mem.phys_of_buffer(&b1), LEN),
        range_of(mem.phys_of_buffer(&b2), LEN),
    ];
    let (h1, h2) = dev
        .fixed_batch()
        .map_from_device(b1)
        .unwrap()
        .map_bidirectional(b2)
        .unwrap()
        .flush();
    engine.fill(h1.dma_addr(), 0x71, LEN).unwrap();
    engine.fill(h2.dma_addr(), 0x72, LEN).unwrap();
    let allocated = mem.allocated_bytes();

    armed.store(true, Ordering::SeqCst);
    // SAFETY: the simulated fills returned: the device has finished both.
    let batch = unsafe { dev.fixed_batch().sync_for_cpu(h1).sync_for_cpu(h2) };
    let r = catch_unwind(AssertUnwindSafe(|| batch.flush()));
    assert!(r.is_err(), "the barrier unwound");
    nothing_freed(&sim, allocated, 2, dev.leaked(), &victims);
}

/// Hole 7, `SgMapped::sync_for_cpu`: the old list turned CPU-owned before
/// its one barrier; now it stays device-owned until the barrier returns.
#[test]
fn hole7_sg_sync_for_cpu_unwinding_quarantines() {
    let sim = SimPlatform::noncoherent(RAM);
    let mem = sim.memory();
    let (dev, armed) = panicky_device(&sim);
    let engine = sim.device(&dev);
    let bufs: Vec<_> = (0..3)
        .map(|_| mem.alloc_slice_aligned::<u8>(LEN, 64).unwrap())
        .collect();
    let victims: Vec<_> = bufs
        .iter()
        .map(|b| range_of(mem.phys_of_buffer(b), LEN))
        .collect();
    let sg = dev.map_sg::<FromDevice, _, _>(bufs).unwrap();
    for (dma, n) in sg.segments() {
        engine.fill(dma, 0x5c, n).unwrap();
    }
    let allocated = mem.allocated_bytes();

    armed.store(true, Ordering::SeqCst);
    // SAFETY: the simulated fills returned: the device has finished.
    let r = catch_unwind(AssertUnwindSafe(|| unsafe { sg.sync_for_cpu() }));
    assert!(r.is_err(), "the barrier unwound");
    nothing_freed(&sim, allocated, 3, dev.leaked(), &victims);
}

/// Hole 7, the unmap of a CPU-owned prefix handle: unmap syncs the tail the
/// CPU never took back, so its barrier completes an invalidate; when it
/// unwinds, the pending unmap quarantines the buffer.
#[test]
fn hole7_unmap_with_a_pending_tail_sync_unwinding_quarantines() {
    let sim = SimPlatform::noncoherent(RAM);
    let mem = sim.memory();
    let (dev, armed) = panicky_device(&sim);
    let engine = sim.device(&dev);
    let buf = mem.alloc_slice_aligned::<u8>(LEN, 64).unwrap();
    let victim = range_of(mem.phys_of_buffer(&buf), LEN);
    let rx = dev.map_from_device(buf).unwrap();
    engine.fill(rx.dma_addr(), 0x3d, LEN).unwrap();
    // SAFETY: the simulated fill returned: the device has finished.
    let rx = unsafe { rx.sync_prefix_for_cpu(64) }.unwrap();
    assert_eq!(rx.contents(), &[0x3d; 64][..]);
    let allocated = mem.allocated_bytes();

    armed.store(true, Ordering::SeqCst);
    let r = catch_unwind(AssertUnwindSafe(|| rx.unmap()));
    assert!(r.is_err(), "the barrier unwound");
    nothing_freed(&sim, allocated, 1, dev.leaked(), &[victim]);
}

/// The simulated IOMMU, whose sync panics once when armed, before applying
/// any invalidation.
struct PanickyIommu {
    inner: SimIommu,
    armed: Arc<AtomicBool>,
}

// SAFETY: forwards to `SimIommu`, which keeps both promises; an armed
// `sync` unwinds without returning, so it promises nothing (promise 1
// speaks of when `sync` returns), and the invalidations stay queued for
// the next sync.
unsafe impl IommuHardware for PanickyIommu {
    fn invalidate_range(&self, iova: DmaAddr, len: u64) {
        self.inner.invalidate_range(iova, len);
    }

    fn invalidate_all(&self) {
        self.inner.invalidate_all();
    }

    fn sync(&self) {
        if self.armed.swap(false, Ordering::SeqCst) {
            panic!("the IOTLB sync failed (armed by the test)");
        }
        self.inner.sync();
    }
}

/// Hole 7 behind an IOMMU: the IOTLB sync of an unmap unwinds. The buffer
/// is quarantined (the device might still reach it through a stale IOTLB
/// entry), and its IOVA is never freed, so it is never handed out again.
#[test]
fn hole7_iotlb_sync_unwinding_quarantines_buffer_and_iova() {
    let _domains = domains();
    let sim = SimPlatform::new(RAM);
    let mem = sim.memory();
    let armed = Arc::new(AtomicBool::new(false));
    let hw = PanickyIommu {
        inner: SimIommu::new(),
        armed: armed.clone(),
    };
    let dev = Device::new(
        Composed::from_parts(
            mem.clone(),
            IommuDomain::new(hw, InvalidationMode::Strict),
            Coherent,
            NoBounce,
        ),
        DeviceConfig::new(),
    );
    let free = dev.backend().translation().free_pages();
    let buf = mem.alloc_slice::<u8>(LEN).unwrap();
    let victim = range_of(mem.phys_of_buffer(&buf), LEN);
    let rx = dev.map_from_device(buf).unwrap();
    // SAFETY: the device was never started.
    let rx = unsafe { rx.sync_for_cpu() };
    let allocated = mem.allocated_bytes();

    armed.store(true, Ordering::SeqCst);
    let r = catch_unwind(AssertUnwindSafe(|| rx.unmap()));
    assert!(r.is_err(), "the IOTLB sync unwound");
    assert_eq!(mem.allocated_bytes(), allocated, "nothing was freed");
    assert_eq!(dev.leaked(), 1);
    assert!(
        dev.backend().translation().free_pages() < free,
        "the IOVA is never freed before its invalidation completed"
    );
    let fresh = mem.alloc_slice::<u8>(LEN).unwrap();
    assert!(!overlap(victim, range_of(mem.phys_of_buffer(&fresh), LEN)));
    drop(fresh);
    drop(dev); // the domain's own drop syncs (disarmed now) and holds no page
}

// ===========================================================================
// Hole 8: a dropped domain freed page tables a forgotten handle still used.
// ===========================================================================

/// Hole 8. `mem::forget` is safe: a device-owned IOMMU handle forgotten,
/// then its device dropped, used to free the domain's page tables while an
/// entry was live (real IOMMU hardware would go on walking freed memory).
/// Now the domain leaks its tables and counts them; the forgotten buffer
/// stays allocated and granted to its device, and a fresh allocation does
/// not reuse it. The quarantine of a dropped (not forgotten) device-owned
/// handle does the same.
#[test]
fn hole8_forgotten_or_quarantined_iommu_mapping_leaks_the_page_table() {
    let _domains = domains();
    let sim = SimPlatform::new(RAM);
    let mem = sim.memory();

    for forget in [true, false] {
        let before = leaked_tables();
        let allocated = mem.allocated_bytes();
        let victim;
        {
            let dev = sim.iommu_device(InvalidationMode::Strict, DeviceConfig::new());
            let engine = sim.device(&dev);
            let buf = mem.alloc_slice::<u8>(LEN).unwrap();
            victim = range_of(mem.phys_of_buffer(&buf), LEN);
            let rx = dev.map_from_device(buf).unwrap();
            engine.fill(rx.dma_addr(), 0x88, LEN).unwrap();
            assert!(dev.backend().translation().walk(rx.dma_addr()).is_some());
            if forget {
                std::mem::forget(rx);
                assert_eq!(dev.leaked(), 0, "forgetting is not counted on the device");
            } else {
                drop(rx);
                assert_eq!(dev.leaked(), 1);
            }
            drop(engine);
            drop(dev);
        }
        assert_eq!(leaked_tables(), before + 1, "the live table was leaked");
        assert_eq!(mem.allocated_bytes(), allocated + LEN, "the buffer stays");
        let fresh = mem.alloc_slice::<u8>(LEN).unwrap();
        assert!(!overlap(victim, range_of(mem.phys_of_buffer(&fresh), LEN)));
    }
}

/// Hole 8, the control: a device dropped with no live mapping (everything
/// unmapped, in strict and lazy mode) leaks no page table and no memory.
#[test]
fn hole8_a_domain_with_nothing_mapped_leaks_nothing() {
    let _domains = domains();
    let sim = SimPlatform::new(RAM);
    let mem = sim.memory();
    let before = leaked_tables();
    for mode in [InvalidationMode::Strict, InvalidationMode::LAZY] {
        let dev = sim.iommu_device(mode, DeviceConfig::new());
        let engine = sim.device(&dev);
        let rx = dev
            .map_from_device(mem.alloc_slice::<u8>(LEN).unwrap())
            .unwrap();
        engine.fill(rx.dma_addr(), 0x99, LEN).unwrap();
        // SAFETY: the fill returned.
        let rx = unsafe { rx.sync_for_cpu() };
        assert_eq!(rx.contents(), &[0x99; LEN][..]);
        drop(rx.unmap());
        drop(engine);
        drop(dev);
    }
    assert_eq!(leaked_tables(), before);
    assert_eq!(mem.allocated_bytes(), 0);
    assert_eq!(mem.device_owned_bytes(), 0);
}

// ===========================================================================
// The release-mode checks.
// ===========================================================================

/// The simulator's grant table refuses a range handed to a device twice
/// with an `assert!` that holds in release builds too (it was a
/// `debug_assert!`), before anything changes.
#[test]
#[should_panic(expected = "handed to a device twice")]
fn a_double_grant_is_refused_in_every_build() {
    let mem = SimMemory::with_base(PhysAddr::new(0x1000), 4096);
    let mut buf = mem.alloc_slice::<u8>(64).unwrap();
    let ptr = NonNull::from(&mut *buf).cast::<u8>();
    let dev = dmacap::platform::DeviceId::fresh();
    // SAFETY: `buf` is not used again (it is leaked by the unwinding panic
    // below: the grant table keeps its pointer, so the buffer must stay
    // allocated).
    unsafe { mem.ownership_changed(ptr, 64, Side::Device, dev) };
    std::mem::forget(buf);
    // SAFETY: as above.
    unsafe { mem.ownership_changed(ptr, 64, Side::Device, dev) };
}
