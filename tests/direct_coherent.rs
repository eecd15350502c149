//! The direct-coherent backend on the simulated platform: bytes move through
//! the bus translation, errors give buffers back, dropped in-flight handles
//! are quarantined, and handles cost nothing extra.

use std::mem::size_of;

use dmacap::backend::direct::{DirectCoherent, DmaWindow, DmaWindows};
use dmacap::platform::IdentityMap;
use dmacap::sim::{SimFault, SimPlatform};
use dmacap::{
    Bidirectional, CpuOwned, DevOwned, DeviceConfig, DmaAddr, DmaBuffer, DmaMask, FromDevice,
    MapErrorKind, Mapped, PhysAddr, RawBuffer, ToDevice,
};

type Handle<S> = Mapped<'static, ToDevice, S, Box<[u8]>, DirectCoherent<IdentityMap>>;

#[test]
fn handle_costs_at_most_two_words_over_the_buffer() {
    // The buffer (pointer and length), the DMA address and the device
    // reference: no physical address, no unmap state.
    assert!(size_of::<Handle<DevOwned>>() <= size_of::<Box<[u8]>>() + 16);
    assert!(size_of::<Handle<CpuOwned>>() <= size_of::<Box<[u8]>>() + 16);
    assert_eq!(size_of::<Handle<DevOwned>>(), 32);
}

#[test]
fn transmit_then_receive_moves_the_bytes() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();
    let engine = sim.device(&dev);

    let mut tx = sim.memory().alloc_slice::<u8>(256).unwrap();
    for (i, b) in tx.iter_mut().enumerate() {
        *b = i as u8;
    }
    let tx = dev.map_to_device(tx).unwrap();
    let rx = dev
        .map_from_device(sim.memory().alloc_slice::<u8>(256).unwrap())
        .unwrap();
    assert_ne!(tx.dma_addr(), rx.dma_addr());

    engine.copy(tx.dma_addr(), rx.dma_addr(), 256).unwrap();

    // SAFETY: `copy` returned; the simulated device is finished.
    let rx = unsafe { rx.sync_for_cpu() };
    assert!(rx.contents().iter().enumerate().all(|(i, &b)| b == i as u8));
    // SAFETY: as above.
    let tx = unsafe { tx.unmap() };
    assert_eq!(tx[255], 255);
    let rx = rx.unmap();
    assert_eq!(rx[17], 17);
}

#[test]
fn receive_buffer_is_recycled_through_sync_for_device() {
    let sim = SimPlatform::new(1 << 16);
    let dev = sim.coherent_device();
    let engine = sim.device(&dev);
    let mut rx = dev
        .map_from_device(sim.memory().alloc_slice::<u8>(8).unwrap())
        .unwrap();
    for packet in [*b"first!!!", *b"second!!"] {
        engine.write(rx.dma_addr(), &packet).unwrap();
        // SAFETY: the write completed.
        let seen = unsafe { rx.sync_for_cpu() };
        assert_eq!(seen.contents(), &packet);
        rx = seen.sync_for_device();
    }
    // SAFETY: no access is pending.
    drop(unsafe { rx.unmap() });
    assert_eq!(sim.memory().allocated_bytes(), 0);
}

#[test]
fn bidirectional_command_and_status() {
    #[derive(zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::Immutable, Debug)]
    #[repr(C)]
    struct Cmd {
        opcode: u32,
        status: u32,
    }
    let sim = SimPlatform::new(1 << 16);
    let dev = sim.coherent_device();
    let engine = sim.device(&dev);
    let mut cmd = sim.memory().alloc::<Cmd>().unwrap();
    cmd.opcode = 0x42;
    let h = dev.map_bidirectional(cmd).unwrap();
    let mut word = [0u8; 4];
    engine.read(h.dma_addr(), &mut word).unwrap();
    assert_eq!(u32::from_ne_bytes(word), 0x42);
    engine
        .write(DmaAddr::new(h.dma_addr().as_u64() + 4), &7u32.to_ne_bytes())
        .unwrap();
    // SAFETY: the device's accesses completed.
    let mut h = unsafe { h.sync_for_cpu() };
    assert_eq!(h.contents().status, 7);
    h.contents_mut().opcode = 0x43;
    let h = h.sync_for_device();
    engine.read(h.dma_addr(), &mut word).unwrap();
    assert_eq!(u32::from_ne_bytes(word), 0x43);
    // SAFETY: completed.
    let cmd = unsafe { h.unmap() };
    assert_eq!((cmd.opcode, cmd.status), (0x43, 7));
}

