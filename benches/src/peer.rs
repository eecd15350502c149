//! The same cycle through the `dma-api` 0.10 crate (target 2): its
//! `DmaOp` implemented for identity-mapped, cache-coherent memory, the way a
//! platform without IOMMU would.

use std::alloc::Layout;
use std::hint::black_box;
use std::num::NonZeroUsize;
use std::ptr::NonNull;

use dma_api::{
    DeviceDma, DmaAddr, DmaAllocHandle, DmaCoherency, DmaConstraints, DmaDeviceInfo, DmaDirection,
    DmaDomainId, DmaError, DmaMapHandle, DmaOp,
};

/// `dma-api`'s platform hook for identity-mapped, coherent memory: a
/// streaming map is the identity plus the mask check, no bounce buffer;
/// allocations come from the global allocator.
#[derive(Debug)]
pub struct IdentityOp;

fn dma_of(p: NonNull<u8>) -> DmaAddr {
    DmaAddr::from(p.as_ptr() as usize as u64)
}

impl DmaOp for IdentityOp {
    fn page_size(&self) -> usize {
        4096
    }

    unsafe fn alloc_contiguous(
        &self,
        constraints: DmaConstraints,
        layout: Layout,
    ) -> Option<DmaAllocHandle> {
        let layout = layout.align_to(constraints.align).ok()?;
        if layout.size() == 0 {
            return None;
        }
        // SAFETY: non-zero size (checked above).
        let p = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) })?;
        // SAFETY: one live allocation described by `layout`; the CPU address
        // is the only mapping and, on the identity platform, the DMA address.
        Some(unsafe { DmaAllocHandle::new(p, p, dma_of(p), layout) })
    }

    unsafe fn dealloc_contiguous(&self, handle: DmaAllocHandle) {
        // SAFETY: `alloc_contiguous` allocated it with this layout (the
        // caller pairs the calls).
        unsafe { std::alloc::dealloc(handle.allocation_ptr().as_ptr(), handle.layout()) }
    }

    unsafe fn alloc_coherent(
        &self,
        constraints: DmaConstraints,
        layout: Layout,
    ) -> Option<DmaAllocHandle> {
        // SAFETY: forwarded: coherent memory is ordinary memory here.
        unsafe { self.alloc_contiguous(constraints, layout) }
    }

    unsafe fn dealloc_coherent(&self, handle: DmaAllocHandle) -> Result<(), DmaError> {
        // SAFETY: forwarded.
        unsafe { self.dealloc_contiguous(handle) };
        Ok(())
    }

    unsafe fn map_streaming(
        &self,
        constraints: DmaConstraints,
        addr: NonNull<u8>,
        size: NonZeroUsize,
        _direction: DmaDirection,
    ) -> Result<DmaMapHandle, DmaError> {
        let dma = dma_of(addr);
        let last = dma.checked_add(size.get() as u64 - 1);
        if last.is_none_or(|l| l.as_u64() > constraints.addr_mask) {
            return Err(DmaError::DmaMaskNotMatch {
                addr: dma,
                mask: constraints.addr_mask,
            });
        }
        let layout = Layout::from_size_align(size.get(), constraints.align)?;
        // SAFETY: `addr` is the caller's live buffer for the mapping's life
        // (the caller's promise); no bounce buffer.
        Ok(unsafe { DmaMapHandle::new(addr, dma, layout, None) })
    }

    unsafe fn unmap_streaming(&self, _handle: DmaMapHandle) {}
}

static IDENTITY_OP: IdentityOp = IdentityOp;

/// A coherent, direct-mapped `dma-api` device with a 64-bit mask.
pub fn peer_device() -> DeviceDma {
    DeviceDma::new(
        DmaDeviceInfo::new(
            DmaDomainId::Direct,
            DmaCoherency::Coherent,
            DmaConstraints::new(u64::MAX),
        ),
        &IDENTITY_OP,
    )
}

/// The cycle of target 1 through `dma-api`: map for the device (map and
/// `prepare_for_device`) → give the DMA address away → `complete_for_cpu`
/// → read a byte → `prepare_for_device` → unmap (drop).
#[inline(always)]
pub fn peer_cycle(dev: &DeviceDma, buf: &mut [u8]) {
    let map = match dev.map_streaming_slice_for_device(buf, 1, DmaDirection::Bidirectional) {
        Ok(m) => m,
        Err(e) => refused(e),
    };
    black_box(map.dma_addr());
    let len = map.bytes_len();
    map.complete_for_cpu(0..len);
    black_box(map.read_cpu(0));
    map.prepare_for_device(0..len);
    drop(map);
}

#[cold]
#[inline(never)]
fn refused(e: DmaError) -> ! {
    panic!("dma-api map refused: {e}")
}
