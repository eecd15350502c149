//! Target 1: the direct-coherent typed cycle against the hand-written one;
//! also on the bus known at compile time to be the identity.
//!
//! `cargo bench -p dmacap-benches --bench zero_cost`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use dmacap_benches::{
    HandDevice, bytes, coherent_device, hand_cycle, identity_bus_device, typed_cycle,
};

fn zero_cost(c: &mut Criterion) {
    let mut g = c.benchmark_group("zero_cost");
    let dev = coherent_device();
    let hand = HandDevice::identity();
    let mut buf = Some(bytes(64, 1));
    g.bench_function("hand_written", |b| {
        let dev = black_box(&hand);
        b.iter(|| {
            let x = buf.take().unwrap();
            buf = Some(hand_cycle(dev, black_box(x)));
        })
    });
    g.bench_function("dmacap_typed", |b| {
        let dev = black_box(&dev);
        b.iter(|| {
            let x = buf.take().unwrap();
            buf = Some(typed_cycle(dev, black_box(x)));
        })
    });
    let dev = identity_bus_device();
    g.bench_function("dmacap_identity_bus", |b| {
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
    targets = zero_cost
}
criterion_main!(benches);
