//! Compiles and runs: a `bool` mapped `ToDevice` behind an IOMMU (issue 7,
//! hole 1).
//!
//! The IOMMU maps a `ToDevice` buffer read-only (`Enforcement = Enforced`),
//! so the device cannot write it and `IntoBytes` suffices: no `FromBytes`.
//! The simulated IOMMU refuses the write (`SimFault::Denied`), logs the
//! fault, and the `bool` comes back intact. (On a direct bus the same map
//! does not compile: `fail/to_device_non_frombytes_on_direct_bus.rs`.)

use dmacap::DeviceConfig;
use dmacap::backend::iommu::InvalidationMode;
use dmacap::sim::{FaultReason, SimFault, SimPlatform};

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.iommu_device(InvalidationMode::Strict, DeviceConfig::new());
    let engine = sim.device(&dev);

    let mut flag = sim.memory().alloc::<bool>().unwrap();
    *flag = true;
    let tx = dev.map_to_device(flag).unwrap();

    let mut seen = [0u8; 1];
    engine.read(tx.dma_addr(), &mut seen).unwrap();
    assert_eq!(seen, [1]);
    assert!(matches!(
        engine.write(tx.dma_addr(), &[2]),
        Err(SimFault::Denied { .. })
    ));
    let faults = dev.backend().translation().hardware().faults();
    assert_eq!(faults[0].reason, FaultReason::Denied);

    // SAFETY: the simulated accesses returned: the device has finished.
    let flag = unsafe { tx.unmap() };
    assert!(*flag);
    assert_eq!(dev.leaked(), 0);

    // A boxed bool maps as well: it is refused at run time only because the
    // simulator cannot place host heap memory (no physical address), and
    // comes back unchanged.
    let err = dev.map_to_device(Box::new(true)).unwrap_err();
    assert!(*err.into_buffer());
}
