//! Host tests of the Arm stage-1 format: heap pages stand in for physical
//! memory (physical address = CPU address), a model of a non-coherent
//! table walker sees only what was synced, and an independent decoder walks
//! the tables from the root's physical address as an SMMU would.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::collections::BTreeMap;
use std::format;
use std::string::String;
use std::sync::Mutex;
use std::vec::Vec;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRunner};

use super::*;

/// What the walker sees in a page before it was ever synced: all ones, a
/// valid table descriptor, so a table linked before its zeroes were synced
/// decodes as garbage.
const GARBAGE: u64 = u64::MAX;

struct HostPage {
    cpu: NonNull<u64>,
    /// The walker's view: updated only by `sync_for_walker`.
    walker: Box<[u64; ENTRIES]>,
    /// The whole page (its zeroes) was synced once.
    zeroes_synced: bool,
}

#[derive(Default)]
struct Inner {
    /// By physical address.
    pages: BTreeMap<u64, HostPage>,
    /// Physical address by CPU address.
    by_cpu: BTreeMap<usize, u64>,
    next_phys: u64,
    allocs: usize,
    frees: usize,
    budget: Option<usize>,
}

// SAFETY: the pointers are heap pages owned by `Inner`, used only under the
// mutex around it.
unsafe impl Send for Inner {}

/// 4 KiB heap pages with made-up physical addresses from 1 GiB up (never
/// their CPU address, so the format cannot confuse the two), kept in a map
/// from physical address to the allocation's pointer (no int-to-pointer
/// cast), with a non-coherent walker model.
#[derive(Default)]
struct HostPages(Mutex<Inner>);

fn layout() -> Layout {
    Layout::from_size_align(TABLE_BYTES, TABLE_BYTES).unwrap()
}

impl HostPages {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with_budget(n: usize) -> Self {
        let p = Self::default();
        p.set_budget(Some(n));
        p
    }

    fn set_budget(&self, n: Option<usize>) {
        self.lock().budget = n;
    }

    fn live(&self) -> usize {
        self.lock().pages.len()
    }

    fn counts(&self) -> (usize, usize) {
        let g = self.lock();
        (g.allocs, g.frees)
    }

    /// The walker's read of the descriptor at physical address `phys`.
    fn read_phys(&self, phys: u64) -> Option<u64> {
        let g = self.lock();
        let page = g.pages.get(&(phys & !(PAGE_SIZE - 1)))?;
        Some(page.walker[((phys & (PAGE_SIZE - 1)) / 8) as usize])
    }
}

impl Drop for HostPages {
    fn drop(&mut self) {
        let g = self.0.get_mut().unwrap_or_else(|e| e.into_inner());
        for (_, p) in core::mem::take(&mut g.pages) {
            // SAFETY: allocated with `layout()` and never freed (still in
            // the map); a leaked table's last user is gone with its format.
            unsafe { dealloc(p.cpu.as_ptr().cast(), layout()) };
        }
    }
}

// SAFETY: (1) zeroed, 4096-aligned heap pages, owned by the format until
// freed; the walker (the model) reads them at their own address. (2) the
// model's walker sees exactly the bytes synced, at the time of the sync.
unsafe impl TablePages for HostPages {
    fn alloc_table(&self) -> Option<TablePage> {
        let mut g = self.lock();
        if let Some(b) = &mut g.budget {
            if *b == 0 {
                return None;
            }
            *b -= 1;
        }
        // SAFETY: the layout is not zero-sized.
        let cpu = NonNull::new(unsafe { alloc_zeroed(layout()) })?.cast::<u64>();
        let phys = (1 << 30) + g.next_phys;
        g.next_phys += PAGE_SIZE;
        g.by_cpu.insert(cpu.as_ptr().addr(), phys);
        g.pages.insert(
            phys,
            HostPage {
                cpu,
                walker: Box::new([GARBAGE; ENTRIES]),
                zeroes_synced: false,
            },
        );
        g.allocs += 1;
        Some(TablePage {
            cpu,
            phys: PhysAddr::new(phys),
        })
    }

    unsafe fn free_table(&self, page: TablePage) {
        let mut g = self.lock();
        let p = g.pages.remove(&page.phys.as_u64()).expect("allocated here");
        assert_eq!(p.cpu, page.cpu);
        g.by_cpu.remove(&p.cpu.as_ptr().addr());
        // SAFETY: allocated with `layout()`, freed once (removed above).
        unsafe { dealloc(p.cpu.as_ptr().cast(), layout()) };
        g.frees += 1;
    }

