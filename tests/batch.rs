//! Batches and scatter-gather lists on the simulated non-coherent platform:
//! the batched and one-by-one paths deliver the same bytes, the batched one
//! with one barrier; unflushed batches quarantine; scatter-gather respects
//! the device's segment limits and gives every buffer back on error.

use dmacap::backend::direct::DmaWindows;
use dmacap::backend::noncoherent::DirectNonCoherent;
use dmacap::sim::{SimBuffer, SimCache, SimMemory, SimPlatform};
use dmacap::{Bidirectional, DeviceConfig, DmaAddr, DmaMask, FromDevice, MapErrorKind, ToDevice};

const LEN: usize = 256;

fn packet(i: usize) -> Vec<u8> {
    (0..LEN).map(|b| (b * 7 + i * 13) as u8).collect()
}

/// Sends eight packets through a loopback (tx → rx copy by the device),
/// either one handle at a time or in batches, and returns what the CPU
/// received plus the barriers it took.
fn loopback(batched: bool) -> (Vec<Vec<u8>>, usize) {
    let sim = SimPlatform::noncoherent(1 << 20);
    let dev = sim.noncoherent_device();
    let engine = sim.device(&dev);
    let ram = sim.memory();
    let bufs = |fill: bool| -> Vec<_> {
        (0..8)
            .map(|i| {
                let mut b = ram.alloc_slice_aligned::<u8>(LEN, 64).unwrap();
                if fill {
                    b.copy_from_slice(&packet(i));
                }
                b
            })
            .collect()
    };
    let (tx, rx) = if batched {
        let mut t = dev.batch();
        for b in bufs(true) {
            t.map_to_device(b).unwrap();
        }
        let mut r = dev.batch();
        for b in bufs(false) {
            r.map_from_device(b).unwrap();
        }
        (t.flush(), r.flush())
    } else {
        let t: Vec<_> = bufs(true)
            .into_iter()
            .map(|b| dev.map_to_device(b).unwrap())
            .collect();
        let r: Vec<_> = bufs(false)
            .into_iter()
            .map(|b| dev.map_from_device(b).unwrap())
            .collect();
        (t, r)
    };
    for (t, r) in tx.iter().zip(&rx) {
        engine.copy(t.dma_addr(), r.dma_addr(), LEN).unwrap();
    }
    let received: Vec<Vec<u8>> = if batched {
        let mut back = dev.batch();
        for r in rx {
            // SAFETY: every copy returned.
            unsafe { back.sync_for_cpu(r) };
        }
        back.flush().iter().map(|r| r.contents().to_vec()).collect()
    } else {
        // SAFETY: every copy returned.
        rx.into_iter()
            .map(|r| unsafe { r.sync_for_cpu() }.contents().to_vec())
            .collect()
    };
    let mut unmaps = dev.batch();
    for t in tx {
        // SAFETY: every copy returned.
        unsafe { unmaps.unmap_device_owned(t) };
    }
    drop(unmaps.flush());
    (received, dev.stats().barriers())
}

#[test]
fn batched_and_one_by_one_deliver_the_same_bytes() {
    let (one, one_barriers) = loopback(false);
    let (many, many_barriers) = loopback(true);
    let expected: Vec<_> = (0..8).map(packet).collect();
    assert_eq!(one, expected);
    assert_eq!(many, expected);
    // One by one: 16 maps + 8 receive syncs; batched: 2 map flushes + 1
    // sync flush. Unmapping the transmit buffers (ToDevice, device-owned)
    // issues nothing on a direct backend, so it costs no barrier at all.
    assert_eq!(one_barriers, 16 + 8);
    assert_eq!(many_barriers, 3);
}

