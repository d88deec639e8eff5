//! The queue's write lock between this process's connections (the ingest's and the sender's).
//!
//! SQLite's lock is the only lock: this module makes waiting for it short. A connection that finds
//! it taken waits in [`wait_for_lock`], SQLite's busy handler, until a connection of this process
//! says it let it go ([`released`]: after each commit of an explicit transaction, through
//! [`commit`], and after an ingest's rollback) or a millisecond has passed: the releases nobody
//! announces (autocommit statements, a transaction dropped on an error, a checkpoint, another
//! process) are seen at the next poll. A waiter so takes the lock within microseconds of an
//! announced release instead of at its next poll: when the ingest and the sender take turns a
//! thousand times a backlog, that poll's millisecond was the ingest's longest wait
//! (BENCHMARKS.md). Inside [`without_waiting`] a connection does not wait at all: the sender
//! records a delivered request that way, and sends on if an ingest holds the lock.

use rusqlite::Transaction;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a connection waits for another one's lock before giving up with "database is locked".
pub(super) const LOCK_WAIT: Duration = Duration::from_secs(10);
/// The longest a waiter waits between two tries: another process releases the lock unannounced.
pub(super) const LOCK_POLL: Duration = Duration::from_millis(1);

/// Releases of the write lock announced by this process's connections, and who waits for one.
pub(super) struct Releases {
    /// Bumped at each release.
    generation: Mutex<u64>,
    changed: Condvar,
    /// Threads inside [`Releases::wait`].
    waiting: AtomicUsize,
}

impl Releases {
    pub(super) const fn new() -> Releases {
        Releases { generation: Mutex::new(0), changed: Condvar::new(), waiting: AtomicUsize::new(0) }
    }

    /// Wait up to `timeout` for the next release; whether one came.
    pub(super) fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut generation = self.generation.lock().unwrap_or_else(PoisonError::into_inner);
        let seen = *generation;
        /// Counts its thread as waiting while it lives.
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        while *generation == seen {
            let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else {
                break;
            };
            generation = self.changed.wait_timeout(generation, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        *generation != seen
    }

    /// A write lock was let go: wake whoever waits.
    pub(super) fn release(&self) {
        *self.generation.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.changed.notify_all();
        }
    }

    pub(super) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }
}

/// This process's releases.
static RELEASES: Releases = Releases::new();

/// A connection of this process let the write lock go (committed or rolled back a write
/// transaction): a connection waiting for it takes it now.
pub(super) fn released() {
    RELEASES.release();
}

/// Commit `tx` and announce the release of the write lock (also when the commit failed: the
/// transaction is then rolled back).
pub(super) fn commit(tx: Transaction<'_>) -> rusqlite::Result<()> {
    commit_to(tx, &RELEASES)
}

fn commit_to(tx: Transaction<'_>, releases: &Releases) -> rusqlite::Result<()> {
    let committed = tx.commit();
    releases.release();
    committed
}

/// Whether another thread's connection waits for the write lock now: one the caller, between two
/// commits, should let take its turn before writing again ([`crate::daemon`]'s ingest).
pub fn lock_wanted() -> bool {
    RELEASES.waiting() > 0
}

