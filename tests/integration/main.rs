//! The integration tests: the real binary, a real SQLite file, real files in temp folders, and real
//! HTTP over loopback to a strict fake TikTok server.

#[path = "../support/mod.rs"]
mod support;

mod append;
mod bad_input;
mod checkconfig;
mod cli;
mod clock;
mod e2e;
mod edges;
mod logs;
mod parts;
mod pii;
mod preview;
mod recovery;
mod redo;
mod refusals;
mod reread;
mod resilience;
mod service;
mod status;
mod test_mode;
mod token;
mod values;
mod watch;
