//! Cache maintenance on x86_64: `clwb`, `clflushopt` and `clflush`,
//! completed by `mfence`.
//!
//! x86 has no user-mode invalidate that discards dirty data: every flush
//! writes a dirty line back before dropping it. Invalidation is therefore
//! `clflushopt` (or `clflush`) on every line, and partial edge lines need no
//! special care. Cleaning uses `clwb` where the CPU has it, since it may
//! keep the line cached; otherwise `clflushopt`, otherwise `clflush`.
//!
//! `clwb` and `clflushopt` are weakly ordered: they are issued without
//! waiting and only a fence (or a locked instruction) orders them.
//! [`X86CacheOps::complete`] is one `mfence`, as in the DRM helper
//! `drm_clflush_virt_range` (every line with `clflushopt`, then one `mb()`).

use core::arch::asm;
use core::arch::x86_64::{__cpuid_count, CpuidResult};

use super::{CacheMaintenance, CacheRange, line_down, lines_in};

/// A cache-line flush instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum X86Flush {
    /// `clflush`: write back and invalidate, ordered with respect to writes
    /// and to other `clflush`. Present on every x86_64 CPU (part of SSE2).
    Clflush,
    /// `clflushopt`: write back and invalidate, weakly ordered (CPUID leaf
    /// 7, EBX bit 23).
    Clflushopt,
    /// `clwb`: write back, the line may stay cached; weakly ordered (CPUID
    /// leaf 7, EBX bit 24). Cleans only: invalidation never uses it.
    Clwb,
}

impl X86Flush {
    /// Whether the CPU this runs on reports the instruction in CPUID.
    pub fn is_supported(self) -> bool {
        let f = Features::detect();
        match self {
            X86Flush::Clflush => f.clflush,
            X86Flush::Clflushopt => f.clflushopt,
            X86Flush::Clwb => f.clwb,
        }
    }
}

/// What CPUID reports about the flush instructions.
#[derive(Debug, Clone, Copy)]
struct Features {
    clflush: bool,
    clflushopt: bool,
    clwb: bool,
    /// `clflush` line size in bytes (CPUID leaf 1, EBX bits 15:8, times 8).
    line: usize,
}

impl Features {
    fn detect() -> Self {
        let leaf0 = cpuid(0, 0);
        let leaf1 = cpuid(1, 0);
        let leaf7 = if leaf0.eax >= 7 {
            cpuid(7, 0)
        } else {
            CpuidResult {
                eax: 0,
                ebx: 0,
                ecx: 0,
                edx: 0,
            }
        };
        Features {
            clflush: leaf1.edx & (1 << 19) != 0,
            clflushopt: leaf7.ebx & (1 << 23) != 0,
            clwb: leaf7.ebx & (1 << 24) != 0,
            line: ((leaf1.ebx >> 8) & 0xff) as usize * 8,
        }
    }
}

/// CPUID `leaf`, sub-leaf `sub`.
#[inline]
fn cpuid(leaf: u32, sub: u32) -> CpuidResult {
    // `__cpuid_count` is a safe function since Rust 1.89 and an unsafe one
    // before; the crate's minimum is 1.85.
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every x86_64 CPU, reads no memory and has no
    // side effect; leaves above the maximum return reserved values, which
    // callers only read after checking leaf 0's maximum.
    unsafe {
        __cpuid_count(leaf, sub)
    }
}

/// The architecture's cache line (and `ARCH_DMA_MINALIGN`), in bytes.
const GRANULE: usize = 64;

/// x86_64 cache maintenance with the best flush instructions the CPU has.
///
/// | operation    | instruction, by preference           |
/// |--------------|---------------------------------------|
/// | clean        | `clwb`, `clflushopt`, `clflush`       |
/// | invalidate   | `clflushopt`, `clflush`               |
/// | complete     | `mfence`                              |
///
/// ```
/// use dmacap::arch::CacheMaintenance;
/// use dmacap::arch::x86_64::X86CacheOps;
///
/// let ops = X86CacheOps::detect();
/// assert_eq!(ops.line_size(), 64);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct X86CacheOps {
    clean: X86Flush,
    invalidate: X86Flush,
    line: usize,
}

