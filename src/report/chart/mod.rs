//! The run chart: the run's journal as a picture, for its Slack thread (PNG), its markdown
//! report (SVG) and the live run page. Per probe, latency p50 and p99 and failures over time;
//! each fault's window shaded and labelled; breaches, stop conditions and the abort marked; per
//! load step, the achieved rate and p99 against the target.
//!
//! Rendered in-process with plotters; the font is embedded ([`FONT_BYTES`], DejaVu Sans, its
//! licence beside it in `assets/fonts/`), so a bare machine draws the same picture.

mod data;
mod draw;
pub mod week;

use std::sync::OnceLock;

use plotters::prelude::*;

pub use data::{
    Bucket, FaultWindow, LoadPoint, LoadSeries, Mark, MarkKind, ProbeSeries, RunChart, build,
};

/// The family every chart text uses; registered with plotters as this name, and what the SVG
/// names (viewers fall back to their own sans-serif).
pub(crate) const FONT: &str = "sans-serif";

/// DejaVu Sans, embedded (licence: `assets/fonts/LICENSE-DejaVu.txt`).
pub static FONT_BYTES: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");

#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("the chart font cannot be loaded (the embedded font is damaged; rebuild chaosbot)")]
    Font,
    #[error("drawing the chart failed: {0}")]
    Draw(String),
    #[error("encoding the chart as PNG failed: {0}")]
    Encode(String),
}

fn ensure_font() -> Result<(), ChartError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok()
    });
    if ok { Ok(()) } else { Err(ChartError::Font) }
}

/// Seconds as a clock on the time axis: `0:42`, `12:05`, `3:07:00`.
pub(crate) fn clock(s: f64) -> String {
    let total = s.max(0.0).round() as i64;
    let (h, m, sec) = (total / 3600, (total / 60) % 60, total % 60);
    if h > 0 {
        format!("{h}:{m:02}:{sec:02}")
    } else {
        format!("{m}:{sec:02}")
    }
}

/// Encodes an RGB buffer as PNG.
pub(crate) fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, ChartError> {
    let mut out = Vec::with_capacity(rgb.len() / 8);
    {
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        // Charts are mostly flat colour: fast compression is nearly as small and much quicker.
        enc.set_compression(png::Compression::Fast);
        let mut w = enc
            .write_header()
            .map_err(|e| ChartError::Encode(e.to_string()))?;
        w.write_image_data(rgb)
            .map_err(|e| ChartError::Encode(e.to_string()))?;
    }
    Ok(out)
}

/// The chart as a PNG image.
pub fn render_png(chart: &RunChart) -> Result<Vec<u8>, ChartError> {
    ensure_font()?;
    let (w, h) = (draw::WIDTH, draw::height(chart));
    let mut buf = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        draw::draw(&root, chart).map_err(|e| ChartError::Draw(e.to_string()))?;
        root.present()
            .map_err(|e| ChartError::Draw(e.to_string()))?;
    }
    encode_png(&buf, w, h)
}

/// The chart as an SVG document.
pub fn render_svg(chart: &RunChart) -> Result<String, ChartError> {
    ensure_font()?;
    let (w, h) = (draw::WIDTH, draw::height(chart));
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (w, h)).into_drawing_area();
        draw::draw(&root, chart).map_err(|e| ChartError::Draw(e.to_string()))?;
        root.present()
            .map_err(|e| ChartError::Draw(e.to_string()))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::clock;

    #[test]
    fn clock_reads_like_a_clock() {
        assert_eq!(clock(0.0), "0:00");
        assert_eq!(clock(42.4), "0:42");
        assert_eq!(clock(725.0), "12:05");
        assert_eq!(clock(36_000.0), "10:00:00");
    }
}
