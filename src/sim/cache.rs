//! The simulated write-back CPU cache of non-coherent RAM: the model,
//! its limits and its soundness argument are documented on [`SimCache`],
//! where `cargo doc` shows them.

use core::fmt;
use core::ptr::NonNull;
use std::collections::HashMap;
use std::vec::Vec;

use crate::arch::{CacheMaintenance, CacheRange, line_down, lines_in};
use crate::base::addr::PhysAddr;
use crate::sim::memory::SimMemory;
use crate::sync::{Mutex, MutexGuard, ThreadId, current_thread_id};

/// The simulated cache-line size, in bytes.
pub(crate) const LINE: usize = 64;

/// The cache state of non-coherent RAM: memory and the last clean values
/// (behind one lock, the *shadow*), and each thread's issued, not yet
/// completed operations.
pub(super) struct CacheModel {
    shadow: Mutex<Shadow>,
    queues: Mutex<HashMap<ThreadId, Vec<Pending>>>,
}

/// Memory as the device sees it, and per byte the CPU's value when its line
/// was last clean. Both are as long as the RAM block and indexed like it.
pub(super) struct Shadow {
    ram: Vec<u8>,
    snap: Vec<u8>,
}

/// An issued, not yet completed operation.
enum Pending {
    /// Write back the dirty lines of the `data.len()` bytes at `off`, whose
    /// CPU view was `data` when the clean was issued.
    Clean { off: usize, data: Vec<u8> },
    /// Drop the lines of the `len` bytes at `off` (edge lines cleaned
    /// first), writing the CPU's view through `cpu`, which the issuer
    /// promised valid for writes and unused until the completion.
    Invalidate {
        cpu: NonNull<u8>,
        off: usize,
        len: usize,
    },
}

/// The pieces `[start, end)` of `[off, off + len)`, one per cache line.
fn segments(off: usize, len: usize) -> impl Iterator<Item = (usize, usize)> {
    let end = off + len;
    let mut at = off;
    core::iter::from_fn(move || {
        (at < end).then(|| {
            let seg = (at, (line_down(at, LINE) + LINE).min(end));
            at = seg.1;
            seg
        })
    })
}

impl CacheModel {
    /// A cache over `size` bytes of zeroed, clean memory.
    pub(super) fn new(size: usize) -> Self {
        Self {
            shadow: Mutex::new(Shadow {
                ram: std::vec![0; size],
                snap: std::vec![0; size],
            }),
            queues: Mutex::new(HashMap::new()),
        }
    }

    /// Locks memory and the last clean values. Every update leaves them
    /// consistent byte by byte, so poisoning is ignored.
    pub(super) fn shadow(&self) -> MutexGuard<'_, Shadow> {
        self.shadow.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn queues(&self) -> MutexGuard<'_, HashMap<ThreadId, Vec<Pending>>> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, op: Pending) {
        self.queues()
            .entry(current_thread_id())
            .or_default()
            .push(op);
    }

    /// Applies, in order, everything the calling thread has issued.
    fn complete(&self) {
        let Some(ops) = self.queues().remove(&current_thread_id()) else {
            return;
        };
        let mut shadow = self.shadow();
        // Ranges invalidated so far in this batch: a clean issued after an
        // invalidate read the CPU's view before the invalidate replaced it,
        // and the CPU cannot have written those bytes since (the
        // invalidate's caller promised not to touch them), so the clean
        // finds them clean.
        let mut invalidated = Vec::new();
        for op in ops {
            match op {
                Pending::Clean { off, data } => shadow.clean(off, &data, &invalidated),
                Pending::Invalidate { cpu, off, len } => {
                    // SAFETY: queued by `SimCache::invalidate`, whose caller
                    // promised that `cpu` is valid for writes of `len` bytes
                    // (at `off` in the block, checked there) and that neither
                    // a reference nor another thread touches them until this
                    // completion returns.
                    unsafe { shadow.invalidate(cpu, off, len) };
                    invalidated.push((off, off + len));
                }
            }
        }
    }
}

impl Shadow {
    /// A fresh allocation: zeroes in memory, clean.
    pub(super) fn zero(&mut self, off: usize, len: usize) {
        self.ram[off..off + len].fill(0);
        self.snap[off..off + len].fill(0);
    }

