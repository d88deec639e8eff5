//! The file-system watcher: `notify` events turned into [`FsSignal`]s on a bounded channel. Lost
//! events are tolerated by design: an overflow asks for a rescan, and the daemon rescans every
//! source periodically anyway.

use notify::event::{ModifyKind, RenameMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsSignal {
    /// Something happened to this path: observe it again.
    Changed(PathBuf),
    /// The path was renamed into a watched folder.
    RenamedIn(PathBuf),
    /// Events were lost (or a folder went away): scan everything.
    Rescan,
}

pub struct Watcher {
    inner: RecommendedWatcher,
    watched: HashSet<PathBuf>,
    overflow: Arc<AtomicBool>,
}

impl Watcher {
    pub fn new(tx: mpsc::Sender<FsSignal>) -> notify::Result<Watcher> {
        let overflow = Arc::new(AtomicBool::new(false));
        let flag = overflow.clone();
        let inner = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let signals = match res {
                Ok(event) => signals_of(&event),
                Err(_) => vec![FsSignal::Rescan],
            };
            for signal in signals {
                if tx.try_send(signal).is_err() {
                    flag.store(true, Ordering::Relaxed);
                }
            }
        })?;
        Ok(Watcher { inner, watched: HashSet::new(), overflow })
    }

    /// Watch `dir` if it is not watched yet. Called on every rescan, so a folder that appears late
    /// (a share mounted after boot) is picked up.
    pub fn ensure(&mut self, dir: &Path) -> notify::Result<()> {
        if self.watched.contains(dir) {
            if dir.is_dir() {
                return Ok(());
            }
            // The folder went away (unmounted share): drop the stale watch, re-add when it is back.
            let _ = self.inner.unwatch(dir);
            self.watched.remove(dir);
        }
        self.inner.watch(dir, RecursiveMode::NonRecursive)?;
        self.watched.insert(dir.to_path_buf());
        Ok(())
    }

    /// Whether events were dropped since the last call.
    pub fn take_overflow(&self) -> bool {
        self.overflow.swap(false, Ordering::Relaxed)
    }
}

/// What one notify event means for us.
pub fn signals_of(event: &notify::Event) -> Vec<FsSignal> {
    match &event.kind {
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
            event.paths.iter().cloned().map(FsSignal::RenamedIn).collect()
        }
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
            event.paths.get(1).cloned().map(FsSignal::RenamedIn).into_iter().collect()
        }
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Access(_) => {
            event.paths.iter().cloned().map(FsSignal::Changed).collect()
        }
        EventKind::Remove(_) => event.paths.iter().cloned().map(FsSignal::Changed).collect(),
        EventKind::Other | EventKind::Any => vec![FsSignal::Rescan],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, AccessMode, CreateKind};

    fn ev(kind: EventKind, paths: &[&str]) -> notify::Event {
        let mut e = notify::Event::new(kind);
        for p in paths {
            e = e.add_path(PathBuf::from(p));
        }
        e
    }

    #[test]
    fn notify_events_become_signals() {
        let cases = vec![
            (ev(EventKind::Create(CreateKind::File), &["/a"]), vec![FsSignal::Changed("/a".into())]),
            (ev(EventKind::Modify(ModifyKind::Name(RenameMode::To)), &["/a"]), vec![FsSignal::RenamedIn("/a".into())]),
            (
                ev(EventKind::Modify(ModifyKind::Name(RenameMode::Both)), &["/tmp/x", "/a"]),
                vec![FsSignal::RenamedIn("/a".into())],
            ),
            (
                ev(EventKind::Access(AccessKind::Close(AccessMode::Write)), &["/a"]),
                vec![FsSignal::Changed("/a".into())],
            ),
            (ev(EventKind::Other, &[]), vec![FsSignal::Rescan]),
        ];
        for (event, expected) in cases {
            assert_eq!(signals_of(&event), expected, "{event:?}");
        }
    }
}
