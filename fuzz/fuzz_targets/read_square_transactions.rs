//! `format::read` as `square-transactions` over arbitrary bytes, building every order it returns.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| offline_events_agent_fuzz::read_as("square-transactions", data));
