//! Arbitrary bytes into the record decoder: see `walbuf_tests::fuzz::check_decode_record`.
#![no_main]

use walbuf_fuzz::checks::check_decode_record;

libfuzzer_sys::fuzz_target!(|data: &[u8]| walbuf_fuzz::run(data, check_decode_record));
