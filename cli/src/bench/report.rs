//! Summaries of trials (median and spread) and their output: a markdown table or JSON lines.

use serde::Serialize;

use super::driver::Trial;
use super::sustained_rows::Pressure;

/// Median, minimum and maximum of a few numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// The median (the mean of the middle two for an even count).
    pub median: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

impl Spread {
    /// The spread of `values`, or `None` if there are none (or any is NaN).
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Self> {
        let mut values: Vec<f64> = values.into_iter().collect();
        if values.is_empty() || values.iter().any(|value| value.is_nan()) {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let middle = values.len() / 2;
        let median = if values.len() % 2 == 1 {
            values[middle]
        } else {
            (values[middle - 1] + values[middle]) / 2.0
        };
        Some(Self {
            median,
            min: values[0],
            max: values[values.len() - 1],
        })
    }

    /// `(max - min) / median`, in percent: how noisy the trials were.
    pub fn relative_percent(&self) -> f64 {
        if self.median == 0.0 {
            return 0.0;
        }
        (self.max - self.min) / self.median * 100.0
    }
}

/// One output line: a system at a writer count, over all its trials, and its ratio to the
/// baseline it was alternated with. The field names are the JSON keys (see the module docs of
/// `bench` for what each means); they are stable.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The group (`log`).
    pub group: &'static str,
    /// The stable system name.
    pub system: &'static str,
    /// Concurrent writer threads.
    pub writers: usize,
    /// Acknowledged operations per second: median over the trials.
    pub ops_per_s: f64,
    /// Slowest trial.
    pub ops_per_s_min: f64,
    /// Fastest trial.
    pub ops_per_s_max: f64,
    /// Ack latency percentiles in microseconds: median over the trials of each trial's value.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// The longest single acknowledgement in µs (median over the trials): shows stalls such as
    /// a rotation waiting for its segment, which percentiles hide.
    pub max_us: f64,
    /// The baseline this row was alternated with (`None` for a baseline's own row).
    pub baseline: Option<&'static str>,
    /// The baseline's writer count.
    pub baseline_writers: Option<usize>,
    /// Median over the trial pairs of (this trial's ops/s ÷ its paired baseline trial's).
    pub ratio: Option<f64>,
    /// Smallest pair ratio.
    pub ratio_min: Option<f64>,
    /// Largest pair ratio.
    pub ratio_max: Option<f64>,
    /// Data syncs per trial (median).
    pub syncs: f64,
    /// Data syncs per second (median).
    pub syncs_per_s: f64,
    /// Segment rotations per trial (median); `None` for systems without segments.
    pub rotations: Option<f64>,
    /// Operations per data sync over all trials (`None` when nothing synced).
    pub appends_per_sync: Option<f64>,
    /// KiB the disk wrote per data sync over all trials, from the kernel's sector counter
    /// (includes segment preparation and anything else writing to the disk); `None` when
    /// nothing synced or the counter is unreadable.
    pub disk_kib_per_sync: Option<f64>,
    /// Trials measured.
    pub trials: usize,
    /// Group `recovery`: the open time in ms (median over the trials); otherwise `None`.
    pub open_ms: Option<f64>,
    /// Group `recovery`: ops left unflushed in the log (replayed by the open).
    pub unflushed_ops: Option<u64>,
    /// Group `read`: shapes in the registry (half buffered, half flushed) and in the
    /// baseline table.
    pub shapes: Option<u64>,
    /// Group `sustained`, walbuf: the most bytes the buffer held (largest over the trials).
    pub peak_buffer_bytes: Option<u64>,
    /// Group `sustained`, walbuf: percent of the writers' time spent in backpressure
    /// (median over the trials).
    pub backpressure_percent: Option<f64>,
    /// Group `sustained`, walbuf: writes that waited for room in a full buffer, per trial
    /// (median).
    pub backpressure_waits: Option<u64>,
    /// Group `sustained`, walbuf: shapes acknowledged to the writers per second (median);
    /// `ops_per_s` is what reached SQLite.
    pub acks_per_s: Option<f64>,
}

/// Rounds to `digits` decimals, for readable JSON.
fn round(value: f64, digits: i32) -> f64 {
    let scale = 10_f64.powi(digits);
    (value * scale).round() / scale
}

