//! loom models of part 3's concurrency: batches of unmaps flushed at once
//! against one IOMMU domain in lazy mode, and concurrent maps and unmaps on
//! one bounce pool. They run on dmacap's own source compiled with loom's
//! mutexes and atomics (`loom-tests/shadow`).

mod common;

use std::sync::Arc;

use common::{Mutation, assert_fails, model, pin_cpu, spawn};
use dmacap_loom as dmacap;

use dmacap::backend::compose::{Coherent, Composed, NoBounce};
use dmacap::backend::direct::Direct;
use dmacap::backend::iommu::{InvalidationMode, IommuDomain};
use dmacap::sim::{SimDevice, SimFault, SimIommu, SimMemory};
use dmacap::{Device, DeviceConfig, DmaAddr, MapErrorKind, PhysAddr};

const PAGE: usize = 4096;

/// The CPU assignments the IOMMU models run under: both threads on one CPU
/// (they share the per-CPU IOVA caches and flush queue, so an IOVA one
/// frees is the next the other allocates), and each on its own.
const CPUS: [[usize; 2]; 2] = [[0, 0], [0, 1]];

type IommuDev = Device<IommuBackend>;

type IommuBackend = Composed<SimMemory, IommuDomain<SimIommu>, Coherent, NoBounce>;
type RxHandle = dmacap::Mapped<
    'static,
    dmacap::FromDevice,
    dmacap::DevOwned,
    dmacap::sim::SimBuffer<[u8]>,
    IommuBackend,
>;

/// A lazy-mode device with `n` one-page receive buffers mapped, each
/// written once by the device so that its translation sits in the IOTLB.
fn lazy_device(n: usize) -> (SimMemory, &'static IommuDev, Vec<RxHandle>) {
    let mem = SimMemory::with_base(PhysAddr::new(0x8000_0000), 64 * 1024);
    let domain = IommuDomain::new(
        SimIommu::new(),
        InvalidationMode::Lazy {
            queue_len: 256,
            timeout_ms: 10,
        },
    );
    let dev: &'static IommuDev = Box::leak(Box::new(Device::new(
        Composed::from_parts(mem.clone(), domain, Coherent, NoBounce),
        DeviceConfig::new(),
    )));
    let engine = SimDevice::new(dev, mem.clone());
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let h = dev
                .map_from_device(mem.alloc_slice_aligned::<u8>(PAGE, PAGE).unwrap())
                .unwrap();
            engine.write(h.dma_addr(), b"old").unwrap();
            h
        })
        .collect();
    (mem, dev, handles)
}

/// One thread retires a buffer (a batch of unmaps, then the flush of the
/// lazy queue, as its timer would) while another maps a new buffer and lets
/// the device write through it. The new mapping never gets an IOVA whose
/// stale IOTLB entry still points at the retired buffer: its bytes arrive,
/// in its own memory. Run with both threads on one CPU (where the retired
/// IOVA is the next one handed out) and on two.
fn lazy_retire() {
    for cpus in CPUS {
        model(move || {
            let (mem, dev, mut handles) = lazy_device(1);
            let old = handles.pop().unwrap();
            let fresh = mem.alloc_slice_aligned::<u8>(PAGE, PAGE).unwrap();
            let retire = spawn(move || {
                pin_cpu(cpus[0]);
                let mut batch = dev.batch();
                // SAFETY: the device's write returned before the spawn.
                unsafe { batch.unmap_device_owned(old) };
                drop(batch.flush());
                dev.backend().translation().flush_queue(dev.context());
            });
            pin_cpu(cpus[1]);
            let engine = SimDevice::new(dev, mem.clone());
            let c = dev.map_from_device(fresh).unwrap();
            engine
                .write(c.dma_addr(), b"new")
                .expect("the device's write to a new mapping");
            // SAFETY: the write returned.
            let c = unsafe { c.sync_for_cpu() };
            assert_eq!(
                &c.contents()[..3],
                b"new",
                "the device wrote through a stale IOTLB entry"
            );
            retire.join().unwrap();
            let hw = dev.backend().translation().hardware();
            assert_eq!(hw.stale_hits(), 0, "the device used a stale IOTLB entry");
        });
    }
}

#[test]
fn lazy_retire_never_hands_out_a_stale_iova() {
    lazy_retire();
}

#[test]
fn lazy_retire_never_hands_out_a_stale_iova_fails_freeing_before_the_invalidation() {
    assert_fails(
        lazy_retire,
        Mutation::LazyFreeBeforeInvalidate,
        &["NotDeviceOwned", "stale IOTLB entry"],
    );
}

#[test]
fn lazy_retire_never_hands_out_a_stale_iova_fails_without_the_invalidation() {
    assert_fails(
        lazy_retire,
        Mutation::LazyNoInvalidate,
        &["NotDeviceOwned", "stale IOTLB entry"],
    );
}

