//! Cache maintenance on arm64: `dc cvac`, `dc ivac` and `dc civac` to the
//! point of coherency, completed by `dsb sy`.
//!
//! Following Linux (`dcache_clean_poc` and `dcache_inval_poc`):
//!
//! - clean: `dc cvac` on every line;
//! - invalidate: `dc ivac` on the lines the range covers entirely,
//!   `dc civac` on a partial first or last line, so that dirty bytes of
//!   other data sharing an edge line are written back, not dropped;
//! - complete: `dsb sy`.
//!
//! `dc ivac` is not allowed at EL0 (user space): it is UNDEFINED there and
//! traps. The EL0 flavor ([`Aarch64CacheOps::new_el0`]) therefore
//! invalidates with `dc civac` on every line, which is correct but also
//! writes dirty lines back. Linux lets EL0 issue `dc cvac` and `dc civac`
//! (`SCTLR_EL1.UCI`) and read `CTR_EL0` (`SCTLR_EL1.UCT`, or by emulation).
//!
//! The line size is `CTR_EL0.DminLine` (`4 << DminLine` bytes, the
//! smallest data cache line of the system), as Linux's `dcache_line_size`;
//! the granule is Linux's arm64 `ARCH_DMA_MINALIGN`, 128 bytes.
//!
//! Not handled: Cortex-A53 errata 819472, 826319, 827319 and 824069, on
//! whose affected revisions Linux cleans with `dc civac` instead of
//! `dc cvac` (`ARM64_WORKAROUND_CLEAN_CACHE`). At EL0, Linux traps and
//! emulates user cache maintenance on such cores.

use core::arch::asm;

use super::{CacheMaintenance, CacheRange, line_down, lines_in, split_lines};

/// Linux's arm64 `ARCH_DMA_MINALIGN`, in bytes.
const GRANULE: usize = 128;

/// Reads `CTR_EL0`.
#[inline]
fn read_ctr_el0() -> u64 {
    let ctr: u64;
    // SAFETY: reading CTR_EL0 touches no memory. Where EL0 may not read it
    // (`SCTLR_EL1.UCT` clear, and no OS emulation), it traps: a fault, not
    // undefined behavior.
    unsafe { asm!("mrs {0}, ctr_el0", out(reg) ctr, options(nomem, nostack, preserves_flags)) };
    ctr
}

/// The smallest data cache line size in bytes that a `CTR_EL0` value
/// reports: `4 << DminLine` (bits 19:16).
///
/// ```
/// use dmacap::arch::aarch64::dminline_bytes;
/// assert_eq!(dminline_bytes(0x8444_c004), 64);
/// ```
#[inline]
pub const fn dminline_bytes(ctr_el0: u64) -> usize {
    4 << ((ctr_el0 >> 16) & 0xf)
}

/// A data cache maintenance instruction, by virtual address, to the point
/// of coherency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dc {
    /// `dc cvac`: clean.
    Cvac,
    /// `dc ivac`: invalidate (EL1 and above).
    Ivac,
    /// `dc civac`: clean and invalidate.
    Civac,
}

/// arm64 cache maintenance to the point of coherency.
///
/// Two flavors, differing in how they invalidate:
///
/// | flavor                   | clean     | invalidate, inner lines | edge lines | complete |
/// |--------------------------|-----------|-------------------------|------------|----------|
/// | EL1 ([`new_el1`])        | `dc cvac` | `dc ivac`               | `dc civac` | `dsb sy` |
/// | EL0 ([`new_el0`])        | `dc cvac` | `dc civac`              | `dc civac` | `dsb sy` |
///
/// [`new_el1`]: Self::new_el1
/// [`new_el0`]: Self::new_el0
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aarch64CacheOps {
    el0: bool,
    line: usize,
}

impl Aarch64CacheOps {
    /// The EL1 flavor: invalidates inner lines with `dc ivac`, which drops
    /// them without writing them back. Reads the line size from `CTR_EL0`.
    ///
    /// # Safety
    ///
    /// - Every call on the value (and on its copies) runs at EL1 or higher
    ///   (kernel, hypervisor or firmware), where `dc ivac` is allowed.
    /// - Whenever the calling thread can move to another CPU between a
    ///   `clean`/`invalidate` and the `complete` after it, the code that
    ///   moves it executes a DSB on the old CPU first (Linux's
    ///   `__switch_to` does, "in case the thread migrates"); otherwise
    ///   `complete` on the new CPU would not complete the work issued on
    ///   the old one.
    /// - Cache maintenance by virtual address to the point of coherency
    ///   reaches the memory devices read: there is no system cache beyond
    ///   the point of coherency that needs maintenance of its own.
    ///
    /// # Panics
    ///
    /// If `CTR_EL0` reports a line larger than 128 bytes (no known core
    /// does; Linux warns when the cache writeback granule exceeds
    /// `ARCH_DMA_MINALIGN`).
    pub unsafe fn new_el1() -> Self {
        Self::with_line(false, dminline_bytes(read_ctr_el0()))
    }

