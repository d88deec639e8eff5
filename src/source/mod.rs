//! Source folders: which files are candidates, when a file is complete, and what happens to it
//! after its events are committed.
//!
//! [`Settle`] is the pure decision "is this file done being written?", driven by observations and
//! an explicit clock; [`watch`] feeds it from `notify` and periodic rescans. [`dispose`] archives or
//! deletes a file and must only be called after the file's ingest committed.

pub mod open;
pub mod watch;

use crate::config::{AfterIngest, SourceConfig};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Name endings that mark a file still being written.
const TEMP_SUFFIXES: [&str; 6] = [".tmp", ".part", ".partial", ".crdownload", ".swp", "~"];

/// The source that owns `path`: the one whose folder holds it directly. The only place that
/// answers "which source is this file for".
pub fn owner(sources: &[SourceConfig], path: &Path) -> Option<usize> {
    sources.iter().position(|s| path.parent() == Some(s.path.as_path()))
}

/// Whether `path` (a file directly in a source folder) is one this source should read. Names are
/// bytes: one that is not valid UTF-8 is judged by its ending like any other.
pub fn is_candidate(source: &SourceConfig, path: &Path) -> bool {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy()) else {
        return false;
    };
    if name.starts_with('.') || TEMP_SUFFIXES.iter().any(|s| name.to_ascii_lowercase().ends_with(s)) {
        return false;
    }
    if path.parent() != Some(source.path.as_path()) {
        return false;
    }
    let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
    ext.is_some_and(|e| source.extensions.contains(&e)) && source.format.reads_file(&name)
}

/// A path as it is safe to print in a log line, a `.reason` file or a terminal: control characters
/// (a newline, ESC) and bidirectional overrides escaped as Rust writes them (`\n`, `\u{1b}`), bytes
/// that are not UTF-8 as `\xNN`. A file name cannot forge a log line or drive a terminal.
pub fn shown(path: &Path) -> String {
    use std::fmt::Write as _;
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for chunk in path.as_os_str().as_bytes().utf8_chunks() {
        for c in chunk.valid().chars() {
            let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
            if c.is_control() || bidi {
                out.extend(c.escape_debug());
            } else {
                out.push(c);
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out
}

/// How a file of `source` is looked at without opening it: the entry itself (a symbolic link is
/// not followed), or, for a link the source follows, its target (a dangling link: the link).
pub fn look(source: &SourceConfig, path: &Path) -> std::io::Result<std::fs::Metadata> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() && source.follow_symlinks {
        return Ok(std::fs::metadata(path).unwrap_or(meta));
    }
    Ok(meta)
}

/// The done-marker file of `path` under `template`: `{name}` is the file's name, `{stem}` its name
/// without the last extension (`sales.csv` → `{name}.done` = `sales.csv.done`, `{stem}.ok` = `sales.ok`).
pub fn marker_of(template: &str, path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    path.with_file_name(template.replace("{name}", &name).replace("{stem}", &stem))
}

/// Whether a file of `source` is complete by its done marker: `None` when the source has no marker
/// (completeness is decided by renames and settling instead).
pub fn marked_done(source: &SourceConfig, path: &Path) -> Option<bool> {
    source.done_marker.as_deref().map(|template| marker_of(template, path).is_file())
}

/// Remove a file's done marker once the file itself is archived, deleted or quarantined (a marker
/// left behind would mark a later file of the same name as done before it is).
pub fn remove_marker(source: &SourceConfig, path: &Path) -> std::io::Result<()> {
    let Some(template) = source.done_marker.as_deref() else { return Ok(()) };
    match std::fs::remove_file(marker_of(template, path)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Candidate files of a source, with their size and mtime; with a done marker configured, only the
/// files whose marker exists. Everything but a folder is listed, symbolic links and special files
/// (FIFOs, sockets, devices) too: [`open::open_regular`] decides whether it is read, by the same
/// rule for files found here and files the watcher reports. A missing folder is an error for the caller to report (it may be an
/// unmounted share) and is tried again on the next scan.
pub fn scan(source: &SourceConfig) -> std::io::Result<Vec<(PathBuf, u64, Option<SystemTime>)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&source.path)? {
        let Ok(entry) = entry else { continue };
        let path = entry.path();
        let Ok(meta) = look(source, &path) else { continue };
        tracing::debug!(
            "{}: {}",
            shown(&path),
            scan_verdict(meta.is_dir(), is_candidate(source, &path), marked_done(source, &path))
        );
        if !meta.is_dir() && is_candidate(source, &path) && marked_done(source, &path) != Some(false) {
            found.push((path, meta.len(), meta.modified().ok()));
        }
    }
    found.sort();
    Ok(found)
}

/// What a scan makes of a folder entry, for the debug log. Pure.
fn scan_verdict(dir: bool, candidate: bool, marked: Option<bool>) -> &'static str {
    match (dir, candidate, marked) {
        (true, _, _) => "a folder, not read",
        (false, false, _) => "not a candidate (extension, hidden or a done marker), not read",
        (false, true, Some(false)) => "waits for its done marker",
        (false, true, _) => "listed",
    }
}

/// The file system type of the mount holding `path`, from `/proc/self/mountinfo` text (the longest
/// mount point that is a prefix of the path wins).
pub fn filesystem_of(mountinfo: &str, path: &Path) -> Option<String> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let mount_point = unescape_mount(fields.get(4)?);
            let dash = fields.iter().position(|f| *f == "-")?;
            let fstype = fields.get(dash + 1)?;
            path.starts_with(&mount_point).then(|| (mount_point.len(), fstype.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, fstype)| fstype)
}

