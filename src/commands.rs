//! The one-shot commands' library half (`run --once`, `import`, `preview`, `flush`): the same
//! functions the service uses ([`intake::take`], [`sender::flush`]), with no rendering. `main.rs`
//! parses the command line, calls these and prints what they return.

use crate::config::{Config, SourceConfig};
use crate::format::{FormatError, Summary};
use crate::intake::{self, ingest, FileResult};
use crate::queue::{Queue, QueueError};
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
    let mut queue = Queue::open(&config.queue_path)?;
    intake::take_present(&mut queue, config, config.disposes_files());
    flush(config, timeout)
}

/// `flush`: send what is queued now.
pub fn flush(config: &Config, timeout: Duration) -> Result<FlushReport, CommandError> {
    let mut sender = Sender::new(Queue::open(&config.queue_path)?, config, Settings::from_config(config))?;
    Ok(sender::flush(&mut sender, timeout)?)
}

/// `import`: take each file with its source's settings, leaving it where it is. True when some file
/// must be tried again (it changed while read, a transient error, or the queue is full).
pub fn import<'c>(
    config: &'c Config,
    files: impl IntoIterator<Item = (&'c SourceConfig, std::path::PathBuf)>,
) -> Result<bool, CommandError> {
    let mut queue = Queue::open(&config.queue_path)?;
    let mut failed = false;
    for (src, path) in files {
        let result = intake::take(&mut queue, config, src, &path, false);
        failed |= matches!(result, FileResult::Retry | FileResult::QueueFull);
    }
    Ok(failed)
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
