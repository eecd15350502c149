//! A loopback DMA driver on the simulated platform.
//!
//! The "hardware" is a copy engine: it reads a descriptor from memory, copies
//! `len` bytes from `src` to `dst`, and writes a status word back into the
//! descriptor. The driver maps a transmit buffer `ToDevice`, a receive buffer
//! `FromDevice` and the descriptor `Bidirectional`, rings the doorbell, and
//! takes everything back. Each state change prints the handle's type.
//!
//! Run with `cargo run --example quickstart`.

use dmacap::backend::Backend;
use dmacap::sim::{SimDevice, SimFault, SimPlatform};
use dmacap::{DmaAddr, Mapped};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The engine's descriptor, as laid out in memory: no padding, so it can be
/// written to the device (`IntoBytes`) and read back after it wrote the
/// status (`FromBytes`).
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Debug, Default)]
#[repr(C)]
struct Descriptor {
    src: u64,
    dst: u64,
    len: u32,
    status: u32,
}

const STATUS_DONE: u32 = 1;

/// The simulated hardware: what happens when the driver rings the doorbell.
fn copy_engine<B: Backend + dmacap::sim::BusTranslate>(
    engine: &SimDevice<'_, B>,
    desc: DmaAddr,
) -> Result<(), SimFault> {
    let mut raw = [0u8; size_of::<Descriptor>()];
    engine.read(desc, &mut raw)?;
    let d = Descriptor::read_from_bytes(&raw).expect("descriptor size");
    engine.copy(DmaAddr::new(d.src), DmaAddr::new(d.dst), d.len as usize)?;
    let status_at = DmaAddr::new(desc.as_u64() + 20);
    engine.write(status_at, &STATUS_DONE.to_ne_bytes())
}

fn show<T: std::fmt::Debug>(what: &str, h: &T) {
    println!("{what:<34} {h:?}");
}

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();
    let engine = sim.device(&dev);
    let ram = sim.memory();

    let message = b"hello from dmacap";
    let len = message.len();

    // Transmit buffer: the CPU fills it, then hands it to the device.
    let mut tx = ram.alloc_slice::<u8>(len).expect("RAM");
    tx.copy_from_slice(message);
    let tx = dev.map_to_device(tx).expect("map tx");
    show("tx mapped:", &tx);

    // Receive buffer: the device will write it.
    let rx = dev
        .map_from_device(ram.alloc_slice::<u8>(len).expect("RAM"))
        .expect("map rx");
    show("rx mapped:", &rx);

    // Descriptor: the CPU writes the request, the device writes the status.
    let mut desc = ram.alloc::<Descriptor>().expect("RAM");
    *desc = Descriptor {
        src: tx.dma_addr().as_u64(),
        dst: rx.dma_addr().as_u64(),
        len: len as u32,
        status: 0,
    };
    let desc: Mapped<'_, dmacap::Bidirectional, dmacap::DevOwned, _, _> =
        dev.map_bidirectional(desc).expect("map descriptor");
    show("descriptor mapped:", &desc);

    // Ring the doorbell; the simulated engine runs to completion.
    copy_engine(&engine, desc.dma_addr()).expect("device access");
    println!("{:<34} copy engine ran", "doorbell:");

    // SAFETY: the engine has returned, so it has finished with all three
    // buffers and holds no reference to their DMA addresses.
    let desc = unsafe { desc.sync_for_cpu() };
    show("descriptor back:", &desc);
    assert_eq!(desc.contents().status, STATUS_DONE, "device reported done");

    // SAFETY: as above.
    let rx = unsafe { rx.sync_for_cpu() };
    show("rx back:", &rx);
    // SAFETY: as above.
    let tx = unsafe { tx.unmap() };
    println!(
        "{:<34} {} bytes returned to the driver",
        "tx unmapped:",
        tx.len()
    );

    println!("sent:     {:?}", String::from_utf8_lossy(&tx));
    println!("received: {:?}", String::from_utf8_lossy(rx.contents()));
    assert_eq!(rx.contents(), &tx[..], "received bytes equal sent bytes");

    let rx = rx.unmap();
    let _desc = desc.unmap();
    println!(
        "round trip ok: {} bytes, {} handles leaked",
        rx.len(),
        dev.leaked()
    );
}
