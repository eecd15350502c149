//! Every time ratio of issue 10, each measured interleaved (blocks of the
//! two variants in rotating order, median of the per-pair ratios; see
//! `dmacap_benches::pairs`). Prints a markdown table.
//!
//! ```text
//! cargo run --release -p dmacap-benches --bin ratios [ROUNDS [TARGETS]]
//! ```

use std::hint::black_box;
use std::sync::Barrier;
use std::time::Duration;

use dmacap_benches::bounce::{bounce_cycle, bounce_device, cpus, memcpy_cycle, page_buffer};
use dmacap_benches::iommu::{iommu_device, live, next, remap, teardown};
use dmacap_benches::iova::{
    BASE, FirstFit, LIMIT, dmacap_allocator, dmacap_live, dmacap_pair, first_fit_live,
    first_fit_pair,
};
use dmacap_benches::pairs::{Ratio, ratio};
use dmacap_benches::peer::{peer_cycle, peer_device};
use dmacap_benches::{
    HandDevice, bytes, coherent_device, hand_cycle, identity_bus_device, typed_cycle,
};

const BLOCK: Duration = Duration::from_millis(2);

/// A time for the table.
fn ns(t: f64) -> String {
    if t >= 10_000.0 {
        format!("{:.1} µs", t / 1000.0)
    } else {
        format!("{t:.1} ns")
    }
}

struct Table {
    rounds: usize,
}

impl Table {
    fn row(&self, target: u32, name: &str, r: Ratio, goal: &str, met: Option<bool>) {
        let result = match met {
            Some(true) => "met",
            Some(false) => "missed",
            None => "",
        };
        println!(
            "| {target} | {name} | {} / {} | {:.3} | {:.3}–{:.3} | {goal} | {result} |",
            ns(r.a_ns),
            ns(r.b_ns),
            r.median,
            r.p25,
            r.p75
        );
    }

    fn pair(&self, a: impl FnMut(), b: impl FnMut()) -> Ratio {
        ratio(a, b, BLOCK, self.rounds)
    }
}

/// A cycle that keeps its buffer between runs.
fn cycling<T>(state: T, mut f: impl FnMut(T) -> T) -> impl FnMut() {
    // The Option only lets the closure move the state out and back.
    let mut slot = Some(state);
    move || {
        let s = slot.take().expect("state");
        slot = Some(f(black_box(s)));
    }
}

fn main() {
    let rounds = std::env::args()
        .nth(1)
        .and_then(|r| r.parse().ok())
        .unwrap_or(101);
    // Optional second argument: the targets to measure, e.g. `1,5`.
    let only: Option<Vec<u32>> = std::env::args()
        .nth(2)
        .map(|l| l.split(',').filter_map(|x| x.parse().ok()).collect());
    let t = Table { rounds };
    println!(
        "| target | figure: A / B | A / B per run | ratio (median) | quartiles | goal | result |"
    );
    println!("|---|---|---|---|---|---|---|");
    type Measure = fn(&Table);
    let targets: [(u32, Measure); 6] = [
        (1, target1),
        (2, target2),
        (3, target3),
        (4, target4),
        (5, target5),
        (7, target7),
    ];
    for (n, f) in targets {
        if only.as_ref().is_none_or(|l| l.contains(&n)) {
            f(&t);
        }
    }
}

fn target1(t: &Table) {
    let dev = coherent_device();
    let ib = identity_bus_device();
    let hand = HandDevice::identity();
    let r = t.pair(
        cycling(bytes(64, 1), |b| typed_cycle(black_box(&dev), b)),
        cycling(bytes(64, 1), |b| hand_cycle(black_box(&hand), b)),
    );
    let name = "DirectCoherent typed cycle / hand-written";
    t.row(1, name, r, "<= 1.05", Some(r.median <= 1.05));
    let r = t.pair(
        cycling(bytes(64, 1), |b| typed_cycle(black_box(&ib), b)),
        cycling(bytes(64, 1), |b| hand_cycle(black_box(&hand), b)),
    );
    let name = "IdentityCoherent typed cycle / hand-written";
    t.row(1, name, r, "<= 1.05", Some(r.median <= 1.05));
}

/// The goal is in instructions; the time is reported.
fn target2(t: &Table) {
    let dev = coherent_device();
    let peer = peer_device();
    let mut pbuf = bytes(64, 1);
    let r = t.pair(
        || peer_cycle(black_box(&peer), black_box(&mut pbuf[..])),
        cycling(bytes(64, 1), |b| typed_cycle(black_box(&dev), b)),
    );
    let name = "dma-api 0.10 cycle / dmacap typed cycle";
    t.row(2, name, r, "(>= 8 in instructions)", None);
}

