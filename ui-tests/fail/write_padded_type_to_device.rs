//! Rejected: sending a type with padding bytes to the device.
//!
//! `Cmd` is `#[repr(C)] { a: u8, b: u32 }`: three padding bytes follow `a`,
//! and they are uninitialised. The device reads every byte of a `ToDevice`
//! buffer, so mapping requires `Cmd: Transfer<ToDevice>`, i.e.
//! `Cmd: IntoBytes`, which a padded type cannot derive (and does not here).

use dmacap::sim::SimPlatform;

#[derive(zerocopy::FromBytes, zerocopy::Immutable, zerocopy::KnownLayout)]
#[repr(C)]
struct Cmd {
    a: u8,
    b: u32,
}

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();

    let cmd = Box::new(Cmd {
        a: 1,
        b: 0xdead_beef,
    });
    let tx = dev.map_to_device(cmd).unwrap();
    println!("command at {:#x}", tx.dma_addr().as_u64());
    // SAFETY: no device access was ever started on the buffer.
    let cmd = unsafe { tx.unmap() };
    println!("{} {}", cmd.a, cmd.b);
}