#[test]
fn partial_sync_limits_the_view() {
    let sim = SimPlatform::new(1 << 16);
    let dev = sim.coherent_device();
    let engine = sim.device(&dev);
    let rx = dev
        .map_from_device(sim.memory().alloc_slice::<u16>(32).unwrap())
        .unwrap();
    engine.write(rx.dma_addr(), &[1, 0, 2, 0, 3, 0]).unwrap();
    // SAFETY: completed.
    let too_long = unsafe { rx.sync_prefix_for_cpu(33) }.unwrap_err();
    assert_eq!((too_long.requested, too_long.available), (33, 32));
    let rx = too_long.into_handle();
    // SAFETY: completed.
    let rx = unsafe { rx.sync_prefix_for_cpu(3) }.unwrap();
    assert_eq!(rx.contents(), &[1, 2, 3]);
    assert_eq!(rx.prefix_len(), 3);
    let buf = rx.unmap();
    assert_eq!(buf.len(), 32);
}

#[test]
fn dropped_device_owned_handle_is_quarantined_and_counted() {
    let sim = SimPlatform::new(1 << 16);
    let dev = sim.coherent_device();
    let rx = dev
        .map_from_device(sim.memory().alloc_slice::<u8>(100).unwrap())
        .unwrap();
    let dma = rx.dma_addr();
    drop(rx);
    // The memory was not returned: the device may still write there.
    assert_eq!(sim.memory().allocated_bytes(), 100);
    assert_eq!(dev.leaked(), 1);
    assert_eq!(dev.stats().leaked_bytes(), 100);
    // And a late device write still lands in memory nobody else was given.
    let again = sim.memory().alloc_slice::<u8>(100).unwrap();
    sim.device(&dev).fill(dma, 0xee, 100).unwrap();
    assert!(again.iter().all(|&b| b == 0));
}

#[test]
fn forgotten_handle_leaks_without_unsoundness() {
    let sim = SimPlatform::new(1 << 16);
    let dev = sim.coherent_device();
    let rx = dev
        .map_from_device(sim.memory().alloc_slice::<u8>(64).unwrap())
        .unwrap();
    std::mem::forget(rx);
    assert_eq!(sim.memory().allocated_bytes(), 64);
    // Forgetting runs no destructor, so nothing is counted either.
    assert_eq!(dev.leaked(), 0);
}

#[test]
fn dropped_cpu_owned_handle_unmaps_and_frees() {
    let sim = SimPlatform::new(1 << 16);
    let dev = sim.coherent_device();
    let rx = dev
        .map_from_device(sim.memory().alloc_slice::<u8>(64).unwrap())
        .unwrap();
    // SAFETY: the device was never started.
    let rx = unsafe { rx.sync_for_cpu() };
    drop(rx);
    assert_eq!(sim.memory().allocated_bytes(), 0);
    assert_eq!(dev.leaked(), 0);
}

#[test]
fn zero_length_is_refused_and_the_buffer_returned() {
    let sim = SimPlatform::new(1 << 16);
    let dev = sim.coherent_device();
    let err = dev
        .map_to_device(sim.memory().alloc_slice::<u8>(0).unwrap())
        .unwrap_err();
    assert_eq!(err.kind(), MapErrorKind::ZeroLength);
    assert_eq!(err.into_buffer().len(), 0);
    assert!(
        dev.map_to_device(Box::new([0u32; 0]) as Box<[u32]>)
            .is_err_and(|e| e.kind() == MapErrorKind::ZeroLength)
    );
}

