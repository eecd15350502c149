//! The `virtio-drivers` adapter (feature `virtio`): a
//! [`virtio_drivers::Hal`] over a dmacap [`Device`], so the real virtio
//! drivers of that crate (`VirtIOBlk`, `VirtIONet`, ...) do their DMA
//! through dmacap's backends: direct, non-coherent, IOMMU, bounce.
//!
//! # Reaching the device
//!
//! `Hal`'s methods are associated functions: they have no `self`. So each
//! `Hal` type stands for one device, held in a static slot that the type
//! owns. [`virtio_hal!`](crate::virtio_hal) declares the type, its slot
//! and the `Hal` implementation in one line; installing the device is one
//! more:
//!
//! ```
//! use dmacap::backend::direct::DirectCoherent;
//! use dmacap::sim::{SimMemory, SimPlatform};
//! use dmacap::virtio::virtio_drivers::{BufferDirection, Hal};
//!
//! dmacap::virtio_hal!(
//!     /// The HAL of the simulated disk.
//!     pub DiskHal, DirectCoherent<SimMemory>
//! );
//!
//! let sim = SimPlatform::new(1 << 20);
//! let dev = Box::leak(Box::new(sim.coherent_device()));
//! // SAFETY: the device never writes a buffer it was given to read (see
//! // `HalSlot::install`).
//! unsafe { DiskHal::install(dev) };
//!
//! // virtio-drivers now allocates its rings and shares its buffers here:
//! let (dma, ptr) = DiskHal::dma_alloc(1, BufferDirection::Both);
//! assert_ne!(dma, 0);
//! assert_eq!(DiskHal::state().live_allocations(), 1);
//! // SAFETY: allocated just above, the device never saw it.
//! assert_eq!(unsafe { DiskHal::dma_dealloc(dma, ptr, 1) }, 0);
//! assert_eq!(DiskHal::state().live_allocations(), 0);
//! ```
//!
//! The device must be `'static` (a static, or leaked as above): the slot
//! keeps its live handles, which borrow it, for as long as the program
//! runs. Using the `Hal` before [`install`](HalSlot::install) panics, naming
//! the type.
//!
//! # What each `Hal` method does
//!
//! - `dma_alloc(pages)`: a coherent allocation
//!   ([`Device::alloc_coherent_slice`], then
//!   [`share`](crate::CoherentBox::share)), page-aligned and zeroed, kept
//!   by its DMA address. An allocation dmacap refuses returns DMA address
//!   `0`, which `virtio-drivers` reports as `Error::DmaError`.
//! - `dma_dealloc(paddr, ..)`: finds the allocation by its DMA address and
//!   frees it ([`Coherent::free`]).
//! - `share(buffer, dir)`: maps the buffer ([`RawBuffer`], direction from
//!   `BufferDirection`) and keeps the device-owned handle by its DMA
//!   address ([`ByDmaAddr`]).
//! - `unshare(paddr, buffer, dir)`: takes the handle back by that address
//!   and unmaps it: the handle carries its IOVA, physical address, bounce
//!   slot and length, so nothing is translated back (no IOMMU page walk,
//!   no lookup of the slot's original).
//!
//! # When dmacap refuses to share
//!
//! `Hal::share` returns a bare address: it cannot fail. When dmacap
//! refuses the mapping (the platform has no physical address for the
//! buffer, no DMA window or the mask does not reach it on a backend that
//! does not bounce, the bounce pool or the IOVA space is exhausted, a byte
//! buffer shares a cache line on a non-coherent device, ...), the adapter
//! panics with a message naming the buffer, the direction and dmacap's
//! reason ([`MapErrorKind`](crate::MapErrorKind)'s text). Nothing was mapped
//! and nothing is held: the panic unwinds through `virtio-drivers` with
//! the device never told the address.
//!
//! When the refused buffer is not the first of a request (a descriptor
//! chain), the earlier buffers of that request were shared already and
//! **stay shared**: `virtio-drivers`' `VirtQueue::add` shares its buffers
//! one by one, before it publishes the chain, and does not unshare them
//! when a later `share` unwinds. They are counted in
//! [`live_shares`](VirtioDevice::live_shares) (not in the device's
//! `leaked()`: they are not quarantined, just never returned); their
//! memory stays mapped, which is sound because clause 2 of
//! [`install`](HalSlot::install) keeps it allocated. No device was told
//! their addresses (the chain never reached the available ring), so
//! nothing else follows.
//! A program that recovers from the panic should treat the queue as
//! broken.
//!
//! # Soundness
//!
//! `unshare` and `dma_dealloc` with an address this `Hal` did not hand out
//! (or handed out and already took back), or with a buffer, length or
//! direction other than the one shared, panic before anything changes.
//! The promises the adapter cannot check are made once, at
//! [`install`](HalSlot::install), which is therefore `unsafe`: the device
//! does not write the buffers it reads (`virtio-drivers` shares them from
//! `&[u8]`); every shared buffer stays allocated and untouched until its
//! `unshare` (which `virtio_drivers::Hal::share` itself does not promise,
//! but `VirtQueue::add` does); and `unshare` comes after the device.
#![allow(clippy::module_name_repetitions)]