    /// A device read of memory.
    pub(super) fn read_ram(&self, off: usize, out: &mut [u8]) {
        out.copy_from_slice(&self.ram[off..off + out.len()]);
    }

    /// A device write to memory.
    pub(super) fn write_ram(&mut self, off: usize, data: &[u8]) {
        self.ram[off..off + data.len()].copy_from_slice(data);
    }

    /// Writes back each line of `data` (the CPU's view of the bytes at
    /// `off`) that holds a dirty byte, skipping bytes inside `skip`.
    fn clean(&mut self, off: usize, data: &[u8], skip: &[(usize, usize)]) {
        let live = |i: usize| !skip.iter().any(|&(s, e)| s <= i && i < e);
        for (s, e) in segments(off, data.len()) {
            let dirty = (s..e).any(|i| live(i) && data[i - off] != self.snap[i]);
            if dirty {
                for i in (s..e).filter(|&i| live(i)) {
                    self.ram[i] = data[i - off];
                    self.snap[i] = data[i - off];
                }
            }
        }
    }

    /// Writes back the line piece `[s, e)` if it is dirty, reading the CPU's
    /// view through `cpu`; returns whether it was.
    ///
    /// # Safety
    ///
    /// `cpu` is valid for reads of `e - s <= LINE` bytes, which are the
    /// bytes at `s` in the block, and nothing writes them meanwhile.
    unsafe fn write_back(&mut self, cpu: NonNull<u8>, s: usize, e: usize) -> bool {
        let n = e - s;
        let mut line = [0u8; LINE];
        // SAFETY: valid for reads of `n` bytes (caller); `line` is a local
        // of at least `n` bytes.
        unsafe { core::ptr::copy_nonoverlapping(cpu.as_ptr(), line.as_mut_ptr(), n) };
        let dirty = line[..n] != self.snap[s..e];
        if dirty {
            self.ram[s..e].copy_from_slice(&line[..n]);
            self.snap[s..e].copy_from_slice(&line[..n]);
        }
        dirty
    }

    /// Drops the lines of the `len` bytes at `off`, cleaning the edge lines
    /// first: the CPU's view (written through `cpu`) and the last clean
    /// values become memory.
    ///
    /// # Safety
    ///
    /// `cpu` is valid for reads and writes of `len` bytes, which are the
    /// bytes at `off` in the block, and nothing else accesses them
    /// meanwhile.
    unsafe fn invalidate(&mut self, cpu: NonNull<u8>, off: usize, len: usize) {
        for (s, e) in segments(off, len) {
            // SAFETY: `s - off < len`: inside the range (caller).
            let at = unsafe { cpu.add(s - off) };
            if e - s < LINE {
                // SAFETY: the piece is inside the range, valid and unshared
                // (caller).
                unsafe { self.write_back(at, s, e) };
            }
            // SAFETY: `at` is valid for writes of the `e - s` bytes of the
            // piece, inside the range, which nothing else accesses (caller);
            // `ram` is a distinct allocation.
            unsafe { core::ptr::copy_nonoverlapping(self.ram[s..e].as_ptr(), at.as_ptr(), e - s) };
            let (ram, snap) = (&self.ram, &mut self.snap);
            snap[s..e].copy_from_slice(&ram[s..e]);
        }
    }

    /// Writes back every dirty line of the `len` bytes at `off`, reading the
    /// CPU's view through `cpu`; returns how many lines were dirty.
    ///
    /// # Safety
    ///
    /// `cpu` is valid for reads of `len` bytes, which are the bytes at `off`
    /// in the block, and nothing writes them meanwhile.
    pub(super) unsafe fn evict(&mut self, cpu: NonNull<u8>, off: usize, len: usize) -> usize {
        segments(off, len)
            .filter(|&(s, e)| {
                // SAFETY: the piece is inside the range (caller).
                unsafe { self.write_back(cpu.add(s - off), s, e) }
            })
            .count()
    }
}