    /// The EL0 (user-space) flavor: invalidates every line with `dc civac`,
    /// since `dc ivac` traps at EL0. Reads the line size from `CTR_EL0`.
    /// Also correct at EL1, just slower to invalidate.
    ///
    /// Meant for an OS that, like Linux, lets EL0 issue `dc cvac` and
    /// `dc civac` and read `CTR_EL0` (where it does not, they trap), and
    /// that executes a DSB when it takes a thread off a CPU (Linux's
    /// `__switch_to` does), so that [`complete`](CacheMaintenance::complete)
    /// completes work issued before a migration.
    ///
    /// # Panics
    ///
    /// If `CTR_EL0` reports a line larger than 128 bytes.
    pub fn new_el0() -> Self {
        Self::with_line(true, dminline_bytes(read_ctr_el0()))
    }

    fn with_line(el0: bool, line: usize) -> Self {
        assert!(
            line.is_power_of_two() && line <= GRANULE,
            "CTR_EL0.DminLine reports a cache line above ARCH_DMA_MINALIGN (128 bytes)"
        );
        Self { el0, line }
    }

    /// Whether this is the EL0 flavor (no `dc ivac`).
    pub fn is_el0(&self) -> bool {
        self.el0
    }

    /// Issues `op` on the `count` lines from `start`.
    ///
    /// # Safety
    ///
    /// Every line lies in a page holding a byte of the range `base` points
    /// into, which is mapped; for `Dc::Ivac`, every line lies entirely in
    /// that range, whose bytes the caller lets change to memory's contents;
    /// at EL1 or higher for `Dc::Ivac`.
    #[inline]
    unsafe fn lines(op: Dc, base: *mut u8, start: usize, count: usize, line: usize) {
        let mut a = start;
        for _ in 0..count {
            // The line's address, keeping the range's provenance.
            let p = base.with_addr(a);
            // SAFETY: per the caller, `p` is in a mapped page, so the
            // instruction does not fault (beyond the traps the constructors
            // document), and `dc ivac` only drops lines wholly inside the
            // range. `dc cvac` and `dc civac` change no byte's value. No
            // `nomem`/`readonly`: earlier stores to the range are emitted
            // first, and the compiler assumes the range may change.
            unsafe {
                match op {
                    Dc::Cvac => asm!("dc cvac, {0}", in(reg) p, options(nostack, preserves_flags)),
                    Dc::Ivac => asm!("dc ivac, {0}", in(reg) p, options(nostack, preserves_flags)),
                    Dc::Civac => {
                        asm!("dc civac, {0}", in(reg) p, options(nostack, preserves_flags))
                    }
                }
            }
            a = a.wrapping_add(line);
        }
    }
}

// SAFETY:
// 1. Clean: `dc cvac` on every line touching `r` cleans it to the point of
//    coherency; `dsb sy` waits for completion (Arm ARM: a DSB completes
//    earlier cache maintenance), so the data is where a non-snooping device
//    reads it. Earlier stores are ordered before `dc cvac` to the same line.
// 2. Invalidate: every line touching `r` is invalidated (`dc ivac`, or
//    `dc civac` which also invalidates) to the point of coherency; after
//    `dsb sy`, a load misses and reads memory as it is then.
// 3. Edge lines: a line `r` covers only in part gets `dc civac`, never
//    `dc ivac` (`split_lines`), in both flavors.
// 4. Only lines touching `r` are named; `dc ivac` only on lines inside `r`;
//    `dc cvac` changes no value.
// 5. `line` is DminLine, the smallest line of the system, a power of two at
//    most 128 (`with_line`), as Linux uses it; `Granule = U128` is Linux's
//    arm64 ARCH_DMA_MINALIGN.
// 6. `dsb sy` completes this CPU's maintenance; migration is covered by the
//    OS's DSB on context switch (documented on `new_el0`, and a promise of
//    `new_el1`'s caller).
unsafe impl CacheMaintenance for Aarch64CacheOps {
    type Granule = typenum::U128;

    #[inline]
    fn line_size(&self) -> usize {
        self.line
    }

    #[inline]
    unsafe fn clean(&self, r: CacheRange) -> usize {
        if r.len == 0 {
            return 0;
        }
        let base = r.cpu.as_ptr();
        let n = lines_in(base.addr(), r.len, self.line);
        // SAFETY: the lines touching `r` lie in pages holding bytes of `r`,
        // which the caller promises are mapped; `dc cvac` only.
        unsafe {
            Self::lines(
                Dc::Cvac,
                base,
                line_down(base.addr(), self.line),
                n,
                self.line,
            )
        };
        n
    }

