//! Compiles and runs. Beyond Linux (dma-debug has no check for it): a
//! scatter-gather list of one device joined to another device's list.
//!
//! Both lists have the same type (two devices on one backend type), so the
//! compiler cannot tell them apart: this class is caught at run time.
//! `SgMapped::append` compares the devices and refuses a foreign list with
//! `ForeignDeviceError`, naming both devices and handing the list back
//! unchanged, still mapped on its own device; the target list is untouched.
//! (A list's syncs and unmap complete on its own device only, so a foreign
//! entry would be handed over without its barrier or IOTLB invalidation.)

use dmacap::sim::SimPlatform;
use dmacap::FromDevice;

fn main() {
    let sim = SimPlatform::noncoherent(1 << 20);
    let nic = sim.noncoherent_device();
    let disk = sim.noncoherent_device();
    let buf = || sim.memory().alloc_slice_aligned::<u8>(512, 64).unwrap();

    let mut rx = nic.map_sg::<FromDevice, _, _>((0..2).map(|_| buf())).unwrap();
    let theirs = disk.map_sg::<FromDevice, _, _>((0..3).map(|_| buf())).unwrap();

    let err = rx.append(theirs).unwrap_err();
    assert_eq!((err.list, err.offered), (nic.id(), disk.id()));
    let msg = err.to_string();
    assert!(msg.contains("cannot join a list of device"), "{msg}");
    assert_eq!(rx.len(), 2, "the target list is unchanged");

    // The refused list comes back whole, still mapped on its own device.
    let theirs = err.into_inner();
    assert_eq!(theirs.len(), 3);
    assert_eq!(theirs.segments().count(), 3);

    // A list of the same device joins.
    let more = nic.map_sg::<FromDevice, _, _>([buf()]).unwrap();
    rx.append(more).unwrap();
    assert_eq!(rx.len(), 3);

    // SAFETY: neither simulated device was started.
    let (mine, theirs) = unsafe { (rx.unmap(), theirs.unmap()) };
    assert_eq!((mine.len(), theirs.len()), (3, 3));
    assert_eq!((nic.leaked(), disk.leaked()), (0, 0));
    drop((mine, theirs));
    assert_eq!(sim.memory().allocated_bytes(), 0);
}
