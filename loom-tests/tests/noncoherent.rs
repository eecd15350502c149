//! A loom model of batches on a non-coherent device used by two threads at
//! once, on the simulated arm64-like cache: cache maintenance is issued per
//! buffer and a thread's completion barrier completes only the maintenance
//! *that thread* issued (`SimCache` keeps one queue per thread, as a `dsb`
//! waits only for its own CPU's `dc` operations).

mod common;

use common::{Mutation, assert_fails, model, spawn};
use dmacap_loom as dmacap;

use dmacap::backend::noncoherent::DirectNonCoherent;
use dmacap::sim::{SimBuffer, SimCache, SimDevice, SimMemory, SimPlatform};
use dmacap::{Device, DeviceConfig};

type NcBackend = DirectNonCoherent<SimMemory, SimCache>;
type NcDev = Device<NcBackend>;
type BidiHandle =
    dmacap::Mapped<'static, dmacap::Bidirectional, dmacap::DevOwned, SimBuffer<[u8]>, NcBackend>;

/// Two threads each build and flush batches on one non-coherent device: a
/// batch mapping a bidirectional buffer (the clean of the CPU's bytes is
/// issued, the flush completes it), the device reading it and writing an
/// answer, and a batch syncing it back (the invalidate is issued, the
/// flush completes it). Each thread's device read sees the bytes its CPU
/// wrote, and each CPU sees the device's answer: every thread's flush
/// completed its own maintenance, whatever the other thread did meanwhile.
fn two_threads_batch() {
    model(|| {
        let sim = SimPlatform::noncoherent(4096);
        let mem = sim.memory().clone();
        let dev: &'static NcDev = Box::leak(Box::new(Device::new(
            DirectNonCoherent::new(mem.clone(), mem.cache().unwrap()),
            DeviceConfig::new(),
        )));
        let worker = |seed: u8| {
            let mem = mem.clone();
            spawn(move || {
                let mut buf = mem.alloc_slice_aligned::<u8>(64, 64).unwrap();
                buf.fill(seed);
                let mut maps = dev.batch::<BidiHandle>();
                maps.map(buf).unwrap();
                let h = maps.flush().pop().unwrap();
                let engine = SimDevice::new(dev, mem);
                let mut seen = [0u8; 64];
                engine.read(h.dma_addr(), &mut seen).unwrap();
                assert_eq!(
                    seen, [seed; 64],
                    "the device read memory whose clean was never completed"
                );
                engine.write(h.dma_addr(), &[!seed; 64]).unwrap();
                let mut back = dev.batch();
                // SAFETY: the device's write returned.
                unsafe { back.sync_for_cpu(h) };
                let h = back.flush().pop().unwrap();
                assert_eq!(
                    h.contents(),
                    &[!seed; 64][..],
                    "the CPU read lines whose invalidate was never completed"
                );
                drop(h.unmap());
            })
        };
        let a = worker(0x11);
        let b = worker(0x22);
        a.join().unwrap();
        b.join().unwrap();
        assert_eq!(dev.leaked(), 0);
        assert_eq!(mem.cache().unwrap().pending(), 0, "maintenance left issued");
    });
}

#[test]
fn two_threads_batch_on_one_noncoherent_device() {
    two_threads_batch();
}

#[test]
fn two_threads_batch_on_one_noncoherent_device_fails_with_a_device_wide_pending_flag() {
    assert_fails(
        two_threads_batch,
        Mutation::DeviceWidePendingFlag,
        &["was never completed"],
    );
}
