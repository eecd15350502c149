//! Compiles and runs: a command/response exchange in one `Bidirectional`
//! buffer. The device reads the CPU's request and writes its response into
//! the same buffer; the CPU reads it after `sync_for_cpu` and writes the
//! next request through `contents_mut`.

use dmacap::sim::SimPlatform;

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();
    let nic = sim.device(&dev);

    let mut buf = sim.memory().alloc_slice::<u8>(64).unwrap();
    buf[..4].copy_from_slice(b"PING");
    let h = dev.map_bidirectional(buf).unwrap();

    // The device reads the request and answers in place.
    let mut req = [0u8; 4];
    nic.read(h.dma_addr(), &mut req).unwrap();
    assert_eq!(&req, b"PING");
    nic.write(h.dma_addr(), b"PONG").unwrap();

    // SAFETY: the simulated read and write returned, so the device has
    // finished with the buffer and nothing else is queued on it.
    let mut h = unsafe { h.sync_for_cpu() };
    assert_eq!(&h.contents()[..4], b"PONG");

    // The CPU writes the next request into the same buffer.
    h.contents_mut()[..4].copy_from_slice(b"STAT");
    let h = h.sync_for_device();
    nic.read(h.dma_addr(), &mut req).unwrap();
    assert_eq!(&req, b"STAT");
    nic.fill(h.dma_addr(), 0x7f, 64).unwrap();

    // SAFETY: the simulated accesses returned, as above.
    let buf = unsafe { h.unmap() };
    assert!(buf.iter().all(|&b| b == 0x7f));
    assert_eq!(dev.leaked(), 0);
}
