//! What a connection to the queue is for, and how that sets it up: every writer of events is held
//! to the queue's cap; who copies the WAL, how much page cache it keeps, whether it enforces
//! foreign keys.

use super::{Queue, Result, WalDuty};
use std::path::Path;

/// The writers of events, each on its own connection: the service's loops, and the one-shot
/// commands that do the same work (`run --once` and `import` take files, `flush` sends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Takes export files: big transactions, appended at the right edge of each table and index.
    Ingest,
    /// Sends: reads the queue in id order and marks what was delivered.
    Send,
    /// Reconciles the archive with the queue and rebuilds damaged payloads (the service's redo
    /// loop).
    Redo,
}

impl Role {
    /// Who copies the WAL into the database: the sender's commits, early and between its batches,
    /// so that the ingest (the narrowest step of a backlog) seldom does; the others only at the
    /// bound, the fallback when nothing is sent. Pure.
    pub fn wal_duty(self) -> WalDuty {
        match self {
            Role::Send => WalDuty::Early,
            Role::Ingest | Role::Redo => WalDuty::AtBound,
        }
    }

    /// The connection's page cache. The ingest's part holds ~0.7 MB of dirty pages for 3,000
    /// one-order events (the default 2 MiB only held pages it would not touch again); the sender
    /// walks the queue in id order, each page once; the redo loop keeps the default. Pure.
    pub fn cache_kib(self) -> Option<u32> {
        match self {
            Role::Ingest => Some(1024),
            Role::Send => Some(512),
            Role::Redo => None,
        }
    }

    /// Whether the connection enforces foreign keys. The ingest's writes keep them by
    /// construction (an event under the `files` row it wrote, a payload under its event's id; see
    /// `ingest::UnenforcedKeys`), and an ingest would turn them off anyway: a connection that
    /// ingests leaves them off for good rather than turn them off and on around every file, which
    /// expires every statement prepared on it. The sender enforces them: its deletes of sent
    /// events take their payloads by cascade. Pure.
    pub fn enforces_foreign_keys(self) -> bool {
        match self {
            Role::Send => true,
            Role::Ingest | Role::Redo => false,
        }
    }

    /// Set `queue`'s connection up for this role: the queue's cap of `cap_bytes`
    /// (`max_queue_mb`), its WAL duty, its cache and its foreign keys.
    pub fn configure(self, queue: &Queue, cap_bytes: u64) -> Result<()> {
        queue.set_size_limit(cap_bytes, self.wal_duty())?;
        if let Some(kib) = self.cache_kib() {
            queue.set_cache_kib(kib);
        }
        queue.enforce_foreign_keys(self.enforces_foreign_keys())
    }

    /// Open the queue at `path` ([`Queue::open`]) and set the connection up for this role.
    pub fn open(self, path: &Path, cap_bytes: u64) -> Result<Queue> {
        let queue = Queue::open(path)?;
        self.configure(&queue, cap_bytes)?;
        Ok(queue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every writer is held to the queue's cap; the sender's commits copy the WAL early, the
    /// others' only at the bound (a swap would put the copies back on the ingest's thread).
    #[test]
    fn each_role_has_its_cap_wal_duty_and_cache() {
        let dir = tempfile::tempdir().unwrap();
        let cap = 100 * 1024 * 1024;
        let default_cache = Queue::open(&dir.path().join("default.sqlite")).unwrap().pragma("cache_size");
        // (role, WAL pages before a commit checkpoints: an eighth of 100 MiB, or a quarter of
        // that but 4 MiB at least; cache_size: negative in KiB; foreign keys enforced)
        let cases = [(Role::Ingest, 3200, -1024, 0), (Role::Send, 1024, -512, 1), (Role::Redo, 3200, default_cache, 0)];
        for (role, wal_pages, cache, keys) in cases {
            let queue = Queue::open(&dir.path().join(format!("{role:?}.sqlite"))).unwrap();
            role.configure(&queue, cap).unwrap();
            assert_eq!(queue.pragma("max_page_count"), cap as i64 / 4096, "{role:?}");
            assert_eq!(queue.pragma("wal_autocheckpoint"), wal_pages, "{role:?}");
            assert_eq!(queue.pragma("cache_size"), cache, "{role:?}");
            assert_eq!(queue.pragma("foreign_keys"), keys, "{role:?}");
        }
    }
}
