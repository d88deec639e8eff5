//! `watch`: follow the queue as the daemon works — each event as it is captured (normalised, PII
//! only as hashes) and each request as TikTok answers it. It polls the SQLite file, so it works
//! beside a running service without talking to it.

use crate::queue::{Queue, QueueError};
use crate::status::timestamp;
use std::io::Write;
use std::time::{Duration, Instant};

pub struct Options {
    /// Show what is already in the queue (the last 50 events and requests) before following.
    pub history: bool,
    /// Stop after this long (for scripts); follow forever when `None`.
    pub exit_after: Option<Duration>,
}

pub fn follow(queue: &Queue, options: &Options, out: &mut impl Write) -> Result<(), QueueError> {
    let (max_event, max_log) = queue.max_ids()?;
    let (mut last_event, mut last_log) =
        if options.history { ((max_event - 50).max(0), (max_log - 50).max(0)) } else { (max_event, max_log) };
    let started = Instant::now();
    loop {
        for e in queue.events_after(last_event, 500)? {
            last_event = e.id;
            let state = e.state.label();
            let _ =
                writeln!(out, "captured  #{} [{state}] from {}: {}", e.id, e.file.as_deref().unwrap_or("?"), e.payload);
        }
        for entry in queue.send_log_after(last_log, 500)? {
            last_log = entry.id;
            let _ = writeln!(
                out,
                "{} {} {} events -> {} code {} {:?}{}{}",
                timestamp(entry.at),
                entry.class,
                entry.events,
                entry.http_status.map_or("no http answer".to_string(), |s| format!("http {s}")),
                entry.code.map_or("-".to_string(), |c| c.to_string()),
                entry.message,
                entry.request_id.map(|r| format!(" request_id {r}")).unwrap_or_default(),
                entry.test_event_code.map(|c| format!(" [test_event_code {c}]")).unwrap_or_default(),
            );
        }
        let _ = out.flush();
        if options.exit_after.is_some_and(|d| started.elapsed() >= d) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
