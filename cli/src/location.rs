//! What a directory named on the command line is: a store (`log/` with the segments and the
//! `LOCK` file, beside `walbuf.db`) or a bare log directory; whether another process has it
//! open; and the watermark SQLite holds. Everything here only reads.

use std::fs::{File, TryLockError};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::Context;
use walbuf::sqlite::{Meta, peek_meta};
use walbuf::store::{DATABASE_FILE, LOG_DIRECTORY};
use walbuf_recovery::naming::{LOCK_FILE_NAME, sorted_segment_names};

use crate::error::Refusal;

/// A store or log directory, resolved.
#[derive(Debug, Clone)]
pub struct Location {
    /// The store's directory, for a store; the log directory otherwise.
    pub root: PathBuf,
    /// The log directory (segments and `LOCK`).
    pub log: PathBuf,
    /// The SQLite database, for a store (it may be missing: then nothing says what was
    /// applied).
    pub database: Option<PathBuf>,
}

impl Location {
    /// Resolves `dir`: a store when it holds a `log/` directory (or is the `log/` directory of
    /// a store, beside its `walbuf.db`), a bare log directory otherwise.
    ///
    /// # Errors
    /// `dir` does not exist or is not a directory.
    pub fn resolve(dir: &Path) -> anyhow::Result<Self> {
        let metadata =
            std::fs::metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?;
        if !metadata.is_dir() {
            return Err(Refusal::NotADirectory {
                path: dir.to_path_buf(),
            }
            .into());
        }
        let log = dir.join(LOG_DIRECTORY);
        if log.is_dir() {
            return Ok(Self {
                root: dir.to_path_buf(),
                database: Some(dir.join(DATABASE_FILE)),
                log,
            });
        }
        if dir.file_name().is_some_and(|name| name == LOG_DIRECTORY)
            && let Some(parent) = dir.parent()
            && parent.join(DATABASE_FILE).is_file()
        {
            return Ok(Self {
                root: parent.to_path_buf(),
                database: Some(parent.join(DATABASE_FILE)),
                log: dir.to_path_buf(),
            });
        }
        Ok(Self {
            root: dir.to_path_buf(),
            log: dir.to_path_buf(),
            database: None,
        })
    }

    /// Whether this is a store (log and database) rather than a bare log directory.
    #[must_use]
    pub fn is_store(&self) -> bool {
        self.database.is_some()
    }

    /// One line saying what was found, e.g. `store: /x/log + /x/walbuf.db`.
    #[must_use]
    pub fn describe(&self) -> String {
        match &self.database {
            Some(database) => {
                let missing = if database.is_file() { "" } else { " (missing)" };
                format!(
                    "store: {} + {}{missing}",
                    self.log.display(),
                    database.display()
                )
            }
            None => format!("log directory: {} (no database)", self.log.display()),
        }
    }

    /// The segment files, oldest first, as `(first op key, file name)`.
    ///
    /// # Errors
    /// The log directory cannot be listed, or holds no segment file.
    pub fn segments(&self) -> anyhow::Result<Vec<(u64, String)>> {
        let mut names = Vec::new();
        let entries = std::fs::read_dir(&self.log)
            .with_context(|| format!("cannot list {}", self.log.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {}", self.log.display()))?;
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        let segments = sorted_segment_names(names);
        if segments.is_empty() {
            return Err(Refusal::NoSegments {
                path: self.log.clone(),
            }
            .into());
        }
        Ok(segments)
    }

    /// The `LOCK` file a store's owner holds.
    #[must_use]
    pub fn lock_path(&self) -> PathBuf {
        self.log.join(LOCK_FILE_NAME)
    }

    /// Whether another process has the store open: it holds an exclusive `flock` on `LOCK`.
    /// Checked with a non-blocking *shared* lock on a read-only descriptor, released at once:
    /// it conflicts with the owner's exclusive lock but not with another reader. A missing
    /// `LOCK` file means nobody has the store open (and is not created: readers never write).
    ///
    /// # Errors
    /// The lock file exists but cannot be opened or checked.
    pub fn is_open_elsewhere(&self) -> anyhow::Result<bool> {
        let lock_path = self.lock_path();
        let file = match File::open(&lock_path) {
            Ok(file) => file,
            Err(error) if error.kind() == ErrorKind::NotFound => return Ok(false),
            Err(error) => {
                return Err(error).with_context(|| format!("cannot open {}", lock_path.display()));
            }
        };
        match file.try_lock_shared() {
            Ok(()) => {
                file.unlock().with_context(|| {
                    format!("cannot release the lock on {}", lock_path.display())
                })?;
                Ok(false)
            }
            Err(TryLockError::WouldBlock) => Ok(true),
            Err(TryLockError::Error(error)) => Err(error)
                .with_context(|| format!("cannot check the lock on {}", lock_path.display())),
        }
    }

    /// Fails with [`Refusal::StoreOpen`] when another process has the store open.
    ///
    /// # Errors
    /// The store is open elsewhere, or the lock cannot be checked.
    pub fn ensure_closed(&self, command: &'static str) -> anyhow::Result<()> {
        if self.is_open_elsewhere()? {
            return Err(Refusal::StoreOpen {
                command,
                lock: self.lock_path(),
            }
            .into());
        }
        Ok(())
    }

    /// The applied op key and live count SQLite holds (read-only); `None` for a bare log
    /// directory or a missing database.
    ///
    /// # Errors
    /// The database exists but cannot be read.
    pub fn meta(&self) -> anyhow::Result<Option<Meta>> {
        let Some(database) = &self.database else {
            return Ok(None);
        };
        peek_meta(database)
            .with_context(|| format!("cannot read the watermark from {}", database.display()))
    }

    /// The watermark recovery and the read-only commands start from: SQLite's applied op key
    /// for a store (0 when its database is missing: then nothing is applied), and for a bare
    /// log the op key just below its oldest segment (segments whose ops were all applied are
    /// retired, so a log may start anywhere).
    #[must_use]
    pub fn watermark(&self, meta: Option<Meta>, segments: &[(u64, String)]) -> u64 {
        match (&self.database, meta) {
            (_, Some(meta)) => meta.applied_op_key,
            (Some(_), None) => 0,
            (None, None) => segments
                .first()
                .map_or(0, |(first_op_key, _)| first_op_key.saturating_sub(1)),
        }
    }
}