    unsafe fn sync_for_walker(&self, cpu: NonNull<u64>, len: usize) {
        let a = cpu.as_ptr().addr();
        let base = a & !(TABLE_BYTES - 1);
        assert!(
            len > 0
                && len.is_multiple_of(8)
                && a.is_multiple_of(8)
                && a - base + len <= TABLE_BYTES
        );
        let (first, n) = ((a - base) / 8, len / 8);
        let mut g = self.lock();
        let base = *g.by_cpu.get(&base).expect("a page of this source");
        let page = &g.pages[&base];
        let vals: Vec<u64> = (first..first + n)
            // SAFETY: inside the allocated page (checked above).
            .map(|i| unsafe { page.cpu.add(i).read_volatile() })
            .collect();
        // Ordering: a descriptor that links one of our pages as a table
        // reaches the walker only after that page's zeroes did.
        for &v in &vals {
            if v & 3 == 3 {
                if let Some(child) = g.pages.get(&(v & Stage1Pte::ADDR_MASK)) {
                    assert!(child.zeroes_synced, "table linked before it was synced");
                }
            }
        }
        let page = g.pages.get_mut(&base).unwrap();
        page.walker[first..first + n].copy_from_slice(&vals);
        if len == TABLE_BYTES {
            page.zeroes_synced = true;
        }
    }
}

/// The SMMU's stage-1 walk (4 KiB granule, T0SZ 16) from the walker's view
/// of memory, by physical address: `Ok(None)` for a translation fault,
/// `Err` for anything a correct table never holds (garbage, block or
/// reserved descriptors, stray bits, address size or access flag faults).
/// Returns the output address and the page descriptor.
fn decode(pages: &HostPages, cfg: &Stage1Config, iova: u64) -> Result<Option<(u64, u64)>, String> {
    assert_eq!((cfg.tsz, cfg.tg), (16, 0), "48-bit input, 4 KiB granule");
    if iova >> 48 != 0 {
        return Ok(None);
    }
    let oa_bits = [32, 36, 40, 42, 44, 48][cfg.ips as usize];
    let mut table = cfg.ttbr.as_u64();
    if table & 0xfff != 0 {
        return Err(format!("misaligned TTB {table:#x}"));
    }
    for level in 0..4 {
        let idx = (iova >> (12 + 9 * (3 - level))) & 511;
        let d = pages
            .read_phys(table + idx * 8)
            .ok_or_else(|| format!("level {level} table {table:#x} is not a table page"))?;
        if d & 1 == 0 {
            return Ok(None);
        }
        if d & 2 == 0 {
            return Err(format!(
                "level {level}: block or reserved descriptor {d:#x}"
            ));
        }
        let oa = d & Stage1Pte::ADDR_MASK;
        if d & (0xf << 48) != 0 || oa >> oa_bits != 0 {
            return Err(format!("level {level}: address size fault {d:#x}"));
        }
        if level < 3 {
            if d != oa | 3 {
                return Err(format!(
                    "level {level}: table descriptor {d:#x} with stray bits"
                ));
            }
            table = oa;
            continue;
        }
        if d & Stage1Pte::AF == 0 {
            return Err(format!("access flag fault {d:#x}"));
        }
        let allowed = oa
            | 3
            | 7 << 2
            | Stage1Pte::AP_UNPRIV
            | Stage1Pte::AP_RDONLY
            | 3 << 8
            | Stage1Pte::AF
            | Stage1Pte::NG
            | Stage1Pte::PXN
            | Stage1Pte::UXN;
        if d & !allowed != 0 {
            return Err(format!("page descriptor {d:#x} with stray bits"));
        }
        return Ok(Some((oa | (iova & 0xfff), d)));
    }
    unreachable!()
}

