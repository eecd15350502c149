//! A 4-level I/O page table: 48-bit IOVAs, 4 KiB pages, 9 bits of IOVA
//! per level, 512 entries per table.
//!
//! ```text
//!   IOVA bits  47..39   38..30   29..21   20..12   11..0
//!              level 0  level 1  level 2  level 3  offset in page
//! ```
//!
//! Levels 0 to 2 hold table entries; level 3 holds leaf entries naming a
//! physical page, with the device's permissions ([`Prot`]).
//!
//! This is the software model of the format. Where hardware keeps the
//! physical address of the next-level table, a table entry here keeps the
//! table's index in the page table's arena, so the walk needs no unsafe
//! code. Tables are created on demand and kept until the page table is
//! dropped (as Linux's io-pgtable keeps them), so the memory they take is
//! bounded by the IOVA space ever used.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use crate::backend::compose::MapAttrs;
use crate::backend::iommu::format::{IoPageTable, PageEntry};
use crate::backend::iommu::{IOVA_BITS, PAGE_SHIFT, PAGE_SIZE};
use crate::base::addr::{DmaAddr, PhysAddr};
use crate::base::direction::DmaDirection;

/// Entries per table.
pub const ENTRIES: usize = 512;
/// Levels of tables.
pub const LEVELS: usize = 4;
/// Bits of physical address a leaf entry can hold.
pub const OUTPUT_BITS: u32 = 52;

/// What a device may do with a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Prot {
    /// The device may read the page.
    pub read: bool,
    /// The device may write the page.
    pub write: bool,
    /// The page is MMIO or peer memory: mapped non-cacheable.
    pub noncacheable: bool,
}

impl Prot {
    /// The permissions of a mapping for `dir`: `ToDevice` reads,
    /// `FromDevice` writes, `Bidirectional` both; non-cacheable for MMIO.
    pub const fn for_dma(dir: DmaDirection, attrs: MapAttrs) -> Self {
        Self {
            read: dir.device_reads(),
            write: dir.device_writes(),
            noncacheable: attrs.mmio,
        }
    }
}

/// One page table entry: a table entry (levels 0 to 2) or a leaf naming a
/// physical page (level 3).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
#[repr(transparent)]
pub struct Pte(u64);

impl Pte {
    /// The entry is in use.
    pub const VALID: u64 = 1 << 0;
    /// The entry points to a next-level table.
    pub const TABLE: u64 = 1 << 1;
    /// A leaf: the device may read the page.
    pub const READ: u64 = 1 << 2;
    /// A leaf: the device may write the page.
    pub const WRITE: u64 = 1 << 3;
    /// A leaf: the page is mapped non-cacheable (MMIO).
    pub const NONCACHEABLE: u64 = 1 << 4;
    /// The address field: bits 12 to 51.
    pub const ADDR_MASK: u64 = ((1 << OUTPUT_BITS) - 1) & !(PAGE_SIZE - 1);

    /// An unused entry.
    pub const EMPTY: Self = Self(0);

    /// A leaf entry for the page at `phys` (page-aligned, below
    /// 2^[`OUTPUT_BITS`]).
    pub const fn leaf(phys: PhysAddr, prot: Prot) -> Self {
        let mut bits = Self::VALID | (phys.as_u64() & Self::ADDR_MASK);
        if prot.read {
            bits |= Self::READ;
        }
        if prot.write {
            bits |= Self::WRITE;
        }
        if prot.noncacheable {
            bits |= Self::NONCACHEABLE;
        }
        Self(bits)
    }

    /// A table entry for table `index` of the arena.
    const fn table(index: usize) -> Self {
        Self(Self::VALID | Self::TABLE | ((index as u64) << PAGE_SHIFT))
    }

    /// The raw bits.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Whether the entry is in use.
    pub const fn is_valid(self) -> bool {
        self.0 & Self::VALID != 0
    }

    /// Whether the entry points to a table.
    pub const fn is_table(self) -> bool {
        self.0 & Self::TABLE != 0
    }

    /// Whether the device may read the page.
    pub const fn can_read(self) -> bool {
        self.0 & Self::READ != 0
    }

    /// Whether the device may write the page.
    pub const fn can_write(self) -> bool {
        self.0 & Self::WRITE != 0
    }