#[test]
fn beyond_the_mask_is_refused_and_nothing_changes() {
    // RAM above 4 GiB, a device with a 32-bit mask, and no bouncing.
    let sim = SimPlatform::with_base(PhysAddr::new(0x1_0000_0000), 1 << 16);
    let dev = sim.coherent_device();
    let mut buf = sim.memory().alloc_slice::<u8>(16).unwrap();
    buf.copy_from_slice(b"keep these bytes");
    let before = sim.memory().allocated_bytes();
    let err = dev.map_to_device(buf).unwrap_err();
    assert!(matches!(
        err.kind(),
        MapErrorKind::BeyondMask { dma, len: 16, mask }
            if dma.as_u64() == 0x1_0000_0000 && mask == DmaMask::bits(32)
    ));
    assert_eq!(sim.memory().allocated_bytes(), before);
    let msg = err.to_string();
    assert!(msg.contains("beyond the device's mask"), "{msg}");
    assert_eq!(&*err.into_buffer(), b"keep these bytes");

    // The same RAM is fine for a 64-bit device.
    let wide = sim.coherent_device_with(
        DeviceConfig::new().dma_mask(DmaMask::bits(64)),
        DmaWindows::identity(),
    );
    let h = wide
        .map_to_device(sim.memory().alloc_slice::<u8>(16).unwrap())
        .unwrap();
    // SAFETY: never started.
    drop(unsafe { h.unmap() });
}

#[test]
fn buffer_the_platform_cannot_translate_is_refused() {
    let sim = SimPlatform::new(1 << 16);
    let dev = sim.coherent_device();
    // Heap memory outside the simulated RAM has no simulated physical address.
    let err = dev
        .map_to_device(vec![1u8; 8].into_boxed_slice())
        .unwrap_err();
    assert!(matches!(
        err.kind(),
        MapErrorKind::NoPhysAddr { len: 8, .. }
    ));
    assert_eq!(&*err.into_buffer(), &[1u8; 8]);
}

#[test]
fn bus_windows_offset_dma_addresses() {
    // RAM at 2 GiB, seen by devices at 0 (a typical arm64 `dma-ranges`).
    let sim = SimPlatform::new(1 << 16);
    let windows = DmaWindows::new(&[DmaWindow {
        cpu_start: PhysAddr::new(SimPlatform::DEFAULT_BASE),
        dma_start: DmaAddr::new(0),
        size: 1 << 16,
    }])
    .unwrap();
    let dev = sim.coherent_device_with(DeviceConfig::new(), windows);
    let engine = sim.device(&dev);
    let buf = sim.memory().alloc_slice::<u8>(4).unwrap();
    let phys = sim.memory().phys_of_buffer(&buf);
    let rx = dev.map_from_device(buf).unwrap();
    assert_eq!(
        rx.dma_addr().as_u64(),
        phys.as_u64() - SimPlatform::DEFAULT_BASE
    );
    engine.write(rx.dma_addr(), b"bus!").unwrap();
    // The CPU's physical address is not a bus address for this device.
    assert!(matches!(
        engine.write(DmaAddr::new(phys.as_u64()), b"x"),
        Err(SimFault::Untranslated { .. })
    ));
    // SAFETY: completed.
    let rx = unsafe { rx.sync_for_cpu() };
    assert_eq!(rx.contents(), b"bus!");

    // Memory outside every window cannot be mapped.
    let narrow = DmaWindows::new(&[DmaWindow {
        cpu_start: PhysAddr::new(SimPlatform::DEFAULT_BASE),
        dma_start: DmaAddr::new(0),
        size: 64,
    }])
    .unwrap();
    let dev2 = sim.coherent_device_with(DeviceConfig::new(), narrow);
    let err = dev2
        .map_to_device(sim.memory().alloc_slice::<u8>(128).unwrap())
        .unwrap_err();
    assert!(matches!(
        err.kind(),
        MapErrorKind::NoDmaWindow { len: 128, .. }
    ));
}

