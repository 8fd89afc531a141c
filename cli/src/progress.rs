//! Progress of long scans on stderr: an `indicatif` bar on a terminal, otherwise a plain line
//! at most once a second (so a short scan prints nothing, and a log file stays readable).

use std::cell::RefCell;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use walbuf_recovery::{DirectorySource, SegmentSource};

/// How often a plain progress line is printed, at most.
const PLAIN_INTERVAL: Duration = Duration::from_secs(1);

/// Where progress is shown.
#[derive(Debug)]
enum Display {
    /// A bar on the terminal.
    Bar(ProgressBar),
    /// Plain lines on stderr.
    Plain {
        label: &'static str,
        last_line: Instant,
    },
    /// Nothing (the caller's output is the progress, e.g. `dump` on a terminal).
    Quiet,
}

/// Progress through a known number of files and bytes.
#[derive(Debug)]
pub struct Progress {
    display: RefCell<Display>,
    files_total: u64,
    bytes_total: u64,
    files_done: RefCell<u64>,
    bytes_done: RefCell<u64>,
}

impl Progress {
    /// Progress of `label` (e.g. `"verify"`) through `files_total` files of `bytes_total`
    /// bytes; shows nothing when `quiet`.
    #[must_use]
    pub fn new(label: &'static str, files_total: u64, bytes_total: u64, quiet: bool) -> Self {
        let display = if quiet {
            Display::Quiet
        } else if std::io::stderr().is_terminal() {
            let bar =
                ProgressBar::with_draw_target(Some(bytes_total), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(
                "{prefix} {msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} ({eta})",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(label);
            Display::Bar(bar)
        } else {
            Display::Plain {
                label,
                last_line: Instant::now(),
            }
        };
        Self {
            display: RefCell::new(display),
            files_total,
            bytes_total,
            files_done: RefCell::new(0),
            bytes_done: RefCell::new(0),
        }
    }

    /// One more file (`name`, `len_bytes` long) has been read.
    pub fn file_done(&self, name: &str, len_bytes: u64) {
        let files = {
            let mut files = self.files_done.borrow_mut();
            *files += 1;
            *files
        };
        let bytes = {
            let mut bytes = self.bytes_done.borrow_mut();
            *bytes += len_bytes;
            *bytes
        };
        match &mut *self.display.borrow_mut() {
            Display::Bar(bar) => {
                bar.set_message(format!("{files}/{} {name}", self.files_total));
                bar.set_position(bytes);
            }
            Display::Plain { label, last_line } => {
                if last_line.elapsed() >= PLAIN_INTERVAL {
                    *last_line = Instant::now();
                    eprintln!(
                        "{label}: {files}/{} segments read, {} of {} MiB",
                        self.files_total,
                        bytes >> 20,
                        self.bytes_total >> 20
                    );
                }
            }
            Display::Quiet => {}
        }
    }

    /// Removes the bar (plain lines stay).
    pub fn finish(&self) {
        if let Display::Bar(bar) = &*self.display.borrow() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A [`DirectorySource`] that reports each file it reads to a [`Progress`].
#[derive(Debug)]
pub struct ProgressSource<'a> {
    inner: DirectorySource,
    progress: &'a Progress,
}

impl<'a> ProgressSource<'a> {
    /// Reads the directory of `inner`, reporting to `progress`.
    #[must_use]
    pub fn new(inner: DirectorySource, progress: &'a Progress) -> Self {
        Self { inner, progress }
    }
}

impl SegmentSource for ProgressSource<'_> {
    fn file_names(&self) -> walbuf_recovery::Result<Vec<String>> {
        self.inner.file_names()
    }

    fn read_file(&self, name: &str) -> walbuf_recovery::Result<Vec<u8>> {
        let bytes = self.inner.read_file(name)?;
        self.progress.file_done(name, bytes.len() as u64);
        Ok(bytes)
    }

    fn read_file_into(&self, name: &str, bytes: &mut Vec<u8>) -> walbuf_recovery::Result<()> {
        self.inner.read_file_into(name, bytes)?;
        self.progress.file_done(name, bytes.len() as u64);
        Ok(())
    }
}

/// The total size of the segment files `names` in `directory` (missing files count 0).
#[must_use]
pub fn total_bytes(directory: &std::path::Path, names: &[(u64, String)]) -> u64 {
    names
        .iter()
        .map(|(_, name)| {
            std::fs::metadata(directory.join(name)).map_or(0, |metadata| metadata.len())
        })
        .sum()
}

/// Progress through a known number of ops (e.g. replayed ops reaching SQLite): a bar on a
/// terminal, otherwise a plain line at most once a second.
#[derive(Debug)]
pub struct OpsProgress {
    bar: Option<ProgressBar>,
    label: &'static str,
    total: u64,
    last_line: Instant,
}

impl OpsProgress {
    /// Progress of `label` through `total` ops.
    #[must_use]
    pub fn new(label: &'static str, total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            if let Ok(style) =
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} ops ({eta})")
            {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(label);
            bar
        });
        Self {
            bar,
            label,
            total,
            last_line: Instant::now(),
        }
    }

    /// `done` ops of the total are through.
    pub fn set(&mut self, done: u64) {
        match &self.bar {
            Some(bar) => bar.set_position(done),
            None => {
                if self.last_line.elapsed() >= PLAIN_INTERVAL {
                    self.last_line = Instant::now();
                    eprintln!("{}: {done}/{} ops", self.label, self.total);
                }
            }
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for OpsProgress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A spinner (terminal) or a single line (otherwise) for a step of unknown length, such as
/// opening a store; cleared by [`Spinner::finish`] or on drop.
#[derive(Debug)]
pub struct Spinner {
    bar: Option<ProgressBar>,
}

impl Spinner {
    /// Starts showing `message`.
    #[must_use]
    pub fn start(message: String) -> Self {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
                bar.set_style(style);
            }
            bar.set_message(message);
            bar.enable_steady_tick(Duration::from_millis(100));
            Self { bar: Some(bar) }
        } else {
            eprintln!("{message} ...");
            Self { bar: None }
        }
    }

    /// Clears the spinner.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.finish();
    }
}
