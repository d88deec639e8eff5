//! The companion file of an export split over two files: Toast's `CheckDetails` next to its
//! `ItemSelectionDetails`, Loyverse's `receipts` next to its `receipts-by-item`.
//!
//! This module finds the companion in the folder of the file being read, opens it decoded the same
//! way and finds the columns the profile cannot do without, with a note when it cannot; what to
//! load from it belongs to the profile. Apart from SumUp's refund pass over its own file, this is
//! the only place where a reader touches the file system, and it only reads.

use super::csv_table::Table;
use super::{decode, FormatError, ReadOptions, Reject};
use std::io::Read;
use std::path::{Path, PathBuf};

/// How a profile names its companion.
pub(super) struct Kind<'a> {
    /// What the operator calls the companion (`CheckDetails`), for notes.
    pub what: &'a str,
    /// The part of the primary file's name that, replaced by `companion`, names the companion of
    /// the same export (`ItemSelectionDetails` → `CheckDetails`). Compared ignoring ASCII case.
    pub primary: &'a str,
    pub companion: &'a str,
    /// Whether a (lower-cased) file name is a companion of any export.
    pub matches: fn(&str) -> bool,
}

/// The companion of the file being read: the file named like it with `kind.primary` replaced by
/// `kind.companion`, or else the only companion in the folder. `Err` says why there is none.
pub(super) fn find(options: &ReadOptions, kind: &Kind) -> std::io::Result<Result<PathBuf, String>> {
    let Some((folder, name)) = options.path.as_deref().and_then(split) else {
        return Ok(Err(format!("the file's path is not known, so no {} file was joined", kind.what)));
    };
    let own = name.to_ascii_lowercase();
    let named_alike = alike(&own, kind);
    let mut candidates = Vec::new();
    for entry in std::fs::read_dir(folder)? {
        let entry = entry?;
        let Some(candidate) = entry.file_name().to_str().map(str::to_ascii_lowercase) else {
            continue;
        };
        if candidate == own || !(kind.matches)(&candidate) || !entry.file_type()?.is_file() {
            continue;
        }
        if candidate == named_alike {
            return Ok(Ok(entry.path()));
        }
        candidates.push(entry.path());
    }
    match candidates.len() {
        1 => Ok(Ok(candidates.remove(0))),
        0 => Ok(Err(format!("no {} file next to {name}", kind.what))),
        n => Ok(Err(format!("{n} {} files next to {name} and none of them named like it", kind.what))),
    }
}

/// The file a companion at `path` belongs to: named like it with `kind.companion` replaced by
/// `kind.primary` (`toast-CheckDetails.csv` → `toast-ItemSelectionDetails.csv`, case aside), in
/// the same folder; it need not exist.
pub(super) fn primary_alike(path: &Path, kind: &Kind) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let renamed = match name.to_ascii_lowercase().find(&kind.companion.to_ascii_lowercase()) {
        Some(at) => format!("{}{}{}", &name[..at], kind.primary, &name[at + kind.companion.len()..]),
        None => name,
    };
    path.with_file_name(renamed)
}

/// The lower-cased name of the companion named like the (lower-cased) file `own`.
fn alike(own: &str, kind: &Kind) -> String {
    own.replacen(&kind.primary.to_ascii_lowercase(), &kind.companion.to_ascii_lowercase(), 1)
}

/// The companion named like the file at `path` (`ItemSelectionDetails.csv` →
/// `CheckDetails.csv`, case aside), if there is one: the file that belongs to this export alone,
/// so it is waited for and archived with it. A companion found only because it is the only one in
/// the folder is not.
pub(super) fn named_alike(path: &Path, kind: &Kind) -> Option<PathBuf> {
    let (folder, name) = split(path)?;
    let own = name.to_ascii_lowercase();
    let want = alike(&own, kind);
    if want == own {
        return None;
    }
    // As the POS spells it (`ItemSelectionDetails_x.csv` → `CheckDetails_x.csv`): one stat, no
    // listing of a folder that may hold thousands of waiting exports.
    if let Some(at) = own.find(&kind.primary.to_ascii_lowercase()) {
        let spelt = format!("{}{}{}", &name[..at], kind.companion, &name[at + kind.primary.len()..]);
        let path = folder.join(spelt);
        if path.is_file() {
            return Some(path);
        }
    }
    std::fs::read_dir(folder)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.to_ascii_lowercase() == want) && p.is_file())
}

/// Open a file of the same export (a companion, or the file being read for a second pass) as a
/// table, decoded and delimited as the source says.
pub(super) fn open(path: &Path, options: &ReadOptions) -> Result<Table<impl Read>, FormatError> {
    let file = crate::source::open::open_regular(path, crate::source::open::Links::Refuse)?;
    let input = decode(file, options.encoding)?;
    Table::open(input, options.csv)
}

