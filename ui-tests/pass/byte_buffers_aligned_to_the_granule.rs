//! Compiles and runs: byte buffers on a non-coherent device, the legal
//! side of "DMA-API: cacheline tracking EEXIST, overlapping mappings aren't
//! supported". A `[u8]` buffer that starts on a cache-line boundary and
//! fills whole lines (`alloc_slice_aligned(n * 64, 64)` here) shares no
//! line with other data, so it maps in every direction: the device reads
//! what the CPU wrote (cleaned), the CPU reads what the device wrote
//! (invalidated), and a receive buffer is recycled with `sync_for_device`
//! without the CPU writing it.

use dmacap::sim::SimPlatform;

fn main() {
    let sim = SimPlatform::noncoherent(1 << 20);
    let dev = sim.noncoherent_device();
    let engine = sim.device(&dev);
    let lines = |n: usize| sim.memory().alloc_slice_aligned::<u8>(n * 64, 64).unwrap();

    // Transmit: the CPU's bytes reach the device.
    let mut cmd = lines(1);
    cmd.copy_from_slice(&[0xc3; 64]);
    let tx = dev.map_to_device(cmd).unwrap();
    let mut seen = [0u8; 64];
    engine.read(tx.dma_addr(), &mut seen).unwrap();
    assert_eq!(seen, [0xc3; 64]);

    // Receive, twice in one mapping: the device's bytes reach the CPU.
    let rx = dev.map_from_device(lines(4)).unwrap();
    engine.fill(rx.dma_addr(), 0x11, 256).unwrap();
    // SAFETY: the simulated fill returned, so the device has finished.
    let rx = unsafe { rx.sync_for_cpu() };
    assert!(rx.contents().iter().all(|&b| b == 0x11));
    let rx = rx.sync_for_device(); // recycled, not written by the CPU
    engine.fill(rx.dma_addr(), 0x22, 256).unwrap();
    // SAFETY: as above.
    let rx = unsafe { rx.sync_for_cpu() };
    assert!(rx.contents().iter().all(|&b| b == 0x22));

    // Both ways in one buffer.
    let mut both = lines(2);
    both[..4].copy_from_slice(b"PING");
    let h = dev.map_bidirectional(both).unwrap();
    engine.write(h.dma_addr(), b"PONG").unwrap();
    // SAFETY: as above.
    let h = unsafe { h.sync_for_cpu() };
    assert_eq!(&h.contents()[..4], b"PONG");

    // SAFETY: the simulated read returned.
    drop(unsafe { tx.unmap() });
    drop((rx.unmap(), h.unmap()));
    assert_eq!(dev.leaked(), 0);
    assert_eq!(sim.memory().allocated_bytes(), 0);
}
