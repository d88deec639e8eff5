//! The sent cursor (schema v10): how the queue tells a sent event from a pending one without
//! rewriting the event's row when it is sent.
//!
//! An event queued by an ingest is stored with `state` [`QUEUED`] (0). Such an event is **sent**
//! if its id is at or below the cursor, **pending** above it. The cursor is the highest `upto` of
//! `sent_runs`, one row per request that moved it, with the time it was sent: what the
//! maintenance reads as the send time of the events the row covers (those above the row before
//! it). Every other state is written in the row (`EventState::code`: 1 sent, 2 dead, 3 pending)
//! and is in the partial index `events_exceptions`, which a backlog's ingest never writes:
//! an event refused by TikTok, dead on arrival, held back on a distrusted clock and passed by the
//! cursor, put back in the queue by `dead-letter requeue` or a rebuild.
//!
//! Invariants, kept by the functions of this module and the statements that use them:
//! - The cursor never moves down: `sent_runs` rows are added with a higher `upto` and only rows
//!   below the highest are deleted.
//! - Before the cursor moves past a queued event, the event was delivered in the requests whose
//!   record moves it, or its row says what it is instead ([`plan_sent`]'s gaps become explicit
//!   pending).
//! - An event is queued with an id above the cursor and above every id ever queued
//!   ([`next_id`], `high_water.last_event_id`): SQLite's own choice (the highest id + 1) would
//!   reuse an id at or below the cursor once the events there are forgotten, and the new event
//!   would count as sent; or the id of an event deleted while a request that carried it was on
//!   its way, which the request's record would then move the cursor past.
//! - An event whose row says pending (3) is at or below the cursor: one put back in the queue
//!   above it is written queued (0) instead (`{requeued}`). So the cursor moves past queued
//!   events only, read in id order from it, and a batch is in id order without a sort (those
//!   pending by their row first, all below the cursor, then the queued ones above it).
//! - `high_water.sent_upto` is the cursor too, written with each `sent_runs` row: a salvage of a
//!   damaged queue reads whichever of the two it can (and the higher).

use super::EventState;
use rusqlite::Connection;
use std::sync::OnceLock;

/// `events.state` of an event queued by an ingest: sent at or below the cursor, pending above.
pub(super) const QUEUED: i64 = 0;

/// [`CURSOR`]'s text, for `concat!` (the reads below are whole literals, not formatted per call).
macro_rules! cursor_sql {
    () => {
        "(SELECT IFNULL(MAX(upto), 0) FROM sent_runs)"
    };
}

/// The cursor, as an SQL expression (0 before anything was sent).
pub(super) const CURSOR: &str = cursor_sql!();

/// A statement written with [`states`]' placeholders, expanded once, when first used: for the
/// statements of the sender's every batch and request.
pub(super) struct Sql {
    template: &'static str,
    text: OnceLock<String>,
}

impl Sql {
    pub(super) const fn new(template: &'static str) -> Sql {
        Sql { template, text: OnceLock::new() }
    }

    pub(super) fn get(&self) -> &str {
        self.text.get_or_init(|| states(self.template))
    }
}

/// An event's state as `EventState::code` numbers it (1 sent, 2 dead, 3 pending), as an SQL
/// expression over the columns of `events` (named `{alias}.state`, `{alias}.id`).
pub(super) fn effective_state(alias: &str) -> String {
    states(&format!(
        "CASE WHEN {alias}.state <> {{queued}} THEN {alias}.state WHEN {alias}.id > {{cursor}} THEN {{pending}} ELSE {{sent}} END"
    ))
}

/// `sql` with the state codes it names written in: `{queued}`, `{pending}`, `{sent}`, `{dead}`;
/// `{cursor}` ([`CURSOR`]); `{requeued}`, the state of an event put back in the queue (pending by
/// its row at or below the cursor, queued above it); and `{listed}`, the condition of the partial index
/// `events_exceptions` (`state <> 0`), which SQLite uses for a query only if its WHERE clause
/// has that very term (`state = 2` is not enough), so every query that looks an event up by a
/// state its row holds says it too: `state = {dead} AND {listed}` (`e.{listed}` with an alias).
pub(super) fn states(sql: &str) -> String {
    sql.replace("{listed}", "state <> {queued}")
        .replace("{requeued}", "CASE WHEN id > {cursor} THEN {queued} ELSE {pending} END")
        .replace("{queued}", &QUEUED.to_string())
        .replace("{pending}", &EventState::Pending.code().to_string())
        .replace("{sent}", &EventState::Sent.code().to_string())
        .replace("{dead}", &EventState::Dead.code().to_string())
        .replace("{cursor}", CURSOR)
}

/// The cursor as `conn` sees it.
pub(super) fn cursor(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached(concat!("SELECT ", cursor_sql!()))?.query_row([], |r| r.get(0))
}

