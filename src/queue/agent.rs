//! The agent's persisted state for `status`, STATUS lines and metrics: typed here, stored as the
//! `agent_state` key/value table (one row per field that has a value). Read with
//! [`Queue::agent_state`]; written with [`Queue::update_agent_state`] or inside
//! [`Queue::record_attempt`] and [`Queue::record_delivered`], which write only the keys that
//! changed.

use super::{Queue, Result};
use rusqlite::{params, Connection, Transaction, TransactionBehavior};

/// Everything the agent keeps about its own health. `None` is an absent key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentState {
    /// Sending is paused on a token or permission problem: why.
    pub paused: Option<String>,
    /// The pause is about the access token (it could not be read, or TikTok refused it): writing a
    /// new token to the config's token file (`TokenSource::path`) fixes it, and the service tries
    /// again as soon as that file changes. `next_retry_at` says when it tries anyway.
    pub paused_on_token: bool,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    /// Set while a transient failure is being retried.
    pub next_retry_at: Option<i64>,
    pub last_success_at: Option<i64>,
    pub last_request_id: Option<String>,
    pub consecutive_failures: Option<u32>,
    /// Ingest holds files back (the queue is full): why.
    pub ingest_held: Option<String>,
    /// Archived files whose events the queue lost wait for room in the queue to be re-ingested
    /// (`intake::redo::reconcile` stopped at a full queue): why.
    pub reconcile_held: Option<String>,
    /// The queue was found damaged at start-up and recovered: what happened.
    pub recovered: Option<String>,
    /// The wall clock disagrees with TikTok's (or jumped): how far, in words. Expiry is held.
    pub clock_wrong: Option<String>,
    /// When the clock was first found wrong (TikTok's time, Unix seconds): events dead-lettered as
    /// expired while it was wrong go back to the queue once it is right.
    pub clock_wrong_since: Option<i64>,
    /// The running service's last sign of life (Unix seconds), written every
    /// `heartbeat_secs`; stale or absent, `status` says the service is not running.
    pub heartbeat_at: Option<i64>,
    /// How often the service writes `heartbeat_at`, in seconds.
    pub heartbeat_secs: Option<i64>,
    /// When the service last started.
    pub started_at: Option<i64>,
    /// When the service last stopped cleanly (absent while it runs).
    pub stopped_at: Option<i64>,
    /// A SIGHUP's config could not be loaded (the previous config runs on): the error.
    pub reload_failed: Option<String>,
    pub reload_failed_at: Option<i64>,
}

/// The keys, as stored.
const PAUSED: &str = "paused";
const LAST_ERROR: &str = "last_error";
const LAST_ERROR_AT: &str = "last_error_at";
const NEXT_RETRY_AT: &str = "next_retry_at";
const LAST_SUCCESS_AT: &str = "last_success_at";
const LAST_REQUEST_ID: &str = "last_request_id";
const CONSECUTIVE_FAILURES: &str = "consecutive_failures";
const INGEST_HELD: &str = "ingest_held";
const RECONCILE_HELD: &str = "reconcile_held";
const RECOVERED: &str = "recovered";
const CLOCK_WRONG: &str = "clock_wrong";
const CLOCK_WRONG_SINCE: &str = "clock_wrong_since";
const HEARTBEAT_AT: &str = "heartbeat_at";
const HEARTBEAT_SECS: &str = "heartbeat_secs";
const STARTED_AT: &str = "started_at";
const STOPPED_AT: &str = "stopped_at";
const RELOAD_FAILED: &str = "reload_failed";
const RELOAD_FAILED_AT: &str = "reload_failed_at";
const PAUSED_ON_TOKEN: &str = "paused_on_token";

