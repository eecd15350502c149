//! Cache maintenance instructions, per architecture: what a non-coherent
//! DMA backend issues so that a device which does not snoop the CPU's
//! caches and the CPU see the same bytes.
//!
//! [`CacheMaintenance`] is the interface; one implementation per
//! architecture, compiled only for that architecture:
//!
//! - `x86_64`: `X86CacheOps` (`clwb` / `clflushopt` / `clflush`, completed
//!   by `mfence`).
//! - `aarch64`: `Aarch64CacheOps` (`dc cvac` / `dc ivac` / `dc civac`,
//!   completed by `dsb sy`), with an EL1 flavor and an EL0 (user-space)
//!   flavor.
//!
//! # Which operation, when
//!
//! A non-coherent backend follows Linux's rules (`arch_sync_dma_for_device`
//! and `arch_sync_dma_for_cpu` on arm64):
//!
//! | hand-over      | `ToDevice` | `FromDevice`   | `Bidirectional` |
//! |----------------|------------|----------------|-----------------|
//! | to the device  | clean      | clean          | clean           |
//! | to the CPU     | nothing    | invalidate     | invalidate      |
//!
//! Cleaning before a `FromDevice` transfer writes back dirty lines, so that
//! no later eviction of a dirty line overwrites what the device wrote; the
//! invalidate after the transfer drops lines the CPU fetched (speculatively
//! or not) while the device was writing.
//!
//! # Issue, then complete
//!
//! [`clean`](CacheMaintenance::clean) and
//! [`invalidate`](CacheMaintenance::invalidate) only *issue* one operation
//! per cache line, without a barrier. [`complete`](CacheMaintenance::complete)
//! is the one barrier that finishes everything the calling thread issued so
//! far. A batch of mappings therefore costs one barrier, not one per
//! mapping (the batching Linux adopted for arm64 DMA in 2025).
//!
//! # Edge lines
//!
//! A range rarely starts and ends on cache-line boundaries. A line it only
//! partly covers (an *edge* line) can hold dirty bytes that belong to
//! somebody else, so it must never be invalidated without being written
//! back first: [`split_lines`] separates the partial first and last lines
//! from the inner ones, for the real implementations and for simulated
//! caches alike. Buffers aligned to [`CacheMaintenance::Granule`] at both
//! ends have no edge lines.

#[cfg(target_arch = "aarch64")]
pub mod aarch64;
#[cfg(target_arch = "x86_64")]
pub mod x86_64;

use core::ptr::NonNull;

use crate::base::addr::PhysAddr;

/// A range to maintain: CPU (virtual) address, physical address, length in
/// bytes (greater than zero).
///
/// Implementations that maintain caches by virtual address (the CPU's own
/// caches on x86_64 and arm64) use `cpu`; those that maintain by physical
/// address (outer cache controllers, simulated caches) use `phys`. Both must
/// name the same bytes.
#[derive(Debug, Clone, Copy)]
pub struct CacheRange {
    /// The CPU (virtual) address of the first byte.
    pub cpu: NonNull<u8>,
    /// The physical address of the first byte.
    pub phys: PhysAddr,
    /// The length in bytes; never zero in a range handed to
    /// [`CacheMaintenance`].
    pub len: usize,
}

impl CacheRange {
    /// The range of `len` bytes at `cpu`, whose physical address is `phys`.
    #[inline]
    pub const fn new(cpu: NonNull<u8>, phys: PhysAddr, len: usize) -> Self {
        Self { cpu, phys, len }
    }

    /// The CPU address of the first byte, as an integer.
    #[inline]
    pub fn cpu_addr(&self) -> usize {
        self.cpu.as_ptr().addr()
    }
}