/// Mount points in mountinfo escape spaces and the like as `\040`.
fn unescape_mount(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let code: String = chars.by_ref().take(3).collect();
            match u8::from_str_radix(&code, 8) {
                Ok(b) => out.push(b as char),
                Err(_) => {
                    out.push('\\');
                    out.push_str(&code);
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// File systems where inotify sees nothing of changes made by other machines: poll them.
pub fn is_network_fs(fstype: &str) -> bool {
    const NETWORK: [&str; 12] =
        ["nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "ceph", "glusterfs", "9p", "davfs", "fuse.sshfs"];
    NETWORK.contains(&fstype) || fstype.starts_with("fuse.rclone")
}

/// The settle decision: a file is complete when it was renamed into place, or when its size and
/// mtime have not changed for the settle time. Times are milliseconds on any monotonic clock.
#[derive(Debug, Default)]
pub struct Settle {
    files: HashMap<PathBuf, Seen>,
}

#[derive(Debug, Clone, PartialEq)]
struct Seen {
    size: u64,
    mtime: Option<SystemTime>,
    since_ms: u64,
    renamed_in: bool,
}

impl Settle {
    /// Record what a scan or a file event saw. A change restarts the settle time.
    pub fn observe(&mut self, path: &Path, size: u64, mtime: Option<SystemTime>, now_ms: u64) {
        match self.files.get_mut(path) {
            Some(seen) if seen.size == size && seen.mtime == mtime => {}
            Some(seen) => *seen = Seen { size, mtime, since_ms: now_ms, renamed_in: false },
            None => {
                self.files.insert(path.to_path_buf(), Seen { size, mtime, since_ms: now_ms, renamed_in: false });
            }
        }
    }

    /// Record what a scan or a file event saw of a file that is read as it grows (append mode):
    /// the settle time runs from the first change not looked at yet, so a file written to without
    /// a pause is still looked at once every settle time.
    pub fn observe_growing(&mut self, path: &Path, size: u64, mtime: Option<SystemTime>, now_ms: u64) {
        match self.files.get_mut(path) {
            Some(seen) => (seen.size, seen.mtime) = (size, mtime),
            None => {
                self.files.insert(path.to_path_buf(), Seen { size, mtime, since_ms: now_ms, renamed_in: false });
            }
        }
    }

    /// The file was renamed into the folder: writers that do that have finished writing.
    pub fn renamed_in(&mut self, path: &Path, size: u64, mtime: Option<SystemTime>, now_ms: u64) {
        self.files.insert(path.to_path_buf(), Seen { size, mtime, since_ms: now_ms, renamed_in: true });
    }

    /// The size and mtime `path` was last seen with (what it settled at, once it is ready).
    pub fn stamp(&self, path: &Path) -> Option<(u64, Option<SystemTime>)> {
        self.files.get(path).map(|s| (s.size, s.mtime))
    }

    pub fn forget(&mut self, path: &Path) {
        self.files.remove(path);
    }

    /// Files that are complete now, oldest observation first.
    pub fn ready(&self, now_ms: u64, settle: Duration) -> Vec<PathBuf> {
        let settle_ms = settle.as_millis() as u64;
        let mut ready: Vec<_> = self
            .files
            .iter()
            .filter(|(_, s)| s.renamed_in || now_ms.saturating_sub(s.since_ms) >= settle_ms)
            .map(|(p, s)| (s.since_ms, p.clone()))
            .collect();
        ready.sort();
        ready.into_iter().map(|(_, p)| p).collect()
    }

    /// When the next file becomes complete if nothing changes.
    pub fn next_due_ms(&self, settle: Duration) -> Option<u64> {
        let settle_ms = settle.as_millis() as u64;
        self.files.values().map(|s| if s.renamed_in { s.since_ms } else { s.since_ms + settle_ms }).min()
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{}: {action}: {source}", shown(path))]
pub struct DisposeError {
    pub path: PathBuf,
    pub action: &'static str,
    pub source: std::io::Error,
}

/// Archive, delete or keep a file whose events are committed. Returns what was done.
pub fn dispose(source: &SourceConfig, path: &Path, suffix: impl FnOnce() -> String) -> Result<String, DisposeError> {
    match source.after_ingest {
        AfterIngest::Keep => Ok("kept".into()),
        AfterIngest::Delete => {
            std::fs::remove_file(path).map_err(|e| DisposeError { path: path.into(), action: "delete", source: e })?;
            sync_dir(path.parent());
            Ok("deleted".into())
        }
        AfterIngest::Archive => {
            let target = move_aside(path, &source.archive_dir, suffix).map_err(|e| DisposeError {
                path: path.into(),
                action: "archive",
                source: e,
            })?;
            Ok(format!("archived to {}", shown(&target)))
        }
    }
}

/// Move a file into `dir` (created if needed), never overwriting: a name already there gets the
/// first 12 characters of `suffix()` (the content hash, computed only then) added. Falls back to
/// copy + fsync + remove across devices.
pub fn move_aside(path: &Path, dir: &Path, suffix: impl FnOnce() -> String) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().unwrap_or_default();
    let mut target = dir.join(name);
    if target.exists() {
        let stem = path.file_stem().unwrap_or_default().to_string_lossy();
        let hash = suffix();
        let short = &hash[..hash.len().min(12)];
        let renamed = match path.extension() {
            Some(ext) => format!("{stem}.{short}.{}", ext.to_string_lossy()),
            None => format!("{stem}.{short}"),
        };
        target = dir.join(renamed);
    }
    match std::fs::rename(path, &target) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
            // The archive folder is on another file system.
            std::fs::copy(path, &target)?;
            std::fs::File::open(&target)?.sync_all()?;
            std::fs::remove_file(path)?;
        }
        Err(e) => return Err(e),
    }
    sync_dir(Some(dir));
    sync_dir(path.parent());
    Ok(target)
}

fn sync_dir(dir: Option<&Path>) {
    if let Some(dir) = dir {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_scan_says_why_an_entry_is_not_read() {
        let table = [
            ("folder", true, true, None, "a folder, not read"),
            ("other extension", false, false, None, "not a candidate (extension, hidden or a done marker), not read"),
            ("unmarked", false, true, Some(false), "waits for its done marker"),
            ("marked", false, true, Some(true), "listed"),
            ("no marker needed", false, true, None, "listed"),
        ];
        for (name, dir, candidate, marked, expected) in table {
            assert_eq!(super::scan_verdict(dir, candidate, marked), expected, "{name}");
        }
    }

    use super::*;

    const SETTLE: Duration = Duration::from_secs(2);

    #[test]
    fn paths_are_shown_with_control_characters_and_bad_bytes_escaped() {
        use std::os::unix::ffi::OsStrExt;
        let cases: [(&[u8], &str); 8] = [
            (b"/pos/sales.csv", "/pos/sales.csv"),
            (b"/pos/Verk\xc3\xa4ufe 1.csv", "/pos/Verk\u{e4}ufe 1.csv"),
            (b"/pos/a\nINFO forged.csv", "/pos/a\\nINFO forged.csv"),
            (b"/pos/\x1b[2Jx.csv", "/pos/\\u{1b}[2Jx.csv"),
            (b"/pos/tab\there\r.csv", "/pos/tab\\there\\r.csv"),
            (b"/pos/caf\xe9.csv", "/pos/caf\\xe9.csv"),
            (b"/pos/\xe2\x80\xaevsc.exe", "/pos/\\u{202e}vsc.exe"),
            (b"/pos/\x7f.csv", "/pos/\\u{7f}.csv"),
        ];
        for (raw, expected) in cases {
            assert_eq!(shown(Path::new(std::ffi::OsStr::from_bytes(raw))), expected, "{raw:?}");
        }
    }

    #[test]
    fn done_markers_are_named_from_the_file() {
        let cases = [
            ("{name}.done", "/pos/sales.csv", "/pos/sales.csv.done"),
            ("{stem}.ok", "/pos/sales.csv", "/pos/sales.ok"),
            ("{stem}.ok", "/pos/sales.2025-03-14.csv", "/pos/sales.2025-03-14.ok"),
            ("ready_{stem}.flag", "/pos/z.xml", "/pos/ready_z.flag"),
            ("{name}.rdy", "/pos/no-extension", "/pos/no-extension.rdy"),
        ];
        for (template, file, marker) in cases {
            assert_eq!(marker_of(template, Path::new(file)), PathBuf::from(marker), "{template} {file}");
        }
    }

    #[test]
    fn network_file_systems_are_recognised_from_mountinfo() {
        let mountinfo = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:40 / /srv/pos rw,relatime shared:20 - nfs4 server:/exports/pos rw,vers=4.2
41 40 0:41 / /srv/pos/local rw - tmpfs tmpfs rw
42 22 0:42 / /mnt/shop\\040share rw - cifs //nas/shop rw
";
        let cases = [
            ("/srv/pos/export", Some("nfs4"), true),
            ("/srv/pos/local/x", Some("tmpfs"), false),
            ("/var/lib/x", Some("ext4"), false),
            ("/mnt/shop share/in", Some("cifs"), true),
        ];
        for (path, fstype, network) in cases {
            let found = filesystem_of(mountinfo, Path::new(path));
            assert_eq!(found.as_deref(), fstype, "{path}");
            assert_eq!(found.as_deref().is_some_and(is_network_fs), network, "{path}");
        }
    }

    #[test]
    fn a_file_is_ready_once_unchanged_for_the_settle_time() {
        let p = Path::new("/pos/a.csv");
        let mut s = Settle::default();
        s.observe(p, 10, None, 0);
        assert!(s.ready(1999, SETTLE).is_empty());
        s.observe(p, 20, None, 1500); // still growing: the clock restarts
        assert!(s.ready(3000, SETTLE).is_empty());
        assert_eq!(s.next_due_ms(SETTLE), Some(3500));
        s.observe(p, 20, None, 3000); // unchanged: no restart
        assert_eq!(s.ready(3500, SETTLE), vec![p.to_path_buf()]);
        s.forget(p);
        assert!(s.is_empty());
    }

    #[test]
    fn a_file_renamed_into_place_is_ready_at_once() {
        let p = Path::new("/pos/b.csv");
        let mut s = Settle::default();
        s.renamed_in(p, 10, None, 100);
        assert_eq!(s.ready(100, SETTLE), vec![p.to_path_buf()]);
        // Written to again after the rename: back to settling.
        s.observe(p, 11, None, 200);
        assert!(s.ready(300, SETTLE).is_empty());
    }

    #[test]
    fn a_growing_file_is_looked_at_every_settle_time_even_while_it_keeps_growing() {
        let p = Path::new("/pos/day.csv");
        let mut s = Settle::default();
        s.observe_growing(p, 10, None, 0);
        s.observe_growing(p, 20, None, 1000);
        s.observe_growing(p, 30, None, 1900);
        assert!(s.ready(1999, SETTLE).is_empty());
        assert_eq!(s.ready(2000, SETTLE), vec![p.to_path_buf()]);
        s.forget(p); // looked at
        s.observe_growing(p, 40, None, 2100);
        assert_eq!(s.next_due_ms(SETTLE), Some(4100));
    }

    #[test]
    fn mtime_changes_count_as_changes() {
        let p = Path::new("/pos/c.csv");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1);
        let t1 = SystemTime::UNIX_EPOCH + Duration::from_secs(2);
        let mut s = Settle::default();
        s.observe(p, 10, Some(t0), 0);
        s.observe(p, 10, Some(t1), 1900);
        assert!(s.ready(2500, SETTLE).is_empty());
        assert_eq!(s.ready(3900, SETTLE).len(), 1);
    }
}
