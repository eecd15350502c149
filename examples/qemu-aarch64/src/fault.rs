//! The deliberate fault of the SMMUv3 configuration: the device is handed
//! a descriptor whose data buffer's IOVA was unmapped (strictly: page
//! descriptors cleared, `CMD_TLBI_NH_VA`, `CMD_SYNC`) before the device was
//! told it. The SMMU must stop the access and record it in the event
//! queue; the request must fail; the buffer must keep every byte.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use alloc::boxed::Box;
use virtio_drivers::device::blk::VirtIOBlk;
use virtio_drivers::transport::Transport;
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

use dmacap::DmaAddr;
use dmacap::backend::iommu::{Access, FaultReason};

use crate::smmu::Smmu;
use crate::{IoHal, println};

/// The victim: two whole pages, so that its IOVA range (two pages) is not
/// what the request's next share (its one-byte status, one page) takes
/// from the IOVA allocator's per-size caches right after the unmap, and
/// so that QEMU cannot complete the transfer through its single bounce
/// page: it fails the request (`NEEDS_RESET`) instead.
const VICTIM: usize = 2 * 4096;

#[repr(C, align(4096))]
struct Victim([u8; VICTIM]);

/// Armed: the next device-writable share of [`VICTIM`] bytes is unmapped
/// at once.
static ARMED: AtomicBool = AtomicBool::new(false);
/// The IOVA handed out after its unmap.
static STALE_IOVA: AtomicU64 = AtomicU64::new(0);

/// [`IoHal`], except that once [`ARMED`] it takes a data buffer's mapping
/// back before the device is told its IOVA.
#[derive(Debug)]
pub struct FaultyHal;

// SAFETY: every method forwards to `IoHal`, which keeps `Hal`'s promises,
// except one armed `share`: it returns an IOVA whose mapping it removed
// (strict unmap, completed by CMD_SYNC) before returning, so the device
// reaches nothing through it — which is what the SMMU is shown to enforce.
// The buffer itself stays valid (the caller keeps it until the program
// ends), and the request that carries it never completes, so the IOVA is
// never unshared again (an unshare of it would panic, changing nothing).
unsafe impl Hal for FaultyHal {
    fn dma_alloc(pages: usize, direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        IoHal::dma_alloc(pages, direction)
    }

    unsafe fn dma_dealloc(paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        // SAFETY: the caller's promise, passed on.
        unsafe { IoHal::dma_dealloc(paddr, vaddr, pages) }
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, size: usize) -> NonNull<u8> {
        // SAFETY: the caller's promise, passed on.
        unsafe { IoHal::mmio_phys_to_virt(paddr, size) }
    }

    unsafe fn share(buffer: NonNull<[u8]>, direction: BufferDirection) -> PhysAddr {
        // SAFETY: the caller's promise, passed on.
        let iova = unsafe { IoHal::share(buffer, direction) };
        if direction == BufferDirection::DeviceToDriver
            && buffer.len() == VICTIM
            && ARMED.swap(false, Ordering::Relaxed)
        {
            // SAFETY: the device was never told `iova`: nothing reached the
            // buffer through it, so taking it back now is `unshare`'s
            // contract kept.
            unsafe { IoHal::unshare(iova, buffer, direction) };
            STALE_IOVA.store(iova, Ordering::Relaxed);
        }
        iova
    }

    unsafe fn unshare(paddr: PhysAddr, buffer: NonNull<[u8]>, direction: BufferDirection) {
        // SAFETY: the caller's promise, passed on.
        unsafe { IoHal::unshare(paddr, buffer, direction) }
    }
}

/// The virtio device status bit a device sets when it gave up.
const NEEDS_RESET: u8 = 0x40;