/// Checks a page descriptor grants what `prot` asks, as Linux's stage-1
/// mapping would: unprivileged, not global, never executable, read-only
/// unless written, the memory type of the mapping.
fn check_attrs(d: u64, prot: Prot, coherent_dma: bool) -> Result<(), String> {
    let must = Stage1Pte::AP_UNPRIV | Stage1Pte::NG | Stage1Pte::PXN | Stage1Pte::UXN;
    if d & must != must {
        return Err(format!("{d:#x} lacks AP[1], nG or XN"));
    }
    if (d & Stage1Pte::AP_RDONLY != 0) == prot.write {
        return Err(format!("{d:#x}: AP[2] wrong for {prot:?}"));
    }
    let e = Stage1Pte(d);
    let want = if prot.noncacheable {
        (Stage1Config::ATTR_DEVICE, Stage1Config::SH_OS)
    } else if coherent_dma {
        (Stage1Config::ATTR_WB, Stage1Config::SH_IS)
    } else {
        (Stage1Config::ATTR_NC, Stage1Config::SH_OS)
    };
    if (e.attr_index(), e.shareability()) != want {
        return Err(format!("{d:#x}: memory type wrong for {prot:?}"));
    }
    Ok(())
}

const RW: Prot = Prot {
    read: true,
    write: true,
    noncacheable: false,
};
const RO: Prot = Prot {
    read: true,
    write: false,
    noncacheable: false,
};
const WO: Prot = Prot {
    read: false,
    write: true,
    noncacheable: false,
};
const MMIO: Prot = Prot {
    read: true,
    write: true,
    noncacheable: true,
};

#[test]
fn descriptors_and_config_match_linux_stage1() {
    let pages = HostPages::default();
    let mut t = ArmStage1::new(&pages, Stage1Options::new()).unwrap();
    let cfg = t.config();
    assert_eq!(
        (cfg.tsz, cfg.tg, cfg.irgn, cfg.orgn, cfg.sh, cfg.ips),
        (16, 0, 1, 1, 3, 5)
    );
    assert_eq!(cfg.mair, 0x0004_ff44);
    assert_eq!(
        cfg.tcr(),
        16 | 1 << 8 | 1 << 10 | 3 << 12 | 1 << 23 | 5 << 32
    );
    assert_eq!(cfg.ttbr, t.root());
    t.map_pages(DmaAddr::new(0x1000), PhysAddr::new(0x8000_0000), 1, RO)
        .unwrap();
    t.map_pages(DmaAddr::new(0x2000), PhysAddr::new(0x8000_1000), 1, WO)
        .unwrap();
    t.map_pages(DmaAddr::new(0x3000), PhysAddr::new(0x1000_0000), 1, MMIO)
        .unwrap();
    let xn = 3 << 53;
    let d = |iova| decode(&pages, &cfg, iova).unwrap().unwrap();
    assert_eq!(d(0x1234), (0x8000_0234, xn | 0x8000_0000 | 0xfc7));
    // Write-only is not expressible: read/write.
    assert_eq!(d(0x2000), (0x8000_1000, xn | 0x8000_1000 | 0xf47));
    assert_eq!(d(0x3008), (0x1000_0008, xn | 0x1000_0000 | 0xe4b));
    assert_eq!(t.walk(DmaAddr::new(0x2000)).unwrap().prot(), RW);
    assert_eq!(t.walk(DmaAddr::new(0x3000)).unwrap().prot(), MMIO);
    assert_eq!(decode(&pages, &cfg, 0x4000), Ok(None));
    assert_eq!(
        t.map_pages(DmaAddr::new(0x5000), PhysAddr::new(0), 1, Prot::default()),
        Err(PageTableError::Unsupported(Prot::default()))
    );

    // A non-coherent SMMU and device: non-cacheable walks and pages.
    let opts = Stage1Options::new()
        .output_bits(44)
        .coherent_walk(false)
        .coherent_dma(false);
    let mut t = ArmStage1::new(&pages, opts).unwrap();
    let cfg = t.config();
    assert_eq!((cfg.irgn, cfg.orgn, cfg.sh, cfg.ips), (0, 0, 2, 4));
    t.map_pages(DmaAddr::new(0x1000), PhysAddr::new(0x8000_0000), 1, RW)
        .unwrap();
    let (_, desc) = decode(&pages, &cfg, 0x1000).unwrap().unwrap();
    check_attrs(desc, RW, false).unwrap();
    assert_eq!(
        t.map_pages(DmaAddr::new(0x2000), PhysAddr::new(1 << 44), 1, RW),
        Err(PageTableError::OutOfRange {
            iova: DmaAddr::new(0x2000),
            phys: PhysAddr::new(1 << 44),
            pages: 1
        })
    );
}

