//! Arm VMSAv8-64 stage-1 I/O page tables, as an SMMUv3 walks them: 4 KiB
//! granule, 48-bit input (four levels from a TTBR-style root), output up to
//! 48 bits, tables of 512 64-bit descriptors in physical memory.
//!
//! ```text
//!   IOVA bits  47..39   38..30   29..21   20..12   11..0
//!              level 0  level 1  level 2  level 3  offset in page
//!
//!   table descriptor (levels 0-2)    page descriptor (level 3)
//!   63 .. 48 | 47 .. 12 | .. | 1 0   54 53 | 47 .. 12 | 11 10 9 8 7 6 5 4 3 2 | 1 0
//!            | next table    | 1 1   UXN PXN| page     | nG AF SH   AP    AttrIndx | 1 1
//! ```
//!
//! [`ArmStage1`] is an [`IoPageTable`]: put it in an
//! [`IommuDomain`](crate::backend::iommu::IommuDomain) with
//! [`IommuDomain::with_table`](crate::backend::iommu::IommuDomain::with_table),
//! and give the SMMU's context descriptor the values of
//! [`ArmStage1::config`]. Its tables come from a [`TablePages`] source.
//!
//! ```
//! use core::ptr::NonNull;
//! use std::alloc::{Layout, alloc_zeroed, dealloc};
//!
//! use dmacap::backend::iommu::{
//!     ArmStage1, InvalidationMode, IommuDomain, IommuHardware, Stage1Options, TablePage,
//!     TablePages,
//! };
//! use dmacap::{DmaAddr, PhysAddr};
//!
//! /// Identity-mapped pages (physical address = CPU address), a coherent
//! /// walker: bare metal with the MMU off or an identity map.
//! struct Identity;
//!
//! const PAGE: Layout = match Layout::from_size_align(4096, 4096) {
//!     Ok(l) => l,
//!     Err(_) => panic!(),
//! };
//!
//! // SAFETY: zeroed, aligned heap pages that the (identity) walker reads at
//! // their address; writes are ordered by a fence (`dmb oshst` on arm64).
//! unsafe impl TablePages for Identity {
//!     fn alloc_table(&self) -> Option<TablePage> {
//!         // SAFETY: not zero-sized.
//!         let cpu = NonNull::new(unsafe { alloc_zeroed(PAGE) })?.cast::<u64>();
//!         let phys = PhysAddr::new(cpu.as_ptr().addr() as u64);
//!         Some(TablePage { cpu, phys })
//!     }
//!     unsafe fn free_table(&self, page: TablePage) {
//!         // SAFETY: allocated above with `PAGE`.
//!         unsafe { dealloc(page.cpu.as_ptr().cast(), PAGE) }
//!     }
//!     unsafe fn sync_for_walker(&self, _: NonNull<u64>, _: usize) {
//!         core::sync::atomic::fence(core::sync::atomic::Ordering::Release);
//!     }
//! }
//!
//! /// Stands in for an SMMUv3 command queue (`CMD_TLBI_NH_VA`, `CMD_SYNC`).
//! struct Smmu;
//! // SAFETY: no hardware here caches or translates anything.
//! unsafe impl IommuHardware for Smmu {
//!     fn invalidate_range(&self, _: DmaAddr, _: u64) {}
//!     fn invalidate_all(&self) {}
//!     fn sync(&self) {}
//! }
//!
//! let table = ArmStage1::new(Identity, Stage1Options::new().output_bits(48)).unwrap();
//! let domain = IommuDomain::with_table(Smmu, InvalidationMode::Strict, table);
//! // The context descriptor: TTB0, T0SZ, TG0, IR0/OR0/SH0, IPS, MAIR.
//! let cd = domain.with_page_table(|t| t.config());
//! assert_eq!((cd.tsz, cd.tg, cd.ips, cd.mair), (16, 0, 5, 0x0004_ff44));
//! assert_eq!(cd.ttbr.as_u64() % 4096, 0);
//! # drop(domain);
//! ```
//!
//! # What a page descriptor grants
//!
//! Following Linux's `arm_lpae_prot_to_pte` for stage 1:
//!
//! | dmacap                 | descriptor                                 |
//! |------------------------|--------------------------------------------|
//! | every page             | AF, nG, AP\[1\] (unprivileged), UXN, PXN   |
//! | `ToDevice` (read)      | AP\[2\] = 1: read-only                     |
//! | `FromDevice` (write)   | AP\[2\] = 0: read/write (see below)        |
//! | `Bidirectional`        | AP\[2\] = 0: read/write                    |
//! | RAM, coherent device   | AttrIndx 1 (write-back), inner shareable   |
//! | RAM, non-coherent      | AttrIndx 0 (non-cacheable), outer shareable|
//! | MMIO / peer            | AttrIndx 2 (Device-nGnRE)                  |
//!
//! Stage-1 access permissions have no write-only encoding, so a
//! `FromDevice` page is readable by the device too (Linux maps
//! `DMA_FROM_DEVICE` read/write on Arm for the same reason). This is weaker
//! than the simulator's write-only entries: the device can read what the
//! buffer (and the rest of its pages) held before the transfer. It cannot
//! change more memory than the simulator lets it, so Rust soundness is
//! unaffected; confidentiality is: bounce untrusted devices (whole-page
//! bounce regions hold only the copy and zeroes). Pages are never
//! executable (UXN and PXN): devices have no business fetching
//! instructions from DMA buffers.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::ptr::NonNull;

