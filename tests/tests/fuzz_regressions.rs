//! The fuzz targets' properties under `cargo test`: every committed seed
//! (`fuzz/seeds/<target>/`) and saved crash input (`fuzz/regressions/<target>/`) through the
//! checking functions of `walbuf_tests::fuzz`, then a few thousand seeded random inputs.
//!
//! Reproduce a random failure with the seed it prints: `WALBUF_SEED=<seed> cargo test -p
//! walbuf-tests --test fuzz_regressions`. `WALBUF_FUZZ_CASES=<n>` runs more random inputs.
//! Regenerate the seed corpus with `cargo test -p walbuf-tests --test fuzz_regressions --
//! --ignored regenerate_seeds`.
#![allow(clippy::print_stderr)]

use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use walbuf_recovery::format::{RecordKind, SegmentHeader, encode_record, record_checksum};
use walbuf_tests::fuzz::{check_decode_record, check_scan_segment};

/// A fuzz target's checking function: panics when a property is violated.
type Check = fn(&[u8]);

/// The targets, each with its checking function.
const TARGETS: [(&str, Check); 2] = [
    ("decode_record", check_decode_record),
    ("scan_segment", check_scan_segment),
];

/// The seed of the random inputs when `WALBUF_SEED` is not set: the normal run is the same
/// every time.
const DEFAULT_SEED: u64 = 0x5eed_f022;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Every input file under `dir` (none if it does not exist), sorted by name.
fn input_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `check` on every file of `dir`, collecting the names of those that panic.
fn replay_dir(dir: &Path, check: fn(&[u8])) -> (usize, Vec<String>) {
    let files = input_files(dir);
    let mut failures = Vec::new();
    for file in &files {
        let data = std::fs::read(file).expect("read a fuzz input");
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            failures.push(file.display().to_string());
        }
    }
    (files.len(), failures)
}

#[test]
fn seeds_and_regressions_pass() {
    let mut failures = Vec::new();
    for (target, check) in TARGETS {
        let (seeds, mut failed) = replay_dir(&fuzz_dir().join("seeds").join(target), check);
        assert!(
            seeds > 0,
            "no seeds for {target}: run the regenerate_seeds test"
        );
        failures.append(&mut failed);
        let (_, mut failed) = replay_dir(&fuzz_dir().join("regressions").join(target), check);
        failures.append(&mut failed);
    }
    assert!(
        failures.is_empty(),
        "fuzz inputs that violate a property (see the panics above): {failures:#?}"
    );
}

fn seed_and_cases() -> (u64, usize) {
    let seed = std::env::var("WALBUF_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let cases = std::env::var("WALBUF_FUZZ_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(5000);
    eprintln!("seed {seed} (WALBUF_SEED), {cases} cases (WALBUF_FUZZ_CASES)");
    (seed, cases)
}

/// Runs one random input; if it fails, saves it where it can be copied to
/// `fuzz/regressions/<target>/` and replayed by `cargo fuzz run` too.
fn run_case(target: &str, check: fn(&[u8]), input: &[u8], seed: u64, case: usize) {
    if std::panic::catch_unwind(|| check(input)).is_ok() {
        return;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
    let path = dir.join(format!("{target}-seed-{seed}-case-{case}"));
    let saved = match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, input)) {
        Ok(()) => format!(
            "input saved to {}: copy it to fuzz/regressions/{target}/",
            path.display()
        ),
        Err(error) => format!("could not save the input: {error}"),
    };
    panic!(
        "{target}: case {case} of seed {seed} failed (see the panic above); replay with \
         WALBUF_SEED={seed}; {saved}"
    );
}