impl Row {
    /// Summarizes `trials` of one system; `ratios` are the per-pair ratios to its baseline.
    pub fn summarize(
        group: &'static str,
        system: &'static str,
        writers: usize,
        trials: &[Trial],
        baseline: Option<(&'static str, usize, &[f64])>,
    ) -> Option<Self> {
        let ops = Spread::of(trials.iter().map(Trial::ops_per_s))?;
        let quantile_us = |quantile: f64| {
            Spread::of(trials.iter().filter_map(|trial| {
                trial
                    .latency
                    .quantile_ns(quantile)
                    .map(|ns| ns as f64 / 1000.0)
            }))
            .map_or(0.0, |spread| round(spread.median, 2))
        };
        let syncs = Spread::of(trials.iter().map(|trial| trial.syncs as f64))?;
        let syncs_per_s = Spread::of(
            trials
                .iter()
                .map(|trial| trial.syncs as f64 / trial.elapsed.as_secs_f64().max(1e-9)),
        )?;
        let total_ops: u64 = trials.iter().map(|trial| trial.ops).sum();
        let total_syncs: u64 = trials.iter().map(|trial| trial.syncs).sum();
        let disk_bytes: Option<u64> = trials.iter().map(|trial| trial.disk_bytes_written).sum();
        let ratios = baseline.and_then(|(_, _, ratios)| Spread::of(ratios.iter().copied()));
        Some(Self {
            group,
            system,
            writers,
            ops_per_s: round(ops.median, 0),
            ops_per_s_min: round(ops.min, 0),
            ops_per_s_max: round(ops.max, 0),
            p50_us: quantile_us(0.5),
            p99_us: quantile_us(0.99),
            p999_us: quantile_us(0.999),
            max_us: Spread::of(
                trials
                    .iter()
                    .map(|trial| trial.latency.max_ns() as f64 / 1000.0),
            )
            .map_or(0.0, |spread| round(spread.median, 2)),
            baseline: baseline.map(|(name, _, _)| name),
            baseline_writers: baseline.map(|(_, writers, _)| writers),
            ratio: ratios.map(|spread| round(spread.median, 3)),
            ratio_min: ratios.map(|spread| round(spread.min, 3)),
            ratio_max: ratios.map(|spread| round(spread.max, 3)),
            syncs: round(syncs.median, 0),
            syncs_per_s: round(syncs_per_s.median, 0),
            rotations: Spread::of(
                trials
                    .iter()
                    .filter_map(|trial| trial.rotations.map(|rotations| rotations as f64)),
            )
            .map(|spread| round(spread.median, 1)),
            appends_per_sync: (total_syncs > 0)
                .then(|| round(total_ops as f64 / total_syncs as f64, 1)),
            disk_kib_per_sync: disk_bytes
                .filter(|_| total_syncs > 0)
                .map(|bytes| round(bytes as f64 / 1024.0 / total_syncs as f64, 1)),
            trials: trials.len(),
            open_ms: Spread::of(
                trials
                    .iter()
                    .filter_map(|trial| trial.open.map(|open| open.as_secs_f64() * 1000.0)),
            )
            .map(|spread| round(spread.median, 2)),
            unflushed_ops: None,
            shapes: None,
            peak_buffer_bytes: None,
            backpressure_percent: None,
            backpressure_waits: None,
            acks_per_s: None,
        })
    }

    /// Fills in the `sustained` fields from what walbuf's trials saw.
    pub fn annotate_pressure(&mut self, pressures: &[Pressure]) {
        let median = |values: Vec<f64>| Spread::of(values).map(|spread| spread.median);
        self.peak_buffer_bytes = pressures
            .iter()
            .map(|pressure| pressure.peak_buffer_bytes)
            .max();
        self.backpressure_percent = median(
            pressures
                .iter()
                .map(Pressure::backpressure_percent)
                .collect(),
        )
        .map(|percent| round(percent, 1));
        self.backpressure_waits = median(
            pressures
                .iter()
                .map(|pressure| pressure.backpressure_waits as f64)
                .collect(),
        )
        .map(|waits| waits.round() as u64);
        self.acks_per_s =
            median(pressures.iter().map(Pressure::acks_per_s).collect()).map(|rate| round(rate, 0));
    }

    /// The row as one line of JSON.
    ///
    /// # Errors
    /// Serialization failed (it cannot for this type).
    pub fn to_json(&self) -> anyhow::Result<String> {
        Ok(serde_json::to_string(self)?)
    }
}

/// `2.31 M`, `61.2 k`, `950`.
pub fn human_rate(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.2} M", value / 1e6)
    } else if value >= 1e4 {
        format!("{:.1} k", value / 1e3)
    } else if value >= 1e3 {
        format!("{:.2} k", value / 1e3)
    } else {
        format!("{value:.0}")
    }
}