use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use alloc::boxed::Box;

pub use virtio_drivers;
use virtio_drivers::BufferDirection;

use crate::api::coherent::Coherent;
use crate::api::device::Device;
use crate::api::erased::{AnyMapped, ByDmaAddr, HasDmaAddr};
use crate::api::handle::Mapped;
use crate::backend::Backend;
use crate::base::addr::DmaAddr;
use crate::base::buffer::{CacheSafe, RawBuffer, Transfer, check_at_map};
use crate::base::direction::{Bidirectional, DevOwned, Direction, FromDevice, ToDevice};
use crate::base::error::MapError;
use crate::base::platform::DmaAllocator;
use crate::sync::{Mutex, lock};

/// One page of a `dma_alloc` allocation: the unit `virtio-drivers` asks
/// for, aligned to a page as its `Hal` requires.
#[derive(zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::Immutable, zerocopy::KnownLayout)]
#[repr(C, align(4096))]
pub struct Page(pub [u8; virtio_drivers::PAGE_SIZE]);

/// How the adapter maps what `virtio-drivers` shares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HalOptions {
    /// Every buffer `virtio-drivers` shares owns the whole cache lines it
    /// touches (its allocator pads small objects to the line, as Linux's
    /// `kmalloc` does to `ARCH_DMA_MINALIGN`), so a byte buffer that is not
    /// line-aligned is mapped as it is on a non-coherent device instead of
    /// being refused (or bounced) as [`SharesCacheLine`](crate::MapErrorKind::SharesCacheLine).
    /// A virtio block request header (16 bytes) and status (1 byte) need it
    /// on a non-coherent device that does not bounce. Set it only through
    /// [`HalSlot::install_with`], whose contract covers it.
    pub whole_lines: bool,
}

impl HalOptions {
    /// The defaults: byte buffers are checked for shared cache lines.
    pub const fn new() -> Self {
        Self { whole_lines: false }
    }

    /// With [`whole_lines`](Self::whole_lines) set to `yes`.
    pub const fn whole_lines(mut self, yes: bool) -> Self {
        self.whole_lines = yes;
        self
    }
}

/// A buffer `virtio-drivers` shared: the device-owned handle, and what the
/// buffer looked like, to check `unshare`'s arguments against.
struct Shared<B: Backend + 'static> {
    handle: AnyMapped<'static, DevOwned, RawBuffer, B>,
    addr: usize,
    len: usize,
    dir: BufferDirection,
    /// Which `share` call made it (1 for the first), for the stale-share
    /// message.
    seq: usize,
}

impl<B: Backend + 'static> HasDmaAddr for Shared<B> {
    fn dma_addr(&self) -> DmaAddr {
        self.handle.dma_addr()
    }
}

/// The state behind one `Hal` type: its device, the live shared buffers
/// and coherent allocations (by DMA address), and counters.
pub struct VirtioDevice<B: Backend + Sync + 'static>
where
    B::Platform: DmaAllocator,
{
    device: &'static Device<B>,
    options: HalOptions,
    shared: Mutex<Shares<B>>,
    allocs: Mutex<ByDmaAddr<Coherent<'static, [Page], B>>>,
    /// Allocations that came back at DMA address 0, which `virtio-drivers`
    /// reads as failure: kept (never handed out, never freed) so the
    /// allocator cannot return that address again.
    at_zero: Mutex<alloc::vec::Vec<Coherent<'static, [Page], B>>>,
    refusals: AtomicUsize,
}

