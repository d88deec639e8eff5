//! One export file into the queue: hash it, skip it if its content was ingested before, read it,
//! build events, and commit events + rejected rows + the file's "done" record. A big file commits
//! in parts between orders ([`part_full`]), each with its read position, so the queue's WAL is
//! bounded by a part and the queue's cap applies per part; a read stopped by a crash or a full queue
//! resumes after the last committed part, and only the last part marks the file done.
//!
//! This module decides nothing about *when* a file is complete (that is [`crate::source`]) and
//! never moves or deletes files: the caller disposes of a file only after [`ingest_file`] reports
//! a durable commit.
//!
//! [`read`] (any `io::Read` through a reader and `event::build`) and [`add_found`] (one thing found
//! into a [`FoundSink`]) are shared with [`super::append`], which reads a growing file part by part.

use crate::config::SourceConfig;
use crate::event::{self, time::Age};
use crate::event::{Event, Warning};
use crate::format::{self, ConsentPolicy, FormatError, Parsed, ReadOptions, Skip, Summary};
use crate::queue::{
    DeadReason, FileRecord, FileState, Held, Ingest, IngestCounts, NewEvent, Payload, Position, Queue, QueueError,
    UNWRITTEN_BYTES,
};
use crate::source::open::{self, Links};
use crate::source::{self, shown};
use sha2::{Digest, Sha256};
use std::cell::Cell;
use std::io::{Read, Seek, SeekFrom};
use std::ops::ControlFlow;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::SystemTime;

/// A whole file commits a part once it has this many orders (events and skipped sales) since the
/// last part... Each part is a commit and an `fsync`: 3,000 instead of 2,000 took a 1M-order
/// backlog 7% less wall time (5 interleaved pairs) for 0.4 MiB more peak RSS; 4,000 came close to
/// the 16 MiB the agent keeps under (BENCHMARKS.md).
pub const PART_ORDERS: u64 = 3_000;

/// ...or once the reader has read this many bytes of the export since the last part (about as
/// many bytes of event JSON), whichever comes first. With the queue's smallest cap (16 MB) a part
/// and its indexes still fit several times over.
pub const PART_BYTES: u64 = 2 * 1024 * 1024;

/// Whether a part with `orders` orders, read from `bytes` bytes of the export, is complete: it is
/// committed after the order that fills it (never inside an order). Pure.
pub fn part_full(orders: u64, bytes: u64) -> bool {
    orders >= PART_ORDERS || bytes >= PART_BYTES
}

/// The reader of a file hands what it built to the writer at the end of each part and whenever it
/// holds this many bytes (~300 one-order events) and its events end with whole runs (of
/// `queue::ingest`'s 64), up to [`PIECES_AHEAD`] pieces ahead of the writer,
/// which writes each as it comes. Small pieces keep the two threads' buffers small: pieces of
/// 256 KiB, one ahead, took peak RSS ~1.5 MB higher (BENCHMARKS.md).
const HAND_OFF_BYTES: usize = 64 * 1024;

/// How many pieces the reader may have handed over that the writer has not taken yet (the reader
/// waits with one more).
const PIECES_AHEAD: usize = 3;

/// The longest the writer holds the queue's write lock waiting for the reader's next piece: past
/// it, what is written commits as a part (the sender records deliveries meanwhile).
#[cfg(not(test))]
const LOCK_HOLD_MAX: std::time::Duration = std::time::Duration::from_millis(50);
/// The unit tests of whole ingests count parts of [`PART_ORDERS`]: a debug build on a loaded
/// machine must not commit after a "stall" there ([`write_pieces`] has its own test).
#[cfg(test)]
const LOCK_HOLD_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// The clock and window an ingest judges event ages with.
#[derive(Debug, Clone, Copy)]
pub struct AgePolicy {
    pub now: i64,
    pub window_secs: i64,
    pub future_secs: i64,
    /// False while the sender knows the till's clock to be wrong (`AgentState::clock_wrong`): then
    /// nothing is dead on arrival for its age; the sender, which checks the clock against TikTok's,
    /// decides what has expired.
    pub clock_trusted: bool,
}

#[derive(Debug)]
pub enum Outcome {
    /// Its events (and rejected rows) are durably committed.
    Ingested { file_id: i64, counts: IngestCounts },
    /// The same content was ingested before (under this or another name).
    AlreadyIngested(FileRecord),
    /// The file changed while it was read: try again later.
    Changed,
    /// The file cannot be read as this format at all.
    Unreadable(String),
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Size and modification time: what tells us a file changed under us.
pub type Stamp = (u64, Option<SystemTime>);

/// The [`Stamp`] of a file.
pub fn stamp(meta: &std::fs::Metadata) -> Stamp {
    (meta.len(), meta.modified().ok())
}

/// SHA-256 of a file's content, streamed (opened by the folder rules, `links` for symbolic links).
pub fn content_hash(path: &Path, links: Links<'_>) -> std::io::Result<String> {
    scan_reader(open::open_regular(path, links)?).map(|(hash, _)| hash)
}

/// SHA-256 of a file's content and whether to read it as UTF-8, in one streamed pass: yes when it
/// is valid UTF-8, starts with a UTF-16 BOM (which the readers decode), or has valid non-ASCII
/// UTF-8 beside invalid bytes (see [`Utf8Check::read_as_utf8`]). A symbolic link is refused.
pub fn scan_content(path: &Path) -> std::io::Result<(String, bool)> {
    scan_reader(open::open_regular(path, Links::Refuse)?)
}

/// [`scan_content`] over an open file (from where it stands).
fn scan_reader(mut file: impl Read) -> std::io::Result<(String, bool)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut utf8 = Utf8Check::default();
    let mut first = true;
    loop {
        let n = match file.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => other?,
        };
        if n == 0 {
            break;
        }
        if first {
            first = false;
            if buf[..n].starts_with(b"\xFF\xFE") || buf[..n].starts_with(b"\xFE\xFF") {
                utf8.utf16 = true;
            }
        }
        hasher.update(&buf[..n]);
        utf8.feed(&buf[..n]);
    }
    let hash = crate::event::pii::hex(&hasher.finalize());
    Ok((hash, utf8.utf16 || utf8.read_as_utf8()))
}

