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
    /// From `status`'s assessment (`None` when it could not be gathered).
    pub status: Option<StatusGauges>,
}

/// What the metrics take from a status report: state, heartbeat, each source.
#[derive(Debug, Clone, Default)]
pub struct StatusGauges {
    pub state: u8,
    pub heartbeat_age_secs: Option<i64>,
    /// Name, silent (no file for longer than `expect_files_within`), match keys.
    pub sources: Vec<(String, bool, crate::status::MatchKeys)>,
}

impl StatusGauges {
    pub fn of(r: &crate::status::Report) -> StatusGauges {
        let silent = |name: &str| {
            r.issues.iter().any(|i| matches!(i, crate::status::Issue::Silent { source, .. } if source == name))
        };
        StatusGauges {
            state: r.state.gauge(),
            heartbeat_age_secs: r.service.heartbeat_age_secs,
            sources: r.sources.iter().map(|s| (s.name.clone(), silent(&s.name), s.match_keys)).collect(),
        }
    }
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
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
    if let Some(g) = &s.status {
        let mut gauge = |name: &str, help: &str, values: Vec<(String, String)>| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
            for (labels, value) in values {
                out.push_str(&format!("{name}{labels} {value}\n"));
            }
        };
        gauge(
            "offline_events_agent_state",
            "What `status` says: 0 ok, 1 warning, 2 not ok.",
            vec![(String::new(), g.state.to_string())],
        );
        gauge(
            "offline_events_agent_heartbeat_age_seconds",
            "Seconds since the service last recorded its heartbeat in the queue.",
            vec![(String::new(), g.heartbeat_age_secs.unwrap_or(0).to_string())],
        );
        gauge(
            "offline_events_agent_source_silent",
            "1 while a source has had no new file for longer than its expect_files_within.",
            g.sources
                .iter()
                .map(|(n, silent, _)| (format!("{{source=\"{}\"}}", label(n)), u8::from(*silent).to_string()))
                .collect(),
        );
        let keys = g.sources.iter().flat_map(|(n, _, k)| {
            [("email", k.email), ("phone", k.phone), ("external_id_only", k.external_id_only), ("none", k.none)]
                .map(|(key, v)| (format!("{{source=\"{}\",key=\"{key}\"}}", label(n)), v.to_string()))
        });
        gauge(
            "offline_events_agent_match_keys",
            "Events queued per source by the best key TikTok can match them by (e-mail, phone only, external_id only, none).",
            keys.collect(),
        );
    }
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
        assert!(!text.contains("offline_events_agent_state"), "no status, no state gauge");
        let keys = crate::status::MatchKeys { email: 5, none: 2, ..Default::default() };
        let status = StatusGauges {
            state: 2,
            heartbeat_age_secs: Some(12),
            sources: vec![("till".into(), false, keys), ("web \"2\"".into(), true, Default::default())],
        };
        let text = metrics_text(&Snapshot { status: Some(status), ..s });
        for line in [
            "offline_events_agent_state 2",
            "offline_events_agent_heartbeat_age_seconds 12",
            "offline_events_agent_source_silent{source=\"till\"} 0",
            "offline_events_agent_source_silent{source=\"web \\\"2\\\"\"} 1",
            "offline_events_agent_match_keys{source=\"till\",key=\"email\"} 5",
            "offline_events_agent_match_keys{source=\"till\",key=\"none\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