#[test]
fn table_boundaries_unmap_and_refusals() {
    let pages = HostPages::default();
    let mut t = ArmStage1::new(&pages, Stage1Options::new()).unwrap();
    let cfg = t.config();
    // 4 pages straddling a 512 GiB boundary: two entries at every level.
    let iova = (1u64 << 39) - 2 * PAGE_SIZE;
    let phys = 0x8000_0000u64;
    t.map_pages(DmaAddr::new(iova), PhysAddr::new(phys), 4, RW)
        .unwrap();
    assert_eq!(t.tables(), 1 + 2 + 2 + 2);
    for k in 0..4 {
        let (oa, _) = decode(&pages, &cfg, iova + k * PAGE_SIZE + 5)
            .unwrap()
            .unwrap();
        assert_eq!(oa, phys + k * PAGE_SIZE + 5);
    }
    assert_eq!(decode(&pages, &cfg, iova - 1), Ok(None));
    assert_eq!(decode(&pages, &cfg, iova + 4 * PAGE_SIZE), Ok(None));
    // Refused: one page of the range is mapped; nothing changes.
    let at = iova + 3 * PAGE_SIZE;
    assert_eq!(
        t.map_pages(DmaAddr::new(at), PhysAddr::new(0x9000_0000), 2, RO),
        Err(PageTableError::AlreadyMapped(DmaAddr::new(at)))
    );
    assert_eq!(decode(&pages, &cfg, at + PAGE_SIZE), Ok(None));
    assert_eq!(
        decode(&pages, &cfg, at).unwrap().unwrap().0,
        phys + 3 * PAGE_SIZE
    );
    assert!(matches!(
        t.map_pages(DmaAddr::new(0x1001), PhysAddr::new(0), 1, RO),
        Err(PageTableError::Misaligned { .. })
    ));
    assert!(matches!(
        t.map_pages(DmaAddr::new((1 << 48) - PAGE_SIZE), PhysAddr::new(0), 2, RO),
        Err(PageTableError::OutOfRange { .. })
    ));
    assert!(t.has_mappings());
    assert_eq!(t.unmap_pages(DmaAddr::new(iova + PAGE_SIZE), 2), 2);
    assert_eq!(decode(&pages, &cfg, iova + PAGE_SIZE), Ok(None));
    assert_eq!(decode(&pages, &cfg, iova + 2 * PAGE_SIZE), Ok(None));
    assert!(decode(&pages, &cfg, iova).unwrap().is_some());
    assert_eq!(t.unmap_pages(DmaAddr::new(iova), 4), 2);
    assert_eq!(t.unmap_pages(DmaAddr::new(iova), 4), 0);
    assert!(!t.has_mappings());
    assert_eq!(t.tables(), 7, "tables stay");
    drop(t);
    assert_eq!(pages.live(), 0);
    assert_eq!(pages.counts(), (7, 7));
}

#[test]
fn allocation_failure_maps_nothing() {
    // The root, then a level-1, a level-2 and one level-3 table: the range
    // needs two level-3 tables, and the second fails after the first was
    // made.
    let pages = HostPages::with_budget(4);
    let mut t = ArmStage1::new(&pages, Stage1Options::new()).unwrap();
    let cfg = t.config();
    let iova = (3u64 << 21) - PAGE_SIZE;
    assert_eq!(
        t.map_pages(DmaAddr::new(iova), PhysAddr::new(0x8000_0000), 2, RW),
        Err(PageTableError::NoMemory)
    );
    assert_eq!(decode(&pages, &cfg, iova), Ok(None));
    assert!(!t.has_mappings());
    pages.set_budget(None);
    t.map_pages(DmaAddr::new(iova), PhysAddr::new(0x8000_0000), 2, RW)
        .unwrap();
    assert!(decode(&pages, &cfg, iova + PAGE_SIZE).unwrap().is_some());
    assert!(ArmStage1::new(HostPages::with_budget(0), Stage1Options::new()).is_err());
}

#[test]
fn leak_frees_nothing() {
    let pages = HostPages::default();
    let mut t = ArmStage1::new(&pages, Stage1Options::new()).unwrap();
    t.map_pages(DmaAddr::new(0x1000), PhysAddr::new(0x8000_0000), 1, RW)
        .unwrap();
    t.leak();
    drop(t);
    assert_eq!(pages.live(), 4);
    assert_eq!(pages.counts(), (4, 0));
}

