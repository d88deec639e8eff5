//! `format::read` as every format of the registry over the same arbitrary bytes, building every
//! order it returns. A format added to the registry is fuzzed here without a target of its own.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| offline_events_agent_fuzz::read_as_every_format(data));
