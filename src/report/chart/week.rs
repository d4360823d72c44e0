//! The chart of a week, for the weekly digest: runs per day by verdict (stacked), and the mean
//! time to detect and to recover of this week against the weeks before.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{ChartError, FONT, encode_png, ensure_font};

/// The verdicts, in stacking order, with their colours.
const VERDICTS: [(&str, RGBColor); 4] = [
    ("held", RGBColor(44, 160, 44)),
    ("deviated", RGBColor(214, 39, 40)),
    ("aborted", RGBColor(148, 103, 189)),
    ("failed", RGBColor(140, 86, 75)),
];

/// One day of the week.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Day {
    /// "Mon 24".
    pub label: String,
    pub held: u32,
    pub deviated: u32,
    pub aborted: u32,
    pub failed: u32,
}

impl Day {
    fn counts(&self) -> [u32; 4] {
        [self.held, self.deviated, self.aborted, self.failed]
    }

    /// Counts one finished run by its verdict name (unfinished runs are not counted).
    pub fn add(&mut self, verdict: &str) {
        match verdict {
            "held" => self.held += 1,
            "deviated" => self.deviated += 1,
            "aborted" => self.aborted += 1,
            "failed" => self.failed += 1,
            _ => {}
        }
    }
}

/// The mean times of one week (none when no run of it measured one).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WeekTimes {
    /// "this week", "1 week before", ...
    pub label: String,
    pub detect_ms: Option<f64>,
    pub recover_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct WeekChart {
    pub title: String,
    pub days: Vec<Day>,
    /// Oldest first, this week last.
    pub weeks: Vec<WeekTimes>,
}

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 420;

type DrawResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn draw<DB>(root: &DrawingArea<DB, plotters::coord::Shift>, w: &WeekChart) -> DrawResult
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let (header, body) = root.split_vertically(44);
    header.draw_text(&w.title, &(FONT, 22).into_font().color(&BLACK), (20, 10))?;
    let (left, right) = body.split_horizontally(WIDTH * 11 / 20);

    // Runs per day, stacked by verdict.
    let top = w
        .days
        .iter()
        .map(|d| d.counts().iter().sum::<u32>())
        .max()
        .unwrap_or(0)
        .max(1) as f64
        * 1.2;
    let n = w.days.len().max(1);
    let labels: Vec<String> = w.days.iter().map(|d| d.label.clone()).collect();
    let mut c = ChartBuilder::on(&left)
        .caption("runs per day by verdict", (FONT, 16))
        .margin(10)
        .x_label_area_size(28)
        .y_label_area_size(40)
        .build_cartesian_2d(0.0..n as f64, 0.0..top)?;
    let fmt_x = |x: &f64| {
        let i = x.floor() as usize;
        if (x - x.floor() - 0.5).abs() < 0.01 {
            labels.get(i).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    let fmt_y = |y: &f64| format!("{y:.0}");
    c.configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&fmt_x)
        .y_label_formatter(&fmt_y)
        .y_desc("runs")
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 12))
        .bold_line_style(BLACK.mix(0.08))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for (k, (name, color)) in VERDICTS.iter().enumerate() {
        let bars = w.days.iter().enumerate().filter_map(move |(i, d)| {
            let counts = d.counts();
            let below: u32 = counts[..k].iter().sum();
            (counts[k] > 0).then(|| {
                Rectangle::new(
                    [
                        (i as f64 + 0.15, below as f64),
                        (i as f64 + 0.85, (below + counts[k]) as f64),
                    ],
                    color.filled(),
                )
            })
        });
        let color = *color;
        c.draw_series(bars)?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled()));
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font((FONT, 12))
        .draw()?;

    // Mean time to detect and to recover, week by week.
    let secs = |v: Option<f64>| v.map(|ms| ms / 1000.0);
    let top = w
        .weeks
        .iter()
        .flat_map(|t| [secs(t.detect_ms), secs(t.recover_ms)])
        .flatten()
        .fold(1.0_f64, f64::max)
        * 1.25;
    let m = w.weeks.len().max(1);
    let week_labels: Vec<String> = w.weeks.iter().map(|t| t.label.clone()).collect();
    let mut c = ChartBuilder::on(&right)
        .caption("mean time to detect and to recover", (FONT, 16))
        .margin(10)
        .margin_right(20)
        .x_label_area_size(28)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..m as f64, 0.0..top)?;
    let fmt_x = |x: &f64| {
        let i = x.floor() as usize;
        if (x - x.floor() - 0.5).abs() < 0.01 {
            week_labels.get(i).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    c.configure_mesh()
        .disable_x_mesh()
        .x_labels(m * 2 + 1)
        .x_label_formatter(&fmt_x)
        .y_desc("seconds")
        .label_style((FONT, 11))
        .axis_desc_style((FONT, 12))
        .bold_line_style(BLACK.mix(0.08))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    let detect = RGBColor(31, 119, 180);
    let recover = RGBColor(255, 127, 14);
    for (offset, color, name, pick) in [
        (0.12, detect, "time to detect", 0usize),
        (0.52, recover, "time to recover", 1usize),
    ] {
        let bars = w.weeks.iter().enumerate().filter_map(move |(i, t)| {
            let v = if pick == 0 {
                secs(t.detect_ms)
            } else {
                secs(t.recover_ms)
            }?;
            Some(Rectangle::new(
                [(i as f64 + offset, 0.0), (i as f64 + offset + 0.36, v)],
                color.filled(),
            ))
        });
        c.draw_series(bars)?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled()));
    }
    if w.weeks
        .iter()
        .all(|t| t.detect_ms.is_none() && t.recover_ms.is_none())
    {
        let style = (FONT, 16)
            .into_font()
            .color(&RGBColor(90, 90, 90))
            .pos(Pos::new(HPos::Center, VPos::Center));
        c.draw_series(std::iter::once(Text::new(
            "no run measured a time to detect or to recover",
            (m as f64 / 2.0, top / 2.0),
            style,
        )))?;
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font((FONT, 12))
        .draw()?;
    Ok(())
}

