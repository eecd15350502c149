//! A storage-style driver: NVMe-like commands whose data is a
//! scatter-gather list, on the simulated platform, with a fake controller
//! that moves every byte through DMA.
//!
//! For each command the driver
//!
//! 1. maps the data buffers as one scatter-gather list (`map_sg`: one
//!    barrier for the list) and reads its segments, which the device's
//!    limits (4 KiB per segment, no 4 KiB boundary crossed) split like a
//!    PRP list;
//! 2. writes the command, with the segments inline as an SGL, into a
//!    command buffer, and maps it `ToDevice` together with a `FromDevice`
//!    completion buffer in one fixed batch (one barrier for both);
//! 3. rings the controller with the two DMA addresses; the controller reads
//!    the command, walks the SGL (reading the data for a write, writing it
//!    for a read) and writes the completion;
//! 4. takes the completion back and unmaps the command in one fixed batch,
//!    checks the status, and takes the data back.
//!
//! Every block is written, then read back into fresh buffers and compared;
//! any corrupted byte, leak or pool not given back exits non-zero. It runs
//! behind a strict IOMMU over the simulated non-coherent cache, then
//! directly mapped, and prints the barrier and invalidation counts.
//!
//! ```sh
//! cargo run --example storage_command
//! ```

use std::process::exit;
use std::time::{Duration, Instant};

use dmacap::backend::Backend;
use dmacap::backend::compose::{Composed, NoBounce, NonCoherent};
use dmacap::backend::direct::DmaWindows;
use dmacap::backend::iommu::{InvalidationMode, IommuDomain};
use dmacap::buffer::CacheSafe;
use dmacap::sim::{BusTranslate, SimDevice, SimIommu, SimMemory, SimPlatform};
use dmacap::{Device, DeviceConfig, DmaAddr, FromDevice, ToDevice};
use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes};

const BLOCK: usize = 512;
const DISK_BLOCKS: u64 = 4096;
const MAX_SGL: usize = 16;
const COMMANDS: usize = 300;
const LINE: usize = 64;

const OP_WRITE: u8 = 1;
const OP_READ: u8 = 2;

/// One SGL entry: a segment of the data.
#[derive(FromBytes, IntoBytes, Immutable, Clone, Copy, Default)]
#[repr(C)]
struct SglEntry {
    addr: U64,
    len: U32,
    _reserved: U32,
}

/// The command, SGL inline.
#[derive(FromBytes, IntoBytes, Immutable, Clone, Copy)]
#[repr(C)]
struct Command {
    opcode: u8,
    _reserved: [u8; 1],
    entries: U16,
    id: U32,
    lba: U64,
    blocks: U32,
    _reserved2: U32,
    sgl: [SglEntry; MAX_SGL],
}

/// What the controller writes back.
#[derive(FromBytes, IntoBytes, Immutable, Clone, Copy)]
#[repr(C)]
struct Completion {
    id: U32,
    status: U16,
    _reserved: U16,
    bytes: U32,
    _reserved2: U32,
}

const CMD_BUF: usize = size_of::<Command>().next_multiple_of(LINE);
const CPL_BUF: usize = LINE;

fn fail(what: &str) -> ! {
    eprintln!("CORRUPTION: {what}");
    exit(1);
}

/// The fake controller: a disk of its own, reached by the host only
/// through commands; every host byte it touches goes through DMA.
struct Controller<'a, B: Backend> {
    engine: SimDevice<'a, B>,
    disk: Vec<u8>,
}

impl<B: Backend + BusTranslate> Controller<'_, B> {
    /// The doorbell: the command at `cmd`, its completion to `cpl`.
    fn submit(&mut self, cmd: DmaAddr, cpl: DmaAddr) {
        let mut raw = [0u8; size_of::<Command>()];
        self.engine.read(cmd, &mut raw).unwrap();
        let c = Command::read_from_bytes(&raw).unwrap();
        let start = c.lba.get() as usize * BLOCK;
        let total = c.blocks.get() as usize * BLOCK;
        let mut at = start;
        let mut status = 0;
        for e in &c.sgl[..usize::from(c.entries.get())] {
            let (addr, len) = (DmaAddr::new(e.addr.get()), e.len.get() as usize);
            let r = match c.opcode {
                OP_WRITE => self.engine.read(addr, &mut self.disk[at..at + len]),
                OP_READ => self.engine.write(addr, &self.disk[at..at + len]),
                _ => Ok(()),
            };
            if r.is_err() {
                status = 1;
                break;
            }
            at += len;
        }
        if at - start != total {
            status = 2;
        }
        let done = Completion {
            id: c.id,
            status: U16::new(status),
            _reserved: U16::ZERO,
            bytes: U32::new((at - start) as u32),
            _reserved2: U32::ZERO,
        };
        self.engine.write(cpl, done.as_bytes()).unwrap();
    }
}