/// Microseconds with as many decimals as are meaningful.
fn human_us(value: f64) -> String {
    if value < 10.0 {
        format!("{value:.2}")
    } else if value < 1000.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.0}")
    }
}

/// The `ops/s` and `min–max` cells of a row.
fn rate_cells(row: &Row) -> String {
    format!(
        "{} | {}–{}",
        human_rate(row.ops_per_s),
        human_rate(row.ops_per_s_min),
        human_rate(row.ops_per_s_max)
    )
}

fn or_dash(value: Option<String>) -> String {
    value.unwrap_or_else(|| "–".to_owned())
}

/// The rows as a markdown table.
pub fn markdown_table(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str(
        "| system | writers | ops/s | ops/s min–max | p50 µs | p99 µs | p999 µs | max µs | syncs/s \
         | rotations | appends/sync | disk KiB/sync | baseline | ratio | ratio min–max |\n",
    );
    out.push_str("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|\n");
    for row in rows {
        // This table names the baseline's writers even when there is one.
        let (_, ratio, ratios) = ratio_cells(row);
        let baseline = match (row.baseline, row.baseline_writers) {
            (Some(name), Some(writers)) => format!("{name} ×{writers}"),
            _ => "(baseline)".to_owned(),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            row.system,
            row.writers,
            rate_cells(row),
            human_us(row.p50_us),
            human_us(row.p99_us),
            human_us(row.p999_us),
            human_us(row.max_us),
            human_rate(row.syncs_per_s),
            or_dash(row.rotations.map(|value| format!("{value:.0}"))),
            or_dash(row.appends_per_sync.map(|value| format!("{value:.1}"))),
            or_dash(row.disk_kib_per_sync.map(|value| format!("{value:.1}"))),
            baseline,
            ratio,
            ratios,
        ));
    }
    out
}

/// `ratio` and `ratio min–max` cells of a row (dashes for a baseline's own row).
fn ratio_cells(row: &Row) -> (String, String, String) {
    let baseline = match (row.baseline, row.baseline_writers) {
        (Some(name), Some(writers)) if writers > 1 => format!("{name} ×{writers}"),
        (Some(name), Some(_)) => name.to_owned(),
        _ => "(baseline)".to_owned(),
    };
    (
        baseline,
        or_dash(row.ratio.map(|value| format!("{value:.2}×"))),
        or_dash(
            row.ratio_min
                .zip(row.ratio_max)
                .map(|(min, max)| format!("{min:.2}–{max:.2}")),
        ),
    )
}

/// The rows of the `ack` group as a markdown table.
pub fn ack_table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| system | writers | acks/s | min–max | p50 µs | p99 µs | p999 µs | syncs (commits)/s \
         | ops/sync | baseline | ratio | ratio min–max |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|\n",
    );
    for row in rows {
        let (baseline, ratio, ratios) = ratio_cells(row);
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {baseline} | {ratio} | {ratios} |\n",
            row.system,
            row.writers,
            rate_cells(row),
            human_us(row.p50_us),
            human_us(row.p99_us),
            human_us(row.p999_us),
            human_rate(row.syncs_per_s),
            or_dash(row.appends_per_sync.map(|value| format!("{value:.1}"))),
        ));
    }
    out
}

