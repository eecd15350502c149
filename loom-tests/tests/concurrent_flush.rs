//! loom models of part 3's concurrency: batches of unmaps flushed at once
//! against one IOMMU domain in lazy mode, and concurrent maps and unmaps on
//! one bounce pool. They run on dmacap's own source compiled with loom's
//! mutexes and atomics (`loom-tests/shadow`).

use std::sync::Arc;

use dmacap_loom as dmacap;

use dmacap::backend::compose::{Coherent, Composed, NoBounce};
use dmacap::backend::direct::Direct;
use dmacap::backend::iommu::{InvalidationMode, IommuDomain};
use dmacap::sim::{SimDevice, SimIommu, SimMemory};
use dmacap::{Device, DeviceConfig, DmaAddr, MapErrorKind, PhysAddr};
use loom::thread;

const PAGE: usize = 4096;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let f = Arc::new(f);
    let mut b = loom::model::Builder::new();
    // Every interleaving with up to two preemptions: enough for the races
    // below (retire vs. reallocate, two retirements at once), small enough
    // to finish in seconds.
    b.preemption_bound = Some(2);
    b.check(move || {
        // loom's model threads have small stacks; the IOMMU's page-table
        // code wants more, so the model body runs on a thread with a big one.
        let f = f.clone();
        spawn(move || f()).join().unwrap();
    });
}

/// A loom thread with a stack big enough for dmacap's deeper paths.
fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> thread::JoinHandle<T> {
    thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(f)
        .expect("spawn")
}

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
/// in its own memory.
#[test]
fn lazy_retire_never_hands_out_a_stale_iova() {
    model(|| {
        let (mem, dev, mut handles) = lazy_device(1);
        let old = handles.pop().unwrap();
        let fresh = mem.alloc_slice_aligned::<u8>(PAGE, PAGE).unwrap();
        let retire = spawn(move || {
            let mut batch = dev.batch();
            // SAFETY: the device's write returned before the spawn.
            unsafe { batch.unmap_device_owned(old) };
            drop(batch.flush());
            dev.backend().translation().flush_queue(dev.context());
        });
        let engine = SimDevice::new(dev, mem.clone());
        let c = dev.map_from_device(fresh).unwrap();
        engine.write(c.dma_addr(), b"new").unwrap();
        // SAFETY: the write returned.
        let c = unsafe { c.sync_for_cpu() };
        assert_eq!(
            &c.contents()[..3],
            b"new",
            "the device wrote through a stale IOTLB entry"
        );
        retire.join().unwrap();
    });
}

/// Two threads flush batches of unmaps (and their lazy queues) at once.
/// Afterwards nothing is left queued, no translation of an unmapped buffer
/// survives in the IOTLB, and every IOVA is free again: no invalidation was
/// lost.
#[test]
fn concurrent_lazy_flushes_lose_no_invalidation() {
    model(|| {
        let (mem, dev, handles) = lazy_device(2);
        let total = dev.backend().translation().free_pages() + 2;
        let old: Vec<DmaAddr> = handles.iter().map(|h| h.dma_addr()).collect();
        let threads: Vec<_> = handles
            .into_iter()
            .map(|h| {
                spawn(move || {
                    let mut batch = dev.batch();
                    // SAFETY: the device's write returned before the spawn.
                    unsafe { batch.unmap_device_owned(h) };
                    drop(batch.flush());
                    dev.backend().translation().flush_queue(dev.context());
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let domain = dev.backend().translation();
        assert_eq!(domain.queued(), 0, "an unmap was left queued");
        let engine = SimDevice::new(dev, mem);
        for dma in old {
            assert!(
                engine.write(dma, b"x").is_err(),
                "a stale translation survived"
            );
        }
        assert_eq!(domain.free_pages(), total, "an IOVA was lost");
    });
}

/// Two threads map, use and unmap through one bounce pool too small for
/// more than two mappings: no slot is handed to both (each device read sees
/// its own bytes), a map that finds the pool full fails with the buffer
/// back, and every slot is free again at the end.
#[test]
fn bounce_pool_never_hands_a_slot_to_two_mappings() {
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
