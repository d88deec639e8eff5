//! Append mode: a file a POS keeps writing to (one growing day file), read part by part as it grows.
//!
//! Each look reads from the file's committed [`Position`] to its end, takes only complete records,
//! and commits their events, rejected rows and skipped sales together with the new position in one
//! queue transaction ([`crate::queue::Ingest::commit_at`]): after a crash both are there or
//! neither, so no part of a file is queued twice or passed over. The last thing the reader found is
//! held back ([`HoldBack`]): it may be a line still being written, or the first rows of an order
//! whose next rows are not written yet; it is taken on a later look, once more has been written
//! after it or once the file has been idle for `append_idle_secs`. A file that is no longer the one
//! the position was taken in (another inode under the name, shorter than the position, different
//! first bytes) is read again from its start ([`decide`]); event ids are deterministic, so orders
//! queued before are recognised as duplicates and never queued twice.
//!
//! The decisions ([`decide`], [`HoldBack`], [`scan_part`], [`line_start`]) are pure or work over
//! any `io::Read`; [`ingest_append`] does the file I/O around them. This module never moves,
//! deletes or writes an export file.

use super::ingest::{self, add_found, AgePolicy, Found, IngestError, Utf8Check};
use crate::config::SourceConfig;
use crate::event::{Event, Warning};
use crate::format::{self, Skip};
use crate::queue::{DeadReason, IngestCounts, Position, Queue, QueueError};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::ops::ControlFlow;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::SystemTime;

/// How many bytes from the start of a file its fingerprint covers (fewer while less was read).
pub const FINGERPRINT_BYTES: u64 = 4096;

/// A CSV header line longer than this is not looked for further (as the readers do).
const MAX_HEADER_BYTES: u64 = 1024 * 1024;

/// What a look at a file finds, compared with its committed position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nothing of this file was read yet: read it from the start.
    New,
    /// The same file, no longer than its position: nothing to read.
    Same,
    /// The same file, longer than its position: read on from there.
    Grew,
    /// Not the file the position was taken in: read it from the start.
    Restart(Restart),
}

/// Why a file is read from its start again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Another inode has the name: the file was rotated away and a new one started, or another
    /// file was moved over it.
    NewInode,
    /// Shorter than its position: truncated (and maybe written again since).
    Truncated,
    /// Its first bytes are not those that were read: rewritten in place.
    Replaced,
}

impl Restart {
    fn describe(self, shown: &str, saved: &Position, seen: &Seen<'_>) -> String {
        let what = match self {
            Restart::NewInode => format!(
                "another file now has this name (inode {} was read, {} is there now: rotated, or replaced by a move)",
                saved.inode, seen.inode
            ),
            Restart::Truncated => {
                format!("truncated: {} bytes now, {} had been read", seen.size, saved.offset)
            }
            Restart::Replaced => {
                format!("rewritten in place: its first {} bytes changed", saved.offset.min(FINGERPRINT_BYTES))
            }
        };
        format!("{shown}: {what}; reading it again from the start (orders queued before are recognised by their event ids and not queued again)")
    }
}

/// A file as a look finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen<'a> {
    pub inode: u64,
    pub size: u64,
    /// The fingerprint of its first min(position offset, [`FINGERPRINT_BYTES`]) bytes, when it has
    /// that many.
    pub fingerprint: Option<&'a str>,
}

/// Is `seen` still the file `saved` was taken in, and is there anything new to read?
pub fn decide(saved: Option<&Position>, seen: &Seen<'_>) -> Decision {
    let Some(saved) = saved else {
        return Decision::New;
    };
    if seen.inode != saved.inode {
        return Decision::Restart(Restart::NewInode);
    }
    if seen.size < saved.offset {
        return Decision::Restart(Restart::Truncated);
    }
    if seen.fingerprint != Some(saved.fingerprint.as_str()) {
        return Decision::Restart(Restart::Replaced);
    }
    if seen.size == saved.offset {
        Decision::Same
    } else {
        Decision::Grew
    }
}

