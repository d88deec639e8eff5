//! The service manager and monitoring at the edge: sd_notify messages, and the Prometheus
//! textfile for node_exporter. Nothing here decides anything.

use crate::queue::Counts;
use std::path::Path;

pub fn ready(status: &str) {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(status)]);
}

pub fn status(status: &str) {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(status)]);
}

pub fn watchdog() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
}

pub fn reloading() {
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Reloading,
        sd_notify::NotifyState::monotonic_usec_now().unwrap_or(sd_notify::NotifyState::Custom("")),
    ]);
}

pub fn stopping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}

/// What the metrics describe, gathered by the supervisor.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub counts: Counts,
    pub now: i64,
    pub last_success_at: Option<i64>,
    pub paused: bool,
    pub ingest_held: bool,
    pub healthy: bool,
    pub queue_bytes: u64,
}

/// Prometheus text exposition of a snapshot.
pub fn metrics_text(s: &Snapshot) -> String {
    let c = &s.counts;
    let oldest = c.oldest_pending_queued_at.map_or(0, |t| (s.now - t).max(0));
    let lines: [(&str, &str, String); 10] = [
        ("offline_events_agent_events_pending", "Events queued, not yet delivered.", c.pending.to_string()),
        ("offline_events_agent_events_sent", "Events delivered and still remembered.", c.sent.to_string()),
        ("offline_events_agent_events_dead", "Events that will not be delivered (dead letters).", c.dead.to_string()),
        ("offline_events_agent_oldest_pending_age_seconds", "Age of the oldest queued event.", oldest.to_string()),
        (
            "offline_events_agent_last_success_timestamp_seconds",
            "Unix time of the last delivery (0: never).",
            s.last_success_at.unwrap_or(0).to_string(),
        ),
        (
            "offline_events_agent_paused",
            "1 while sending is paused on a token or permission error.",
            u8::from(s.paused).to_string(),
        ),
        (
            "offline_events_agent_ingest_held",
            "1 while files are held back because the queue is full.",
            u8::from(s.ingest_held).to_string(),
        ),
        ("offline_events_agent_healthy", "1 while no part of the pipeline is stuck.", u8::from(s.healthy).to_string()),
        ("offline_events_agent_files_ingested", "Export files ingested.", c.files.to_string()),
        ("offline_events_agent_rows_rejected", "Rows rejected as malformed.", c.rejects.to_string()),
    ];
    let mut out = String::new();
    for (name, help, value) in lines {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"));
    }
    out.push_str(&format!(
        "# HELP offline_events_agent_queue_bytes Size of the queue database on disk.\n# TYPE offline_events_agent_queue_bytes gauge\noffline_events_agent_queue_bytes {}\n",
        s.queue_bytes
    ));
    out
}

/// Write the textfile atomically (temp file + rename), as node_exporter expects.
pub fn write_metrics(path: &Path, text: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_prometheus_text() {
        let s = Snapshot {
            counts: Counts { pending: 3, sent: 10, dead: 1, oldest_pending_queued_at: Some(90), ..Counts::default() },
            now: 100,
            last_success_at: Some(95),
            paused: true,
            ..Snapshot::default()
        };
        let text = metrics_text(&s);
        for line in [
            "offline_events_agent_events_pending 3",
            "offline_events_agent_oldest_pending_age_seconds 10",
            "offline_events_agent_last_success_timestamp_seconds 95",
            "offline_events_agent_paused 1",
            "# TYPE offline_events_agent_events_dead gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