/// The week's chart as a PNG image.
pub fn render_png(w: &WeekChart) -> Result<Vec<u8>, ChartError> {
    ensure_font()?;
    let mut buf = vec![0u8; WIDTH as usize * HEIGHT as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, w).map_err(|e| ChartError::Draw(e.to_string()))?;
        root.present()
            .map_err(|e| ChartError::Draw(e.to_string()))?;
    }
    encode_png(&buf, WIDTH, HEIGHT)
}

/// The week's chart as an SVG document.
pub fn render_svg(w: &WeekChart) -> Result<String, ChartError> {
    ensure_font()?;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, w).map_err(|e| ChartError::Draw(e.to_string()))?;
        root.present()
            .map_err(|e| ChartError::Draw(e.to_string()))?;
    }
    Ok(out)
}

use crate::report::period::DAY_MS;

/// Reads the week `[from_ms, from_ms + 7 days)` and the `weeks_before` weeks before it from the
/// store and builds its chart. Days are labelled by their UTC date.
pub async fn load(
    store: &crate::store::DynStore,
    title: &str,
    from_ms: i64,
    weeks_before: u32,
) -> crate::store::StoreResult<WeekChart> {
    let week_ms = 7 * DAY_MS;
    let mut days: Vec<Day> = (0..7)
        .map(|i| Day {
            label: chrono::DateTime::from_timestamp_millis(from_ms + i * DAY_MS)
                .map(|d| d.format("%a %d").to_string())
                .unwrap_or_default(),
            ..Day::default()
        })
        .collect();
    let mut weeks = Vec::new();
    for back in (0..=i64::from(weeks_before)).rev() {
        let start = from_ms - back * week_ms;
        let runs = store.runs_between(start, start + week_ms).await?;
        let (mut detect, mut recover) = (Vec::new(), Vec::new());
        for run in &runs {
            let journal = store.journal(&run.id, 0).await?;
            let s = crate::report::summarize(run, &journal);
            detect.extend(s.time_to_detect_ms);
            recover.extend(s.time_to_recover_ms);
            if back == 0
                && let (Some(v), Ok(i)) = (
                    &s.verdict,
                    usize::try_from((run.created_ms - from_ms) / DAY_MS),
                )
                && let Some(day) = days.get_mut(i)
            {
                day.add(v);
            }
        }
        let mean = |v: &[i64]| {
            (!v.is_empty()).then(|| v.iter().map(|x| *x as f64).sum::<f64>() / v.len() as f64)
        };
        weeks.push(WeekTimes {
            label: match back {
                0 => "this week".to_string(),
                1 => "1 week before".to_string(),
                n => format!("{n} weeks before"),
            },
            detect_ms: mean(&detect),
            recover_ms: mean(&recover),
        });
    }
    Ok(WeekChart {
        title: title.to_string(),
        days,
        weeks,
    })
}
