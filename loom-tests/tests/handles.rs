//! loom models of the concurrency in dmacap's core: handles moved between
//! threads, the per-device leak counters, and the simulated RAM's allocator.
//!
//! They run on `dmacap-loom`, dmacap's own source compiled with loom's
//! atomics and mutex (see `src/sync.rs`). Each model is a function; a test
//! runs it as it is (it must pass) and one test per mutation runs it with
//! that protection removed (it must fail, for the reason named).

mod common;

use common::{ModelMutation, Mutation, assert_fails, assert_fails_model, model_mutated};
use dmacap_loom as dmacap;

use dmacap::backend::direct::DirectCoherent;
use dmacap::sim::{SimMemory, SimPlatform};
use dmacap::{DeviceConfig, DmaAddr};
use loom::cell::UnsafeCell;
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
fn leaks_counted() {
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
        assert_eq!(dev.leaked(), 2, "a leak was not counted");
        assert_eq!(dev.stats().leaked_bytes(), 30, "leaked bytes were lost");
        assert_eq!(sim.memory().allocated_bytes(), 30);
    });
}

#[test]
fn concurrent_leaks_are_all_counted() {
    leaks_counted();
}

#[test]
fn concurrent_leaks_are_all_counted_fails_with_a_load_and_store_count() {
    assert_fails(
        leaks_counted,
        Mutation::LeakCountLoadStore,
        &["a leak was not counted", "leaked bytes were lost"],
    );
}

/// What the device reports when it is done: the length of what it wrote
/// (a used-ring element), written by the device before it raises the
/// flag, read by the completion thread after it sees the flag.
struct Completion {
    len: UnsafeCell<usize>,
    done: AtomicBool,
}

// SAFETY: `len` is written once by the device before `done` is raised
// (release) and read only after `done` is seen (acquire); loom checks that
// the two accesses are ordered (the model's point).
unsafe impl Sync for Completion {}

/// A device-owned handle is sent to a completion thread, which waits for the
/// device's completion flag (acquire), reads the length the device
/// reported, and only then syncs the buffer for the CPU. The length and the
/// bytes the device wrote before raising the flag (release) are seen. The
/// length is a location only the flag orders (loom checks every access to
/// it); the buffer's bytes are also ordered by the simulator's own lock.
fn completion_syncs_after_the_device() {
    loom::model(|| {
        let (store, load) = if model_mutated(ModelMutation::FlagRelaxed) {
            (Ordering::Relaxed, Ordering::Relaxed)
        } else {
            (Ordering::Release, Ordering::Acquire)
        };
        let sim = SimPlatform::new(4096);
        let dev = leak_device(&sim);
        let rx = dev
            .map_from_device(sim.memory().alloc_slice::<u8>(8).unwrap())
            .unwrap();
        let dma: DmaAddr = rx.dma_addr();
        let used = Arc::new(Completion {
            len: UnsafeCell::new(0),
            done: AtomicBool::new(false),
        });

        let completion = {
            let used = used.clone();
            thread::spawn(move || {
                while !used.done.load(load) {
                    thread::yield_now();
                }
                // SAFETY: the device wrote `len` before raising the flag,
                // and never again (see `Completion`).
                let len = used.len.with(|p| unsafe { *p });
                // SAFETY: the device raised its completion flag after its
                // last access, and this load observed it with acquire.
                let rx = unsafe { rx.sync_for_cpu() };
                rx.contents()[..len].to_vec()
            })
        };

        // The device: write the packet, report its length, then signal
        // completion.
        sim.device(dev).write(dma, b"pkt!").unwrap();
        // SAFETY: only this (device) thread writes `len`, before the flag.
        used.len.with_mut(|p| unsafe { *p = 4 });
        used.done.store(true, store);

        assert_eq!(completion.join().unwrap(), b"pkt!");
        assert_eq!(dev.leaked(), 0);
    });
}

#[test]
fn completion_thread_syncs_after_observing_the_device() {
    completion_syncs_after_the_device();
}

#[test]
fn completion_thread_syncs_after_observing_the_device_fails_with_a_relaxed_flag() {
    assert_fails_model(
        completion_syncs_after_the_device,
        ModelMutation::FlagRelaxed,
        &["Causality violation"],
    );
}

/// Two threads allocate, map, unmap and free simulated buffers at once: no
/// byte is handed to both, and every byte comes back.
fn allocator_exclusive() {
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
        assert_eq!(mem.free_bytes(), 256, "simulated RAM was lost");
    });
}

#[test]
fn simulated_allocator_never_hands_out_a_byte_twice() {
    allocator_exclusive();
}

#[test]
fn simulated_allocator_never_hands_out_a_byte_twice_fails_with_an_unlocked_choice() {
    assert_fails(
        allocator_exclusive,
        Mutation::SimAllocChoiceUnlocked,
        &[
            "another allocation wrote here",
            "freed twice",
            "simulated RAM was lost",
        ],
    );
}
