//! Model-based property tests: random sequences of maps (single, batched,
//! fixed batches, scatter-gather lists), syncs (whole, partial, batched),
//! CPU and device reads and writes (including a hostile device writing
//! whatever its live mappings let it, and through addresses it no longer
//! owns), allocations and unmaps, run against every backend composition
//! and checked against a plain model of what the bytes must be.
//!
//! The model keeps, per byte of every mapped buffer, the set of values the
//! CPU may see once it owns the byte (after the proper sync) and the set
//! the device may read while it owns it. A set has one value wherever the
//! DMA API guarantees the outcome; it grows only where the API leaves it
//! open (a hostile write into a buffer mapped to-device, or the unsynced
//! tail of a partial sync handed back): there the backend may show either
//! side's bytes, and the check is that it shows one of them.
//!
//! At the end of every sequence everything is unmapped and every pool is
//! back: bounce slots, IOVA pages, simulated RAM bytes, device-owned
//! grants, and no handle was quarantined.

use std::sync::Arc;

use dmacap::backend::Backend;
use dmacap::backend::bounce::Swiotlb;
use dmacap::backend::compose::{
    BouncePolicy, Coherency, Coherent, Composed, NoBounce, NonCoherent, PhysJoin, Translation,
};
use dmacap::backend::direct::Direct;
use dmacap::backend::iommu::{InvalidationMode, IommuDomain};
use dmacap::buffer::CacheSafe;
use dmacap::erased::AnyMapped;
use dmacap::sg::SgMapped;
use dmacap::sim::{BusTranslate, SimBuffer, SimCache, SimDevice, SimFault, SimIommu, SimMemory};
use dmacap::{
    AllocError, Bidirectional, CpuOwned, CpuOwnedPrefix, DevOwned, Device, DeviceConfig, DmaAddr,
    DmaMask, FromDevice, MapErrorKind, Mapped, PhysAddr, ToDevice,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRunner};

type Buf = SimBuffer<[u8]>;

/// The generator: a fixed seed, so CI is reproducible; XorShift under
/// Miri, where ChaCha's rounds are slow.
const RNG: RngAlgorithm = if cfg!(miri) {
    RngAlgorithm::XorShift
} else {
    RngAlgorithm::ChaCha
};

/// Cases per backend composition.
const CASES: u32 = if cfg!(miri) { 4 } else { 1000 };
/// Longest sequence.
const MAX_OPS: usize = if cfg!(miri) { 12 } else { 24 };
/// Buffers mapped at once at most (maps beyond it are skipped): keeps every
/// pool far from exhaustion, so a map fails only for the reasons the model
/// predicts. Exhaustion is `tests/faults.rs`'s subject.
const MAX_LIVE: usize = if cfg!(miri) { 8 } else { 16 };
/// The cache-line granule of the simulated non-coherent RAM.
const LINE: usize = 64;

// ---------------------------------------------------------------- the ops

/// A mapping direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    To,
    From,
    Bi,
}

/// One step. `slot` picks among the live mappings the step applies to
/// (modulo their number); `at` and `len` are reduced into the buffer.
#[derive(Clone, Debug)]
enum Op {
    Map {
        dir: Dir,
        len: usize,
        fill: u8,
    },
    BatchMap {
        dir: Dir,
        lens: Vec<usize>,
        fill: u8,
    },
    /// Maps into a batch that is dropped unflushed, or discarded: everything
    /// in it is unmapped and freed; a drop counts the items as unflushed
    /// (and panics in a debug build), a discard does not.
    BatchMapDropped {
        dir: Dir,
        lens: Vec<usize>,
        discard: bool,
    },
    FixedMap {
        tx: usize,
        rx: usize,
        fill: u8,
    },
    MapSg {
        lens: Vec<usize>,
        fill: u8,
    },
    DevWrite {
        slot: usize,
        at: usize,
        len: usize,
        byte: u8,
    },
    DevRead {
        slot: usize,
        at: usize,
        len: usize,
    },
    StaleWrite {
        slot: usize,
        byte: u8,
    },
    SyncForCpu {
        slot: usize,
    },
    SyncPrefixForCpu {
        slot: usize,
        len: usize,
    },
    BatchSyncForCpu {
        dir: Dir,
    },
    SyncForDevice {
        slot: usize,
    },
    CpuWrite {
        slot: usize,
        at: usize,
        len: usize,
        byte: u8,
    },
    CpuRead {
        slot: usize,
    },
    ReadRange {
        slot: usize,
        at: usize,
        len: usize,
    },
    WriteRange {
        slot: usize,
        at: usize,
        len: usize,
        byte: u8,
    },
    /// Drops a CPU-owned mapping: unmapped and freed unseen.
    Drop {
        slot: usize,
    },
    Unmap {
        slot: usize,
    },
    BatchUnmap {
        count: usize,
    },
    AllocPages {
        len: usize,
        byte: u8,
    },
    AllocCoherent {
        len: usize,
        byte: u8,
    },
}

fn dir() -> impl Strategy<Value = Dir> {
    prop_oneof![Just(Dir::To), Just(Dir::From), Just(Dir::Bi)]
}

/// Mostly whole cache lines; sometimes any length (which a non-coherent
/// device without a bounce pool must refuse, and one with a pool bounces).
fn len() -> impl Strategy<Value = usize> {
    prop_oneof![3 => (1usize..=4).prop_map(|k| k * LINE), 1 => 1usize..=256]
}

