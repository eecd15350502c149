//! Compiles and runs. dma-debug: "DMA-API: device driver syncs DMA memory
//! outside allocated range [device address=...] [allocation size=64 bytes]
//! [sync offset+size=65]".
//!
//! A whole-buffer sync has no range to get wrong. The partial syncs take a
//! run-time length (the packet's length from a descriptor), which the
//! compiler cannot check, so they check it: `Mapped::sync_prefix_for_cpu(n)`
//! past the buffer's end and `SgMapped::sync_first_for_cpu(n)` past the
//! list's end return `RangeError` (what was asked, what there is) with the
//! handle handed back, still device-owned, and nothing synced; the ranged
//! sync `Mapped::read_range(offset, out)` (Linux's
//! `dma_sync_single_range_for_cpu`) refuses a range past the end the same
//! way, the handle untouched.

use dmacap::sim::SimPlatform;
use dmacap::FromDevice;

fn main() {
    let sim = SimPlatform::noncoherent(1 << 20);
    let dev = sim.noncoherent_device();
    let engine = sim.device(&dev);
    let buf = || sim.memory().alloc_slice_aligned::<u8>(64, 64).unwrap();

    // One buffer: a length from a corrupt descriptor.
    let rx = dev.map_from_device(buf()).unwrap();
    engine.fill(rx.dma_addr(), 0x11, 64).unwrap();
    let barriers = dev.stats().barriers();
    // SAFETY: the simulated fill returned, so the device has finished with
    // the buffer and nothing else is queued on it.
    let err = unsafe { rx.sync_prefix_for_cpu(65) }.unwrap_err();
    assert_eq!((err.requested, err.available), (65, 64));
    assert_eq!(
        err.to_string(),
        "range of 65 elements does not fit a mapping of 64"
    );
    assert_eq!(dev.stats().barriers(), barriers, "nothing was synced");
    let rx = err.into_handle(); // still device-owned: it has a DMA address
    let _ = rx.dma_addr();
    let mut entry = [0u8; 16];
    // SAFETY: as above.
    let err = unsafe { rx.read_range(56, &mut entry) }.unwrap_err();
    assert_eq!((err.requested, err.available), (72, 64));
    assert_eq!(dev.stats().barriers(), barriers, "nothing was synced");
    let rx = err.into_handle(); // handed back, still device-owned
    // SAFETY: as above.
    let rx = unsafe { rx.read_range(48, &mut entry) }.unwrap();
    assert_eq!(entry, [0x11; 16]);
    // SAFETY: as above.
    let rx = unsafe { rx.sync_prefix_for_cpu(64) }.unwrap();
    assert_eq!(rx.contents(), &[0x11; 64][..]);
    drop(rx.unmap());

    // A list: more buffers than it holds.
    let list = dev
        .map_sg::<FromDevice, _, _>((0..3).map(|_| buf()))
        .unwrap();
    // SAFETY: the simulated device was never started on the list.
    let err = unsafe { list.sync_first_for_cpu(4) }.unwrap_err();
    assert_eq!((err.requested, err.available), (4, 3));
    let list = err.into_handle();
    assert_eq!(list.len(), 3);
    // SAFETY: as above.
    let (first, rest) = unsafe { list.sync_first_for_cpu(3) }.unwrap();
    assert_eq!((first.len(), rest.len()), (3, 0));
    drop(first.unmap());
    // SAFETY: the empty rest holds no buffer.
    drop(unsafe { rest.unmap() });

    assert_eq!(dev.leaked(), 0);
    assert_eq!(sim.memory().allocated_bytes(), 0);
}
