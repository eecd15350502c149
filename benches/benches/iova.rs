//! Target 4: one IOVA alloc + free with 1K, 16K, 256K and 1M live ranges,
//! dmacap's allocator against a first-fit `Mutex<BTreeMap>`; and the
//! throughput of 2 threads against 1.
//!
//! `cargo bench -p dmacap-benches --bench iova`

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dmacap_benches::iova::{
    FirstFit, dmacap_allocator, dmacap_live, dmacap_pair, first_fit_live, first_fit_pair,
};

/// Live ranges for the single-thread figures.
const LIVE: [usize; 4] = [1 << 10, 1 << 14, 1 << 18, 1 << 20];
/// Live ranges for the thread-scaling figures.
const THREAD_LIVE: usize = 1 << 10;

fn single(c: &mut Criterion) {
    let mut g = c.benchmark_group("iova");
    for n in LIVE {
        let ours = dmacap_allocator();
        let held = dmacap_live(&ours, n);
        let base = FirstFit::new(dmacap_benches::iova::BASE, dmacap_benches::iova::LIMIT);
        let base_held = first_fit_live(&base, n);
        g.bench_function(BenchmarkId::new("btreemap_first_fit", n), |b| {
            let a = black_box(&base);
            b.iter(|| first_fit_pair(a))
        });
        g.bench_function(BenchmarkId::new("dmacap", n), |b| {
            let a = black_box(&ours);
            b.iter(|| dmacap_pair(a))
        });
        for x in held {
            // SAFETY: from `ours`, never given to a device.
            unsafe { ours.free(x) };
        }
        drop(base_held);
    }
    g.finish();
}

/// Runs `pair` `iters` times on each of `threads` threads started together;
/// returns the wall time from the start to the last thread's end.
fn on_threads<A: Sync>(a: &A, threads: usize, iters: u64, pair: fn(&A)) -> Duration {
    let start = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    for _ in 0..iters {
                        pair(a);
                    }
                })
            })
            .collect();
        start.wait();
        let t = Instant::now();
        for w in workers {
            w.join().unwrap();
        }
        t.elapsed()
    })
}

fn threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("iova_threads");
    let ours = dmacap_allocator();
    let held = dmacap_live(&ours, THREAD_LIVE);
    let base = FirstFit::new(dmacap_benches::iova::BASE, dmacap_benches::iova::LIMIT);
    let _base_held = first_fit_live(&base, THREAD_LIVE);
    for t in [1usize, 2] {
        // One iteration is one pair on each thread: elements per second is
        // the allocator's throughput.
        g.throughput(Throughput::Elements(t as u64));
        g.bench_function(BenchmarkId::new("btreemap_first_fit", t), |b| {
            b.iter_custom(|iters| on_threads(&base, t, iters, first_fit_pair))
        });
        g.bench_function(BenchmarkId::new("dmacap", t), |b| {
            b.iter_custom(|iters| on_threads(&ours, t, iters, dmacap_pair))
        });
    }
    for x in held {
        // SAFETY: from `ours`, never given to a device.
        unsafe { ours.free(x) };
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = single, threads
}
criterion_main!(benches);