/// What the reader found, as far as holding back goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An event or a skipped sale: its line is where its order's first row starts.
    Order,
    /// A rejected row or order: its line may be a later row of its order (the bad one), so where
    /// the order starts is known only as "after the thing found before it".
    Reject,
}

/// Where a look stops taking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Everything read is taken.
    Nothing,
    /// What starts at this line (of the file) is held back.
    FromLine(u64),
    /// Everything read is held back (only rejects were found, and the first of them may belong to
    /// an order that starts before its line).
    All,
}

/// The hold-back rule over the things a reader finds, in order: everything is taken except the
/// last order found (it may still grow) and any rejects after it (they may be its rows). Taking
/// happens as soon as the next order shows that the ones before it are complete, so only that tail
/// is ever kept in memory.
#[derive(Debug)]
pub struct HoldBack<T> {
    tail: Vec<(Kind, u64, T)>,
}

impl<T> Default for HoldBack<T> {
    fn default() -> Self {
        HoldBack { tail: Vec::new() }
    }
}

impl<T> HoldBack<T> {
    /// The next thing found, at `line`; returns what can be taken now.
    pub fn push(&mut self, kind: Kind, line: u64, item: T) -> Vec<T> {
        let taken = match kind {
            Kind::Order => std::mem::take(&mut self.tail).into_iter().map(|(_, _, item)| item).collect(),
            Kind::Reject => Vec::new(),
        };
        self.tail.push((kind, line, item));
        taken
    }

    /// The end of what was read: with `idle` (the file stopped growing) everything is taken;
    /// otherwise the tail is held back, and [`Held`] says where it starts.
    pub fn finish(self, idle: bool) -> (Vec<T>, Held) {
        let held = match self.tail.first() {
            None => Held::Nothing,
            Some(_) if idle => Held::Nothing,
            Some((Kind::Order, line, _)) => Held::FromLine(*line),
            Some((Kind::Reject, _, _)) => Held::All,
        };
        match held {
            Held::Nothing => (self.tail.into_iter().map(|(_, _, item)| item).collect(), held),
            _ => (Vec::new(), held),
        }
    }
}

/// What one pass over the unread part of a file tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartScan {
    /// Bytes up to and including the last LF: the complete lines.
    pub complete: u64,
    /// LFs in the part (all of them are within `complete`).
    pub lines: u64,
    /// Whether the complete lines are valid UTF-8.
    pub complete_utf8: bool,
    /// Bytes in the part.
    pub all: u64,
    /// Whether the whole part is valid UTF-8 (a character cut off at the end is not).
    pub all_utf8: bool,
}

/// One streamed pass over a part: where its complete lines end, how many there are, and whether
/// they (and the whole part) are valid UTF-8.
pub fn scan_part(mut input: impl Read) -> std::io::Result<PartScan> {
    let mut scan = PartScan { complete_utf8: true, ..PartScan::default() };
    let mut check = Utf8Check::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = &buf[..n];
        match chunk.iter().rposition(|b| *b == b'\n') {
            Some(last) => {
                check.feed(&chunk[..=last]);
                scan.complete = scan.all + last as u64 + 1;
                scan.complete_utf8 = check.finish();
                scan.lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
                check.feed(&chunk[last + 1..]);
            }
            None => check.feed(chunk),
        }
        scan.all += n as u64;
    }
    scan.all_utf8 = check.finish();
    Ok(scan)
}

/// Where line `target` starts, in bytes from the start of `input`, when `input` starts on line
/// `first`: just after its (`target` - `first`)-th LF. `None` when it has fewer LFs than that.
pub fn line_start(mut input: impl Read, first: u64, target: u64) -> std::io::Result<Option<u64>> {
    let mut needed = target.saturating_sub(first);
    if needed == 0 {
        return Ok(Some(0));
    }
    let mut at = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(None),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        for (i, byte) in buf[..n].iter().enumerate() {
            if *byte == b'\n' {
                needed -= 1;
                if needed == 0 {
                    return Ok(Some(at + i as u64 + 1));
                }
            }
        }
        at += n as u64;
    }
}