/// Damages `bytes` a little: bit flips, overwritten bytes, a truncation, appended bytes.
fn mutate(rng: &mut StdRng, bytes: &mut Vec<u8>) {
    for _ in 0..rng.random_range(0..4) {
        if bytes.is_empty() {
            break;
        }
        match rng.random_range(0..4) {
            0 => {
                let at = rng.random_range(0..bytes.len());
                bytes[at] ^= 1 << rng.random_range(0..8);
            }
            1 => {
                let at = rng.random_range(0..bytes.len());
                bytes[at] = rng.random();
            }
            2 => {
                let len = rng.random_range(0..=bytes.len());
                bytes.truncate(len);
            }
            _ => {
                let extra: Vec<u8> = (0..rng.random_range(1..16)).map(|_| rng.random()).collect();
                bytes.extend(extra);
            }
        }
    }
}

fn random_bytes(rng: &mut StdRng, max_len: usize) -> Vec<u8> {
    let mut bytes = vec![0; rng.random_range(0..=max_len)];
    rng.fill_bytes(&mut bytes);
    bytes
}

fn random_payload(rng: &mut StdRng) -> Vec<u8> {
    let len = match rng.random_range(0..8) {
        0 => 0,
        1 => rng.random_range(1000..1100),
        _ => rng.random_range(1..64),
    };
    random_bytes_exact(rng, len)
}

fn random_bytes_exact(rng: &mut StdRng, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    rng.fill_bytes(&mut bytes);
    bytes
}

#[test]
fn random_records() {
    let (seed, cases) = seed_and_cases();
    let mut rng = StdRng::seed_from_u64(seed);
    for case in 0..cases {
        let mut input = rng.random::<u64>().to_le_bytes().to_vec();
        if rng.random_bool(0.2) {
            input.extend(random_bytes(&mut rng, 64));
        } else {
            let salt = u64::from_le_bytes(input[..8].try_into().expect("8 bytes"));
            let kind = if rng.random_bool(0.2) {
                RecordKind::SyncMark
            } else {
                RecordKind::Op(rng.random_range(1..=127))
            };
            let payload = if kind == RecordKind::SyncMark {
                rng.random::<u64>().to_le_bytes().to_vec()
            } else {
                random_payload(&mut rng)
            };
            input.extend(encode_record(salt, kind, rng.random(), &payload));
            mutate(&mut rng, &mut input);
        }
        run_case("decode_record", check_decode_record, &input, seed, case);
    }
}

#[test]
fn random_segments() {
    let (seed, cases) = seed_and_cases();
    let mut rng = StdRng::seed_from_u64(seed);
    let seeds = input_files(&fuzz_dir().join("seeds").join("scan_segment"));
    for case in 0..cases {
        let input = match rng.random_range(0..3) {
            // Random bytes: a random plan (and, raw, mostly a bad header).
            0 => random_bytes(&mut rng, 256),
            // A valid segment written by the encoder, then damaged.
            1 => {
                let mut segment = random_segment(&mut rng);
                mutate(&mut rng, &mut segment);
                segment
            }
            // A committed seed, damaged.
            _ => {
                let mut bytes = seeds
                    .get(rng.random_range(0..seeds.len().max(1)))
                    .map(|path| std::fs::read(path).expect("read seed"))
                    .unwrap_or_default();
                mutate(&mut rng, &mut bytes);
                bytes
            }
        };
        run_case("scan_segment", check_scan_segment, &input, seed, case);
    }
}

/// A segment of random op records and honest sync marks, zero-padded to its capacity.
fn random_segment(rng: &mut StdRng) -> Vec<u8> {
    let salt = rng.random();
    let first_op_key = rng.random_range(1..100);
    let mut builder = SegmentBuilder::new(first_op_key, salt);
    for _ in 0..rng.random_range(0..12) {
        if rng.random_bool(0.2) {
            builder.mark();
        } else {
            let payload = random_payload(rng);
            builder.op(rng.random_range(1..=127), &payload);
        }
    }
    let slack = 8 * rng.random_range(0..32);
    builder.finish(slack)
}

/// Writes a segment the way the log writer does.
struct SegmentBuilder {
    salt: u64,
    header: SegmentHeader,
    body: Vec<u8>,
    next_key: u64,
    last_key: u64,
}

