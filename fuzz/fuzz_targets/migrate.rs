//! keepalived.conf and haproxy.cfg text for `tandem migrate`: the harness and its properties are in `tandem::fuzzing::migrate`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem::fuzzing::migrate(data));
