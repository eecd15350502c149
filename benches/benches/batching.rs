//! Target 3: 64 buffers through map → sync_for_cpu → sync_for_device →
//! unmap on the real x86 non-coherent backend, one by one, in dynamic
//! batches and as one scatter-gather list, against the bare line-operation
//! loop with one fence per pass. x86_64 only.
//!
//! `cargo bench -p dmacap-benches --bench batching`

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::time::Duration;

    use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
    use dmacap_benches::x86::{
        RawOps, batched, buffers, nc_device, one_by_one, raw_limit, scatter_gather,
    };

    /// Buffers per cycle.
    const BUFFERS: usize = 64;

    fn batching(c: &mut Criterion) {
        let mut g = c.benchmark_group("batching");
        let dev = nc_device();
        let ops = RawOps::detect();
        eprintln!(
            "batching: clean = {:?}, invalidate = {:?}, then mfence",
            ops.clean, ops.invalidate
        );
        for size in [4096usize, 1536] {
            g.throughput(Throughput::Bytes((BUFFERS * size) as u64));
            let mut bufs = buffers(BUFFERS, size);
            g.bench_function(BenchmarkId::new("line_op_limit", size), |b| {
                b.iter(|| raw_limit(ops, &bufs))
            });
            g.bench_function(BenchmarkId::new("one_by_one", size), |b| {
                b.iter(|| one_by_one(&dev, &mut bufs))
            });
            g.bench_function(BenchmarkId::new("batch", size), |b| {
                b.iter(|| batched(&dev, &mut bufs))
            });
            g.bench_function(BenchmarkId::new("map_sg", size), |b| {
                b.iter(|| scatter_gather(&dev, &mut bufs))
            });
            assert_eq!(bufs.len(), BUFFERS);
        }
        g.finish();
    }

    criterion_group! {
        name = benches;
        config = Criterion::default()
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(2));
        targets = batching
    }
}

#[cfg(target_arch = "x86_64")]
criterion::criterion_main!(x86::benches);

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    eprintln!("batching: the real cache-maintenance benchmark runs on x86_64 only");
}
