//! A descriptor-ring driver: a coherent ring of little-endian zerocopy
//! descriptors shared with a device for its whole life, plus streaming
//! buffers mapped per request, on the simulated platform.
//!
//! The device is a copy engine: for each descriptor the driver publishes it
//! reads `len` bytes at `src`, writes them reversed at `dst`, marks the
//! descriptor done and bumps the `used` index. It runs twice: on a coherent
//! device with direct translation, and behind a strict IOMMU over the
//! simulated non-coherent cache. The ring needs no cache maintenance on
//! either (it is coherent memory: uncached where the device does not
//! snoop); the streaming buffers do, batched.
//!
//! ```sh
//! cargo run --example descriptor_ring
//! ```

use dmacap::backend::Backend;
use dmacap::backend::compose::{Composed, NoBounce, NonCoherent};
use dmacap::backend::iommu::{InvalidationMode, IommuDomain};
use dmacap::sim::{BusTranslate, SimDevice, SimIommu, SimMemory, SimPlatform};
use dmacap::{Coherent, Device, DeviceConfig, DmaAddr, dma_read, dma_write};
use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// One request: copy `len` bytes from `src` to `dst`, reversed.
#[derive(FromBytes, IntoBytes, Immutable, Clone, Copy)]
#[repr(C)]
struct Desc {
    src: U64,
    dst: U64,
    len: U32,
    flags: U16,
    id: U16,
}

/// Set by the device when it has handled a descriptor.
const DONE: u16 = 1;

/// The ring's indices: the driver publishes `avail`, the device `used`.
#[derive(FromBytes, IntoBytes, Immutable)]
#[repr(C)]
struct Indices {
    avail: U16,
    used: U16,
}

const SLOTS: usize = 8;
const LEN: usize = 256;

/// The simulated device's side: everything through DMA at the addresses
/// the driver published.
fn device_runs<B: Backend + BusTranslate>(
    engine: &SimDevice<'_, B>,
    ring: DmaAddr,
    indices: DmaAddr,
    seen: &mut u16,
) -> usize {
    let at = |a: DmaAddr, off: usize| a.checked_add(off as u64).unwrap();
    let mut idx = [0u8; 4];
    engine.read(indices, &mut idx).unwrap();
    let avail = u16::from_le_bytes([idx[0], idx[1]]);
    let mut moved = 0;
    while *seen != avail {
        let slot = usize::from(*seen) % SLOTS;
        let mut raw = [0u8; 24];
        engine.read(at(ring, slot * 24), &mut raw).unwrap();
        let mut d = Desc::read_from_bytes(&raw).unwrap();
        let mut data = vec![0u8; d.len.get() as usize];
        engine.read(DmaAddr::new(d.src.get()), &mut data).unwrap();
        data.reverse();
        engine.write(DmaAddr::new(d.dst.get()), &data).unwrap();
        d.flags = U16::new(DONE);
        engine.write(at(ring, slot * 24), d.as_bytes()).unwrap();
        *seen = seen.wrapping_add(1);
        engine.write(at(indices, 2), &seen.to_le_bytes()).unwrap();
        moved += data.len();
    }
    moved
}

