//! Criterion micro-benchmarks of the record codec: the encoding and checksum every append
//! computes, and the decoding every recovered record goes through.
//!
//! Run with `cargo bench -p walbuf --bench format`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use walbuf_recovery::format::{
    DEFAULT_MAX_RECORD_BYTES, RecordKind, decode_record, encode_record, encode_record_header,
    encode_record_trailer, padded_frame_len, record_checksum,
};

/// Payload bytes of the benchmarked records (the size `walbuf bench` uses).
const PAYLOAD_BYTES: usize = 256;
/// Any non-zero segment salt.
const SALT: u64 = 0x5eed_0000_0000_0001;

fn payload() -> Vec<u8> {
    (0..PAYLOAD_BYTES)
        .map(|index| (index * 31 % 251) as u8)
        .collect()
}

fn codec(c: &mut Criterion) {
    let payload = payload();
    let mut group = c.benchmark_group("format");
    group.throughput(Throughput::Bytes(padded_frame_len(PAYLOAD_BYTES)));
    // Exactly what `Log::append` computes before copying into the mapping.
    group.bench_function("header_checksum_trailer_256", |b| {
        b.iter(|| {
            let header =
                encode_record_header(RecordKind::Op(1), black_box(42), black_box(&payload).len());
            let checksum = record_checksum(black_box(SALT), &header, black_box(&payload));
            let trailer = encode_record_trailer(checksum, payload.len());
            black_box((header, trailer))
        });
    });
    group.bench_function("encode_record_256", |b| {
        b.iter(|| {
            encode_record(
                black_box(SALT),
                RecordKind::Op(1),
                black_box(42),
                black_box(&payload),
            )
        });
    });
    let encoded = encode_record(SALT, RecordKind::Op(1), 42, &payload);
    group.bench_function("decode_record_256", |b| {
        b.iter(|| {
            decode_record(
                black_box(&encoded),
                64,
                black_box(SALT),
                DEFAULT_MAX_RECORD_BYTES,
            )
            .map(|record| record.op_key)
        });
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