/// Streaming UTF-8 validation across chunk boundaries.
#[derive(Default)]
pub(crate) struct Utf8Check {
    carry: Vec<u8>,
    invalid: bool,
    /// Valid UTF-8 beyond ASCII was seen.
    non_ascii: bool,
    utf16: bool,
}

impl Utf8Check {
    pub(crate) fn feed(&mut self, chunk: &[u8]) {
        if self.utf16 || (self.invalid && self.non_ascii) {
            return;
        }
        let joined;
        let mut rest = if self.carry.is_empty() {
            chunk
        } else {
            joined = [self.carry.as_slice(), chunk].concat();
            &joined
        };
        loop {
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    self.non_ascii |= !valid.is_ascii();
                    self.carry.clear();
                    return;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    self.non_ascii |= !valid.is_ascii();
                    match e.error_len() {
                        // An incomplete sequence at the end: the next chunk may complete it.
                        None => {
                            self.carry = after.to_vec();
                            return;
                        }
                        Some(len) => {
                            self.invalid = true;
                            rest = &after[len..];
                        }
                    }
                }
            }
        }
    }

    /// Whether everything fed so far is valid UTF-8 and ends on a character boundary.
    pub(crate) fn finish(&self) -> bool {
        !self.invalid && self.carry.is_empty()
    }

    /// Whether to read the content as UTF-8: it is valid, or it is UTF-8 damaged in places (valid
    /// non-ASCII UTF-8 beside the invalid bytes), whose readers reject the rows with invalid bytes
    /// naming the field. Only content with nothing but ASCII beside its invalid bytes is taken for
    /// a legacy encoding, which would turn the accents of a UTF-8 file into mojibake.
    pub(crate) fn read_as_utf8(&self) -> bool {
        self.finish() || self.non_ascii
    }
}

