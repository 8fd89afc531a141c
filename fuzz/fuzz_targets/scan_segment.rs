//! Arbitrary bytes as a segment file and as a damaged log directory, through the scanner and
//! replay in every mode: see `walbuf_tests::fuzz::check_scan_segment`.
#![no_main]

use walbuf_fuzz::checks::check_scan_segment;

libfuzzer_sys::fuzz_target!(|data: &[u8]| walbuf_fuzz::run(data, check_scan_segment));