/// The live shares and how many were ever made, under one lock: a share
/// counts itself while it holds the lock anyway (no atomic add per
/// buffer), and the unshares are the shares no longer live.
struct Shares<B: Backend + 'static> {
    live: ByDmaAddr<Shared<B>>,
    total: usize,
}

impl<B: Backend + Sync + 'static> VirtioDevice<B>
where
    B::Platform: DmaAllocator,
{
    fn new(device: &'static Device<B>, options: HalOptions) -> Self {
        Self {
            device,
            options,
            shared: Mutex::new(Shares {
                live: ByDmaAddr::new(),
                total: 0,
            }),
            allocs: Mutex::new(ByDmaAddr::new()),
            at_zero: Mutex::new(alloc::vec::Vec::new()),
            refusals: AtomicUsize::new(0),
        }
    }

    /// The device.
    pub fn device(&self) -> &'static Device<B> {
        self.device
    }

    /// The options it was installed with.
    pub fn options(&self) -> HalOptions {
        self.options
    }

    /// Buffers shared and not yet unshared.
    pub fn live_shares(&self) -> usize {
        lock(&self.shared).live.len()
    }

    /// `dma_alloc` allocations not yet deallocated.
    pub fn live_allocations(&self) -> usize {
        lock(&self.allocs).len()
    }

    /// `share` calls that mapped a buffer, so far.
    pub fn shares(&self) -> usize {
        lock(&self.shared).total
    }

    /// `unshare` calls that took a shared buffer back, so far: the shares
    /// no longer live.
    pub fn unshares(&self) -> usize {
        let s = lock(&self.shared);
        s.total - s.live.len()
    }

    /// Allocations held back because their DMA address was 0 (which
    /// `virtio-drivers` reads as failure): never handed out, never freed,
    /// counted here instead of lost. Since the held allocation keeps address 0 taken: at most one.
    pub fn held_at_zero(&self) -> usize {
        lock(&self.at_zero).len()
    }

    /// `share` calls dmacap refused (each one panicked), so far.
    pub fn refusals(&self) -> usize {
        self.refusals.load(Ordering::Relaxed)
    }

    /// `Hal::dma_alloc`: `pages` zeroed, page-aligned pages of coherent
    /// memory shared with the device, or DMA address `0` if dmacap cannot
    /// allocate or map them.
    pub fn dma_alloc(&self, pages: usize) -> (virtio_drivers::PhysAddr, NonNull<u8>) {
        let failed = (0, NonNull::dangling());
        // DMA address 0 is `virtio-drivers`' failure value: an allocation
        // there would never be freed. Keep it (so the allocator cannot
        // return it again) and allocate once more; the second try cannot
        // be at 0, which is taken.
        for _ in 0..2 {
            let Ok(boxed) = self.device.alloc_coherent_slice::<Page>(pages) else {
                return failed;
            };
            let Ok(shared) = boxed.share() else {
                return failed;
            };
            let (dma, ptr) = (shared.dma_addr(), shared.cpu_ptr());
            if dma.as_u64() == 0 {
                lock(&self.at_zero).push(shared);
                continue;
            }
            let refused = lock(&self.allocs).insert(shared).err();
            if let Some(shared) = refused {
                // Two live allocations at one DMA address: the backend broke
                // its contract. The address never reached the device.
                // SAFETY: no device was told this allocation's address.
                unsafe { shared.free() };
                panic!("dma_alloc: DMA address {dma} is already a live allocation of this Hal");
            }
            return (dma.as_u64(), ptr);
        }
        failed
    }

    /// `Hal::dma_dealloc`: frees the allocation `dma_alloc` returned with
    /// `paddr`.
    ///
    /// # Panics
    ///
    /// If `paddr` is not a live allocation of this `Hal`, or `vaddr` and
    /// `pages` are not those `dma_alloc` returned with it (the allocation
    /// is then left as it was).
    ///
    /// # Safety
    ///
    /// The device has finished every access to the allocation (for
    /// `virtio-drivers`: the queue was unset on the transport first).
    pub unsafe fn dma_dealloc(
        &self,
        paddr: virtio_drivers::PhysAddr,
        vaddr: NonNull<u8>,
        pages: usize,
    ) -> i32 {
        let taken = lock(&self.allocs).take(DmaAddr::new(paddr));
        let Some(alloc) = taken else {
            panic!(
                "dma_dealloc of DMA address {paddr:#x}: not a live allocation of this Hal \
                 (never allocated, or deallocated already)"
            );
        };
        if alloc.cpu_ptr() != vaddr || alloc.elems() != pages {
            let (p, n) = (alloc.cpu_ptr(), alloc.elems());
            // Put back untouched: it is still live.
            let _ = lock(&self.allocs).insert(alloc);
            panic!(
                "dma_dealloc of DMA address {paddr:#x} with {vaddr:p} and {pages} pages, \
                 but it was allocated at {p:p} with {n} pages"
            );
        }
        // SAFETY: the device has finished with it (caller).
        unsafe { alloc.free() };
        0
    }

    /// Maps `raw` in direction `D` as a single-handle map does, with the
    /// cache-line check off if the installer promised whole lines.
    fn map<D: Direction>(
        &self,
        raw: RawBuffer,
    ) -> Result<Mapped<'static, D, DevOwned, RawBuffer, B>, MapError<RawBuffer>>
    where
        [u8]: Transfer<D> + CacheSafe<B::Granule>,
    {
        let check = !self.options.whole_lines && check_at_map::<[u8], B::Granule>();
        let handle =
            Mapped::<D, DevOwned, RawBuffer, B>::map_issue_with(self.device, raw, check, false, 0)?;
        handle.complete_sync();
        handle.granted();
        Ok(handle)
    }

    /// `Hal::share`: maps `buffer` for the device in `direction` and
    /// returns its DMA address.
    ///
    /// # Panics
    ///
    /// If dmacap refuses the mapping: the message names the buffer, the
    /// direction and the reason. Nothing was mapped.
    ///
    /// # Safety
    ///
    /// `buffer` is valid for reads (and, unless `direction` is
    /// `DriverToDevice`, writes) of its bytes, which nothing else accesses
    /// until `unshare` is called with the address returned; it stays
    /// allocated until then (forever if `unshare` never comes). This is how
    /// `virtio-drivers`' `VirtQueue::add` and `pop_used` use it.
    pub unsafe fn share(
        &self,
        buffer: NonNull<[u8]>,
        direction: BufferDirection,
    ) -> virtio_drivers::PhysAddr
    where
        [u8]: CacheSafe<B::Granule>,
    {
        let (addr, len) = (buffer.cast::<u8>().as_ptr() as usize, buffer.len());
        // SAFETY: the caller's promise is `RawBuffer::new`'s: valid,
        // untouched by anyone else and not freed until unshared. For
        // `DriverToDevice` the pointer may be read-only: the installer
        // promised the device never writes such a buffer, and dmacap never
        // writes one (no CPU sync, no bounce copy back for `ToDevice`).
        let raw = unsafe { RawBuffer::new(buffer) };
        let mapped = match direction {
            BufferDirection::DriverToDevice => self.map::<ToDevice>(raw).map(AnyMapped::from),
            BufferDirection::DeviceToDriver => self.map::<FromDevice>(raw).map(AnyMapped::from),
            BufferDirection::Both => self.map::<Bidirectional>(raw).map(AnyMapped::from),
        };
        let handle = match mapped {
            Ok(h) => h,
            Err(e) => {
                self.refusals.fetch_add(1, Ordering::Relaxed);
                refused(addr, len, direction, &e)
            }
        };
        let dma = handle.dma_addr();
        let clash = {
            let mut s = lock(&self.shared);
            let entry = Shared {
                handle,
                addr,
                len,
                dir: direction,
                seq: s.total + 1,
            };
            match s.live.insert(entry) {
                Ok(_) => {
                    s.total += 1;
                    None
                }
                Err(entry) => {
                    // What the earlier share was, for the message; put back.
                    let was = s.live.take(dma).map(|e| {
                        let w = (e.addr, e.len, e.dir, e.seq);
                        let _ = s.live.insert(e);
                        w
                    });
                    Some((entry, was))
                }
            }
        };
        if let Some((entry, was)) = clash {
            // SAFETY: the device was never told this address.
            let _buffer: RawBuffer = unsafe { entry.handle.unmap() };
            stale_share(dma, addr, len, direction, was);
        }
        dma.as_u64()
    }

    /// `Hal::unshare`: takes back the buffer `share` mapped at `paddr`,
    /// copying what the device wrote into it (a bounce copy back, an
    /// invalidate) through `buffer`. The handle is found by `paddr` in a
    /// table: no translation back from the DMA address.
    ///
    /// # Panics
    ///
    /// If `paddr` is not a live share of this `Hal`, or `buffer` or
    /// `direction` differ from what was shared (the share is then left as
    /// it was).
    ///
    /// # Safety
    ///
    /// The device has finished every access to the buffer and the driver
    /// observed it (for `virtio-drivers`: the chain came back in the used
    /// ring); `buffer` is valid for writes of its bytes, which nothing else
    /// accesses during the call.
    pub unsafe fn unshare(
        &self,
        paddr: virtio_drivers::PhysAddr,
        buffer: NonNull<[u8]>,
        direction: BufferDirection,
    ) {
        let taken = lock(&self.shared).live.take(DmaAddr::new(paddr));
        let Some(mut entry) = taken else {
            panic!(
                "unshare of DMA address {paddr:#x}: not a live share of this Hal \
                 (never shared, or unshared already)"
            );
        };
        let (addr, len) = (buffer.cast::<u8>().as_ptr() as usize, buffer.len());
        if (entry.addr, entry.len, entry.dir) != (addr, len, direction) {
            let was = (entry.addr, entry.len, entry.dir);
            let _ = lock(&self.shared).live.insert(entry);
            panic!(
                "unshare of DMA address {paddr:#x} with {len} bytes at {addr:#x} ({direction:?}), \
                 but it shared {} bytes at {:#x} ({:?})",
                was.1, was.0, was.2
            );
        }
        // SAFETY: the same address and length as the shared buffer (checked
        // above), valid for writes now (caller): the copy back goes through
        // the pointer the caller vouches for today.
        unsafe { rebase(&mut entry.handle, buffer) };
        // SAFETY: the device has finished and the driver observed it
        // (caller).
        let _buffer: RawBuffer = unsafe { entry.handle.unmap() };
    }
}