/// One thing found in a file, after normalisation: the pure half of an ingest, shared by the
/// queue ingest and `preview`.
pub enum Found<'a> {
    Event { event: &'a Event, line: u64, dead_reason: Option<DeadReason>, warnings: &'a [Warning] },
    Reject { line: u64, field: Option<&'a str>, reason: String },
    Skip(&'a Skip),
}

/// Read `path` as `source` says and hand each event, rejected row or skipped sale to `sink`.
/// `utf8` says whether the content is valid UTF-8 (from [`scan_content`]); when it is not and no
/// encoding is configured, the file is read as Windows-1252.
pub fn read_file(
    source: &SourceConfig,
    path: &Path,
    utf8: bool,
    ages: AgePolicy,
    sink: &mut dyn FnMut(Found<'_>) -> ControlFlow<()>,
) -> Result<Summary, FormatError> {
    read(source, open::open_regular(path, open::links(source))?, path, utf8, ages, sink)
}

/// Read `input`, the content of `path` (or part of it: append mode), as `source` says and hand
/// each event, rejected row or skipped sale to `sink`, with the line numbers the reader counts in
/// `input`. `utf8` as for [`read_file`]; `path` names the file in messages and lets a profile find
/// its companion file.
pub fn read(
    source: &SourceConfig,
    input: impl Read,
    path: &Path,
    utf8: bool,
    ages: AgePolicy,
    sink: &mut dyn FnMut(Found<'_>) -> ControlFlow<()>,
) -> Result<Summary, FormatError> {
    let encoding = match (source.encoding, utf8) {
        (Some(configured), _) => Some(configured),
        (None, true) => None,
        (None, false) => {
            tracing::info!("{}: not valid UTF-8; reading it as Windows-1252", shown(path));
            Some(encoding_rs::WINDOWS_1252)
        }
    };
    let options = ReadOptions {
        csv: source.csv,
        encoding,
        path: Some(path.to_path_buf()),
        decimal_separator: Some(source.defaults.decimal_separator),
        policy: source.policy.clone(),
        columns: source.columns.clone(),
    };
    format::read(source.format, input, &options, &mut |parsed| match parsed {
        Parsed::Skip(skip) => sink(Found::Skip(&skip)),
        Parsed::Reject(r) => sink(Found::Reject { line: r.line, field: r.field.as_deref(), reason: r.reason }),
        Parsed::Order(mut raw) => match event::build_taking(&mut raw, &source.defaults) {
            Err(e) => sink(Found::Reject {
                line: e.line,
                // Named as the export names it when the source maps it (`Datum`, `closed_at`).
                field: Some(source.columns.get(e.field).map_or(e.field, |c| c.trim())),
                reason: format!("order `{}` not taken: {}", crate::event::trim(&raw.order_id), e.reason),
            }),
            Ok((mut ev, mut warnings)) => {
                if raw.consent == Some(false) && !ev.user.is_empty() {
                    match source.policy.consent {
                        ConsentPolicy::Skip => {
                            let skip = Skip {
                                line: raw.line,
                                order_id: ev.order_id.clone(),
                                reason: "the customer gave no consent (consent = \"skip\")".into(),
                            };
                            return sink(Found::Skip(&skip));
                        }
                        ConsentPolicy::Strip => {
                            ev.user = event::User::default();
                            warnings.push(Warning {
                                line: raw.line,
                                field: "consent",
                                reason: "no consent: customer identifiers removed, the sale is sent without them"
                                    .into(),
                            });
                        }
                    }
                }
                if let Some(reason) = event::screen::screen(&ev, &source.screen) {
                    let skip = Skip { line: raw.line, order_id: ev.order_id.clone(), reason: reason.into() };
                    return sink(Found::Skip(&skip));
                }
                let dead_reason = match event::time::age(ev.event_time, ages.now, ages.window_secs, ages.future_secs) {
                    _ if !ages.clock_trusted => None,
                    Age::Fresh => None,
                    Age::Expired => Some(DeadReason::Expired),
                    Age::Future => Some(DeadReason::Future),
                };
                sink(Found::Event { event: &ev, line: raw.line, dead_reason, warnings: &warnings })
            }
        },
    })
}

/// Ingest one file of `source` ([`ingest_settled`] without a settled stamp).
pub fn ingest_file(
    queue: &mut Queue,
    source: &SourceConfig,
    path: &Path,
    ages: AgePolicy,
) -> Result<Outcome, IngestError> {
    ingest_settled(queue, source, path, ages, None, None, &|_| {})
}

/// Ingest one file of `source`. `settled`: the size and mtime the caller saw the file settle at;
/// a file found otherwise now is not the one that settled ([`Outcome::Changed`]).
///
/// The file is opened once (by [`open::open_regular`]'s rules), hashed and read through that one
/// descriptor. A file whose size, mtime or inode changes while it is read is not complete: what
/// was read is rolled back and [`Outcome::Changed`] returned, also when the read failed (a file
/// truncated under the reader looks empty): only a file that is unreadable *and* stable is
/// [`Outcome::Unreadable`].
///
/// Parts: the file commits every [`part_full`] orders, after checking it is still stable, with a
/// position that counts what the reader found before it; `on_part` is told each part's counts
/// (the service wakes the sender). A file some parts of which are committed (a crash, a full
/// queue: [`IngestError::Queue`] with the parts kept) is read again from its start and the things
/// found before the position are passed over (the same content finds the same things in the same
/// order: formats that cannot be read from the middle are resumed too). A file that changes after
/// parts were committed is read again from its start as a new file ([`Queue::abandon_parts`]): the
/// orders of those parts are recognised by their event ids and counted as duplicates.
pub fn ingest_settled(
    queue: &mut Queue,
    source: &SourceConfig,
    path: &Path,
    ages: AgePolicy,
    settled: Option<Stamp>,
    reread: Option<i64>,
    on_part: &dyn Fn(&IngestCounts),
) -> Result<Outcome, IngestError> {
    let io = |source: std::io::Error| IngestError::Io { path: shown(path), source };
    let mut file = open::open_regular(path, open::links(source)).map_err(io)?;
    let opened = file.metadata().map_err(io)?;
    let before = (stamp(&opened), opened.ino());
    if settled.is_some_and(|s| s != before.0) {
        return Ok(Outcome::Changed);
    }
    // Still the file that was opened, unchanged: through the descriptor and under its name.
    let stable = |file: &std::fs::File| {
        let now = file.metadata().map(|m| (stamp(&m), m.ino())).ok();
        let named = source::look(source, path).map(|m| (stamp(&m), m.ino())).ok();
        now.as_ref() == Some(&before) && named.as_ref() == Some(&before)
    };
    let (hash, utf8) = scan_reader(&mut file).map_err(io)?;
    let shown = shown(path);
    // Some parts committed before: (its record, things found before its position).
    let mut resumed = None;
    // `import --force` of this very read: read again, replacing it in the first commit.
    let mut supersede = None;
    if let Some(record) = queue.file_by_hash(&hash)? {
        match record.state {
            FileState::Ingested if reread == Some(record.id) => supersede = Some(record.id),
            FileState::Ingested => return Ok(Outcome::AlreadyIngested(record)),
            _ => resumed = Some((record.id, queue.part_position(record.id)?.map_or(0, |(_, taken)| taken))),
        }
    }
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    let skip = resumed.map_or(0, |(_, taken)| taken);
    let mut ingest = match resumed {
        Some((file_id, taken)) => {
            tracing::info!("{shown}: reading on after the {taken} orders and rows committed before");
            queue.resume_ingest(file_id, path, ages.now)?
        }
        None => queue.begin_reread(supersede, &hash, path, &source.name, ages.now)?,
    };
    let mut failure: Option<QueueError> = None;
    let mut parts = 0u32;
    let reading =
        Reading { source, path, utf8, ages, skip, shown: &shown, hash: &hash, inode: before.1, stable: &stable };
    let (read, changed, mut rest) = {
        // What the reader handed over is written in the open transaction, in the order it was read
        // (the first write of a part takes the queue's write lock); `end`: the part ends there, and
        // is committed.
        let mut write = |held: Option<&mut Held>, end: Option<PartEnd>| -> Result<(), QueueError> {
            if let Some(held) = held {
                ingest.write(held)?;
            }
            let Some(PartEnd { position, taken }) = end else { return Ok(()) };
            let counts = ingest.commit_part(&source.name, &position, taken)?;
            tracing::debug!(
                "{shown}: a part of {} events committed (read to about byte {})",
                counts.events,
                position.offset
            );
            on_part(&counts);
            parts += 1;
            crate::fault_point("ingest-part");
            Ok(())
        };
        let two = (opened.len() > INLINE_BYTES).then(|| on_two_threads(reading, &file, &mut write));
        match two {
            Some(Ok((read, written))) => {
                failure = written.err();
                read
            }
            not_on_two => {
                if let Some(Err(e)) = not_on_two {
                    tracing::warn!("{shown}: no thread to read it on ({e}); reading it on this one");
                }
                // Read and written on this thread, a part (or `UNWRITTEN_BYTES`) at a time.
                reading.run(&file, UNWRITTEN_BYTES, &mut |held, at, ends_part| match write(
                    Some(held),
                    ends_part.then_some(at),
                ) {
                    Ok(()) => true,
                    Err(e) => {
                        failure = Some(e);
                        false
                    }
                })
            }
        }
    };
    if let Some(e) = failure {
        if parts > 0 {
            tracing::info!("{shown}: {parts} parts committed; the rest waits");
        }
        return Err(e.into());
    }
    // Dropping `ingest` uncommitted rolls back what was read since the last part.
    if changed || !stable(&file) {
        let written = ingest.written_file_id();
        drop(ingest);
        if let Some(file_id) = written.filter(|_| parts > 0 || resumed.is_some()) {
            tracing::info!(
                "{shown}: changed after parts of it were committed; it will be read again from its start (orders queued from those parts are recognised by their event ids)"
            );
            queue.abandon_parts(file_id)?;
        }
        return Ok(Outcome::Changed);
    }
    match read {
        Ok(summary) => {
            if !summary.ignored_columns.is_empty() {
                tracing::info!("{shown}: columns ignored: {}", summary.ignored_columns.join(", "));
            }
            for note in &summary.notes {
                tracing::warn!("{shown}: {note}");
            }
        }
        Err(format::FormatError::Io(e)) => return Err(io(e)),
        Err(e) => return Ok(Outcome::Unreadable(e.to_string())),
    }
    ingest.write(&mut rest)?;
    let file_id = ingest.file_id()?;
    let counts = ingest.commit()?;
    Ok(Outcome::Ingested { file_id, counts })
}

/// What [`Reading::run`] returns: the read's result, whether the file changed under it, and what
/// was found after the last hand-over.
type ReadOut = (Result<Summary, FormatError>, bool, Held);

/// Read `file` on a scoped thread `ingest-read` while this one writes what it hands over
/// ([`write_pieces`]): the read's outcome and the writer's. Pieces are written as they come; the
/// write lock a part's first piece takes is held while the reader builds the rest, but never for
/// more than [`LOCK_HOLD_MAX`] waiting for the next piece (a read that stalls on a network share or
/// a cold disk commits what is written as a part). Err: no thread could be started.
fn on_two_threads(
    reading: Reading<'_>,
    file: &std::fs::File,
    write: &mut WritePiece<'_>,
) -> std::io::Result<(ReadOut, Result<(), QueueError>)> {
    // Written pieces, emptied with their room kept, for the reader to fill again.
    let spares = &std::sync::Mutex::new(Vec::<Held>::new());
    std::thread::scope(|scope| {
        let (to_writer, pieces) = std::sync::mpsc::sync_channel::<Piece>(PIECES_AHEAD);
        let reader = std::thread::Builder::new().name("ingest-read".into()).spawn_scoped(scope, move || {
            reading.run(file, HAND_OFF_BYTES, &mut |held, at, ends_part| {
                let spare = spares.lock().ok().and_then(|mut s| s.pop()).unwrap_or_default();
                to_writer.send(Piece { held: std::mem::replace(held, spare), at, ends_part }).is_ok()
            })
        })?;
        let written = write_pieces(&pieces, LOCK_HOLD_MAX, &|| (reading.stable)(file), spares, write);
        // A writer that failed stops the reader at its next hand-over.
        drop(pieces);
        Ok((reader.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)), written))
    })
}

/// The writer's side of a two-thread ingest: write each piece as it comes, commit at a part's end,
/// and commit what is written once no piece came for `hold_max` if the file is still `stable`
/// (the write lock is not held waiting for a stalled read; a file that changed is not committed
/// from, and stops the writer: the caller's check after the read finds the change). Written
/// pieces go to `spares`. Stops at the first failure.
fn write_pieces(
    pieces: &std::sync::mpsc::Receiver<Piece>,
    hold_max: std::time::Duration,
    stable: &dyn Fn() -> bool,
    spares: &std::sync::Mutex<Vec<Held>>,
    write: &mut WritePiece<'_>,
) -> Result<(), QueueError> {
    // Written since the last commit, up to there.
    let mut open: Option<PartEnd> = None;
    loop {
        let next = match open.take() {
            None => pieces.recv().ok(),
            Some(at) => match pieces.recv_timeout(hold_max) {
                Ok(piece) => Some(piece),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) if !stable() => return Ok(()),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    write(None, Some(at))?;
                    continue;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => None,
            },
        };
        let Some(Piece { mut held, at, ends_part }) = next else { return Ok(()) };
        let (end, left_open) = if ends_part { (Some(at), None) } else { (None, Some(at)) };
        let written = write(Some(&mut held), end);
        open = left_open;
        if let Ok(mut spares) = spares.lock() {
            spares.push(held);
        }
        written?;
    }
}

