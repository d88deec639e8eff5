//! The service manager and monitoring at the edge: sd_notify messages, and the Prometheus
//! textfile for node_exporter. Nothing here decides anything.

use crate::queue::Counts;
use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub fn ready(status: &str) {
    notify(&format!("READY=1\nSTATUS={status}\n"), Kind::Keep);
}

pub fn status(status: &str) {
    notify(&format!("STATUS={status}\n"), Kind::Droppable);
}

pub fn watchdog() {
    notify("WATCHDOG=1\n", Kind::Keep);
}

pub fn reloading() {
    let now = sd_notify::NotifyState::monotonic_usec_now().map(|m| format!("{m}\n")).unwrap_or_default();
    notify(&format!("RELOADING=1\n{now}"), Kind::Keep);
}

pub fn stopping() {
    notify("STOPPING=1\n", Kind::Keep);
}

/// Wait up to `bound` for the messages handed to the notifier to be sent (before the process
/// exits: STOPPING must not be lost to a busy socket that is about to be read).
pub fn flush(bound: Duration) {
    let deadline = Instant::now() + bound;
    while UNSENT.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether a message may be dropped when earlier ones still wait for the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A STATUS line: the next one replaces it.
    Droppable,
    /// READY, WATCHDOG, RELOADING, STOPPING: kept and sent in order.
    Keep,
}

/// Messages handed to the notifier thread and not sent yet.
static UNSENT: AtomicUsize = AtomicUsize::new(0);

/// Whether to hand a message of `kind` to the notifier with `unsent` messages still waiting for
/// the socket. Pure.
fn hand_over(kind: Kind, unsent: usize) -> bool {
    kind == Kind::Keep || unsent == 0
}

/// Tell the service manager, never waiting for it: `sd_notify`'s send blocks on a full notify
/// socket (nobody reading it), and from the runtime's one thread that stopped the whole service.
/// Messages go to a thread of their own, in order; a STATUS is dropped while earlier messages
/// still wait (the next STATUS says the same, newer).
fn notify(message: &str, kind: Kind) {
    static NOTIFIER: OnceLock<Option<Arc<Outbox>>> = OnceLock::new();
    let notifier = NOTIFIER.get_or_init(|| {
        let socket = std::env::var_os("NOTIFY_SOCKET")?;
        let outbox = Arc::new(Outbox::default());
        let mine = outbox.clone();
        std::thread::Builder::new()
            .name("sd-notify".into())
            .spawn(move || loop {
                let message = {
                    let mut queue = mine.queue.lock().unwrap_or_else(|e| e.into_inner());
                    loop {
                        match queue.pop_front() {
                            Some(m) => break m,
                            None => queue = mine.ready.wait(queue).unwrap_or_else(|e| e.into_inner()),
                        }
                    }
                };
                let _ = send_blocking(&socket, &message);
                UNSENT.fetch_sub(1, Ordering::SeqCst);
            })
            .ok()?;
        Some(outbox)
    });
    let Some(outbox) = notifier else { return };
    if !hand_over(kind, UNSENT.load(Ordering::SeqCst)) {
        return;
    }
    UNSENT.fetch_add(1, Ordering::SeqCst);
    outbox.queue.lock().unwrap_or_else(|e| e.into_inner()).push_back(message.to_string());
    outbox.ready.notify_one();
}

/// Messages for the notifier thread, in order.
#[derive(Default)]
struct Outbox {
    queue: Mutex<VecDeque<String>>,
    ready: Condvar,
}

/// One datagram to the notify socket (a path, or `@name` in the abstract namespace).
fn send_blocking(socket: &std::ffi::OsStr, message: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let bytes = socket.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)?
        }
        None => SocketAddr::from_pathname(Path::new(socket))?,
    };
    UnixDatagram::unbound()?.send_to_addr(message.as_bytes(), &addr).map(drop)
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
            "1 while files (new ones, or archived ones to re-ingest) are held back because the queue is full.",
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
    fn a_status_is_dropped_while_earlier_messages_wait_for_the_socket() {
        let cases =
            [(Kind::Droppable, 0, true), (Kind::Droppable, 1, false), (Kind::Keep, 0, true), (Kind::Keep, 5, true)];
        for (kind, unsent, handed) in cases {
            assert_eq!(hand_over(kind, unsent), handed, "{kind:?} with {unsent} unsent");
        }
    }

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
