//! A minimal SMMUv3 driver for QEMU `virt,iommu=smmuv3` (registers at
//! 0x0905_0000): register probe, a linear stream table, one context
//! descriptor with stage-1 translation over dmacap's Arm VMSAv8-64 tables
//! ([`ArmStage1`](dmacap::backend::iommu::ArmStage1)), the command queue
//! (`CMD_CFGI_STE`, `CMD_CFGI_CD`, `CMD_TLBI_NH_VA`, `CMD_TLBI_NH_ASID`,
//! `CMD_SYNC`) and the event queue, whose records become [`SmmuFault`]s.
//!
//! Every structure the SMMU reads (stream table, context descriptor,
//! queues, and the I/O page tables through [`NcTables`]) lives in the
//! non-cacheable pool, so the CPU's writes reach it with a barrier and no
//! cache maintenance; the context descriptor says so (non-cacheable,
//! outer-shareable walks).

use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use dmacap::DmaAddr;
use dmacap::backend::iommu::{
    Access, FaultReason, IommuFault, IommuHardware, Stage1Config, TablePage, TablePages,
};
use dmacap::platform::DmaAllocator;

use crate::platform::BarePlatform;

/// The SMMU of QEMU `virt`.
pub const SMMU_BASE: usize = 0x0905_0000;

const IDR0: usize = 0x00;
const IDR1: usize = 0x04;
const IDR5: usize = 0x14;
const CR0: usize = 0x20;
const CR0ACK: usize = 0x24;
const CR1: usize = 0x28;
const CR2: usize = 0x2c;
const GERROR: usize = 0x60;
const GERRORN: usize = 0x64;
const STRTAB_BASE: usize = 0x80;
const STRTAB_BASE_CFG: usize = 0x88;
const CMDQ_BASE: usize = 0x90;
const CMDQ_PROD: usize = 0x98;
const CMDQ_CONS: usize = 0x9c;
const EVENTQ_BASE: usize = 0xa0;
const EVENTQ_PROD: usize = 0x1_00a8;
const EVENTQ_CONS: usize = 0x1_00ac;

const CR0_SMMUEN: u32 = 1 << 0;
const CR0_EVENTQEN: u32 = 1 << 2;
const CR0_CMDQEN: u32 = 1 << 3;

const CMD_CFGI_STE: u64 = 0x03;
const CMD_CFGI_ALL: u64 = 0x04;
const CMD_CFGI_CD: u64 = 0x05;
const CMD_TLBI_NH_ASID: u64 = 0x11;
const CMD_TLBI_NH_VA: u64 = 0x12;
const CMD_TLBI_NSNH_ALL: u64 = 0x30;
const CMD_SYNC: u64 = 0x46;

/// log2 of the entries of the stream table (64 x 64 bytes: one page).
const STRTAB_LOG2: u32 = 6;
/// log2 of the command queue's entries (256 x 16 bytes).
const CMDQ_LOG2: u32 = 8;
/// log2 of the event queue's entries (128 x 32 bytes).
const EVTQ_LOG2: u32 = 7;

/// A translation fault (or other event) the SMMU recorded in its event
/// queue: the program's fault record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmmuFault {
    /// The event type (0x10 `F_TRANSLATION`, 0x13 `F_PERMISSION`, ...).
    pub kind: u8,
    /// The stream (PCI requester ID) that faulted.
    pub sid: u32,
    /// The input address (IOVA).
    pub iova: u64,
    /// Whether the access was a read (`RnW`).
    pub read: bool,
}

impl SmmuFault {
    /// dmacap's fault record for a translation or permission fault
    /// (`F_TRANSLATION`, `F_PERMISSION`); `None` for other events
    /// (configuration errors, which are not a device's access).
    pub fn record(&self) -> Option<IommuFault> {
        let reason = match self.kind {
            0x10 => FaultReason::Untranslated,
            0x13 => FaultReason::Denied,
            _ => return None,
        };
        Some(IommuFault {
            iova: DmaAddr::new(self.iova),
            access: if self.read {
                Access::Read
            } else {
                Access::Write
            },
            reason,
        })
    }