fn op() -> impl Strategy<Value = Op> {
    let slot = 0usize..8;
    prop_oneof![
        4 => (dir(), len(), any::<u8>()).prop_map(|(dir, len, fill)| Op::Map { dir, len, fill }),
        2 => (dir(), prop::collection::vec(len(), 1..4), any::<u8>())
            .prop_map(|(dir, lens, fill)| Op::BatchMap { dir, lens, fill }),
        1 => (len(), len(), any::<u8>()).prop_map(|(tx, rx, fill)| Op::FixedMap { tx, rx, fill }),
        1 => (dir(), prop::collection::vec(len(), 1..4), any::<bool>())
            .prop_map(|(dir, lens, discard)| Op::BatchMapDropped { dir, lens, discard }),
        1 => (prop::collection::vec(len(), 1..4), any::<u8>())
            .prop_map(|(lens, fill)| Op::MapSg { lens, fill }),
        5 => (slot.clone(), 0usize..512, 0usize..512, any::<u8>())
            .prop_map(|(slot, at, len, byte)| Op::DevWrite { slot, at, len, byte }),
        3 => (slot.clone(), 0usize..512, 0usize..512)
            .prop_map(|(slot, at, len)| Op::DevRead { slot, at, len }),
        1 => (slot.clone(), any::<u8>()).prop_map(|(slot, byte)| Op::StaleWrite { slot, byte }),
        3 => slot.clone().prop_map(|slot| Op::SyncForCpu { slot }),
        2 => (slot.clone(), 0usize..300).prop_map(|(slot, len)| Op::SyncPrefixForCpu { slot, len }),
        1 => dir().prop_map(|dir| Op::BatchSyncForCpu { dir }),
        3 => slot.clone().prop_map(|slot| Op::SyncForDevice { slot }),
        3 => (slot.clone(), 0usize..512, 0usize..512, any::<u8>())
            .prop_map(|(slot, at, len, byte)| Op::CpuWrite { slot, at, len, byte }),
        2 => slot.clone().prop_map(|slot| Op::CpuRead { slot }),
        1 => (slot.clone(), 0usize..512, 0usize..512)
            .prop_map(|(slot, at, len)| Op::ReadRange { slot, at, len }),
        1 => (slot.clone(), 0usize..8, 0usize..8, any::<u8>())
            .prop_map(|(slot, at, len, byte)| Op::WriteRange { slot, at: at * 64, len: len * 64, byte }),
        2 => slot.clone().prop_map(|slot| Op::Unmap { slot }),
        1 => (1usize..4).prop_map(|count| Op::BatchUnmap { count }),
        1 => slot.clone().prop_map(|slot| Op::Drop { slot }),
        1 => (1usize..300, any::<u8>()).prop_map(|(len, byte)| Op::AllocPages { len, byte }),
        1 => (1usize..300, any::<u8>()).prop_map(|(len, byte)| Op::AllocCoherent { len, byte }),
    ]
}

// ---------------------------------------------------------------- the model

/// A set of byte values.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Set([u64; 4]);

impl Set {
    fn one(b: u8) -> Self {
        let mut s = [0; 4];
        s[usize::from(b / 64)] |= 1 << (b % 64);
        Self(s)
    }
    fn has(self, b: u8) -> bool {
        self.0[usize::from(b / 64)] & (1 << (b % 64)) != 0
    }
    fn union(self, o: Self) -> Self {
        Self([
            self.0[0] | o.0[0],
            self.0[1] | o.0[1],
            self.0[2] | o.0[2],
            self.0[3] | o.0[3],
        ])
    }
    fn values(self) -> Vec<u8> {
        (0..=255u8).filter(|&b| self.has(b)).collect()
    }
}

impl std::fmt::Debug for Set {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.values())
    }
}

/// What the CPU sees of a device's write into a `ToDevice` buffer, which
/// is never synced for the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Show {
    /// CPU and device share the memory (coherent, never bounced): the
    /// device's bytes.
    Shared,
    /// Every mapping is bounced: the slot is never copied back, so the
    /// CPU's own bytes.
    Copied,
    /// Either, byte by byte (stale cache lines; bounced or not by size).
    Either,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    Dev,
    Cpu,
    Prefix(usize),
}

/// What the bytes of one mapping (a buffer, or a list's buffers end to
/// end) must be.
#[derive(Debug)]
struct Model {
    dir: Dir,
    show: Show,
    owner: Owner,
    /// What the CPU sees of each byte once it owns it.
    cpu: Vec<Set>,
    /// What the device reads of each byte while it owns it.
    dev: Vec<Set>,
}

impl Model {
    fn new(dir: Dir, bytes: &[u8], show: Show) -> Self {
        let v: Vec<Set> = bytes.iter().map(|&b| Set::one(b)).collect();
        Self {
            dir,
            show,
            owner: Owner::Dev,
            cpu: v.clone(),
            dev: v,
        }
    }

    fn len(&self) -> usize {
        self.cpu.len()
    }

    /// The device is finished; the CPU takes `[0, n)` back.
    fn sync_for_cpu_range(&mut self, n: usize) {
        for i in 0..n {
            self.sync_byte_for_cpu(i);
        }
    }

    /// The device is finished with byte `i`; the CPU takes it back.
    fn sync_byte_for_cpu(&mut self, i: usize) {
        self.cpu[i] = match (self.dir, self.show) {
            // No maintenance for a buffer the device only reads: a
            // hostile write shows where the memory is shared, never
            // from a bounce slot, and otherwise maybe.
            (Dir::To, Show::Copied) => self.cpu[i],
            (Dir::To, Show::Either) => self.cpu[i].union(self.dev[i]),
            _ => self.dev[i],
        };
    }

    fn sync_for_cpu(&mut self) {
        self.sync_for_cpu_range(self.len());
        self.owner = Owner::Cpu;
    }

    fn sync_prefix(&mut self, n: usize) {
        self.sync_for_cpu_range(n);
        self.owner = Owner::Prefix(n);
    }

    fn sync_for_device(&mut self) {
        let synced = match self.owner {
            Owner::Cpu => self.len(),
            Owner::Prefix(n) => n,
            Owner::Dev => unreachable!(),
        };
        for i in 0..self.len() {
            if i < synced && self.dir != Dir::From {
                self.dev[i] = self.cpu[i];
            } else {
                // Either what the device holds, or (the unsynced tail) the
                // CPU's stale view written over it.
                let u = self.cpu[i].union(self.dev[i]);
                self.cpu[i] = u;
                self.dev[i] = u;
            }
        }
        self.owner = Owner::Dev;
    }

    /// What unmapping must give back.
    fn unmap(&mut self) -> Vec<Set> {
        match self.owner {
            Owner::Dev => self.sync_for_cpu(),
            Owner::Prefix(n) => {
                let len = self.len();
                for i in n..len {
                    self.cpu[i] = self.dev[i];
                }
            }
            Owner::Cpu => {}
        }
        self.cpu.clone()
    }
}

