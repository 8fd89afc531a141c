//! Rebuilding the buffer and the overlay from the records recovery replays, as a pipeline
//! across threads.
//!
//! Replay is the open's critical path: every unflushed op must be decoded, indexed in the
//! overlay and buffered before the store answers a read. Those are three independent pieces
//! of work per op, so they run as stages on their own threads, connected by bounded channels
//! of [`CHUNK_RECORDS`]-record chunks:
//!
//! 1. the caller's thread scans the log and copies each replayed record into a chunk;
//! 2. one decoder thread decodes a chunk into ops and buffers them (a push each onto the
//!    buffer's queue of replayed ops, [`Buffer::extend_replayed`]);
//! 3. one thread per part of the schema's indexing ([`Schema::REPLAY_INDEX_PARTS`]) indexes
//!    the chunk's ops in the overlay, in op-key order.
//!
//! Once every chunk went through, [`Schema::finish_replay`] completes the overlay on the
//! caller's thread. The stages start with the first full chunk; a replay shorter than one
//! chunk (most opens) is rebuilt on the caller's thread. Chunks flow in op-key order through
//! every stage, so each part of the overlay sees ops in the order the synchronous path would
//! have given it. Each channel holds at most [`CHUNKS_IN_FLIGHT`] chunks, which bounds the
//! memory of the pipeline itself. A record that fails to decode stops the pipeline: the scan
//! is told to stop, and the open fails with [`Error::Decode`] naming the lowest op key that
//! failed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Instant;

use parking_lot::Mutex;
use walbuf_recovery::format::Record;
use walbuf_recovery::replay::Sink;

use crate::buffer::{Buffer, OP_OVERHEAD_BYTES, PendingOp};
use crate::error::Error;
use crate::schema::{DecodeError, Schema};

/// Records per chunk: large enough that channel hand-offs cost nothing per op, small enough
/// that the stages overlap from the first milliseconds.
pub(crate) const CHUNK_RECORDS: usize = 4096;
/// The most replayed ops room is reserved for ahead, whatever the estimate and the buffer's
/// bound (an estimate from a damaged log's names can be absurd, and a bound may be
/// unlimited): past it, the indexes grow as they go.
const RESERVE_OPS_MAX: usize = 1 << 22;
/// The most payload bytes a new chunk is sized for ahead.
const CHUNK_BYTES_AHEAD_MAX: usize = 8 << 20;
/// Chunks each channel holds before its sender waits.
const CHUNKS_IN_FLIGHT: usize = 4;

/// Replayed records copied out of the log, awaiting decode.
#[derive(Default)]
struct RawChunk {
    /// `(op key, kind, end of the payload in bytes)` of each record.
    records: Vec<(u64, u8, usize)>,
    /// The payloads, back to back.
    bytes: Vec<u8>,
}

/// One decoded op: its op key and what the buffer keeps of it.
type DecodedChunk<Op> = Arc<Vec<(u64, PendingOp<Op>)>>;

/// Decodes a record's payload: the 8-byte live count after the op, then the schema's
/// encoding of the op.
///
/// # Errors
/// [`DecodeError`] when the payload is shorter than the prefix or the schema refuses it.
pub(crate) fn decode_op<S: Schema>(
    schema: &S,
    kind: u8,
    payload: &[u8],
) -> Result<(u64, S::Op), DecodeError> {
    let Some((prefix, rest)) = payload.split_first_chunk::<{ crate::store::OP_PREFIX_LEN }>()
    else {
        return Err(DecodeError::new(kind, "record shorter than the op prefix"));
    };
    let op = schema.decode(kind, rest)?;
    Ok((u64::from_le_bytes(*prefix), op))
}

/// How long each stage was at work (not waiting on a channel), in nanoseconds: reported by a
/// `debug` event at the end of a replay that started the pipeline. A stage busy for about as
/// long as the replay took bounds it.
struct StageTimes {
    /// The caller's thread (the scan, and the rest of the log's open), but for its waits to
    /// hand a chunk on.
    scan_ns: AtomicU64,
    decode_ns: AtomicU64,
    /// Each indexing part, by part.
    index_ns: Vec<AtomicU64>,
}