use crate::backend::iommu::format::{IoPageTable, PageEntry};
use crate::backend::iommu::pagetable::{PageTableError, Prot};
use crate::backend::iommu::{IOVA_BITS, PAGE_SHIFT, PAGE_SIZE};
use crate::base::addr::{DmaAddr, PhysAddr};

/// Descriptors per table.
const ENTRIES: usize = 512;
/// Levels of tables (0 to 3).
const LEVELS: usize = 4;
/// Bytes per table: one 4 KiB page.
pub const TABLE_BYTES: usize = 4096;

/// A table page: where the CPU writes it and where the SMMU reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TablePage {
    /// The CPU's pointer to the page's 512 descriptors.
    pub cpu: NonNull<u64>,
    /// The physical address the SMMU's table walker reads it at.
    pub phys: PhysAddr,
}

/// Where [`ArmStage1`] gets its table pages, and how it makes its writes
/// visible to the SMMU's table walker.
///
/// # Safety
///
/// An implementation promises:
///
/// 1. [`alloc_table`](Self::alloc_table) returns either `None` or a page
///    that is 4096 bytes, 4096-aligned, zeroed, valid for reads and writes
///    through `cpu` and used by nothing else until it is given back to
///    [`free_table`](Self::free_table); `phys` is 4096-aligned, below
///    2^48, and the walker reads exactly these bytes (physically
///    contiguous, pinned) at `phys` for as long as the page is allocated.
/// 2. When [`sync_for_walker`](Self::sync_for_walker) returns, every CPU
///    write made before the call to the given bytes is visible to the
///    walker and ordered before every later write of the calling CPU,
///    including the MMIO write that starts the device or the SMMU command
///    that invalidates its TLB (arm64 with a coherent walker: `dmb oshst`,
///    Linux's `dma_wmb`; with a non-coherent walker: `dc cvac` on every
///    line, then `dsb st`).
pub unsafe trait TablePages {
    /// A zeroed, 4 KiB-aligned, physically contiguous table page, or
    /// `None` when there is no memory.
    fn alloc_table(&self) -> Option<TablePage>;

    /// Gives a page back.
    ///
    /// # Safety
    ///
    /// `page` came from this source's [`alloc_table`](Self::alloc_table)
    /// and was not given back since; nothing uses it any more (no walker
    /// can reach it).
    unsafe fn free_table(&self, page: TablePage);

