//! The archive as the redo log, as the queue sees it: which archived files it knows (path, size,
//! mtime → content hash), and events whose stored JSON failed its checksum, to be rebuilt from
//! their archived file.

use super::{DeadReason, FileState, Queue, QueueError, Result};
use rusqlite::{params, OptionalExtension};

/// An event dead-lettered as `corrupt` that has not been rebuilt yet, with the archived copy of its
/// file when the queue knows one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptEvent {
    pub id: i64,
    pub event_name: String,
    pub event_id: String,
    /// The archived file it was read from, and that file's source.
    pub archived: Option<(String, String)>,
    /// The content hash of its file, to check the archived copy is still that file.
    pub content_hash: Option<String>,
}

impl Queue {
    /// Whether the file at `path`, as big and as old as given, is an archived file whose content
    /// the queue holds (recorded with this size and mtime, and its content ingested).
    pub fn archive_known(&self, path: &str, size: u64, mtime_ns: i64) -> Result<bool> {
        self.conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM archived a JOIN files f ON f.content_hash = a.content_hash
                 WHERE a.path = ?1 AND a.size = ?2 AND a.mtime_ns = ?3 AND f.state = ?4)",
            )
            .and_then(|mut s| s.query_row(params![path, size as i64, mtime_ns, FileState::Ingested], |r| r.get(0)))
            .map_err(|e| self.sqlite(e))
    }

    /// Record an archived file with its content hash (replacing what was recorded for the path).
    pub fn remember_archived(
        &self,
        path: &str,
        source: &str,
        size: u64,
        mtime_ns: i64,
        content_hash: &str,
        now: i64,
    ) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO archived (path, source, size, mtime_ns, content_hash, recorded_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![path, source, size as i64, mtime_ns, content_hash, now],
            )
            .map(drop)
            .map_err(|e| self.sqlite(e))
    }

    /// [`Queue::remember_archived`] with the content hash of the `files` row `file_id` (a file just
    /// archived after its commit).
    pub fn remember_archived_file(
        &self,
        path: &str,
        source: &str,
        size: u64,
        mtime_ns: i64,
        file_id: i64,
        now: i64,
    ) -> Result<()> {
        let hash: Option<String> = self
            .conn
            .query_row("SELECT content_hash FROM files WHERE id = ?1", [file_id], |r| r.get(0))
            .optional()
            .map_err(|e| self.sqlite(e))?;
        match hash {
            Some(hash) => self.remember_archived(path, source, size, mtime_ns, &hash, now),
            None => Ok(()),
        }
    }

    /// Forget an archived file (pruned).
    pub fn forget_archived(&self, path: &str) -> Result<()> {
        self.conn.execute("DELETE FROM archived WHERE path = ?1", [path]).map(drop).map_err(|e| self.sqlite(e))
    }

    /// Up to `limit` events dead-lettered as `corrupt` and not given up on yet.
    pub fn corrupt_to_rebuild(&self, limit: usize) -> Result<Vec<CorruptEvent>> {
        let mut stmt = self
            .conn
            .prepare_cached(&super::cursor::states(
                "SELECT e.id, e.event_name, e.event_id, f.content_hash,
                        (SELECT a.path FROM archived a WHERE a.content_hash = f.content_hash ORDER BY a.recorded_at DESC LIMIT 1),
                        (SELECT a.source FROM archived a WHERE a.content_hash = f.content_hash ORDER BY a.recorded_at DESC LIMIT 1)
                 FROM events e LEFT JOIN files f ON f.id = e.file_id
                 WHERE e.dead_reason = ?1 AND e.state = {dead} AND e.{listed} AND e.dead_message = ?2 ORDER BY e.id LIMIT ?3",
            ))
            .map_err(|e| self.sqlite(e))?;
        let rows = stmt
            .query_map(params![DeadReason::Corrupt, DeadReason::CORRUPT_MESSAGE, limit as i64], |r| {
                let path: Option<String> = r.get(4)?;
                let source: Option<String> = r.get(5)?;
                Ok(CorruptEvent {
                    id: r.get(0)?,
                    // Not text when the row is damaged: no archived event has it, so it stays dead.
                    event_name: super::text_or_empty(r, 1)?,
                    event_id: super::text_or_empty(r, 2)?,
                    content_hash: r.get(3)?,
                    archived: path.zip(source),
                })
            })
            .map_err(|e| self.sqlite(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.sqlite(e))
    }

    /// Put a corrupt event back in the queue with its payload rebuilt from `event` (read again from
    /// its archived file, found there by its event id) and a fresh checksum. The row's time and
    /// order id are the rebuilt event's too: damage that reached them as well as the payload would
    /// otherwise go on deciding when the event expires and is forgotten. False when it was no
    /// longer dead as `corrupt`.
    pub fn restore_payload(&mut self, id: i64, event: &crate::event::Event) -> Result<bool> {
        let qpath = self.path.clone();
        let err = |source| QueueError::Sqlite { path: qpath.clone(), source };
        let tx = self.conn.transaction().map_err(err)?;
        let changed = tx
            .execute(
                &super::cursor::states(
                    "UPDATE events SET state = {requeued}, dead_reason = NULL, dead_message = NULL, event_time = ?3,
                       order_id = ?4 WHERE id = ?1 AND state = {dead} AND dead_reason = ?2",
                ),
                params![id, DeadReason::Corrupt, event.event_time, event.order_id],
            )
            .map_err(err)?;
        if changed == 1 {
            let (event_id, order_id, event_time) = row_values(&tx, id).map_err(err)?;
            // Packed against the row as it is now: a value of the row that is still not the event's
            // (its event id, say) is written out, not referred to.
            let row = super::packed::Row { event_id: &event_id, order_id: &order_id, event_time };
            let stored = super::packed::Stored::Packed(super::packed::pack_event(event, row));
            tx.execute(
                "INSERT OR REPLACE INTO payloads (id, json, checksum) VALUES (?1, ?2, ?3)",
                params![id, stored, stored.checksum(row)],
            )
            .map_err(err)?;
        }
        super::lock::commit(tx).map_err(err)?;
        Ok(changed == 1)
    }

    /// Corrupt events no archived file could rebuild: they stay dead, with a message saying so.
    pub fn give_up_rebuild(&self, ids: &[i64]) -> Result<()> {
        for id in ids {
            self.conn
                .execute(
                    "UPDATE events SET dead_message = ?2 WHERE id = ?1 AND dead_reason = ?3",
                    params![id, DeadReason::CORRUPT_FINAL_MESSAGE, DeadReason::Corrupt],
                )
                .map_err(|e| self.sqlite(e))?;
        }
        Ok(())
    }

    /// Flip bytes of a stored payload without its checksum (tests of the verification).
    #[cfg(test)]
    pub(crate) fn damage_payload(&self, id: i64, json: &str) -> Result<()> {
        let (event_id, order_id, event_time) = row_values(&self.conn, id).map_err(|e| self.sqlite(e))?;
        let row = super::packed::Row { event_id: &event_id, order_id: &order_id, event_time };
        self.conn
            .execute("UPDATE payloads SET json = ?2 WHERE id = ?1", params![id, super::packed::Stored::of(json, row)])
            .map(drop)
            .map_err(|e| self.sqlite(e))
    }
}

/// The values of event `id`'s row that its packed payload may refer to: event id, order id, time.
fn row_values(conn: &rusqlite::Connection, id: i64) -> rusqlite::Result<(String, String, i64)> {
    conn.query_row("SELECT event_id, order_id, event_time FROM events WHERE id = ?1", [id], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
}
