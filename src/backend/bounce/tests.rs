//! Unit tests of the pool on plain host memory (no simulated device): the
//! layout, the bookkeeping, areas and concurrency.

use super::*;
use crate::backend::compose::BouncePolicy;
use crate::base::context::DeviceConfig;
use alloc::vec;

const PHYS: u64 = 0x4000_0000;

/// A pool of `slots` slots over leaked host memory at physical `PHYS`.
fn pool(slots: usize, areas: usize) -> Swiotlb {
    let mem: &'static mut [u8] = vec![0xee; slots * SLOT_SIZE].leak();
    let ptr = NonNull::from(mem).cast::<u8>();
    // SAFETY: leaked, so valid forever and referenced by nothing else; the
    // tests never hand it to a device.
    unsafe { Swiotlb::new(ptr, PhysAddr::new(PHYS), slots * SLOT_SIZE, areas) }
}

fn alloc(p: &Swiotlb, orig: u64, len: usize, mask: u64) -> Result<SwiotlbSlot, MapErrorKind> {
    p.alloc_slot(
        PhysAddr::new(orig),
        len,
        1,
        1,
        BounceReason::Unreachable,
        mask,
        true,
    )
}

/// The bytes of a region, read through the pool's pointer.
fn region_bytes(p: &Swiotlb, s: &SwiotlbSlot) -> Vec<u8> {
    let b = p.slot_of(s);
    let before = (b.phys.as_u64() - b.region_phys.as_u64()) as usize;
    // SAFETY: the region is held by `s`, valid for `region_len` bytes from
    // `before` bytes ahead of `cpu`, and nothing else touches it now.
    let region = unsafe { b.cpu.sub(before) };
    // SAFETY: as above.
    unsafe { core::slice::from_raw_parts(region.as_ptr(), b.region_len) }.to_vec()
}

#[test]
fn pool_and_state_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Swiotlb>();
    check::<SwiotlbSlot>();
    check::<&'static Swiotlb>();
    check::<alloc::sync::Arc<Swiotlb>>();
}

#[test]
fn areas_are_clamped_and_counted() {
    let p = pool(300, 8);
    assert_eq!(p.areas(), 2); // 300 / 128
    assert_eq!(
        (p.total_slots(), p.free_slots(), p.used_slots()),
        (300, 300, 0)
    );
    assert_eq!(pool(10, 4).areas(), 1);
    assert_eq!(pool(10, 0).areas(), 1);
    assert!(p.contains(PhysAddr::new(PHYS), 300 * SLOT_SIZE));
    assert!(!p.contains(PhysAddr::new(PHYS), 300 * SLOT_SIZE + 1));
    assert!(!p.contains(PhysAddr::new(PHYS - 1), 1));
}

#[test]
fn alloc_release_exact_and_original_found() {
    let p = pool(16, 1);
    let a = alloc(&p, 0x1_0000_0000, 5000, 0).unwrap();
    assert_eq!((a.slots(), a.first_slot()), (3, 0));
    assert_eq!(p.used_slots(), 3);
    let b = alloc(&p, 0x2_0000_0010, 100, 0xff).unwrap();
    assert_eq!(b.first_slot(), 3);
    let s = p.slot_of(&b);
    assert_eq!(s.phys.as_u64() & 0xff, 0x10);
    assert_eq!(s.region_phys.as_u64(), PHYS + 3 * SLOT_SIZE as u64);
    assert_eq!(s.region_len, SLOT_SIZE);
    // The original of any copied byte, from the slot record.
    assert_eq!(p.original_of(s.phys), Some(PhysAddr::new(0x2_0000_0010)));
    let last = PhysAddr::new(s.phys.as_u64() + 99);
    assert_eq!(p.original_of(last), Some(PhysAddr::new(0x2_0000_0010 + 99)));
    // Padding and free slots stand for nothing.
    assert_eq!(p.original_of(PhysAddr::new(s.phys.as_u64() + 100)), None);
    assert_eq!(p.original_of(s.region_phys), None);
    assert_eq!(
        p.original_of(PhysAddr::new(PHYS + 5 * SLOT_SIZE as u64)),
        None
    );
    let third = PhysAddr::new(PHYS + 2 * SLOT_SIZE as u64 + 7);
    assert_eq!(
        p.original_of(third),
        Some(PhysAddr::new(0x1_0000_0000 + 2 * SLOT_SIZE as u64 + 7))
    );
    // SAFETY: from this pool, no device involved.
    unsafe { p.release_slot(a) };
    assert_eq!(p.used_slots(), 1);
    // SAFETY: as above.
    unsafe { p.release_slot(b) };
    assert_eq!(p.free_slots(), 16);
}

#[test]
fn padding_is_zeroed() {
    let p = pool(4, 1);
    let s = p
        .alloc_slot(
            PhysAddr::new(0x1_0000_0123),
            100,
            4096,
            4096,
            BounceReason::Untrusted,
            0xfff,
            true,
        )
        .unwrap();
    assert_eq!(p.slot_of(&s).region_len, 4096);
    let bytes = region_bytes(&p, &s);
    let off = 0x123;
    assert!(bytes[..off].iter().all(|&b| b == 0));
    assert!(bytes[off + 100..].iter().all(|&b| b == 0));
    // The copy part is the caller's to fill: still the pool's old bytes.
    assert!(bytes[off..off + 100].iter().all(|&b| b == 0xee));
    // SAFETY: from this pool.
    unsafe { p.release_slot(s) };
}

