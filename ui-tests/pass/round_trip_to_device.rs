//! Compiles and runs: the transmit path. The CPU fills a buffer, maps it
//! `ToDevice`, the device reads the bytes through the DMA address, and the
//! buffer comes back with an `unsafe` unmap once the device is done.

use dmacap::sim::SimPlatform;

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();
    let nic = sim.device(&dev);

    let mut frame = sim.memory().alloc_slice::<u8>(64).unwrap();
    for (i, b) in frame.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(3).wrapping_add(1);
    }
    let expected: Vec<u8> = frame.to_vec();

    let tx = dev.map_to_device(frame).unwrap();
    assert_eq!(tx.byte_len(), 64);

    // The device fetches the frame.
    let mut wire = [0u8; 64];
    nic.read(tx.dma_addr(), &mut wire).unwrap();
    assert_eq!(&wire[..], &expected[..]);

    // SAFETY: the simulated read returned, so the device has finished with
    // the buffer and nothing else is queued on it.
    let frame = unsafe { tx.unmap() };
    assert_eq!(&frame[..], &expected[..]);
    assert_eq!(dev.leaked(), 0);

    drop(frame);
    assert_eq!(sim.memory().allocated_bytes(), 0);
}
