//! Two contenders timed in the same criterion samples.
//!
//! This VM's speed drifts by tens of percent within seconds (other guests
//! steal its cores), so two figures measured one after the other can differ
//! by more than the code does. Here each criterion sample runs both
//! contenders for the same number of iterations, in alternating slices
//! (ours, base, base, ours, ...), and the ratio is taken per sample: drift
//! hits both sides of each ratio alike.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::BenchmarkGroup;

/// Slices per contender in one sample, at most.
const SLICES: u64 = 8;
/// Iterations in a slice, at least: a one-way stream needs a few messages
/// in a row to fill its pipeline (a sender writing the next body while the
/// receiver reads this one), as it does outside a benchmark.
const SLICE_MIN: u64 = 8;

/// Benchmarks `ours` as `name` in `group`, each sample interleaved with as
/// many iterations of `base`, and prints the median ratio of their times
/// over the last `samples` samples (the measured ones; criterion's warm-up
/// runs first). Each closure runs the number of iterations it is given.
/// Sets the group's sample size, so call it last in a group.
pub fn versus(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    base_name: &str,
    samples: usize,
    mut ours: impl FnMut(u64),
    mut base: impl FnMut(u64),
) {
    let ratios = RefCell::new(Vec::new());
    let mut turn = 0u64;
    group.sample_size(samples);
    group.bench_function(name, |b| {
        b.iter_custom(|n| {
            let (mut ours_time, mut base_time) = (Duration::ZERO, Duration::ZERO);
            let slice = n.div_ceil(SLICES).max(SLICE_MIN);
            let mut left = n;
            while left > 0 {
                let k = slice.min(left);
                left -= k;
                // ABBA order, across samples too: neither side always
                // runs first.
                let ours_first = turn % 2 == 0;
                turn += 1;
                for side in [ours_first, !ours_first] {
                    // One untimed iteration first: a peer that slept
                    // through the other side's slice wakes up outside the
                    // timing.
                    let run: &mut dyn FnMut(u64) = if side { &mut ours } else { &mut base };
                    run(1);
                    let start = Instant::now();
                    run(k);
                    let took = start.elapsed();
                    if side {
                        ours_time += took;
                    } else {
                        base_time += took;
                    }
                }
            }
            ratios
                .borrow_mut()
                .push(ours_time.as_secs_f64() / base_time.as_secs_f64());
            ours_time
        })
    });
    let mut ratios = ratios.into_inner();
    if ratios.len() < samples {
        return; // filtered out, or criterion's --list / --test run
    }
    let mut measured = ratios.split_off(ratios.len() - samples);
    measured.sort_by(f64::total_cmp);
    let at = |q: f64| measured[((measured.len() - 1) as f64 * q).round() as usize];
    println!(
        "{name} / {base_name}: time ratio {:.3} (quartiles {:.3}–{:.3}, {samples} interleaved samples)",
        at(0.5),
        at(0.25),
        at(0.75),
    );
}