    /// Whether the page is mapped non-cacheable.
    pub const fn is_noncacheable(self) -> bool {
        self.0 & Self::NONCACHEABLE != 0
    }

    /// The permissions of a leaf.
    pub const fn prot(self) -> Prot {
        Prot {
            read: self.can_read(),
            write: self.can_write(),
            noncacheable: self.is_noncacheable(),
        }
    }

    /// A leaf's physical page.
    pub const fn phys(self) -> PhysAddr {
        PhysAddr::new(self.0 & Self::ADDR_MASK)
    }

    /// A table entry's table index.
    const fn index(self) -> usize {
        ((self.0 & Self::ADDR_MASK) >> PAGE_SHIFT) as usize
    }
}

impl fmt::Debug for Pte {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.is_valid() {
            return f.write_str("Pte(empty)");
        }
        if self.is_table() {
            return write!(f, "Pte(table {})", self.index());
        }
        write!(
            f,
            "Pte({} {}{}{})",
            self.phys(),
            if self.can_read() { "r" } else { "-" },
            if self.can_write() { "w" } else { "-" },
            if self.is_noncacheable() { " nc" } else { "" },
        )
    }
}

/// Why a page table update was refused. Nothing was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PageTableError {
    /// An address is not page-aligned, or the page count is zero.
    #[error("IOVA {iova} or physical address {phys} is not page-aligned, or no pages were given")]
    Misaligned {
        /// The IOVA given.
        iova: DmaAddr,
        /// The physical address given.
        phys: PhysAddr,
    },
    /// The range runs past the 48-bit IOVA space or the format's physical
    /// output (52 bits here, 48 or less for Arm stage 1).
    #[error("{pages} pages at IOVA {iova} (physical {phys}) exceed the page table's reach")]
    OutOfRange {
        /// The IOVA given.
        iova: DmaAddr,
        /// The physical address given.
        phys: PhysAddr,
        /// The pages asked for.
        pages: u64,
    },
    /// A page of the range is mapped already.
    #[error("IOVA {0} is mapped already")]
    AlreadyMapped(DmaAddr),
    /// The format cannot express these permissions (Arm stage 1 has no
    /// entry that grants no access).
    #[error("the page-table format cannot express {0:?}")]
    Unsupported(Prot),
    /// A table could not be allocated (or not where the walker can read
    /// it: below the output size). Tables allocated before the failure
    /// stay (empty), as they do after an unmap.
    #[error("no memory for an I/O page table")]
    NoMemory,
}

type Table = [Pte; ENTRIES];

/// An empty table, built on the heap (not on the stack and moved).
fn new_table() -> Box<Table> {
    vec![Pte::EMPTY; ENTRIES]
        .into_boxed_slice()
        .try_into()
        .expect("a table has ENTRIES entries")
}

/// A 4-level I/O page table. See the module docs.
pub struct PageTable {
    /// Table 0 is the root.
    tables: Vec<Box<Table>>,
}

impl Default for PageTable {
    fn default() -> Self {
        Self::new()
    }
}

/// The entry index for `iova` at `level`.
#[inline]
const fn index_at(iova: u64, level: usize) -> usize {
    ((iova >> (PAGE_SHIFT as usize + 9 * (LEVELS - 1 - level))) as usize) & (ENTRIES - 1)
}

impl PageTable {
    /// An empty page table: a root and nothing mapped.
    pub fn new() -> Self {
        Self {
            tables: vec![new_table()],
        }
    }

    /// Tables allocated, the root included.
    pub fn tables(&self) -> usize {
        self.tables.len()
    }

    /// Whether any page is mapped (a leaf entry is valid).
    pub fn has_mappings(&self) -> bool {
        self.tables
            .iter()
            .any(|t| t.iter().any(|e| e.is_valid() && !e.is_table()))
    }

    /// The arena index of the leaf table covering `iova`, if it exists.
    fn leaf_table(&self, iova: u64) -> Option<usize> {
        let mut t = 0;
        for level in 0..LEVELS - 1 {
            let e = self.tables[t][index_at(iova, level)];
            if !e.is_valid() {
                return None;
            }
            debug_assert!(e.is_table());
            t = e.index();
        }
        Some(t)
    }