/// Points the handle at `ptr`.
///
/// # Safety
///
/// As for [`Mapped::rebase`].
unsafe fn rebase<B: Backend>(h: &mut AnyMapped<'_, DevOwned, RawBuffer, B>, ptr: NonNull<[u8]>) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match h {
            AnyMapped::ToDevice(h) => h.rebase(ptr),
            AnyMapped::FromDevice(h) => h.rebase(ptr),
            AnyMapped::Bidirectional(h) => h.rebase(ptr),
        }
    }
}

/// The panic of a `share` whose DMA address is still a live share: names
/// the earlier share and the likely cause.
#[cold]
#[inline(never)]
#[track_caller]
fn stale_share(
    dma: DmaAddr,
    addr: usize,
    len: usize,
    dir: BufferDirection,
    was: Option<(usize, usize, BufferDirection, usize)>,
) -> ! {
    let (waddr, wlen, wdir, seq) = was.unwrap_or((0, 0, dir, 0));
    panic!(
        "share of {len} bytes at {addr:#x} ({dir:?}): DMA address {dma} is already a live share \
         of this Hal, made by share call #{seq} ({wlen} bytes at {waddr:#x}, {wdir:?}), which \
         was never unshared. Likely cause: a driver that never unshared a buffer, e.g. a \
         request dropped before its completion was popped (the buffer's memory was then \
         reused while still mapped). Nothing new was mapped."
    )
}