/// A simulated write-back CPU cache that devices do not snoop, so that a
/// missing or wrong cache-maintenance step makes bytes come out wrong: the
/// [`CacheMaintenance`] of non-coherent simulated RAM.
///
/// Made by [`SimMemory::cache`]; cloning shares the same cache. Ranges
/// outside the RAM, and shared uncached allocations (a coherent
/// allocation's memory once shared), are not cached by it, and are ignored.
///
/// # Example
///
/// ```
/// use dmacap::backend::noncoherent::DirectNonCoherent;
/// use dmacap::sim::SimPlatform;
/// use dmacap::DeviceConfig;
///
/// let sim = SimPlatform::noncoherent(1 << 16);
/// let mem = sim.memory().clone();
/// let cache = mem.cache().unwrap();
/// // The device `SimPlatform::noncoherent_device` returns, by hand.
/// let dev = dmacap::Device::new(DirectNonCoherent::new(mem.clone(), cache), DeviceConfig::new());
/// let mut tx = mem.alloc_slice_aligned::<u8>(64, 64).unwrap();
/// tx.fill(0x5a);
/// let tx = dev.map_to_device(tx).unwrap(); // cleans the line
/// let mut seen = [0u8; 64];
/// sim.device(&dev).read(tx.dma_addr(), &mut seen).unwrap();
/// assert_eq!(seen, [0x5a; 64]);
/// # // SAFETY: the simulated read has completed.
/// # drop(unsafe { tx.unmap() });
/// ```
///
/// # The model
///
/// Non-coherent RAM ([`SimMemory::noncoherent`]) keeps three byte arrays of
/// the RAM's size, indexed by offset:
///
/// - **the CPU's view**: the RAM block itself, where [`SimBuffer`]s live.
///   Whatever Rust references into a buffer read and write is the
///   contents of the CPU's cache. Every line counts as cached all the time.
/// - **memory**: what a device reads and writes
///   ([`read_phys`](SimMemory::read_phys), [`write_phys`](SimMemory::write_phys),
///   hence [`SimDevice`](super::SimDevice)).
/// - **the last clean value**: per byte, what the CPU's line held when it
///   was last known clean (written back, or filled from memory). CPU writes
///   through references cannot be intercepted, so a byte is *dirty* when
///   the CPU's view differs from it.
///
/// The lines are 64 bytes (`Granule = U64`).
/// [`clean`](CacheMaintenance::clean) and
/// [`invalidate`](CacheMaintenance::invalidate) only queue their operation
/// for the calling thread; [`complete`](CacheMaintenance::complete) applies
/// the thread's queue in order. Before that nothing is visible, so a
/// missing barrier shows as clearly as a missing operation:
///
/// - **clean**: every line holding a dirty byte is written back (memory
///   and the last clean value become the CPU's view); clean lines are left
///   alone, even when memory has changed under them.
/// - **invalidate**: every line the range covers entirely is dropped: the
///   CPU's view and the last clean value become memory, and dirty data is
///   lost (as `dc ivac` may lose it). A line the range covers only in part
///   (an *edge* line) is cleaned first, then dropped.
/// - **eviction**: a real cache writes dirty lines back whenever it likes.
///   [`SimMemory::evict_dirty`] does it on demand for every line of memory
///   handed to a device. After correct maintenance there are none; after a
///   missing clean before a `FromDevice` transfer, the eviction writes the
///   CPU's stale data over what the device wrote.
///
/// What each mistake looks like:
///
/// | missing step | what goes wrong |
/// |---|---|
/// | clean at map / `sync_for_device` | the device reads old memory (`ToDevice`, `Bidirectional`); an eviction overwrites the device's data (`FromDevice`) |
/// | invalidate at `sync_for_cpu` | the CPU reads its stale view, not what the device wrote |
/// | `complete` | both of the above: nothing queued ever happens |
///
/// # Lines, bytes, and what the model cannot see
///
/// The simulator must not touch a byte that a live Rust reference may be
/// using, so an operation on a range `r` reads and writes the CPU's view
/// only inside `r`, through `r.cpu` (the caller's own pointer, with its
/// provenance), never the rest of a line `r` shares with something else.
/// Within `r` the operations are line-granular: the part of each line
/// inside `r` is written back whole if any byte of it is dirty, and
/// dropped whole. For a range aligned to lines at both ends that is
/// exactly a cache's behaviour.
///
/// It is not for an edge line, whose bytes outside `r` belong to a
/// neighbour: on hardware, a neighbour's dirty bytes make the whole line
/// dirty, and its write-back (at an edge clean-and-invalidate or at any
/// eviction) also writes the CPU's stale copy of the bytes inside `r` over
/// what the device put there. The model cannot see the neighbour's bytes,
/// so it does not reproduce that corruption. dmacap rules the case out
/// instead: on a backend with a 64-byte granule, typed buffers must be
/// [`LineAligned`](crate::base::buffer::LineAligned) and byte buffers that share
/// a line are refused at map time
/// ([`SharesCacheLine`](crate::MapErrorKind::SharesCacheLine)), so the
/// only partial lines the cache is handed are those of partial syncs
/// inside one buffer, where the model is exact.
///
/// Other limits, each of which can only hide a bug, never invent one:
///
/// - Dirtiness is found by comparison: a CPU write of the very value the
///   line held when it was last clean is not seen as dirty. It matters
///   only if memory changed under a clean line that the CPU then wrote
///   without invalidating it first, which takes a device writing a buffer
///   it should only read, or a missing invalidate.
/// - The cache never drops or refetches a line by itself (no capacity
///   misses, no prefetch): a stale line stays stale until invalidated, the
///   worst case for a missing invalidate; and dirty lines are evicted only
///   by [`SimMemory::evict_dirty`].
/// - One [`SimMemory`] is one machine: `complete` finishes what the calling
///   thread issued through any `SimCache` of the same RAM, not of another.
///
/// # When bytes are touched, and what that relies on
///
/// `clean` reads the CPU's view of its range when it is *issued* (the
/// contents it will write back at `complete`); `invalidate` writes it when
/// the barrier *completes*. Every access happens with the model's lock
/// held, so two threads' maintenance never races in the CPU's view.
///
/// The invalidate's write is what [`CacheMaintenance::invalidate`]'s
/// contract allows. The clean's read goes beyond
/// [`CacheMaintenance::clean`]'s preconditions (a real clean reads nothing
/// the program can observe): no other thread may write the range during
/// the call. dmacap's backends clean only buffers no CPU reference points
/// to (point 4 of [`Backend`](crate::backend::Backend)'s contract). Reading
/// at issue time rather than at `complete` keeps a clean that is never
/// completed (or completed late, after the buffer was freed and reused)
/// harmless: it holds a copy, not a pointer.
///
/// [`SimBuffer`]: super::SimBuffer
#[derive(Clone)]
pub struct SimCache {
    mem: SimMemory,
}

