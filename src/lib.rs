//! offline-events-agent: point-of-sale exports in, TikTok offline events out.
//!
//! The pipeline, one way: [`source`] (find complete files) → [`format`] (read rows into raw orders)
//! → [`event`] (normalise, hash, derive ids; pure) → [`queue`] (SQLite, the only durable state) →
//! [`tiktok`] (wire format, classification, HTTP) → [`sender`] and [`daemon`] (orchestration).
//! A growing day file (append mode) goes through [`append`] instead of [`ingest`]'s whole-file path.
//! See ARCHITECTURE.md.

pub mod append;
pub mod config;
pub mod daemon;
pub mod event;
pub mod format;
pub mod ingest;
pub mod logging;
pub mod queue;
pub mod sender;
pub mod source;
pub mod status;
pub mod tap;
pub mod tiktok;

/// Unix seconds now.
pub fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}