#[test]
fn exhaustion_changes_nothing() {
    let p = pool(8, 1);
    let a = alloc(&p, 0x1000, 6 * SLOT_SIZE, 0).unwrap();
    let before = p.free_slots();
    assert_eq!(
        alloc(&p, 0x1000, 3 * SLOT_SIZE, 0).unwrap_err(),
        MapErrorKind::BouncePoolExhausted { slots: 3 }
    );
    assert_eq!(p.free_slots(), before);
    // A min_align_mask whose high bits no free slot has.
    assert_eq!(
        alloc(&p, 0x1_0000, 10, 0xffff).unwrap_err(),
        MapErrorKind::BouncePoolExhausted { slots: 1 }
    );
    assert_eq!(
        alloc(&p, 0, MAX_MAPPING_SIZE + 1, 0).unwrap_err(),
        MapErrorKind::BounceTooLarge {
            len: MAX_MAPPING_SIZE + 1,
            max: MAX_MAPPING_SIZE
        }
    );
    assert_eq!(p.free_slots(), before);
    // SAFETY: from this pool.
    unsafe { p.release_slot(a) };
    assert_eq!(p.free_slots(), 8);
}

#[test]
fn regions_stay_inside_one_area() {
    let p = pool(256, 2);
    let a = alloc(&p, 0x1000, 100 * SLOT_SIZE, 0).unwrap();
    let b = alloc(&p, 0x1000, 100 * SLOT_SIZE, 0).unwrap();
    // 28 free in each area: 40 contiguous slots exist nowhere.
    assert_eq!(p.free_slots(), 56);
    assert!(alloc(&p, 0x1000, 40 * SLOT_SIZE, 0).is_err());
    assert_eq!(p.free_slots(), 56);
    let first = [a.first_slot(), b.first_slot()];
    assert!(first.contains(&0) && first.contains(&128));
    // SAFETY: from this pool.
    unsafe { p.release_slot(b) };
    // SAFETY: from this pool.
    unsafe { p.release_slot(a) };
    assert_eq!(p.free_slots(), 256);
}

#[test]
#[should_panic(expected = "does not belong")]
fn foreign_slot_is_refused() {
    let p = pool(4, 1);
    let q = pool(8, 1);
    let s = alloc(&q, 0x1000, 7 * SLOT_SIZE, 0).unwrap();
    // SAFETY: deliberately wrong, to show the check (it panics first).
    unsafe { p.release_slot(s) };
}

#[test]
fn policy_forwarding() {
    let p = alloc::sync::Arc::new(pool(4, 1));
    let cfg = DeviceConfig::new().min_align_mask(0x7);
    let st = <alloc::sync::Arc<Swiotlb> as BouncePolicy>::alloc(
        &p,
        PhysAddr::new(0x1_0000_0005),
        10,
        64,
        64,
        BounceReason::SharesCacheLine,
        &cfg,
    )
    .unwrap();
    let s = <Swiotlb as BouncePolicy>::slot(&p, &st).unwrap();
    assert_eq!(s.phys.as_u64() & 7, 5);
    assert_eq!(st.as_ref().unwrap().reason(), BounceReason::SharesCacheLine);
    assert_eq!(p.original_of(s.phys), Some(PhysAddr::new(0x1_0000_0005)));
    assert!(
        <&Swiotlb as BouncePolicy>::slot(&&*p, &<&Swiotlb as BouncePolicy>::not_bounced())
            .is_none()
    );
    // SAFETY: from this pool, no device involved.
    unsafe { <&Swiotlb as BouncePolicy>::release(&&*p, st) };
    assert_eq!(p.free_slots(), 4);
}

#[cfg(feature = "std")]
#[test]
fn threads_share_a_pool() {
    use std::thread;
    let p = pool(512, 4);
    assert_eq!(p.areas(), 4);
    let rounds = if cfg!(miri) { 4 } else { 200 };
    thread::scope(|s| {
        for t in 0..4u64 {
            let p = &p;
            s.spawn(move || {
                for r in 0..rounds {
                    let len = 1 + ((t as usize * 977 + r * 131) % (8 * SLOT_SIZE));
                    let orig = 0x1_0000_0000 + t * 0x10_0000 + r as u64 * 64;
                    let slot = alloc(p, orig, len, 0x3f).unwrap();
                    let b = p.slot_of(&slot);
                    assert_eq!(b.phys.as_u64() & 0x3f, orig & 0x3f);
                    // Fill the copy: a region shared with another thread
                    // would show up as a data race under Miri.
                    // SAFETY: the region is this thread's until released.
                    unsafe { b.cpu.write_bytes(t as u8, len) };
                    assert_eq!(p.original_of(b.phys), Some(PhysAddr::new(orig)));
                    // SAFETY: from this pool.
                    unsafe { p.release_slot(slot) };
                }
            });
        }
    });
    assert_eq!(p.free_slots(), 512);
}