fn ticks() -> (u64, u64) {
    let (cnt, frq): (u64, u64);
    // SAFETY: reads the generic timer's counter and frequency (allowed at
    // EL1); no memory access.
    unsafe {
        core::arch::asm!("isb; mrs {0}, cntpct_el0; mrs {1}, cntfrq_el0", out(reg) cnt, out(reg) frq, options(nomem, nostack));
    }
    (cnt, frq)
}

/// Provokes the fault; returns (translation faults recorded in the stale
/// IOVA range, faults expected, whether everything went as it must).
///
/// Expected: one `F_TRANSLATION` per page of the range, both writes:
/// QEMU's device model maps the descriptor page by page, and each attempt
/// walks the SMMU's tables, finds no entry and records the event.
pub fn provoke<T: Transport>(
    blk: &mut VirtIOBlk<FaultyHal, T>,
    smmu: &Smmu,
    sid: u32,
    status_addr: Option<usize>,
) -> (usize, usize, bool) {
    const CANARY: u8 = 0x5a;
    let victim = Box::leak(Box::new(Victim([CANARY; VICTIM])));
    let req = Box::leak(Box::new(crate::blk_req()));
    let resp = Box::leak(Box::new(crate::blk_resp()));
    let syncs = smmu.syncs();
    ARMED.store(true, Ordering::Relaxed);
    // SAFETY: `req`, `victim` and `resp` are leaked: they stay valid and
    // untouched by the program (but for the reads of `victim` below, which
    // the device cannot race: the SMMU blocks it) for as long as it runs.
    let token = unsafe { blk.read_blocks_nb(3, req, &mut victim.0, resp) };
    let stale = STALE_IOVA.load(Ordering::Relaxed);
    println!(
        "fault: read request {token:?} handed to the device with its data buffer at IOVA {stale:#x}, \
         unmapped before (strict: {} CMD_SYNC)",
        smmu.syncs() - syncs
    );
    // Give the device 200 ms to complete it (it must not).
    let (start, frq) = ticks();
    let mut completed = false;
    while ticks().0 - start < frq / 5 {
        if blk.peek_used().is_some() {
            completed = true;
            break;
        }
    }
    let status: Option<u8> = status_addr.map(|a| {
        // SAFETY: the common configuration's `device_status` byte, in a
        // BAR mapped as device memory; reading it has no side effect.
        unsafe { core::ptr::read_volatile(a as *const u8) }
    });
    let failed = !completed && status.is_some_and(|s| s & NEEDS_RESET != 0);
    println!(
        "fault: request {}; device status {:#x}{}",
        if completed {
            "COMPLETED (wrong)"
        } else {
            "never completed"
        },
        status.map_or(-1, i32::from),
        if failed {
            " (NEEDS_RESET: the device failed the request)"
        } else {
            ""
        }
    );
    let mut faults = 0;
    let mut others = 0;
    while let Some(e) = smmu.pop_event() {
        println!(
            "fault: SMMU event {} ({:#x}) stream {} IOVA {:#x} {}",
            e.name(),
            e.kind,
            e.sid,
            e.iova,
            if e.read { "read" } else { "write" }
        );
        // As dmacap's fault record: an untranslated write by our stream
        // inside the unmapped range.
        let range = (
            DmaAddr::new(stale & !0xfff),
            VICTIM as u64 + (stale & 0xfff),
        );
        let expected_record = e.record().is_some_and(|f| {
            f.reason == FaultReason::Untranslated
                && f.access == Access::Write
                && f.hits(range.0, range.1)
        });
        if expected_record && e.sid == sid {
            faults += 1;
        } else {
            others += 1;
        }
    }
    let intact = victim.0.iter().all(|&b| b == CANARY);
    println!(
        "fault: the buffer behind the unmapped IOVA {} ({} bytes checked)",
        if intact {
            "kept every byte"
        } else {
            "WAS WRITTEN"
        },
        VICTIM
    );
    let expected = VICTIM / 4096;
    (
        faults,
        expected,
        stale != 0 && failed && faults == expected && others == 0 && intact,
    )
}