    /// Makes the CPU's writes to `len` bytes at `cpu` visible to the walker
    /// and orders them before later writes (see the trait's contract).
    ///
    /// # Safety
    ///
    /// The bytes lie inside one page of this source that is allocated.
    unsafe fn sync_for_walker(&self, cpu: NonNull<u64>, len: usize);
}

// SAFETY: forwards to `P`, which keeps the promises.
unsafe impl<P: TablePages + ?Sized> TablePages for &P {
    #[inline]
    fn alloc_table(&self) -> Option<TablePage> {
        (**self).alloc_table()
    }

    #[inline]
    unsafe fn free_table(&self, page: TablePage) {
        // SAFETY: the caller's promise, passed on unchanged.
        unsafe { (**self).free_table(page) }
    }

    #[inline]
    unsafe fn sync_for_walker(&self, cpu: NonNull<u64>, len: usize) {
        // SAFETY: the caller's promise, passed on unchanged.
        unsafe { (**self).sync_for_walker(cpu, len) }
    }
}

/// How the SMMU and the device reach memory; the defaults are a 48-bit
/// output and coherent table walks and device accesses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage1Options {
    /// The output address size in bits; see
    /// [`output_bits`](Self::output_bits()).
    pub output_bits: u32,
    /// Whether table walks are coherent; see
    /// [`coherent_walk`](Self::coherent_walk()).
    pub coherent_walk: bool,
    /// Whether device accesses are coherent; see
    /// [`coherent_dma`](Self::coherent_dma()).
    pub coherent_dma: bool,
}

impl Default for Stage1Options {
    fn default() -> Self {
        Self::new()
    }
}

impl Stage1Options {
    /// 48-bit output, coherent walks, coherent device accesses.
    pub const fn new() -> Self {
        Self {
            output_bits: 48,
            coherent_walk: true,
            coherent_dma: true,
        }
    }

    /// The output address size: the SMMU's `SMMU_IDR5.OAS` (32, 36, 40, 42,
    /// 44 or 48 bits). Physical pages beyond it are refused.
    ///
    /// # Panics
    ///
    /// On any other value.
    pub const fn output_bits(mut self, bits: u32) -> Self {
        assert!(
            ips_of(bits).is_some(),
            "the output size must be 32, 36, 40, 42, 44 or 48 bits"
        );
        self.output_bits = bits;
        self
    }

    /// Whether the SMMU's table walks snoop the CPU's caches
    /// (`SMMU_IDR0.COHACC`): the context descriptor's walk attributes
    /// (inner-shareable write-back, or outer-shareable non-cacheable).
    /// [`TablePages::sync_for_walker`] must clean the cache for a
    /// non-coherent walker.
    pub const fn coherent_walk(mut self, coherent: bool) -> Self {
        self.coherent_walk = coherent;
        self
    }

    /// Whether the device's accesses snoop the CPU's caches (Linux's
    /// `IOMMU_CACHE`, from `dma-coherent`): RAM is mapped write-back
    /// inner-shareable, else non-cacheable (for devices whose composition
    /// does cache maintenance).
    pub const fn coherent_dma(mut self, coherent: bool) -> Self {
        self.coherent_dma = coherent;
        self
    }
}

/// The `IPS`/`PS` encoding of an output size.
const fn ips_of(bits: u32) -> Option<u8> {
    match bits {
        32 => Some(0),
        36 => Some(1),
        40 => Some(2),
        42 => Some(3),
        44 => Some(4),
        48 => Some(5),
        _ => None,
    }
}