impl fmt::Debug for SimCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimCache")
            .field("line_size", &LINE)
            .field("memory", &self.mem)
            .finish()
    }
}

impl SimCache {
    /// The line size, in bytes: 64, like the granule.
    pub const LINE_SIZE: usize = LINE;

    /// The cache of `mem`, which is non-coherent.
    pub(super) fn new(mem: SimMemory) -> Self {
        debug_assert!(!mem.is_coherent(), "a SimCache needs non-coherent RAM");
        Self { mem }
    }

    fn model(&self) -> &CacheModel {
        self.mem
            .model()
            .expect("a SimCache is only made for non-coherent RAM")
    }

    /// The RAM it caches.
    pub fn memory(&self) -> &SimMemory {
        &self.mem
    }

    /// How many operations the calling thread has issued and not yet
    /// completed.
    pub fn pending(&self) -> usize {
        self.model()
            .queues()
            .get(&current_thread_id())
            .map_or(0, Vec::len)
    }

    /// The offset in the block of the range, if it is simulated RAM.
    ///
    /// # Panics
    ///
    /// If `r.phys` is not the physical address of `r.cpu` (a broken caller).
    fn offset_of(&self, r: &CacheRange) -> Option<usize> {
        let off = self.mem.cpu_offset(r.cpu, r.len)?;
        let phys = PhysAddr::new(self.mem.phys_base().as_u64() + off as u64);
        assert_eq!(
            r.phys,
            phys,
            "cache maintenance of {:#x}: physical address does not match the CPU address",
            r.cpu_addr()
        );
        // An uncached allocation has no line in the cache: nothing to do.
        (!self.mem.is_uncached(off, r.len)).then_some(off)
    }
}

