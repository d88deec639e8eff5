//! `event::build` (and the wire JSON of what it builds) over a raw order made of arbitrary strings.
#![no_main]

libfuzzer_sys::fuzz_target!(|order: offline_events_agent_fuzz::Order| offline_events_agent_fuzz::build(order));