/// Per-architecture cache maintenance for DMA to and from devices that do
/// not snoop the CPU's caches.
///
/// Every operation is *issued* by [`clean`](Self::clean) or
/// [`invalidate`](Self::invalidate) and *completed* by the next
/// [`complete`](Self::complete) on the same thread.
///
/// # Safety
///
/// An implementation promises, for every range `r` it is handed under the
/// preconditions of [`clean`](Self::clean) and
/// [`invalidate`](Self::invalidate):
///
/// 1. **Clean.** After `clean(r)` and then `complete()` on the same thread,
///    every CPU write to `r` made (in program order) before the `clean` has
///    reached memory, where a device that does not snoop the CPU's caches
///    reads it.
/// 2. **Invalidate.** After `invalidate(r)` and then `complete()` on the same
///    thread, CPU reads of `r` observe memory as it was when the invalidate
///    was issued, or later: no cache line holding older contents of `r`
///    survives.
/// 3. **Edge lines.** `invalidate(r)` never loses a write outside `r`: a
///    line that `r` covers only in part is written back before it is
///    dropped (or never dropped without its dirty bytes reaching memory).
///    Only bytes inside `r` may revert to what memory holds.
/// 4. **Nothing else.** Neither operation changes the value of any byte
///    outside `r`, and `clean` changes no byte's value at all.
/// 5. **Line size and granule.** [`line_size`](Self::line_size) returns
///    the same power of two on every call, no larger than
///    [`Granule`](Self::Granule)`::USIZE`, and no cache line the operations
///    act on is larger than `Granule`. Hence a range whose start and length
///    are multiples of `Granule` shares no cache line with any other data,
///    and has no edge lines.
/// 6. **Completion across threads.** `complete()` completes every operation
///    the calling thread issued through any `CacheMaintenance`
///    implementation of the same architecture, including operations issued
///    before the thread migrated to another CPU (on bare metal, an
///    implementation whose constructor is `unsafe` may push this onto its
///    caller).
pub unsafe trait CacheMaintenance: Send + Sync {
    /// The architecture's DMA alignment (Linux's `ARCH_DMA_MINALIGN`) as a
    /// type-level number: `typenum::U64` on x86_64, `typenum::U128` on
    /// arm64. A buffer aligned to it at both ends shares no cache line with
    /// other data.
    type Granule: crate::base::buffer::Granule;

    /// The cache-line size in bytes the operations step by: a power of two,
    /// at most `Granule::USIZE`.
    fn line_size(&self) -> usize;

    /// Issues a clean (write-back, line kept or not) of every cache line
    /// touching `r`, without waiting for it. Returns the number of lines
    /// issued: [`lines_in`]`(r.cpu_addr(), r.len, self.line_size())`.
    ///
    /// # Safety
    ///
    /// - `r.len` is not zero, and `[r.cpu, r.cpu + r.len)` does not wrap
    ///   around the address space.
    /// - Every byte of `[r.cpu, r.cpu + r.len)` is mapped in the current
    ///   address space (a cache-maintenance instruction on an unmapped
    ///   address faults, in a kernel as in user space), with normal,
    ///   cacheable or non-cacheable, memory attributes (not device MMIO).
    /// - `r.phys` is the physical address of `r.cpu`, and the range is
    ///   physically contiguous (implementations that maintain by physical
    ///   address rely on it).
    /// - No other thread writes `r` during the call, and no `&mut` to any
    ///   byte of it is live (a simulated cache reads the range).
    unsafe fn clean(&self, r: CacheRange) -> usize;

    /// Issues an invalidate of `r`, without waiting for it: lines `r` covers
    /// entirely are dropped (their dirty contents may be discarded), lines
    /// it covers only in part (at most the first and the last) are cleaned
    /// and invalidated. Returns the number of lines issued:
    /// [`lines_in`]`(r.cpu_addr(), r.len, self.line_size())`.
    ///
    /// # Safety
    ///
    /// Everything [`clean`](Self::clean) requires, and:
    ///
    /// - `r` is valid for writes: between this call and the end of the
    ///   next `complete()`, and afterwards, the bytes of `r` may change to
    ///   whatever memory holds, as if a device had written them. CPU
    ///   writes to `r` not yet cleaned may be lost.
    /// - No Rust reference to any byte of `r` is live from this call until
    ///   `complete()` returns, no other thread accesses `r` in that time,
    ///   and the caller treats the contents of `r` afterwards as written by
    ///   the device (valid for any bit pattern).
    unsafe fn invalidate(&self, r: CacheRange) -> usize;

