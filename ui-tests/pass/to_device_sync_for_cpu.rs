//! Compiles and runs: the legal form of "for_cpu on a TO_DEVICE mapping".
//! (dma-debug's "DMA-API: device driver syncs device read-only DMA memory
//! for cpu" fires when a sync claims the device wrote memory mapped for it
//! to read; the partial form, which only makes sense for received data,
//! does not compile: `fail/sync_prefix_to_device.rs`.)
//!
//! Taking a transmit buffer back with `sync_for_cpu` is an ownership
//! transfer only: the device wrote nothing the CPU must fetch, so on a
//! non-coherent device it issues no invalidate and no barrier (decided at
//! compile time). The CPU then rewrites the frame and hands it back with
//! `sync_for_device`, which cleans it: a transmit buffer recycled.

use dmacap::sim::SimPlatform;

fn main() {
    let sim = SimPlatform::noncoherent(1 << 20);
    let dev = sim.noncoherent_device();
    let engine = sim.device(&dev);

    let mut frame = sim.memory().alloc_slice_aligned::<u8>(128, 64).unwrap();
    frame.fill(1);
    let tx = dev.map_to_device(frame).unwrap();
    let mut wire = [0u8; 128];
    engine.read(tx.dma_addr(), &mut wire).unwrap();
    assert_eq!(wire, [1; 128]);

    let (barriers, invalidated) = (dev.stats().barriers(), dev.stats().lines_invalidated());
    // SAFETY: the simulated read returned, so the device has finished with
    // the buffer and nothing else is queued on it.
    let mut tx = unsafe { tx.sync_for_cpu() };
    assert_eq!(dev.stats().barriers(), barriers, "no barrier");
    assert_eq!(dev.stats().lines_invalidated(), invalidated, "no invalidate");
    assert_eq!(tx.contents(), &[1; 128][..]);

    // Rewrite and resend the same mapping.
    tx.contents_mut().fill(2);
    let tx = tx.sync_for_device();
    assert_eq!(dev.stats().barriers(), barriers + 1, "the clean is completed");
    engine.read(tx.dma_addr(), &mut wire).unwrap();
    assert_eq!(wire, [2; 128]);

    // SAFETY: as above.
    let frame = unsafe { tx.unmap() };
    assert_eq!(&frame[..], &[2; 128][..]);
    assert_eq!(dev.leaked(), 0);
}