    /// The arena index of the leaf table covering `iova`, created with its
    /// parents if missing.
    fn leaf_table_or_create(&mut self, iova: u64) -> usize {
        let mut t = 0;
        for level in 0..LEVELS - 1 {
            let i = index_at(iova, level);
            let e = self.tables[t][i];
            t = if e.is_valid() {
                e.index()
            } else {
                let new = self.tables.len();
                self.tables.push(new_table());
                self.tables[t][i] = Pte::table(new);
                new
            };
        }
        t
    }

    /// Maps `pages` pages from `iova` to `phys` with `prot`. Both addresses
    /// must be page-aligned. Refused, with nothing changed, if any page is
    /// mapped already or the range exceeds the table's reach.
    pub fn map_pages(
        &mut self,
        iova: DmaAddr,
        phys: PhysAddr,
        pages: u64,
        prot: Prot,
    ) -> Result<(), PageTableError> {
        crate::backend::iommu::format::check_map_range(iova, phys, pages, OUTPUT_BITS)?;
        let (v, p) = (iova.as_u64(), phys.as_u64());
        // Check every page before changing any.
        for k in 0..pages {
            let at = v + k * PAGE_SIZE;
            if let Some(t) = self.leaf_table(at) {
                if self.tables[t][index_at(at, LEVELS - 1)].is_valid() {
                    return Err(PageTableError::AlreadyMapped(DmaAddr::new(at)));
                }
            }
        }
        let mut k = 0;
        while k < pages {
            let at = v + k * PAGE_SIZE;
            let t = self.leaf_table_or_create(at);
            // Fill this leaf table as far as the range goes.
            let first = index_at(at, LEVELS - 1);
            let n = ((ENTRIES - first) as u64).min(pages - k);
            for j in 0..n {
                let pa = PhysAddr::new(p + (k + j) * PAGE_SIZE);
                self.tables[t][first + j as usize] = Pte::leaf(pa, prot);
            }
            k += n;
        }
        Ok(())
    }

    /// Clears the leaf entries of `pages` pages from `iova` (page-aligned);
    /// returns how many were mapped. Tables stay.
    pub fn unmap_pages(&mut self, iova: DmaAddr, pages: u64) -> u64 {
        let v = iova.as_u64() & !(PAGE_SIZE - 1);
        let mut cleared = 0;
        let mut k = 0;
        while k < pages {
            let at = v + k * PAGE_SIZE;
            let first = index_at(at, LEVELS - 1);
            let n = ((ENTRIES - first) as u64).min(pages - k);
            if let Some(t) = self.leaf_table(at) {
                for e in &mut self.tables[t][first..first + n as usize] {
                    if e.is_valid() {
                        *e = Pte::EMPTY;
                        cleared += 1;
                    }
                }
            }
            k += n;
        }
        cleared
    }

    /// The hardware's page walk: the leaf entry translating `iova`, if it
    /// is mapped.
    ///
    /// dmacap itself never calls this to translate back: unmap and sync use
    /// the IOVA and physical address the handle carries. It is the model of
    /// what the IOMMU does on an IOTLB miss, for simulators.
    pub fn walk(&self, iova: DmaAddr) -> Option<Pte> {
        let v = iova.as_u64();
        if v >> IOVA_BITS != 0 {
            return None;
        }
        let t = self.leaf_table(v)?;
        let e = self.tables[t][index_at(v, LEVELS - 1)];
        e.is_valid().then_some(e)
    }
}

impl PageEntry for Pte {
    #[inline]
    fn phys(&self) -> PhysAddr {
        Pte::phys(*self)
    }

    #[inline]
    fn prot(&self) -> Prot {
        Pte::prot(*self)
    }
}

// SAFETY: (1) `map_pages` checks every page before changing any and then
// installs leaves with exactly `prot`; the simulated IOMMU walks these
// entries under the domain's lock, so every write is visible to it. (2)
// `unmap_pages` clears the leaves and counts the valid ones. (3) Nothing
// else writes entries, and a mapped leaf is never overwritten (`map_pages`
// refuses). (4) `has_mappings` scans every leaf; `leak` forgets the tables.
unsafe impl IoPageTable for PageTable {
    type Entry = Pte;

    #[inline]
    fn output_bits(&self) -> u32 {
        OUTPUT_BITS
    }

