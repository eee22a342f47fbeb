//! The chart of a run (SVG, with plotters): throughput per load level, create latency over
//! time, and the expiry storm's drain for the three systems on a log time axis.

use crate::report::Results;
use plotters::prelude::*;
use std::path::Path;

const ORDERFLOW: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const BARE: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);
const SWEEP: RGBColor = RGBColor(0xd6, 0x27, 0x28);

pub fn draw(r: &Results, path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (960, 1260)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root
        .titled(
            &format!(
                "orderflow-bench {} · {} · {}",
                r.date, r.database, r.machine
            ),
            ("sans-serif", 20),
        )
        .map_err(err)?;
    let panels = root.split_evenly((3, 1));

    // 1. Throughput per level.
    let max_clients = r
        .orderflow
        .levels
        .iter()
        .chain(&r.bare.levels)
        .map(|l| l.clients)
        .max()
        .unwrap_or(1) as f64;
    let max_rate = r
        .orderflow
        .levels
        .iter()
        .chain(&r.bare.levels)
        .map(|l| l.settled_per_sec)
        .fold(1.0, f64::max);
    let mut chart = panel(
        &panels[0],
        "lifecycles settled per second, by closed-loop clients",
    )
    .build_cartesian_2d((1f64..max_clients * 1.2).log_scale(), 0f64..max_rate * 1.15)
    .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("clients")
        .y_desc("lifecycles/s")
        .draw()
        .map_err(err)?;
    for (name, color, sys) in [
        ("orderflow", ORDERFLOW, &r.orderflow),
        ("bare workflow", BARE, &r.bare),
    ] {
        let points: Vec<(f64, f64)> = sys
            .levels
            .iter()
            .map(|l| (l.clients as f64, l.settled_per_sec))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 4, color.filled())),
            )
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(err)?;

    // 2. Create latency over time, as the levels step up.
    let max_t = r
        .orderflow
        .latency_over_time
        .iter()
        .chain(&r.bare.latency_over_time)
        .map(|p| p.0)
        .fold(1.0, f64::max);
    let max_ms = r
        .orderflow
        .latency_over_time
        .iter()
        .chain(&r.bare.latency_over_time)
        .map(|p| p.1)
        .fold(1.0, f64::max);
    let mut chart = panel(&panels[1], "create latency over time (levels step up)")
        .build_cartesian_2d(0f64..max_t * 1.02, (0.5f64..max_ms * 1.5).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds into the phase")
        .y_desc("ms")
        .draw()
        .map_err(err)?;
    for (name, color, sys) in [
        ("orderflow", ORDERFLOW, &r.orderflow),
        ("bare workflow", BARE, &r.bare),
    ] {
        chart
            .draw_series(
                sys.latency_over_time
                    .iter()
                    .map(|&(t, ms)| Circle::new((t, ms.max(0.5)), 1, color.mix(0.5).filled())),
            )
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| Circle::new((x + 8, y), 3, color.filled()));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(err)?;

    // 3. The storm's drain.
    let max_x = [&r.orderflow.storm, &r.bare.storm, &r.sweep.storm]
        .iter()
        .flat_map(|s| s.curve.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let mut chart = panel(
        &panels[2],
        format!(
            "expiry storm of {}: share settled after the deadline (sweep unscaled)",
            r.storm_n
        ),
    )
    .build_cartesian_2d((0.1f64..max_x * 1.5).log_scale(), 0f64..1.05)
    .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds after the first deadline")
        .y_desc("settled")
        .draw()
        .map_err(err)?;
    for (name, color, storm) in [
        ("orderflow", ORDERFLOW, &r.orderflow.storm),
        ("bare workflow", BARE, &r.bare.storm),
        ("sweep every 60 s", SWEEP, &r.sweep.storm),
    ] {
        let points: Vec<(f64, f64)> = storm.curve.iter().map(|&(t, f)| (t.max(0.1), f)).collect();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// A panel's chart builder: its caption, and room for the axis labels.
fn panel<'a, 'b, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, plotters::coord::Shift>,
    caption: impl AsRef<str>,
) -> ChartBuilder<'a, 'b, DB> {
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(caption, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56);
    builder
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {e:?}")
}