    /// Completes every clean and invalidate this thread has issued so far:
    /// the barrier.
    fn complete(&self);
}

/// The address of the cache line holding `addr`: `addr` rounded down to a
/// multiple of `line`.
///
/// # Panics
///
/// If `line` is not a power of two.
#[inline]
pub const fn line_down(addr: usize, line: usize) -> usize {
    assert!(
        line.is_power_of_two(),
        "cache line size is not a power of two"
    );
    addr & !(line - 1)
}

/// The number of cache lines of `line` bytes that the `len` bytes at `addr`
/// touch; `0` when `len` is `0`.
///
/// ```
/// use dmacap::arch::lines_in;
/// assert_eq!(lines_in(0x1000, 64, 64), 1);
/// assert_eq!(lines_in(0x1001, 64, 64), 2);
/// assert_eq!(lines_in(0x103f, 2, 64), 2);
/// assert_eq!(lines_in(0x1000, 0, 64), 0);
/// ```
///
/// # Panics
///
/// If `line` is not a power of two, or if the range wraps around the
/// address space.
#[inline]
pub const fn lines_in(addr: usize, len: usize, line: usize) -> usize {
    assert!(
        line.is_power_of_two(),
        "cache line size is not a power of two"
    );
    if len == 0 {
        return 0;
    }
    let last = match addr.checked_add(len - 1) {
        Some(last) => last,
        None => panic!("range wraps around the address space"),
    };
    (line_down(last, line) - line_down(addr, line)) / line + 1
}

/// A run of whole cache lines: `count` lines of `line` bytes from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineRun {
    /// The address of the first line (a multiple of the line size). When
    /// `count` is zero it is where the run would have started.
    pub start: usize,
    /// The number of lines.
    pub count: usize,
}

impl LineRun {
    /// The address of the `i`-th line of the run, for `i < count`.
    #[inline]
    pub const fn line(&self, i: usize, line: usize) -> usize {
        self.start + i * line
    }
}

/// A range split into the cache lines it touches: a partial first line, the
/// lines it covers entirely, and a partial last line.
///
/// Invariants (for a split made by [`split_lines`] of a non-empty range):
/// `head` and `tail` are never the same line; the lines, in address order,
/// are `head`, then `inner`, then `tail`, contiguous; and
/// `head.is_some() as usize + inner.count + tail.is_some() as usize`
/// equals [`lines_in`]. A range inside one line but not covering it has
/// only a `head`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineSplit {
    /// The first line, if the range covers it only in part.
    pub head: Option<usize>,
    /// The lines the range covers entirely.
    pub inner: LineRun,
    /// The last line, if the range covers it only in part and it is not
    /// the first line.
    pub tail: Option<usize>,
}

impl LineSplit {
    /// The number of lines touched, [`lines_in`] of the split range.
    #[inline]
    pub const fn total(&self) -> usize {
        self.head.is_some() as usize + self.inner.count + self.tail.is_some() as usize
    }

    /// Whether the range has partial lines (edge lines shared with other
    /// data).
    #[inline]
    pub const fn has_edges(&self) -> bool {
        self.head.is_some() || self.tail.is_some()
    }
}