impl X86CacheOps {
    /// Picks the instructions from CPUID: `clwb` for cleaning where present,
    /// else `clflushopt`, else `clflush`; `clflushopt` for invalidation
    /// where present, else `clflush`.
    ///
    /// The stride is the `clflush` line size CPUID reports, capped at 64
    /// bytes (64 where CPUID reports no power of two). A stride smaller than
    /// the real line only issues redundant flushes, and x86 flushes write
    /// dirty data back, so no edge line can lose data.
    pub fn detect() -> Self {
        let f = Features::detect();
        let clean = if f.clwb {
            X86Flush::Clwb
        } else if f.clflushopt {
            X86Flush::Clflushopt
        } else {
            // Every x86_64 CPU has `clflush` (it came with SSE2, which
            // x86_64 requires); use it even if CPUID were to say otherwise.
            X86Flush::Clflush
        };
        Self::build(f, clean)
    }

    /// Uses `flavor` for cleaning (and for invalidation, except that `clwb`
    /// does not invalidate: with [`X86Flush::Clwb`] invalidation uses
    /// `clflushopt`, or `clflush` without it). Returns `None` if CPUID does
    /// not report `flavor`.
    pub fn with_flavor(flavor: X86Flush) -> Option<Self> {
        let f = Features::detect();
        let present = match flavor {
            X86Flush::Clflush => f.clflush,
            X86Flush::Clflushopt => f.clflushopt,
            X86Flush::Clwb => f.clwb,
        };
        present.then(|| Self::build(f, flavor))
    }

    fn build(f: Features, clean: X86Flush) -> Self {
        let invalidate = match clean {
            X86Flush::Clflush => X86Flush::Clflush,
            X86Flush::Clflushopt => X86Flush::Clflushopt,
            X86Flush::Clwb if f.clflushopt => X86Flush::Clflushopt,
            X86Flush::Clwb => X86Flush::Clflush,
        };
        let line = if f.line.is_power_of_two() {
            f.line.min(GRANULE)
        } else {
            GRANULE
        };
        X86CacheOps {
            clean,
            invalidate,
            line,
        }
    }

    /// The instruction [`clean`](CacheMaintenance::clean) issues.
    pub fn clean_flavor(&self) -> X86Flush {
        self.clean
    }

    /// The instruction [`invalidate`](CacheMaintenance::invalidate) issues:
    /// `clflushopt` or `clflush`, never `clwb`.
    pub fn invalidate_flavor(&self) -> X86Flush {
        self.invalidate
    }

    /// Issues `op` on every line of `r`, returning the number of lines.
    ///
    /// # Safety
    ///
    /// Every byte of `r` is mapped, `r.len` is not zero and `r` does not
    /// wrap around the address space.
    #[inline]
    unsafe fn each_line(&self, op: X86Flush, r: CacheRange) -> usize {
        let base = r.cpu.as_ptr();
        let n = lines_in(base.addr(), r.len, self.line);
        let mut a = line_down(base.addr(), self.line);
        for _ in 0..n {
            // The line's address, keeping the range's provenance.
            let p = base.with_addr(a);
            // SAFETY: `p` lies in a line that holds at least one byte of
            // `r`, so in a page holding a byte of `r`, which the caller
            // promises is mapped: the instruction does not fault. The three
            // instructions write back and/or invalidate a line without
            // changing the value of any byte (x86 writes dirty data back
            // first), so no memory changes value. No `nomem`/`readonly`:
            // the compiler must emit every earlier store to `r` first.
            unsafe {
                match op {
                    X86Flush::Clflush => {
                        asm!("clflush byte ptr [{0}]", in(reg) p, options(nostack, preserves_flags))
                    }
                    X86Flush::Clflushopt => {
                        asm!("clflushopt byte ptr [{0}]", in(reg) p, options(nostack, preserves_flags))
                    }
                    X86Flush::Clwb => {
                        asm!("clwb byte ptr [{0}]", in(reg) p, options(nostack, preserves_flags))
                    }
                }
            }
            a = a.wrapping_add(self.line);
        }
        n
    }
}