/// What an SMMUv3 context descriptor (or a CPU's `TTBR0`/`TCR`/`MAIR`)
/// needs to walk an [`ArmStage1`] table: Linux's `arm_lpae_s1_cfg`.
///
/// The fields keep their architectural encodings; the SMMU driver places
/// them in the descriptor (`CD.T0SZ`, `TG0`, `IR0`, `OR0`, `SH0`, `IPS`,
/// `TTB0`, `MAIR`), sets `EPD1` (no TTBR1 walks), `AA64` and `V`, and picks
/// the ASID. The table's descriptors are not global (nG), so TLB entries
/// are tagged with that ASID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage1Config {
    /// The root (level 0) table's physical address (`TTB0`).
    pub ttbr: PhysAddr,
    /// `T0SZ`: 64 minus the input size, 16 for 48 bits.
    pub tsz: u8,
    /// `TG0`: the granule, 0 for 4 KiB.
    pub tg: u8,
    /// `IRGN0`: inner cacheability of walks (1 write-back
    /// write-allocate, 0 non-cacheable).
    pub irgn: u8,
    /// `ORGN0`: outer cacheability of walks, encoded as `irgn`.
    pub orgn: u8,
    /// `SH0`: shareability of walks (3 inner, 2 outer).
    pub sh: u8,
    /// `IPS`: output size (5 for 48 bits, 4 for 44, ..., 0 for 32).
    pub ips: u8,
    /// `MAIR`: attribute 0 normal non-cacheable (`0x44`), 1 normal
    /// write-back read/write-allocate (`0xff`), 2 Device-nGnRE (`0x04`);
    /// the others unused.
    pub mair: u64,
}

impl Stage1Config {
    /// `TCR.TG0` for a 4 KiB granule.
    pub const TG0_4K: u8 = 0;
    /// Walk cacheability: non-cacheable.
    pub const RGN_NC: u8 = 0;
    /// Walk cacheability: write-back, write-allocate.
    pub const RGN_WBWA: u8 = 1;
    /// Shareability: outer.
    pub const SH_OS: u8 = 2;
    /// Shareability: inner.
    pub const SH_IS: u8 = 3;
    /// `MAIR` attribute index of normal non-cacheable memory.
    pub const ATTR_NC: u8 = 0;
    /// `MAIR` attribute index of normal write-back memory.
    pub const ATTR_WB: u8 = 1;
    /// `MAIR` attribute index of Device-nGnRE memory.
    pub const ATTR_DEVICE: u8 = 2;
    /// The `MAIR` value for those indices.
    pub const MAIR: u64 = 0x44 | (0xff << 8) | (0x04 << 16);

    /// The translation fields in the layout of the CPU's `TCR_EL1`
    /// (`T0SZ` 5:0, `IRGN0` 9:8, `ORGN0` 11:10, `SH0` 13:12, `TG0` 15:14,
    /// `EPD1` 23, `IPS` 34:32), for a CPU-side walk or a check; an SMMU
    /// context descriptor places the same fields differently.
    pub const fn tcr(&self) -> u64 {
        (self.tsz as u64)
            | (self.irgn as u64) << 8
            | (self.orgn as u64) << 10
            | (self.sh as u64) << 12
            | (self.tg as u64) << 14
            | 1 << 23
            | (self.ips as u64) << 32
    }
}

/// A stage-1 descriptor read from a table.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
#[repr(transparent)]
pub struct Stage1Pte(u64);

impl Stage1Pte {
    /// Bit 0: valid.
    pub const VALID: u64 = 1 << 0;
    /// Bits 1:0 of a table descriptor (levels 0 to 2) or a page descriptor
    /// (level 3).
    pub const TYPE_TABLE_OR_PAGE: u64 = 0b11;
    /// Bits 4:2: `AttrIndx`, the `MAIR` attribute.
    pub const ATTR_INDX_SHIFT: u32 = 2;
    /// `AP[1]`: accessible unprivileged (Linux's `ARM_LPAE_PTE_AP_UNPRIV`).
    pub const AP_UNPRIV: u64 = 1 << 6;
    /// `AP[2]`: read-only (Linux's `ARM_LPAE_PTE_AP_RDONLY`).
    pub const AP_RDONLY: u64 = 1 << 7;
    /// Bits 9:8: shareability.
    pub const SH_SHIFT: u32 = 8;
    /// The access flag: set, or the first access faults.
    pub const AF: u64 = 1 << 10;
    /// Not global: TLB entries are tagged with the context's ASID.
    pub const NG: u64 = 1 << 11;
    /// Privileged execute-never.
    pub const PXN: u64 = 1 << 53;
    /// Unprivileged execute-never.
    pub const UXN: u64 = 1 << 54;
    /// The output address: bits 47:12.
    pub const ADDR_MASK: u64 = ((1 << 48) - 1) & !(PAGE_SIZE - 1);