/// The rows of the `flush` group as a markdown table.
pub fn flush_table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| system | ops/s into SQLite | min–max | batches/s | ops/batch | baseline | ratio \
         | ratio min–max |\n|---|--:|--:|--:|--:|---|--:|--:|\n",
    );
    for row in rows {
        let (baseline, ratio, ratios) = ratio_cells(row);
        out.push_str(&format!(
            "| {} | {} | {:.1} | {} | {baseline} | {ratio} | {ratios} |\n",
            row.system,
            rate_cells(row),
            row.syncs_per_s,
            or_dash(row.appends_per_sync.map(|value| format!("{value:.0}"))),
        ));
    }
    out
}

/// The rows of the `sustained` group as a markdown table.
pub fn sustained_table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| system | ops/s into SQLite | min–max | commits/s | ops/commit | peak buffer MiB \
         | backpressure % of writer time | waits at full | acks/s | baseline | ratio \
         | ratio min–max |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|\n",
    );
    for row in rows {
        let (baseline, ratio, ratios) = ratio_cells(row);
        out.push_str(&format!(
            "| {} | {} | {:.1} | {} | {} | {} | {} | {} | {baseline} | {ratio} \
             | {ratios} |\n",
            row.system,
            rate_cells(row),
            row.syncs_per_s,
            or_dash(row.appends_per_sync.map(|value| format!("{value:.0}"))),
            or_dash(
                row.peak_buffer_bytes
                    .map(|bytes| format!("{:.1}", bytes as f64 / f64::from(1 << 20)))
            ),
            or_dash(
                row.backpressure_percent
                    .map(|percent| format!("{percent:.1}"))
            ),
            or_dash(row.backpressure_waits.map(|waits| waits.to_string())),
            or_dash(row.acks_per_s.map(human_rate)),
        ));
    }
    out
}

/// The rows of the `read` group as a markdown table.
pub fn read_table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| system | shapes | lookups/s | min–max | p50 µs | p99 µs | p999 µs | baseline | ratio \
         | ratio min–max |\n|---|--:|--:|--:|--:|--:|--:|---|--:|--:|\n",
    );
    for row in rows {
        let (baseline, ratio, ratios) = ratio_cells(row);
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {baseline} | {ratio} | {ratios} |\n",
            row.system,
            or_dash(row.shapes.map(|shapes| shapes.to_string())),
            rate_cells(row),
            human_us(row.p50_us),
            human_us(row.p99_us),
            human_us(row.p999_us),
        ));
    }
    out
}

/// The rows of the `recovery` group as a markdown table.
pub fn recovery_table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| system | unflushed ops | open ms | replayed ops/s | min–max | trials |\n\
         |---|--:|--:|--:|--:|--:|\n",
    );
    for row in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            row.system,
            or_dash(row.unflushed_ops.map(|ops| ops.to_string())),
            or_dash(row.open_ms.map(|open| format!("{open:.1}"))),
            rate_cells(row),
            row.trials,
        ));
    }
    out
}

/// The rows of the `engines` group as a markdown table.
#[cfg(feature = "compare")]
pub fn engines_table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| system | threads | ops/s | min–max | p50 µs | p99 µs | open ms | baseline | ratio \
         | ratio min–max |\n|---|--:|--:|--:|--:|--:|--:|---|--:|--:|\n",
    );
    for row in rows {
        let (baseline, ratio, ratios) = ratio_cells(row);
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {baseline} | {ratio} | {ratios} |\n",
            row.system,
            row.writers,
            rate_cells(row),
            human_us(row.p50_us),
            human_us(row.p99_us),
            or_dash(row.open_ms.map(|open| format!("{open:.1}"))),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_takes_the_middle() {
        let odd = Spread::of([3.0, 1.0, 2.0]).expect("values");
        assert_eq!((odd.median, odd.min, odd.max), (2.0, 1.0, 3.0));
        let even = Spread::of([4.0, 1.0, 2.0, 3.0]).expect("values");
        assert_eq!(even.median, 2.5);
        assert_eq!(Spread::of([]), None);
        assert_eq!(Spread::of([1.0, f64::NAN]), None);
        assert!((odd.relative_percent() - 100.0).abs() < 1e-9);
    }

    #[test]
    fn rates_read_naturally() {
        assert_eq!(human_rate(2_310_000.0), "2.31 M");
        assert_eq!(human_rate(61_234.0), "61.2 k");
        assert_eq!(human_rate(9_876.0), "9.88 k");
        assert_eq!(human_rate(950.0), "950");
    }
}