/// Writes a piece (if any) in the open transaction and commits there (if a position is given).
type WritePiece<'a> = dyn FnMut(Option<&mut Held>, Option<PartEnd>) -> Result<(), QueueError> + 'a;

/// A piece of a file read and built, for the writer.
struct Piece {
    held: Held,
    /// Where it ends: where a read could resume after it.
    at: PartEnd,
    /// Whether a part ends with it.
    ends_part: bool,
}

/// Where a part ends (or could): the position the next part starts at, and how many things the
/// reader found before it.
struct PartEnd {
    position: Position,
    taken: u64,
}

/// Files up to this size are read and written on one thread; bigger ones on two ([`ingest_settled`]).
/// A bigger file always commits in several parts ([`PART_BYTES`]): a commit after a stalled read
/// never splits a file that would have committed whole.
const INLINE_BYTES: u64 = PART_BYTES;

/// A file's read into [`Held`] pieces ([`Reading::run`]), apart from the queue.
#[derive(Clone, Copy)]
struct Reading<'a> {
    source: &'a SourceConfig,
    path: &'a Path,
    utf8: bool,
    ages: AgePolicy,
    /// Things found before this many were committed in earlier parts.
    skip: u64,
    shown: &'a str,
    hash: &'a str,
    inode: u64,
    /// Whether the file is still the one that was opened and hashed.
    stable: &'a (dyn Fn(&std::fs::File) -> bool + Sync),
}