    /// A descriptor read from a table (by a driver's dump or a test's
    /// decoder).
    pub const fn from_bits(bits: u64) -> Self {
        Self(bits)
    }

    /// The raw descriptor.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Whether the descriptor is valid.
    pub const fn is_valid(self) -> bool {
        self.0 & Self::VALID != 0
    }

    /// The output address (of the page, or of the next table).
    pub const fn phys(self) -> PhysAddr {
        PhysAddr::new(self.0 & Self::ADDR_MASK)
    }

    /// `AttrIndx`.
    pub const fn attr_index(self) -> u8 {
        ((self.0 >> Self::ATTR_INDX_SHIFT) & 0b111) as u8
    }

    /// Shareability (3 inner, 2 outer).
    pub const fn shareability(self) -> u8 {
        ((self.0 >> Self::SH_SHIFT) & 0b11) as u8
    }

    /// Whether the page is read-only (`AP[2]`).
    pub const fn is_read_only(self) -> bool {
        self.0 & Self::AP_RDONLY != 0
    }

    /// The access the hardware allows: read always (a valid stage-1 page
    /// is readable), write unless read-only; `noncacheable` when the page
    /// is Device memory (MMIO).
    pub const fn prot(self) -> Prot {
        Prot {
            read: self.is_valid(),
            write: self.is_valid() && !self.is_read_only(),
            noncacheable: self.attr_index() == Stage1Config::ATTR_DEVICE,
        }
    }
}

impl PageEntry for Stage1Pte {
    #[inline]
    fn phys(&self) -> PhysAddr {
        Stage1Pte::phys(*self)
    }

    #[inline]
    fn prot(&self) -> Prot {
        Stage1Pte::prot(*self)
    }
}

impl fmt::Debug for Stage1Pte {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Stage1Pte({:#018x})", self.0)
    }
}

/// One table: its page, and (levels 0 to 2) the arena indices of its
/// children, so that no walk turns a physical address back into a pointer.
struct Table {
    page: TablePage,
    /// `children[i]` is the arena index of the table entry `i` points to,
    /// 0 for none (the root is nobody's child).
    children: Option<Box<[u32; ENTRIES]>>,
}

/// Arm VMSAv8-64 stage-1 I/O page tables in memory from `P`. See the
/// module docs.
///
/// Tables are created on demand and kept until the format is dropped (as
/// Linux's io-pgtable keeps them once made). Dropping it frees every table
/// page: whoever pointed an SMMU at [`config`](Self::config)`.ttbr` must
/// have stopped it from walking them first (cleared the context descriptor
/// or STE and synced); the [`IommuDomain`](crate::backend::iommu::IommuDomain)
/// drops its hardware before its table for that purpose, and leaks the
/// table if a page is still mapped.
pub struct ArmStage1<P: TablePages> {
    pages: P,
    opts: Stage1Options,
    /// Table 0 is the root.
    tables: Vec<Table>,
    /// Valid page descriptors.
    mapped: u64,
    /// Set by `leak`: the drop frees no table.
    leaked: bool,
}

// SAFETY: the table pages belong to this value alone (`TablePages`
// promise 1); the pointers are owned handles to them, used only through
// `&self`/`&mut self`, so moving the value to another thread moves that
// ownership with it. `P` itself must be `Send`.
unsafe impl<P: TablePages + Send> Send for ArmStage1<P> {}

/// The descriptor index for `iova` at `level`.
#[inline]
const fn index_at(iova: u64, level: usize) -> usize {
    ((iova >> (PAGE_SHIFT as usize + 9 * (LEVELS - 1 - level))) as usize) & (ENTRIES - 1)
}

/// A zeroed array of child indices, built on the heap.
fn new_children() -> Box<[u32; ENTRIES]> {
    vec![0u32; ENTRIES]
        .into_boxed_slice()
        .try_into()
        .expect("ENTRIES children")
}

impl<P: TablePages> ArmStage1<P> {
    /// An empty table (a zeroed root) with pages from `pages`; `NoMemory`
    /// if the root cannot be allocated below the output size.
    ///
    /// # Panics
    ///
    /// If `opts.output_bits` is not 32, 36, 40, 42, 44 or 48.
    pub fn new(pages: P, opts: Stage1Options) -> Result<Self, PageTableError> {
        assert!(
            ips_of(opts.output_bits).is_some(),
            "the output size must be 32, 36, 40, 42, 44 or 48 bits"
        );
        let root = Self::alloc(&pages, opts)?;
        Ok(Self {
            pages,
            opts,
            tables: vec![Table {
                page: root,
                children: Some(new_children()),
            }],
            mapped: 0,
            leaked: false,
        })
    }