impl Default for X86CacheOps {
    /// [`X86CacheOps::detect`].
    fn default() -> Self {
        Self::detect()
    }
}

// SAFETY:
// 1. Clean: `clwb`/`clflushopt`/`clflush` on every line touching `r` write
//    back every dirty line; the `mfence` of `complete` waits until they are
//    globally visible, that is in memory for a non-snooping device (Intel
//    SDM: CLFLUSHOPT and CLWB are ordered by fences and by older writes to
//    the same line, so they flush the data written before them).
// 2. Invalidate: `clflushopt`/`clflush` on every line drops it from every
//    cache level; after `mfence`, which also orders later loads (unlike
//    `sfence`), a load of `r` misses and reads memory as it is then.
// 3. Edge lines: x86 flushes write dirty data back before invalidating, so
//    nothing outside `r` is lost, whatever the alignment.
// 4. No instruction changes the value of a byte; only lines touching `r` are
//    named.
// 5. `line` is a power of two at most 64 (`build`), and no x86_64 CPU has a
//    cache line above 64 bytes (`Granule = U64`, Linux's x86
//    `ARCH_DMA_MINALIGN` is `L1_CACHE_BYTES` = 64).
// 6. A thread leaves a CPU only through the scheduler, which executes locked
//    read-modify-write instructions and serializing instructions on the old
//    CPU; those order `clflushopt`/`clwb` (Intel SDM), `clflush` is ordered
//    by writes, so work issued before a migration completes before the
//    thread runs elsewhere, and the `mfence` completes the rest.
unsafe impl CacheMaintenance for X86CacheOps {
    type Granule = typenum::U64;

    #[inline]
    fn line_size(&self) -> usize {
        self.line
    }

    #[inline]
    unsafe fn clean(&self, r: CacheRange) -> usize {
        if r.len == 0 {
            return 0;
        }
        // SAFETY: the caller's promise for `clean` (mapped, non-empty, no
        // wrap) is what `each_line` requires.
        unsafe { self.each_line(self.clean, r) }
    }

    #[inline]
    unsafe fn invalidate(&self, r: CacheRange) -> usize {
        if r.len == 0 {
            return 0;
        }
        // The bytes of `r` count as changed by the time `complete` returns:
        // let the compiler see that later asm (the fence) may touch them.
        let _ = r.cpu.as_ptr().expose_provenance();
        // SAFETY: the caller's promise for `invalidate` includes what
        // `each_line` requires.
        unsafe { self.each_line(self.invalidate, r) }
    }

