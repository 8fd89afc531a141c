//! The read-only scan behind `verify`, `inspect` and `dump`: resolve the directory, read the
//! watermark, and run the recovery driver in [`Mode::Salvage`] (which records every anomaly
//! and carries on) over plain file reads, with progress on stderr.

use std::path::Path;

use anyhow::Context;
use walbuf::sqlite::Meta;
use walbuf_recovery::{DirectorySource, Mode, Options, Report, Sink, replay};

use crate::location::Location;
use crate::progress::{Progress, ProgressSource, total_bytes};

/// A directory ready to scan.
#[derive(Debug)]
pub struct Target {
    /// What it is.
    pub location: Location,
    /// Its segment files, oldest first.
    pub segments: Vec<(u64, String)>,
    /// SQLite's meta, for a store with a database.
    pub meta: Option<Meta>,
    /// The watermark the scan starts from (see [`Location::watermark`]).
    pub watermark: u64,
}

impl Target {
    /// Resolves `dir` and reads what the scan needs.
    ///
    /// # Errors
    /// `dir` is not a directory, holds no segments, or its database cannot be read.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let location = Location::resolve(dir)?;
        let segments = location.segments()?;
        let meta = location.meta()?;
        let watermark = location.watermark(meta, &segments);
        Ok(Self {
            location,
            segments,
            meta,
            watermark,
        })
    }

    /// Scans every segment in salvage mode from `watermark`: records above it go to `sink`,
    /// in op-key order; every anomaly is in the report. Progress is shown unless `quiet`.
    ///
    /// # Errors
    /// A file cannot be read, or the sink failed.
    pub fn scan(
        &self,
        label: &'static str,
        watermark: u64,
        max_record_bytes: u32,
        quiet: bool,
        sink: &mut dyn Sink,
    ) -> anyhow::Result<Report> {
        let bytes = total_bytes(&self.location.log, &self.segments);
        let progress = Progress::new(label, self.segments.len() as u64, bytes, quiet);
        let source = ProgressSource::new(DirectorySource::new(&self.location.log), &progress);
        let options = Options {
            mode: Mode::Salvage,
            watermark,
            max_record_bytes,
        };
        let report = replay(&source, options, sink)
            .with_context(|| format!("cannot read the log in {}", self.location.log.display()))?;
        progress.finish();
        Ok(report)
    }
}