    /// A table page from `pages` that the walker can reach, its zeroes
    /// synced. A page beyond the output size is given back: the SMMU reads
    /// tables at output addresses.
    fn alloc(pages: &P, opts: Stage1Options) -> Result<TablePage, PageTableError> {
        let page = pages.alloc_table().ok_or(PageTableError::NoMemory)?;
        if page.phys.as_u64() >> opts.output_bits != 0 {
            // SAFETY: just allocated from `pages`; never linked.
            unsafe { pages.free_table(page) };
            return Err(PageTableError::NoMemory);
        }
        // SAFETY: the whole page was just allocated from `pages`.
        unsafe { pages.sync_for_walker(page.cpu, TABLE_BYTES) };
        Ok(page)
    }

    /// The options it was built with.
    pub fn options(&self) -> Stage1Options {
        self.opts
    }

    /// The page source.
    pub fn pages(&self) -> &P {
        &self.pages
    }

    /// The root table's physical address.
    pub fn root(&self) -> PhysAddr {
        self.tables[0].page.phys
    }

    /// The values an SMMU context descriptor needs.
    pub fn config(&self) -> Stage1Config {
        let (rgn, sh) = if self.opts.coherent_walk {
            (Stage1Config::RGN_WBWA, Stage1Config::SH_IS)
        } else {
            (Stage1Config::RGN_NC, Stage1Config::SH_OS)
        };
        Stage1Config {
            ttbr: self.root(),
            tsz: (64 - IOVA_BITS) as u8,
            tg: Stage1Config::TG0_4K,
            irgn: rgn,
            orgn: rgn,
            sh,
            ips: match ips_of(self.opts.output_bits) {
                Some(ips) => ips,
                None => unreachable!(),
            },
            mair: Stage1Config::MAIR,
        }
    }

    /// The page descriptor for `phys` with `prot` (read or write set).
    fn page_descriptor(&self, phys: u64, prot: Prot) -> u64 {
        let mut d = phys
            | Stage1Pte::TYPE_TABLE_OR_PAGE
            | Stage1Pte::AF
            | Stage1Pte::NG
            | Stage1Pte::AP_UNPRIV
            | Stage1Pte::PXN
            | Stage1Pte::UXN;
        if !prot.write {
            d |= Stage1Pte::AP_RDONLY;
        }
        let (attr, sh) = if prot.noncacheable {
            (Stage1Config::ATTR_DEVICE, Stage1Config::SH_OS)
        } else if self.opts.coherent_dma {
            (Stage1Config::ATTR_WB, Stage1Config::SH_IS)
        } else {
            (Stage1Config::ATTR_NC, Stage1Config::SH_OS)
        };
        d | (attr as u64) << Stage1Pte::ATTR_INDX_SHIFT | (sh as u64) << Stage1Pte::SH_SHIFT
    }

