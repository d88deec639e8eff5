//! `format::read` as `json` (a JSON document) over arbitrary bytes, building every order it returns.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| offline_events_agent_fuzz::read_as("json", data));