/// One step of a random sequence.
#[derive(Debug, Clone)]
enum Op {
    Map {
        window: usize,
        off: i64,
        pages: u64,
        /// Page frame: near RAM, or near the top of the output.
        far: bool,
        pfn: u64,
        prot: Prot,
    },
    Unmap {
        window: usize,
        off: i64,
        pages: u64,
    },
}

/// IOVAs next to a level-2, level-1 and level-0 boundary, and the top.
const WINDOWS: [u64; 4] = [3 << 21, 1 << 30, 1 << 39, 1 << 48];
const SPREAD: i64 = if cfg!(miri) { 6 } else { 24 };
const MAX_PAGES: u64 = if cfg!(miri) { 5 } else { 20 };
const CASES: u32 = if cfg!(miri) { 3 } else { 200 };
const MAX_OPS: usize = if cfg!(miri) { 8 } else { 40 };

fn iova_of(window: usize, off: i64) -> u64 {
    WINDOWS[window].wrapping_add_signed(off * PAGE_SIZE as i64)
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let prot = (any::<bool>(), any::<bool>(), prop::bool::weighted(0.2)).prop_map(
        |(read, write, noncacheable)| Prot {
            read,
            write,
            noncacheable,
        },
    );
    let map = (
        0..WINDOWS.len(),
        -SPREAD..SPREAD,
        1..=MAX_PAGES,
        prop::bool::weighted(0.1),
        0..64u64,
        prot,
    )
        .prop_map(|(window, off, pages, far, pfn, prot)| Op::Map {
            window,
            off,
            pages,
            far,
            pfn,
            prot,
        });
    let unmap = (0..WINDOWS.len(), -SPREAD..SPREAD, 1..=MAX_PAGES)
        .prop_map(|(window, off, pages)| Op::Unmap { window, off, pages });
    prop::collection::vec(prop_oneof![3 => map, 2 => unmap], 1..=MAX_OPS)
}

/// Runs `ops` against the format and a model, checking after every step
/// that the decoder (the SMMU's view) and `walk` agree with the model.
fn run(ops: &[Op], opts: (bool, bool)) -> Result<(), TestCaseError> {
    let (big_output, coherent_dma) = opts;
    let out_bits = if big_output { 48 } else { 40 };
    let pages = HostPages::default();
    let mut t = ArmStage1::new(
        &pages,
        Stage1Options::new()
            .output_bits(out_bits)
            .coherent_dma(coherent_dma),
    )
    .unwrap();
    let cfg = t.config();
    let mut model: BTreeMap<u64, (u64, Prot)> = BTreeMap::new();
    let check = |t: &ArmStage1<&HostPages>, model: &BTreeMap<u64, (u64, Prot)>, iova: u64| {
        let got = decode(&pages, &cfg, iova + 8).map_err(TestCaseError::fail)?;
        let walked = t.walk(DmaAddr::new(iova + 8));
        match (model.get(&iova), got) {
            (None, None) => prop_assert_eq!(walked, None),
            (Some(&(phys, prot)), Some((oa, d))) => {
                prop_assert_eq!(oa, phys + 8);
                check_attrs(d, prot, coherent_dma).map_err(TestCaseError::fail)?;
                prop_assert_eq!(walked.map(|e| e.bits()), Some(d));
            }
            (want, got) => prop_assert!(false, "{iova:#x}: model {want:?}, table {got:?}"),
        }
        Ok(())
    };
    for op in ops {
        let (v, n) = match *op {
            Op::Map {
                window,
                off,
                pages: n,
                far,
                pfn,
                prot,
            } => {
                let v = iova_of(window, off);
                let p = if far {
                    (1u64 << out_bits) - (pfn % 8) * PAGE_SIZE
                } else {
                    0x8000_0000 + pfn * PAGE_SIZE
                };
                let got = t.map_pages(DmaAddr::new(v), PhysAddr::new(p), n, prot);
                let end_ok = |s: u64, bits: u32| s + n * PAGE_SIZE <= 1u64 << bits;
                let want = if !end_ok(v, 48) || !end_ok(p, out_bits) {
                    Err(PageTableError::OutOfRange {
                        iova: DmaAddr::new(v),
                        phys: PhysAddr::new(p),
                        pages: n,
                    })
                } else if !prot.read && !prot.write {
                    Err(PageTableError::Unsupported(prot))
                } else if let Some(k) = (0..n).find(|k| model.contains_key(&(v + k * PAGE_SIZE))) {
                    Err(PageTableError::AlreadyMapped(DmaAddr::new(
                        v + k * PAGE_SIZE,
                    )))
                } else {
                    Ok(())
                };
                prop_assert_eq!(got, want);
                if got.is_ok() {
                    // Stage 1 grants read with write.
                    let granted = Prot { read: true, ..prot };
                    for k in 0..n {
                        model.insert(v + k * PAGE_SIZE, (p + k * PAGE_SIZE, granted));
                    }
                }
                (v, n)
            }
            Op::Unmap {
                window,
                off,
                pages: n,
            } => {
                let v = iova_of(window, off);
                let want = (0..n)
                    .filter(|k| model.remove(&(v + k * PAGE_SIZE)).is_some())
                    .count() as u64;
                prop_assert_eq!(t.unmap_pages(DmaAddr::new(v), n), want);
                (v, n)
            }
        };
        for k in 0..n + 2 {
            let at = (v + k * PAGE_SIZE).wrapping_sub(PAGE_SIZE);
            if at >> 48 == 0 {
                check(&t, &model, at)?;
            }
        }
        for &iova in model.keys() {
            check(&t, &model, iova)?;
        }
        prop_assert_eq!(t.has_mappings(), !model.is_empty());
    }
    for w in 0..WINDOWS.len() {
        for off in -SPREAD..SPREAD + MAX_PAGES as i64 {
            let at = iova_of(w, off);
            if at >> 48 == 0 {
                check(&t, &model, at)?;
            }
        }
    }
    let tables = t.tables();
    drop(t);
    prop_assert_eq!(pages.counts(), (tables, tables));
    Ok(())
}