impl SegmentBuilder {
    fn new(first_op_key: u64, salt: u64) -> Self {
        Self {
            salt,
            header: SegmentHeader {
                sequence: 1,
                first_op_key,
                salt,
                capacity_bytes: 0,
            },
            body: Vec::new(),
            next_key: first_op_key,
            last_key: 0,
        }
    }

    fn offset(&self) -> u64 {
        64 + self.body.len() as u64
    }

    fn op(&mut self, kind: u8, payload: &[u8]) -> &mut Self {
        self.body.extend(encode_record(
            self.salt,
            RecordKind::Op(kind),
            self.next_key,
            payload,
        ));
        self.last_key = self.next_key;
        self.next_key = self.next_key.wrapping_add(1);
        self
    }

    /// A sync mark claiming everything written so far.
    fn mark(&mut self) -> &mut Self {
        let claim = self.offset();
        self.body.extend(encode_record(
            self.salt,
            RecordKind::SyncMark,
            self.last_key,
            &claim.to_le_bytes(),
        ));
        self
    }

    fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.body.extend_from_slice(bytes);
        self
    }

    /// The file: header, records, `slack` zero bytes and padding to a multiple of 8.
    fn finish(&mut self, slack: u64) -> Vec<u8> {
        let capacity = (self.offset() + slack).next_multiple_of(8).max(88);
        self.header.capacity_bytes = capacity;
        let mut file = self.header.encode().to_vec();
        file.extend_from_slice(&self.body);
        file.resize(capacity as usize, 0);
        file
    }
}

/// A record with every field chosen, the checksum computed over what is there: for seeds the
/// encoder cannot write (unknown kinds, non-zero reserved bytes or padding).
fn raw_record(
    salt: u64,
    kind: u8,
    reserved: u8,
    op_key: u64,
    payload: &[u8],
    padding: u8,
) -> Vec<u8> {
    let frame_len = 20 + payload.len() as u32;
    let mut header = [0_u8; 16];
    header[0..4].copy_from_slice(&frame_len.to_le_bytes());
    header[4] = kind;
    header[5] = reserved;
    header[8..16].copy_from_slice(&op_key.to_le_bytes());
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(payload);
    bytes.extend(record_checksum(salt, &header, payload).to_le_bytes());
    while bytes.len() % 8 != 0 {
        bytes.push(padding);
    }
    bytes
}