    /// Reads descriptor `i` of table `t`.
    #[inline]
    fn read(&self, t: usize, i: usize) -> u64 {
        debug_assert!(i < ENTRIES);
        // SAFETY: the page is allocated and valid for reads of 512
        // descriptors (`TablePages` promise 1) until this value frees it;
        // `i < 512`. Volatile: the walker (never a Rust thread) reads these
        // bytes too.
        unsafe { self.tables[t].page.cpu.add(i).read_volatile() }
    }

    /// Writes descriptor `i` of table `t` (one single-copy-atomic 64-bit
    /// store on aarch64), without syncing.
    #[inline]
    fn write(&mut self, t: usize, i: usize, d: u64) {
        debug_assert!(i < ENTRIES);
        // SAFETY: as in `read`; the page is used by nothing else (promise
        // 1) and `&mut self` excludes other writers.
        unsafe { self.tables[t].page.cpu.add(i).write_volatile(d) };
    }

    /// Makes descriptors `[first, first + n)` of table `t` visible to the
    /// walker.
    #[inline]
    fn sync(&self, t: usize, first: usize, n: usize) {
        debug_assert!(first + n <= ENTRIES);
        // SAFETY: inside table `t`'s page, which is allocated.
        unsafe {
            self.pages
                .sync_for_walker(self.tables[t].page.cpu.add(first), n * 8)
        };
    }

    /// The arena index of the level-3 table covering `iova`, if it exists.
    fn leaf_table(&self, iova: u64) -> Option<usize> {
        let mut t = 0;
        for level in 0..LEVELS - 1 {
            let children = self.tables[t].children.as_ref()?;
            let c = children[index_at(iova, level)];
            if c == 0 {
                return None;
            }
            t = c as usize;
        }
        Some(t)
    }

    /// The arena index of the level-3 table covering `iova`, created with
    /// its parents if missing. A new table is zeroed and synced before the
    /// table descriptor that publishes it is written (then synced), as
    /// Linux's `arm_lpae_install_table` orders it with `dma_wmb`.
    fn leaf_table_or_create(&mut self, iova: u64) -> Result<usize, PageTableError> {
        let mut t = 0;
        for level in 0..LEVELS - 1 {
            let i = index_at(iova, level);
            let c = self.tables[t].children.as_ref().expect("a parent table")[i];
            t = if c != 0 {
                c as usize
            } else {
                let page = Self::alloc(&self.pages, self.opts)?;
                let new = self.tables.len();
                let index = u32::try_from(new).expect("fewer than 2^32 tables");
                self.tables.push(Table {
                    page,
                    children: (level + 1 < LEVELS - 1).then(new_children),
                });
                self.tables[t].children.as_mut().expect("a parent table")[i] = index;
                self.write(
                    t,
                    i,
                    page.phys.as_u64() & Stage1Pte::ADDR_MASK | Stage1Pte::TYPE_TABLE_OR_PAGE,
                );
                self.sync(t, i, 1);
                new
            };
        }
        Ok(t)
    }
}

// SAFETY: (1) `map_pages` checks alignment, reach and every page before
// writing any page descriptor; it creates all missing tables first (a
// failure leaves only empty tables), then writes page descriptors that
// grant read (every valid stage-1 page) and write only if `prot.write`
// (stage 1 has no write-only encoding, the one widening the contract
// allows), and syncs each run of them (`TablePages` promise 2) before
// returning. A table is zeroed and synced before the descriptor that links
// it is written and synced. (2) `unmap_pages` writes 0 over every valid
// page descriptor of the range and syncs, and counts them. (3) Nothing else
// writes descriptors; a valid one is never overwritten. (4) `mapped`
// counts valid page descriptors; `leak` makes the drop free nothing.
unsafe impl<P: TablePages + Send> IoPageTable for ArmStage1<P> {
    type Entry = Stage1Pte;

    fn output_bits(&self) -> u32 {
        self.opts.output_bits
    }

