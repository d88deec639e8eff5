//! The configured folders against the disk, at the edge of loading: [`look`] (I/O) finds what each
//! source's path and the queue's folder are, [`judge`] (pure) decides what is wrong. A source path
//! that is a file is an error; a missing one only a warning (a share not mounted yet may appear
//! later, and the service takes its files from then on); folders that are one through a link are
//! caught here, as `validate` compares paths only as written.

use super::source::lexical;
use super::{Config, ConfigError};
use std::path::{Path, PathBuf};

/// What a configured path is on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum OnDisk {
    /// A folder, with its canonical path (links resolved).
    Folder(PathBuf),
    /// Something that is not a folder (a regular file, a device...).
    NotFolder,
    Missing,
    /// It could not be looked at (permission denied...), with the reason.
    Unknown(String),
}

/// One source's path as configured and as found.
#[derive(Debug)]
pub(super) struct Looked<'a> {
    pub key: String,
    pub line: Option<usize>,
    pub path: &'a Path,
    pub on_disk: OnDisk,
}

/// What `path` is on disk (links followed).
pub(super) fn look(path: &Path) -> OnDisk {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => OnDisk::Folder(std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())),
        Ok(_) => OnDisk::NotFolder,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => OnDisk::Missing,
        Err(e) => OnDisk::Unknown(e.to_string()),
    }
}

/// Each source's path looked at, and the queue's folder (canonical, when it exists). `path_lines`
/// are the lines of the sources' `path` keys, in order.
pub(super) fn check(config: &Config, path_lines: &[Option<usize>]) -> (Vec<ConfigError>, Vec<String>) {
    let looked: Vec<Looked> = config
        .sources
        .iter()
        .enumerate()
        .map(|(i, s)| Looked {
            key: format!("source[{i}].path"),
            line: path_lines.get(i).copied().flatten(),
            path: &s.path,
            on_disk: look(&s.path),
        })
        .collect();
    let queue_dir = config.queue_path.parent().and_then(|d| match look(d) {
        OnDisk::Folder(canonical) => Some(canonical),
        _ => None,
    });
    judge(&looked, queue_dir.as_deref())
}

/// Errors and warnings for the looked-at source paths; `queue_dir` is the queue's folder, canonical.
/// Two folders or a folder and the queue's that are the same only through a link are reported
/// here (as written, `validate` has already refused them).
pub(super) fn judge(looked: &[Looked], queue_dir: Option<&Path>) -> (Vec<ConfigError>, Vec<String>) {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut error = |l: &Looked, message: String| {
        errors.push(ConfigError { key: l.key.clone(), line: l.line, message });
    };
    for (i, l) in looked.iter().enumerate() {
        let shown = l.path.display();
        match &l.on_disk {
            OnDisk::NotFolder => {
                error(l, format!("`{shown}` is not a folder; set path to the folder the POS exports into"))
            }
            OnDisk::Missing => warnings.push(format!(
                "{}: folder `{shown}` does not exist (yet); its files are taken once it appears (a share not mounted yet?), else create it or fix path",
                l.key
            )),
            OnDisk::Unknown(why) => warnings.push(format!(
                "{}: cannot look at `{shown}` ({why}); the service's user must be able to read the folder",
                l.key
            )),
            OnDisk::Folder(canonical) => {
                let twin = looked[..i].iter().find(|o| {
                    o.on_disk == OnDisk::Folder(canonical.clone()) && lexical(o.path) != lexical(l.path)
                });
                if let Some(twin) = twin {
                    error(
                        l,
                        format!(
                            "`{shown}` is the same folder as {} (`{}`, through a link); give each source its own folder",
                            twin.key,
                            twin.path.display()
                        ),
                    );
                }
                if let Some(queue_dir) = queue_dir.filter(|q| canonical == q) {
                    error(
                        l,
                        format!(
                            "`{shown}` is the queue's folder `{}` (through a link); keep exports and the queue apart",
                            queue_dir.display()
                        ),
                    );
                }
            }
        }
    }
    (errors, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn looked<'a>(i: usize, path: &'a str, on_disk: OnDisk) -> Looked<'a> {
        Looked { key: format!("source[{i}].path"), line: Some(i + 1), path: Path::new(path), on_disk }
    }

    fn folder(p: &str) -> OnDisk {
        OnDisk::Folder(PathBuf::from(p))
    }

    #[test]
    fn each_path_is_judged_by_what_it_is_on_disk() {
        // (what is there, error, warning, words of the message)
        let cases = [
            (folder("/srv/pos"), false, false, ""),
            (OnDisk::NotFolder, true, false, "is not a folder; set path"),
            (OnDisk::Missing, false, true, "does not exist (yet)"),
            (OnDisk::Unknown("permission denied".into()), false, true, "permission denied"),
        ];
        for (on_disk, error, warned, words) in cases {
            let (errors, warnings) = judge(&[looked(0, "/srv/pos", on_disk.clone())], None);
            assert_eq!((errors.len(), warnings.len()), (usize::from(error), usize::from(warned)), "{on_disk:?}");
            let said = format!("{errors:?}{warnings:?}");
            if !words.is_empty() {
                assert!(said.contains(words) && said.contains("source[0].path"), "{said}");
            }
        }
    }

    #[test]
    fn folders_that_are_one_through_a_link_are_refused() {
        // (second source's path, what it resolves to, queue folder, errors)
        let cases = [
            ("/srv/b", folder("/srv/b"), None, 0),
            ("/srv/link", folder("/srv/a"), None, 1),
            // The same path as written: validate already said so.
            ("/srv/./a", folder("/srv/a"), None, 0),
            ("/srv/b", folder("/var/lib/oea"), Some("/var/lib/oea"), 1),
            ("/srv/b", folder("/var/lib/oea/in"), Some("/var/lib/oea"), 0),
            ("/srv/b", folder("/var/lib/oeax"), Some("/var/lib/oea"), 0),
            ("/var/lib/oea/in", OnDisk::Missing, Some("/var/lib/oea"), 0),
        ];
        for (path, on_disk, queue, expected) in cases {
            let both = [looked(0, "/srv/a", folder("/srv/a")), looked(1, path, on_disk.clone())];
            let (errors, _) = judge(&both, queue.map(Path::new));
            assert_eq!(errors.len(), expected, "{path} {on_disk:?} {queue:?}: {errors:?}");
            assert!(errors.iter().all(|e| e.key == "source[1].path" && e.line == Some(2)), "{errors:?}");
        }
    }
}
