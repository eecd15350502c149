//! Target 7: IOMMU unmap (and the map that refills the slot) with the
//! carried DMA address alone, against the same plus a page-table walk per
//! unmap, with 1K and 1M live mappings visited in a scattered order.
//!
//! `cargo bench -p dmacap-benches --bench reverse_translation`

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use dmacap_benches::iommu::{iommu_device, live, next, remap, teardown};

fn reverse_translation(c: &mut Criterion) {
    let mut g = c.benchmark_group("reverse_translation");
    for n in [1usize << 10, 1 << 20] {
        let dev = iommu_device();
        let mut maps = live(&dev, n);
        for walk in [false, true] {
            let name = if walk {
                "unmap_plus_walk"
            } else {
                "unmap_carried"
            };
            let mut i = 0;
            g.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter(|| {
                    i = next(i, n);
                    remap(&dev, &mut maps[i], walk);
                })
            });
        }
        teardown(maps);
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = reverse_translation
}
criterion_main!(benches);