fn check_bytes(what: &str, got: &[u8], want: &[Set]) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len(), "{}: length", what);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        prop_assert!(
            w.has(g),
            "{}: byte {} is {:#04x}, model allows {:?}",
            what,
            i,
            g,
            w
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- the harness

/// What the harness needs of a composition besides its backend: its pools'
/// free counts and what it promises.
trait Parts {
    /// Free IOVA pages (0 without an IOMMU).
    fn iova_free(&self) -> u64 {
        0
    }
    /// Completes deferred work (a lazy IOMMU's flush queue).
    fn settle(&self, _dev: &dmacap::context::DeviceContext) {}
    /// Whether the device's accesses are checked against the direction.
    const IOMMU: bool = false;
}

impl Parts for Direct {}

impl Parts for IommuDomain<SimIommu> {
    fn iova_free(&self) -> u64 {
        self.free_pages()
    }
    fn settle(&self, dev: &dmacap::context::DeviceContext) {
        self.flush_queue(dev);
    }
    const IOMMU: bool = true;
}

trait Pool {
    fn free_slots(&self) -> usize {
        0
    }
}
impl Pool for NoBounce {}
impl Pool for Arc<Swiotlb> {
    fn free_slots(&self) -> usize {
        Swiotlb::free_slots(self)
    }
}

struct Counts {
    iova: u64,
    slots: usize,
    ram: usize,
}

/// One composition under test: its RAM, device, and how buffers are made.
struct Rig<T, K, Bo>
where
    Composed<SimMemory, T, K, Bo>: Backend,
{
    mem: SimMemory,
    dev: Device<Composed<SimMemory, T, K, Bo>>,
    /// The RAM a 32-bit device reaches is all taken (by the bounce pool
    /// and a filler): allocations for it must fail, cleanly.
    low_full: bool,
}

impl<T, K, Bo> Rig<T, K, Bo>
where
    T: Translation + Parts,
    K: Coherency,
    Bo: BouncePolicy + Pool,
    K::Phys: PhysJoin<Bo::Phys>,
    Composed<SimMemory, T, K, Bo>: Backend<Platform = SimMemory> + BusTranslate,
{
    fn counts(&self) -> Counts {
        Counts {
            iova: self.dev.backend().translation().iova_free(),
            slots: self.dev.backend().bounce().free_slots(),
            ram: self.mem.allocated_bytes(),
        }
    }

    /// A non-coherent device without a bounce pool refuses byte buffers
    /// that share cache lines.
    fn refuses_len(len: usize) -> bool {
        !K::COHERENT && Bo::NEVER && !len.is_multiple_of(LINE)
    }

    fn alloc(&self, len: usize, fill: u8) -> Buf {
        let mut b = self.mem.alloc_slice_aligned::<u8>(len, LINE).unwrap();
        for (i, x) in b.iter_mut().enumerate() {
            *x = fill.wrapping_add(i as u8);
        }
        b
    }
}

/// A live mapping, in whichever state it is.
enum Live<'d, B: Backend> {
    Dev(AnyMapped<'d, DevOwned, Buf, B>),
    Cpu(AnyMapped<'d, CpuOwned, Buf, B>),
    FromPrefix(Mapped<'d, FromDevice, CpuOwnedPrefix, Buf, B>),
    BiPrefix(Mapped<'d, Bidirectional, CpuOwnedPrefix, Buf, B>),
    SgDev(SgMapped<'d, Bidirectional, DevOwned, Buf, B>),
    SgCpu(SgMapped<'d, Bidirectional, CpuOwned, Buf, B>),
}

struct Slot<'d, B: Backend> {
    live: Option<Live<'d, B>>,
    model: Model,
    /// The device's view of the mapping when it last owned it: (address,
    /// length) pieces end to end.
    segs: Vec<(DmaAddr, usize)>,
    /// Buffers it holds.
    bufs: usize,
}

impl<'d, B: Backend> Slot<'d, B> {
    fn is_sg(&self) -> bool {
        matches!(self.live, Some(Live::SgDev(_) | Live::SgCpu(_)))
    }
}

fn segs_of<B: Backend>(live: &Live<'_, B>) -> Vec<(DmaAddr, usize)> {
    match live {
        Live::Dev(h) => vec![(h.dma_addr(), h.byte_len())],
        Live::SgDev(l) => l.segments().collect(),
        _ => unreachable!(),
    }
}

/// Splits `[at, at + len)` of a mapping seen as `segs` into device pieces.
fn pieces(segs: &[(DmaAddr, usize)], at: usize, len: usize) -> Vec<(DmaAddr, usize, usize)> {
    let mut out = Vec::new();
    let mut base = 0;
    for &(dma, n) in segs {
        let (s, e) = (at.max(base), (at + len).min(base + n));
        if s < e {
            out.push((DmaAddr::new(dma.as_u64() + (s - base) as u64), s, e - s));
        }
        base += n;
    }
    out
}

fn range(blen: usize, at: usize, len: usize) -> (usize, usize) {
    let at = at % blen;
    (at, 1 + len % (blen - at))
}

/// Runs `ops` on a fresh rig made by `make`, checking every step and the
/// final counts.
fn execute<T, K, Bo>(make: &dyn Fn() -> Rig<T, K, Bo>, ops: &[Op]) -> Result<(), TestCaseError>
where
    T: Translation + Parts,
    K: Coherency,
    Bo: BouncePolicy + Pool,
    K::Phys: PhysJoin<Bo::Phys>,
    Composed<SimMemory, T, K, Bo>: Backend<Platform = SimMemory> + BusTranslate,
    [u8]: CacheSafe<<Composed<SimMemory, T, K, Bo> as Backend>::Granule>,
{
    let rig = make();
    let before = rig.counts();
    let dev = &rig.dev;
    let engine = SimDevice::new(dev, rig.mem.clone());
    let mut slots: Vec<Slot<'_, Composed<SimMemory, T, K, Bo>>> = Vec::new();
    // Handles dropped inside unflushed batches, as `DeviceStats::unflushed` must count them.
    let mut unflushed = 0;
    let show = if K::COHERENT && Bo::NEVER {
        Show::Shared
    } else if rig.low_full {
        Show::Copied
    } else {
        Show::Either
    };

    for op in ops {
        slots.retain(|s| s.live.is_some());
        let live_bufs: usize = slots.iter().map(|s| s.bufs).sum();
        let room = live_bufs + 4 <= MAX_LIVE;
        // The live slots `pred` accepts, and the one `i` picks.
        let pick = |slots: &[Slot<'_, _>], i: usize, pred: &dyn Fn(&Slot<'_, _>) -> bool| {
            let c: Vec<usize> = (0..slots.len()).filter(|&k| pred(&slots[k])).collect();
            (!c.is_empty()).then(|| c[i % c.len()])
        };
        match *op {
            Op::Map { dir, len, fill } if room => {
                let buf = rig.alloc(len, fill);
                let orig = buf.to_vec();
                let r = match dir {
                    Dir::To => dev.map::<ToDevice, _>(buf).map(AnyMapped::from),
                    Dir::From => dev.map::<FromDevice, _>(buf).map(AnyMapped::from),
                    Dir::Bi => dev.map::<Bidirectional, _>(buf).map(AnyMapped::from),
                };
                map_result(
                    &mut slots,
                    r,
                    dir,
                    &orig,
                    Rig::<T, K, Bo>::refuses_len(len),
                    show,
                )?;
            }
            Op::BatchMap {
                dir,
                ref lens,
                fill,
            } if room => {
                macro_rules! batch_map {
                    ($d:ty) => {{
                        let mut b = dev.batch::<Mapped<'_, $d, DevOwned, Buf, _>>();
                        let mut origs = Vec::new();
                        for (k, &len) in lens.iter().enumerate() {
                            let buf = rig.alloc(len, fill.wrapping_add(k as u8 * 17));
                            let orig = buf.to_vec();
                            match b.map(buf) {
                                Ok(()) => {
                                    prop_assert!(!Rig::<T, K, Bo>::refuses_len(len));
                                    origs.push(orig);
                                }
                                Err(e) => {
                                    prop_assert!(
                                        Rig::<T, K, Bo>::refuses_len(len),
                                        "batch map refused: {}",
                                        e
                                    );
                                    prop_assert_eq!(&e.into_buffer()[..], &orig[..]);
                                }
                            }
                        }
                        for (h, orig) in b.flush().into_iter().zip(origs) {
                            let live = Live::Dev(AnyMapped::from(h));
                            slots.push(Slot {
                                segs: segs_of(&live),
                                live: Some(live),
                                model: Model::new(dir, &orig, show),
                                bufs: 1,
                            });
                        }
                    }};
                }
                match dir {
                    Dir::To => batch_map!(ToDevice),
                    Dir::From => batch_map!(FromDevice),
                    Dir::Bi => batch_map!(Bidirectional),
                }
            }
            Op::BatchMapDropped {
                dir,
                ref lens,
                discard,
            } if room => {
                macro_rules! dropped {
                    ($d:ty) => {{
                        let mut b = dev.batch::<Mapped<'_, $d, DevOwned, Buf, _>>();
                        for &len in lens {
                            let r = b.map(rig.alloc(len, 0));
                            prop_assert_eq!(r.is_err(), Rig::<T, K, Bo>::refuses_len(len));
                        }
                        let held = b.len();
                        if discard {
                            b.discard();
                        } else {
                            let dropped =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(b)));
                            // Debug builds panic on a non-empty drop, after the teardown.
                            prop_assert_eq!(dropped.is_err(), cfg!(debug_assertions) && held > 0);
                            unflushed += held;
                        }
                        prop_assert_eq!(dev.stats().unflushed(), unflushed, "unflushed count");
                    }};
                }
                match dir {
                    Dir::To => dropped!(ToDevice),
                    Dir::From => dropped!(FromDevice),
                    Dir::Bi => dropped!(Bidirectional),
                }
            }
            Op::FixedMap { tx, rx, fill } if room => {
                let (a, b) = (rig.alloc(tx, fill), rig.alloc(rx, !fill));
                let (oa, ob) = (a.to_vec(), b.to_vec());
                let refused = Rig::<T, K, Bo>::refuses_len(tx) || Rig::<T, K, Bo>::refuses_len(rx);
                match dev.fixed_batch().map_to_device(a) {
                    Err(e) => {
                        prop_assert!(Rig::<T, K, Bo>::refuses_len(tx));
                        prop_assert_eq!(&e.into_buffer()[..], &oa[..]);
                    }
                    Ok(batch) => match batch.map_from_device(b) {
                        // The batch is dropped: its first mapping unmapped
                        // and freed, the second buffer given back.
                        Err(e) => {
                            prop_assert!(refused);
                            prop_assert_eq!(&e.into_buffer()[..], &ob[..]);
                        }
                        Ok(batch) => {
                            prop_assert!(!refused);
                            let (ht, hr) = batch.flush();
                            for (live, dir, orig) in [
                                (Live::Dev(AnyMapped::from(ht)), Dir::To, oa),
                                (Live::Dev(AnyMapped::from(hr)), Dir::From, ob),
                            ] {
                                slots.push(Slot {
                                    segs: segs_of(&live),
                                    live: Some(live),
                                    model: Model::new(dir, &orig, show),
                                    bufs: 1,
                                });
                            }
                        }
                    },
                }
            }
            Op::MapSg { ref lens, fill } if room => {
                let bufs: Vec<Buf> = lens
                    .iter()
                    .enumerate()
                    .map(|(k, &len)| rig.alloc(len, fill.wrapping_add(k as u8 * 31)))
                    .collect();
                let orig: Vec<u8> = bufs.iter().flat_map(|b| b.to_vec()).collect();
                let refused = lens.iter().any(|&l| Rig::<T, K, Bo>::refuses_len(l));
                match dev.map_sg::<Bidirectional, _, _>(bufs) {
                    Ok(list) => {
                        prop_assert!(!refused);
                        let live = Live::SgDev(list);
                        slots.push(Slot {
                            segs: segs_of(&live),
                            live: Some(live),
                            model: Model::new(Dir::Bi, &orig, show),
                            bufs: lens.len(),
                        });
                    }
                    Err(e) => {
                        prop_assert!(refused, "sg map refused: {:?}", e);
                        let back: Vec<u8> =
                            e.into_buffers().iter().flat_map(|b| b.to_vec()).collect();
                        prop_assert_eq!(back, orig);
                    }
                }
            }
            Op::DevWrite {
                slot,
                at,
                len,
                byte,
            } => {
                let Some(k) = pick(&slots, slot, &|s| s.model.owner == Owner::Dev) else {
                    continue;
                };
                let s = &mut slots[k];
                let (at, len) = range(s.model.len(), at, len);
                let denied = T::IOMMU && s.model.dir == Dir::To;
                for (dma, off, n) in pieces(&s.segs, at, len) {
                    let r = engine.write(dma, &vec![byte; n]);
                    if denied {
                        prop_assert!(
                            matches!(r, Err(SimFault::Denied { .. })),
                            "an IOMMU must refuse a write to a to-device mapping: {:?}",
                            r
                        );
                    } else {
                        prop_assert!(r.is_ok(), "device write: {:?}", r);
                        for i in off..off + n {
                            s.model.dev[i] = Set::one(byte);
                        }
                    }
                }
            }
            Op::DevRead { slot, at, len } => {
                let Some(k) = pick(&slots, slot, &|s| s.model.owner == Owner::Dev) else {
                    continue;
                };
                let s = &slots[k];
                let (at, len) = range(s.model.len(), at, len);
                let denied = T::IOMMU && s.model.dir == Dir::From;
                for (dma, off, n) in pieces(&s.segs, at, len) {
                    let mut out = vec![0u8; n];
                    let r = engine.read(dma, &mut out);
                    if denied {
                        prop_assert!(matches!(r, Err(SimFault::Denied { .. })), "{:?}", r);
                    } else {
                        prop_assert!(r.is_ok(), "device read: {:?}", r);
                        check_bytes("device read", &out, &s.model.dev[off..off + n])?;
                    }
                }
            }
            Op::StaleWrite { slot, byte } => {
                // The device writes at an address it was given before the
                // CPU took the buffer back: refused, nothing changes.
                let Some(k) = pick(&slots, slot, &|s| s.model.owner != Owner::Dev) else {
                    continue;
                };
                let s = &slots[k];
                for &(dma, n) in &s.segs {
                    let r = engine.write(dma, &vec![byte; n]);
                    prop_assert!(r.is_err(), "a stale write reached a CPU-owned buffer");
                }
            }
            Op::SyncForCpu { slot } => {
                let Some(k) = pick(&slots, slot, &|s| s.model.owner == Owner::Dev) else {
                    continue;
                };
                let s = &mut slots[k];
                s.live = Some(match s.live.take().unwrap() {
                    // SAFETY: every simulated access has returned.
                    Live::Dev(h) => Live::Cpu(unsafe { h.sync_for_cpu() }),
                    // SAFETY: as above.
                    Live::SgDev(l) => Live::SgCpu(unsafe { l.sync_for_cpu() }),
                    _ => unreachable!(),
                });
                s.model.sync_for_cpu();
            }
            Op::SyncPrefixForCpu { slot, len } => {
                let Some(k) = pick(&slots, slot, &|s| {
                    s.model.owner == Owner::Dev && s.model.dir != Dir::To && !s.is_sg()
                }) else {
                    continue;
                };
                let s = &mut slots[k];
                let blen = s.model.len();
                let Some(Live::Dev(h)) = s.live.take() else {
                    unreachable!()
                };
                macro_rules! prefix {
                    ($h:expr, $wrap:path) => {
                        // SAFETY: every simulated access has returned.
                        match unsafe { $h.sync_prefix_for_cpu(len) } {
                            Ok(p) => {
                                prop_assert!(len <= blen);
                                s.model.sync_prefix(len);
                                $wrap(p)
                            }
                            Err(e) => {
                                prop_assert!(len > blen);
                                Live::Dev(AnyMapped::from(e.into_handle()))
                            }
                        }
                    };
                }
                s.live = Some(match h {
                    AnyMapped::FromDevice(h) => prefix!(h, Live::FromPrefix),
                    AnyMapped::Bidirectional(h) => prefix!(h, Live::BiPrefix),
                    AnyMapped::ToDevice(_) => unreachable!(),
                });
            }
            Op::BatchSyncForCpu { dir } => {
                let ks: Vec<usize> = (0..slots.len())
                    .filter(|&k| {
                        let s = &slots[k];
                        s.model.owner == Owner::Dev && s.model.dir == dir && !s.is_sg()
                    })
                    .collect();
                if ks.is_empty() {
                    continue;
                }
                macro_rules! batch_sync {
                    ($d:ty, $var:path) => {{
                        let mut b = dev.batch();
                        for &k in &ks {
                            let Some(Live::Dev($var(h))) = slots[k].live.take() else {
                                unreachable!()
                            };
                            let h: Mapped<'_, $d, DevOwned, Buf, _> = h;
                            // SAFETY: every simulated access has returned.
                            unsafe { b.sync_for_cpu(h) };
                        }
                        for (h, &k) in b.flush().into_iter().zip(&ks) {
                            slots[k].live = Some(Live::Cpu(AnyMapped::from(h)));
                            slots[k].model.sync_for_cpu();
                        }
                    }};
                }
                match dir {
                    Dir::To => batch_sync!(ToDevice, AnyMapped::ToDevice),
                    Dir::From => batch_sync!(FromDevice, AnyMapped::FromDevice),
                    Dir::Bi => batch_sync!(Bidirectional, AnyMapped::Bidirectional),
                }
            }
            Op::SyncForDevice { slot } => {
                let Some(k) = pick(&slots, slot, &|s| s.model.owner != Owner::Dev) else {
                    continue;
                };
                let s = &mut slots[k];
                let live = match s.live.take().unwrap() {
                    Live::Cpu(h) => Live::Dev(h.sync_for_device()),
                    Live::FromPrefix(h) => Live::Dev(AnyMapped::from(h.sync_for_device())),
                    Live::BiPrefix(h) => Live::Dev(AnyMapped::from(h.sync_for_device())),
                    Live::SgCpu(l) => Live::SgDev(l.sync_for_device()),
                    _ => unreachable!(),
                };
                s.segs = segs_of(&live);
                s.live = Some(live);
                s.model.sync_for_device();
            }
            Op::CpuWrite {
                slot,
                at,
                len,
                byte,
            } => {
                // `FromDevice` is not CPU-writable; a prefix only where
                // it is visible.
                let Some(k) = pick(&slots, slot, &|s| match s.model.owner {
                    Owner::Cpu => s.model.dir != Dir::From,
                    Owner::Prefix(n) => s.model.dir == Dir::Bi && n > 0,
                    Owner::Dev => false,
                }) else {
                    continue;
                };
                let s = &mut slots[k];
                let visible = match s.model.owner {
                    Owner::Prefix(n) => n,
                    _ => s.model.len(),
                };
                let (at, len) = range(visible, at, len);
                match s.live.as_mut().unwrap() {
                    Live::Cpu(h) => h.contents_mut().unwrap()[at..at + len].fill(byte),
                    Live::BiPrefix(h) => h.contents_mut()[at..at + len].fill(byte),
                    Live::SgCpu(l) => {
                        let mut base = 0;
                        for c in l.iter_contents_mut() {
                            let (s0, e0) = (at.max(base), (at + len).min(base + c.len()));
                            if s0 < e0 {
                                c[s0 - base..e0 - base].fill(byte);
                            }
                            base += c.len();
                        }
                    }
                    _ => unreachable!(),
                }
                for i in at..at + len {
                    s.model.cpu[i] = Set::one(byte);
                }
            }
            Op::CpuRead { slot } => {
                let Some(k) = pick(&slots, slot, &|s| s.model.owner != Owner::Dev) else {
                    continue;
                };
                let s = &slots[k];
                let got: Vec<u8> = match s.live.as_ref().unwrap() {
                    Live::Cpu(h) => h.contents().to_vec(),
                    Live::FromPrefix(h) => h.contents().to_vec(),
                    Live::BiPrefix(h) => h.contents().to_vec(),
                    Live::SgCpu(l) => l.iter_contents().flat_map(|c| c.to_vec()).collect(),
                    _ => unreachable!(),
                };
                check_bytes("CPU read", &got, &s.model.cpu[..got.len()])?;
            }
            Op::ReadRange { slot, at, len } => {
                // A ranged sync for the CPU and a copy, the device keeping
                // the buffer.
                let Some(k) = pick(&slots, slot, &|s| s.model.owner == Owner::Dev && !s.is_sg())
                else {
                    continue;
                };
                let s = &mut slots[k];
                let (at, len) = range(s.model.len(), at, len);
                let mut out = vec![0u8; len];
                let Some(Live::Dev(h)) = s.live.take() else {
                    unreachable!()
                };
                macro_rules! read_range {
                    ($h:expr) => {{
                        // SAFETY: every simulated access has returned.
                        let r = unsafe { $h.read_range(at, &mut out) };
                        AnyMapped::from(
                            r.map_err(|e| TestCaseError::fail(format!("read_range: {e}")))?,
                        )
                    }};
                }
                s.live = Some(Live::Dev(match h {
                    AnyMapped::ToDevice(h) => read_range!(h),
                    AnyMapped::FromDevice(h) => read_range!(h),
                    AnyMapped::Bidirectional(h) => read_range!(h),
                }));
                // As a sync for the CPU of the range.
                for i in at..at + len {
                    s.model.sync_byte_for_cpu(i);
                }
                check_bytes("read_range", &out, &s.model.cpu[at..at + len])?;
            }
            Op::WriteRange {
                slot,
                at,
                len,
                byte,
            } => {
                // A copy and a ranged sync for the device, which keeps the
                // buffer; refused unless it covers whole cache lines.
                let Some(k) = pick(&slots, slot, &|s| {
                    s.model.owner == Owner::Dev && !s.is_sg() && s.model.dir != Dir::From
                }) else {
                    continue;
                };
                let s = &mut slots[k];
                let blen = s.model.len();
                let granule = if K::COHERENT { 1 } else { LINE };
                let fits = len > 0 && at + len <= blen;
                let whole = at % granule == 0 && ((at + len) % granule == 0 || at + len == blen);
                let data = vec![byte; len];
                let Some(Live::Dev(h)) = s.live.take() else {
                    unreachable!()
                };
                macro_rules! write_range {
                    ($h:expr) => {
                        // SAFETY: the device is not accessing the buffer.
                        match unsafe { $h.write_range(at, &data) } {
                            Ok(h) => {
                                prop_assert!(
                                    fits && whole,
                                    "write_range at {} len {} taken",
                                    at,
                                    len
                                );
                                for i in at..at + len {
                                    s.model.cpu[i] = Set::one(byte);
                                    s.model.dev[i] = Set::one(byte);
                                }
                                AnyMapped::from(h)
                            }
                            Err(e) => {
                                prop_assert!(!(fits && whole), "write_range refused: {}", e);
                                AnyMapped::from(e.into_handle())
                            }
                        }
                    };
                }
                s.live = Some(Live::Dev(match h {
                    AnyMapped::ToDevice(h) => write_range!(h),
                    AnyMapped::Bidirectional(h) => write_range!(h),
                    AnyMapped::FromDevice(_) => unreachable!(),
                }));
            }
            Op::Drop { slot } => {
                let Some(k) = pick(&slots, slot, &|s| s.model.owner != Owner::Dev) else {
                    continue;
                };
                drop(slots[k].live.take());
            }
            Op::Unmap { slot } => {
                let Some(k) = pick(&slots, slot, &|_| true) else {
                    continue;
                };
                let s = &mut slots[k];
                let got = unmap_one(s.live.take().unwrap());
                let want = s.model.unmap();
                check_bytes("unmap", &got, &want)?;
            }
            Op::BatchUnmap { count } => {
                let ks: Vec<usize> = (0..slots.len())
                    .filter(|&k| !slots[k].is_sg())
                    .take(count)
                    .collect();
                if ks.is_empty() {
                    continue;
                }
                let mut b = dev.batch();
                for &k in &ks {
                    match slots[k].live.take().unwrap() {
                        Live::Dev(h) => match h {
                            // SAFETY: every simulated access has returned.
                            AnyMapped::ToDevice(h) => unsafe { b.unmap_device_owned(h) },
                            // SAFETY: as above.
                            AnyMapped::FromDevice(h) => unsafe { b.unmap_device_owned(h) },
                            // SAFETY: as above.
                            AnyMapped::Bidirectional(h) => unsafe { b.unmap_device_owned(h) },
                        },
                        Live::Cpu(h) => match h {
                            AnyMapped::ToDevice(h) => b.unmap(h),
                            AnyMapped::FromDevice(h) => b.unmap(h),
                            AnyMapped::Bidirectional(h) => b.unmap(h),
                        },
                        Live::FromPrefix(h) => b.unmap(h),
                        Live::BiPrefix(h) => b.unmap(h),
                        _ => unreachable!(),
                    }
                }
                for (buf, &k) in b.flush().into_iter().zip(&ks) {
                    let want = slots[k].model.unmap();
                    check_bytes("batched unmap", &buf, &want)?;
                }
            }
            Op::AllocPages { len, byte } => alloc_pages(dev, &engine, len, byte, rig.low_full)?,
            Op::AllocCoherent { len, byte } => {
                alloc_coherent(dev, &engine, len, byte, rig.low_full)?
            }
            // A map with no room left.
            _ => {}
        }
    }

    // Unmap what is left, checking the bytes, then every pool must be back.
    for s in &mut slots {
        if let Some(live) = s.live.take() {
            let got = unmap_one(live);
            check_bytes("final unmap", &got, &s.model.unmap())?;
        }
    }
    drop(slots);
    drop(engine);
    dev.backend().translation().settle(dev.context());
    let after = rig.counts();
    prop_assert_eq!(dev.leaked(), 0, "handles quarantined");
    prop_assert_eq!(rig.mem.device_owned_bytes(), 0, "grants left");
    prop_assert_eq!(after.iova, before.iova, "IOVA pages");
    prop_assert_eq!(after.slots, before.slots, "bounce slots");
    prop_assert_eq!(after.ram, before.ram, "simulated RAM bytes");
    Ok(())
}

fn map_result<'d, B: Backend>(
    slots: &mut Vec<Slot<'d, B>>,
    r: Result<AnyMapped<'d, DevOwned, Buf, B>, dmacap::MapError<Buf>>,
    dir: Dir,
    orig: &[u8],
    refused: bool,
    show: Show,
) -> Result<(), TestCaseError> {
    match r {
        Ok(h) => {
            prop_assert!(!refused, "a buffer sharing cache lines was mapped");
            let live = Live::Dev(h);
            slots.push(Slot {
                segs: segs_of(&live),
                live: Some(live),
                model: Model::new(dir, orig, show),
                bufs: 1,
            });
        }
        Err(e) => {
            prop_assert!(
                refused && matches!(e.kind(), MapErrorKind::SharesCacheLine { .. }),
                "map refused: {}",
                e
            );
            prop_assert_eq!(
                &e.into_buffer()[..],
                orig,
                "the refused buffer came back changed"
            );
        }
    }
    Ok(())
}

/// Unmaps a mapping in any state and returns its bytes.
fn unmap_one<B: Backend>(live: Live<'_, B>) -> Vec<u8> {
    match live {
        // SAFETY: every simulated access has returned.
        Live::Dev(h) => unsafe { h.unmap() }.to_vec(),
        Live::Cpu(h) => h.unmap().to_vec(),
        Live::FromPrefix(h) => h.unmap().to_vec(),
        Live::BiPrefix(h) => h.unmap().to_vec(),
        // SAFETY: as above.
        Live::SgDev(l) => unsafe { l.unmap() }
            .iter()
            .flat_map(|b| b.to_vec())
            .collect(),
        Live::SgCpu(l) => l.unmap().iter().flat_map(|b| b.to_vec()).collect(),
    }
}

/// `dma_alloc_pages`: fill, hand over, the device reads it and answers,
/// the CPU sees the answer; then the pages go back.
fn alloc_pages<B>(
    dev: &Device<B>,
    engine: &SimDevice<'_, B>,
    len: usize,
    byte: u8,
    low_full: bool,
) -> Result<(), TestCaseError>
where
    B: Backend<Platform = SimMemory> + BusTranslate,
{
    let mut h = match dev.alloc_pages::<Bidirectional, u8>(len) {
        Ok(h) => h,
        Err(AllocError::OutOfMemory { .. }) if low_full => return Ok(()),
        Err(e) => return Err(TestCaseError::fail(format!("alloc_pages: {e}"))),
    };
    h.contents_mut().fill(byte);
    let h = h.sync_for_device();
    let mut seen = vec![0u8; len];
    prop_assert!(engine.read(h.dma_addr(), &mut seen).is_ok());
    prop_assert!(seen.iter().all(|&b| b == byte), "device read of pages");
    prop_assert!(engine.fill(h.dma_addr(), !byte, len).is_ok());
    // SAFETY: the accesses returned.
    let h = unsafe { h.sync_for_cpu() };
    prop_assert!(
        h.contents().iter().all(|&b| b == !byte),
        "CPU read of pages"
    );
    drop(h);
    Ok(())
}

/// `dma_alloc_coherent`: written in its CPU phase, then shared: device and
/// CPU see each other's writes with no sync at all.
fn alloc_coherent<B>(
    dev: &Device<B>,
    engine: &SimDevice<'_, B>,
    len: usize,
    byte: u8,
    low_full: bool,
) -> Result<(), TestCaseError>
where
    B: Backend<Platform = SimMemory> + BusTranslate,
{
    let mut c = match dev.alloc_coherent_slice::<u8>(len) {
        Ok(c) => c,
        Err(AllocError::OutOfMemory { .. }) if low_full => return Ok(()),
        Err(e) => return Err(TestCaseError::fail(format!("alloc_coherent: {e}"))),
    };
    c.fill(byte);
    let mut c = c
        .share()
        .map_err(|e| TestCaseError::fail(format!("share: {e}")))?;
    let mut seen = vec![0u8; len];
    prop_assert!(engine.read(c.dma_addr(), &mut seen).is_ok());
    prop_assert!(
        seen.iter().all(|&b| b == byte),
        "device read of coherent memory"
    );
    prop_assert!(engine.write(c.dma_addr(), &[!byte]).is_ok());
    prop_assert_eq!(c.read_elem(0), !byte);
    c.write_elem(len - 1, byte ^ 0x5a);
    prop_assert!(engine.read(c.dma_addr(), &mut seen).is_ok());
    prop_assert_eq!(seen[len - 1], byte ^ 0x5a);
    // SAFETY: the simulated device has returned from every access.
    unsafe { c.free() };
    Ok(())
}

// ---------------------------------------------------------------- the compositions

/// RAM from just below 4 GiB to above it: the bounce pool below, buffers
/// above when `high` (so a 32-bit device must bounce them).
fn ram(noncoherent: bool) -> SimMemory {
    let base = PhysAddr::new(LOW_BASE);
    let size = if cfg!(miri) { 192 << 10 } else { 512 << 10 };
    if noncoherent {
        SimMemory::noncoherent(base, size)
    } else {
        SimMemory::with_base(base, size)
    }
}

/// RAM below 4 GiB: the bounce pool and a filler (less under Miri).
const LOW: u64 = if cfg!(miri) { 96 << 10 } else { 256 << 10 };
/// Where RAM starts: `LOW` below 4 GiB.
const LOW_BASE: u64 = 0x1_0000_0000 - LOW;
/// Bounce pool bytes.
const POOL: usize = if cfg!(miri) { 64 << 10 } else { 128 << 10 };

fn pool(mem: &SimMemory) -> Arc<Swiotlb> {
    Arc::new(mem.swiotlb(POOL, 2).unwrap())
}

/// Fills what is left below 4 GiB, so later buffers land above it.
fn fill_low(mem: &SimMemory) {
    let free_below = (0x1_0000_0000u64 - LOW_BASE) as usize - mem.allocated_bytes();
    std::mem::forget(mem.alloc_slice::<u8>(free_below).unwrap());
}

fn nc(mem: &SimMemory) -> NonCoherent<SimCache> {
    NonCoherent(mem.cache().unwrap())
}

fn strict() -> IommuDomain<SimIommu> {
    IommuDomain::new(SimIommu::new(), InvalidationMode::Strict)
}

fn lazy() -> IommuDomain<SimIommu> {
    IommuDomain::new(SimIommu::new(), InvalidationMode::LAZY)
}

fn wide() -> DeviceConfig {
    DeviceConfig::new().dma_mask(DmaMask::bits(64))
}

fn narrow() -> DeviceConfig {
    DeviceConfig::new().dma_mask(DmaMask::bits(32))
}

fn rig<T, K, Bo>(mem: SimMemory, t: T, k: K, bo: Bo, cfg: DeviceConfig) -> Rig<T, K, Bo>
where
    Composed<SimMemory, T, K, Bo>: Backend,
{
    Rig {
        dev: Device::new(Composed::from_parts(mem.clone(), t, k, bo), cfg),
        low_full: false,
        mem,
    }
}

fn sequences() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 1..=MAX_OPS)
}