/// SHA-256 (hex) of the first min(`offset`, [`FINGERPRINT_BYTES`]) bytes of `input` (fewer if it
/// is shorter): what tells the file a position was taken in from another.
pub fn fingerprint(input: impl Read, offset: u64) -> std::io::Result<String> {
    let mut bytes = Vec::new();
    input.take(offset.min(FINGERPRINT_BYTES)).read_to_end(&mut bytes)?;
    Ok(Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
}

/// One thing the reader found, owned, with its line in the file, so that it can wait in a
/// [`HoldBack`].
enum Item {
    Event { event: Box<Event>, line: u64, dead_reason: Option<DeadReason>, warnings: Vec<Warning> },
    Reject { line: u64, field: Option<String>, reason: String },
    Skip(Skip),
}

impl Item {
    /// `found` with its lines moved on by `shift` (the reader counts lines in what it was given).
    fn of(found: Found<'_>, shift: u64) -> Item {
        match found {
            Found::Event { event, line, dead_reason, warnings } => Item::Event {
                event: Box::new(event.clone()),
                line: line + shift,
                dead_reason,
                warnings: warnings.iter().map(|w| Warning { line: w.line + shift, ..w.clone() }).collect(),
            },
            Found::Reject { line, field, reason } => {
                Item::Reject { line: line + shift, field: field.map(str::to_string), reason }
            }
            Found::Skip(skip) => Item::Skip(Skip { line: skip.line + shift, ..skip.clone() }),
        }
    }

    fn kind(&self) -> (Kind, u64) {
        match self {
            Item::Event { line, .. } => (Kind::Order, *line),
            Item::Skip(skip) => (Kind::Order, skip.line),
            Item::Reject { line, .. } => (Kind::Reject, *line),
        }
    }

    fn found(&self) -> Found<'_> {
        match self {
            Item::Event { event, line, dead_reason, warnings } => {
                Found::Event { event: event.as_ref(), line: *line, dead_reason: *dead_reason, warnings }
            }
            Item::Reject { line, field, reason } => {
                Found::Reject { line: *line, field: field.as_deref(), reason: reason.clone() }
            }
            Item::Skip(skip) => Found::Skip(skip),
        }
    }
}

/// What one look at a file in append mode did.
#[derive(Debug)]
pub enum AppendOutcome {
    /// What was taken is durably committed with `position` (nothing, when nothing new was
    /// complete). `held` says the file has more after its position that a look once the file is
    /// idle will take: a record not known to be complete yet (or a line not written to its end).
    Read { counts: IngestCounts, position: Position, size: u64, held: bool, stamp: ingest::Stamp },
    /// The file shrank or was rewritten from its start while it was read: look again.
    Changed,
    /// What was read cannot be read as this format at all (its header, most likely); the position
    /// stays where it was.
    Unreadable(String),
}

