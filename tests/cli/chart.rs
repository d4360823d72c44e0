//! The run chart: what it is built from the journal, and that PNG and SVG render for every
//! shape of run, empty ones included.

use crate::support::journal::{self, Shape};

use chaosbot::report::chart::{self, MarkKind};
use chaosbot::run::{RunState, Verdict};

/// Decodes a PNG fully (header and every pixel) and returns its size and pixels (RGB or RGBA).
fn decode_png(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().expect("a readable PNG header");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("readable PNG pixels");
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

/// How many distinct colours the picture uses (text and lines anti-aliased: many; blank: 1).
fn colours(rgb: &[u8]) -> usize {
    let mut seen = std::collections::HashSet::new();
    for px in rgb.chunks(3) {
        seen.insert((px[0], px[1], px[2]));
    }
    seen.len()
}

fn pixels_close_to(rgb: &[u8], want: (u8, u8, u8)) -> usize {
    rgb.chunks(3)
        .filter(|p| {
            (p[0] as i32 - want.0 as i32).abs() < 12
                && (p[1] as i32 - want.1 as i32).abs() < 12
                && (p[2] as i32 - want.2 as i32).abs() < 12
        })
        .count()
}

#[test]
fn a_ten_minute_run_shows_percentiles_failures_the_fault_and_the_marks() {
    let shape = Shape {
        seconds: 600,
        samples_per_second: 4,
        with_load: true,
        all_fail: false,
    };
    let (run, entries) = journal::finished_run("r-chart10min", &shape);
    let c = chart::build(&run, &entries, run.finished_ms.unwrap());
    assert_eq!(c.bucket_ms, 1000, "ten minutes: one bucket per second");
    assert_eq!(c.span_ms, 600_000);
    assert_eq!(c.probes.len(), 1);
    let p = &c.probes[0];
    assert_eq!(p.samples, 2400);
    assert_eq!(p.buckets.len(), 600);
    assert!(p.failed > 0);
    // Before the fault the probe answers in ~8-17 ms; during it, 250 ms more.
    let before = &p.buckets[10];
    let during = &p.buckets[300];
    assert!(before.p99_ms < 20.0, "{before:?}");
    assert!(during.p50_ms > 250.0, "{during:?}");
    assert!(during.p99_ms >= during.p50_ms);
    assert!(during.failed > 0 && before.failed == 0);
    // The fault window, closed by its revert.
    assert_eq!(c.faults.len(), 1);
    let w = &c.faults[0];
    assert_eq!((w.start_ms, w.closed), (150_000, true));
    assert_eq!(w.end_ms, 450_005);
    let kinds: Vec<MarkKind> = c.marks.iter().map(|m| m.kind).collect();
    assert_eq!(
        kinds,
        [MarkKind::Breach, MarkKind::StopCondition, MarkKind::Abort]
    );
    // The load step: achieved against the target, per second.
    assert_eq!(c.loads.len(), 1);
    assert!(c.loads[0].points.len() >= 299);
    assert!(c.loads[0].points.iter().all(|p| p.target_rps == 200.0));

    let png = chart::render_png(&c).unwrap();
    let (w, h, px) = decode_png(&png);
    assert_eq!(w, 1200);
    assert!(h > 400, "a header, a probe panel and a load panel: {h}");
    assert!(colours(&px) > 50, "text, lines and shading are drawn");
    // The fault window's shading and the failure bars are on the picture.
    assert!(
        pixels_close_to(&px, (255, 228, 204)) > 5_000,
        "fault shading"
    );
    assert!(pixels_close_to(&px, (235, 157, 157)) > 200, "failure bars");
    assert!(
        png.len() > 10_000 && png.len() < 1_000_000,
        "{} bytes",
        png.len()
    );

    let svg = chart::render_svg(&c).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
    for needle in [
        "probe api-ok: 2400 samples",
        "slow-responses (latency)",
        "breach: api-ok",
        "stop condition: api-ok",
        "abort: stop condition",
        "load slow-responses",
        "achieved rate",
        "ABORTED (reverted)",
    ] {
        assert!(svg.contains(needle), "SVG lacks {needle:?}");
    }
    if let Ok(dir) = std::env::var("CHART_SAMPLES") {
        std::fs::write(format!("{dir}/ten-minutes.png"), &png).unwrap();
    }
}

#[test]
fn a_ten_hour_run_is_drawn_in_wide_buckets() {
    let shape = Shape {
        seconds: 36_000,
        samples_per_second: 1,
        with_load: false,
        all_fail: false,
    };
    let (run, entries) = journal::finished_run("r-chart10h", &shape);
    let c = chart::build(&run, &entries, run.finished_ms.unwrap());
    assert_eq!(c.bucket_ms, 60_000);
    assert_eq!(c.bucket_label(), "1 min");
    assert_eq!(c.probes[0].buckets.len(), 600);
    let (w, h, px) = decode_png(&chart::render_png(&c).unwrap());
    assert_eq!((w, h > 250), (1200, true));
    assert!(colours(&px) > 50);
    let svg = chart::render_svg(&c).unwrap();
    assert!(svg.contains("10:00:00"), "the header says how long it ran");
    assert!(svg.contains("per 1 min bucket"));
}

#[test]
fn empty_runs_render_and_say_why() {
    // Still queued: nothing but the submission.
    let queued = journal::record("r-queued", RunState::Queued, None);
    let (_, entries) = journal::finished_run(
        "r-queued",
        &Shape {
            seconds: 0,
            samples_per_second: 1,
            with_load: false,
            all_fail: false,
        },
    );
    let only_submitted = &entries[..1];
    let c = chart::build(&queued, only_submitted, journal::T0 + 2_000);
    assert_eq!(
        c.empty_reason().as_deref(),
        Some("No samples yet: the run is still queued")
    );
    let svg = chart::render_svg(&c).unwrap();
    assert!(svg.contains("No samples yet: the run is still queued"));
    let (w, h, px) = decode_png(&chart::render_png(&c).unwrap());
    assert_eq!((w, h), (1200, 264));
    assert!(
        colours(&px) > 10,
        "the empty state is written on the picture"
    );

    // Finished with no sample at all (the run failed before probing).
    let failed = journal::record("r-failed", RunState::Done, Some(Verdict::Failed));
    let c = chart::build(&failed, &[], journal::T0);
    assert_eq!(
        c.empty_reason().as_deref(),
        Some("No probe samples: the run recorded none before it ended")
    );
    assert!(chart::render_png(&c).is_ok());
    assert!(chart::render_svg(&c).unwrap().contains("FAILED"));

    // Every sample failed: still a chart, and it says so.
    let (run, entries) = journal::finished_run(
        "r-allfail",
        &Shape {
            seconds: 60,
            samples_per_second: 4,
            with_load: false,
            all_fail: true,
        },
    );
    let c = chart::build(&run, &entries, run.finished_ms.unwrap());
    assert_eq!(c.probes[0].failed, c.probes[0].samples);
    assert!(c.empty_reason().is_none());
    let svg = chart::render_svg(&c).unwrap();
    assert!(svg.contains("every sample failed"), "the caption says so");
    assert!(chart::render_png(&c).is_ok());
}

#[test]
fn the_live_view_sparkline_follows_the_latest_latencies() {
    use chaosbot::report::live::sparkline;
    assert_eq!(
        sparkline(&[Some(10.0), Some(20.0), Some(80.0), Some(10.0)]),
        "▁▂█▁"
    );
    // A failed sample is marked; the rest still scale between the window's lowest and highest.
    assert_eq!(sparkline(&[Some(5.0), None, Some(12.0)]), "▁✗█");
    assert_eq!(
        sparkline(&[Some(3.0), Some(3.0)]),
        "▁▁",
        "flat when all the same"
    );
    assert_eq!(sparkline(&[None, None]), "✗✗");
    assert_eq!(sparkline(&[]), "");
}
