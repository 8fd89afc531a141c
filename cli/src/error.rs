//! Why a subcommand refused to run (exit code 2). Errors from the engine and the recovery
//! crate keep their own types (they name the segment file and byte offset); these are the
//! command's own refusals.

use std::path::PathBuf;

/// A refusal, said in terms an operator can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The path is not a directory.
    #[error("{path} is not a directory", path = path.display())]
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },
    /// The directory holds no segment file.
    #[error(
        "no segment files (<20-digit op key>.wal) in {path}: is this a walbuf store or log directory?",
        path = path.display()
    )]
    NoSegments {
        /// The log directory searched.
        path: PathBuf,
    },
    /// The directory is not a store (no `log/` directory and no `walbuf.db`).
    #[error(
        "{path} is not a walbuf store (a directory holding log/ and walbuf.db); `{command}` never creates one",
        path = path.display()
    )]
    NotAStore {
        /// The subcommand.
        command: &'static str,
        /// The path given.
        path: PathBuf,
    },
    /// Another process has the store open.
    #[error(
        "the store is open in another process (it holds the lock on {lock}): `{command}` reads a closed \
         store only, since an open one changes under it. Stop that process first, or use `walbuf inspect` \
         for a live view",
        lock = lock.display()
    )]
    StoreOpen {
        /// The subcommand.
        command: &'static str,
        /// The lock file held.
        lock: PathBuf,
    },
    /// `recover --mode salvage`: the engine cannot open a store in salvage mode.
    #[error(
        "salvage mode cannot open a store: it keeps records past damaged ones, so the op keys it \
         replays have gaps, and the flusher applies only a gapless run of op keys (nothing after the \
         first gap would ever reach SQLite), while the damaged bytes would stay in the log. Run \
         `walbuf verify {path}` to see what salvage would keep and where the damage is, or \
         `walbuf recover {path} --mode point-in-time` to keep the longest valid prefix",
        path = path.display()
    )]
    SalvageCannotOpen {
        /// The store.
        path: PathBuf,
    },
    /// The demo's directory already holds files.
    #[error(
        "{path} is not empty: the demo writes a fresh store, give it an empty directory",
        path = path.display()
    )]
    NotEmpty {
        /// The directory.
        path: PathBuf,
    },
}