    /// The event type's name.
    pub fn name(&self) -> &'static str {
        match self.kind {
            0x02 => "C_BAD_STREAMID",
            0x04 => "C_BAD_STE",
            0x0b => "C_BAD_CD",
            0x10 => "F_TRANSLATION",
            0x11 => "F_ADDR_SIZE",
            0x12 => "F_ACCESS",
            0x13 => "F_PERMISSION",
            _ => "event",
        }
    }
}

/// The SMMU: its registers and the memory it reads.
pub struct Smmu {
    base: usize,
    platform: &'static BarePlatform,
    strtab: NonNull<u64>,
    cmdq: NonNull<u64>,
    evtq: NonNull<u64>,
    /// The next free command slot (index and wrap bit), under `lock`.
    prod: AtomicU32,
    evt_cons: AtomicU32,
    lock: AtomicBool,
    oas_bits: u32,
    syncs: AtomicUsize,
    tlbis: AtomicUsize,
}

// SAFETY: the stream table, CD and queues are the SMMU's memory, which
// only this value names: the command queue is written under `lock`; the
// stream table and CDs by `attach`, whose program calls it once, before
// the device runs; the event queue is read by `pop_event`, whose one
// caller (this single-CPU program) is its only consumer. Registers are
// MMIO.
unsafe impl Sync for Smmu {}
// SAFETY: as above.
unsafe impl Send for Smmu {}

fn alloc_zeroed(platform: &BarePlatform, bytes: usize) -> NonNull<u64> {
    platform
        .alloc_dma(bytes, bytes.max(4096), u64::MAX, true)
        .expect("SMMU memory from the non-cacheable pool")
        .cast()
}

/// Orders the CPU's writes to normal memory before later writes (the
/// register write that tells the SMMU).
fn dsb_st() {
    // SAFETY: a barrier; no memory is accessed.
    unsafe { core::arch::asm!("dsb st", options(nostack, preserves_flags)) };
}

impl Smmu {
    fn read32(&self, off: usize) -> u32 {
        // SAFETY: `base` is the SMMU's register page, mapped as device
        // memory; `off` is one of its 32-bit registers.
        unsafe { core::ptr::read_volatile((self.base + off) as *const u32) }
    }

    fn write32(&self, off: usize, v: u32) {
        // SAFETY: as in `read32`.
        unsafe { core::ptr::write_volatile((self.base + off) as *mut u32, v) }
    }

    fn write64(&self, off: usize, v: u64) {
        // SAFETY: as in `read32`, for a 64-bit register.
        unsafe { core::ptr::write_volatile((self.base + off) as *mut u64, v) }
    }

    fn set_cr0(&self, v: u32) {
        self.write32(CR0, v);
        let mut spins = 0u64;
        while self.read32(CR0ACK) != v {
            spins += 1;
            assert!(spins < 10_000_000, "SMMU: CR0ACK never showed {v:#x}");
        }
    }