/// Two threads flush batches of unmaps (and their lazy queues) at once,
/// then each maps a new buffer, lets the device write it, and unmaps it.
/// Every new mapping works and receives its bytes; afterwards nothing is
/// left queued, every old IOVA faults as untranslated (an IOMMU fault, not
/// a stale IOTLB hit that the simulator's RAM refuses), the IOTLB was never
/// used stale, and every IOVA is free again: no invalidation was lost.
fn lazy_flushes() {
    for cpus in CPUS {
        model(move || {
            let (mem, dev, handles) = lazy_device(2);
            let domain = dev.backend().translation();
            let total = domain.free_pages() + 2;
            let old: Vec<DmaAddr> = handles.iter().map(|h| h.dma_addr()).collect();
            let threads: Vec<_> = handles
                .into_iter()
                .zip(cpus)
                .map(|(h, cpu)| {
                    let mem = mem.clone();
                    spawn(move || {
                        pin_cpu(cpu);
                        let mut batch = dev.batch();
                        // SAFETY: the device's write returned before the spawn.
                        unsafe { batch.unmap_device_owned(h) };
                        drop(batch.flush());
                        dev.backend().translation().flush_queue(dev.context());
                        let fresh = mem.alloc_slice_aligned::<u8>(PAGE, PAGE).unwrap();
                        let c = dev
                            .map_from_device(fresh)
                            .expect("a new mapping after the flush");
                        SimDevice::new(dev, mem)
                            .write(c.dma_addr(), b"new")
                            .expect("the device's write to a new mapping");
                        // SAFETY: the write returned.
                        let c = unsafe { c.sync_for_cpu() };
                        assert_eq!(
                            &c.contents()[..3],
                            b"new",
                            "the device wrote through a stale IOTLB entry"
                        );
                        drop(c.unmap());
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            domain.flush_queue(dev.context());
            assert_eq!(domain.queued(), 0, "an unmap was left queued");
            let engine = SimDevice::new(dev, mem);
            for dma in old {
                match engine.write(dma, b"x") {
                    Err(SimFault::Untranslated { .. }) => {}
                    other => panic!("a stale translation survived: {other:?}"),
                }
            }
            assert_eq!(
                domain.hardware().stale_hits(),
                0,
                "the device used a stale IOTLB entry"
            );
            assert_eq!(domain.free_pages(), total, "an IOVA was lost");
        });
    }
}

#[test]
fn concurrent_lazy_flushes_lose_no_invalidation() {
    lazy_flushes();
}

#[test]
fn concurrent_lazy_flushes_lose_no_invalidation_fails_without_the_invalidation() {
    assert_fails(
        lazy_flushes,
        Mutation::LazyNoInvalidate,
        &[
            "a stale translation survived",
            "stale IOTLB entry",
            "NotDeviceOwned",
        ],
    );
}

#[test]
fn concurrent_lazy_flushes_lose_no_invalidation_fails_queueing_before_clearing() {
    assert_fails(
        lazy_flushes,
        Mutation::LazyQueueBeforeClear,
        &["refused the mapping"],
    );
}

/// Two threads map, use and unmap through one bounce pool too small for
/// more than two mappings: no slot is handed to both (each device read sees
/// its own bytes), a map that finds the pool full fails with the buffer
/// back, and every slot is free again at the end.
fn bounce_pool() {
    model(|| {
        let mem = SimMemory::with_base(PhysAddr::new(0x8000_0000), 64 * 1024);
        let pool = Arc::new(
            mem.swiotlb(2 * dmacap::backend::bounce::SLOT_SIZE, 1)
                .unwrap(),
        );
        // A 16-bit mask: every buffer in this RAM must bounce, the pool is
        // reachable through a window that maps it low.
        let windows =
            dmacap::backend::direct::DmaWindows::new(&[dmacap::backend::direct::DmaWindow {
                cpu_start: PhysAddr::new(0x8000_0000),
                dma_start: DmaAddr::new(0),
                size: 64 * 1024,
            }])
            .unwrap();
        let dev: &'static Device<_> = Box::leak(Box::new(Device::new(
            Composed::from_parts(mem.clone(), Direct::new(windows), Coherent, pool.clone()),
            DeviceConfig::new().dma_mask(dmacap::DmaMask::bits(15)),
        )));
        let worker = |seed: u8, buf: dmacap::sim::SimBuffer<[u8]>| {
            let mem = mem.clone();
            spawn(move || {
                let mut buf = buf;
                buf.fill(seed);
                match dev.map_to_device(buf) {
                    Ok(h) => {
                        let mut seen = [0u8; 64];
                        SimDevice::new(dev, mem)
                            .read(h.dma_addr(), &mut seen)
                            .unwrap();
                        assert!(seen.iter().all(|&b| b == seed), "a slot was shared");
                        // SAFETY: the read returned.
                        drop(unsafe { h.unmap() });
                    }
                    Err(e) => {
                        assert!(matches!(e.kind(), MapErrorKind::BouncePoolExhausted { .. }));
                        assert!(e.into_buffer().iter().all(|&b| b == seed));
                    }
                }
            })
        };
        // Buffers above the 32 KiB the mask reaches: they must bounce.
        let _low = mem.alloc_slice::<u8>(48 * 1024).unwrap();
        let b1 = mem.alloc_slice::<u8>(64).unwrap();
        let b2 = mem.alloc_slice::<u8>(64).unwrap();
        let t1 = worker(1, b1);
        let t2 = worker(2, b2);
        t1.join().unwrap();
        t2.join().unwrap();
        assert_eq!(pool.free_slots(), pool.total_slots(), "a slot was lost");
    });
}

#[test]
fn bounce_pool_never_hands_a_slot_to_two_mappings() {
    bounce_pool();
}

#[test]
fn bounce_pool_never_hands_a_slot_to_two_mappings_fails_with_an_unlocked_choice() {
    assert_fails(
        bounce_pool,
        Mutation::BounceChoiceUnlocked,
        &[
            "a slot was shared",
            "a slot was lost",
            "first_used",
            "released but not in use",
        ],
    );
}