impl StageTimes {
    fn new(index_parts: usize) -> Self {
        Self {
            scan_ns: AtomicU64::new(0),
            decode_ns: AtomicU64::new(0),
            index_ns: (0..index_parts).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// Nanoseconds since `started`, saturated.
fn nanos_since(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The first decode failure, by op key.
#[derive(Default)]
struct Failure {
    failed: AtomicBool,
    first: Mutex<Option<(u64, DecodeError)>>,
}

impl Failure {
    fn record(&self, op_key: u64, error: DecodeError) {
        let mut first = self.first.lock();
        if first.as_ref().is_none_or(|(key, _)| op_key < *key) {
            *first = Some((op_key, error));
        }
        self.failed.store(true, Ordering::SeqCst);
    }

    fn into_error(self) -> Option<Error> {
        self.first
            .into_inner()
            .map(|(op_key, source)| Error::Decode { op_key, source })
    }
}

/// The scan stage: a [`Sink`] that copies records into chunks and hands full ones on. The
/// pipeline's threads start with the first full chunk: a short replay (most opens) is
/// decoded, indexed and buffered on the caller's thread, without spawning anything.
struct ChunkingSink<'scope, 'env, S: Schema> {
    chunk: RawChunk,
    scope: &'scope std::thread::Scope<'scope, 'env>,
    target: Target<'env, S>,
    /// The pipeline's input, once started; `None` again if its decoder stopped.
    to_decoder: Option<SyncSender<RawChunk>>,
    started: bool,
    /// Records handed to the pipeline or rebuilt here.
    records: u64,
    /// Time the scan waited for the decoder to take a chunk.
    send_wait_ns: u64,
    /// The most ops [`Sink::expect_records`] may reserve room for.
    reserve_ops_max: usize,
    /// The ops room was reserved for so far, in all.
    reserved_ops: usize,
}

/// Where replayed ops go.
struct Target<'env, S: Schema> {
    schema: &'env S,
    overlay: &'env S::Overlay,
    buffer: &'env Buffer<S::Op>,
    failure: &'env Failure,
    times: &'env StageTimes,
}

impl<S: Schema> Clone for Target<'_, S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S: Schema> Copy for Target<'_, S> {}

impl<'env, S: Schema> Target<'env, S> {
    /// Indexes part `part` of each op.
    fn index(self, part: usize, ops: &[(u64, PendingOp<S::Op>)]) {
        self.schema.index_replayed(
            self.overlay,
            part,
            ops.iter().map(|(op_key, pending)| (*op_key, &pending.op)),
        );
    }

    fn insert(self, ops: &[(u64, PendingOp<S::Op>)]) {
        self.buffer.extend_replayed(
            ops.iter()
                .map(|(op_key, pending)| (*op_key, pending.clone())),
        );
    }

    /// Decodes a chunk; on a failure records it and returns `None`.
    fn decode(self, raw: &RawChunk) -> Option<Vec<(u64, PendingOp<S::Op>)>> {
        let mut decoded = Vec::with_capacity(raw.records.len());
        let mut start = 0;
        for &(op_key, kind, end) in &raw.records {
            let payload = &raw.bytes[start..end];
            start = end;
            match decode_op(self.schema, kind, payload) {
                Ok((count_after, op)) => decoded.push((
                    op_key,
                    PendingOp {
                        op,
                        count_after,
                        bytes: payload.len() as u64 + OP_OVERHEAD_BYTES,
                    },
                )),
                Err(error) => {
                    // Nothing at or after a record that does not decode is indexed: the
                    // open fails anyway.
                    self.failure.record(op_key, error);
                    return None;
                }
            }
        }
        Some(decoded)
    }
}

impl<'scope, 'env: 'scope, S: Schema> ChunkingSink<'scope, 'env, S> {
    /// Starts the decode and index stages.
    fn start(&mut self) {
        let target = self.target;
        let (to_decoder, decoder_input) = sync_channel::<RawChunk>(CHUNKS_IN_FLIGHT);
        let mut to_indexers = Vec::new();
        for part in 0..S::REPLAY_INDEX_PARTS.max(1) {
            let (to_indexer, indexer_input) = sync_channel::<DecodedChunk<S::Op>>(CHUNKS_IN_FLIGHT);
            to_indexers.push(to_indexer);
            self.scope.spawn(move || {
                let mut busy_ns = 0;
                for chunk in indexer_input {
                    let started = Instant::now();
                    target.index(part, &chunk);
                    busy_ns += nanos_since(started);
                }
                if let Some(slot) = target.times.index_ns.get(part) {
                    slot.store(busy_ns, Ordering::Relaxed);
                }
            });
        }
        self.scope
            .spawn(move || decode_stage(target, &decoder_input, &to_indexers));
        self.to_decoder = Some(to_decoder);
        self.started = true;
    }

    /// Hands a full chunk to the pipeline, starting it if need be, and starts the next.
    fn send(&mut self) {
        // The next chunk's payloads take about as many bytes as this one's: sized ahead (up
        // to a bound: records may be large), its buffer is not grown (and copied) step by
        // step.
        let bytes_ahead = self.chunk.bytes.len() + self.chunk.bytes.len() / 8;
        let mut next = RawChunk::default();
        let _ = next.records.try_reserve_exact(CHUNK_RECORDS);
        let _ = next
            .bytes
            .try_reserve_exact(bytes_ahead.min(CHUNK_BYTES_AHEAD_MAX));
        let chunk = std::mem::replace(&mut self.chunk, next);
        self.hand_on(chunk);
    }

    /// Hands `chunk` to the pipeline, starting it if need be.
    fn hand_on(&mut self, chunk: RawChunk) {
        if !self.started {
            self.start();
        }
        let started = Instant::now();
        if let Some(sender) = &self.to_decoder
            && sender.send(chunk).is_err()
        {
            // The decoder stopped on a failure; the scan stops at the next record.
            self.to_decoder = None;
        }
        self.send_wait_ns += nanos_since(started);
    }

    /// Hands on the last, partial chunk — or, if the pipeline never started, rebuilds it
    /// here — and closes the pipeline's input.
    fn finish(mut self) {
        if self.chunk.records.is_empty() {
            return;
        }
        if self.started {
            let chunk = std::mem::take(&mut self.chunk);
            self.hand_on(chunk);
        } else if let Some(decoded) = self.target.decode(&self.chunk) {
            for part in 0..S::REPLAY_INDEX_PARTS.max(1) {
                self.target.index(part, &decoded);
            }
            self.target.insert(&decoded);
        }
    }
}

impl<'scope, 'env: 'scope, S: Schema> Sink for ChunkingSink<'scope, 'env, S> {
    fn replay(
        &mut self,
        record: &Record<'_>,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if self.target.failure.failed.load(Ordering::Relaxed)
            || (self.started && self.to_decoder.is_none())
        {
            return Err("an earlier record failed to decode".into());
        }
        self.records += 1;
        self.chunk.bytes.extend_from_slice(record.payload);
        self.chunk
            .records
            .push((record.op_key, record.kind.to_byte(), self.chunk.bytes.len()));
        if self.chunk.records.len() == CHUNK_RECORDS {
            self.send();
        }
        Ok(())
    }

    fn expect_records(&mut self, estimate: u64) {
        let ops = usize::try_from(estimate)
            .unwrap_or(usize::MAX)
            .min(self.reserve_ops_max)
            .min(RESERVE_OPS_MAX);
        if ops > self.reserved_ops {
            self.target
                .schema
                .reserve_replayed(self.target.overlay, ops);
            self.target.buffer.reserve_replayed(ops);
            self.reserved_ops = ops;
        }
    }
}

/// Runs `scan` (which replays the log into the sink it is given) with the rebuild pipeline
/// behind it, and returns what `scan` returned once every replayed op is indexed in
/// `overlay` (and [`Schema::finish_replay`] ran) and inserted into `buffer`. Room is reserved
/// ahead for the ops recovery expects to replay, up to `reserve_ops_max` (the buffer's op
/// bound) and [`RESERVE_OPS_MAX`]: an estimate from a damaged log's names must not reserve
/// without limit.
///
/// # Errors
/// [`Error::Decode`] for the lowest op key whose record did not decode (whatever `scan`
/// returned: its own error is then only the consequence of the sink stopping it).
pub(crate) fn rebuild<S: Schema, T>(
    schema: &S,
    overlay: &S::Overlay,
    buffer: &Buffer<S::Op>,
    reserve_ops_max: usize,
    scan: impl FnOnce(&mut dyn Sink) -> T,
) -> Result<T, Error> {
    let failure = Failure::default();
    let times = StageTimes::new(S::REPLAY_INDEX_PARTS.max(1));
    let replay_started = Instant::now();
    let scanned = std::thread::scope(|scope| {
        let mut sink = ChunkingSink {
            chunk: RawChunk::default(),
            scope,
            target: Target {
                schema,
                overlay,
                buffer,
                failure: &failure,
                times: &times,
            },
            to_decoder: None,
            started: false,
            records: 0,
            send_wait_ns: 0,
            reserve_ops_max,
            reserved_ops: 0,
        };
        let scanned = scan(&mut sink);
        let (started, records) = (sink.started, sink.records);
        times.scan_ns.store(
            nanos_since(replay_started).saturating_sub(sink.send_wait_ns),
            Ordering::Relaxed,
        );
        sink.finish();
        (scanned, started, records)
    });
    let (scanned, pipelined, records) = scanned;
    if let Some(error) = failure.into_error() {
        return Err(error);
    }
    let finish_started = Instant::now();
    schema.finish_replay(overlay);
    if pipelined {
        let ms = |ns: u64| ns / 1_000_000;
        tracing::debug!(
            records,
            elapsed_ms = ms(nanos_since(replay_started)),
            scan_busy_ms = ms(times.scan_ns.load(Ordering::Relaxed)),
            decode_busy_ms = ms(times.decode_ns.load(Ordering::Relaxed)),
            index_busy_ms = ?times
                .index_ns
                .iter()
                .map(|ns| ms(ns.load(Ordering::Relaxed)))
                .collect::<Vec<_>>(),
            finish_ms = ms(nanos_since(finish_started)),
            "replay stages"
        );
    }
    Ok(scanned)
}

/// The decode stage: decodes each chunk, buffers its ops and hands it to the indexers.
fn decode_stage<S: Schema>(
    target: Target<'_, S>,
    input: &Receiver<RawChunk>,
    to_indexers: &[SyncSender<DecodedChunk<S::Op>>],
) {
    for raw in input {
        let started = Instant::now();
        let Some(decoded) = target.decode(&raw) else {
            // Stopping closes the pipeline.
            return;
        };
        target.insert(&decoded);
        target
            .times
            .decode_ns
            .fetch_add(nanos_since(started), Ordering::Relaxed);
        let decoded = Arc::new(decoded);
        for to_indexer in to_indexers {
            if to_indexer.send(Arc::clone(&decoded)).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use walbuf_recovery::format::RecordKind;

    use super::*;
    use crate::shapes::overlay::{Resolved, ShapeOverlay};
    use crate::shapes::{Relation, Removal, Shape, ShapeOp, ShapeSchema, SnapshotState};

    fn add(i: u64) -> ShapeOp {
        ShapeOp::Add(Arc::new(Shape {
            handle: format!("h{i}"),
            shape: vec![1; 10],
            comparable: format!("c{i}").into_bytes(),
            hash: i as i64,
            relations: vec![Relation {
                oid: 7,
                schema: "public".into(),
                table: "t".into(),
            }],
            snapshot: SnapshotState::NotStarted,
        }))
    }

    /// Log payloads of `count` adds, op keys from 1: the live count, then the op.
    fn payloads(count: u64) -> Vec<(u64, u8, Vec<u8>)> {
        (1..=count)
            .map(|op_key| {
                let op = add(op_key);
                let mut payload = op_key.to_le_bytes().to_vec();
                ShapeSchema.encode(&op, &mut payload);
                (op_key, ShapeSchema.kind(&op), payload)
            })
            .collect()
    }

    fn replay_into(
        sink: &mut dyn Sink,
        records: &[(u64, u8, Vec<u8>)],
    ) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
        sink.expect_records(records.len() as u64);
        for (op_key, kind, payload) in records {
            sink.replay(&Record {
                offset: 0,
                op_key: *op_key,
                kind: RecordKind::Op(*kind),
                payload,
            })?;
        }
        Ok(records.len() as u64)
    }

    #[test]
    fn every_op_of_many_chunks_is_buffered_and_indexed() {
        rebuilds_every_op((CHUNK_RECORDS * 3 + 17) as u64);
    }

    #[test]
    fn a_replay_shorter_than_a_chunk_is_rebuilt_too() {
        rebuilds_every_op(17);
        rebuilds_every_op(CHUNK_RECORDS as u64);
    }

    fn rebuilds_every_op(count: u64) {
        let records = payloads(count);
        let overlay = ShapeOverlay::default();
        let buffer = Buffer::default();
        let scanned = rebuild(&ShapeSchema, &overlay, &buffer, usize::MAX, |sink| {
            replay_into(sink, &records)
        })
        .expect("no decode error")
        .expect("scan succeeds");
        assert_eq!(scanned, count);
        assert_eq!(buffer.len_ops(), count);
        assert_eq!(
            buffer.latest_at_or_below(u64::MAX).map(|(key, _)| key),
            Some(count)
        );
        for op_key in [1, CHUNK_RECORDS as u64, CHUNK_RECORDS as u64 + 1, count]
            .into_iter()
            .filter(|op_key| *op_key <= count)
        {
            assert!(
                matches!(
                    overlay.resolve(&format!("h{op_key}"), u64::MAX),
                    Resolved::Live(_)
                ),
                "h{op_key} is indexed"
            );
        }
        let mut handles = Vec::new();
        overlay.handles_with_oid(7, u64::MAX, &mut handles);
        assert_eq!(handles.len() as u64, count);
    }

    /// Rebuilds `records` with `reserve_ops_max`, saying `first` to the sink before the first
    /// record and `raised` (if any) halfway; returns the buffer's replay queue capacity.
    fn replayed_capacity_after(
        records: &[(u64, u8, Vec<u8>)],
        reserve_ops_max: usize,
        first: u64,
        raised: Option<u64>,
    ) -> usize {
        let overlay = ShapeOverlay::default();
        let buffer = Buffer::default();
        let (before, after) = records.split_at(records.len() / 2);
        let scanned = rebuild(&ShapeSchema, &overlay, &buffer, reserve_ops_max, |sink| {
            sink.expect_records(first);
            let mut scanned = replay_into(sink, before)?;
            if let Some(raised) = raised {
                sink.expect_records(raised);
            }
            scanned += replay_into(sink, after)?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(scanned)
        })
        .expect("no decode error")
        .expect("scan succeeds");
        assert_eq!(scanned, records.len() as u64);
        assert_eq!(
            buffer.len_ops(),
            records.len() as u64,
            "every op is buffered"
        );
        assert_eq!(
            overlay.staged_adds_capacity(),
            0,
            "the staged adds were built"
        );
        buffer.replayed_capacity()
    }

    #[test]
    fn the_replay_reserves_what_is_expected_in_all_even_when_raised_halfway() {
        let count = CHUNK_RECORDS * 2 + 17;
        let records = payloads(count as u64);
        // Said up front, exactly: the queue never grows past it.
        assert_eq!(
            replayed_capacity_after(&records, usize::MAX, count as u64, None),
            count
        );
        // Raised halfway (the pipeline may not have buffered anything yet): room for all of
        // it, not for the difference beside what is buffered.
        assert_eq!(
            replayed_capacity_after(&records, usize::MAX, (count / 2) as u64, Some(count as u64)),
            count
        );
    }

    #[test]
    fn an_absurd_estimate_reserves_at_most_the_bounds_and_loses_nothing() {
        // A damaged log's names can promise any number of records.
        let records = payloads(100);
        assert_eq!(
            replayed_capacity_after(&records, 1000, u64::MAX, None),
            1000,
            "the buffer's bound"
        );
        assert_eq!(
            replayed_capacity_after(&records, usize::MAX, u64::MAX, None),
            RESERVE_OPS_MAX,
            "the absolute bound"
        );
    }

    #[test]
    fn a_record_that_does_not_decode_fails_the_open_with_its_op_key() {
        fails_at((CHUNK_RECORDS * 2) as u64, CHUNK_RECORDS as u64 + 5);
        fails_at(10, 3);
    }

    fn fails_at(count: u64, bad: u64) {
        let mut records = payloads(count);
        records[bad as usize - 1].2.truncate(4);
        let overlay = ShapeOverlay::default();
        let buffer = Buffer::default();
        let error = rebuild(&ShapeSchema, &overlay, &buffer, usize::MAX, |sink| {
            replay_into(sink, &records)
        })
        .expect_err("the open fails");
        assert!(
            matches!(error, Error::Decode { op_key, .. } if op_key == bad),
            "{error:?}"
        );
        assert!(
            buffer.len_ops() < bad,
            "nothing at or after the bad record is buffered"
        );
    }

    /// A mix of every kind of op: mostly adds (each with its own oid and one of a few
    /// shared ones), removes and marks of earlier adds, re-adds of removed handles, resets.
    fn mixed_ops(count: u64) -> Vec<ShapeOp> {
        (1..=count)
            .map(|i| match i % 13 {
                3 => ShapeOp::Remove(Arc::new(Removal {
                    handle: format!("h{}", i - 2),
                    comparable: format!("c{}", i - 2).into_bytes(),
                    oids: vec![],
                })),
                5 => ShapeOp::Mark {
                    handle: Arc::new(format!("h{}", i - 1)),
                    state: SnapshotState::Started,
                },
                7 if i % 3 == 0 => ShapeOp::Reset,
                9 => {
                    // The handle removed at i - 6, added again with a new comparable.
                    let ShapeOp::Add(shape) = add(i - 8) else {
                        unreachable!()
                    };
                    ShapeOp::Add(Arc::new(Shape {
                        comparable: format!("again{i}").into_bytes(),
                        relations: vec![Relation {
                            oid: (i % 5) as u32,
                            schema: "public".into(),
                            table: "shared".into(),
                        }],
                        ..Shape::clone(&shape)
                    }))
                }
                _ => add(i),
            })
            .collect()
    }

    #[test]
    fn a_replayed_overlay_answers_as_one_indexed_op_by_op() {
        let count = (CHUNK_RECORDS * 2 + 100) as u64;
        let ops = mixed_ops(count);
        let records: Vec<(u64, u8, Vec<u8>)> = ops
            .iter()
            .zip(1u64..)
            .map(|(op, op_key)| {
                let mut payload = op_key.to_le_bytes().to_vec();
                ShapeSchema.encode(op, &mut payload);
                (op_key, ShapeSchema.kind(op), payload)
            })
            .collect();
        let replayed = ShapeOverlay::default();
        let buffer = Buffer::default();
        rebuild(&ShapeSchema, &replayed, &buffer, usize::MAX, |sink| {
            replay_into(sink, &records)
        })
        .expect("no decode error")
        .expect("scan succeeds");
        let indexed = ShapeOverlay::default();
        for (op, op_key) in ops.iter().zip(1u64..) {
            ShapeSchema.index(&indexed, op_key, op);
        }
        let listing = |overlay: &ShapeOverlay| {
            let mut handles = Vec::new();
            while let Some(next) = overlay.next_added_handle(handles.last().map(String::as_str)) {
                handles.push(next);
            }
            handles
        };
        assert_eq!(listing(&replayed), listing(&indexed));
        for view in [1, 100, CHUNK_RECORDS as u64 + 7, count - 1, u64::MAX] {
            for i in 1..=count + 1 {
                let handle = format!("h{i}");
                assert_eq!(
                    replayed.resolve(&handle, view),
                    indexed.resolve(&handle, view),
                    "{handle} at {view}"
                );
                for comparable in [format!("c{i}"), format!("again{i}")] {
                    assert_eq!(
                        replayed.resolve_comparable(comparable.as_bytes(), view),
                        indexed.resolve_comparable(comparable.as_bytes(), view),
                        "{comparable} at {view}"
                    );
                }
                assert_eq!(
                    replayed.presence.may_hold_handle(&handle),
                    indexed.presence.may_hold_handle(&handle)
                );
            }
            for oid in 0..10 {
                let (mut from_replay, mut from_index) = (Vec::new(), Vec::new());
                replayed.handles_with_oid(oid, view, &mut from_replay);
                indexed.handles_with_oid(oid, view, &mut from_index);
                assert_eq!(from_replay, from_index, "oid {oid} at {view}");
            }
        }
        // And unindexing every op leaves both empty alike.
        for (op, op_key) in ops.iter().zip(1u64..) {
            ShapeSchema.unindex(&replayed, op_key, op);
        }
        assert!(listing(&replayed).is_empty());
        assert_eq!(
            replayed.resolve("h1", u64::MAX),
            Resolved::Sqlite { mark: None }
        );
    }
}
