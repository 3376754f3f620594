//! config files: bytes to a validated config or located errors: the harness and its properties are in `tandem_config::fuzzing::load`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem_config::fuzzing::load(data));