    /// `mfence`, for every flavor. `sfence` would complete `clwb` and
    /// `clflushopt` for a device reading memory, but it does not order later
    /// loads, which could then be served from a line the pending
    /// invalidation has not yet dropped; `mfence` orders both (DRM uses
    /// `mb()`, which is `mfence`). `clflush` needs no fence against later
    /// stores, but the same `mfence` makes its completion explicit and
    /// orders later loads too.
    #[inline]
    fn complete(&self) {
        // SAFETY: `mfence` only orders memory accesses. Without `nomem` it is
        // also a compiler barrier: no access moves across it.
        unsafe { asm!("mfence", options(nostack, preserves_flags)) }
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;
    use crate::PhysAddr;
    use alloc::vec;
    use alloc::vec::Vec;
    use core::ptr::NonNull;

    /// All the flavors this CPU has, plus the detected default.
    fn all_ops() -> Vec<X86CacheOps> {
        let mut v = vec![X86CacheOps::detect()];
        for f in [X86Flush::Clflush, X86Flush::Clflushopt, X86Flush::Clwb] {
            v.extend(X86CacheOps::with_flavor(f));
        }
        v
    }

    /// A range of `buf` from `off`, `len` bytes.
    fn range(buf: &mut [u8], off: usize, len: usize) -> CacheRange {
        assert!(off + len <= buf.len());
        let p = NonNull::new(buf[off..].as_mut_ptr()).unwrap();
        CacheRange::new(p, PhysAddr::new(0), len)
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn detects_line_and_flavor() {
        let ops = X86CacheOps::detect();
        assert!(ops.line_size().is_power_of_two());
        assert!(ops.line_size() <= 64);
        assert_ne!(ops.invalidate_flavor(), X86Flush::Clwb);
        if X86Flush::Clwb.is_supported() {
            assert_eq!(ops.clean_flavor(), X86Flush::Clwb);
        } else if X86Flush::Clflushopt.is_supported() {
            assert_eq!(ops.clean_flavor(), X86Flush::Clflushopt);
        }
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn with_flavor_refuses_what_cpuid_lacks() {
        for f in [X86Flush::Clflush, X86Flush::Clflushopt, X86Flush::Clwb] {
            let ops = X86CacheOps::with_flavor(f);
            assert_eq!(ops.is_some(), f.is_supported(), "{f:?}");
            if let Some(ops) = ops {
                assert_eq!(ops.clean_flavor(), f);
            }
        }
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn clean_writes_back_and_counts_lines() {
        for ops in all_ops() {
            let line = ops.line_size();
            let mut buf = vec![0u8; 8192];
            let base = buf.as_ptr().addr();
            let pad = line_down(base + 2 * line - 1, line) - base; // line-aligned offset
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
                assert_eq!(n, lines_in(base + off, len, line), "{ops:?} {off}+{len}");
                for (i, b) in buf[off..off + len].iter().enumerate() {
                    assert_eq!(*b, (i as u8).wrapping_mul(7).wrapping_add(off as u8));
                }
            }
            // Known counts from an aligned start.
            let r = range(&mut buf, pad, 4 * line);
            // SAFETY: as above.
            assert_eq!(unsafe { ops.clean(r) }, 4);
            let r = range(&mut buf, pad + 0x10, 0xb8);
            // SAFETY: as above.
            assert_eq!(unsafe { ops.clean(r) }, lines_in(0x10, 0xb8, line));
            let r = range(&mut buf, pad + 5, 1);
            // SAFETY: as above.
            assert_eq!(unsafe { ops.clean(r) }, 1);
            ops.complete();
        }
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn invalidate_keeps_dirty_data_inside_and_around() {
        for ops in all_ops() {
            let line = ops.line_size();
            let mut buf = vec![0xa5u8; 8192];
            let base = buf.as_ptr().addr();
            let pad = line_down(base + 2 * line - 1, line) - base;
            // Unaligned at both ends: the edge lines hold bytes outside.
            let (off, len) = (pad + 13, 4 * line - 6);
            for (i, b) in buf.iter_mut().enumerate() {
                *b = (i % 251) as u8; // dirty, everywhere
            }
            let r = range(&mut buf, off, len);
            // SAFETY: `r` lies in `buf`; no reference to it is live until
            // `complete` returns, and its bytes are plain `u8`.
            let n = unsafe { ops.invalidate(r) };
            ops.complete();
            assert_eq!(n, lines_in(base + off, len, line));
            assert_eq!(n, 5);
            // x86 writes dirty lines back before dropping them: nothing lost,
            // inside the range or in the edge lines around it.
            for (i, b) in buf.iter().enumerate() {
                assert_eq!(*b, (i % 251) as u8, "{ops:?} byte {i}");
            }
        }
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn empty_range_issues_nothing() {
        let ops = X86CacheOps::detect();
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
