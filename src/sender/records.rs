//! The requests TikTok took whose record waits: a delivered whole batch of events queued above the
//! cursor is recorded without waiting for the queue's write lock, which an ingest holds while it
//! writes a part; if the lock is taken the request waits in `Sender::unrecorded` while the next
//! batches are read above it and sent, and one transaction records them all later. Every other
//! write of the sender records them first ([`Sender::write`]), and so do going idle and
//! stopping. A write that finds the queue full makes room and runs again ([`with_room`]).

use super::{SendError, Sender};
use crate::queue::{Batch, Delivered, Queue, QueueError};

/// Requests delivered in a row whose record may wait for the write lock while the sender goes on.
/// In a backlog the ingest holds the lock while it writes a part (3,000 orders): waiting for it at
/// each request kept the sender at a fraction of its pace. A crash before the record sends them
/// again, as a crash between a request and its record always did: TikTok keeps the first of an
/// event id for 48 hours.
const UNRECORDED_MAX: usize = 8;

/// What recording `delivered` does to the agent state: a confirmed request is the last success.
fn delivered_state(delivered: &[Delivered]) -> impl FnOnce(&mut crate::queue::AgentState) + '_ {
    move |s| {
        for (at, request_id) in delivered.iter().filter_map(|d| Some((d.log.at, d.confirmed.as_ref()?))) {
            s.last_success_at = Some(at);
            s.last_request_id = request_id.clone();
            s.paused = None;
            s.paused_on_token = false;
            s.next_retry_at = None;
            s.consecutive_failures = None;
        }
    }
}

impl Sender {
    /// Run a write of the sender (a dead letter, a refused request's record, a pause, the
    /// maintenance) after the requests delivered and not recorded yet are recorded, and with room
    /// made if the queue is full ([`with_room`]).
    pub(super) fn write<T>(&mut self, write: impl FnMut(&mut Queue) -> Result<T, QueueError>) -> Result<T, SendError> {
        self.record_delivered(true)?;
        Ok(with_room(&mut self.queue, write)?)
    }

    /// Read the next batch of events at or after `cutoff`, above the requests waiting for their
    /// record. Found empty while some wait, they are recorded and the queue read again from the
    /// cursor: the record writes the events they passed over (held back, put back in the queue)
    /// pending by their row, which only a read from the cursor finds.
    pub(super) fn read_batch(&mut self, batch: &mut Batch, cutoff: i64) -> Result<(), SendError> {
        let size = self.settings.batch_size;
        self.queue.read_pending_after(batch, size, cutoff, self.unrecorded_upto())?;
        if batch.events.is_empty() && !self.unrecorded.is_empty() {
            self.record_delivered(true)?;
            self.queue.read_pending_after(batch, size, cutoff, 0)?;
        }
        Ok(())
    }

    /// A request TikTok took: recorded now, or (`may_wait`: a whole batch queued above the cursor)
    /// left waiting if another connection holds the write lock, [`UNRECORDED_MAX`] at most.
    pub(super) fn delivered(&mut self, delivered: Delivered, may_wait: bool) -> Result<(), SendError> {
        self.unrecorded.push(delivered);
        self.record_delivered(!may_wait || self.unrecorded.len() >= UNRECORDED_MAX)
    }

    /// Record what was delivered and is not recorded yet (a sender stopping).
    pub fn finish(&mut self) -> Result<(), SendError> {
        self.record_delivered(true)
    }