    #[inline]
    fn map_pages(
        &mut self,
        iova: DmaAddr,
        phys: PhysAddr,
        pages: u64,
        prot: Prot,
    ) -> Result<(), PageTableError> {
        PageTable::map_pages(self, iova, phys, pages, prot)
    }

    #[inline]
    fn unmap_pages(&mut self, iova: DmaAddr, pages: u64) -> u64 {
        PageTable::unmap_pages(self, iova, pages)
    }

    #[inline]
    fn walk(&self, iova: DmaAddr) -> Option<Pte> {
        PageTable::walk(self, iova)
    }

    fn has_mappings(&self) -> bool {
        PageTable::has_mappings(self)
    }

    fn tables(&self) -> usize {
        PageTable::tables(self)
    }

    fn leak(&mut self) {
        core::mem::forget(core::mem::take(self));
    }
}

impl fmt::Debug for PageTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageTable")
            .field("tables", &self.tables.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RW: Prot = Prot {
        read: true,
        write: true,
        noncacheable: false,
    };

    #[test]
    fn map_walk_unmap_across_table_boundaries() {
        let mut pt = PageTable::new();
        // 4 pages straddling a 1 GiB boundary: one level-1 table, two each
        // of levels 2 and 3.
        let iova = DmaAddr::new((1 << 30) - 2 * PAGE_SIZE);
        let phys = PhysAddr::new(0x8000_0000);
        pt.map_pages(iova, phys, 4, RW).unwrap();
        assert_eq!(pt.tables(), 1 + 1 + 2 + 2);
        for k in 0..4 {
            let e = pt
                .walk(DmaAddr::new(iova.as_u64() + k * PAGE_SIZE + 5))
                .unwrap();
            assert_eq!(e.phys().as_u64(), phys.as_u64() + k * PAGE_SIZE);
            assert!(e.can_read() && e.can_write() && !e.is_noncacheable());
        }
        assert_eq!(pt.walk(DmaAddr::new(iova.as_u64() - 1)), None);
        assert_eq!(
            pt.map_pages(DmaAddr::new(iova.as_u64() + 3 * PAGE_SIZE), phys, 2, RW),
            Err(PageTableError::AlreadyMapped(DmaAddr::new(
                iova.as_u64() + 3 * PAGE_SIZE
            )))
        );
        // The refused map changed nothing past the conflict either.
        assert_eq!(pt.walk(DmaAddr::new(iova.as_u64() + 4 * PAGE_SIZE)), None);
        assert_eq!(pt.unmap_pages(iova, 4), 4);
        assert_eq!(pt.walk(iova), None);
        assert_eq!(pt.unmap_pages(iova, 4), 0);
    }

    #[test]
    fn permissions_and_limits() {
        let mut pt = PageTable::new();
        let ro = Prot::for_dma(DmaDirection::ToDevice, MapAttrs::RAM);
        let wo_nc = Prot::for_dma(DmaDirection::FromDevice, MapAttrs::MMIO);
        pt.map_pages(DmaAddr::new(0x1000), PhysAddr::new(0x5000), 1, ro)
            .unwrap();
        pt.map_pages(DmaAddr::new(0x2000), PhysAddr::new(0x6000), 1, wo_nc)
            .unwrap();
        let a = pt.walk(DmaAddr::new(0x1000)).unwrap();
        assert!(a.can_read() && !a.can_write() && !a.is_noncacheable());
        let b = pt.walk(DmaAddr::new(0x2fff)).unwrap();
        assert!(!b.can_read() && b.can_write() && b.is_noncacheable());
        assert_eq!(b.prot(), wo_nc);
        assert!(matches!(
            pt.map_pages(DmaAddr::new(0x1001), PhysAddr::new(0), 1, ro),
            Err(PageTableError::Misaligned { .. })
        ));
        assert!(matches!(
            pt.map_pages(DmaAddr::new((1 << 48) - PAGE_SIZE), PhysAddr::new(0), 2, ro),
            Err(PageTableError::OutOfRange { .. })
        ));
        assert!(matches!(
            pt.map_pages(DmaAddr::new(0), PhysAddr::new(1 << 52), 1, ro),
            Err(PageTableError::OutOfRange { .. })
        ));
        assert_eq!(pt.walk(DmaAddr::new(1 << 48)), None);
    }
}