    #[inline]
    unsafe fn invalidate(&self, r: CacheRange) -> usize {
        if r.len == 0 {
            return 0;
        }
        let base = r.cpu.as_ptr();
        // The bytes of `r` count as changed by the time `complete` returns:
        // let the compiler see that later asm (the barrier) may touch them.
        let _ = base.expose_provenance();
        let s = split_lines(base.addr(), r.len, self.line);
        let inner = if self.el0 { Dc::Civac } else { Dc::Ivac };
        // SAFETY: all lines touch `r`, whose pages the caller promises are
        // mapped. The inner lines lie wholly inside `r`, which the caller
        // lets change to memory's contents; `dc ivac` is used only by the
        // EL1 flavor, whose constructor's caller promised EL1 or higher.
        // Edge lines get `dc civac`, which loses nothing.
        unsafe {
            if let Some(h) = s.head {
                Self::lines(Dc::Civac, base, h, 1, self.line);
            }
            Self::lines(inner, base, s.inner.start, s.inner.count, self.line);
            if let Some(t) = s.tail {
                Self::lines(Dc::Civac, base, t, 1, self.line);
            }
        }
        s.total()
    }

    /// `dsb sy`: waits for every cache maintenance this CPU issued, in the
    /// full system shareability domain, as Linux does after
    /// `dcache_clean_poc` / `dcache_inval_poc` for DMA.
    #[inline]
    fn complete(&self) {
        // SAFETY: a barrier; touches no memory itself. Without `nomem` it
        // is also a compiler barrier.
        unsafe { asm!("dsb sy", options(nostack, preserves_flags)) }
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;
    use crate::PhysAddr;
    use alloc::vec;
    use core::ptr::NonNull;

    /// A range of `buf` from `off`, `len` bytes.
    fn range(buf: &mut [u8], off: usize, len: usize) -> CacheRange {
        assert!(off + len <= buf.len());
        let p = NonNull::new(buf[off..].as_mut_ptr()).unwrap();
        CacheRange::new(p, PhysAddr::new(0), len)
    }

    #[test]
    fn dminline_decoding() {
        assert_eq!(dminline_bytes(0), 4);
        assert_eq!(dminline_bytes(4 << 16), 64);
        assert_eq!(dminline_bytes(5 << 16), 128);
        assert_eq!(dminline_bytes(0x8444_c004), 64);
    }

    #[test]
    #[should_panic(expected = "ARCH_DMA_MINALIGN")]
    fn rejects_lines_above_granule() {
        Aarch64CacheOps::with_line(true, 256);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn el0_reads_line_size() {
        let ops = Aarch64CacheOps::new_el0();
        assert!(ops.is_el0());
        assert!(ops.line_size().is_power_of_two());
        assert!(ops.line_size() <= 128);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn el0_clean_writes_back_and_counts_lines() {
        let ops = Aarch64CacheOps::new_el0();
        let line = ops.line_size();
        let mut buf = vec![0u8; 8192];
        let base = buf.as_ptr().addr();
        let pad = line_down(base + 2 * line - 1, line) - base;
        for (off, len) in [
            (pad, 4 * line),
            (pad + 0x10, 0xb8),
            (pad + 5, 1),
            (pad, 4096),
        ] {
            for (i, b) in buf[off..off + len].iter_mut().enumerate() {
                *b = (i as u8).wrapping_mul(7).wrapping_add(off as u8);
            }
            let r = range(&mut buf, off, len);
            // SAFETY: `r` lies in `buf`, a live heap allocation.
            let n = unsafe { ops.clean(r) };
            ops.complete();
            assert_eq!(n, lines_in(base + off, len, line), "{off}+{len}");
            for (i, b) in buf[off..off + len].iter().enumerate() {
                assert_eq!(*b, (i as u8).wrapping_mul(7).wrapping_add(off as u8));
            }
        }
        let r = range(&mut buf, pad, 4 * line);
        // SAFETY: as above.
        assert_eq!(unsafe { ops.clean(r) }, 4);
        let r = range(&mut buf, pad + 5, 1);
        // SAFETY: as above.
        assert_eq!(unsafe { ops.clean(r) }, 1);
        ops.complete();
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn el0_invalidate_keeps_dirty_data_inside_and_around() {
        let ops = Aarch64CacheOps::new_el0();
        let line = ops.line_size();
        let mut buf = vec![0u8; 8192];
        let base = buf.as_ptr().addr();
        let pad = line_down(base + 2 * line - 1, line) - base;
        // Unaligned at both ends: the edge lines hold bytes outside.
        let (off, len) = (pad + 13, 4 * line - 6);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        let r = range(&mut buf, off, len);
        // SAFETY: `r` lies in `buf`; no reference to it is live until
        // `complete` returns, and its bytes are plain `u8`.
        let n = unsafe { ops.invalidate(r) };
        ops.complete();
        assert_eq!(n, lines_in(base + off, len, line));
        assert_eq!(n, 5);
        // `dc civac` writes dirty lines back: nothing lost, inside or out.
        for (i, b) in buf.iter().enumerate() {
            assert_eq!(*b, (i % 251) as u8, "byte {i}");
        }
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn el0_empty_range_issues_nothing() {
        let ops = Aarch64CacheOps::new_el0();
        let mut buf = vec![0u8; 64];
        let r = range(&mut buf, 3, 0);
        // SAFETY: an empty range inside `buf`; nothing is issued.
        unsafe {
            assert_eq!(ops.clean(r), 0);
            assert_eq!(ops.invalidate(r), 0);
        }
        ops.complete();
    }
}