    fn map_pages(
        &mut self,
        iova: DmaAddr,
        phys: PhysAddr,
        pages: u64,
        prot: Prot,
    ) -> Result<(), PageTableError> {
        crate::backend::iommu::format::check_map_range(iova, phys, pages, self.opts.output_bits)?;
        let (v, p) = (iova.as_u64(), phys.as_u64());
        if !prot.read && !prot.write {
            return Err(PageTableError::Unsupported(prot));
        }
        // Check every page before changing any.
        for k in 0..pages {
            let at = v + k * PAGE_SIZE;
            if let Some(t) = self.leaf_table(at) {
                if self.read(t, index_at(at, LEVELS - 1)) & Stage1Pte::VALID != 0 {
                    return Err(PageTableError::AlreadyMapped(DmaAddr::new(at)));
                }
            }
        }
        // Every table the range needs, before any page descriptor: an
        // allocation failure maps nothing.
        let mut k = 0;
        while k < pages {
            let at = v + k * PAGE_SIZE;
            self.leaf_table_or_create(at)?;
            k += ((ENTRIES - index_at(at, LEVELS - 1)) as u64).min(pages - k);
        }
        let mut k = 0;
        while k < pages {
            let at = v + k * PAGE_SIZE;
            let t = self.leaf_table(at).expect("created above");
            let first = index_at(at, LEVELS - 1);
            let n = ((ENTRIES - first) as u64).min(pages - k);
            for j in 0..n {
                let d = self.page_descriptor(p + (k + j) * PAGE_SIZE, prot);
                self.write(t, first + j as usize, d);
            }
            self.sync(t, first, n as usize);
            k += n;
        }
        self.mapped += pages;
        Ok(())
    }

    fn unmap_pages(&mut self, iova: DmaAddr, pages: u64) -> u64 {
        let v = iova.as_u64() & !(PAGE_SIZE - 1);
        let mut cleared = 0;
        let mut k = 0;
        while k < pages {
            let at = v + k * PAGE_SIZE;
            let first = index_at(at, LEVELS - 1);
            let n = ((ENTRIES - first) as u64).min(pages - k) as usize;
            if at >> IOVA_BITS == 0 {
                if let Some(t) = self.leaf_table(at) {
                    let mut any = false;
                    for i in first..first + n {
                        if self.read(t, i) & Stage1Pte::VALID != 0 {
                            self.write(t, i, 0);
                            cleared += 1;
                            any = true;
                        }
                    }
                    if any {
                        self.sync(t, first, n);
                    }
                }
            }
            k += n as u64;
        }
        self.mapped -= cleared;
        cleared
    }

    fn walk(&self, iova: DmaAddr) -> Option<Stage1Pte> {
        let v = iova.as_u64();
        if v >> IOVA_BITS != 0 {
            return None;
        }
        let t = self.leaf_table(v)?;
        let e = Stage1Pte(self.read(t, index_at(v, LEVELS - 1)));
        e.is_valid().then_some(e)
    }

    fn has_mappings(&self) -> bool {
        self.mapped != 0
    }

    fn tables(&self) -> usize {
        self.tables.len()
    }

    fn leak(&mut self) {
        self.leaked = true;
    }
}

impl<P: TablePages> Drop for ArmStage1<P> {
    fn drop(&mut self) {
        if self.leaked {
            return;
        }
        for t in self.tables.drain(..) {
            // SAFETY: allocated from `pages` and given back once (the arena
            // is drained); no walker reaches it: the domain leaks instead
            // when a page is mapped, and whoever pointed an SMMU at the
            // root stopped it before dropping (see the type's docs).
            unsafe { self.pages.free_table(t.page) };
        }
    }
}

impl<P: TablePages> fmt::Debug for ArmStage1<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArmStage1")
            .field("root", &self.root())
            .field("options", &self.opts)
            .field("tables", &self.tables.len())
            .field("mapped", &self.mapped)
            .finish_non_exhaustive()
    }
}

// Not in the loom shadow build, which has no proptest (and tests nothing
// of its own: `test = false`).
#[cfg(all(test, not(dmacap_loom)))]
mod tests;
