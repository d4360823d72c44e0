//! Drawing a [`RunChart`] on any plotters backend (PNG through the bitmap backend, SVG).

use std::error::Error;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::data::{LoadSeries, MarkKind, ProbeSeries, RunChart};
use super::{FONT, clock};

pub(super) type DrawResult = Result<(), Box<dyn Error + Send + Sync>>;

pub const WIDTH: u32 = 1200;
const HEADER: u32 = 64;
const PROBE_PANEL: u32 = 250;
const LOAD_PANEL: u32 = 220;
const EMPTY_PANEL: u32 = 200;

const P50: RGBColor = RGBColor(31, 119, 180);
const P99: RGBColor = RGBColor(255, 127, 14);
const FAILED: RGBColor = RGBColor(214, 39, 40);
const FAULT: RGBColor = RGBColor(255, 187, 120);
const LIMIT: RGBColor = RGBColor(120, 120, 120);
const ACHIEVED: RGBColor = RGBColor(44, 160, 44);
const GREY: RGBColor = RGBColor(90, 90, 90);

fn mark_color(kind: MarkKind) -> RGBColor {
    match kind {
        MarkKind::Breach => RGBColor(200, 0, 0),
        MarkKind::StopCondition => RGBColor(148, 103, 189),
        MarkKind::Abort => RGBColor(0, 0, 0),
        MarkKind::Failure => RGBColor(140, 86, 75),
    }
}

fn verdict_color(verdict: Option<&str>) -> RGBColor {
    match verdict {
        Some("held") => RGBColor(44, 160, 44),
        Some("deviated") => RGBColor(214, 39, 40),
        Some("aborted") => RGBColor(148, 103, 189),
        Some("failed") => RGBColor(140, 86, 75),
        _ => GREY,
    }
}

/// The picture's height for this chart.
pub fn height(chart: &RunChart) -> u32 {
    let panels = chart.probes.len() as u32 * PROBE_PANEL + chart.loads.len() as u32 * LOAD_PANEL;
    HEADER + if panels == 0 { EMPTY_PANEL } else { panels }
}

pub(super) fn draw<DB>(root: &DrawingArea<DB, Shift>, chart: &RunChart) -> DrawResult
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let (header, body) = root.split_vertically(HEADER);
    draw_header(&header, chart)?;
    if let Some(why) = chart.empty_reason() {
        let (w, h) = body.dim_in_pixel();
        body.draw(&Rectangle::new(
            [(20, 10), (w as i32 - 20, h as i32 - 20)],
            ShapeStyle::from(&LIMIT).stroke_width(1),
        ))?;
        let style = (FONT, 22)
            .into_font()
            .color(&GREY)
            .pos(Pos::new(HPos::Center, VPos::Center));
        body.draw_text(&why, &style, (w as i32 / 2, h as i32 / 2 - 5))?;
        return Ok(());
    }
    let mut rest = body;
    for p in &chart.probes {
        let (panel, below) = rest.split_vertically(PROBE_PANEL);
        draw_probe(&panel, chart, p)?;
        rest = below;
    }
    for l in &chart.loads {
        let (panel, below) = rest.split_vertically(LOAD_PANEL);
        draw_load(&panel, chart, l)?;
        rest = below;
    }
    Ok(())
}

fn draw_header<DB>(area: &DrawingArea<DB, Shift>, chart: &RunChart) -> DrawResult
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
{
    let title = (FONT, 22).into_font().color(&BLACK);
    area.draw_text(&chart.title, &title, (20, 10))?;
    let verdict = match (&chart.verdict, &chart.rollback) {
        (Some(v), Some(r)) => format!("{} ({r})", v.to_uppercase()),
        (Some(v), None) => v.to_uppercase(),
        (None, _) => format!("{} (running)", chart.state),
    };
    let v_style = (FONT, 18)
        .into_font()
        .color(&verdict_color(chart.verdict.as_deref()))
        .pos(Pos::new(HPos::Right, VPos::Top));
    area.draw_text(&verdict, &v_style, (WIDTH as i32 - 20, 12))?;
    let sub = (FONT, 14).into_font().color(&GREY);
    let faults: Vec<String> = chart
        .faults
        .iter()
        .map(|f| format!("{} ({})", f.step, f.fault))
        .collect();
    let line = format!(
        "{} · {} · {} · per {} bucket{}",
        chart.run_id,
        chart.experiment,
        clock(chart.span_ms as f64 / 1000.0),
        chart.bucket_label(),
        if faults.is_empty() {
            String::new()
        } else {
            format!(" · shaded: {}", faults.join(", "))
        }
    );
    area.draw_text(&line, &sub, (20, 40))?;
    Ok(())
}