/// The companion of the file being read, opened, and the positions of the columns `required` of
/// it: its name (for notes), its table and those columns. `None` when there is none to join, with a
/// note saying why and what follows (`without`); only an I/O error fails the read.
pub(super) fn join<const N: usize>(
    options: &ReadOptions,
    kind: &Kind,
    required: [&str; N],
    without: &str,
    notes: &mut Vec<String>,
) -> Result<Option<(String, Table<impl Read>, [usize; N])>, FormatError> {
    let path = match find(options, kind)? {
        Ok(path) => path,
        Err(why) => {
            notes.push(format!("{why}: {without}"));
            return Ok(None);
        }
    };
    let shown = file_name(&path);
    let opened = open(&path, options).and_then(|table| {
        let columns = table.required(required)?;
        Ok((table, columns))
    });
    match opened {
        Ok((table, columns)) => Ok(Some((shown, table, columns))),
        Err(FormatError::Io(e)) => Err(FormatError::Io(e)),
        Err(e) => {
            notes.push(format!("{shown} not joined ({e}): {without}"));
            Ok(None)
        }
    }
}

/// The next row of a companion table; `None` at its end, and also where the rest of it cannot be
/// read (a record over the size cap, a quote never closed): then a note names the companion, the
/// line and what follows (`without`) for the rest, and the file being read goes on. Only an I/O
/// error fails the read.
pub(super) fn next_row<R: Read>(
    table: &mut Table<R>,
    shown: &str,
    without: &str,
    notes: &mut Vec<String>,
) -> Result<Option<Result<super::csv_table::Row, Reject>>, FormatError> {
    match table.next_row() {
        Err(FormatError::Unreadable { line, reason }) => {
            notes.push(format!("{shown}: unreadable from line {line} on ({reason}): {without} for the rest"));
            Ok(None)
        }
        other => other,
    }
}

/// The rows of a companion that could not be read: how many, and the first one's reject.
#[derive(Default)]
pub(super) struct Unread(Option<(usize, Reject)>);

impl Unread {
    /// `read`'s value, or `None` with its reject counted.
    pub fn count<T>(&mut self, read: Result<T, Reject>) -> Option<T> {
        read.map_err(|reject| self.0.get_or_insert((0, reject)).0 += 1).ok()
    }

    /// How many rows were not read and the first one's reject, if any was not.
    pub fn first(self) -> Option<(usize, Reject)> {
        self.0
    }
}

/// A file's name as shown in notes.
pub(super) fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into())
}

fn split(path: &Path) -> Option<(&Path, &str)> {
    Some((path.parent()?, path.file_name()?.to_str()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHECKS: Kind = Kind {
        what: "CheckDetails",
        primary: "ItemSelectionDetails",
        companion: "CheckDetails",
        matches: |name| name.contains("checkdetails"),
    };

    fn found(files: &[&str], reading: &str) -> Result<String, String> {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            std::fs::write(dir.path().join(f), "a\n").unwrap();
        }
        let options = ReadOptions { path: Some(dir.path().join(reading)), ..ReadOptions::default() };
        find(&options, &CHECKS).unwrap().map(|p| file_name(&p))
    }

    #[test]
    fn the_companion_named_alike_wins_then_the_only_one() {
        let cases: &[(&[&str], &str, Result<&str, &str>)] = &[
            (
                &["a-ItemSelectionDetails.csv", "a-CheckDetails.csv", "b-CheckDetails.csv"],
                "a-ItemSelectionDetails.csv",
                Ok("a-CheckDetails.csv"),
            ),
            (&["ItemSelectionDetails.csv", "checkdetails.csv"], "ItemSelectionDetails.csv", Ok("checkdetails.csv")),
            (
                &["x-ItemSelectionDetails.csv", "CheckDetails-old.csv"],
                "x-ItemSelectionDetails.csv",
                Ok("CheckDetails-old.csv"),
            ),
            (
                &["x-ItemSelectionDetails.csv", "OrderDetails.csv"],
                "x-ItemSelectionDetails.csv",
                Err("no CheckDetails file next to x-ItemSelectionDetails.csv"),
            ),
            (
                &["x-ItemSelectionDetails.csv", "a-CheckDetails.csv", "b-CheckDetails.csv"],
                "x-ItemSelectionDetails.csv",
                Err("2 CheckDetails files next to x-ItemSelectionDetails.csv and none of them named like it"),
            ),
        ];
        for (files, reading, expected) in cases {
            let expected = expected.map(str::to_string).map_err(str::to_string);
            assert_eq!(found(files, reading), expected, "{files:?}");
        }
    }

    #[test]
    fn without_a_path_there_is_no_companion() {
        let err = find(&ReadOptions::default(), &CHECKS).unwrap().unwrap_err();
        assert!(err.contains("path is not known"), "{err}");
    }
}
