//! Target 5: map + unmap through a swiotlb pool against copying the bytes
//! in and out of a same-sized buffer, at 1500 B, 4 KiB and 64 KiB.
//!
//! `cargo bench -p dmacap-benches --bench bounce`

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dmacap_benches::bounce::{bounce_cycle, bounce_device, cpus, memcpy_cycle, page_buffer};

fn bounce(c: &mut Criterion) {
    let mut g = c.benchmark_group("bounce");
    let dev = bounce_device(cpus());
    for size in [1500usize, 4096, 65536] {
        g.throughput(Throughput::Bytes(size as u64));
        let mut buf = Some(page_buffer(size));
        let slot = page_buffer(size);
        g.bench_function(BenchmarkId::new("memcpy_in_out", size), |b| {
            let buf = buf.as_mut().unwrap();
            b.iter(|| memcpy_cycle(black_box(&mut buf[..]), black_box(&mut slot[..])))
        });
        g.bench_function(BenchmarkId::new("dmacap_swiotlb", size), |b| {
            let dev = black_box(&dev);
            b.iter(|| {
                let x = buf.take().unwrap();
                buf = Some(bounce_cycle(dev, black_box(x)));
            });
            assert!(dev.stats().bounced() > 0, "nothing was bounced");
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = bounce
}
criterion_main!(benches);
