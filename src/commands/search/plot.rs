//! frontier.svg: model size (or, with --objective latency, the predicted time per token)
//! against held-out perplexity (log scale); the searched mixed plans as a line, the uniform models as labelled triangles, full precision as a horizontal line (its
//! f32 size would stretch the axis). Plotters' SVG backend writes text as <text> elements, so no
//! system fonts are needed.

use super::Verified;
use anyhow::{anyhow, Result};
use plotters::prelude::*;
use pqc::quant::Bits;

const WIDTH: u32 = 960;
const HEIGHT: u32 = 600;

/// The x axis: MB, or milliseconds per token (`Verified::amount` in nanoseconds).
fn xy(v: &Verified, latency: bool) -> (f64, f64) {
    match latency {
        true => (v.amount as f64 / 1e6, v.perplexity),
        false => (v.size.megabytes(), v.perplexity),
    }
}

/// The plotted ranges: sizes with a margin, perplexities padded on the log axis (more above, for
/// the labels of the highest points).
fn ranges(points: &[(f64, f64)], base_ppl: f64) -> ((f64, f64), (f64, f64)) {
    let (mut x0, mut x1) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut y0, mut y1) = (base_ppl, base_ppl);
    for &(x, y) in points {
        (x0, x1) = (x0.min(x), x1.max(x));
        (y0, y1) = (y0.min(y), y1.max(y));
    }
    let pad = ((x1 - x0) * 0.06).max(x1.abs() * 1e-3).max(1e-6);
    ((x0 - pad, x1 + pad), (y0 / 1.25, y1 * 2.5))
}

pub fn frontier_svg(
    base: &Verified,
    uniform: Vec<&Verified>,
    mixed: Vec<&Verified>,
    latency: bool,
) -> Result<String> {
    let mut svg = String::new();
    draw(&mut svg, base, &uniform, &mixed, latency).map_err(|e| anyhow!("frontier.svg: {e}"))?;
    Ok(svg)
}

fn draw(
    svg: &mut String,
    base: &Verified,
    uniform: &[&Verified],
    mixed: &[&Verified],
    latency: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let point = |v: &Verified| xy(v, latency);
    let all: Vec<(f64, f64)> = uniform.iter().chain(mixed).map(|v| point(v)).collect();
    let (caption, x_desc) = match latency {
        true => (
            "Pareto search: decode time vs held-out perplexity (PTQ)",
            "predicted time per decoded token, ms (projections and output head, this CPU)",
        ),
        false => (
            "Pareto search: size vs held-out perplexity (PTQ)",
            "model size, MB (every tensor and scale)",
        ),
    };
    let ((x0, x1), (y0, y1)) = ranges(&all, base.perplexity);
    let root = SVGBackend::with_string(svg, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 20))
        .margin(18)
        .x_label_area_size(48)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, (y0..y1).log_scale())?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("held-out perplexity (log scale)")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    let blue = RGBColor(31, 119, 180);
    let red = RGBColor(214, 39, 40);
    chart
        .draw_series(LineSeries::new(
            mixed.iter().map(|v| point(v)),
            blue.stroke_width(2),
        ))?
        .label("mixed plans (search)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], blue.stroke_width(2)));
    chart.draw_series(
        mixed
            .iter()
            .map(|v| Circle::new(point(v), 4, blue.filled())),
    )?;
    chart
        .draw_series(uniform.iter().map(|v| {
            let label = format!("{}-bit", v.uniform.unwrap_or(Bits::Full));
            EmptyElement::at(point(v))
                + TriangleMarker::new((0, 0), 7, red.filled())
                + Text::new(label, (8, -20), ("sans-serif", 15).into_font().color(&red))
        }))?
        .label("uniform width")
        .legend(move |(x, y)| TriangleMarker::new((x + 10, y), 6, red.filled()));
    let grey = RGBColor(110, 110, 110);
    chart
        .draw_series(LineSeries::new(
            [(x0, base.perplexity), (x1, base.perplexity)],
            grey,
        ))?
        .label(match latency {
            true => format!("full precision ({:.3} ms, f32)", base.amount as f64 / 1e6),
            false => format!("full precision ({:.3} MB, f32)", base.size.megabytes()),
        })
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .draw()?;
    root.present()?;
    Ok(())
}