impl Reading<'_> {
    /// Read `file` from its start, handing what it finds to `hand` at the end of each part and
    /// whenever it holds `hand_off` bytes, with the position it was found up to and whether a part
    /// ends there. `hand` says false to stop the read. The file changed under it if the read stopped
    /// at a part's end for that.
    fn run(
        self,
        file: &std::fs::File,
        hand_off: usize,
        hand: &mut dyn FnMut(&mut Held, PartEnd, bool) -> bool,
    ) -> ReadOut {
        let mut held = Held::default();
        let (mut found_so_far, mut part_orders, mut part_from) = (0u64, 0u64, 0u64);
        let mut changed = false;
        let consumed = Cell::new(0u64);
        let input = Counted { inner: file, bytes: &consumed };
        let read = read(self.source, input, self.path, self.utf8, self.ages, &mut |found| {
            found_so_far += 1;
            if found_so_far <= self.skip {
                // Committed in an earlier part.
                part_from = consumed.get();
                return ControlFlow::Continue(());
            }
            let (line, order) = match &found {
                Found::Event { line, .. } => (*line, true),
                Found::Skip(skip) => (skip.line, true),
                Found::Reject { line, .. } => (*line, false),
            };
            let _ = add_found(&mut held, self.shown, found);
            part_orders += u64::from(order);
            let ends_part = order && part_full(part_orders, consumed.get() - part_from);
            // A piece ends with whole runs of events where it can (the writer writes them 64 at a
            // time, the rest one by one), at twice the size at the latest.
            let whole = held.ends_whole_runs() || held.bytes() >= 2 * hand_off;
            if !ends_part && (held.bytes() < hand_off || !whole) {
                return ControlFlow::Continue(());
            }
            // Between two things found (orders or rejected rows): a position a read can resume at.
            // A part ends here if the file is still the one that was hashed.
            if ends_part && !(self.stable)(file) {
                changed = true;
                return ControlFlow::Break(());
            }
            let position =
                Position { offset: consumed.get(), lines: line, fingerprint: self.hash.to_owned(), inode: self.inode };
            if ends_part {
                (part_orders, part_from) = (0, consumed.get());
            }
            if hand(&mut held, PartEnd { position, taken: found_so_far }, ends_part) {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(())
            }
        });
        (read, changed, held)
    }
}

/// A reader that counts the bytes read through it (how far into a file a part ends, roughly: the
/// readers buffer ahead).
struct Counted<'a, R> {
    inner: R,
    bytes: &'a Cell<u64>,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes.set(self.bytes.get() + n as u64);
        Ok(n)
    }
}

/// Where [`add_found`] records what a read found: an [`Ingest`] (append mode), or a [`Held`] piece
/// built apart from the queue and written by an ingest afterwards, or on another thread
/// ([`ingest_settled`]).
pub trait FoundSink {
    fn add_event(&mut self, e: &NewEvent<'_>) -> Result<(), QueueError>;
    fn add_reject(&mut self, line: u64, field: Option<&str>, reason: &str) -> Result<(), QueueError>;
    fn add_skip(&mut self);
    fn add_warnings(&mut self, n: usize);
}

impl FoundSink for Ingest<'_> {
    fn add_event(&mut self, e: &NewEvent<'_>) -> Result<(), QueueError> {
        Ingest::add_event(self, e)
    }
    fn add_reject(&mut self, line: u64, field: Option<&str>, reason: &str) -> Result<(), QueueError> {
        Ingest::add_reject(self, line, field, reason)
    }
    fn add_skip(&mut self) {
        Ingest::add_skip(self)
    }
    fn add_warnings(&mut self, n: usize) {
        Ingest::add_warnings(self, n)
    }
}

impl FoundSink for Held {
    fn add_event(&mut self, e: &NewEvent<'_>) -> Result<(), QueueError> {
        Held::add_event(self, e);
        Ok(())
    }
    fn add_reject(&mut self, line: u64, field: Option<&str>, reason: &str) -> Result<(), QueueError> {
        Held::add_reject(self, line, field, reason);
        Ok(())
    }
    fn add_skip(&mut self) {
        Held::add_skip(self)
    }
    fn add_warnings(&mut self, n: usize) {
        Held::add_warnings(self, n)
    }
}