/// The committed seed corpus: (target, file name, bytes).
fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    const SALT: u64 = 0x0123_4567_89ab_cdef;
    let record_seed = |record: Vec<u8>| {
        let mut input = SALT.to_le_bytes().to_vec();
        input.extend(record);
        input
    };
    let op = |key: u64, payload: &[u8]| encode_record(SALT, RecordKind::Op(1), key, payload);
    let pattern = |len: usize| (0..len).map(|i| (i * 7 + 3) as u8).collect::<Vec<u8>>();
    let mut seeds = vec![
        ("decode_record", "empty", Vec::new()),
        ("decode_record", "op-empty-payload", record_seed(op(1, b""))),
        ("decode_record", "op-1-byte", record_seed(op(2, b"a"))),
        (
            "decode_record",
            "op-8-bytes",
            record_seed(op(3, b"8 bytes!")),
        ),
        (
            "decode_record",
            "op-100-bytes",
            record_seed(op(4, &pattern(100))),
        ),
        (
            "decode_record",
            "op-1000-bytes",
            record_seed(op(5, &pattern(1000))),
        ),
        // Frame 1030: too large for the small limit, valid under the default.
        (
            "decode_record",
            "op-1010-bytes",
            record_seed(op(6, &pattern(1010))),
        ),
        (
            "decode_record",
            "op-kind-127-max-key",
            record_seed(encode_record(SALT, RecordKind::Op(127), u64::MAX, b"last")),
        ),
        (
            "decode_record",
            "sync-mark",
            record_seed(encode_record(
                SALT,
                RecordKind::SyncMark,
                9,
                &4096_u64.to_le_bytes(),
            )),
        ),
        ("decode_record", "zeros", record_seed(vec![0; 24])),
        (
            "decode_record",
            "short-nonzero",
            record_seed(vec![0, 0, 0, 0, 7]),
        ),
        (
            "decode_record",
            "length-19",
            record_seed(19_u32.to_le_bytes().into_iter().chain([0; 20]).collect()),
        ),
        (
            "decode_record",
            "length-too-large",
            record_seed(
                0x7fff_fff0_u32
                    .to_le_bytes()
                    .into_iter()
                    .chain([1; 28])
                    .collect(),
            ),
        ),
        ("decode_record", "truncated", {
            let mut record = record_seed(op(7, &pattern(40)));
            record.truncate(8 + 40);
            record
        }),
        ("decode_record", "bad-checksum", {
            let mut record = record_seed(op(8, &pattern(12)));
            record[8 + 20] ^= 0x10;
            record
        }),
        (
            "decode_record",
            "nonzero-padding",
            record_seed(raw_record(SALT, 1, 0, 9, b"abc", 0xee)),
        ),
        (
            "decode_record",
            "nonzero-reserved",
            record_seed(raw_record(SALT, 1, 1, 9, b"abcd", 0)),
        ),
        (
            "decode_record",
            "unknown-kind",
            record_seed(raw_record(SALT, 0x81, 0, 9, b"abcd", 0)),
        ),
        (
            "decode_record",
            "sync-mark-9-bytes",
            record_seed(raw_record(SALT, 0x80, 0, 9, &[1; 9], 0)),
        ),
        ("decode_record", "op-then-garbage", {
            let mut record = record_seed(op(10, b"payload"));
            record.extend([0xff; 24]);
            record
        }),
    ];

    let clean = || {
        let mut builder = SegmentBuilder::new(1, SALT);
        builder.op(1, b"first").op(2, &pattern(30)).mark();
        builder
            .op(3, b"")
            .op(4, &pattern(7))
            .op(127, &pattern(120))
            .mark();
        builder.op(5, b"last");
        builder
    };
    let header_only = SegmentBuilder::new(1, SALT).finish(4096)[..64].to_vec();
    let mut scan = vec![
        ("scan_segment", "empty", Vec::new()),
        ("scan_segment", "header-only", header_only.clone()),
        (
            "scan_segment",
            "no-records",
            SegmentBuilder::new(1, SALT).finish(448),
        ),
        ("scan_segment", "clean", clean().finish(256)),
        ("scan_segment", "clean-full", clean().finish(0)),
        ("scan_segment", "clean-first-key-1000", {
            let mut builder = SegmentBuilder::new(1000, SALT);
            builder.op(1, b"a").op(2, b"b").mark().op(3, b"c");
            builder.finish(64)
        }),
        ("scan_segment", "torn-tail", {
            let mut builder = clean();
            let half = op(6, &pattern(50));
            builder.raw(&half[..30]);
            builder.finish(128)
        }),
        ("scan_segment", "torn-record-after-gap", {
            let mut builder = clean();
            builder.raw(&[0; 24]).raw(&op(6, b"after a gap"));
            builder.finish(128)
        }),
        ("scan_segment", "corruption-below-mark", {
            let mut file = clean().finish(128);
            file[64 + 16 + 2] ^= 0x04; // the first record's payload; marks claim it durable
            file
        }),
        ("scan_segment", "salvage-after-damage", {
            let mut builder = SegmentBuilder::new(1, SALT);
            builder.op(1, b"one").raw(&[0xab; 16]);
            builder.next_key = 2;
            builder.op(1, b"two").op(1, b"three").mark();
            builder.finish(64)
        }),
        ("scan_segment", "truncated-mid-record", {
            let mut file = clean().finish(128);
            file.truncate(64 + 40 + 5);
            file
        }),
        ("scan_segment", "out-of-sequence-key", {
            let mut builder = SegmentBuilder::new(1, SALT);
            builder.op(1, b"one");
            builder.next_key = 5;
            builder.op(1, b"five");
            builder.finish(64)
        }),
        ("scan_segment", "mark-claims-past-itself", {
            let mut builder = SegmentBuilder::new(1, SALT);
            builder.op(1, b"one");
            builder.raw(&encode_record(
                SALT,
                RecordKind::SyncMark,
                1,
                &4000_u64.to_le_bytes(),
            ));
            builder.finish(64)
        }),
        ("scan_segment", "length-too-large", {
            let mut builder = clean();
            builder.raw(&0xffff_fff8_u32.to_le_bytes()).raw(&[1; 12]);
            builder.finish(64)
        }),
        ("scan_segment", "record-above-small-limit", {
            let mut builder = SegmentBuilder::new(1, SALT);
            builder
                .op(1, &pattern(900))
                .op(2, &pattern(1100))
                .op(3, b"after");
            builder.finish(64)
        }),
        ("scan_segment", "bytes-past-capacity", {
            let mut file = clean().finish(0);
            file.extend([0x5a; 40]);
            file
        }),
        ("scan_segment", "short-file", {
            let mut file = clean().finish(2048);
            file.truncate(300);
            file
        }),
        ("scan_segment", "header-bad-checksum", {
            let mut file = clean().finish(64);
            file[20] ^= 1;
            file
        }),
        ("scan_segment", "header-version-2", {
            let mut file = clean().finish(64);
            file[8] = 2;
            file
        }),
        ("scan_segment", "header-bad-magic", {
            let mut file = clean().finish(64);
            file[0] = b'X';
            file
        }),
        ("scan_segment", "keys-near-u64-max", {
            let mut builder = SegmentBuilder::new(u64::MAX - 2, SALT);
            builder.op(1, b"max-2").op(1, b"max-1").op(1, b"max").mark();
            builder.finish(64)
        }),
    ];
    // Inputs that read well as plans (multi-segment directories); as raw segments they are
    // bad headers.
    let mut rng = StdRng::seed_from_u64(7);
    for name in ["plan-a", "plan-b", "plan-c", "plan-d"] {
        scan.push(("scan_segment", name, random_bytes_exact(&mut rng, 200)));
    }
    seeds.append(&mut scan);
    seeds
}