    /// Record the requests delivered and not recorded yet, waiting for the write lock if `wait`;
    /// without waiting they stay for later when another connection holds it. A record that fails
    /// gives them up: their events stay pending and are sent again (TikTok keeps the first of an
    /// event id for 48 hours), where waiting on they would hold back every other write of the
    /// sender, those that free space in a full queue included.
    fn record_delivered(&mut self, wait: bool) -> Result<(), SendError> {
        if self.unrecorded.is_empty() {
            return Ok(());
        }
        let unrecorded = &self.unrecorded;
        let record = |q: &mut Queue| q.record_delivered(unrecorded, wait, delivered_state(unrecorded));
        let recorded = if wait {
            with_room(&mut self.queue, record)
        } else {
            // Making room waits for the lock: a full queue is left to the next record that waits,
            // as a lock taken is (at the latest the one at `UNRECORDED_MAX`).
            match record(&mut self.queue) {
                Err(e) if e.is_full() => Ok(false),
                recorded => recorded,
            }
        };
        match recorded {
            Ok(true) => self.unrecorded.clear(),
            Ok(false) => {}
            Err(e) => {
                let events: usize = self.unrecorded.drain(..).map(|d| d.ids.len()).sum();
                tracing::warn!("{events} events delivered but not recorded as sent: they will be sent again");
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// The highest id of the requests delivered and not recorded yet (0: none): the last of them
    /// holds it, as each is read above the ones before ([`Sender::read_batch`]).
    fn unrecorded_upto(&self) -> i64 {
        self.unrecorded.last().and_then(|d| d.ids.iter().max()).copied().unwrap_or(0)
    }
}

/// Run `write` on `queue`; if it fails because the queue is at its cap (filled by an ingest, or by
/// the JSON of sent events, kept for an hour), that JSON is dropped and `write` runs once more.
/// Without it a full queue failed the sender's records until the next maintenance, and re-sent
/// the same requests every few seconds. The pages freed are reused at once; giving them back to
/// the file system (a checkpoint that may wait for the ingest) is left to [`Sender::free_space`]
/// and the maintenance, which find them on the free list.
fn with_room<T>(
    queue: &mut Queue,
    mut write: impl FnMut(&mut Queue) -> Result<T, QueueError>,
) -> Result<T, QueueError> {
    match write(queue) {
        Err(e) if e.is_full() && queue.clear_sent_payloads(i64::MAX).unwrap_or(0) > 0 => {
            tracing::info!("the queue is full: the JSON of the events sent is dropped to make room");
            write(queue)
        }
        done => done,
    }
}

impl Drop for Sender {
    /// A sender dropped without [`Sender::finish`] records what it delivered if the write lock is
    /// free: it may be dropped on the runtime's thread, which must not wait for the lock.
    fn drop(&mut self) {
        if let Err(e) = self.record_delivered(false) {
            tracing::warn!("dropping the sender: {e}");
        }
        if !self.unrecorded.is_empty() {
            let events: usize = self.unrecorded.iter().map(|d| d.ids.len()).sum();
            tracing::warn!(
                "{events} events delivered but not recorded as sent (the queue's write lock was taken, or the queue was full): they will be sent again"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{NewEvent, Payload};
    use crate::sender::{DryRun, Settings, Step};
    use std::path::Path;
    use std::time::Duration;

    /// A dry-run sender (batches of 2, request bodies in `dir/out`) on the queue `path`, holding
    /// `n` events `e0`, `e1`...
    fn dry_sender(dir: &Path, n: usize) -> Sender {
        let mut queue = Queue::open(&dir.join("q.sqlite")).unwrap();
        let ids: Vec<String> = (0..n).map(|i| format!("e{i}")).collect();
        // Each payload about as big as a real one's packed JSON.
        let payloads: Vec<String> =
            ids.iter().map(|id| format!(r#"{{"event_id":"{id}","properties":"{}"}}"#, "x".repeat(100))).collect();
        let mut ingest = queue.begin_ingest("h", Path::new("a.csv"), "till", 1).unwrap();
        for (id, payload) in ids.iter().zip(&payloads) {
            let event = NewEvent {
                event_name: "Purchase",
                event_id: id,
                event_time: crate::now(),
                order_id: id,
                payload: Payload::Json(payload),
                dead_reason: None,
                line: 0,
                key: crate::event::screen::MatchKey::None,
            };
            ingest.add_event(&event).unwrap();
        }
        ingest.commit().unwrap();
        let text = format!("dry_run = true\n{}", crate::config::test_support::MINIMAL);
        let config = crate::config::parse(&text, &crate::config::test_support::ctx()).unwrap();
        let settings =
            Settings { batch_size: 2, dry_run: Some(DryRun::Dir(dir.join("out"))), ..Settings::from_config(&config) };
        Sender::new(queue, &config, settings).unwrap()
    }

    /// The event ids of every request body written to `dir/out`, in request order.
    fn sent_ids(dir: &Path) -> Vec<String> {
        let mut files: Vec<_> = std::fs::read_dir(dir.join("out")).unwrap().map(|f| f.unwrap().path()).collect();
        files.sort();
        let mut ids = Vec::new();
        for file in files {
            let body: serde_json::Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
            ids.extend(body["data"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap().to_owned()));
        }
        ids
    }

    /// A connection of another thread holding the queue's write lock, as an ingest writing a part
    /// does, until it is dropped.
    fn lock_held(dir: &Path) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(dir.join("q.sqlite")).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE; INSERT INTO agent_state (key, value) VALUES ('held', '1');").unwrap();
        conn
    }

    /// A dry-run sender holding `n` events that sent one request (2 events) while another
    /// connection holds the write lock: the request waits for its record. The lock is returned.
    fn one_request_waiting(n: usize) -> (tempfile::TempDir, Sender, rusqlite::Connection) {
        let dir = tempfile::tempdir().unwrap();
        let mut sender = dry_sender(dir.path(), n);
        let lock = lock_held(dir.path());
        assert_eq!(sender.step(crate::now()).unwrap(), Step::Progress { sent: 2, dead: 0 });
        assert_eq!(sender.queue().pending_count().unwrap(), n as i64, "not recorded yet");
        (dir, sender, lock)
    }

    fn send_log_lines(dir: &Path) -> i64 {
        let conn = rusqlite::Connection::open(dir.join("q.sqlite")).unwrap();
        conn.query_row("SELECT COUNT(*) FROM send_log", [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn while_another_connection_holds_the_write_lock_the_sender_goes_on_and_records_each_request_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut sender = dry_sender(dir.path(), 7);
        let now = crate::now();
        let lock = lock_held(dir.path());
        for _ in 0..3 {
            assert_eq!(sender.step(now).unwrap(), Step::Progress { sent: 2, dead: 0 });
        }
        // Three requests went out, each with the next events; none is recorded yet.
        assert_eq!(sent_ids(dir.path()), ["e0", "e1", "e2", "e3", "e4", "e5"]);
        assert_eq!(sender.queue().pending_count().unwrap(), 7);
        drop(lock);
        assert_eq!(sender.step(now).unwrap(), Step::Progress { sent: 1, dead: 0 });
        assert_eq!(sender.queue().pending_count().unwrap(), 0);
        assert_eq!(sender.step(now).unwrap(), Step::Idle);
        assert_eq!(sent_ids(dir.path()), ["e0", "e1", "e2", "e3", "e4", "e5", "e6"]);
        assert_eq!(send_log_lines(dir.path()), 4);
    }

    #[test]
    fn a_sender_stopping_records_what_it_delivered_and_one_dropped_never_waits_for_the_lock() {
        let (dir, mut sender, lock) = one_request_waiting(5);
        drop(lock);
        sender.finish().unwrap();
        assert_eq!(sender.queue().pending_count().unwrap(), 3);
        assert_eq!(send_log_lines(dir.path()), 1);
        // Dropped with a request waiting and the lock taken: it is not recorded (it will be sent
        // again), and the drop does not wait.
        let lock = lock_held(dir.path());
        assert_eq!(sender.step(crate::now()).unwrap(), Step::Progress { sent: 2, dead: 0 });
        let started = std::time::Instant::now();
        drop(sender);
        assert!(started.elapsed() < Duration::from_secs(5), "the drop waited for the lock");
        drop(lock);
        let queue = Queue::open(&dir.path().join("q.sqlite")).unwrap();
        assert_eq!(queue.pending_count().unwrap(), 3);
    }

    /// A read above the requests waiting for their record finds nothing: they are recorded, and an
    /// event they passed over (here one put back in the queue meanwhile) is sent, not left behind.
    #[test]
    fn an_event_passed_over_by_requests_not_recorded_is_sent_once_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let mut sender = dry_sender(dir.path(), 3);
        let lock = lock_held(dir.path());
        lock.execute("UPDATE events SET state = 2 WHERE event_id = 'e1'", []).unwrap();
        lock.execute_batch("COMMIT; BEGIN IMMEDIATE; INSERT INTO agent_state (key, value) VALUES ('held2', '1');")
            .unwrap();
        let now = crate::now();
        assert_eq!(sender.step(now).unwrap(), Step::Progress { sent: 2, dead: 0 });
        // `dead-letter requeue` in another process, once the lock is free.
        lock.execute("UPDATE events SET state = 0 WHERE event_id = 'e1'", []).unwrap();
        lock.execute_batch("COMMIT;").unwrap();
        assert_eq!(sender.step(now).unwrap(), Step::Progress { sent: 1, dead: 0 });
        assert_eq!(sender.step(now).unwrap(), Step::Idle);
        assert_eq!(sent_ids(dir.path()), ["e0", "e2", "e1"]);
        assert_eq!(sender.queue().pending_count().unwrap(), 0);
    }

    /// A batch with an event pending by its row (below the cursor) is recorded before the sender
    /// goes on, waiting for the lock: a later read from the cursor would find that event again.
    #[test]
    fn a_batch_with_an_event_pending_by_its_row_waits_for_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut sender = dry_sender(dir.path(), 4);
        let now = crate::now();
        assert_eq!(sender.step(now).unwrap(), Step::Progress { sent: 2, dead: 0 });
        // `e1`, below the cursor now, put back in the queue (as a requeue or a rebuild does).
        let lock = lock_held(dir.path());
        lock.execute("UPDATE events SET state = 3 WHERE event_id = 'e1'", []).unwrap();
        lock.execute_batch("COMMIT; BEGIN IMMEDIATE; INSERT INTO agent_state (key, value) VALUES ('held2', '1');")
            .unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            lock.execute_batch("COMMIT;").unwrap();
        });
        assert_eq!(sender.step(now).unwrap(), Step::Progress { sent: 2, dead: 0 });
        assert_eq!(sender.queue().pending_count().unwrap(), 1, "recorded before the step returned");
        release.join().unwrap();
        assert_eq!(sender.step(now).unwrap(), Step::Progress { sent: 1, dead: 0 });
        assert_eq!(sender.step(now).unwrap(), Step::Idle);
        assert_eq!(sent_ids(dir.path()), ["e0", "e1", "e1", "e2", "e3"]);
    }

    /// A queue at its cap (here from the start): a record that needs a page makes room by dropping
    /// the JSON of the events sent before, and the sender goes on to the end.
    #[test]
    fn a_record_in_a_full_queue_makes_room_with_the_sent_events_json() {
        let dir = tempfile::tempdir().unwrap();
        let mut sender = dry_sender(dir.path(), 1000);
        sender.queue().set_size_limit(queue_size(dir.path()), crate::queue::WalDuty::Early).unwrap();
        let mut steps = 0;
        while sender.step(crate::now()).unwrap() != Step::Idle {
            steps += 1;
        }
        assert_eq!(steps, 500);
        assert_eq!(sender.queue().pending_count().unwrap(), 0);
        assert_eq!(send_log_lines(dir.path()), 500);
    }

    /// The size of the queue file at `dir` (its cap makes it full).
    fn queue_size(dir: &Path) -> u64 {
        let conn = rusqlite::Connection::open(dir.join("q.sqlite")).unwrap();
        conn.query_row("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()", [], |r| r.get(0))
            .unwrap()
    }

    /// A dry-run sender that sent and recorded 150 of 200 events, its queue then capped at its
    /// size, and a send-log line of `class` too big for the pages left.
    fn full_after_150_sent(class: crate::queue::SendClass) -> (tempfile::TempDir, Sender, crate::queue::SendLogEntry) {
        let dir = tempfile::tempdir().unwrap();
        let mut sender = dry_sender(dir.path(), 200);
        for _ in 0..75 {
            assert_eq!(sender.step(crate::now()).unwrap(), Step::Progress { sent: 2, dead: 0 });
        }
        sender.finish().unwrap();
        sender.queue().set_size_limit(queue_size(dir.path()), crate::queue::WalDuty::Early).unwrap();
        let log = crate::queue::SendLogEntry {
            id: 0,
            at: crate::now(),
            events: 2,
            http_status: Some(200),
            code: None,
            class,
            message: "x".repeat(6 * 1024),
            request_id: None,
            test_event_code: None,
        };
        (dir, sender, log)
    }

    /// Every other write of the sender makes room in a full queue as its delivery records do:
    /// here the record of a request TikTok did not take, whose send-log line needs pages that a
    /// queue at its cap has not.
    #[test]
    fn every_write_of_the_sender_makes_room_in_a_full_queue() {
        use crate::queue::{Disposition, SendClass};
        let (dir, mut sender, log) = full_after_150_sent(SendClass::Retry);
        let refused = |q: &mut Queue| q.record_attempt(&[], Disposition::StillPending, &log, |_| {});
        assert!(refused(&mut sender.queue).unwrap_err().is_full(), "the queue is at its cap");
        let capped = queue_size(dir.path());
        sender.write(refused).unwrap();
        assert_eq!(send_log_lines(dir.path()), 76);
        // The JSON is dropped already: freeing space gives its pages back.
        sender.free_space().unwrap();
        assert!(queue_size(dir.path()) < capped, "the pages of the JSON dropped are given back");
        assert_eq!(sender.queue().pending_count().unwrap(), 50, "the events not sent keep their JSON");
    }

    /// A record that does not wait for the lock does not make room in a full queue either (that
    /// waits for the lock): its request stays waiting, and the next record that waits makes room.
    #[test]
    fn a_record_that_does_not_wait_leaves_a_full_queue_to_the_next_one() {
        let (dir, mut sender, log) = full_after_150_sent(crate::queue::SendClass::Delivered);
        let batch = sender.queue().pending_batch(2).unwrap();
        let ids = batch.events.iter().map(|e| e.id).collect();
        sender.unrecorded.push(Delivered { ids, log, confirmed: None });
        sender.record_delivered(false).unwrap();
        assert_eq!(sender.unrecorded.len(), 1, "still waiting");
        assert_eq!(send_log_lines(dir.path()), 75);
        sender.record_delivered(true).unwrap();
        assert!(sender.unrecorded.is_empty());
        assert_eq!(send_log_lines(dir.path()), 76);
        assert_eq!(sender.queue().pending_count().unwrap(), 48);
    }

    /// A record that fails gives its requests up (their events are sent again) instead of holding
    /// back every later write, those that free space included.
    #[test]
    fn a_failed_record_gives_its_requests_up_and_later_writes_go_on() {
        let (_dir, mut sender, lock) = one_request_waiting(2);
        // The record cannot be written (a damaged queue, here one table gone).
        lock.execute_batch("DROP TABLE send_log; COMMIT;").unwrap();
        assert!(sender.step(crate::now()).is_err());
        assert_eq!(sender.queue().pending_count().unwrap(), 2, "not recorded: still pending");
        sender.free_space().unwrap();
        assert!(sender.unrecorded.is_empty());
    }
}