/// Shades the fault windows and draws the marks on a panel's plotting area, with their labels.
fn draw_windows_and_marks<DB, CT>(
    chart_ctx: &mut ChartContext<'_, DB, CT>,
    chart: &RunChart,
    y_top: f64,
) -> DrawResult
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
    CT: plotters::coord::CoordTranslate<From = (f64, f64)>,
{
    let label = (FONT, 12).into_font().color(&GREY);
    for w in &chart.faults {
        let (x0, x1) = (w.start_ms as f64 / 1000.0, w.end_ms as f64 / 1000.0);
        chart_ctx.draw_series(std::iter::once(Rectangle::new(
            [(x0, 0.0), (x1.max(x0), y_top)],
            FAULT.mix(0.35).filled(),
        )))?;
        chart_ctx.draw_series(std::iter::once(Text::new(
            format!("{} ({})", w.step, w.fault),
            (x0, y_top),
            label.clone(),
        )))?;
    }
    for (i, m) in chart.marks.iter().enumerate() {
        let x = m.at_ms as f64 / 1000.0;
        let color = mark_color(m.kind);
        chart_ctx.draw_series(std::iter::once(PathElement::new(
            vec![(x, 0.0), (x, y_top)],
            ShapeStyle::from(&color).stroke_width(2),
        )))?;
        // Staggered so marks close together stay readable.
        let y = y_top * (0.9 - 0.1 * (i % 4) as f64);
        chart_ctx.draw_series(std::iter::once(Text::new(
            format!(" {}: {}", m.kind.label(), m.label),
            (x, y),
            (FONT, 12).into_font().color(&color),
        )))?;
    }
    Ok(())
}

/// Axis numbers without decimals unless they are small fractions.
fn whole(v: &f64) -> String {
    if v.fract().abs() < 1e-9 || v.abs() >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn x_max(chart: &RunChart) -> f64 {
    (chart.span_ms as f64 / 1000.0).max(1.0)
}

fn draw_probe<DB>(area: &DrawingArea<DB, Shift>, chart: &RunChart, p: &ProbeSeries) -> DrawResult
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
{
    let all_failed = p.samples > 0 && p.failed == p.samples;
    let caption = format!(
        "probe {}: {} samples, {} failed{}",
        p.probe,
        p.samples,
        p.failed,
        if all_failed {
            " (every sample failed: latency is the time to failure)"
        } else {
            ""
        }
    );
    let top = p
        .buckets
        .iter()
        .map(|b| b.p99_ms)
        .chain(p.max_latency_ms)
        .fold(1.0_f64, f64::max)
        * 1.2;
    let fail_top = p.buckets.iter().map(|b| b.failed).max().unwrap_or(0).max(1) as f64 * 1.2;
    let xm = x_max(chart);
    let mut c = ChartBuilder::on(area)
        .caption(caption, (FONT, 16))
        .margin(10)
        .margin_right(20)
        .x_label_area_size(28)
        .y_label_area_size(60)
        .right_y_label_area_size(50)
        .build_cartesian_2d(0.0..xm, 0.0..top)?
        .set_secondary_coord(0.0..xm, 0.0..fail_top);
    let fmt_x = |x: &f64| clock(*x);
    c.configure_mesh()
        .x_label_formatter(&fmt_x)
        .y_desc("latency ms")
        .y_label_formatter(&whole)
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 12))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.08))
        .draw()?;
    c.configure_secondary_axes()
        .y_desc(format!("failed / {}", chart.bucket_label()))
        .y_label_formatter(&whole)
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 12))
        .draw()?;
    draw_windows_and_marks(&mut c, chart, top)?;

    let bucket_s = chart.bucket_ms as f64 / 1000.0;
    c.draw_secondary_series(p.buckets.iter().filter(|b| b.failed > 0).map(|b| {
        let x0 = b.start_ms as f64 / 1000.0;
        Rectangle::new(
            [(x0, 0.0), (x0 + bucket_s, b.failed as f64)],
            FAILED.mix(0.45).filled(),
        )
    }))?
    .label("failed")
    .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], FAILED.mix(0.45).filled()));
    let mid = |start_ms: i64| start_ms as f64 / 1000.0 + bucket_s / 2.0;
    c.draw_series(LineSeries::new(
        p.buckets.iter().map(|b| (mid(b.start_ms), b.p99_ms)),
        ShapeStyle::from(&P99).stroke_width(2),
    ))?
    .label("p99")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], P99.stroke_width(2)));
    c.draw_series(LineSeries::new(
        p.buckets.iter().map(|b| (mid(b.start_ms), b.p50_ms)),
        ShapeStyle::from(&P50).stroke_width(2),
    ))?
    .label("p50")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], P50.stroke_width(2)));
    if let Some(max) = p.max_latency_ms {
        c.draw_series(DashedLineSeries::new(
            [(0.0, max), (xm, max)],
            6,
            4,
            ShapeStyle::from(&LIMIT).stroke_width(1),
        ))?
        .label(format!("max_latency {max:.0} ms"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], LIMIT));
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font((FONT, 12))
        .draw()?;
    Ok(())
}