/// Rewrites `fuzz/seeds/` from [`seeds`]; run it after changing the format or the seeds and
/// commit the result.
#[test]
#[ignore = "writes fuzz/seeds/; run by hand"]
fn regenerate_seeds() {
    for (target, _) in TARGETS {
        let dir = fuzz_dir().join("seeds").join(target);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).expect("remove old seeds");
        }
        std::fs::create_dir_all(&dir).expect("create seed directory");
    }
    for (target, name, bytes) in seeds() {
        let path = fuzz_dir().join("seeds").join(target).join(name);
        std::fs::write(&path, bytes).expect("write seed");
    }
}

/// The `store_ops` target: every seed and saved crash input, then random inputs (fewer: each
/// opens stores; `WALBUF_FUZZ_CASES` raises them too).
#[test]
fn store_ops_inputs() {
    let check = walbuf_tests::fuzz_store::check_store_ops;
    let mut failures = Vec::new();
    let mut files = 0;
    for kind in ["seeds", "regressions"] {
        let (count, failed) = replay_dir(&fuzz_dir().join(kind).join("store_ops"), check);
        files += count;
        failures.extend(failed);
    }
    assert!(files > 0, "no store_ops seeds under fuzz/seeds/store_ops");
    assert!(failures.is_empty(), "store_ops inputs failed: {failures:?}");
    let (seed, cases) = seed_and_cases();
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5707);
    for _ in 0..(cases / 100).max(1) {
        let mut data = vec![0u8; rng.random_range(1..120)];
        rng.fill_bytes(&mut data);
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            panic!("store_ops failed on {data:?} (WALBUF_SEED={seed})");
        }
    }
}