#[test]
fn fixed_batch_carries_a_command_and_its_response() {
    let sim = SimPlatform::noncoherent(1 << 20);
    let dev = sim.noncoherent_device();
    let engine = sim.device(&dev);
    let mut cmd = sim.memory().alloc_slice_aligned::<u8>(64, 64).unwrap();
    cmd[..4].copy_from_slice(b"ECHO");
    let resp = sim.memory().alloc_slice_aligned::<u8>(64, 64).unwrap();
    let status = sim.memory().alloc_slice_aligned::<u8>(64, 64).unwrap();

    let (cmd, resp, status) = dev
        .fixed_batch()
        .map::<ToDevice, _>(cmd)
        .unwrap()
        .map::<FromDevice, _>(resp)
        .unwrap()
        .map::<Bidirectional, _>(status)
        .unwrap()
        .flush();
    assert_eq!(dev.stats().barriers(), 1);
    assert_eq!(dev.stats().lines_cleaned(), 3);

    let mut op = [0u8; 4];
    engine.read(cmd.dma_addr(), &mut op).unwrap();
    assert_eq!(&op, b"ECHO", "the device saw the cleaned command");
    engine.write(resp.dma_addr(), b"OHCE").unwrap();
    engine.write(status.dma_addr(), &[1]).unwrap();

    // SAFETY: the device finished all three.
    let (cmd, resp, mut status) = unsafe {
        dev.fixed_batch()
            .unmap_device_owned(cmd)
            .sync_for_cpu(resp)
            .sync_for_cpu(status)
    }
    .flush();
    assert_eq!(dev.stats().barriers(), 2);
    assert_eq!(&resp.contents()[..4], b"OHCE");
    assert_eq!(status.contents()[0], 1);
    assert_eq!(&cmd[..4], b"ECHO");

    status.contents_mut()[0] = 0;
    let (status, resp) = dev
        .fixed_batch()
        .sync_for_device(status)
        .unmap(resp)
        .flush();
    assert_eq!(resp.len(), 64);
    assert_eq!(dev.stats().barriers(), 3);
    // SAFETY: the device was not started again.
    drop(unsafe { status.unmap() });
}

#[test]
fn dropping_an_unflushed_batch_frees_what_no_device_was_given() {
    let sim = SimPlatform::noncoherent(1 << 20);
    let dev = sim.noncoherent_device();
    let mut batch = dev.batch();
    for _ in 0..3 {
        batch
            .map_from_device(sim.memory().alloc_slice_aligned::<u8>(128, 64).unwrap())
            .unwrap();
    }
    assert_eq!(batch.len(), 3);
    drop_unflushed(batch);
    // No device was given an address (hand-overs are granted by the flush):
    // the maps were completed, then unmapped and freed, and counted.
    assert_eq!(dev.stats().unflushed(), 3);
    assert_eq!(dev.leaked(), 0);
    assert_eq!(dev.stats().barriers(), 1);
    assert_eq!(sim.memory().allocated_bytes(), 0);
    assert_eq!(sim.memory().device_owned_bytes(), 0);

    // The fixed shape, with every kind of item: a map, a hand-back the
    // caller declared finished, a hand-over of a CPU-owned handle, an unmap.
    let alloc = || sim.memory().alloc_slice_aligned::<u8>(64, 64).unwrap();
    let back = dev.map_from_device(alloc()).unwrap();
    // SAFETY: never started.
    let again = unsafe { dev.map_bidirectional(alloc()).unwrap().sync_for_cpu() };
    let gone = dev.map_to_device(alloc()).unwrap();
    // SAFETY: never started.
    let pending = unsafe {
        dev.fixed_batch()
            .map_to_device(alloc())
            .unwrap()
            .sync_for_cpu(back)
            .sync_for_device(again)
            .unmap_device_owned(gone)
    };
    drop_unflushed(pending);
    assert_eq!(dev.stats().unflushed(), 3 + 4);
    assert_eq!(dev.leaked(), 0);
    assert_eq!(sim.memory().allocated_bytes(), 0);
    assert_eq!(sim.memory().device_owned_bytes(), 0);
}

/// Drops a batch holding items: a debug build panics after the teardown
/// (with a message naming the way out), a release build only counts.
fn drop_unflushed<T>(batch: T) {
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(batch)));
    if cfg!(debug_assertions) {
        let payload = dropped.expect_err("a dropped non-empty batch panics in debug builds");
        let text = payload
            .downcast_ref::<String>()
            .expect("a formatted message");
        assert!(text.contains("dropped without `flush()`"), "{text}");
        assert!(text.contains("dev.with_batch"), "{text}");
        assert!(text.contains("discard()"), "{text}");
    } else {
        dropped.expect("release builds only count");
    }
}