/// Splits the `len` bytes at `addr` into the cache lines of `line` bytes it
/// touches: the partial first line, the fully covered inner lines, the
/// partial last line. An empty range gives no lines, with the inner run
/// placed at `addr`'s line.
///
/// ```
/// use dmacap::arch::{split_lines, LineRun, LineSplit};
/// // 0x1010..0x10c8 with 64-byte lines: 0x1000 partial, 0x1040 and 0x1080
/// // whole, 0x10c0 partial.
/// assert_eq!(
///     split_lines(0x1010, 0xb8, 64),
///     LineSplit {
///         head: Some(0x1000),
///         inner: LineRun { start: 0x1040, count: 2 },
///         tail: Some(0x10c0),
///     }
/// );
/// ```
///
/// # Panics
///
/// If `line` is not a power of two, or if the range wraps around the
/// address space.
pub const fn split_lines(addr: usize, len: usize, line: usize) -> LineSplit {
    assert!(
        line.is_power_of_two(),
        "cache line size is not a power of two"
    );
    let first = line_down(addr, line);
    if len == 0 {
        return LineSplit {
            head: None,
            inner: LineRun {
                start: first,
                count: 0,
            },
            tail: None,
        };
    }
    let last_byte = match addr.checked_add(len - 1) {
        Some(b) => b,
        None => panic!("range wraps around the address space"),
    };
    let last = line_down(last_byte, line);
    let mask = line - 1;
    let total = (last - first) / line + 1;
    // The first line is whole iff the range starts at its first byte and
    // reaches its last byte; the last line iff the range ends at its last
    // byte and starts at or before its first byte.
    let head_whole = addr == first && last_byte >= first + mask;
    let tail_whole = last_byte == last + mask && addr <= last;

    if total == 1 {
        return if head_whole {
            LineSplit {
                head: None,
                inner: LineRun {
                    start: first,
                    count: 1,
                },
                tail: None,
            }
        } else {
            LineSplit {
                head: Some(first),
                inner: LineRun {
                    start: first + line,
                    count: 0,
                },
                tail: None,
            }
        };
    }

    let head = if head_whole { None } else { Some(first) };
    let tail = if tail_whole { None } else { Some(last) };
    let start = if head_whole { first } else { first + line };
    let count = total - (!head_whole) as usize - (!tail_whole) as usize;
    LineSplit {
        head,
        inner: LineRun { start, count },
        tail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks the invariants of a split against a byte-by-byte model.
    fn check(addr: usize, len: usize, line: usize) {
        let s = split_lines(addr, len, line);
        assert_eq!(s.total(), lines_in(addr, len, line), "{addr:#x}+{len}");
        if len == 0 {
            assert_eq!(s.total(), 0);
            return;
        }
        let end = addr + len;
        let mut expect = ModelLines::default();
        let mut l = line_down(addr, line);
        while l < end {
            let whole = addr <= l && l + line <= end;
            expect.push(l, whole);
            l += line;
        }
        let mut got = ModelLines::default();
        if let Some(h) = s.head {
            got.push(h, false);
        }
        for i in 0..s.inner.count {
            got.push(s.inner.line(i, line), true);
        }
        if let Some(t) = s.tail {
            got.push(t, false);
        }
        assert_eq!(got, expect, "{addr:#x}+{len} line {line}");
    }

    /// Up to 16 (line address, whole?) pairs, without an allocator.
    #[derive(Debug, Default, PartialEq, Eq)]
    struct ModelLines {
        n: usize,
        lines: [(usize, bool); 16],
    }

    impl ModelLines {
        fn push(&mut self, addr: usize, whole: bool) {
            self.lines[self.n] = (addr, whole);
            self.n += 1;
        }
    }

    #[test]
    fn lines_in_counts() {
        assert_eq!(lines_in(0, 0, 64), 0);
        assert_eq!(lines_in(0x1000, 1, 64), 1);
        assert_eq!(lines_in(0x1000, 64, 64), 1);
        assert_eq!(lines_in(0x1000, 65, 64), 2);
        assert_eq!(lines_in(0x103f, 1, 64), 1);
        assert_eq!(lines_in(0x103f, 2, 64), 2);
        assert_eq!(lines_in(0x1001, 64, 64), 2);
        assert_eq!(lines_in(0x1001, 126, 64), 2);
        assert_eq!(lines_in(0x1001, 127, 64), 2);
        assert_eq!(lines_in(0x1001, 128, 64), 3);
        assert_eq!(lines_in(0x1000, 4096, 128), 32);
        assert_eq!(lines_in(0x1000, 4096, 64), 64);
        // A range ending at the very top of the address space.
        assert_eq!(lines_in(usize::MAX - 63, 64, 64), 1);
        assert_eq!(lines_in(usize::MAX, 1, 64), 1);
    }

    #[test]
    #[should_panic(expected = "power of two")]
    fn lines_in_rejects_bad_line() {
        lines_in(0, 1, 48);
    }

    #[test]
    #[should_panic(expected = "wraps")]
    fn lines_in_rejects_wrap() {
        lines_in(usize::MAX, 2, 64);
    }

    #[test]
    fn split_aligned() {
        assert_eq!(
            split_lines(0x1000, 256, 64),
            LineSplit {
                head: None,
                inner: LineRun {
                    start: 0x1000,
                    count: 4
                },
                tail: None
            }
        );
        assert!(!split_lines(0x1000, 256, 64).has_edges());
    }

    #[test]
    fn split_unaligned_both_ends() {
        assert_eq!(
            split_lines(0x1010, 0xb8, 64),
            LineSplit {
                head: Some(0x1000),
                inner: LineRun {
                    start: 0x1040,
                    count: 2
                },
                tail: Some(0x10c0)
            }
        );
    }

    #[test]
    fn split_unaligned_start_only() {
        assert_eq!(
            split_lines(0x1020, 0x60, 64),
            LineSplit {
                head: Some(0x1000),
                inner: LineRun {
                    start: 0x1040,
                    count: 1
                },
                tail: None
            }
        );
    }

    #[test]
    fn split_unaligned_end_only() {
        assert_eq!(
            split_lines(0x1000, 0x50, 64),
            LineSplit {
                head: None,
                inner: LineRun {
                    start: 0x1000,
                    count: 1
                },
                tail: Some(0x1040)
            }
        );
    }

    #[test]
    fn split_two_partial_lines_no_inner() {
        assert_eq!(
            split_lines(0x1030, 0x20, 64),
            LineSplit {
                head: Some(0x1000),
                inner: LineRun {
                    start: 0x1040,
                    count: 0
                },
                tail: Some(0x1040)
            }
        );
    }

    #[test]
    fn split_exactly_one_line() {
        assert_eq!(
            split_lines(0x1040, 64, 64),
            LineSplit {
                head: None,
                inner: LineRun {
                    start: 0x1040,
                    count: 1
                },
                tail: None
            }
        );
    }

    #[test]
    fn split_inside_one_line() {
        for (addr, len) in [(0x1041, 10), (0x1040, 63), (0x1041, 63), (0x107f, 1)] {
            let s = split_lines(addr, len, 64);
            assert_eq!(s.head, Some(0x1040), "{addr:#x}+{len}");
            assert_eq!(s.inner.count, 0);
            assert_eq!(s.tail, None);
            assert_eq!(s.total(), 1);
        }
    }

    #[test]
    fn split_empty() {
        let s = split_lines(0x1041, 0, 64);
        assert_eq!(s.total(), 0);
        assert!(!s.has_edges());
        assert_eq!(s.inner.start, 0x1040);
    }

    #[test]
    fn split_at_top_of_address_space() {
        let s = split_lines(usize::MAX - 127, 128, 64);
        assert_eq!(s.head, None);
        assert_eq!(s.inner.count, 2);
        assert_eq!(s.tail, None);
        let s = split_lines(usize::MAX - 64, 65, 64);
        assert_eq!(s.head, Some(usize::MAX - 127));
        assert_eq!(s.inner.count, 1);
        assert_eq!(s.tail, None);
    }

    #[test]
    #[cfg_attr(miri, ignore = "exhaustive: minutes under Miri")]
    fn split_matches_byte_model_exhaustively() {
        for line in [16usize, 32, 64, 128] {
            for addr in 0x1000..0x1000 + 2 * line {
                for len in 0..=5 * line {
                    check(addr, len, line);
                }
            }
        }
    }

    #[test]
    fn split_is_const() {
        const S: LineSplit = split_lines(0x1010, 0x100, 64);
        const N: usize = lines_in(0x1010, 0x100, 64);
        assert_eq!(S.total(), N);
        assert_eq!(N, 5);
    }
}
