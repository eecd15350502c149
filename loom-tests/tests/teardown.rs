//! A loom model of a batch flush racing an attempt to tear its device
//! down: the device is shared through an `Arc`, and the owner tries to take
//! it back (`Arc::try_unwrap`) at every point of the flushing thread's
//! life. Handles and batches borrow their device, so the attempt succeeds
//! only once that thread has let go of it; when it does, everything the
//! thread's flush returned must already be out of the device's reach, and
//! the domain must keep the page table of a mapping that lives on.

mod common;

use std::sync::{Mutex, MutexGuard};

use common::{Mutation, assert_fails, model, spawn};
use dmacap_loom as dmacap;

use dmacap::backend::compose::{Coherent, Composed, NoBounce};
use dmacap::backend::iommu::{InvalidationMode, IommuDomain};
use dmacap::sim::{SimDevice, SimFault, SimIommu, SimMemory};
use dmacap::{Device, DeviceConfig, DmaAddr, PhysAddr};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicU64, Ordering};

const PAGE: usize = 4096;

type IommuDev = Device<Composed<SimMemory, IommuDomain<SimIommu>, Coherent, NoBounce>>;

/// `IommuDomain::leaked_page_tables` counts for the whole process: the
/// tests of this file, which read it, run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn leaked_tables() -> usize {
    IommuDomain::<SimIommu>::leaked_page_tables()
}

/// A thread maps two buffers on a strict-IOMMU device, lets the device
/// write both, unmaps one in a batch and flushes, and drops the other
/// device-owned (quarantined: its mapping lives on). Meanwhile the owner
/// attempts the teardown once. If the attempt succeeds (the thread has let
/// go), the device at that moment faults on the IOVA the flush unmapped;
/// whoever drops the device last tears it down, and the domain leaks
/// (never frees) the page table the quarantined mapping still uses.
fn flush_vs_teardown() {
    model(|| {
        let mem = SimMemory::with_base(PhysAddr::new(0x8000_0000), 64 * 1024);
        let domain = IommuDomain::new(SimIommu::new(), InvalidationMode::Strict);
        let dev = Arc::new(Device::new(
            Composed::from_parts(mem.clone(), domain, Coherent, NoBounce),
            DeviceConfig::new(),
        ));
        let tables = leaked_tables();
        // The IOVA the thread's flush unmapped (0 until the flush returned).
        let unmapped = Arc::new(AtomicU64::new(0));
        let flusher = {
            let (dev, mem, unmapped) = (dev.clone(), mem.clone(), unmapped.clone());
            spawn(move || {
                let dev: &IommuDev = &dev;
                let engine = SimDevice::new(dev, mem.clone());
                let rx = dev
                    .map_bidirectional(mem.alloc_slice_aligned::<u8>(PAGE, PAGE).unwrap())
                    .unwrap();
                let kept = dev
                    .map_from_device(mem.alloc_slice_aligned::<u8>(PAGE, PAGE).unwrap())
                    .unwrap();
                engine.write(rx.dma_addr(), b"pkt").unwrap();
                engine.write(kept.dma_addr(), b"late").unwrap();
                let dma = rx.dma_addr();
                let mut batch = dev.batch();
                // SAFETY: the device's write returned.
                unsafe { batch.unmap_device_owned(rx) };
                let buf = batch.flush().pop().unwrap();
                assert_eq!(&buf[..3], b"pkt");
                // Dropped device-owned: quarantined, its mapping stays.
                drop(kept);
                unmapped.store(dma.as_u64(), Ordering::Relaxed);
                buf
            })
        };
        // The teardown attempt, at any point of the flusher's life.
        match Arc::try_unwrap(dev) {
            Ok(dev) => {
                // The flusher has let go of the device: its flush returned.
                let dma = DmaAddr::new(unmapped.load(Ordering::Relaxed));
                assert_ne!(dma.as_u64(), 0, "torn down under a running flush");
                let mut seen = [0u8; 3];
                match SimDevice::new(&dev, mem.clone()).read(dma, &mut seen) {
                    Err(SimFault::Untranslated { .. }) => {}
                    other => panic!(
                        "at teardown the device still reached a buffer its flush returned: \
                         {other:?}"
                    ),
                }
                drop(dev);
            }
            // Refused: the flusher still holds the device, and tears it down
            // when it lets go.
            Err(dev) => drop(dev),
        }
        let buf = flusher.join().unwrap();
        assert_eq!(
            leaked_tables(),
            tables + 1,
            "the page table of a live (quarantined) mapping was freed"
        );
        assert_eq!(mem.device_owned_bytes(), PAGE, "the quarantined buffer");
        drop(buf);
    });
}

#[test]
fn batch_flush_races_a_device_teardown_attempt() {
    let _serial = serial();
    flush_vs_teardown();
}

#[test]
fn batch_flush_races_a_device_teardown_attempt_fails_when_the_flush_does_not_wait() {
    let _serial = serial();
    assert_fails(
        flush_vs_teardown,
        Mutation::StrictIssueWithoutSync,
        &["still reached a buffer its flush returned"],
    );
}

#[test]
fn batch_flush_races_a_device_teardown_attempt_fails_when_the_domain_frees_live_tables() {
    let _serial = serial();
    assert_fails(
        flush_vs_teardown,
        Mutation::DomainDropFreesLiveTables,
        &["was freed"],
    );
}
