//! offline-events-agent: point-of-sale exports in, TikTok offline events out.
//!
//! One export file goes one way, each module once: [`source`] (find complete files) → [`intake`]
//! (the life of a file: take, commit, then archive/delete/quarantine) → [`format`] (read rows into
//! raw orders) → [`event`] (normalise, hash, derive ids; pure) → [`queue`] (SQLite, the only durable
//! state). Delivery: [`queue`] → [`sender`] → [`tiktok`] (wire format, classification, HTTP).
//! Above them and never called back: [`daemon`] (the service's tasks, signals, sd_notify),
//! [`commands`] (the one-shot commands), `status`/`tap` (reports), [`cli`] (the command line's
//! definitions) and `main.rs` (the command line).
//! See ARCHITECTURE.md.

pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod event;
pub mod format;
pub mod intake;
pub mod logging;
pub mod queue;
pub mod sender;
pub mod source;
pub mod status;
pub mod tap;
pub mod tiktok;

/// Unix seconds now. In debug builds, `OFFLINE_EVENTS_AGENT_CLOCK_OFFSET_SECS=<n>` in the
/// environment moves this clock `n` seconds (the integration tests' clock jumps); release builds
/// compile that to nothing.
pub fn now() -> i64 {
    let offset = if cfg!(debug_assertions) {
        std::env::var("OFFLINE_EVENTS_AGENT_CLOCK_OFFSET_SECS").ok().and_then(|v| v.parse::<i64>().ok()).unwrap_or(0)
    } else {
        0
    };
    jiff::Timestamp::now().as_second() + offset
}

/// Fault injection for the integration tests, in debug builds only: with
/// `OFFLINE_EVENTS_AGENT_FAULT=<name>` in the environment, the point called `name` panics. Release
/// builds compile it to nothing.
#[inline]
/// Debug builds only: with `OFFLINE_EVENTS_AGENT_FAULT=<name>`, pause here for `pause` (a test
/// widens a race window, e.g. a new file landing where a file was just archived).
pub fn fault_pause(name: &str, pause: std::time::Duration) {
    if cfg!(debug_assertions) && std::env::var("OFFLINE_EVENTS_AGENT_FAULT").is_ok_and(|v| v == name) {
        std::thread::sleep(pause);
    }
}

pub fn fault_point(name: &str) {
    if cfg!(debug_assertions) && std::env::var("OFFLINE_EVENTS_AGENT_FAULT").is_ok_and(|v| v == name) {
        panic!("fault injected at {name}");
    }
}