    /// Probes the SMMU at `base`, sets up the stream table and the queues,
    /// and enables the command and event queues (translation stays off
    /// until [`enable`](Self::enable)).
    ///
    /// # Safety
    ///
    /// `base` is an SMMUv3's register frame (both 64 KiB pages) mapped as
    /// device memory, and nothing else drives that SMMU.
    pub unsafe fn probe(
        base: usize,
        platform: &'static BarePlatform,
    ) -> Result<Self, &'static str> {
        let peek = |off: usize| {
            // SAFETY: the caller's promise: SMMU registers.
            unsafe { core::ptr::read_volatile((base + off) as *const u32) }
        };
        let (idr0, idr1, idr5) = (peek(IDR0), peek(IDR1), peek(IDR5));
        if idr0 & (1 << 1) == 0 {
            return Err("no stage-1 translation (IDR0.S1P)");
        }
        if (idr0 >> 2) & 0b11 == 0b01 {
            return Err("no AArch64 table format (IDR0.TTF)");
        }
        let sid_bits = idr1 & 0x3f;
        let (cmdqs, eventqs) = ((idr1 >> 21) & 0x1f, (idr1 >> 16) & 0x1f);
        if cmdqs < CMDQ_LOG2 || eventqs < EVTQ_LOG2 || sid_bits < STRTAB_LOG2 {
            return Err("queues or stream IDs smaller than the driver needs");
        }
        let oas_bits = match idr5 & 0b111 {
            0 => 32,
            1 => 36,
            2 => 40,
            3 => 42,
            4 => 44,
            _ => 48,
        };
        crate::println!(
            "smmu: IDR0={idr0:#x} IDR1={idr1:#x} IDR5={idr5:#x}: stage 1, {sid_bits}-bit stream IDs, \
             cmdq 2^{cmdqs}, evtq 2^{eventqs}, {oas_bits}-bit output, coherent walks {}",
            idr0 & (1 << 4) != 0
        );
        let smmu = Self {
            base,
            platform,
            strtab: alloc_zeroed(platform, 64 << STRTAB_LOG2),
            cmdq: alloc_zeroed(platform, 16 << CMDQ_LOG2),
            evtq: alloc_zeroed(platform, 32 << EVTQ_LOG2),
            prod: AtomicU32::new(0),
            evt_cons: AtomicU32::new(0),
            lock: AtomicBool::new(false),
            oas_bits,
            syncs: AtomicUsize::new(0),
            tlbis: AtomicUsize::new(0),
        };
        smmu.set_cr0(0);
        // Queues and tables: inner-shareable write-back (QEMU ignores it;
        // the memory is non-cacheable and the barriers are what count).
        smmu.write32(
            CR1,
            (1 << 0) | (1 << 2) | (3 << 4) | (1 << 6) | (1 << 8) | (3 << 10),
        );
        smmu.write32(CR2, 1 << 1); // RECINVSID: record bad stream IDs
        smmu.write64(
            STRTAB_BASE,
            smmu.strtab.as_ptr() as u64 & 0x000f_ffff_ffff_ffc0,
        );
        smmu.write32(STRTAB_BASE_CFG, STRTAB_LOG2); // linear
        smmu.write64(
            CMDQ_BASE,
            (smmu.cmdq.as_ptr() as u64 & 0x000f_ffff_ffff_ffe0) | u64::from(CMDQ_LOG2),
        );
        smmu.write32(CMDQ_PROD, 0);
        smmu.write32(CMDQ_CONS, 0);
        smmu.write64(
            EVENTQ_BASE,
            (smmu.evtq.as_ptr() as u64 & 0x000f_ffff_ffff_ffe0) | u64::from(EVTQ_LOG2),
        );
        smmu.write32(EVENTQ_PROD, 0);
        smmu.write32(EVENTQ_CONS, 0);
        dsb_st();
        smmu.set_cr0(CR0_CMDQEN);
        smmu.submit([CMD_CFGI_ALL, 31]); // all stream IDs (range 2^32)
        smmu.submit([CMD_TLBI_NSNH_ALL, 0]);
        smmu.sync();
        smmu.set_cr0(CR0_CMDQEN | CR0_EVENTQEN);
        Ok(smmu)
    }

    /// Output address bits (`IDR5.OAS`).
    pub fn output_bits(&self) -> u32 {
        self.oas_bits
    }

    /// Points stream `sid` at a context descriptor (ASID `asid`) that
    /// walks the stage-1 tables `cfg` describes, and invalidates what the
    /// SMMU cached of both.
    pub fn attach(&self, sid: u32, asid: u16, cfg: Stage1Config) {
        assert!(
            sid < (1 << STRTAB_LOG2),
            "stream ID {sid} beyond the linear stream table"
        );
        let cd = alloc_zeroed(self.platform, 64);
        let cd0: u64 = u64::from(cfg.tsz)
            | u64::from(cfg.tg) << 6
            | u64::from(cfg.irgn) << 8
            | u64::from(cfg.orgn) << 10
            | u64::from(cfg.sh) << 12
            | 1 << 30 // EPD1: no TTB1 walks
            | 1 << 31 // V
            | u64::from(cfg.ips) << 32
            | 1 << 41 // AA64
            | 1 << 45 // R: record faults in the event queue
            | 1 << 46 // A: abort faulting transactions
            | u64::from(asid) << 48;
        let ste = self.ste(sid);
        // SAFETY: `cd` is a fresh 64-byte descriptor of the SMMU's memory;
        // `ste` is stream `sid`'s 64-byte entry of the stream table, which
        // only this driver writes. Volatile: the SMMU reads them.
        unsafe {
            cd.add(1)
                .write_volatile(cfg.ttbr.as_u64() & 0x000f_ffff_ffff_fff0);
            cd.add(3).write_volatile(cfg.mair);
            cd.write_volatile(cd0);
            dsb_st();
            // STE: S1 translate, S2 bypass (Config 0b101), one CD, SHCFG
            // "use incoming"; the valid word last.
            ste.add(1).write_volatile(1 << 44);
            dsb_st();
            ste.write_volatile(1 | (0b101 << 1) | (cd.as_ptr() as u64 & 0x000f_ffff_ffff_ffc0));
        }
        dsb_st();
        self.submit([CMD_CFGI_STE | u64::from(sid) << 32, 1]);
        self.submit([CMD_CFGI_CD | u64::from(sid) << 32, 1]);
        self.sync();
    }

    fn ste(&self, sid: u32) -> NonNull<u64> {
        // SAFETY: `sid` is below the table's 2^STRTAB_LOG2 entries of 8
        // words (checked by the callers).
        unsafe { self.strtab.add(sid as usize * 8) }
    }

    /// Turns translation on.
    pub fn enable(&self) {
        self.set_cr0(CR0_CMDQEN | CR0_EVENTQEN | CR0_SMMUEN);
    }

    /// Writes one command into the queue and tells the SMMU.
    fn submit(&self, cmd: [u64; 2]) {
        while self
            .lock
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        let size = 1u32 << CMDQ_LOG2;
        let wrap_mask = (size << 1) - 1;
        let prod = self.prod.load(Ordering::Relaxed);
        // Wait while the queue is full: same index, other wrap bit.
        let mut spins = 0u64;
        loop {
            let cons = self.read32(CMDQ_CONS) & wrap_mask;
            if (cons ^ prod) != size {
                break;
            }
            spins += 1;
            assert!(spins < 10_000_000, "SMMU: command queue stuck full");
        }
        let idx = (prod & (size - 1)) as usize;
        // SAFETY: slot `idx` of the queue (2 words each) is free (not
        // between CONS and PROD), and only the lock holder writes slots.
        unsafe {
            self.cmdq.add(idx * 2).write_volatile(cmd[0]);
            self.cmdq.add(idx * 2 + 1).write_volatile(cmd[1]);
        }
        dsb_st();
        let next = (prod + 1) & wrap_mask;
        self.prod.store(next, Ordering::Relaxed);
        self.write32(CMDQ_PROD, next);
        self.lock.store(false, Ordering::Release);
    }

    /// `CMD_SYNC`, then waits until the SMMU has consumed it: every
    /// command before it has completed.
    pub fn sync(&self) {
        self.submit([CMD_SYNC, 0]); // CS = none: completion by polling CONS
        let size = 1u32 << CMDQ_LOG2;
        let wrap_mask = (size << 1) - 1;
        let target = self.prod.load(Ordering::Relaxed);
        let mut spins = 0u64;
        loop {
            let cons = self.read32(CMDQ_CONS);
            let err = (cons >> 24) & 0x7f;
            if (self.read32(GERROR) ^ self.read32(GERRORN)) & 1 != 0 || err != 0 {
                panic!("SMMU: command queue error {err:#x} at CONS {cons:#x}");
            }
            // Consumed once CONS has caught up with what we produced (no
            // other CPU submits while we wait in this program).
            if cons & wrap_mask == target {
                break;
            }
            spins += 1;
            assert!(spins < 10_000_000, "SMMU: CMD_SYNC never completed");
        }
        self.syncs.fetch_add(1, Ordering::Relaxed);
    }

    /// `CMD_SYNC`s completed so far.
    pub fn syncs(&self) -> usize {
        self.syncs.load(Ordering::Relaxed)
    }

    /// TLB invalidation commands issued so far.
    pub fn tlbis(&self) -> usize {
        self.tlbis.load(Ordering::Relaxed)
    }

    /// The next event the SMMU recorded, if any.
    pub fn pop_event(&self) -> Option<SmmuFault> {
        let size = 1u32 << EVTQ_LOG2;
        let wrap_mask = (size << 1) - 1;
        let cons = self.evt_cons.load(Ordering::Relaxed);
        let prod = self.read32(EVENTQ_PROD) & wrap_mask;
        if prod == cons {
            return None;
        }
        let idx = (cons & (size - 1)) as usize;
        // SAFETY: slot `idx` (4 words) lies between CONS and PROD: the SMMU
        // wrote it and will not touch it until CONS moves past.
        let w = unsafe {
            let e = self.evtq.add(idx * 4);
            [
                e.read_volatile(),
                e.add(1).read_volatile(),
                e.add(2).read_volatile(),
            ]
        };
        let next = (cons + 1) & wrap_mask;
        self.evt_cons.store(next, Ordering::Relaxed);
        self.write32(EVENTQ_CONS, next);
        Some(SmmuFault {
            kind: w[0] as u8,
            sid: (w[0] >> 32) as u32,
            read: (w[1] >> 35) & 1 != 0,
            iova: w[2],
        })
    }
}