/// The data of command `id`: a few buffers of mixed sizes (whole lines),
/// like the pages of a request.
fn shape(id: usize) -> Vec<usize> {
    let sizes = [4096, 8192, 1536, 2048, 12288, 512];
    (0..1 + id % 4)
        .map(|k| sizes[(id + 2 * k) % sizes.len()])
        .collect()
}

fn byte(id: usize, i: usize) -> u8 {
    (id.wrapping_mul(131) ^ i.wrapping_mul(7) ^ (i >> 9)) as u8
}

/// What one run measured.
struct Report {
    elapsed: Duration,
    bytes: usize,
    segments: usize,
    barriers: usize,
    iotlb: usize,
}

/// Sends one command: maps its command and completion buffers in one fixed
/// batch, rings the controller, takes the completion back.
fn command<B>(
    mem: &SimMemory,
    dev: &Device<B>,
    ctrl: &mut Controller<'_, B>,
    op: u8,
    id: u32,
    lba: u64,
    segments: &[(DmaAddr, usize)],
) -> usize
where
    B: Backend<Platform = SimMemory> + BusTranslate,
    [u8]: CacheSafe<B::Granule>,
{
    if segments.len() > MAX_SGL {
        fail("too many segments for the SGL");
    }
    let mut sgl = [SglEntry::default(); MAX_SGL];
    for (e, &(addr, len)) in sgl.iter_mut().zip(segments) {
        e.addr = U64::new(addr.as_u64());
        e.len = U32::new(len as u32);
    }
    let bytes: usize = segments.iter().map(|s| s.1).sum();
    let cmd = Command {
        opcode: op,
        _reserved: [0],
        entries: U16::new(segments.len() as u16),
        id: U32::new(id),
        lba: U64::new(lba),
        blocks: U32::new((bytes / BLOCK) as u32),
        _reserved2: U32::ZERO,
        sgl,
    };
    let mut cbuf = mem.alloc_slice_aligned::<u8>(CMD_BUF, LINE).unwrap();
    cbuf[..size_of::<Command>()].copy_from_slice(cmd.as_bytes());
    let pbuf = mem.alloc_slice_aligned::<u8>(CPL_BUF, LINE).unwrap();
    // Command and completion: one fixed batch, one barrier.
    let (c, p) = dev
        .fixed_batch()
        .map_to_device(cbuf)
        .and_then(|b| b.map_from_device(pbuf))
        .unwrap_or_else(|e| fail(&format!("command map: {e}")))
        .flush();
    ctrl.submit(c.dma_addr(), p.dma_addr());
    // SAFETY: `submit` returned: the controller has written the completion
    // and touches neither buffer again.
    let (_cbuf, p) = unsafe { dev.fixed_batch().unmap_device_owned(c).sync_for_cpu(p) }.flush();
    let done = Completion::read_from_bytes(&p.contents()[..size_of::<Completion>()]).unwrap();
    if done.id.get() != id || done.status.get() != 0 || done.bytes.get() as usize != bytes {
        fail(&format!(
            "command {id}: status {} for {} of {bytes} bytes",
            done.status.get(),
            done.bytes.get()
        ));
    }
    bytes
}