fn check<T, K, Bo>(name: &str, make: impl Fn() -> Rig<T, K, Bo>)
where
    T: Translation + Parts,
    K: Coherency,
    Bo: BouncePolicy + Pool,
    K::Phys: PhysJoin<Bo::Phys>,
    Composed<SimMemory, T, K, Bo>: Backend<Platform = SimMemory> + BusTranslate,
    [u8]: CacheSafe<<Composed<SimMemory, T, K, Bo> as Backend>::Granule>,
{
    let config = Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(
        config,
        proptest::test_runner::TestRng::deterministic_rng(RNG),
    );
    let start = std::time::Instant::now();
    if let Err(e) = runner.run(&sequences(), |ops| execute(&make, &ops)) {
        panic!("{name}: {e}");
    }
    eprintln!("{name}: {CASES} cases in {:.2?}", start.elapsed());
}

#[test]
fn direct_coherent() {
    check("direct/coherent", || {
        rig(ram(false), Direct::identity(), Coherent, NoBounce, wide())
    });
}

#[test]
fn direct_noncoherent() {
    check("direct/noncoherent", || {
        let mem = ram(true);
        let k = nc(&mem);
        rig(mem, Direct::identity(), k, NoBounce, wide())
    });
}

#[test]
fn direct_coherent_bounce_all() {
    check("direct/coherent/swiotlb (32-bit mask)", || {
        let mem = ram(false);
        let p = pool(&mem);
        fill_low(&mem);
        Rig {
            low_full: true,
            ..rig(mem, Direct::identity(), Coherent, p, narrow())
        }
    });
}