/// The id the next queued event is to take: above every id queued before and above the cursor.
/// Read with the write lock held (after the transaction's first write), so that no other
/// connection can queue an event between this read and the insert.
pub(super) fn next_id(conn: &Connection) -> rusqlite::Result<i64> {
    let sql = concat!(
        "SELECT MAX(IFNULL((SELECT MAX(id) FROM events), 0), ",
        cursor_sql!(),
        ", (SELECT last_event_id FROM high_water)) + 1"
    );
    conn.prepare_cached(sql)?.query_row([], |r| r.get(0))
}

/// What a delivered request does to the queue: the ids it delivered, the cursor before it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct SentPlan {
    /// Where the cursor moves (past the highest delivered id above it), if it moves.
    pub cursor: Option<i64>,
    /// Ranges (inclusive) between the old and the new cursor that the request did not deliver:
    /// the queued events in them become explicitly pending before the cursor passes them.
    pub gaps: Vec<(i64, i64)>,
    /// Runs (inclusive) of delivered ids, in which explicitly pending events become sent.
    pub runs: Vec<(i64, i64)>,
}

/// Plan the writes of a delivered request. Pure.
pub(super) fn plan_sent(ids: &[i64], cursor: i64) -> SentPlan {
    let runs = id_runs(ids);
    let mut gaps = Vec::new();
    let mut next = cursor.checked_add(1);
    let mut top = None;
    for &(first, last) in &runs {
        if last <= cursor {
            continue;
        }
        let first = first.max(cursor + 1);
        if let Some(from) = next.filter(|&n| n < first) {
            gaps.push((from, first - 1));
        }
        next = last.checked_add(1);
        top = Some(last);
    }
    SentPlan { cursor: top, gaps, runs }
}

/// `ids` as runs of consecutive ids, `(first, last)` inclusive, in ascending order: every id of a
/// run is one of `ids`, so `id BETWEEN first AND last` touches exactly them. Pure.
pub(super) fn id_runs(ids: &[i64]) -> Vec<(i64, i64)> {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut runs: Vec<(i64, i64)> = Vec::new();
    for id in sorted {
        match runs.last_mut() {
            Some((_, last)) if last.checked_add(1) == Some(id) => *last = id,
            _ => runs.push((id, id)),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_make_runs_of_consecutive_ids() {
        type Case = (&'static str, &'static [i64], &'static [(i64, i64)]);
        let cases: [Case; 6] = [
            ("none", &[], &[]),
            ("one", &[7], &[(7, 7)]),
            ("a batch in id order", &[1, 2, 3, 4], &[(1, 4)]),
            ("a gap (an event held or dead between)", &[1, 2, 5, 6], &[(1, 2), (5, 6)]),
            ("a split part, out of order, repeated", &[9, 3, 4, 9, 8], &[(3, 4), (8, 9)]),
            ("the largest id", &[i64::MAX - 1, i64::MAX], &[(i64::MAX - 1, i64::MAX)]),
        ];
        for (what, ids, want) in cases {
            assert_eq!(id_runs(ids), want, "{what}");
        }
    }

    #[test]
    fn a_delivered_request_moves_the_cursor_past_what_it_delivered_and_no_further() {
        type Case = (&'static str, &'static [i64], i64, Option<i64>, &'static [(i64, i64)]);
        let cases: [Case; 8] = [
            ("nothing delivered", &[], 10, None, &[]),
            ("the next events in order", &[11, 12, 13], 10, Some(13), &[]),
            ("from an empty queue", &[1, 2], 0, Some(2), &[]),
            ("one held between", &[11, 13], 10, Some(13), &[(12, 12)]),
            ("held before the first delivered", &[14, 15], 10, Some(15), &[(11, 13)]),
            ("only events below the cursor (put back in the queue)", &[3, 5], 10, None, &[]),
            ("below and above the cursor", &[3, 12], 10, Some(12), &[(11, 11)]),
            ("out of order, across gaps", &[20, 12, 11, 17], 10, Some(20), &[(13, 16), (18, 19)]),
        ];
        for (what, ids, cursor, want_cursor, want_gaps) in cases {
            let plan = plan_sent(ids, cursor);
            assert_eq!(plan.cursor, want_cursor, "{what}");
            assert_eq!(plan.gaps, want_gaps, "{what}");
            assert_eq!(plan.runs, id_runs(ids), "{what}");
            // Every id between the old and the new cursor is delivered or in a gap, never both.
            if let Some(to) = plan.cursor {
                for id in cursor + 1..=to {
                    let in_gap = plan.gaps.iter().any(|&(a, b)| (a..=b).contains(&id));
                    assert_ne!(ids.contains(&id), in_gap, "{what}: id {id}");
                }
            }
        }
    }
}
