//! Compiles and runs: the receive path with buffer recycling. The device
//! writes a packet, the CPU takes the buffer back with `sync_for_cpu`, reads
//! it, reposts the same mapping with `sync_for_device`, receives a second
//! packet, and finally unmaps the CPU-owned handle (safely).

use dmacap::sim::SimPlatform;

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();
    let nic = sim.device(&dev);

    let rx = dev
        .map_from_device(sim.memory().alloc_slice::<u8>(64).unwrap())
        .unwrap();
    let dma = rx.dma_addr();

    // First packet.
    let first: Vec<u8> = (0..64u8).collect();
    nic.write(rx.dma_addr(), &first).unwrap();
    // SAFETY: the simulated write returned, so the device has finished with
    // the buffer and nothing else is queued on it.
    let rx = unsafe { rx.sync_for_cpu() };
    assert_eq!(rx.contents(), &first[..]);

    // Recycle the same mapping for the next packet.
    let rx = rx.sync_for_device();
    assert_eq!(rx.dma_addr(), dma);
    let second: Vec<u8> = (0..64u8).rev().collect();
    nic.write(rx.dma_addr(), &second).unwrap();
    // SAFETY: as above, for the second write.
    let rx = unsafe { rx.sync_for_cpu() };
    assert_eq!(rx.contents(), &second[..]);

    let buf = rx.unmap();
    assert_eq!(&buf[..], &second[..]);
    assert_eq!(dev.leaked(), 0);
}