/// The NIC-driver shape that lost ring slots: a refill batch held in a
/// `let` and never flushed. It is counted per device, on the device of
/// each item, and the debug assertion fires.
#[test]
fn a_held_batch_never_flushed_is_counted_and_asserted() {
    let sim = SimPlatform::noncoherent(1 << 20);
    let dev = sim.noncoherent_device();
    let mut ring = Vec::new();
    let refill = |ring: &mut Vec<_>, n: usize, flush: bool| {
        let mut b = dev.batch();
        for _ in 0..n {
            b.map_from_device(sim.memory().alloc_slice_aligned::<u8>(2048, 64).unwrap())
                .unwrap();
        }
        if flush {
            ring.extend(b.flush());
        } else {
            drop_unflushed(b); // the forgotten flush
        }
    };
    refill(&mut ring, 2, true);
    refill(&mut ring, 2, false);
    assert_eq!(ring.len(), 2, "the ring is short of the two lost slots");
    assert_eq!(dev.stats().unflushed(), 2, "and it shows");
    assert_eq!(dev.leaked(), 0, "nothing quarantined: no device had them");
    assert_eq!(
        sim.memory().allocated_bytes(),
        2 * 2048,
        "the lost two were freed"
    );

    // Empty batches, flushed ones and discarded ones are silent.
    type Nc = DirectNonCoherent<SimMemory, SimCache>;
    drop(dev.batch::<dmacap::batch::PendingToCpu<'_, dmacap::FromDevice, SimBuffer<[u8]>, Nc>>());
    drop(dev.fixed_batch());
    let mut b = dev.batch();
    b.map_from_device(sim.memory().alloc_slice_aligned::<u8>(64, 64).unwrap())
        .unwrap();
    b.discard();
    let b = dev
        .fixed_batch()
        .map_to_device(sim.memory().alloc_slice_aligned::<u8>(64, 64).unwrap())
        .unwrap();
    b.discard();
    assert_eq!(dev.stats().unflushed(), 2);
    assert_eq!(sim.memory().allocated_bytes(), 2 * 2048);
    // SAFETY: the simulated device never ran.
    drop(
        ring.into_iter()
            .map(|h| unsafe { h.unmap() })
            .collect::<Vec<_>>(),
    );
    assert_eq!(sim.memory().allocated_bytes(), 0);
}

/// The scoped form: the closure's end is the flush. A refill that fails
/// half-way with `?` keeps what it mapped, flushed with one barrier.
#[test]
fn with_batch_flushes_whatever_the_closure_returns() {
    let sim = SimPlatform::noncoherent(1 << 20);
    let dev = sim.noncoherent_device();
    let engine = sim.device(&dev);
    let (rx, res) = dev.with_batch(|b| -> Result<(), Box<dyn std::error::Error>> {
        for _ in 0..3 {
            b.map_from_device(sim.memory().alloc_slice_aligned::<u8>(256, 64)?)?;
        }
        // Refused (shares a cache line): `?` leaves the closure.
        b.map_from_device(sim.memory().alloc_slice_aligned::<u8>(100, 64)?)?;
        unreachable!("the fourth map fails");
    });
    let err = res.unwrap_err();
    assert!(err.to_string().contains("cache line"), "{err}");
    drop(err);
    assert_eq!(rx.len(), 3, "the three mapped before the error came back");
    assert_eq!(dev.stats().barriers(), 1, "one flush for all three");
    assert_eq!(dev.stats().unflushed(), 0);
    // They are really the device's: it writes them, and the CPU reads it.
    for (i, h) in rx.iter().enumerate() {
        engine.write(h.dma_addr(), &[i as u8 + 1; 256]).unwrap();
    }
    let (back, ()) = dev.with_batch(|b| {
        for h in rx {
            // SAFETY: the simulated device's writes have returned.
            unsafe { b.sync_for_cpu(h) };
        }
    });
    assert_eq!(dev.stats().barriers(), 2);
    for (i, h) in back.iter().enumerate() {
        assert!(h.contents().iter().all(|&x| x == i as u8 + 1));
    }
    drop(back);
    assert_eq!(sim.memory().allocated_bytes(), 0);

    // A closure that panics: the lent batch drops as the stack unwinds;
    // its items are torn down and counted, and the unwind is not turned
    // into an abort by the debug assertion.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        dev.with_batch(|b| {
            b.map_to_device(sim.memory().alloc_slice_aligned::<u8>(64, 64).unwrap())
                .unwrap();
            panic!("the driver's own bug");
        })
    }));
    assert!(r.is_err());
    assert_eq!(dev.stats().unflushed(), 1);
    assert_eq!(dev.leaked(), 0);
    assert_eq!(sim.memory().allocated_bytes(), 0);
    assert_eq!(sim.memory().device_owned_bytes(), 0);
}