impl AgentState {
    /// Each field as its key and stored text: the one table of the on-disk form.
    fn rows(&self) -> [(&'static str, Option<String>); 19] {
        let num = |n: Option<i64>| n.map(|n| n.to_string());
        [
            (PAUSED, self.paused.clone()),
            (LAST_ERROR, self.last_error.clone()),
            (LAST_ERROR_AT, num(self.last_error_at)),
            (NEXT_RETRY_AT, num(self.next_retry_at)),
            (LAST_SUCCESS_AT, num(self.last_success_at)),
            (LAST_REQUEST_ID, self.last_request_id.clone()),
            (CONSECUTIVE_FAILURES, self.consecutive_failures.map(|n| n.to_string())),
            (INGEST_HELD, self.ingest_held.clone()),
            (RECONCILE_HELD, self.reconcile_held.clone()),
            (RECOVERED, self.recovered.clone()),
            (CLOCK_WRONG, self.clock_wrong.clone()),
            (CLOCK_WRONG_SINCE, num(self.clock_wrong_since)),
            (HEARTBEAT_AT, num(self.heartbeat_at)),
            (HEARTBEAT_SECS, num(self.heartbeat_secs)),
            (STARTED_AT, num(self.started_at)),
            (STOPPED_AT, num(self.stopped_at)),
            (RELOAD_FAILED, self.reload_failed.clone()),
            (RELOAD_FAILED_AT, num(self.reload_failed_at)),
            (PAUSED_ON_TOKEN, self.paused_on_token.then(|| "1".to_string())),
        ]
    }

    /// Build from stored rows. Unknown keys are ignored; a number that does not parse is absent.
    fn from_rows(rows: impl IntoIterator<Item = (String, String)>) -> AgentState {
        let mut s = AgentState::default();
        for (key, value) in rows {
            match key.as_str() {
                PAUSED => s.paused = Some(value),
                LAST_ERROR => s.last_error = Some(value),
                LAST_ERROR_AT => s.last_error_at = value.parse().ok(),
                NEXT_RETRY_AT => s.next_retry_at = value.parse().ok(),
                LAST_SUCCESS_AT => s.last_success_at = value.parse().ok(),
                LAST_REQUEST_ID => s.last_request_id = Some(value),
                CONSECUTIVE_FAILURES => s.consecutive_failures = value.parse().ok(),
                INGEST_HELD => s.ingest_held = Some(value),
                RECONCILE_HELD => s.reconcile_held = Some(value),
                RECOVERED => s.recovered = Some(value),
                CLOCK_WRONG => s.clock_wrong = Some(value),
                CLOCK_WRONG_SINCE => s.clock_wrong_since = value.parse().ok(),
                HEARTBEAT_AT => s.heartbeat_at = value.parse().ok(),
                HEARTBEAT_SECS => s.heartbeat_secs = value.parse().ok(),
                STARTED_AT => s.started_at = value.parse().ok(),
                STOPPED_AT => s.stopped_at = value.parse().ok(),
                RELOAD_FAILED => s.reload_failed = Some(value),
                RELOAD_FAILED_AT => s.reload_failed_at = value.parse().ok(),
                PAUSED_ON_TOKEN => s.paused_on_token = value == "1",
                _ => {}
            }
        }
        s
    }
}

/// Read the state on `conn` (a connection or a transaction).
pub(super) fn read(conn: &Connection) -> rusqlite::Result<AgentState> {
    let mut stmt = conn.prepare_cached("SELECT key, value FROM agent_state ORDER BY key")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(AgentState::from_rows(rows.collect::<rusqlite::Result<Vec<_>>>()?))
}

/// Read the state, let `change` modify it, and write the keys it changed (set or deleted).
pub(super) fn update(conn: &Connection, change: impl FnOnce(&mut AgentState)) -> rusqlite::Result<()> {
    let before = read(conn)?;
    let mut after = before.clone();
    change(&mut after);
    for ((key, old), (_, new)) in before.rows().into_iter().zip(after.rows()) {
        if old == new {
            continue;
        }
        match new {
            Some(v) => conn.execute(
                "INSERT INTO agent_state (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, v],
            )?,
            None => conn.execute("DELETE FROM agent_state WHERE key = ?1", [key])?,
        };
    }
    Ok(())
}

impl Queue {
    /// The agent's state as last written (by this process or the service).
    pub fn agent_state(&self) -> Result<AgentState> {
        read(&self.conn).map_err(|e| self.sqlite(e))
    }

    /// Change the agent's state in one transaction: only the fields `change` modifies are written.
    pub fn update_agent_state(&self, change: impl FnOnce(&mut AgentState)) -> Result<()> {
        // Immediate: the write lock is taken (waiting out `busy_timeout`) before the read, so another
        // connection's commit in between cannot fail the upgrade from reader to writer.
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate).map_err(|e| self.sqlite(e))?;
        update(&tx, change).map_err(|e| self.sqlite(e))?;
        super::lock::commit(tx).map_err(|e| self.sqlite(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_round_trips_through_its_rows() {
        let full = AgentState {
            paused: Some("token".into()),
            last_error: Some("http 503".into()),
            last_error_at: Some(10),
            next_retry_at: Some(20),
            last_success_at: Some(5),
            last_request_id: Some("r1".into()),
            consecutive_failures: Some(3),
            ingest_held: Some("queue full".into()),
            reconcile_held: Some("archived files wait".into()),
            recovered: Some("moved aside".into()),
            clock_wrong: Some("clock is wrong by ~30 days".into()),
            clock_wrong_since: Some(7),
            heartbeat_at: Some(8),
            heartbeat_secs: Some(30),
            started_at: Some(6),
            stopped_at: Some(9),
            reload_failed: Some("line 2: `colour`".into()),
            reload_failed_at: Some(8),
            paused_on_token: true,
        };
        let rows = full.rows().into_iter().map(|(k, v)| (k.to_string(), v.unwrap()));
        assert_eq!(AgentState::from_rows(rows), full);
        let keys: Vec<&str> = full.rows().iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            [
                "paused",
                "last_error",
                "last_error_at",
                "next_retry_at",
                "last_success_at",
                "last_request_id",
                "consecutive_failures",
                "ingest_held",
                "reconcile_held",
                "recovered",
                "clock_wrong",
                "clock_wrong_since",
                "heartbeat_at",
                "heartbeat_secs",
                "started_at",
                "stopped_at",
                "reload_failed",
                "reload_failed_at",
                "paused_on_token"
            ],
            "the stored keys never change (new ones are added)"
        );
    }

    #[test]
    fn unknown_keys_and_unparsable_numbers_are_absent() {
        let rows = [("lock", "held"), ("last_success_at", "soon"), ("paused", "why")];
        let state = AgentState::from_rows(rows.map(|(k, v)| (k.to_string(), v.to_string())));
        assert_eq!(state, AgentState { paused: Some("why".into()), ..AgentState::default() });
    }
}