#[cfg(target_arch = "x86_64")]
fn target3(t: &Table) {
    use dmacap_benches::x86::{
        RawOps, batched, buffers, nc_device, one_by_one, raw_limit, scatter_gather,
    };
    let nc = nc_device();
    let ops = RawOps::detect();
    for size in [4096usize, 1536] {
        let mut a = buffers(64, size);
        let b = buffers(64, size);
        let r = t.pair(|| batched(&nc, &mut a), || raw_limit(ops, &b));
        let name = format!("64 x {size} B: batch / line-operation limit");
        t.row(3, &name, r, "<= 1.05", Some(r.median <= 1.05));
        let r = t.pair(|| scatter_gather(&nc, &mut a), || raw_limit(ops, &b));
        let name = format!("64 x {size} B: map_sg / line-operation limit");
        t.row(3, &name, r, "<= 1.05", Some(r.median <= 1.05));
        let mut c = buffers(64, size);
        let r = t.pair(|| one_by_one(&nc, &mut c), || batched(&nc, &mut a));
        let name = format!("64 x {size} B: one-by-one / batch");
        t.row(3, &name, r, "(reported)", None);
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn target3(_: &Table) {}

fn target4(t: &Table) {
    let sizes = [1usize << 10, 1 << 14, 1 << 18, 1 << 20];
    let ours: Vec<_> = sizes.iter().map(|_| dmacap_allocator()).collect();
    let held: Vec<_> = ours
        .iter()
        .zip(sizes)
        .map(|(a, n)| dmacap_live(a, n))
        .collect();
    for (i, n) in sizes.into_iter().enumerate() {
        let base = FirstFit::new(BASE, LIMIT);
        let _base_held = first_fit_live(&base, n);
        let a = &ours[i];
        let r = t.pair(
            || first_fit_pair(black_box(&base)),
            || dmacap_pair(black_box(a)),
        );
        let name = format!("IOVA alloc + free, {n} live: BTreeMap first-fit / dmacap");
        t.row(4, &name, r, ">= 3", Some(r.median >= 3.0));
    }
    for (i, n) in sizes.into_iter().enumerate().skip(1) {
        let (a, b) = (&ours[i], &ours[0]);
        let r = t.pair(|| dmacap_pair(black_box(a)), || dmacap_pair(black_box(b)));
        let name = format!("IOVA flatness: dmacap at {n} live / at 1024 live");
        let flat = (1.0 / 1.1..=1.1).contains(&r.median);
        t.row(4, &name, r, "within 1.1", Some(flat));
    }
    // Long enough (about 1.5 ms per thread) that starting the threads
    // is a few per cent of a block, not most of it.
    let pairs_per_block = 200_000;
    let on = |threads: usize, f: &(dyn Fn() + Sync)| {
        let start = Barrier::new(threads);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    start.wait();
                    for _ in 0..pairs_per_block {
                        f();
                    }
                });
            }
        });
    };
    // Twice the work in `r` times the time: the throughput ratio is 2 / r.
    let throughput = |r: Ratio| Ratio {
        p25: 2.0 / r.p75,
        median: 2.0 / r.median,
        p75: 2.0 / r.p25,
        ..r
    };
    let a = &ours[0];
    let f = || dmacap_pair(a);
    let r = throughput(t.pair(|| on(2, &f), || on(1, &f)));
    let name = "IOVA throughput, 2 threads / 1 thread: dmacap";
    t.row(4, name, r, ">= 1.8", Some(r.median >= 1.8));
    let base = FirstFit::new(BASE, LIMIT);
    let _base_held = first_fit_live(&base, 1 << 10);
    let f = || first_fit_pair(&base);
    let r = throughput(t.pair(|| on(2, &f), || on(1, &f)));
    let name = "IOVA throughput, 2 threads / 1 thread: BTreeMap first-fit";
    t.row(4, name, r, "(baseline)", None);
    for (a, h) in ours.iter().zip(held) {
        for x in h {
            // SAFETY: from `a`, never given to a device.
            unsafe { a.free(x) };
        }
    }
}

fn target5(t: &Table) {
    let bdev = bounce_device(cpus());
    for size in [1500usize, 4096, 65536] {
        let buf = page_buffer(size);
        let slot = page_buffer(size);
        let r = t.pair(
            cycling(page_buffer(size), |b| bounce_cycle(black_box(&bdev), b)),
            || memcpy_cycle(black_box(&mut buf[..]), black_box(&mut slot[..])),
        );
        let name = format!("bounced map + unmap / memcpy in + out, {size} B");
        t.row(5, &name, r, "<= 1.2", Some(r.median <= 1.2));
    }
    // This CPU's slow case of `rep movsb`: a copy whose destination lies 16
    // bytes past its source modulo 4096, against page-aligned both.
    let src = page_buffer(2 * 4096);
    let dst = page_buffer(2 * 4096);
    let (s16, d16) = (&src[..4096], &mut dst[16..16 + 4096]);
    let aligned = page_buffer(4096);
    let r = t.pair(
        || {
            d16.copy_from_slice(black_box(&*s16));
            black_box(&mut *d16);
        },
        || {
            aligned.copy_from_slice(black_box(&src[4096..]));
            black_box(&mut *aligned);
        },
    );
    let name = "memcpy 4096 B, dst - src = 16 (mod 4096) / page-aligned both";
    t.row(5, name, r, "(context)", None);
}

fn target7(t: &Table) {
    for n in [1usize << 10, 1 << 20] {
        let dev = iommu_device();
        let maps = std::cell::RefCell::new(live(&dev, n));
        let i = std::cell::Cell::new(0);
        let step = |walk: bool| {
            i.set(next(i.get(), n));
            remap(&dev, &mut maps.borrow_mut()[i.get()], walk);
        };
        let r = t.pair(|| step(true), || step(false));
        let name = format!("IOMMU unmap + map with a page-table walk / without, {n} live");
        t.row(7, &name, r, "(reported)", None);
        teardown(maps.into_inner());
    }
}
