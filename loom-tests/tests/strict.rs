//! A loom model of strict IOMMU invalidation with two threads: each flushes
//! a batch of unmaps whose gathered invalidation spans the other thread's
//! IOVAs too (their ranges interleave in the IOVA space), and each flush
//! must have completed its own invalidation before it returns.

mod common;

use common::{Mutation, assert_fails, model, pin_cpu, spawn};
use dmacap_loom as dmacap;

use dmacap::backend::compose::{Coherent, Composed, NoBounce};
use dmacap::backend::iommu::{InvalidationMode, IommuDomain};
use dmacap::sim::{SimBuffer, SimDevice, SimFault, SimIommu, SimMemory};
use dmacap::{Bidirectional, DevOwned, Device, DeviceConfig, Mapped, PhysAddr};

const PAGE: usize = 4096;

type IommuBackend = Composed<SimMemory, IommuDomain<SimIommu>, Coherent, NoBounce>;
type IommuDev = Device<IommuBackend>;
type Handle = Mapped<'static, Bidirectional, DevOwned, SimBuffer<[u8]>, IommuBackend>;

/// Both threads on one CPU (an IOVA one frees is the next the other
/// allocates), and each on its own.
const CPUS: [[usize; 2]; 2] = [[0, 0], [0, 1]];

/// Two threads each own two one-page bidirectional mappings, made
/// alternately (A, B, A, B top-down: each thread's gathered span covers one
/// of the other's pages) and each written once by the device, so that their
/// translations sit in the IOTLB. Each thread unmaps its two in one batch
/// and flushes; as soon as the flush returns, a device access at either
/// old IOVA faults (untranslated, or denied by a write-only mapping made
/// since): the device cannot reach the returned buffers. Then each maps a
/// new buffer and the device's write through it lands there. The IOTLB is
/// never used stale, and every IOVA comes back.
fn strict_flushes() {
    for cpus in CPUS {
        model(move || {
            let mem = SimMemory::with_base(PhysAddr::new(0x8000_0000), 64 * 1024);
            let domain = IommuDomain::new(SimIommu::new(), InvalidationMode::Strict);
            let dev: &'static IommuDev = Box::leak(Box::new(Device::new(
                Composed::from_parts(mem.clone(), domain, Coherent, NoBounce),
                DeviceConfig::new(),
            )));
            let total = dev.backend().translation().free_pages();
            let engine = SimDevice::new(dev, mem.clone());
            let mut handles: Vec<Handle> = (0..4)
                .map(|_| {
                    let buf = mem.alloc_slice_aligned::<u8>(PAGE, PAGE).unwrap();
                    let h = dev.map_bidirectional(buf).unwrap();
                    engine.write(h.dma_addr(), b"old").unwrap();
                    h
                })
                .collect();
            let (b2, a2) = (handles.pop().unwrap(), handles.pop().unwrap());
            let (b1, a1) = (handles.pop().unwrap(), handles.pop().unwrap());
            let threads: Vec<_> = [(a1, a2), (b1, b2)]
                .into_iter()
                .zip(cpus)
                .map(|((h1, h2), cpu)| {
                    let mem = mem.clone();
                    spawn(move || {
                        pin_cpu(cpu);
                        let old = [h1.dma_addr(), h2.dma_addr()];
                        let mut batch = dev.batch();
                        // SAFETY: the device's writes returned before the spawn.
                        unsafe {
                            batch.unmap_device_owned(h1);
                            batch.unmap_device_owned(h2);
                        }
                        let bufs = batch.flush();
                        let engine = SimDevice::new(dev, mem.clone());
                        for dma in old {
                            let mut seen = [0u8; 3];
                            match engine.read(dma, &mut seen) {
                                Err(SimFault::Untranslated { .. } | SimFault::Denied { .. }) => {}
                                other => panic!(
                                    "the device reached an unmapped buffer after its flush: \
                                     {other:?}"
                                ),
                            }
                        }
                        drop(bufs);
                        let fresh = mem.alloc_slice_aligned::<u8>(PAGE, PAGE).unwrap();
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
                        drop(c.unmap());
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            let domain = dev.backend().translation();
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
fn concurrent_strict_flushes_complete_their_own_invalidations() {
    strict_flushes();
}

#[test]
fn concurrent_strict_flushes_fail_when_a_flush_takes_every_threads_unmaps() {
    assert_fails(
        strict_flushes,
        Mutation::GatherTakesAll,
        &["reached an unmapped buffer", "stale IOTLB entry"],
    );
}

#[test]
fn concurrent_strict_flushes_fail_when_a_flush_does_not_wait_for_its_invalidation() {
    assert_fails(
        strict_flushes,
        Mutation::StrictIssueWithoutSync,
        &["reached an unmapped buffer", "stale IOTLB entry"],
    );
}

#[test]
fn concurrent_strict_flushes_fail_when_iovas_are_freed_before_their_invalidation() {
    assert_fails(
        strict_flushes,
        Mutation::StrictFreeBeforeInvalidate,
        &["stale IOTLB entry", "NotDeviceOwned"],
    );
}