/// The IOTLB side of dmacap's IOMMU domain on this SMMU: one ASID.
pub struct SmmuTlb {
    smmu: &'static Smmu,
    asid: u16,
}

impl SmmuTlb {
    /// Invalidation for the context with `asid` on `smmu`.
    pub fn new(smmu: &'static Smmu, asid: u16) -> Self {
        Self { smmu, asid }
    }
}

/// Above this many pages, a range is invalidated by ASID (Linux's SMMUv3
/// driver does so without range invalidation, at a larger threshold).
const MAX_TLBI_PAGES: u64 = 32;

// SAFETY: (1) `sync` issues CMD_SYNC and returns only once the SMMU has
// consumed it; by the SMMUv3 architecture, a CMD_SYNC completes after
// every earlier command, and a completed TLBI leaves no cached translation
// for its addresses and no transaction in flight that used one. Every
// invalidation goes through the same queue before the sync. (2) The stream
// table entry and the context descriptor (`Smmu::attach`) point the
// device's stream at the domain's `ArmStage1` table with this ASID, and
// the SMMU enforces the descriptors' access permissions.
unsafe impl IommuHardware for SmmuTlb {
    fn invalidate_range(&self, iova: DmaAddr, len: u64) {
        let first = iova.as_u64() & !0xfff;
        let pages = (iova.as_u64() - first + len).div_ceil(4096);
        if pages > MAX_TLBI_PAGES {
            return self.invalidate_all();
        }
        for p in 0..pages {
            let va = first + p * 4096;
            // Leaf: dmacap clears page descriptors only, never tables.
            self.smmu
                .submit([CMD_TLBI_NH_VA | u64::from(self.asid) << 48, va | 1]);
            self.smmu.tlbis.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn invalidate_all(&self) {
        self.smmu
            .submit([CMD_TLBI_NH_ASID | u64::from(self.asid) << 48, 0]);
        self.smmu.tlbis.fetch_add(1, Ordering::Relaxed);
    }

    fn sync(&self) {
        self.smmu.sync();
    }
}

/// I/O page-table pages from the non-cacheable pool.
pub struct NcTables(pub &'static BarePlatform);

// SAFETY: (1) pages come from the platform's allocator: 4 KiB, aligned,
// zeroed, identity-mapped (physical = CPU address, below 2^32), the
// allocation's alone until freed. (2) The pool is non-cacheable, so a
// write is in memory once it completes; `dsb st` completes the earlier
// writes before any later one (the command or doorbell that follows).
unsafe impl TablePages for NcTables {
    fn alloc_table(&self) -> Option<TablePage> {
        let p = self.0.alloc_dma(4096, 4096, u64::MAX, true)?;
        Some(TablePage {
            cpu: p.cast(),
            phys: dmacap::PhysAddr::new(p.as_ptr() as u64),
        })
    }

    unsafe fn free_table(&self, page: TablePage) {
        // SAFETY: allocated by `alloc_table` above with these arguments;
        // the caller promises nothing uses it any more.
        unsafe { self.0.free_dma(page.cpu.cast(), 4096, 4096) };
    }

    unsafe fn sync_for_walker(&self, _cpu: NonNull<u64>, _len: usize) {
        dsb_st();
    }
}