/// Look at `path`, a file of an append-mode `source`: read what was added since the committed
/// position, take its complete records, and commit them with the new position. `now` is the wall
/// clock the file's idleness is judged by.
pub fn ingest_append(
    queue: &mut Queue,
    source: &SourceConfig,
    path: &Path,
    ages: AgePolicy,
    now: SystemTime,
) -> Result<AppendOutcome, IngestError> {
    let io = |e: std::io::Error| IngestError::Io { path: crate::source::shown(path), source: e };
    let shown = crate::source::shown(path);
    let mut file = crate::source::open::open_regular(path, crate::source::open::links(source)).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    let (size, inode) = (meta.len(), meta.ino());
    let stamp = ingest::stamp(&meta);
    let idle = stamp.1.is_some_and(|mtime| now.duration_since(mtime).is_ok_and(|age| age >= source.append_idle));
    let saved = queue.position(&source.name, path)?;
    // The first bytes, kept to fingerprint both the old and the new position, and to tell a file
    // rewritten while it was read.
    let head = read_head(&mut file).map_err(io)?;
    let current = match &saved {
        Some((position, _)) if size >= position.offset => Some(fingerprint(&head[..], position.offset).map_err(io)?),
        _ => None,
    };
    let seen = Seen { inode, size, fingerprint: current.as_deref() };
    let (from, lines_before, file_id) = match (decide(saved.as_ref().map(|(p, _)| p), &seen), &saved) {
        (Decision::Same, Some((position, _))) => {
            return Ok(AppendOutcome::Read {
                counts: IngestCounts::default(),
                position: position.clone(),
                size,
                held: false,
                stamp,
            })
        }
        (Decision::Grew, Some((position, file_id))) => (position.offset, position.lines, *file_id),
        (Decision::Restart(why), Some((position, _))) => {
            tracing::warn!("{}", why.describe(&shown, position, &seen));
            (0, 0, None)
        }
        _ => (0, 0, None),
    };

    if source.encoding.is_none() && (head.starts_with(b"\xFF\xFE") || head.starts_with(b"\xFE\xFF")) {
        return Ok(AppendOutcome::Unreadable(
            "a UTF-16 file cannot be read in append mode (only UTF-8 and single-byte encodings)".into(),
        ));
    }
    let csv = source.format.append() == Some(format::Append::AfterHeader);
    // The CSV reader needs the header line before the part: it is the file's first line.
    let header = if csv && from > 0 {
        let mut line = Vec::new();
        std::io::BufRead::read_until(
            &mut std::io::BufReader::new(at(&mut file, 0).map_err(io)?.take(MAX_HEADER_BYTES)),
            b'\n',
            &mut line,
        )
        .map_err(io)?;
        line
    } else {
        Vec::new()
    };
    let scan = scan_part(at(&mut file, from).map_err(io)?.take(size - from)).map_err(io)?;
    let (mut length, utf8) = if idle { (scan.all, scan.all_utf8) } else { (scan.complete, scan.complete_utf8) };
    if csv && from == 0 && scan.complete == 0 {
        // Not even the header line is complete: there is nothing to read yet.
        length = 0;
    }
    let utf8 = utf8 && std::str::from_utf8(&header).is_ok();
    // The reader counts lines in what it is given: the header (line 1) and then the part.
    let shift = match (from, csv) {
        (0, _) => 0,
        (_, true) => lines_before.saturating_sub(1),
        (_, false) => lines_before,
    };

    let mut ingest = queue.begin_append(file_id, path, &source.name, ages.now)?;
    let mut hold: HoldBack<Item> = HoldBack::default();
    let mut failure: Option<QueueError> = None;
    let read = if length > 0 {
        let part = Cursor::new(header).chain(at(&mut file, from).map_err(io)?.take(length));
        ingest::read(source, part, path, utf8, ages, &mut |found| {
            let item = Item::of(found, shift);
            let (kind, line) = item.kind();
            for taken in hold.push(kind, line, item) {
                if let Err(e) = add_found(&mut ingest, &shown, taken.found()) {
                    failure = Some(e);
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        })
    } else {
        Ok(format::Summary::default())
    };
    if let Some(e) = failure {
        return Err(e.into());
    }
    match read {
        Ok(summary) => {
            if !summary.ignored_columns.is_empty() && from == 0 {
                tracing::info!("{shown}: columns ignored: {}", summary.ignored_columns.join(", "));
            }
            for note in &summary.notes {
                tracing::warn!("{shown}: {note}");
            }
        }
        Err(format::FormatError::Io(e)) => return Err(io(e)),
        Err(e) => return Ok(AppendOutcome::Unreadable(e.to_string())),
    }
    // Shrunk, or rewritten from the start, while it was read: what was read may be a mix.
    if file.metadata().map_err(io)?.len() < from + length || !read_head(&mut file).map_err(io)?.starts_with(&head) {
        return Ok(AppendOutcome::Changed);
    }

    let (taken, held) = hold.finish(idle);
    for item in &taken {
        add_found(&mut ingest, &shown, item.found())?;
    }
    let (offset, lines) = match held {
        Held::Nothing if length == 0 => (from, lines_before),
        Held::Nothing => (from + length, lines_before + scan.lines),
        Held::All => (from, lines_before),
        Held::FromLine(line) => {
            let line = line.max(lines_before + 1);
            match line_start(at(&mut file, from).map_err(io)?.take(length), lines_before + 1, line).map_err(io)? {
                Some(bytes) => (from + bytes, line - 1),
                None => (from, lines_before),
            }
        }
    };
    let position = Position { offset, lines, fingerprint: fingerprint(&head[..], offset).map_err(io)?, inode };
    // What an idle look would still take; an idle look took everything it could.
    let held = !idle && offset < size;
    let unchanged = saved.as_ref().is_some_and(|(p, _)| *p == position) && file_id.is_some();
    if unchanged && ingest.is_empty() {
        // Nothing taken and nowhere to move: roll back rather than write the same position again.
        return Ok(AppendOutcome::Read { counts: IngestCounts::default(), position, size, held, stamp });
    }
    let counts = ingest.commit_at(&source.name, &position)?;
    Ok(AppendOutcome::Read { counts, position, size, held, stamp })
}

/// The first [`FINGERPRINT_BYTES`] bytes of `file` (all of it when it is shorter).
fn read_head(file: &mut File) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(FINGERPRINT_BYTES as usize);
    at(file, 0)?.take(FINGERPRINT_BYTES).read_to_end(&mut head)?;
    Ok(head)
}

/// `file`, positioned at `offset`.
fn at(file: &mut File, offset: u64) -> std::io::Result<&mut File> {
    file.seek(SeekFrom::Start(offset))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(offset: u64, fingerprint: &str, inode: u64) -> Position {
        Position { offset, lines: 3, fingerprint: fingerprint.into(), inode }
    }

    #[test]
    fn a_look_continues_the_same_file_and_restarts_on_any_other() {
        let saved = position(100, "abc", 7);
        let seen = |inode, size, fingerprint| Seen { inode, size, fingerprint };
        let cases = [
            ("nothing read yet", None, seen(7, 50, None), Decision::New),
            ("same", Some(&saved), seen(7, 100, Some("abc")), Decision::Same),
            ("grew", Some(&saved), seen(7, 180, Some("abc")), Decision::Grew),
            ("truncated", Some(&saved), seen(7, 40, None), Decision::Restart(Restart::Truncated)),
            ("truncated to nothing", Some(&saved), seen(7, 0, None), Decision::Restart(Restart::Truncated)),
            (
                "replaced in place, longer",
                Some(&saved),
                seen(7, 300, Some("def")),
                Decision::Restart(Restart::Replaced),
            ),
            (
                "replaced in place, same size",
                Some(&saved),
                seen(7, 100, Some("def")),
                Decision::Restart(Restart::Replaced),
            ),
            ("new inode, same bytes", Some(&saved), seen(8, 180, Some("abc")), Decision::Restart(Restart::NewInode)),
            ("new inode, shorter", Some(&saved), seen(8, 10, None), Decision::Restart(Restart::NewInode)),
        ];
        for (name, saved, seen, expected) in cases {
            assert_eq!(decide(saved, &seen), expected, "{name}");
        }
    }

    /// Push `found` (`(kind, line)`s) into a [`HoldBack`] and check the lines taken as they were
    /// pushed (`during`), the lines taken at the end (`end`) and where holding back starts.
    fn check(name: &str, found: &[(Kind, u64)], idle: bool, during: &[u64], end: &[u64], held: Held) {
        let mut hold = HoldBack::default();
        let mut taken = Vec::new();
        for (kind, line) in found {
            taken.extend(hold.push(*kind, *line, *line));
        }
        assert_eq!(taken, during, "{name}: taken while reading");
        assert_eq!(hold.finish(idle), (end.to_vec(), held), "{name}: at the end");
    }

    #[test]
    fn the_last_order_and_the_rejects_after_it_are_held_back_until_the_file_is_idle() {
        use Kind::{Order as O, Reject as R};
        check("nothing found", &[], false, &[], &[], Held::Nothing);
        check("one order", &[(O, 2)], false, &[], &[], Held::FromLine(2));
        check("orders", &[(O, 2), (O, 4), (O, 5)], false, &[2, 4], &[], Held::FromLine(5));
        check("a reject between orders is taken", &[(O, 2), (R, 3), (O, 4)], false, &[2, 3], &[], Held::FromLine(4));
        // Where the rejected orders start is known only as "after the order at line 4".
        check("rejects after the last order", &[(O, 2), (O, 4), (R, 6), (R, 7)], false, &[2], &[], Held::FromLine(4));
        check("only rejects", &[(R, 3), (R, 5)], false, &[], &[], Held::All);
        check("idle: everything", &[(O, 2), (O, 4), (R, 6)], true, &[2], &[4, 6], Held::Nothing);
        check("idle: only rejects", &[(R, 3)], true, &[], &[3], Held::Nothing);
    }

    #[test]
    fn a_part_scan_finds_the_complete_lines_and_their_encoding() {
        let check = |part: &[u8], complete, lines, complete_utf8, all_utf8| {
            let scan = scan_part(part).unwrap();
            assert_eq!(
                (scan.complete, scan.lines, scan.complete_utf8, scan.all, scan.all_utf8),
                (complete, lines, complete_utf8, part.len() as u64, all_utf8),
                "{part:?}"
            );
        };
        check(b"", 0, 0, true, true);
        check(b"a,b\n1,2\n", 8, 2, true, true);
        check(b"a,b\n1,2\n3,", 8, 2, true, true);
        check(b"no line end", 0, 0, true, true);
        check(b"\n\n", 2, 2, true, true);
        // A character cut off by the writer: the complete lines are still UTF-8.
        check("caf\u{e9}\nZo\u{eb}".as_bytes().split_last().unwrap().1, 6, 1, true, false);
        check(b"caf\xE9\nok\n", 8, 2, false, false);
        check(b"ok\ncaf\xE9", 3, 1, true, false);
    }

    #[test]
    fn a_line_start_is_found_by_counting_line_ends() {
        let part = b"r1\nr2\r\n\"q\"\nr4";
        let cases = [(10, 10, Some(0)), (10, 11, Some(3)), (10, 12, Some(7)), (10, 13, Some(11)), (10, 14, None)];
        for (first, target, expected) in cases {
            assert_eq!(line_start(&part[..], first, target).unwrap(), expected, "line {target}");
        }
    }

    #[test]
    fn a_fingerprint_covers_at_most_the_bytes_asked_for() {
        let empty = fingerprint(&b""[..], 4096).unwrap();
        assert_eq!(empty, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(fingerprint(&b"abcdef"[..], 3).unwrap(), fingerprint(&b"abc"[..], 100).unwrap());
        assert_ne!(fingerprint(&b"abcdef"[..], 4).unwrap(), fingerprint(&b"abc"[..], 100).unwrap());
        let long = vec![b'x'; 5000];
        let mut other = long.clone();
        other[4500] = b'y';
        assert_eq!(fingerprint(&long[..], 5000).unwrap(), fingerprint(&other[..], 4800).unwrap(), "4096 bytes at most");
    }

    /// A file in a temp folder read in append mode into a temp queue, with the clock under the
    /// test's control: a look is either right after the last write or long after it (idle).
    struct Day {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
        source: SourceConfig,
        queue: Queue,
    }

    const HEADER: &str = "order_id,event_time,content_id,price\n";

    impl Day {
        fn new(format: &str, name: &str) -> Day {
            let dir = tempfile::tempdir().unwrap();
            let text = format!(
                "event_source_id = \"7181537436256731137\"\ndry_run = true\nqueue_path = \"q.sqlite\"\n\
                 [[source]]\nname = \"till\"\npath = \"in\"\nformat = \"{format}\"\nappend = true\n\
                 time_zone = \"UTC\"\ncurrency = \"USD\"\nshop_id = \"s\"\n"
            );
            let ctx = crate::config::Context { config_dir: dir.path().to_path_buf(), ..Default::default() };
            let config = crate::config::parse(&text, &ctx).unwrap();
            std::fs::create_dir_all(dir.path().join("in")).unwrap();
            let queue = Queue::open(&config.queue_path).unwrap();
            Day { path: dir.path().join("in").join(name), source: config.sources[0].clone(), queue, _dir: dir }
        }

        fn append(&self, text: &str) {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path).unwrap();
            file.write_all(text.as_bytes()).unwrap();
        }

        fn look(&mut self, idle: bool) -> (IngestCounts, u64, bool) {
            let ages =
                AgePolicy { now: crate::now(), window_secs: 28 * 86_400, future_secs: 3600, clock_trusted: true };
            let now = SystemTime::now() + if idle { Duration::from_secs(3600) } else { Duration::ZERO };
            match ingest_append(&mut self.queue, &self.source, &self.path, ages, now).unwrap() {
                AppendOutcome::Read { counts, position, held, .. } => (counts, position.offset, held),
                other => panic!("{other:?}"),
            }
        }

        /// Each queued order with how many items it has.
        fn orders(&self) -> Vec<(String, usize)> {
            let batch = self.queue.pending_batch(1000).unwrap();
            batch
                .events
                .iter()
                .map(|q| {
                    let json: serde_json::Value = serde_json::from_str(batch.payload(q)).unwrap();
                    let items = json["properties"]["contents"].as_array().map_or(0, Vec::len);
                    (json["properties"]["order_id"].as_str().unwrap().to_string(), items)
                })
                .collect()
        }
    }

    fn row(order: &str, item: &str) -> String {
        format!("{order},{},{item},1.00\n", crate::now() - 600)
    }

    use std::time::Duration;

    #[test]
    fn an_order_whose_rows_straddle_two_writes_is_taken_whole() {
        let mut day = Day::new("native-csv", "day.csv");
        day.append(&format!("{HEADER}{}{}{}", row("A", "a1"), row("A", "a2"), row("B", "b1")));
        let (counts, offset, held) = day.look(false);
        assert_eq!((counts.events, held), (1, true));
        assert_eq!(offset, (HEADER.len() + 2 * row("A", "a1").len()) as u64, "B's first row is held back");
        // B's second row and half of C's row: only a complete next row shows that B is complete.
        let c = row("C", "c1");
        day.append(&format!("{}{}", row("B", "b2"), &c[..10]));
        assert_eq!(day.look(false).0, IngestCounts::default());
        day.append(&c[10..]);
        assert_eq!(day.look(false).0.events, 1);
        assert_eq!(day.orders(), [("A".into(), 2), ("B".into(), 2)]);
        assert_eq!(day.look(false).0, IngestCounts::default(), "C may still grow");
        let (counts, offset, held) = day.look(true);
        assert_eq!((counts.events, counts.rejects, held), (1, 0, false));
        assert_eq!(offset, std::fs::metadata(&day.path).unwrap().len());
        assert_eq!(day.orders(), [("A".into(), 2), ("B".into(), 2), ("C".into(), 1)]);
        assert_eq!(day.look(true).0, IngestCounts::default(), "nothing is taken twice");
    }

    #[test]
    fn a_partial_header_or_line_is_not_read() {
        let mut day = Day::new("native-csv", "day.csv");
        day.append("order_id,event_ti");
        assert_eq!(day.look(false), (IngestCounts::default(), 0, true));
        assert_eq!(day.look(true), (IngestCounts::default(), 0, false), "a header is never taken in part");
        day.append(&format!("me,content_id,price\n{}", &row("A", "a1")[..7]));
        assert_eq!(day.look(false).0, IngestCounts::default());
        assert!(day.queue.recent_rejects(10).unwrap().is_empty());
    }

    #[test]
    fn rejects_name_the_line_of_the_file_not_of_the_part() {
        let mut day = Day::new("native-csv", "day.csv");
        day.append(&format!("{HEADER}{}{}", row("A", "a1"), row("B", "b1")));
        day.look(false);
        day.append(&format!("{}{}{}", row("C", "c1"), "D,yesterday,d1,1.00\n", row("E", "e1")));
        let (counts, _, _) = day.look(false);
        assert_eq!((counts.events, counts.rejects), (2, 1));
        let rejects = day.queue.recent_rejects(10).unwrap();
        assert_eq!((rejects[0].line, rejects[0].field.as_deref()), (5, Some("event_time")));
    }

    #[test]
    fn rejects_after_the_last_order_are_held_back_with_it() {
        let mut day = Day::new("native-csv", "day.csv");
        // B's second row is bad, and B may not be complete. Where B starts is known only as
        // "after A", so A is held back with it.
        day.append(&format!("{HEADER}{}{}B,{},b2,x\n", row("A", "a1"), row("B", "b1"), crate::now()));
        let (counts, offset, _) = day.look(false);
        assert_eq!((counts, offset), (IngestCounts::default(), HEADER.len() as u64));
        day.append(&row("C", "c1"));
        let (counts, offset, _) = day.look(false);
        assert_eq!((counts.events, counts.rejects), (1, 1), "A is taken, and B is rejected whole");
        assert_eq!(offset, std::fs::metadata(&day.path).unwrap().len() - row("C", "c1").len() as u64);
        assert_eq!(day.queue.recent_rejects(10).unwrap()[0].line, 4);
    }

    #[test]
    fn a_truncated_or_replaced_file_is_read_again_without_queueing_anything_twice() {
        let mut day = Day::new("native-csv", "day.csv");
        day.append(&format!("{HEADER}{}{}{}", row("A", "a1"), row("B", "b1"), row("C", "c1")));
        day.look(true);
        // Truncated and written again, shorter: A again, and a new order.
        std::fs::write(&day.path, format!("{HEADER}{}{}", row("A", "a1"), row("N", "n1"))).unwrap();
        let (counts, _, _) = day.look(true);
        assert_eq!((counts.events, counts.duplicates), (1, 1));
        // Rewritten in place, longer, with different first bytes.
        std::fs::write(
            &day.path,
            format!("{HEADER}{}{}{}{}", row("M", "m1"), row("A", "a1"), row("B", "b1"), row("C", "c1")),
        )
        .unwrap();
        let (counts, _, _) = day.look(true);
        assert_eq!((counts.events, counts.duplicates), (1, 3));
        // Another file moved over it (a new inode), longer and starting the same way.
        let other = day.path.with_file_name("next.tmp");
        let text = std::fs::read_to_string(&day.path).unwrap();
        std::fs::write(&other, format!("{text}{}", row("Z", "z1"))).unwrap();
        std::fs::rename(&other, &day.path).unwrap();
        let (counts, _, _) = day.look(true);
        assert_eq!((counts.events, counts.duplicates), (1, 4));
        let orders: Vec<String> = day.orders().into_iter().map(|(id, _)| id).collect();
        assert_eq!(orders, ["A", "B", "C", "N", "M", "Z"]);
    }

    #[test]
    fn json_lines_are_read_part_by_part() {
        let mut day = Day::new("jsonl", "day.jsonl");
        let line = |id: &str| {
            format!(
                "{{\"order_id\":\"{id}\",\"event_time\":{},\"items\":[{{\"content_id\":\"x\",\"price\":1}}]}}\n",
                crate::now()
            )
        };
        day.append(&format!("{}{}", line("J1"), line("J2")));
        assert_eq!(day.look(false).0.events, 1);
        day.append(&format!("{}{{\"order_id\":\"J4\",", line("J3")));
        assert_eq!(day.look(false).0.events, 1);
        day.append("oops\n");
        let (counts, offset, held) = day.look(true);
        assert_eq!((counts.events, counts.rejects, held), (1, 1, false));
        assert_eq!(offset, std::fs::metadata(&day.path).unwrap().len());
        assert_eq!(day.queue.recent_rejects(10).unwrap()[0].line, 4);
        assert_eq!(day.orders().len(), 3);
    }
}
