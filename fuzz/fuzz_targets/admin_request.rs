//! requests to the admin endpoint over real loopback TCP, in chunks: the harness and its properties are in `tandem_metrics::fuzzing::request_in_chunks`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem_metrics::fuzzing::request_in_chunks(data));
