//! HTTP responses to a health probe, arriving in chunks: the harness and its properties are in `tandem_health::fuzzing::response_in_chunks`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem_health::fuzzing::response_in_chunks(data));
