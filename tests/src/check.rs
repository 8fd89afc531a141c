//! Checks shared by the `log_*` tests: opening a log while collecting what recovery replays,
//! a ledger of submitted and acknowledged records, and the crash invariant
//! *acknowledged ⊆ recovered ⊆ submitted, keys gapless*.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use walbuf::log::{Config, Log};
use walbuf::storage::Storage;
use walbuf_recovery::format::{Record, RecordKind};
use walbuf_recovery::{Options, Report};

/// One record handed back by recovery.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Recovered {
    /// Its op key.
    pub op_key: u64,
    /// Its kind byte.
    pub kind: u8,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// Opens a log over `storage`, collecting every record recovery replays.
///
/// # Errors
/// Whatever [`Log::open_with`] returns.
pub fn open_collect<S: Storage>(
    storage: S,
    config: Config,
    options: Options,
) -> walbuf::Result<(Log<S>, Report, Vec<Recovered>)> {
    let mut recovered = Vec::new();
    let mut sink = |record: &Record<'_>| {
        let kind = match record.kind {
            RecordKind::Op(kind) => kind,
            RecordKind::SyncMark => return Err("recovery replayed a sync mark".into()),
        };
        recovered.push(Recovered {
            op_key: record.op_key,
            kind,
            payload: record.payload.to_vec(),
        });
        Ok(())
    };
    let (log, report) = Log::open_with(storage, config, options, &mut sink)?;
    Ok((log, report, recovered))
}

/// A payload of `len_bytes` (at least 8) that starts with `id` and is filled with bytes
/// derived from it, so that every id gives a distinct payload.
#[must_use]
pub fn unique_payload(id: u64, len_bytes: usize) -> Vec<u8> {
    let mut payload = id.to_le_bytes().to_vec();
    let mut state = id.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while payload.len() < len_bytes.max(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        payload.push(state as u8);
    }
    payload
}

#[derive(Debug, Default)]
struct LedgerState {
    /// Payload → kind of every record an appender was asked to write.
    submitted: HashMap<Vec<u8>, u8>,
    /// Op key → record of every append that returned `Ok` under `Sync`.
    acknowledged: BTreeMap<u64, (u8, Vec<u8>)>,
}

/// What a workload submitted and what the log acknowledged as durable, shared between the
/// appending threads and a persistence hook. Payloads must be unique (see
/// [`unique_payload`]).
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    state: Arc<Mutex<LedgerState>>,
}

/// The acknowledged records at one moment.
pub type Acknowledged = BTreeMap<u64, (u8, Vec<u8>)>;

impl Ledger {
    /// A new, empty ledger.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes that a record is about to be appended (call before `append`).
    ///
    /// # Panics
    /// If the payload was submitted before (payloads must be unique).
    pub fn submit(&self, kind: u8, payload: &[u8]) {
        let previous = self.state.lock().submitted.insert(payload.to_vec(), kind);
        assert!(previous.is_none(), "test bug: payloads must be unique");
    }

    /// Notes that an append under `Sync` returned `op_key` (call after it returned).
    pub fn acknowledge(&self, op_key: u64, kind: u8, payload: &[u8]) {
        let previous = self
            .state
            .lock()
            .acknowledged
            .insert(op_key, (kind, payload.to_vec()));
        assert!(previous.is_none(), "the log returned op key {op_key} twice");
    }

    /// The records acknowledged so far.
    #[must_use]
    pub fn acknowledged(&self) -> Acknowledged {
        self.state.lock().acknowledged.clone()
    }

    /// Checks the crash invariant against what a reopened log replayed (from watermark 0):
    /// keys gapless from 1, every record in `acknowledged` back unchanged, every record
    /// recovered one that was submitted, none twice.
    ///
    /// # Errors
    /// A description of the first violation.
    pub fn check(
        &self,
        acknowledged: &Acknowledged,
        recovered: &[Recovered],
    ) -> Result<(), String> {
        let state = self.state.lock();
        check_gapless(recovered, 1)?;
        let by_key: BTreeMap<u64, &Recovered> = recovered
            .iter()
            .map(|record| (record.op_key, record))
            .collect();
        for (op_key, (kind, payload)) in acknowledged {
            match by_key.get(op_key) {
                None => {
                    return Err(format!(
                        "acknowledged op key {op_key} is missing ({} records recovered)",
                        recovered.len()
                    ));
                }
                Some(record) if record.kind != *kind || &record.payload != payload => {
                    return Err(format!(
                        "acknowledged op key {op_key} came back with other content"
                    ));
                }
                Some(_) => {}
            }
        }
        let mut seen = std::collections::HashSet::new();
        for record in recovered {
            match state.submitted.get(&record.payload) {
                Some(kind) if *kind == record.kind => {}
                _ => return Err(format!("op key {} was never submitted", record.op_key)),
            }
            if !seen.insert(&record.payload) {
                return Err(format!(
                    "op key {} repeats an earlier record",
                    record.op_key
                ));
            }
        }
        Ok(())
    }
}

/// Checks that `recovered` has op keys `first, first + 1, …` in order.
///
/// # Errors
/// Names the first key out of place.
pub fn check_gapless(recovered: &[Recovered], first: u64) -> Result<(), String> {
    for (index, record) in recovered.iter().enumerate() {
        let expected = first + index as u64;
        if record.op_key != expected {
            return Err(format!(
                "op key {} at position {index} where {expected} was expected",
                record.op_key
            ));
        }
    }
    Ok(())
}