#[test]
fn random_sequences_match_an_independent_walker() {
    let config = Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = if cfg!(miri) {
        RngAlgorithm::XorShift
    } else {
        RngAlgorithm::ChaCha
    };
    let mut runner = TestRunner::new_with_rng(
        config,
        proptest::test_runner::TestRng::deterministic_rng(rng),
    );
    let strategy = (ops(), any::<bool>(), any::<bool>());
    if let Err(e) = runner.run(&strategy, |(ops, big, coherent)| run(&ops, (big, coherent))) {
        panic!("{e}");
    }
}

/// The domain driving the Arm format: real buffers from the simulator's
/// memory, a recording (no-op) IOMMU, the decoder as the SMMU.
#[cfg(feature = "sim")]
mod domain {
    use super::*;
    use crate::api::device::Device;
    use crate::backend::compose::{Coherent, Composed, MapAttrs, NoBounce, Translation};
    use crate::backend::iommu::testhw::{Op, Recorder};
    use crate::backend::iommu::{InvalidationMode, IommuDomain};
    use crate::base::context::DeviceConfig;
    use crate::base::direction::DmaDirection;
    use crate::sim::SimMemory;

    type ArmDomain<'a> = IommuDomain<Recorder, ArmStage1<&'a HostPages>>;
    type Dev<'a> = Device<Composed<SimMemory, ArmDomain<'a>, Coherent, NoBounce>>;