/// Writes and reads back `COMMANDS` requests.
fn run<B>(name: &str, mem: &SimMemory, dev: &Device<B>) -> Report
where
    B: Backend<Platform = SimMemory> + BusTranslate,
    [u8]: CacheSafe<B::Granule>,
{
    let start = Instant::now();
    let ram_before = mem.allocated_bytes();
    let mut ctrl = Controller {
        engine: SimDevice::new(dev, mem.clone()),
        disk: vec![0; DISK_BLOCKS as usize * BLOCK],
    };
    let (mut bytes, mut segments, mut lba) = (0, 0, 0u64);
    let mut last_progress = Instant::now();
    for id in 0..COMMANDS {
        let sizes = shape(id);
        let total: usize = sizes.iter().sum();
        if lba + (total / BLOCK) as u64 > DISK_BLOCKS {
            lba = 0;
        }

        // Write: fill the data, map it as one list, send the command.
        let bufs = sizes.iter().scan(0, |at, &n| {
            let mut b = mem.alloc_slice_aligned::<u8>(n, LINE).unwrap();
            b.iter_mut()
                .enumerate()
                .for_each(|(i, x)| *x = byte(id, *at + i));
            *at += n;
            Some(b)
        });
        let list = dev
            .map_sg::<ToDevice, _, _>(bufs)
            .unwrap_or_else(|e| fail(&format!("map_sg: {e:?}")));
        let segs: Vec<(DmaAddr, usize)> = list.segments().collect();
        segments += segs.len();
        bytes += command(mem, dev, &mut ctrl, OP_WRITE, 2 * id as u32, lba, &segs);
        // SAFETY: the write command completed: the controller read the data.
        drop(unsafe { list.unmap() });

        // Read it back into fresh buffers, laid out differently.
        let back: Vec<_> = sizes
            .iter()
            .rev()
            .map(|&n| mem.alloc_slice_aligned::<u8>(n, LINE).unwrap())
            .collect();
        let list = dev
            .map_sg::<FromDevice, _, _>(back)
            .unwrap_or_else(|e| fail(&format!("map_sg: {e:?}")));
        let segs: Vec<(DmaAddr, usize)> = list.segments().collect();
        segments += segs.len();
        bytes += command(mem, dev, &mut ctrl, OP_READ, 2 * id as u32 + 1, lba, &segs);
        // SAFETY: the read command completed: the controller wrote the data.
        let list = unsafe { list.sync_for_cpu() };
        let mut at = 0;
        for chunk in list.iter_contents() {
            for (i, &x) in chunk.iter().enumerate() {
                if x != byte(id, at + i) {
                    fail(&format!(
                        "{name}: command {id}, byte {} read back wrong",
                        at + i
                    ));
                }
            }
            at += chunk.len();
        }
        drop(list.unmap());
        lba += (total / BLOCK) as u64;

        if last_progress.elapsed() > Duration::from_secs(1) {
            println!(
                "  {name}: {id}/{COMMANDS} commands, {:.1?}",
                start.elapsed()
            );
            last_progress = Instant::now();
        }
    }
    if dev.leaked() != 0 || mem.allocated_bytes() != ram_before || mem.device_owned_bytes() != 0 {
        fail(&format!("{name}: not everything came back"));
    }
    let s = dev.stats();
    Report {
        elapsed: start.elapsed(),
        bytes,
        segments,
        barriers: s.barriers(),
        iotlb: s.iotlb_invalidations(),
    }
}

fn print(name: &str, r: &Report) {
    println!(
        "{name:<24} {:>4} commands  {:>8} bytes  {:>4} segments  {:>4} barriers  \
         {:>4} IOTLB inv.  {:.1?}",
        2 * COMMANDS,
        r.bytes,
        r.segments,
        r.barriers,
        r.iotlb,
        r.elapsed
    );
}

fn main() {
    // Segments of at most 4 KiB, none crossing a 4 KiB boundary: PRP-like.
    let config = DeviceConfig::new()
        .max_segment_size(4096)
        .segment_boundary(4096 - 1);

    let sim = SimPlatform::noncoherent(4 << 20);
    let mem = sim.memory();
    let domain = IommuDomain::new(SimIommu::new(), InvalidationMode::Strict);
    let dev = Device::new(
        Composed::from_parts(
            mem.clone(),
            domain,
            NonCoherent(mem.cache().unwrap()),
            NoBounce,
        ),
        config,
    );
    let free = dev.backend().translation().free_pages();
    let r = run("IOMMU + non-coherent", mem, &dev);
    if dev.backend().translation().free_pages() != free {
        fail("IOVA pages not given back");
    }
    print("IOMMU + non-coherent", &r);

    let sim = SimPlatform::noncoherent(4 << 20);
    let dev = sim.noncoherent_device_with(config, DmaWindows::identity());
    let r = run("direct + non-coherent", sim.memory(), &dev);
    print("direct + non-coherent", &r);
    println!(
        "{:.1} barriers per command directly mapped: the data list is mapped with one, \
         command and completion with one fixed batch and taken back with one, and a read's \
         data list with one more",
        r.barriers as f64 / (2 * COMMANDS) as f64
    );
}
