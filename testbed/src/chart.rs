//! The picture of a run: every leecher's % complete over time (one line per host), the seed's
//! cumulative upload as a multiple of F (black, in %: 100 % = one full copy), and a dashed red
//! vertical line at T_min. A leecher whose line flattens while others climb was waiting; a
//! seed line climbing past 100 % means the seed sent pieces more than once.

use std::path::Path;

use plotters::prelude::*;

use crate::report::{ReportError, RunResult};

const SIZE: (u32, u32) = (1100, 650);

/// Sixteen colours that stay apart on white (no red: red marks T_min; no black: the seed).
const HOST_COLORS: [(u8, u8, u8); 16] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (0, 0, 128),
    (128, 128, 0),
    (0, 128, 128),
    (145, 30, 180),
    (170, 110, 40),
    (60, 180, 75),
    (240, 50, 230),
];

/// Draws `result` as an SVG at `path`.
pub fn draw(result: &RunResult, path: &Path) -> Result<(), ReportError> {
    draw_inner(result, path).map_err(|message| ReportError::Chart { path: path.to_path_buf(), message })
}

fn draw_inner(result: &RunResult, path: &Path) -> Result<(), String> {
    let f = result.parameters.content_bytes.max(1) as f64;
    let t_min = result.bound.t_min_secs;
    let t_end = result.hosts.iter().flat_map(|h| h.samples.last()).map(|s| s.t).fold(0.0, f64::max);
    let x_max = (t_end.max(t_min) * 1.05).max(0.1);
    let seed_pct = result.hosts.first().map_or(0.0, |seed| seed.uploaded as f64 / f * 100.0);
    let y_max = (seed_pct.max(100.0) * 1.05).ceil();

    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let title = format!("{} — {}", result.name, result.title);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("seconds since every leecher added the descriptor")
        .y_desc("% of the content (seed: uploaded / F)")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| e.to_string())?;

    for (i, host) in result.hosts.iter().enumerate().skip(1) {
        let (r, g, b) = HOST_COLORS[(i - 1) % HOST_COLORS.len()];
        let color = RGBColor(r, g, b).to_rgba();
        let points: Vec<(f64, f64)> = host.samples.iter().map(|s| (s.t, s.done as f64 / f * 100.0)).collect();
        let label = match host.completed_at_secs {
            Some(c) => format!("{} ({}) done {c:.1} s", host.label, host.address),
            None => format!("{} ({}) unfinished", host.label, host.address),
        };
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    if let Some(seed) = result.hosts.first() {
        let points: Vec<(f64, f64)> = seed.samples.iter().map(|s| (s.t, s.up as f64 / f * 100.0)).collect();
        chart
            .draw_series(LineSeries::new(points, BLACK.stroke_width(3)))
            .map_err(|e| e.to_string())?
            .label(format!("seed uploaded / F ({:.2}×)", seed_pct / 100.0))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(3)));
    }
    chart
        .draw_series(DashedLineSeries::new(vec![(t_min, 0.0), (t_min, y_max)], 8, 6, RED.stroke_width(2)))
        .map_err(|e| e.to_string())?
        .label(format!("T_min = {t_min:.2} s"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font(("sans-serif", 12))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
