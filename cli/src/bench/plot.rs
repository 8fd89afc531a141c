//! `walbuf bench --plot FILE`: the `ack` group as a picture — acknowledged ops per second
//! against writer count, one line per system, both axes logarithmic (the systems span three
//! orders of magnitude, and the writer counts 1, 8, 64 are powers of 8), the legend beside
//! the chart. An SVG file.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, anyhow};
use plotters::prelude::*;

use super::report::{Row, human_rate};

/// Size of the picture in pixels.
const SIZE_PIXELS: (u32, u32) = (960, 640);
/// Width of the legend column at the right, in pixels.
const LEGEND_PIXELS: u32 = 210;

/// One line of the plot: a system's median ops/s at each writer count, by writer count.
type Series = BTreeMap<usize, f64>;

/// The `ack` rows of `rows` as one series per system, in the order the systems first appear
/// (a system measured twice at one writer count, against two baselines, counts once).
fn ack_series(rows: &[Row]) -> Vec<(&'static str, Series)> {
    let mut series: Vec<(&'static str, Series)> = Vec::new();
    for row in rows.iter().filter(|row| row.group == "ack") {
        let index = match series.iter().position(|(system, _)| *system == row.system) {
            Some(index) => index,
            None => {
                series.push((row.system, Series::new()));
                series.len() - 1
            }
        };
        series[index].1.entry(row.writers).or_insert(row.ops_per_s);
    }
    series
}

/// Writes the plot of the `ack` rows of `rows` to `path` (SVG).
///
/// # Errors
/// There are no `ack` rows with a positive rate, or the file cannot be written.
pub fn write_ack_plot(rows: &[Row], path: &Path) -> anyhow::Result<()> {
    let series = ack_series(rows);
    let values = || {
        series
            .iter()
            .flat_map(|(_, points)| points.values().copied())
            .filter(|value| *value > 0.0)
    };
    let (Some(low), Some(high)) = (values().reduce(f64::min), values().reduce(f64::max)) else {
        anyhow::bail!("no ack rows to plot: run the `ack` group (e.g. --filter ack)");
    };
    let writers = || series.iter().flat_map(|(_, points)| points.keys().copied());
    let most_writers = writers().max().unwrap_or(1).max(2) as f64;
    draw(&series, (low / 2.0, high * 2.0), most_writers.log2(), path)
        .with_context(|| format!("cannot draw the plot to {}", path.display()))
}

/// Draws `series`, the y axis over `y_range`, the x axis the base-2 logarithm of the writer
/// count from 0 to `x_max` (labelled with the counts), and the legend at the right.
fn draw(
    series: &[(&'static str, Series)],
    y_range: (f64, f64),
    x_max: f64,
    path: &Path,
) -> anyhow::Result<()> {
    let plotting = |error| anyhow!("plotting: {error}");
    let root = SVGBackend::new(path, SIZE_PIXELS).into_drawing_area();
    root.fill(&WHITE).map_err(plotting)?;
    let (chart_area, legend_area) = root.split_horizontally(SIZE_PIXELS.0 - LEGEND_PIXELS);
    let mut chart = ChartBuilder::on(&chart_area)
        .caption(
            "walbuf bench, ack: acknowledged add_shape per second",
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(80)
        .build_cartesian_2d(-0.25_f64..x_max + 0.25, (y_range.0..y_range.1).log_scale())
        .map_err(plotting)?;
    chart
        .configure_mesh()
        .x_desc("concurrent writers (log scale)")
        .y_desc("acks/s (log scale)")
        .x_labels(x_max as usize + 1)
        .x_label_formatter(&|log2| format!("{:.0}", log2.exp2()))
        .y_label_formatter(&|rate| human_rate(*rate))
        .draw()
        .map_err(plotting)?;
    for (index, (system, points)) in series.iter().enumerate() {
        let color = Palette99::pick(index).to_rgba();
        let line: Vec<(f64, f64)> = points
            .iter()
            .filter(|(_, rate)| **rate > 0.0)
            .map(|(writers, rate)| ((*writers as f64).log2(), *rate))
            .collect();
        chart
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))
            .map_err(plotting)?;
        chart
            .draw_series(
                line.into_iter()
                    .map(|point| Circle::new(point, 3, color.filled())),
            )
            .map_err(plotting)?;
        let y = 60 + 24 * i32::try_from(index).unwrap_or(0);
        legend_area
            .draw(&PathElement::new(
                vec![(8, y), (36, y)],
                color.stroke_width(3),
            ))
            .map_err(plotting)?;
        legend_area
            .draw(&Text::new(*system, (44, y - 8), ("sans-serif", 15)))
            .map_err(plotting)?;
    }
    root.present().map_err(plotting)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::bench::driver::Trial;
    use crate::bench::histogram::Histogram;

    /// A row of `system` at `writers` that acknowledged `ops` in one second.
    fn row(group: &'static str, system: &'static str, writers: usize, ops: u64) -> Row {
        let trial = Trial {
            ops,
            elapsed: Duration::from_secs(1),
            latency: Histogram::default(),
            syncs: 0,
            rotations: None,
            disk_bytes_written: None,
            open: None,
        };
        Row::summarize(group, system, writers, &[trial], None).expect("a row")
    }

    #[test]
    fn the_plot_is_an_svg_with_a_line_per_ack_system() {
        let mut rows = Vec::new();
        for (system, per_writer) in [
            ("walbuf-periodic", 90_000),
            ("reference-logoff", 110_000),
            ("sqlite-1txn-full", 1_000),
        ] {
            for writers in [1, 8, 64] {
                rows.push(row("ack", system, writers, per_writer * writers as u64));
            }
        }
        rows.push(row("log", "walbuf-log-sync", 8, 50_000));
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("ack.svg");
        write_ack_plot(&rows, &path).expect("plot");
        let svg = std::fs::read_to_string(&path).expect("read the plot");
        assert!(svg.trim_start().starts_with("<svg"), "an SVG document");
        assert!(
            svg.trim_end().ends_with("</svg>"),
            "a complete SVG document"
        );
        for system in ["walbuf-periodic", "reference-logoff", "sqlite-1txn-full"] {
            assert!(svg.contains(system), "the legend names {system}");
        }
        assert!(
            !svg.contains("walbuf-log-sync"),
            "only the ack group is plotted"
        );
    }

    #[test]
    fn a_run_without_ack_rows_is_an_error() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let rows = [row("log", "walbuf-log-sync", 8, 50_000)];
        assert!(write_ack_plot(&rows, &directory.path().join("none.svg")).is_err());
    }

    #[test]
    fn a_system_measured_twice_at_one_writer_count_counts_once() {
        let rows = [
            row("ack", "walbuf-periodic", 1, 100),
            row("ack", "walbuf-periodic", 1, 200),
            row("ack", "walbuf-periodic", 8, 300),
        ];
        let series = ack_series(&rows);
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].1.get(&1), Some(&100.0));
        assert_eq!(series[0].1.len(), 2);
    }
}
