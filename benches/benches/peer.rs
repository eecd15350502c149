//! Target 2: the same cycle through the `dma-api` 0.10 crate and through
//! dmacap.
//!
//! `cargo bench -p dmacap-benches --bench peer`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use dmacap_benches::peer::{peer_cycle, peer_device};
use dmacap_benches::{bytes, coherent_device, typed_cycle};

fn peer(c: &mut Criterion) {
    let mut g = c.benchmark_group("peer");
    let dev = coherent_device();
    let peer = peer_device();
    let mut buf = Some(bytes(64, 1));
    g.bench_function("dma_api_0_10", |b| {
        let dev = black_box(&peer);
        let buf = buf.as_mut().unwrap();
        b.iter(|| peer_cycle(dev, black_box(&mut buf[..])))
    });
    g.bench_function("dmacap_typed", |b| {
        let dev = black_box(&dev);
        b.iter(|| {
            let x = buf.take().unwrap();
            buf = Some(typed_cycle(dev, black_box(x)));
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = peer
}
criterion_main!(benches);
