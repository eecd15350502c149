//! Compiles and runs: receiving a packet shorter than its buffer.
//! `sync_prefix_for_cpu(n)` takes back only the first `n` bytes, and
//! `contents()` then shows exactly those; a prefix longer than the buffer
//! is refused and the device-owned handle given back.

use dmacap::sim::SimPlatform;

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();
    let nic = sim.device(&dev);

    let rx = dev
        .map_from_device(sim.memory().alloc_slice::<u8>(64).unwrap())
        .unwrap();
    let packet = b"short frame";
    nic.write(rx.dma_addr(), packet).unwrap();

    // A length beyond the buffer is refused; the handle comes back unchanged.
    // SAFETY: the simulated write returned, so the device has finished with
    // the buffer and nothing else is queued on it.
    let err = unsafe { rx.sync_prefix_for_cpu(65) }.unwrap_err();
    assert_eq!((err.requested, err.available), (65, 64));
    let rx = err.into_handle();

    // SAFETY: as above.
    let rx = unsafe { rx.sync_prefix_for_cpu(packet.len()) }.unwrap();
    assert_eq!(rx.prefix_len(), packet.len());
    assert_eq!(rx.contents().len(), packet.len());
    assert_eq!(rx.contents(), &packet[..]);

    // Repost, receive a full-size packet, take all of it.
    let rx = rx.sync_for_device();
    nic.fill(rx.dma_addr(), 0xee, 64).unwrap();
    // SAFETY: the simulated fill returned, as above.
    let rx = unsafe { rx.sync_prefix_for_cpu(64) }.unwrap();
    assert_eq!(rx.contents(), &[0xee; 64][..]);

    // Unmapping a prefix-owned handle is safe.
    let buf = rx.unmap();
    assert_eq!(buf.len(), 64);
    assert_eq!(dev.leaked(), 0);
}