// SAFETY: for a range of this RAM (others are not cached by it):
// (1) `clean` copies the CPU's view of `r` as it is at the call, so every
// earlier CPU write is in the copy, and `complete` writes back every line
// of it holding a byte changed since the line was last clean; a byte not
// changed already equals memory unless memory changed under a clean line,
// which the model does not track (see the type's documentation; no
// soundness property of dmacap depends on it). (2) `complete` sets the
// CPU's view of `r` to memory as it is then, later than the issue, and no
// older line survives in the model. (3) and (4) Bytes outside `r` are never
// read or written: their dirty values stay in the CPU's view, still dirty,
// for a later clean or eviction; an edge line's bytes inside `r` are
// written back, if dirty, before being dropped; `clean` writes only memory
// and the last clean values, never the CPU's view. (5) The line size is
// always 64, equal to the granule. (6) `complete` applies every operation
// the calling thread issued through any `SimCache` of this RAM (one machine).
// The CPU's view is read and written only through the caller's pointer,
// with the model's lock held: at the `clean` call (which must not race
// with writes, see the type's documentation) and at the `complete` that
// follows an `invalidate`, when its caller promised the bytes unused.
unsafe impl CacheMaintenance for SimCache {
    type Granule = typenum::U64;

    #[inline]
    fn line_size(&self) -> usize {
        LINE
    }

    unsafe fn clean(&self, r: CacheRange) -> usize {
        let lines = lines_in(r.cpu_addr(), r.len, LINE);
        if let Some(off) = self.offset_of(&r) {
            let mut data = std::vec![0u8; r.len];
            {
                let _serialised = self.model().shadow();
                // SAFETY: the `r.len` bytes at `r.cpu` are mapped RAM of this
                // block (checked above) that nothing writes during the call
                // (the caller; see the type's documentation); `data` is a
                // distinct allocation of `r.len` bytes.
                unsafe { core::ptr::copy_nonoverlapping(r.cpu.as_ptr(), data.as_mut_ptr(), r.len) };
            }
            self.model().push(Pending::Clean { off, data });
        }
        lines
    }

    unsafe fn invalidate(&self, r: CacheRange) -> usize {
        let lines = lines_in(r.cpu_addr(), r.len, LINE);
        if let Some(off) = self.offset_of(&r) {
            // Only recorded: the bytes are written by `complete`, until
            // whose return the caller keeps them unused.
            self.model().push(Pending::Invalidate {
                cpu: r.cpu,
                off,
                len: r.len,
            });
        }
        lines
    }