/// The panic of a refused `share`.
#[cold]
#[inline(never)]
#[track_caller]
fn refused(addr: usize, len: usize, dir: BufferDirection, e: &MapError<RawBuffer>) -> ! {
    panic!(
        "dmacap refused to share {len} bytes at {addr:#x} ({dir:?}) with the virtio device: {}. \
         virtio_drivers::Hal::share cannot fail, so the adapter panics; nothing was mapped. \
         (A backend that does not bounce can map only memory its device reaches: \
         give the driver buffers from DMA-able memory, or use a bounce backend.)",
        e.kind()
    )
}

impl<B: Backend + Sync + 'static> fmt::Debug for VirtioDevice<B>
where
    B::Platform: DmaAllocator,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VirtioDevice")
            .field("options", &self.options)
            .field("live_shares", &self.live_shares())
            .field("live_allocations", &self.live_allocations())
            .field("shares", &self.shares())
            .field("unshares", &self.unshares())
            .finish()
    }
}

/// The static slot of one `Hal` type: empty until
/// [`install`](Self::install), then its [`VirtioDevice`] for the rest of
/// the program. Declared by [`virtio_hal!`](crate::virtio_hal).
pub struct HalSlot<B: Backend + Sync + 'static>
where
    B::Platform: DmaAllocator,
{
    state: AtomicPtr<VirtioDevice<B>>,
}

