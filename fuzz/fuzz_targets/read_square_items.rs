//! `format::read` as `square-items` over arbitrary bytes, building every order it returns.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| offline_events_agent_fuzz::read_as("square-items", data));
