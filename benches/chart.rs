//! How long the run chart takes: a ten-minute run sampled four times a second (2 400 samples,
//! one fault, a breach, a stop condition, an abort, a load step's 300 seconds), from journal to
//! PNG and to SVG; and a ten-hour run at one sample a second (36 000 samples). Target: at most
//! 100 ms for the ten-minute run. Median and worst of `CHART_BENCH_ROUNDS` (20) rounds each.
//!
//! `cargo bench --bench chart`. `CHART_BENCH_OUT=DIR` also writes the pictures there.

#[path = "../tests/support/journal.rs"]
mod journal;

use std::time::{Duration, Instant};

use chaosbot::report::chart;
use journal::Shape;

fn time<T>(rounds: usize, mut f: impl FnMut() -> T) -> (Duration, Duration, T) {
    let mut times = Vec::with_capacity(rounds);
    let mut last = None;
    for _ in 0..rounds {
        let start = Instant::now();
        last = Some(f());
        times.push(start.elapsed());
    }
    times.sort();
    let out = last.expect("at least one round");
    (times[times.len() / 2], times[times.len() - 1], out)
}

fn main() {
    let rounds: usize = std::env::var("CHART_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
        .max(1);
    let out_dir = std::env::var("CHART_BENCH_OUT").ok();
    println!("run chart render time, median / worst of {rounds} rounds (journal → picture)");
    println!(
        "{:<34} {:>10} {:>10} {:>10}",
        "run", "median", "worst", "bytes"
    );
    for (name, shape) in [
        (
            "10 min, 4 samples/s, load step",
            Shape {
                seconds: 600,
                samples_per_second: 4,
                with_load: true,
                all_fail: false,
            },
        ),
        (
            "10 h, 1 sample/s",
            Shape {
                seconds: 36_000,
                samples_per_second: 1,
                with_load: false,
                all_fail: false,
            },
        ),
    ] {
        let (run, entries) = journal::finished_run("r-bench", &shape);
        let end = run.finished_ms.unwrap_or(journal::T0);
        let (med, worst, png) = time(rounds, || {
            chart::render_png(&chart::build(&run, &entries, end)).expect("the chart renders")
        });
        println!(
            "{:<34} {:>8.1}ms {:>8.1}ms {:>10}",
            format!("{name} → PNG"),
            med.as_secs_f64() * 1000.0,
            worst.as_secs_f64() * 1000.0,
            png.len()
        );
        let (med, worst, svg) = time(rounds, || {
            chart::render_svg(&chart::build(&run, &entries, end)).expect("the chart renders")
        });
        println!(
            "{:<34} {:>8.1}ms {:>8.1}ms {:>10}",
            format!("{name} → SVG"),
            med.as_secs_f64() * 1000.0,
            worst.as_secs_f64() * 1000.0,
            svg.len()
        );
        if let Some(dir) = &out_dir {
            let stem = if shape.seconds > 3600 {
                "ten-hours"
            } else {
                "ten-minutes"
            };
            let _ = std::fs::write(format!("{dir}/{stem}.png"), &png);
            let _ = std::fs::write(format!("{dir}/{stem}.svg"), &svg);
        }
    }
    println!("target: ≤ 100 ms for the ten-minute run");
}