thread_local! {
    /// Whether this thread's connections give up at once on a write lock another one holds.
    static NO_WAIT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run `f` with this thread's connections not waiting for the write lock: a statement that needs it
/// while another connection holds it fails at once with `SQLITE_BUSY` (what [`is_busy`] tells).
pub(super) fn without_waiting<T>(f: impl FnOnce() -> T) -> T {
    /// Waiting again when dropped, also on a panic.
    struct Again;
    impl Drop for Again {
        fn drop(&mut self) {
            NO_WAIT.with(|w| w.set(false));
        }
    }
    NO_WAIT.with(|w| w.set(true));
    let _again = Again;
    f()
}

/// Whether `e` says the write lock was taken (by another connection) and not waited for.
pub(super) fn is_busy(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
}

/// SQLite's busy handler: wait for the next release, at most [`LOCK_POLL`] at a time, up to
/// [`LOCK_WAIT`] in all (not at all inside [`without_waiting`]). (The built-in `busy_timeout`
/// sleeps up to 100 ms between tries, so a writer that commits part after part could keep the lock
/// from the sender for a whole file.)
pub(super) fn wait_for_lock(attempts: i32) -> bool {
    if NO_WAIT.with(|w| w.get()) {
        return false;
    }
    thread_local! {
        /// When this thread's connection started waiting for the lock it waits for now.
        static WAITING_SINCE: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
    }
    let now = Instant::now();
    let since = WAITING_SINCE.with(|w| {
        let since = if attempts == 0 { now } else { w.get().unwrap_or(now) };
        w.set(Some(since));
        since
    });
    if now.duration_since(since) >= LOCK_WAIT {
        return false;
    }
    RELEASES.wait(LOCK_POLL);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Spin until `done`, at most 10 s (a broken count fails the test, it does not hang it).
    fn until(done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "gave up waiting");
            std::thread::yield_now();
        }
    }

    /// A thread waiting on `releases` for up to 10 s, once it waits; it answers whether a release
    /// woke it.
    fn waiter(releases: &Arc<Releases>) -> std::thread::JoinHandle<bool> {
        let waiter = {
            let releases = releases.clone();
            std::thread::spawn(move || releases.wait(Duration::from_secs(10)))
        };
        until(|| releases.waiting() == 1);
        waiter
    }

    /// A write transaction open on `queue`'s connection, holding the write lock.
    fn writing(queue: &crate::queue::Queue) -> Transaction<'_> {
        let tx = Transaction::new_unchecked(&queue.conn, rusqlite::TransactionBehavior::Immediate).unwrap();
        tx.execute("INSERT INTO agent_state (key, value) VALUES ('a', '1')", []).unwrap();
        tx
    }

    /// A waiter's wake-up comes from the release, not from its timeout.
    #[test]
    fn a_release_wakes_the_waiter() {
        let releases = Arc::new(Releases::new());
        let waiter = waiter(&releases);
        releases.release();
        assert!(waiter.join().unwrap(), "woken by the release");
        assert_eq!(releases.waiting(), 0);
    }

    #[test]
    fn without_a_release_the_wait_ends_at_its_timeout() {
        let releases = Releases::new();
        assert!(!releases.wait(Duration::from_millis(1)));
        assert!(!releases.wait(Duration::ZERO));
        assert_eq!(releases.waiting(), 0);
    }

    /// A commit announces its release: a waiter with a long timeout is woken by it.
    #[test]
    fn a_commit_announces_its_release() {
        let dir = tempfile::tempdir().unwrap();
        let queue = crate::queue::Queue::open(&dir.path().join("q.sqlite")).unwrap();
        let releases = Arc::new(Releases::new());
        let waiter = waiter(&releases);
        commit_to(writing(&queue), &releases).unwrap();
        assert!(waiter.join().unwrap(), "woken by the commit");
    }

    /// Two connections to one queue file: the second's write waits in the busy handler (counted as
    /// a waiter: what the ingest hands the lock over to) and goes through once the first commits.
    #[test]
    fn a_write_waits_for_the_lock_and_goes_through_after_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.sqlite");
        let first = crate::queue::Queue::open(&path).unwrap();
        let tx = writing(&first);
        let other = {
            let path = path.clone();
            std::thread::spawn(move || {
                let second = crate::queue::Queue::open(&path).unwrap();
                second.conn.execute("INSERT INTO agent_state (key, value) VALUES ('b', '2')", []).unwrap();
            })
        };
        until(|| lock_wanted() || other.is_finished());
        commit(tx).unwrap();
        other.join().unwrap();
        let rows: i64 =
            first.conn.query_row("SELECT COUNT(*) FROM agent_state WHERE key IN ('a', 'b')", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 2);
    }
}
