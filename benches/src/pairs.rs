//! Ratios of two variants measured interleaved: short blocks of A and B in
//! rotating order (A B, B A, A B, ...), one ratio per adjacent pair of
//! blocks, and the median and quartiles of those ratios. Interference that
//! lasts longer than a block (another process compiling on the same CPUs,
//! frequency changes) hits both sides of a pair alike, which a sequential
//! A-then-B measurement such as criterion's cannot offer.

use std::time::{Duration, Instant};

/// The distribution of the per-pair ratios `time(A) / time(B)`.
#[derive(Debug, Clone, Copy)]
pub struct Ratio {
    /// Lower quartile.
    pub p25: f64,
    /// Median.
    pub median: f64,
    /// Upper quartile.
    pub p75: f64,
    /// Median time of one run of A, in nanoseconds.
    pub a_ns: f64,
    /// Median time of one run of B, in nanoseconds.
    pub b_ns: f64,
}

/// Times `reps` runs of `f`.
fn block(f: &mut impl FnMut(), reps: u64) -> Duration {
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    t.elapsed()
}

/// How many runs of `f` take about `target`.
fn calibrate(f: &mut impl FnMut(), target: Duration) -> u64 {
    let mut reps = 1;
    loop {
        let t = block(f, reps);
        if t >= target / 4 || reps >= 1 << 30 {
            let per = t.as_secs_f64() / reps as f64;
            return ((target.as_secs_f64() / per) as u64).max(1);
        }
        reps *= 4;
    }
}

/// `time(a) / time(b)` per run, over `rounds` interleaved pairs of blocks of
/// about `block_time` each (after a warm-up of both).
pub fn ratio(
    mut a: impl FnMut(),
    mut b: impl FnMut(),
    block_time: Duration,
    rounds: usize,
) -> Ratio {
    let ra = calibrate(&mut a, block_time);
    let rb = calibrate(&mut b, block_time);
    block(&mut a, ra);
    block(&mut b, rb);
    let mut times: Vec<(f64, f64)> = (0..rounds)
        .map(|i| {
            let (ta, tb) = if i % 2 == 0 {
                let ta = block(&mut a, ra);
                (ta, block(&mut b, rb))
            } else {
                let tb = block(&mut b, rb);
                (block(&mut a, ra), tb)
            };
            (ta.as_secs_f64() / ra as f64, tb.as_secs_f64() / rb as f64)
        })
        .collect();
    let mut rs: Vec<f64> = times.iter().map(|(a, b)| a / b).collect();
    rs.sort_by(f64::total_cmp);
    let q = |v: &[f64], p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    let mut ta: Vec<f64> = times.iter().map(|t| t.0 * 1e9).collect();
    ta.sort_by(f64::total_cmp);
    times.iter_mut().for_each(|t| t.1 *= 1e9);
    let mut tb: Vec<f64> = times.iter().map(|t| t.1).collect();
    tb.sort_by(f64::total_cmp);
    Ratio {
        p25: q(&rs, 0.25),
        median: q(&rs, 0.5),
        p75: q(&rs, 0.75),
        a_ns: q(&ta, 0.5),
        b_ns: q(&tb, 0.5),
    }
}
