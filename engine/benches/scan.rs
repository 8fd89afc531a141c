//! Criterion micro-benchmark of recovery's scan of one full segment (64 MiB of 256-byte
//! records, the default segment size): header check, then every record decoded and verified.
//!
//! Run with `cargo bench -p walbuf --bench scan`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use walbuf_recovery::format::{
    DEFAULT_MAX_RECORD_BYTES, RecordKind, SegmentHeader, encode_record, padded_frame_len,
};
use walbuf_recovery::scanner::scan_segment;

/// The default segment size of the log.
const SEGMENT_BYTES: u64 = 64 << 20;
/// Payload bytes of every record.
const PAYLOAD_BYTES: usize = 256;

/// A segment filled with records up to its last whole record, then zeros; and its record count.
fn full_segment() -> (Vec<u8>, u64) {
    let salt = 0x5eed_0000_0000_0001;
    let header = SegmentHeader {
        sequence: 1,
        first_op_key: 1,
        salt,
        capacity_bytes: SEGMENT_BYTES,
    };
    let payload: Vec<u8> = (0..PAYLOAD_BYTES)
        .map(|index| (index * 31 % 251) as u8)
        .collect();
    let mut bytes = Vec::with_capacity(SEGMENT_BYTES as usize);
    bytes.extend_from_slice(&header.encode());
    let mut op_key = 1;
    while (bytes.len() as u64) + padded_frame_len(PAYLOAD_BYTES) <= SEGMENT_BYTES {
        bytes.extend(encode_record(salt, RecordKind::Op(1), op_key, &payload));
        op_key += 1;
    }
    bytes.resize(SEGMENT_BYTES as usize, 0);
    (bytes, op_key - 1)
}

fn scan(c: &mut Criterion) {
    let (segment, records) = full_segment();
    let mut group = c.benchmark_group("scanner");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(SEGMENT_BYTES));
    group.bench_function("scan_segment_64MiB_256B_records", |b| {
        b.iter(|| {
            let scan = scan_segment(black_box(&segment), DEFAULT_MAX_RECORD_BYTES)
                .expect("the segment header is valid");
            assert_eq!(scan.records.len() as u64, records, "every record scanned");
            scan.valid_end
        });
    });
    group.finish();
}

criterion_group!(benches, scan);
criterion_main!(benches);