/// Fills a batch and fails half-way with `?`, as a driver's error path does
/// (the scoped form: the handles mapped before the error come back flushed,
/// and this error path gives them back).
fn fill_or_fail(
    dev: &dmacap::Device<DirectNonCoherent<SimMemory, SimCache>>,
    mem: &SimMemory,
) -> Result<(), Box<dyn std::error::Error>> {
    let (rx, res) = dev.with_batch(|batch| -> Result<(), Box<dyn std::error::Error>> {
        for _ in 0..4 {
            batch.map_from_device(mem.alloc_slice_aligned::<u8>(256, 64)?)?;
        }
        // A buffer that shares a cache line: refused, `?` leaves the closure.
        batch.map_from_device(mem.alloc_slice_aligned::<u8>(100, 64)?)?;
        Ok(())
    });
    assert_eq!(rx.len(), 4);
    // SAFETY: the simulated device never ran.
    drop(
        rx.into_iter()
            .map(|h| unsafe { h.unmap() })
            .collect::<Vec<_>>(),
    );
    res?;
    unreachable!("the last map fails");
}

/// The same with a fixed batch: `?` on each map.
fn command_or_fail(
    dev: &dmacap::Device<DirectNonCoherent<SimMemory, SimCache>>,
    mem: &SimMemory,
) -> Result<(), Box<dyn std::error::Error>> {
    let cmd = mem.alloc_slice_aligned::<u8>(64, 64)?;
    let resp = mem.alloc_slice_aligned::<u8>(10, 64)?; // shares a line
    let (_cmd, _resp) = dev
        .fixed_batch()
        .map_to_device(cmd)?
        .map_from_device(resp)?
        .flush();
    unreachable!("the second map fails");
}

#[test]
fn error_paths_with_question_mark_leak_nothing() {
    let sim = SimPlatform::noncoherent(1 << 20);
    let dev = sim.noncoherent_device();
    let err = fill_or_fail(&dev, sim.memory()).unwrap_err();
    assert!(err.to_string().contains("cache line"), "{err}");
    drop(err); // it holds the refused buffer
    let err = command_or_fail(&dev, sim.memory()).unwrap_err();
    assert!(err.to_string().contains("cache line"), "{err}");
    drop(err);
    assert_eq!(dev.leaked(), 0);
    assert_eq!(sim.memory().allocated_bytes(), 0);
    assert_eq!(sim.memory().device_owned_bytes(), 0);
}

#[test]
fn try_map_keeps_the_batch_on_error() {
    let sim = SimPlatform::noncoherent(1 << 20);
    let dev = sim.noncoherent_device();
    let cmd = sim.memory().alloc_slice_aligned::<u8>(64, 64).unwrap();
    let bad = sim.memory().alloc_slice_aligned::<u8>(10, 64).unwrap();
    let batch = dev.fixed_batch().map_to_device(cmd).unwrap();
    let (batch, e) = batch.try_map::<dmacap::FromDevice, _>(bad).unwrap_err();
    assert_eq!(e.into_buffer().len(), 10);
    let (cmd,) = batch.flush();
    // SAFETY: never started.
    drop(unsafe { cmd.unmap() });
    assert_eq!(sim.memory().allocated_bytes(), 0);
}

#[test]
fn map_error_in_a_batch_returns_the_buffer_and_keeps_the_rest() {
    let sim = SimPlatform::noncoherent(1 << 20);
    let dev = sim.noncoherent_device();
    let mut batch = dev.batch();
    batch
        .map_to_device(sim.memory().alloc_slice_aligned::<u8>(64, 64).unwrap())
        .unwrap();
    let odd = sim.memory().alloc_slice_aligned::<u8>(100, 64).unwrap();
    let err = batch.map_to_device(odd).unwrap_err();
    assert!(matches!(
        err.kind(),
        MapErrorKind::SharesCacheLine { len: 100, .. }
    ));
    assert_eq!(err.into_buffer().len(), 100);
    assert_eq!(batch.len(), 1);
    let handles = batch.flush();
    // SAFETY: never started.
    drop(unsafe { handles.into_iter().next().unwrap().unmap() });
}