    fn complete(&self) {
        self.model().complete();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::platform::{DeviceId, PhysLookup, Side};
    use crate::sim::SimBuffer;

    const BASE: u64 = 0x1_0000;

    /// The one device these tests hand memory to.
    fn dev() -> DeviceId {
        static ID: std::sync::OnceLock<DeviceId> = std::sync::OnceLock::new();
        *ID.get_or_init(DeviceId::fresh)
    }

    /// Non-coherent RAM, its cache, and a 256-byte line-aligned buffer.
    fn setup() -> (SimMemory, SimCache, SimBuffer<[u8]>) {
        let mem = SimMemory::noncoherent(PhysAddr::new(BASE), 4096);
        let cache = mem.cache().unwrap();
        let buf = mem.alloc_slice_aligned::<u8>(256, 64).unwrap();
        (mem, cache, buf)
    }

    /// The range of `len` bytes at `at` in `buf`.
    fn range(mem: &SimMemory, buf: &mut SimBuffer<[u8]>, at: usize, len: usize) -> CacheRange {
        let phys = mem.phys_of_buffer(buf);
        let cpu = NonNull::from(&mut **buf).cast::<u8>();
        // SAFETY: `at` is inside the buffer (the tests' arguments).
        let cpu = unsafe { cpu.add(at) };
        CacheRange::new(cpu, PhysAddr::new(phys.as_u64() + at as u64), len)
    }

    /// Hands the whole buffer to the device, runs `f`, takes it back.
    fn as_device<R>(mem: &SimMemory, buf: &mut SimBuffer<[u8]>, f: impl FnOnce() -> R) -> R {
        let len = buf.len();
        let ptr = NonNull::from(&mut **buf).cast::<u8>();
        // SAFETY: `buf` is not used until the grant is taken back below.
        unsafe { mem.ownership_changed(ptr, len, Side::Device, dev()) };
        let out = f();
        // SAFETY: granted above.
        unsafe { mem.ownership_changed(ptr, len, Side::Cpu, dev()) };
        out
    }

    fn device_reads(mem: &SimMemory, buf: &mut SimBuffer<[u8]>) -> Vec<u8> {
        let phys = mem.phys_of_buffer(buf);
        let mut out = std::vec![0u8; buf.len()];
        as_device(mem, buf, || mem.read_phys(dev(), phys, &mut out).unwrap());
        out
    }

    fn device_writes(mem: &SimMemory, buf: &mut SimBuffer<[u8]>, data: &[u8]) {
        let phys = mem.phys_of_buffer(buf);
        as_device(mem, buf, || mem.write_phys(dev(), phys, data).unwrap());
    }

    #[test]
    fn counts_lines_like_lines_in() {
        let (mem, cache, mut buf) = setup();
        assert_eq!(cache.line_size(), 64);
        let r = range(&mem, &mut buf, 0, 256);
        // SAFETY: the buffer is live RAM of `mem` and unused meanwhile.
        assert_eq!(unsafe { cache.clean(r) }, 4);
        let r = range(&mem, &mut buf, 16, 100);
        // SAFETY: as above.
        assert_eq!(unsafe { cache.invalidate(r) }, 2);
        assert_eq!(cache.pending(), 2);
        cache.complete();
        assert_eq!(cache.pending(), 0);
    }

    #[test]
    fn cpu_write_reaches_the_device_only_after_clean_and_complete() {
        let (mem, cache, mut buf) = setup();
        buf.fill(0xaa);
        assert_eq!(device_reads(&mem, &mut buf), [0; 256]);

        let r = range(&mem, &mut buf, 0, 256);
        // SAFETY: live RAM of `mem`, nothing writes it during the call.
        unsafe { cache.clean(r) };
        // Issued, not completed: memory is unchanged.
        assert_eq!(device_reads(&mem, &mut buf), [0; 256]);
        cache.complete();
        assert_eq!(device_reads(&mem, &mut buf), [0xaa; 256]);
        // The CPU's own view never changed.
        assert_eq!(&buf[..], &[0xaa; 256]);
    }

    #[test]
    fn completion_is_per_thread() {
        let (mem, cache, mut buf) = setup();
        buf.fill(3);
        let r = range(&mem, &mut buf, 0, 256);
        // SAFETY: live RAM of `mem`, nothing writes it during the call.
        unsafe { cache.clean(r) };
        let other = cache.clone();
        std::thread::spawn(move || {
            assert_eq!(other.pending(), 0);
            other.complete();
        })
        .join()
        .unwrap();
        assert_eq!(device_reads(&mem, &mut buf), [0; 256]);
        cache.complete();
        assert_eq!(device_reads(&mem, &mut buf), [3; 256]);
    }

    #[test]
    fn device_write_reaches_the_cpu_only_after_invalidate_and_complete() {
        let (mem, cache, mut buf) = setup();
        device_writes(&mem, &mut buf, &[0x55; 256]);
        // The CPU still sees its (clean, stale) lines.
        assert_eq!(&buf[..], &[0; 256]);

        let r = range(&mem, &mut buf, 0, 256);
        // SAFETY: live RAM of `mem`; `buf` is not touched until `complete`
        // returns.
        unsafe { cache.invalidate(r) };
        cache.complete();
        assert_eq!(&buf[..], &[0x55; 256]);
    }

    #[test]
    fn invalidate_without_complete_changes_nothing() {
        let (mem, cache, mut buf) = setup();
        device_writes(&mem, &mut buf, &[0x55; 256]);
        let r = range(&mem, &mut buf, 0, 256);
        // SAFETY: live RAM of `mem`; no reference to `buf` exists until
        // `complete` returns.
        unsafe { cache.invalidate(r) };
        assert_eq!(cache.pending(), 1);
        let mut seen = [0u8; 256];
        // SAFETY: peeking before `complete` breaks the letter of the
        // invalidate's contract (on hardware the lines could change at any
        // moment), but this simulator writes them only in `complete`, on
        // this thread: nothing writes them during this read, which goes
        // through the range's own pointer and makes no reference.
        unsafe { core::ptr::copy_nonoverlapping(r.cpu.as_ptr(), seen.as_mut_ptr(), 256) };
        assert_eq!(seen, [0; 256]);
        cache.complete();
        assert_eq!(&buf[..], &[0x55; 256]);
    }

    #[test]
    fn invalidate_of_whole_lines_discards_dirty_data() {
        let (mem, cache, mut buf) = setup();
        device_writes(&mem, &mut buf, &[0x55; 256]);
        buf[64..128].fill(0xcc); // dirty, never cleaned
        let r = range(&mem, &mut buf, 64, 64);
        // SAFETY: as above.
        unsafe { cache.invalidate(r) };
        cache.complete();
        assert_eq!(&buf[64..128], &[0x55; 64]);
        assert_eq!(device_reads(&mem, &mut buf), [0x55; 256]);
    }

    #[test]
    fn partial_invalidate_keeps_dirty_bytes_outside_the_range() {
        let (mem, cache, mut buf) = setup();
        // Memory: 0x55 everywhere. CPU: line 0 all dirty with 0xcc, and
        // lines 1 to 3 clean (stale zeroes).
        device_writes(&mem, &mut buf, &[0x55; 256]);
        buf[..64].fill(0xcc);

        // Invalidate [16, 160): line 0 is an edge (bytes 16..64 inside),
        // line 1 whole, line 2 an edge (128..160 inside), line 3 outside.
        let r = range(&mem, &mut buf, 16, 144);
        // SAFETY: live RAM of `mem`; `buf` is not touched until `complete`.
        unsafe { cache.invalidate(r) };
        cache.complete();

        let mut want = [0u8; 256];
        // Line 0: outside the range untouched (still dirty), inside it
        // cleaned, then dropped: the CPU's data, now also in memory.
        want[..64].fill(0xcc);
        // Line 1 (whole) and the part of line 2 inside the range: memory.
        want[64..160].fill(0x55);
        // The rest of line 2 and line 3: stale zeroes, untouched.
        assert_eq!(&buf[..], &want[..]);

        let mut mem_want = [0x55u8; 256];
        mem_want[16..64].fill(0xcc); // written back by the edge clean
        assert_eq!(device_reads(&mem, &mut buf), mem_want);

        // The bytes outside the range are still dirty: a clean of the whole
        // buffer writes them back (and the rest of line 0 with them).
        let r = range(&mem, &mut buf, 0, 256);
        // SAFETY: live RAM of `mem`, nothing writes it during the call.
        unsafe { cache.clean(r) };
        cache.complete();
        let mut after = [0x55u8; 256];
        after[..64].fill(0xcc);
        assert_eq!(device_reads(&mem, &mut buf), after);
    }

    #[test]
    fn clean_after_invalidate_in_one_batch_writes_nothing_back() {
        let (mem, cache, mut buf) = setup();
        device_writes(&mem, &mut buf, &[0x55; 256]);
        buf[..64].fill(0xcc);
        let r = range(&mem, &mut buf, 0, 64);
        // SAFETY: live RAM of `mem`; `buf` is not touched until `complete`.
        unsafe { cache.invalidate(r) };
        // SAFETY: as above; this reads the (not yet invalidated) view.
        unsafe { cache.clean(r) };
        cache.complete();
        // The invalidate dropped the dirty line; the clean found it clean.
        assert_eq!(&buf[..64], &[0x55; 64]);
        assert_eq!(device_reads(&mem, &mut buf), [0x55; 256]);
    }

    #[test]
    fn eviction_exposes_a_missing_clean() {
        let (mem, cache, mut buf) = setup();
        buf.fill(0xee); // the CPU dirties the receive buffer
        let phys = mem.phys_of_buffer(&buf);
        let len = buf.len();
        let ptr = NonNull::from(&mut *buf).cast::<u8>();
        // No clean: the buffer goes to the device with dirty lines.
        // SAFETY: `buf` is not used until taken back below.
        unsafe { mem.ownership_changed(ptr, len, Side::Device, dev()) };
        mem.write_phys(dev(), phys, &[0x11; 256]).unwrap();
        // The cache evicts the dirty lines over the device's data.
        assert_eq!(mem.evict_dirty(), 4);
        assert_eq!(mem.evict_dirty(), 0);
        let mut seen = [0u8; 256];
        mem.read_phys(dev(), phys, &mut seen).unwrap();
        assert_eq!(seen, [0xee; 256]);
        // SAFETY: granted above.
        unsafe { mem.ownership_changed(ptr, len, Side::Cpu, dev()) };
        let r = range(&mem, &mut buf, 0, 256);
        // SAFETY: live RAM of `mem`; `buf` is not touched until `complete`.
        unsafe { cache.invalidate(r) };
        cache.complete();
        assert_eq!(&buf[..], &[0xee; 256]); // not the device's 0x11
    }

    #[test]
    fn eviction_after_a_clean_changes_nothing() {
        let (mem, cache, mut buf) = setup();
        buf.fill(0xee);
        let r = range(&mem, &mut buf, 0, 256);
        // SAFETY: live RAM of `mem`, nothing writes it during the call.
        unsafe { cache.clean(r) };
        cache.complete();
        let phys = mem.phys_of_buffer(&buf);
        let ptr = NonNull::from(&mut *buf).cast::<u8>();
        // SAFETY: `buf` is not used until taken back below.
        unsafe { mem.ownership_changed(ptr, 256, Side::Device, dev()) };
        mem.write_phys(dev(), phys, &[0x11; 256]).unwrap();
        assert_eq!(mem.evict_dirty(), 0);
        // SAFETY: granted above.
        unsafe { mem.ownership_changed(ptr, 256, Side::Cpu, dev()) };
        let r = range(&mem, &mut buf, 0, 256);
        // SAFETY: live RAM of `mem`; `buf` is not touched until `complete`.
        unsafe { cache.invalidate(r) };
        cache.complete();
        assert_eq!(&buf[..], &[0x11; 256]);
    }

    #[test]
    fn eviction_leaves_cpu_owned_memory_alone() {
        let (mem, _cache, mut buf) = setup();
        buf.fill(0xee);
        assert_eq!(mem.evict_dirty(), 0);
        assert_eq!(device_reads(&mem, &mut buf), [0; 256]);
    }

    #[test]
    fn allocation_is_zeroed_and_clean_everywhere() {
        let (mem, cache, mut buf) = setup();
        buf.fill(0xab);
        let r = range(&mem, &mut buf, 0, 256);
        // SAFETY: live RAM of `mem`, nothing writes it during the call.
        unsafe { cache.clean(r) };
        cache.complete();
        let phys = mem.phys_of_buffer(&buf);
        drop(buf);
        let mut again = mem.alloc_slice_aligned::<u8>(256, 64).unwrap();
        assert_eq!(mem.phys_of_buffer(&again), phys);
        assert_eq!(&again[..], &[0; 256]);
        assert_eq!(device_reads(&mem, &mut again), [0; 256]);
        let ptr = NonNull::from(&mut *again).cast::<u8>();
        // SAFETY: `again` is not used until taken back below.
        unsafe { mem.ownership_changed(ptr, 256, Side::Device, dev()) };
        assert_eq!(mem.evict_dirty(), 0);
        // SAFETY: granted above.
        unsafe { mem.ownership_changed(ptr, 256, Side::Cpu, dev()) };
    }

    #[test]
    fn ranges_outside_the_ram_are_ignored() {
        let (_mem, cache, _buf) = setup();
        let mut other = [0u8; 128];
        let cpu = NonNull::from(&mut other).cast::<u8>();
        let r = CacheRange::new(cpu, PhysAddr::new(0), 128);
        // SAFETY: `other` is live and unused until `complete` returns.
        assert!(unsafe { cache.clean(r) } >= 2);
        // SAFETY: as above.
        unsafe { cache.invalidate(r) };
        assert_eq!(cache.pending(), 0);
        cache.complete();
        assert_eq!(other, [0; 128]);
    }

    #[test]
    #[should_panic(expected = "does not match")]
    fn a_wrong_physical_address_is_refused() {
        let (mem, cache, mut buf) = setup();
        let mut r = range(&mem, &mut buf, 0, 64);
        r.phys = PhysAddr::new(BASE + 64);
        // SAFETY: live RAM of `mem`, nothing writes it during the call.
        unsafe { cache.clean(r) };
    }

    #[test]
    fn coherent_ram_has_no_cache() {
        let mem = SimMemory::with_base(PhysAddr::new(BASE), 4096);
        assert!(mem.is_coherent());
        assert!(mem.cache().is_none());
        assert_eq!(mem.evict_dirty(), 0);
    }

    #[test]
    #[should_panic(expected = "64-byte cache line")]
    fn noncoherent_ram_starts_on_a_line() {
        SimMemory::noncoherent(PhysAddr::new(BASE + 8), 4096);
    }
}