#[test]
fn device_cannot_reach_beyond_its_mask_or_outside_ram() {
    let sim = SimPlatform::new(1 << 16);
    let dev = sim.coherent_device();
    let engine = sim.device(&dev);
    assert!(matches!(
        engine.write(DmaAddr::new(0x1_0000_0000), b"x"),
        Err(SimFault::BeyondMask { .. })
    ));
    assert!(matches!(
        engine.write(DmaAddr::new(0x1000), b"x"),
        Err(SimFault::NotRam { .. })
    ));
}

#[test]
fn boxes_and_static_buffers_map_on_an_identity_platform() {
    // SAFETY: no hardware device exists in this test, and the simulated
    // engine is not attached: addresses are only compared, never accessed.
    let platform = unsafe { IdentityMap::new() };
    let dev = dmacap::Device::new(
        DirectCoherent::new(platform),
        DeviceConfig::new().dma_mask(DmaMask::bits(64)),
    );
    let boxed: Box<[u32]> = vec![9; 4].into_boxed_slice();
    let addr = boxed.as_ptr() as u64;
    let h = dev.map::<Bidirectional, _>(boxed).unwrap();
    assert_eq!(h.dma_addr().as_u64(), addr);
    assert_eq!(h.byte_len(), 16);
    // SAFETY: no device.
    let h = unsafe { h.sync_for_cpu() };
    assert_eq!(h.contents(), &[9; 4]);
    drop(h.unmap());

    let leaked: &'static mut [u8; 32] = Box::leak(Box::new([5; 32]));
    let h = dev.map_to_device(leaked).unwrap();
    // SAFETY: no device.
    let back = unsafe { h.unmap() };
    assert_eq!(back[31], 5);

    let single = Box::new(0x1234_5678u32);
    let h = dev.map::<FromDevice, _>(single).unwrap();
    assert_eq!(h.byte_len(), 4);
    // SAFETY: no device.
    assert_eq!(*unsafe { h.unmap() }, 0x1234_5678);
}

#[test]
fn raw_memory_maps_through_the_same_checks() {
    let sim = SimPlatform::new(1 << 16);
    let dev = sim.coherent_device();
    let engine = sim.device(&dev);
    // Memory the driver cannot own as a Rust value: take a simulated buffer
    // apart into its raw pointer and never rebuild it.
    let (region, _ram) = sim.memory().alloc_slice::<u8>(32).unwrap().into_raw_parts();
    std::mem::forget(_ram);
    // SAFETY: `region` is valid and initialised (zeroed), never freed (its
    // parts are never rebuilt), and only this RawBuffer touches it.
    let raw = unsafe { RawBuffer::new(region) };
    let h = dev.map_from_device(raw).unwrap();
    engine.write(h.dma_addr(), b"raw").unwrap();
    // SAFETY: completed.
    let h = unsafe { h.sync_for_cpu() };
    assert_eq!(&h.contents()[..3], b"raw");
    let raw = h.unmap();
    assert_eq!(raw.as_ptr().len(), 32);
}

#[test]
fn completion_on_another_thread() {
    let sim = SimPlatform::new(1 << 16);
    let dev = sim.coherent_device();
    let engine = sim.device(&dev);
    let rx = dev
        .map_from_device(sim.memory().alloc_slice::<u8>(5).unwrap())
        .unwrap();
    engine.write(rx.dma_addr(), b"hello").unwrap();
    std::thread::scope(|s| {
        let done = s.spawn(move || {
            // SAFETY: the device's write completed before the spawn.
            let rx = unsafe { rx.sync_for_cpu() };
            rx.contents().to_vec()
        });
        assert_eq!(done.join().unwrap(), b"hello");
    });
}

#[test]
fn debug_shows_the_state() {
    let sim = SimPlatform::new(1 << 16);
    let dev = sim.coherent_device();
    let h = dev
        .map_to_device(sim.memory().alloc_slice::<u8>(3).unwrap())
        .unwrap();
    let s = format!("{h:?}");
    assert!(
        s.starts_with("Mapped<ToDevice, DevOwned> { bytes: 3, dma: 0x8"),
        "{s}"
    );
    // SAFETY: never started.
    let h = unsafe { h.sync_for_cpu() };
    assert_eq!(format!("{h:?}"), "Mapped<ToDevice, CpuOwned> { bytes: 3 }");
}