fn draw_load<DB>(area: &DrawingArea<DB, Shift>, chart: &RunChart, l: &LoadSeries) -> DrawResult
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
{
    let rate_top = l
        .points
        .iter()
        .flat_map(|p| [p.achieved_rps, p.target_rps])
        .fold(1.0_f64, f64::max)
        * 1.2;
    let p99_top = l
        .points
        .iter()
        .map(|p| p.p99_ms)
        .chain(l.p99_limit_ms)
        .fold(1.0_f64, f64::max)
        * 1.2;
    let xm = x_max(chart);
    let mut c = ChartBuilder::on(area)
        .caption(
            format!("load {}: achieved rate against the target, p99", l.step),
            (FONT, 16),
        )
        .margin(10)
        .margin_right(20)
        .x_label_area_size(28)
        .y_label_area_size(60)
        .right_y_label_area_size(50)
        .build_cartesian_2d(0.0..xm, 0.0..rate_top)?
        .set_secondary_coord(0.0..xm, 0.0..p99_top);
    let fmt_x = |x: &f64| clock(*x);
    c.configure_mesh()
        .x_label_formatter(&fmt_x)
        .y_desc("requests / s")
        .y_label_formatter(&whole)
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 12))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.08))
        .draw()?;
    c.configure_secondary_axes()
        .y_desc("p99 ms")
        .y_label_formatter(&whole)
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 12))
        .draw()?;
    draw_windows_and_marks(&mut c, chart, rate_top)?;
    let x = |at_ms: i64| at_ms as f64 / 1000.0;
    if l.points.iter().any(|p| p.target_rps > 0.0) {
        c.draw_series(DashedLineSeries::new(
            l.points.iter().map(|p| (x(p.at_ms), p.target_rps)),
            6,
            4,
            ShapeStyle::from(&LIMIT).stroke_width(2),
        ))?
        .label("target rate")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], LIMIT.stroke_width(2)));
    }
    c.draw_series(LineSeries::new(
        l.points.iter().map(|p| (x(p.at_ms), p.achieved_rps)),
        ShapeStyle::from(&ACHIEVED).stroke_width(2),
    ))?
    .label("achieved rate")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], ACHIEVED.stroke_width(2)));
    c.draw_secondary_series(LineSeries::new(
        l.points.iter().map(|p| (x(p.at_ms), p.p99_ms)),
        ShapeStyle::from(&P99).stroke_width(2),
    ))?
    .label("p99 (right axis)")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], P99.stroke_width(2)));
    if let Some(limit) = l.p99_limit_ms {
        c.draw_secondary_series(DashedLineSeries::new(
            [(0.0, limit), (xm, limit)],
            6,
            4,
            ShapeStyle::from(&FAILED).stroke_width(1),
        ))?
        .label(format!("p99 threshold {limit:.0} ms"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], FAILED));
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font((FONT, 12))
        .draw()?;
    Ok(())
}
