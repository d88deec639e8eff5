//! The queue: one SQLite database, the agent's only durable state. Only this module knows SQL.
//!
//! Events are stored as the JSON of their `data[]` element, already normalised and hashed: no raw
//! PII ever reaches this file. Ingesting a file is one transaction: its events, its rejected rows
//! and its "done" record commit together or not at all. Commits are durable (`synchronous=FULL`
//! in WAL mode) before the caller is told, so a file may be archived once [`Ingest::commit`]
//! returns.

mod agent;
pub(crate) mod cursor;
mod dead;
mod files;
mod ingest;
mod lock;
mod open;
mod outbox;
mod packed;
mod redo;
mod report;
mod role;
mod schema;
mod state;

pub use agent::AgentState;
pub use dead::{DeadEvent, DeadFilter, RejectRecord, RejectedFile, Superseded};
pub use files::{FileRecord, Position, PositionRecord};
pub use ingest::{Held, Ingest, IngestCounts, NewEvent, Payload, WalDuty, UNWRITTEN_BYTES};
pub use lock::lock_wanted;
pub use open::Recovery;
pub use outbox::{event_named, Batch, Delivered, Disposition, Queued};
pub use redo::CorruptEvent;
pub use report::{Counts, SendLogEntry, SourceTotals, StateCounts, TapEvent};
pub use role::Role;
pub use state::{DeadReason, EventState, FileState, SendClass};

use rusqlite::Connection;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue {path}: {source}")]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    #[error("queue {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("queue {0} does not exist (has the agent run yet?)")]
    Missing(PathBuf),
    #[error("queue {path} has schema version {found}, newer than this agent knows ({known}); upgrade the agent")]
    TooNew { path: PathBuf, found: i64, known: i64 },
}

pub type Result<T> = std::result::Result<T, QueueError>;

impl QueueError {
    /// Another connection holds the lock this one needed (after waiting for it, or at once where
    /// waiting could deadlock).
    pub fn is_busy(&self) -> bool {
        matches!(self, QueueError::Sqlite { source, .. } if source.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy))
    }

    /// The database hit its size cap (`max_page_count`) or the disk is full.
    pub fn is_full(&self) -> bool {
        match self {
            QueueError::Sqlite { source, .. } => source.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull),
            QueueError::Io { source, .. } => source.kind() == std::io::ErrorKind::StorageFull,
            _ => false,
        }
    }
}

pub struct Queue {
    conn: Connection,
    path: PathBuf,
}

/// `conn.execute(sql, params)` through the connection's statement cache: for the statements every
/// file's ingest runs (an uncached one is compiled again at each call, ~12,000 instructions).
pub(super) fn execute_cached(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// The text in column `at` of `row`, or empty when it is not text (the row damaged on disk): for
/// the reads that must go on past such a row (dead-lettered as `corrupt`, see `outbox`).
pub(super) fn text_or_empty(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<String> {
    Ok(row.get_ref(at)?.as_str().unwrap_or_default().to_owned())
}

impl Queue {
    pub fn path(&self) -> &Path {
        &self.path
    }
    fn sqlite(&self, source: rusqlite::Error) -> QueueError {
        QueueError::Sqlite { path: self.path.clone(), source }
    }

    /// Bound this connection's page cache to `kib` KiB (the queue's default is 2 MiB a
    /// connection).
    pub fn set_cache_kib(&self, kib: u32) {
        let _ = self.conn.execute_batch(&format!("PRAGMA cache_size = -{kib};"));
    }

    /// Enforce foreign keys on this connection, or not (`queue::Role`; every connection enforces
    /// them when opened).
    pub fn enforce_foreign_keys(&self, on: bool) -> Result<()> {
        let sql = if on { "PRAGMA foreign_keys = ON;" } else { "PRAGMA foreign_keys = OFF;" };
        self.conn.execute_batch(sql).map_err(|e| self.sqlite(e))
    }

    /// Give the page cache back to the allocator (after big scans, when idle).
    pub fn release_memory(&self) {
        let _ = self.conn.execute_batch("PRAGMA shrink_memory;");
    }
    /// SQLite's `data_version` of this connection: it changes when another connection (another
    /// process: `dead-letter requeue`, `import`, `flush`) commits a change to the queue, never for
    /// this connection's own commits. One cheap pragma, read on a short timer by the idle sender.
    pub fn data_version(&self) -> Result<i64> {
        self.conn.query_row("PRAGMA data_version", [], |r| r.get(0)).map_err(|e| self.sqlite(e))
    }
}

#[cfg(test)]
mod tests;
