//! The one-shot commands' library half (`run --once`, `import`, `preview`, `flush`): the same
//! functions the service uses ([`intake::take`], [`sender::flush`]), with no rendering. `main.rs`
//! parses the command line, calls these and prints what they return.

use crate::config::{Config, SourceConfig};
use crate::format::{FormatError, Summary};
use crate::intake::{self, ingest, FileResult};
use crate::queue::{Queue, QueueError, RejectedFile, Role, Superseded};
use crate::sender::{self, FlushReport, SendError, Sender, Settings};
use std::ops::ControlFlow;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Send(#[from] SendError),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// `run --once`: take every complete file present now, then send until nothing is queued or
/// `timeout` runs out on transient failures.
pub fn run_once(config: &Config, timeout: Duration) -> Result<FlushReport, CommandError> {
    let mut queue = Role::Ingest.open(&config.queue_path, config.max_queue_bytes)?;
    intake::take_present(&mut queue, config, config.disposes_files());
    flush(config, timeout)
}

/// `flush`: send what is queued now.
pub fn flush(config: &Config, timeout: Duration) -> Result<FlushReport, CommandError> {
    let queue = Role::Send.open(&config.queue_path, config.max_queue_bytes)?;
    let mut sender = Sender::new(queue, config, Settings::from_config(config))?;
    Ok(sender::flush(&mut sender, timeout)?)
}

/// `send-test`: record its request in the queue's send log (for `watch` and `status`), when there
/// is a queue; `send-test` never creates one (it may run as another user than the service).
pub fn record_send_test(config: &Config, entry: &crate::queue::SendLogEntry) -> Result<bool, CommandError> {
    match Queue::open_existing(&config.queue_path) {
        Ok(queue) => queue.log_request(entry).map(|()| true).map_err(Into::into),
        Err(QueueError::Missing(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// What `import` did with one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Imported {
    /// Taken as [`intake::take`] says.
    Taken(FileResult),
    /// Its content was read before (as `known_as`) and `force` was not given: nothing done.
    Known { known_as: String },
    /// Read again with the current config (`force`), its old read superseded.
    Reread { result: FileResult, superseded: Superseded },
}

impl Imported {
    /// It must be tried again: it changed while read, a transient error, or the queue is full.
    pub fn failed(&self) -> bool {
        matches!(
            self,
            Imported::Taken(FileResult::Retry | FileResult::QueueFull | FileResult::Blocked)
                | Imported::Reread { result: FileResult::Retry | FileResult::QueueFull | FileResult::Blocked, .. }
        )
    }
}

/// `import`: take each file with its source's settings, leaving it where it is; `on_file` is told
/// what became of each. A file whose content was read before is passed over, unless `force`: then
/// it is read again with the current config, and its old read superseded in the new read's first
/// commit (`intake::Known::reread`: its rejected rows and dead events go; nothing goes if the new
/// read does not commit). Its orders queued or sent before keep their event ids
/// and are counted as duplicates, not queued again. True when some file must be tried again.
pub fn import<'c>(
    config: &'c Config,
    files: impl IntoIterator<Item = (&'c SourceConfig, std::path::PathBuf)>,
    force: bool,
    on_file: &mut dyn FnMut(&Path, &Imported),
) -> Result<bool, CommandError> {
    let mut queue = Role::Ingest.open(&config.queue_path, config.max_queue_bytes)?;
    let mut failed = false;
    for (src, path) in files {
        let imported = import_one(&mut queue, config, src, &path, force)?;
        failed |= imported.failed();
        on_file(&path, &imported);
    }
    Ok(failed)
}

/// Where the content of `file` is now: where it was read, else where it was archived (newest
/// first); only a file with the same content counts (a newer export may have the old name).
pub fn locate(src: &SourceConfig, file: &RejectedFile) -> Option<std::path::PathBuf> {
    std::iter::once(&file.path)
        .chain(&file.archived)
        .map(std::path::PathBuf::from)
        .find(|p| ingest::content_hash(p, crate::source::open::links(src)).is_ok_and(|h| h == file.content_hash))
}

fn import_one(
    queue: &mut Queue,
    config: &Config,
    src: &SourceConfig,
    path: &Path,
    force: bool,
) -> Result<Imported, CommandError> {
    if src.append {
        // Append mode reads on from a position; a whole file's content hash does not name it.
        return Ok(Imported::Taken(intake::take(queue, config, src, path, false)));
    }
    let hash = ingest::content_hash(path, crate::source::open::links(src))
        .map_err(|source| CommandError::Io { path: crate::source::shown(path), source });
    let known = match &hash {
        Ok(hash) => queue.file_by_hash(hash)?.filter(|r| r.state == crate::queue::FileState::Ingested),
        // Not readable: `take` says why, as for any file.
        Err(_) => None,
    };
    let Some(record) = known else {
        return Ok(Imported::Taken(intake::take(queue, config, src, path, false)));
    };
    if !force {
        return Ok(Imported::Known { known_as: crate::source::shown(Path::new(&record.path)) });
    }
    let superseded = queue.superseded_counts(record.id)?;
    tracing::info!(
        "{}: reading it again with the current config (its earlier read's {} rejected rows and {} dead events are replaced)",
        crate::source::shown(path),
        superseded.rejects,
        superseded.dead
    );
    // Should this read not commit, the earlier read stays as it was.
    let known = intake::Known { reread: Some(record.id), ..intake::Known::default() };
    let result = intake::take_with(queue, config, src, path, false, known);
    Ok(Imported::Reread { result, superseded })
}

/// `preview`: read `path` as `src` says and hand each event, skip and reject to `sink`, exactly as
/// the service would build them, without queueing anything.
pub fn preview(
    config: &Config,
    src: &SourceConfig,
    path: &Path,
    sink: &mut dyn FnMut(ingest::Found<'_>) -> ControlFlow<()>,
) -> Result<Result<Summary, FormatError>, CommandError> {
    let (_, utf8) =
        ingest::scan_content(path).map_err(|source| CommandError::Io { path: path.display().to_string(), source })?;
    let ages = intake::age_policy(config, crate::now());
    Ok(ingest::read_file(src, path, utf8, ages, sink))
}
