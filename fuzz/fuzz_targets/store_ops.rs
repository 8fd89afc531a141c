//! Shape-registry ops, flushes, reopens, power losses, process crashes and corruptions
//! against the reference model: see `walbuf_tests::fuzz_store::check_store_ops`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| walbuf_tests::fuzz_store::check_store_ops(data));