#[test]
fn scatter_gather_segments_respect_the_device_limits() {
    let sim = SimPlatform::noncoherent(1 << 20);
    let other = sim.noncoherent_device(); // for the foreign-list check
    let dev = sim.noncoherent_device_with(
        DeviceConfig::new()
            .max_segment_size(1024)
            .segment_boundary(0xfff),
        DmaWindows::identity(),
    );
    let engine = sim.device(&dev);
    // Three 2 KiB buffers, aligned to 2 KiB and to 64 bytes.
    let bufs: Vec<_> = (0..3)
        .map(|_| sim.memory().alloc_slice_aligned::<u8>(2048, 2048).unwrap())
        .collect();
    let sg = dev.map_sg::<FromDevice, _, _>(bufs).unwrap();
    assert_eq!(dev.stats().barriers(), 1);
    let segs: Vec<(DmaAddr, usize)> = sg.segments().collect();
    assert_eq!(segs.len(), 6, "each 2 KiB buffer splits at 1 KiB");
    for &(dma, len) in &segs {
        assert!(len <= 1024);
        assert_eq!(
            dma.as_u64() >> 12,
            (dma.as_u64() + len as u64 - 1) >> 12,
            "crosses 4 KiB"
        );
    }
    // The device scatters a 6 KiB message over the segments.
    let message: Vec<u8> = (0..6144).map(|i| (i % 251) as u8).collect();
    let mut at = 0;
    for (dma, len) in segs {
        engine.write(dma, &message[at..at + len]).unwrap();
        at += len;
    }
    // Partial sync: the first two buffers come back, the third stays.
    // SAFETY: the device finished its writes.
    let (first, rest) = unsafe { sg.sync_first_for_cpu(2) }.map_err(|_| ()).unwrap();
    assert_eq!(dev.stats().barriers(), 2);
    assert_eq!(first.len(), 2);
    assert_eq!(rest.len(), 1);
    let got: Vec<u8> = first
        .as_slice()
        .iter()
        .flat_map(|h| h.contents().to_vec())
        .collect();
    assert_eq!(got, &message[..4096]);
    // SAFETY: finished.
    let rest = unsafe { rest.sync_for_cpu() };
    assert_eq!(rest.as_slice()[0].contents(), &message[4096..]);
    let mut all = first.sync_for_device();
    all.append(rest.sync_for_device()).unwrap();
    assert_eq!(all.len(), 3);

    // A list of another device is refused and comes back whole.
    let foreign = other
        .map_sg::<FromDevice, _, _>([sim.memory().alloc_slice_aligned::<u8>(64, 64).unwrap()])
        .unwrap();
    let err = all.append(foreign).unwrap_err();
    assert_eq!((err.list, err.offered), (dev.id(), other.id()));
    assert!(err.to_string().contains("cannot join a list"), "{err}");
    assert_eq!(all.len(), 3);
    // SAFETY: the device was never started.
    drop(unsafe { err.into_inner().unmap() });
    // SAFETY: the device was not restarted.
    let bufs = unsafe { all.unmap() };
    assert_eq!(bufs.len(), 3);
    assert_eq!(sim.memory().device_owned_bytes(), 0);
}

#[test]
fn scatter_gather_failure_returns_every_buffer_and_leaves_ram_as_it_was() {
    let sim = SimPlatform::with_base(dmacap::PhysAddr::new(0xffff_0000), 1 << 20);
    // A 32-bit device and RAM that crosses 4 GiB: the later buffers are
    // beyond the mask.
    let dev = sim.coherent_device_with(
        DeviceConfig::new().dma_mask(DmaMask::bits(32)),
        DmaWindows::identity(),
    );
    let bufs: Vec<_> = (0..4)
        .map(|i| {
            let mut b = sim
                .memory()
                .alloc_slice_aligned::<u8>(32 * 1024, 4096)
                .unwrap();
            b[0] = i;
            b
        })
        .collect();
    let before = sim.memory().allocated_bytes();
    let err = dev.map_sg::<ToDevice, _, _>(bufs).unwrap_err();
    assert_eq!(err.index, 2);
    assert!(matches!(err.kind, MapErrorKind::BeyondMask { .. }));
    let back = err.into_buffers();
    assert_eq!(back.iter().map(|b| b[0]).collect::<Vec<_>>(), [0, 1, 2, 3]);
    assert_eq!(sim.memory().allocated_bytes(), before);
    assert_eq!(sim.memory().device_owned_bytes(), 0);
    assert_eq!(dev.leaked(), 0);
}
