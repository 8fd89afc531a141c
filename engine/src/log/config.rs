//! Log configuration and sync policies.

use std::time::Duration;

use walbuf_recovery::format::{
    DEFAULT_MAX_RECORD_BYTES, MIN_FRAME_LEN, RECORD_ALIGN, SEGMENT_HEADER_LEN,
};

use crate::error::{Error, Result};

/// When an appended record is acknowledged, and when the log syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SyncPolicy {
    /// Acknowledged only once the record's bytes are durable. Concurrent appends share syncs
    /// (group commit): one sync covers every record written before it started.
    #[default]
    Sync,
    /// Acknowledged as soon as the record is in the page cache (it survives a process crash);
    /// a background thread syncs every `interval_ms`, so a power cut loses at most about that
    /// much.
    Periodic {
        /// Milliseconds between background syncs.
        interval_ms: u64,
    },
    /// Acknowledged as soon as the record is in the page cache; the operating system writes it
    /// back whenever it likes. Survives a process crash, not a power cut.
    None,
}

impl SyncPolicy {
    /// Whether appends under this policy wait for durability.
    #[must_use]
    pub fn waits_for_durability(self) -> bool {
        matches!(self, Self::Sync)
    }

    /// A short stable name (`sync`, `periodic`, `none`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Sync => "sync",
            Self::Periodic { .. } => "periodic",
            Self::None => "none",
        }
    }
}

/// Settings of a [`super::Log`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Size of each segment file, preallocated in full (default 64 MiB).
    pub segment_size_bytes: u64,
    /// Largest record frame accepted (default 16 MiB); must fit in a segment.
    pub max_record_bytes: u32,
    /// The default sync policy of appends.
    pub sync_policy: SyncPolicy,
    /// After this long without new appends, the sync thread writes and syncs one more sync
    /// mark, so that the last synced records are also provably durable (default 10 ms).
    pub idle_mark_ms: u64,
    /// Prepare the next segment on a background thread (default true). Tests that need a
    /// deterministic sequence of file operations turn it off; rotation then creates the next
    /// segment itself.
    pub prepare_ahead: bool,
    /// Group commit's gathering bound, in microseconds (default 200; 0 turns gathering off).
    /// When the last sync woke several waiting writers, a request for the next sync waits
    /// until as many writers have asked again, or half the recent sync time, or this long,
    /// whichever comes first, so that one sync covers them all instead of the first one
    /// back. A lone writer never waits: gathering starts only after a sync that covered two
    /// or more.
    pub group_commit_wait_us: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            segment_size_bytes: 64 * 1024 * 1024,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            sync_policy: SyncPolicy::Sync,
            idle_mark_ms: 10,
            prepare_ahead: true,
            group_commit_wait_us: 200,
        }
    }
}

impl Config {
    /// Checks the values.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the field.
    pub fn validate(&self) -> Result<()> {
        if !self.segment_size_bytes.is_multiple_of(4096) || self.segment_size_bytes < 4096 {
            return Err(Error::InvalidConfig {
                field: "segment_size_bytes",
                problem: "must be a positive multiple of 4096",
            });
        }
        if u64::from(self.max_record_bytes) < MIN_FRAME_LEN
            || u64::from(self.max_record_bytes).next_multiple_of(RECORD_ALIGN)
                > self.segment_size_bytes - SEGMENT_HEADER_LEN
        {
            return Err(Error::InvalidConfig {
                field: "max_record_bytes",
                problem: "must be at least 20 and fit in a segment after its header",
            });
        }
        if let SyncPolicy::Periodic { interval_ms: 0 } = self.sync_policy {
            return Err(Error::InvalidConfig {
                field: "sync_policy",
                problem: "periodic interval must be at least 1 ms",
            });
        }
        Ok(())
    }

    pub(crate) fn idle_mark_delay(&self) -> Duration {
        Duration::from_millis(self.idle_mark_ms.max(1))
    }
}