impl<B: Backend + Sync + 'static> HalSlot<B>
where
    B::Platform: DmaAllocator,
{
    /// An empty slot (for a `static`).
    pub const fn new() -> Self {
        Self {
            state: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    /// Installs `device` with the default [`HalOptions`].
    ///
    /// # Panics
    ///
    /// If a device is installed already.
    ///
    /// # Safety
    ///
    /// Everything the adapter assumes of the device and of the code that
    /// calls the installed `Hal` (for `virtio-drivers`' drivers, its
    /// `VirtQueue`), beyond what `virtio_drivers::Hal` documents:
    ///
    /// 1. **Read-only buffers stay unwritten.** The device never writes a
    ///    buffer it was given to read (`DriverToDevice`): `virtio-drivers`
    ///    shares those from shared references (`&[u8]`), which nothing may
    ///    write. A backend that stops it keeps the promise for any device:
    ///    a bounce backend (the device reads a copy) behind an IOMMU, which
    ///    maps it read-only; and so does a trusted device that follows the
    ///    virtio specification.
    /// 2. **A shared buffer outlives its share.** `Hal::share` documents
    ///    only that the buffer is valid for the call; the adapter keeps it
    ///    mapped until `unshare`. So every buffer passed to `share` stays
    ///    allocated, and is accessed by nothing but the device and the
    ///    adapter, from that `share` until the `unshare` with the address it
    ///    returned has returned (forever, if that `unshare` never comes).
    ///    `VirtQueue::add`'s own contract ("the buffers must remain valid
    ///    and not be accessed until `pop_used`") gives exactly this.
    /// 3. **Unshare after the device.** `unshare` (and `dma_dealloc`) come
    ///    only after the device has finished every access to the buffer
    ///    (allocation) and the caller observed it: for `virtio-drivers`,
    ///    the chain came back in the used ring (the queue was unset).
    ///
    /// What the adapter checks instead of assuming: `unshare` and
    /// `dma_dealloc` of an address it did not hand out (or took back), or
    /// with another buffer, length or direction, panic before anything
    /// changes; a `share` at an address still shared panics naming both.
    pub unsafe fn install(&self, device: &'static Device<B>) -> &'static VirtioDevice<B> {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.install_with(device, HalOptions::new()) }
    }

    /// Installs `device` with `options`.
    ///
    /// # Panics
    ///
    /// If a device is installed already.
    ///
    /// # Safety
    ///
    /// As for [`install`](Self::install) (clauses 1–3); and, 4, with
    /// [`HalOptions::whole_lines`], every buffer the driver shares owns the
    /// whole cache lines (of the backend's granule) it touches: no other
    /// data lies in them, and nothing touches them while it is shared.
    pub unsafe fn install_with(
        &self,
        device: &'static Device<B>,
        options: HalOptions,
    ) -> &'static VirtioDevice<B> {
        // The slot is a `static` (an `AtomicPtr`, `Sync` whatever it points
        // to), so any thread may reach the state: prove it may be shared.
        const fn shareable<T: Send + Sync>() {}
        shareable::<VirtioDevice<B>>();
        let state = Box::into_raw(Box::new(VirtioDevice::new(device, options)));
        if let Err(_other) = self.state.compare_exchange(
            core::ptr::null_mut(),
            state,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            // SAFETY: made just above and never published.
            drop(unsafe { Box::from_raw(state) });
            panic!("a device is installed already in this virtio Hal");
        }
        // SAFETY: published once and never freed: valid for `'static`.
        unsafe { &*state }
    }

    /// The installed state.
    ///
    /// # Panics
    ///
    /// If no device was installed; `hal` names the `Hal` type in the
    /// message.
    #[track_caller]
    pub fn get(&self, hal: &str) -> &'static VirtioDevice<B> {
        let p = self.state.load(Ordering::Acquire);
        assert!(
            !p.is_null(),
            "virtio Hal `{hal}` used before a device was installed: call `{hal}::install(&device)` first"
        );
        // SAFETY: non-null only once `install` published a leaked box, which
        // is never freed.
        unsafe { &*p }
    }

    /// Whether a device is installed.
    pub fn is_installed(&self) -> bool {
        !self.state.load(Ordering::Acquire).is_null()
    }
}