/// The driver: `rounds` rounds of `SLOTS` requests.
fn run<B>(name: &str, mem: &SimMemory, dev: &Device<B>, rounds: usize)
where
    B: Backend<Platform = SimMemory> + BusTranslate,
{
    let engine = SimDevice::new(dev, mem.clone());
    // The ring: built in the CPU-only phase, then shared for good.
    let mut ring = dev.alloc_coherent_slice::<Desc>(SLOTS).unwrap();
    for (i, d) in ring.iter_mut().enumerate() {
        d.id = U16::new(i as u16);
    }
    let mut ring: Coherent<'_, [Desc], B> = ring.share().unwrap();
    let mut indices = dev.alloc_coherent::<Indices>().unwrap().share().unwrap();
    let (mut avail, mut device_seen, mut moved, mut checked) = (0u16, 0u16, 0, 0);

    for round in 0..rounds {
        // Map a batch of sources and destinations: one barrier.
        let mut srcs = dev.batch();
        let mut dsts = dev.batch();
        for i in 0..SLOTS {
            let mut src = mem.alloc_slice_aligned::<u8>(LEN, 64).unwrap();
            src.iter_mut()
                .enumerate()
                .for_each(|(k, b)| *b = (k + i + round) as u8);
            srcs.map_to_device(src).unwrap();
            dsts.map_from_device(mem.alloc_slice_aligned::<u8>(LEN, 64).unwrap())
                .unwrap();
        }
        let srcs = srcs.flush();
        let dsts = dsts.flush();
        // Publish: one volatile store per field, then the index.
        for (i, (s, d)) in srcs.iter().zip(&dsts).enumerate() {
            let slot = usize::from(avail.wrapping_add(i as u16)) % SLOTS;
            dma_write!(ring[slot], Desc, src, U64::new(s.dma_addr().as_u64()));
            dma_write!(ring[slot], Desc, dst, U64::new(d.dma_addr().as_u64()));
            dma_write!(ring[slot], Desc, len, U32::new(LEN as u32));
            dma_write!(ring[slot], Desc, flags, U16::new(0));
        }
        avail = avail.wrapping_add(SLOTS as u16);
        dma_write!(indices, Indices, avail, U16::new(avail));

        moved += device_runs(
            &engine,
            ring.dma_addr(),
            indices.dma_addr(),
            &mut device_seen,
        );

        // The device bumped `used`: take every destination back in one batch.
        assert_eq!(dma_read!(indices, Indices, used).get(), avail);
        for slot in 0..SLOTS {
            assert_eq!(dma_read!(ring[slot], Desc, flags).get(), DONE);
        }
        let mut back = dev.batch();
        for d in dsts {
            // SAFETY: the device marked every descriptor done and bumped
            // `used` (read above), so it has finished with each buffer.
            unsafe { back.sync_for_cpu(d) };
        }
        let dsts = back.flush();
        let mut gone = dev.batch();
        for (i, (s, d)) in srcs.into_iter().zip(dsts).enumerate() {
            let want: Vec<u8> = (0..LEN).rev().map(|k| (k + i + round) as u8).collect();
            assert_eq!(d.contents(), &want[..], "round {round}, request {i}");
            checked += 1;
            gone.unmap(d);
            // SAFETY: the device has finished with the source (descriptor
            // done).
            unsafe { gone.unmap_device_owned(s) };
        }
        // Sixteen unmaps, one barrier and one IOTLB invalidation.
        drop(gone.flush());
    }
    let s = dev.stats();
    println!(
        "{name:<34} {rounds} rounds x {SLOTS} requests: {moved} bytes moved, {checked} buffers checked; \
         barriers {}, lines cleaned {}, invalidated {}, IOTLB invalidations {}, leaked {}",
        s.barriers(),
        s.lines_cleaned(),
        s.lines_invalidated(),
        s.iotlb_invalidations(),
        dev.leaked()
    );
    // SAFETY: the simulated device has stopped.
    unsafe {
        ring.free();
        indices.free();
    }
    assert_eq!(dev.leaked(), 0);
    assert_eq!(mem.device_owned_bytes(), 0);
}

fn main() {
    let rounds = 16;
    let coherent = SimPlatform::new(4 << 20);
    run(
        "coherent, direct",
        coherent.memory(),
        &coherent.coherent_device(),
        rounds,
    );

    let noncoherent = SimPlatform::noncoherent(4 << 20);
    let mem = noncoherent.memory().clone();
    let dev = Device::new(
        Composed::from_parts(
            mem.clone(),
            IommuDomain::new(SimIommu::new(), InvalidationMode::Strict),
            NonCoherent(mem.cache().unwrap()),
            NoBounce,
        ),
        DeviceConfig::new(),
    );
    run("strict IOMMU over a non-coherent cache", &mem, &dev, rounds);
    println!("descriptor ring: every byte arrived, nothing leaked");
}
