//! Compiles and runs: a device-owned handle moved to another thread (the
//! completion handler) and synced there. The handle borrows its device, so
//! the device must outlive the thread: shown with `std::thread::scope`, and
//! with a device leaked to `'static` for `std::thread::spawn`.

use std::sync::mpsc;
use std::thread;

use dmacap::backend::direct::DirectCoherent;
use dmacap::sim::{SimBuffer, SimMemory, SimPlatform};
use dmacap::{DevOwned, FromDevice, Mapped};

/// A posted receive buffer, as the completion thread gets it.
type RxHandle = Mapped<'static, FromDevice, DevOwned, SimBuffer<[u8]>, DirectCoherent<SimMemory>>;

fn scoped() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();

    let rx = dev
        .map_from_device(sim.memory().alloc_slice::<u8>(64).unwrap())
        .unwrap();
    sim.device(&dev).write(rx.dma_addr(), b"scoped").unwrap();

    let buf = thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: the simulated write returned before this thread was
            // spawned (which orders it before this call), and nothing else is
            // queued on the buffer.
            let rx = unsafe { rx.sync_for_cpu() };
            assert_eq!(&rx.contents()[..6], b"scoped");
            rx.unmap()
        })
        .join()
        .unwrap()
    });
    assert_eq!(&buf[..6], b"scoped");
    assert_eq!(dev.leaked(), 0);
}

fn spawned() {
    let sim = SimPlatform::new(1 << 20);
    let dev = Box::leak(Box::new(sim.coherent_device()));

    let (tx_done, rx_done) = mpsc::channel::<RxHandle>();
    let completion = thread::spawn(move || {
        let mut total = 0;
        for rx in rx_done {
            // SAFETY: each handle is sent only after the simulated write to
            // it returned (the channel orders that before this receive), and
            // nothing else is queued on it.
            let rx = unsafe { rx.sync_for_cpu() };
            total += rx.contents().iter().map(|&b| usize::from(b)).sum::<usize>();
            drop(rx.unmap());
        }
        total
    });

    let nic = sim.device(dev);
    for i in 1..=4u8 {
        let rx = dev
            .map_from_device(sim.memory().alloc_slice::<u8>(64).unwrap())
            .unwrap();
        nic.fill(rx.dma_addr(), i, 64).unwrap();
        tx_done.send(rx).unwrap();
    }
    drop(tx_done);

    assert_eq!(completion.join().unwrap(), 64 * (1 + 2 + 3 + 4));
    assert_eq!(dev.leaked(), 0);
    assert_eq!(sim.memory().allocated_bytes(), 0);
}

fn main() {
    scoped();
    spawned();
}
