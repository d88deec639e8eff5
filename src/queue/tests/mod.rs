use super::*;

mod cursor;
mod ingest;
mod payloads;
mod state;

pub(super) fn temp_queue() -> (tempdir::Dir, Queue) {
    let dir = tempdir::Dir::new();
    let q = Queue::open(&dir.path().join("q.sqlite")).unwrap();
    (dir, q)
}

/// A throwaway directory removed on drop (no extra crate for one helper).
mod tempdir {
    pub struct Dir(std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            let p = std::env::temp_dir().join(format!("oea-q-{}-{}", std::process::id(), fastrand::u64(..)));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The rows `sql` reads from `q`, as pairs of their two columns.
pub(super) fn pairs<A: rusqlite::types::FromSql, B: rusqlite::types::FromSql>(q: &Queue, sql: &str) -> Vec<(A, B)> {
    let mut stmt = q.conn.prepare(sql).unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<rusqlite::Result<_>>().unwrap()
}

pub(super) fn event<'a>(id: &'a str, time: i64) -> NewEvent<'a> {
    NewEvent {
        event_name: "Purchase",
        event_id: id,
        event_time: time,
        order_id: id,
        payload: Payload::Json("{}"),
        dead_reason: None,
        line: 0,
        key: crate::event::screen::MatchKey::None,
    }
}