impl<B: Backend + Sync + 'static> Default for HalSlot<B>
where
    B::Platform: DmaAllocator,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<B: Backend + Sync + 'static> fmt::Debug for HalSlot<B>
where
    B::Platform: DmaAllocator,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HalSlot {{ installed: {} }}", self.is_installed())
    }
}

/// Declares a `virtio_drivers::Hal` type for one dmacap device:
/// `virtio_hal!(pub MyHal, BackendType)`.
///
/// It makes a unit struct `MyHal` with a static [`HalSlot`] and:
///
/// - `unsafe fn MyHal::install(&'static Device<BackendType>)` and
///   `install_with(device, HalOptions)` ([`HalSlot::install`] states the
///   contract);
/// - `fn MyHal::state() -> &'static VirtioDevice<BackendType>`: the device,
///   counters, live shares and allocations;
/// - `unsafe impl virtio_drivers::Hal for MyHal`, forwarding to the
///   [`VirtioDevice`] methods of the same names.
///
/// `mmio_phys_to_virt` panics: the adapter serves DMA. A transport that
/// maps registers through the `Hal` (the PCI transport maps its BARs so)
/// names the platform's mapping function after the backend:
/// `virtio_hal!(pub MyHal, BackendType, mmio = my_mmio_phys_to_virt)`,
/// where `my_mmio_phys_to_virt: unsafe fn(PhysAddr, usize) -> NonNull<u8>`
/// keeps `virtio_drivers::Hal::mmio_phys_to_virt`'s contract (for an
/// identity-mapped bare-metal program, the address itself, mapped as
/// device memory).
///
/// Doc comments and attributes before the name go on the struct. See the
/// [module documentation](crate::virtio) for an example.
#[macro_export]
macro_rules! virtio_hal {
    // `mmio_phys_to_virt` without a mapping function: DMA only.
    (@mmio $name:ident, $paddr:ident, $size:ident) => {{
        let _ = $size;
        ::core::panic!(
            "{}: MMIO address {:#x}: this adapter serves DMA only; a PCI transport's BARs \
             need the platform's own MMIO mapping (`virtio_hal!({}, Backend, mmio = f)`)",
            ::core::stringify!($name),
            $paddr,
            ::core::stringify!($name)
        )
    }};
    // `mmio_phys_to_virt` through the platform's function.
    (@mmio $name:ident, $paddr:ident, $size:ident, $mmio:expr) => {{
        let f: unsafe fn(
            $crate::virtio::virtio_drivers::PhysAddr,
            usize,
        ) -> ::core::ptr::NonNull<u8> = $mmio;
        // SAFETY: `virtio-drivers` asks for a region it found in the
        // device's PCI capabilities or device tree (`Hal::mmio_phys_to_virt`'s
        // contract), which is the function's own contract.
        unsafe { f($paddr, $size) }
    }};
    ($(#[$meta:meta])* $vis:vis $name:ident, $backend:ty $(, mmio = $mmio:expr)? $(,)?) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy)]
        $vis struct $name;

        impl $name {
            fn __dmacap_slot() -> &'static $crate::virtio::HalSlot<$backend> {
                static SLOT: $crate::virtio::HalSlot<$backend> = $crate::virtio::HalSlot::new();
                &SLOT
            }

            /// Installs the device this `Hal` reaches.
            ///
            /// # Safety
            ///
            /// As for `dmacap::virtio::HalSlot::install`.
            #[allow(dead_code)]
            $vis unsafe fn install(
                device: &'static $crate::Device<$backend>,
            ) -> &'static $crate::virtio::VirtioDevice<$backend> {
                // SAFETY: the caller's promise, passed on.
                unsafe { Self::__dmacap_slot().install(device) }
            }

            /// Installs the device this `Hal` reaches, with options.
            ///
            /// # Safety
            ///
            /// As for `dmacap::virtio::HalSlot::install_with`.
            #[allow(dead_code)]
            $vis unsafe fn install_with(
                device: &'static $crate::Device<$backend>,
                options: $crate::virtio::HalOptions,
            ) -> &'static $crate::virtio::VirtioDevice<$backend> {
                // SAFETY: the caller's promise, passed on.
                unsafe { Self::__dmacap_slot().install_with(device, options) }
            }

            /// The installed device's adapter state.
            ///
            /// # Panics
            ///
            /// If no device was installed.
            #[allow(dead_code)]
            $vis fn state() -> &'static $crate::virtio::VirtioDevice<$backend> {
                Self::__dmacap_slot().get(::core::stringify!($name))
            }
        }

        // SAFETY: `dma_alloc` returns zeroed, page-aligned memory of one
        // coherent allocation that nothing else references, until
        // `dma_dealloc`; `share` and `unshare` map and unmap through dmacap
        // under the promises `virtio_drivers::Hal` asks of its callers and
        // the clauses the installer signed (`HalSlot::install`: a shared
        // buffer outlives its share; unshare after the device), checked
        // where they can be (unknown addresses, lengths, directions panic).
        unsafe impl $crate::virtio::virtio_drivers::Hal for $name {
            fn dma_alloc(
                pages: usize,
                _direction: $crate::virtio::virtio_drivers::BufferDirection,
            ) -> ($crate::virtio::virtio_drivers::PhysAddr, ::core::ptr::NonNull<u8>) {
                Self::state().dma_alloc(pages)
            }

            unsafe fn dma_dealloc(
                paddr: $crate::virtio::virtio_drivers::PhysAddr,
                vaddr: ::core::ptr::NonNull<u8>,
                pages: usize,
            ) -> i32 {
                // SAFETY: `virtio-drivers` frees a queue's memory after
                // unsetting the queue on the transport.
                unsafe { Self::state().dma_dealloc(paddr, vaddr, pages) }
            }

            unsafe fn mmio_phys_to_virt(
                paddr: $crate::virtio::virtio_drivers::PhysAddr,
                size: usize,
            ) -> ::core::ptr::NonNull<u8> {
                $crate::virtio_hal!(@mmio $name, paddr, size $(, $mmio)?)
            }

            unsafe fn share(
                buffer: ::core::ptr::NonNull<[u8]>,
                direction: $crate::virtio::virtio_drivers::BufferDirection,
            ) -> $crate::virtio::virtio_drivers::PhysAddr {
                // SAFETY: the buffer stays allocated and untouched until it is
                // unshared: `install`'s clause 2, which `VirtQueue::add`'s
                // contract keeps for `virtio-drivers`' own drivers.
                unsafe { Self::state().share(buffer, direction) }
            }

            unsafe fn unshare(
                paddr: $crate::virtio::virtio_drivers::PhysAddr,
                buffer: ::core::ptr::NonNull<[u8]>,
                direction: $crate::virtio::virtio_drivers::BufferDirection,
            ) {
                // SAFETY: `virtio-drivers` unshares a buffer after the device
                // returned its chain in the used ring.
                unsafe { Self::state().unshare(paddr, buffer, direction) }
            }
        }
    };
}
