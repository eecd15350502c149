//! Compiles and runs: a typed descriptor, not just bytes. A `#[repr(C)]`
//! struct without padding that derives zerocopy's `FromBytes` and
//! `IntoBytes` may be mapped `Bidirectional`: the device reads the CPU's
//! fields and writes a status back into it.

use dmacap::DmaAddr;
use dmacap::sim::SimPlatform;
use zerocopy::IntoBytes;

#[derive(
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
    Debug,
    PartialEq,
)]
#[repr(C)]
struct Desc {
    addr: u64,
    len: u32,
    flags: u32,
}

const OWNED_BY_DEVICE: u32 = 1 << 31;
const DONE: u32 = 1;

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();
    let nic = sim.device(&dev);

    let mut desc = sim.memory().alloc::<Desc>().unwrap();
    *desc = Desc {
        addr: 0x8000_1000,
        len: 1514,
        flags: OWNED_BY_DEVICE,
    };
    let expected = desc.as_bytes().to_vec();

    let h = dev.map_bidirectional(desc).unwrap();
    assert_eq!(h.byte_len(), size_of::<Desc>());

    // The device fetches the descriptor and sees the CPU's fields.
    let mut fetched = [0u8; 16];
    nic.read(h.dma_addr(), &mut fetched).unwrap();
    assert_eq!(&fetched[..], &expected[..]);

    // It writes back the status word (`flags`, at offset 12).
    let flags_at = DmaAddr::new(h.dma_addr().as_u64() + 12);
    nic.write(flags_at, &DONE.to_ne_bytes()).unwrap();

    // SAFETY: the simulated read and write returned, so the device has
    // finished with the descriptor and nothing else is queued on it.
    let mut h = unsafe { h.sync_for_cpu() };
    assert_eq!(
        *h.contents(),
        Desc {
            addr: 0x8000_1000,
            len: 1514,
            flags: DONE,
        }
    );

    // The CPU rearms the descriptor in place.
    h.contents_mut().flags = OWNED_BY_DEVICE;
    h.contents_mut().len = 64;
    let h = h.sync_for_device();
    nic.read(h.dma_addr(), &mut fetched).unwrap();
    assert_eq!(&fetched[8..12], &64u32.to_ne_bytes());
    assert_eq!(&fetched[12..], &OWNED_BY_DEVICE.to_ne_bytes());

    // SAFETY: the simulated read returned, as above.
    let desc = unsafe { h.unmap() };
    assert_eq!(desc.len, 64);
    assert_eq!(dev.leaked(), 0);
}