#[test]
fn direct_noncoherent_bounce_all() {
    check("direct/noncoherent/swiotlb (32-bit mask)", || {
        let mem = ram(true);
        let p = pool(&mem);
        fill_low(&mem);
        let k = nc(&mem);
        Rig {
            low_full: true,
            ..rig(mem, Direct::identity(), k, p, narrow())
        }
    });
}

#[test]
fn direct_noncoherent_bounce_shared_lines() {
    check("direct/noncoherent/swiotlb (bounces shared lines)", || {
        let mem = ram(true);
        let p = pool(&mem);
        let k = nc(&mem);
        rig(mem, Direct::identity(), k, p, wide())
    });
}

#[test]
fn iommu_strict_coherent() {
    check("iommu strict/coherent", || {
        rig(
            ram(false),
            strict(),
            Coherent,
            NoBounce,
            DeviceConfig::new(),
        )
    });
}

#[test]
fn iommu_strict_noncoherent() {
    check("iommu strict/noncoherent", || {
        let mem = ram(true);
        let k = nc(&mem);
        rig(mem, strict(), k, NoBounce, DeviceConfig::new())
    });
}

#[test]
fn iommu_lazy_coherent() {
    check("iommu lazy/coherent", || {
        rig(ram(false), lazy(), Coherent, NoBounce, DeviceConfig::new())
    });
}

#[test]
fn iommu_lazy_noncoherent() {
    check("iommu lazy/noncoherent", || {
        let mem = ram(true);
        let k = nc(&mem);
        rig(mem, lazy(), k, NoBounce, DeviceConfig::new())
    });
}

#[test]
fn iommu_coherent_bounce_untrusted() {
    check("iommu strict/coherent/swiotlb untrusted", || {
        let mem = ram(false);
        let p = pool(&mem);
        rig(
            mem,
            strict(),
            Coherent,
            p,
            DeviceConfig::new().trusted(false),
        )
    });
}

#[test]
fn iommu_noncoherent_bounce_untrusted() {
    check("iommu strict/noncoherent/swiotlb untrusted", || {
        let mem = ram(true);
        let p = pool(&mem);
        let k = nc(&mem);
        rig(mem, strict(), k, p, DeviceConfig::new().trusted(false))
    });
}