    fn device<'a>(pages: &'a HostPages, mode: InvalidationMode) -> (SimMemory, Dev<'a>) {
        let mem = SimMemory::with_base(PhysAddr::new(0x8000_0000), 1 << 16);
        let table = ArmStage1::new(pages, Stage1Options::new()).unwrap();
        let d = IommuDomain::with_table(Recorder::default(), mode, table);
        let dev = Device::new(
            Composed::from_parts(mem.clone(), d, Coherent, NoBounce),
            DeviceConfig::new(),
        );
        (mem, dev)
    }

    /// The SMMU's translation of `iova` and whether it may write there.
    fn smmu(pages: &HostPages, d: &ArmDomain<'_>, iova: DmaAddr) -> Option<(u64, bool)> {
        let cfg = d.with_page_table(|t| t.config());
        decode(pages, &cfg, iova.as_u64())
            .unwrap()
            .map(|(oa, desc)| (oa, desc & Stage1Pte::AP_RDONLY == 0))
    }

    #[test]
    fn maps_and_unmaps_buffers_without_walking() {
        for mode in [InvalidationMode::Strict, InvalidationMode::LAZY] {
            let pages = HostPages::default();
            let (mem, dev) = device(&pages, mode);
            let d = dev.backend().translation();
            let tx = mem.alloc_slice::<u8>(100).unwrap();
            let rx = mem.alloc_slice::<u8>(6000).unwrap();
            let (tx_phys, rx_phys) = (mem.phys_of_buffer(&tx), mem.phys_of_buffer(&rx));
            let tx = dev.map_to_device(tx).unwrap();
            let rx = dev.map_from_device(rx).unwrap();
            assert_eq!(
                smmu(&pages, d, tx.dma_addr()),
                Some((tx_phys.as_u64(), false)),
                "ToDevice: read-only"
            );
            // FromDevice: read/write on Arm (no write-only stage-1 entry);
            // every byte of the buffer translates, across its pages.
            for off in [0, 4095, 5999] {
                let at = DmaAddr::new(rx.dma_addr().as_u64() + off);
                assert_eq!(smmu(&pages, d, at), Some((rx_phys.as_u64() + off, true)));
            }
            let (tx_iova, rx_iova) = (tx.dma_addr(), rx.dma_addr());
            // SAFETY: no device runs: the hardware is a recorder.
            let (tx, rx) = unsafe { (tx.unmap(), rx.unmap()) };
            d.flush_queue(dev.context());
            assert_eq!(smmu(&pages, d, tx_iova), None);
            assert_eq!(smmu(&pages, d, rx_iova), None);
            assert!(!d.with_page_table(|t| t.has_mappings()));
            assert_eq!(d.walks(), 0, "{mode:?}: no map or unmap path walks");
            assert!(d.hardware().take().contains(&Op::Sync));
            drop((tx, rx));
        }
    }

    #[test]
    fn unmapped_pages_fault_and_mmio_is_device_memory() {
        let pages = HostPages::default();
        let (mem, dev) = device(&pages, InvalidationMode::Strict);
        let d = dev.backend().translation();
        let buf = mem.alloc_slice::<u8>(64).unwrap();
        let bi = dev.map_bidirectional(buf).unwrap();
        let iova = bi.dma_addr();
        assert!(smmu(&pages, d, iova).is_some());
        // SAFETY: no device runs.
        drop(unsafe { bi.unmap() });
        assert_eq!(
            smmu(&pages, d, iova),
            None,
            "cleared before the IOVA is reused"
        );
        assert_eq!(d.hardware().take().last(), Some(&Op::Sync));

        let bar = PhysAddr::new(0x1_0000_0000);
        // SAFETY: no device runs; the MMIO range is made up and never touched.
        let (io, ()) = unsafe {
            d.map(
                bar,
                4096,
                DmaDirection::ToDevice,
                MapAttrs::MMIO,
                dev.context(),
            )
        }
        .unwrap();
        let cfg = d.with_page_table(|t| t.config());
        let (oa, desc) = decode(&pages, &cfg, io.as_u64()).unwrap().unwrap();
        assert_eq!(oa, bar.as_u64());
        assert_eq!(Stage1Pte(desc).attr_index(), Stage1Config::ATTR_DEVICE);
        assert!(d.walk(io).unwrap().prot().noncacheable);
        // SAFETY: mapped above, unmapped once, no device.
        unsafe { d.unmap(io, 4096, (), dev.context()) };
        d.flush(dev.context());
        assert_eq!(smmu(&pages, d, io), None);
        assert_eq!(d.walks(), 1, "only the explicit walk above");
    }

    #[test]
    fn dropped_domain_frees_its_tables_or_leaks_live_ones() {
        let pages = HostPages::default();
        {
            let (mem, dev) = device(&pages, InvalidationMode::Strict);
            let h = dev
                .map_to_device(mem.alloc_slice::<u8>(8).unwrap())
                .unwrap();
            // SAFETY: no device runs.
            drop(unsafe { h.unmap() });
        }
        assert_eq!(pages.live(), 0, "freed: nothing was mapped");
        let leaked = ArmDomain::leaked_page_tables();
        {
            let (mem, dev) = device(&pages, InvalidationMode::Strict);
            let h = dev
                .map_to_device(mem.alloc_slice::<u8>(8).unwrap())
                .unwrap();
            core::mem::forget(h);
        }
        assert!(ArmDomain::leaked_page_tables() > leaked);
        assert_eq!(pages.live(), 4, "the walker may still read them");
    }
}