/// Record one thing found in `shown` (logging it as it goes): an event queued (or counted as a
/// duplicate; a repeat of an order earlier in the same file becomes a rejected row), a rejected
/// row, a skipped sale.
pub fn add_found(sink: &mut dyn FoundSink, shown: &str, found: Found<'_>) -> Result<(), QueueError> {
    match found {
        Found::Skip(skip) => {
            tracing::info!("{shown}:{}: order `{}` not sent: {}", skip.line, skip.order_id, skip.reason);
            sink.add_skip();
            Ok(())
        }
        Found::Reject { line, field, reason } => {
            tracing::warn!("{shown}:{line}: {}{reason}", field.map(|f| format!("field `{f}`: ")).unwrap_or_default());
            sink.add_reject(line, field, &reason)
        }
        Found::Event { event: ev, line, dead_reason, warnings } => {
            for w in warnings {
                tracing::warn!("{shown}:{}: field `{}`: {}", w.line, w.field, w.reason);
            }
            sink.add_warnings(warnings.len());
            sink.add_event(&NewEvent {
                event_name: ev.event,
                event_id: ev.event_id.as_str(),
                event_time: ev.event_time,
                order_id: &ev.order_id,
                payload: Payload::Event(ev),
                dead_reason,
                line,
                key: crate::event::screen::MatchKey::of(&ev.user),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// The one source of a config reading native CSV from `dir`.
    fn native_source(dir: &Path) -> SourceConfig {
        let text = format!(
            "event_source_id = \"7181537436256731137\"\naccess_token_file = \"token\"\n\n[[source]]\npath = \"{}\"\nformat = \"native-csv\"\ntime_zone = \"UTC\"\ncurrency = \"USD\"\nshop_id = \"s042\"\n",
            dir.display()
        );
        let ctx = crate::config::Context {
            config_dir: dir.into(),
            state_directory: Some(dir.join("state")),
            user_data_dir: None,
        };
        crate::config::parse(&text, &ctx).unwrap().sources.remove(0)
    }

    fn ages() -> AgePolicy {
        AgePolicy { now: 1_700_000_000, window_secs: 28 * 86_400, future_secs: 3600, clock_trusted: true }
    }

    /// A native CSV of `orders` one-item orders `o0`, `o1`, ...; every order whose number is in
    /// `bad` has a price that is not a number (a rejected row).
    fn orders_csv(orders: usize, bad: &[usize]) -> String {
        let mut out = String::from("order_id,event_time,email,content_id,content_name,price,quantity\n");
        for o in 0..orders {
            let price = if bad.contains(&o) { "n/a".to_string() } else { format!("{}.50", o % 90 + 1) };
            out.push_str(&format!(
                "o{o},{},c{o}@example.com,SKU-{o},item {o},{price},1\n",
                1_699_990_000 + (o % 3000) as i64
            ));
        }
        out
    }

    /// In `dir`: a queue capped at 3 MB (a few parts fit), the source, and `big.csv` of
    /// [`orders_csv`]`(orders, bad)`.
    fn small_queue_and_file(dir: &Path, orders: usize, bad: &[usize]) -> (Queue, SourceConfig, PathBuf) {
        let queue = Queue::open(&dir.join("q.sqlite")).unwrap();
        queue.set_size_limit(3 * 1024 * 1024, crate::queue::WalDuty::AtBound).unwrap();
        let path = dir.join("big.csv");
        std::fs::write(&path, orders_csv(orders, bad)).unwrap();
        (queue, native_source(dir), path)
    }

    /// Ingest `path` counting the parts committed; the ingest runs on another thread and must end
    /// within a minute (a reader left waiting on a writer that stopped would hang it).
    fn ingest_counting_parts(
        queue: Queue,
        source: SourceConfig,
        path: PathBuf,
    ) -> (Queue, Result<Outcome, IngestError>, u32) {
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut queue = queue;
            let parts = AtomicU32::new(0);
            let on_part = |_: &IngestCounts| {
                parts.fetch_add(1, Ordering::SeqCst);
            };
            let outcome = ingest_settled(&mut queue, &source, &path, ages(), None, None, &on_part);
            let _ = done.send((queue, outcome, parts.load(Ordering::SeqCst)));
        });
        result.recv_timeout(std::time::Duration::from_secs(60)).expect("the ingest ended")
    }

    /// A file too big to read on one thread is read on two (one reads and builds, one writes): every
    /// order is queued once, in the file's order, with its own payload, and the rejected rows are
    /// recorded with their lines, as a small file read on one thread would have them.
    #[test]
    fn a_big_file_read_on_two_threads_queues_every_order_in_order_with_its_own_payload() {
        let dir = tempfile::tempdir().unwrap();
        let source = native_source(dir.path());
        let orders = 12 * PART_ORDERS as usize + 700;
        let bad = [5, 3001, orders - 1];
        for (name, orders, bad, parts) in [("big.csv", orders, &bad[..], 12), ("small.csv", 40, &[5][..], 0)] {
            let queue = Queue::open(&dir.path().join(format!("{name}.sqlite"))).unwrap();
            let path = dir.path().join(name);
            std::fs::write(&path, orders_csv(orders, bad)).unwrap();
            let two_threads = std::fs::metadata(&path).unwrap().len() > INLINE_BYTES;
            assert_eq!(two_threads, parts > 0, "{name}: the file is of the size meant");
            let (queue, outcome, committed) = ingest_counting_parts(queue, source.clone(), path);
            let Ok(Outcome::Ingested { counts, .. }) = outcome else { panic!("{name}: {outcome:?}") };
            assert_eq!((counts.events, counts.rejects), ((orders - bad.len()) as i64, bad.len() as i64), "{name}");
            assert_eq!(committed, parts, "{name}: parts committed before the last");
            let batch = queue.pending_batch(orders).unwrap();
            let expected: Vec<String> = (0..orders).filter(|o| !bad.contains(o)).map(|o| format!("o{o}")).collect();
            let queued: Vec<&str> =
                batch.events.iter().map(|e| batch.event_id(e).rsplit(':').next().unwrap()).collect();
            assert_eq!(queued, expected, "{name}: queued in the file's order");
            for e in &batch.events {
                let order = batch.event_id(e).rsplit(':').next().unwrap();
                assert!(e.intact, "{name}: {order}");
                assert!(
                    batch.payload(e).contains(&format!("\"order_id\":\"{order}\"")),
                    "{name}: {order}: {}",
                    batch.payload(e)
                );
            }
            let mut lines: Vec<i64> = queue.recent_rejects(10).unwrap().iter().map(|r| r.line).collect();
            lines.sort();
            assert_eq!(
                lines,
                bad.iter().map(|o| *o as i64 + 2).collect::<Vec<_>>(),
                "{name}: the rejected rows' lines"
            );
        }
    }

    /// The writer stops at a part that does not fit the queue: the reader, ahead of it, stops too,
    /// the ingest ends with the error, and the parts committed before it stay.
    #[test]
    fn a_part_that_does_not_fit_stops_the_reader_and_keeps_the_parts_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, source, path) = small_queue_and_file(dir.path(), 40 * PART_ORDERS as usize, &[]);
        let (queue, outcome, parts) = ingest_counting_parts(queue, source, path);
        assert!(matches!(&outcome, Err(IngestError::Queue(e)) if e.is_full()), "{outcome:?}");
        assert!((1..40).contains(&parts), "{parts} parts committed");
        assert_eq!(queue.counts().unwrap().pending, i64::from(parts) * PART_ORDERS as i64);
    }

    /// A read stopped by a full queue and resumed (on two threads both times) takes every order and
    /// rejected row once: the parts' `taken` counts match what was written before each commit.
    #[test]
    fn a_big_file_resumed_after_a_full_queue_takes_every_order_and_rejected_row_once() {
        let dir = tempfile::tempdir().unwrap();
        let orders = 20 * PART_ORDERS as usize;
        // Rejected rows at a part's start and end and here and there.
        let bad: Vec<usize> = vec![0, 2999, 3000, 4321, 9000, orders - 1];
        let (queue, source, path) = small_queue_and_file(dir.path(), orders, &bad);
        let (queue, outcome, first) = ingest_counting_parts(queue, source.clone(), path.clone());
        assert!(matches!(&outcome, Err(IngestError::Queue(e)) if e.is_full()), "{outcome:?}");
        queue.set_size_limit(1 << 30, crate::queue::WalDuty::AtBound).unwrap();
        let (queue, outcome, second) = ingest_counting_parts(queue, source, path);
        let Ok(Outcome::Ingested { counts, .. }) = outcome else { panic!("{outcome:?}") };
        assert!(first >= 1 && second >= 1, "parts: {first} then {second}");
        assert_eq!(counts.duplicates, 0);
        let batch = queue.pending_batch(orders).unwrap();
        let queued: Vec<&str> = batch.events.iter().map(|e| batch.event_id(e).rsplit(':').next().unwrap()).collect();
        let expected: Vec<String> = (0..orders).filter(|o| !bad.contains(o)).map(|o| format!("o{o}")).collect();
        assert_eq!(queued, expected, "each order once, in the file's order");
        let mut lines: Vec<i64> = queue.recent_rejects(100).unwrap().iter().map(|r| r.line).collect();
        lines.sort();
        assert_eq!(lines, bad.iter().map(|o| *o as i64 + 2).collect::<Vec<_>>(), "each rejected row once");
    }

    /// The writer writes each piece as it comes and commits at a part's end; a read that stalls
    /// mid-part (no piece for the hold time) gets what is written committed, so that the write lock
    /// is let go; a failed write stops it.
    #[test]
    fn the_writer_commits_at_a_part_end_and_when_the_reader_stalls() {
        let at = |taken| PartEnd {
            position: Position { offset: taken * 10, lines: taken, fingerprint: "h".into(), inode: 1 },
            taken,
        };
        let piece = |taken, ends_part| Piece { held: Held::default(), at: at(taken), ends_part };
        // The pieces before the first pause are in the channel before the writer starts (no stall
        // between them however the machine is loaded); the rest come from a thread, each after its
        // pause. `stable`: whether the file is still the one read.
        let run = |script: Vec<(Piece, u64)>, fail_at: Option<usize>, stable: bool| {
            let (to_writer, pieces) = std::sync::mpsc::sync_channel::<Piece>(8);
            let mut script = script.into_iter().peekable();
            while let Some((piece, _)) = script.next_if(|(_, pause_ms)| *pause_ms == 0) {
                to_writer.send(piece).unwrap();
            }
            let later: Vec<_> = script.collect();
            let sender = std::thread::spawn(move || {
                for (piece, pause_ms) in later {
                    std::thread::sleep(std::time::Duration::from_millis(pause_ms));
                    if to_writer.send(piece).is_err() {
                        return;
                    }
                }
            });
            let mut calls: Vec<(bool, Option<u64>)> = Vec::new();
            let spares = std::sync::Mutex::new(Vec::new());
            let hold = std::time::Duration::from_millis(20);
            let failure = write_pieces(&pieces, hold, &|| stable, &spares, &mut |held, end| {
                calls.push((held.is_some(), end.map(|e| e.taken)));
                match fail_at {
                    Some(n) if calls.len() == n => Err(QueueError::Missing("q".into())),
                    _ => Ok(()),
                }
            });
            drop(pieces);
            sender.join().unwrap();
            let spares = spares.lock().unwrap().len();
            (calls, failure.is_err(), spares)
        };
        // A part in three pieces, then a stall of 200 ms inside the next part, then its end.
        let stalled = || {
            vec![
                (piece(1, false), 0),
                (piece(2, false), 0),
                (piece(3, true), 0),
                (piece(4, false), 0),
                (piece(5, true), 200),
            ]
        };
        let (calls, failed, spares) = run(stalled(), None, true);
        assert_eq!(
            calls,
            [(true, None), (true, None), (true, Some(3)), (true, None), (false, Some(4)), (true, Some(5))],
            "written as they come; the part before the stall committed at the last piece written"
        );
        assert!(!failed);
        assert_eq!(spares, 5, "every written piece goes back to the reader");
        // The file changed under the reader: nothing is committed after the stall, and the writer
        // takes no more.
        let (calls, failed, _) = run(stalled(), None, false);
        assert_eq!(calls, [(true, None), (true, None), (true, Some(3)), (true, None)]);
        assert!(!failed);
        // Nothing written and not committed: no commit for a stall (the lock is not held).
        let (calls, _, _) = run(vec![(piece(1, true), 0), (piece(2, true), 100)], None, true);
        assert_eq!(calls, [(true, Some(1)), (true, Some(2))]);
        // The second write fails: nothing more is taken.
        let (calls, failed, _) =
            run(vec![(piece(1, false), 0), (piece(2, true), 0), (piece(3, true), 0)], Some(2), true);
        assert_eq!(calls, [(true, None), (true, Some(2))]);
        assert!(failed);
    }

    /// A file that changes after parts of it were committed is not ingested: the parts are
    /// abandoned (read again from its start later), whichever thread sees the change.
    #[test]
    fn a_big_file_that_changes_between_parts_is_left_to_be_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let source = native_source(dir.path());
        let mut queue = Queue::open(&dir.path().join("q.sqlite")).unwrap();
        let path = dir.path().join("big.csv");
        std::fs::write(&path, orders_csv(15 * PART_ORDERS as usize, &[])).unwrap();
        let appended = std::sync::atomic::AtomicBool::new(false);
        let parts = AtomicU32::new(0);
        let on_part = |_: &IngestCounts| {
            parts.fetch_add(1, Ordering::SeqCst);
            if !appended.swap(true, Ordering::SeqCst) {
                let mut file = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
                std::io::Write::write_all(&mut file, b"late,1699990000,l@example.com,SKU,late,1.00,1\n").unwrap();
            }
        };
        let hash = scan_content(&path).unwrap().0;
        let outcome = ingest_settled(&mut queue, &source, &path, ages(), None, None, &on_part);
        assert!(matches!(outcome, Ok(Outcome::Changed)), "{outcome:?}");
        assert!(appended.load(Ordering::SeqCst));
        let record = queue.file_by_hash(&hash).unwrap();
        assert!(record.is_none(), "the parts are no longer recorded as the file's content: {record:?}");
        // The reader stops at the first part's end after the change (it is at most a few pieces
        // ahead of the writer), not at the end of the file.
        let parts = parts.load(Ordering::SeqCst);
        assert!((1..=3).contains(&parts), "{parts} parts committed after the change");
        assert_eq!(queue.counts().unwrap().pending, i64::from(parts) * PART_ORDERS as i64, "the parts' events stay");
    }

    #[test]
    fn a_part_is_full_at_its_order_or_byte_bound() {
        let cases = [
            ("empty", 0, 0, false),
            ("small", 10, 4096, false),
            ("orders", PART_ORDERS, 1, true),
            ("one short of the orders", PART_ORDERS - 1, PART_BYTES - 1, false),
            ("bytes: a few big orders", 3, PART_BYTES, true),
        ];
        for (name, orders, bytes, full) in cases {
            assert_eq!(part_full(orders, bytes), full, "{name}");
        }
    }

    #[test]
    fn utf8_validation_spans_chunk_boundaries() {
        let text = "Zoë Ørsted, Café".as_bytes();
        for split in 0..text.len() {
            let mut check = Utf8Check::default();
            check.feed(&text[..split]);
            check.feed(&text[split..]);
            assert!(check.finish(), "split at {split}");
        }
        let mut check = Utf8Check::default();
        check.feed(b"Caf\xE9 au lait");
        assert!(!check.finish());
        let mut truncated = Utf8Check::default();
        truncated.feed(&"ë".as_bytes()[..1]);
        assert!(!truncated.finish());
    }

    #[test]
    fn utf8_damaged_in_places_is_still_read_as_utf8() {
        // Windows-1252 through and through: transcoded.
        let mut legacy = Utf8Check::default();
        legacy.feed(b"Zo\xEB \xD8rsted\nCaf\xE9\n");
        assert!(!legacy.read_as_utf8());
        // UTF-8 with one bad byte, before or after the accents: read as UTF-8, the bad row rejected.
        for text in [&b"Zo\xC3\xAB\ncaf\xFF\n"[..], b"caf\xFF\nZo\xC3\xAB\n"] {
            for split in 0..text.len() {
                let mut check = Utf8Check::default();
                check.feed(&text[..split]);
                check.feed(&text[split..]);
                assert!(check.read_as_utf8() && !check.finish(), "{text:?} split at {split}");
            }
        }
    }
}
