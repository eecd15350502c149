//! loom models of the concurrency in dmacap's core: handles moved between
//! threads, the per-device leak counters, and the simulated RAM's allocator.
//!
//! They run on `dmacap-loom`, dmacap's own source compiled with loom's
//! atomics and mutex (see `src/sync.rs`).

use dmacap_loom as dmacap;

use dmacap::backend::direct::DirectCoherent;
use dmacap::sim::{SimMemory, SimPlatform};
use dmacap::{DeviceConfig, DmaAddr};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;

type SimDev = dmacap::Device<DirectCoherent<SimMemory>>;

fn leak_device(sim: &SimPlatform) -> &'static SimDev {
    Box::leak(Box::new(sim.coherent_device_with(
        DeviceConfig::new(),
        dmacap::backend::direct::DmaWindows::identity(),
    )))
}

/// Two threads drop device-owned handles at once: both are quarantined and
/// both are counted (the counters are atomic read-modify-writes, so no
/// increment is lost in any interleaving).
#[test]
fn concurrent_leaks_are_all_counted() {
    loom::model(|| {
        let sim = SimPlatform::new(4096);
        let dev = leak_device(&sim);
        let a = dev
            .map_from_device(sim.memory().alloc_slice::<u8>(10).unwrap())
            .unwrap();
        let b = dev
            .map_from_device(sim.memory().alloc_slice::<u8>(20).unwrap())
            .unwrap();
        let t = thread::spawn(move || drop(a));
        drop(b);
        t.join().unwrap();
        assert_eq!(dev.leaked(), 2);
        assert_eq!(dev.stats().leaked_bytes(), 30);
        assert_eq!(sim.memory().allocated_bytes(), 30);
    });
}

/// A device-owned handle is sent to a completion thread, which waits for the
/// device's completion flag (acquire) and only then syncs it for the CPU.
/// The bytes the device wrote before raising the flag (release) are seen.
#[test]
fn completion_thread_syncs_after_observing_the_device() {
    loom::model(|| {
        let sim = SimPlatform::new(4096);
        let dev = leak_device(&sim);
        let rx = dev
            .map_from_device(sim.memory().alloc_slice::<u8>(4).unwrap())
            .unwrap();
        let dma: DmaAddr = rx.dma_addr();
        let done = Arc::new(AtomicBool::new(false));

        let completion = {
            let done = done.clone();
            thread::spawn(move || {
                while !done.load(Ordering::Acquire) {
                    thread::yield_now();
                }
                // SAFETY: the device raised its completion flag after its
                // last access, and this load observed it with acquire.
                let rx = unsafe { rx.sync_for_cpu() };
                rx.contents().to_vec()
            })
        };

        // The device: write the packet, then signal completion.
        sim.device(dev).write(dma, b"pkt!").unwrap();
        done.store(true, Ordering::Release);

        assert_eq!(completion.join().unwrap(), b"pkt!");
        assert_eq!(dev.leaked(), 0);
    });
}

/// Two threads allocate, map, unmap and free simulated buffers at once: no
/// byte is handed to both, and every byte comes back.
#[test]
fn simulated_allocator_never_hands_out_a_byte_twice() {
    loom::model(|| {
        let sim = SimPlatform::new(256);
        let dev = leak_device(&sim);
        let mem = sim.memory().clone();
        let worker = {
            let mem = mem.clone();
            thread::spawn(move || {
                let mut b = mem.alloc_slice::<u8>(100).unwrap();
                b.fill(0xaa);
                let h = dev.map_to_device(b).unwrap();
                // SAFETY: no device access was started.
                let b = unsafe { h.unmap() };
                assert!(
                    b.iter().all(|&x| x == 0xaa),
                    "another allocation wrote here"
                );
            })
        };
        let mut mine = mem.alloc_slice::<u8>(100).unwrap();
        mine.fill(0x55);
        thread::yield_now();
        assert!(
            mine.iter().all(|&x| x == 0x55),
            "another allocation wrote here"
        );
        drop(mine);
        worker.join().unwrap();
        assert_eq!(mem.free_bytes(), 256);
    });
}
