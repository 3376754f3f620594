//! PROXY protocol v1/v2 headers, read in chunks: the harness and its properties are in `tandem_proxy_protocol::fuzzing::decode_in_chunks`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem_proxy_protocol::fuzzing::decode_in_chunks(data));
