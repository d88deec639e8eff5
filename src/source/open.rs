//! The one way a file of a source folder is opened for reading (whole files, append mode, content
//! hashes, companions). The folder is untrusted input: a symbolic link is refused unless the source
//! sets `follow_symlinks = true` (and then only to a file inside the folder); only regular files
//! are read; the open never blocks (a FIFO would hang it). The type is checked on the opened
//! descriptor (`fstat`), so a file swapped for something else after it was listed is caught too.
//!
//! A refusal is an `io::Error` carrying a [`Refused`] (see [`refusal`]), so it flows through every
//! reader's I/O error path unchanged and the caller can still tell it from a failing disk.

use crate::config::SourceConfig;
use std::fs::{File, FileType};
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

// Linux open(2) flags, as the kernel headers define them per architecture (no libc crate).
#[cfg(any(target_arch = "aarch64", target_arch = "arm", target_arch = "powerpc", target_arch = "powerpc64"))]
const O_NOFOLLOW: i32 = 0o100000;
#[cfg(not(any(target_arch = "aarch64", target_arch = "arm", target_arch = "powerpc", target_arch = "powerpc64")))]
const O_NOFOLLOW: i32 = 0o400000;
#[cfg(any(target_arch = "mips", target_arch = "mips64"))]
const O_NONBLOCK: i32 = 0o200;
#[cfg(not(any(target_arch = "mips", target_arch = "mips64")))]
const O_NONBLOCK: i32 = 0o4000;
/// What open(2) fails with on a link under `O_NOFOLLOW`.
#[cfg(any(target_arch = "mips", target_arch = "mips64"))]
const ELOOP: i32 = 90;
#[cfg(not(any(target_arch = "mips", target_arch = "mips64")))]
const ELOOP: i32 = 40;

/// Why a file in a source folder is not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("a symbolic link, skipped (the source does not set follow_symlinks = true)")]
    Symlink,
    #[error("a symbolic link to a file outside the source folder, skipped")]
    LinkOutside,
    #[error("a {0}, not a regular file, skipped")]
    NotRegular(&'static str),
}

/// How symbolic links are treated.
#[derive(Debug, Clone, Copy)]
pub enum Links<'a> {
    /// Never read through one.
    Refuse,
    /// Read through one only to a file inside this folder.
    Inside(&'a Path),
}

/// The link rule of `source`.
pub fn links(source: &SourceConfig) -> Links<'_> {
    if source.follow_symlinks {
        Links::Inside(&source.path)
    } else {
        Links::Refuse
    }
}

/// The [`Refused`] inside an error of [`open_regular`], if that is what it is.
pub fn refusal(e: &io::Error) -> Option<Refused> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<Refused>()).copied()
}

fn refused(why: Refused) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, why)
}

/// What a file type is called in a refusal; `None` for a regular file.
pub fn special_kind(t: FileType) -> Option<&'static str> {
    match () {
        _ if t.is_file() => None,
        _ if t.is_dir() => Some("directory"),
        _ if t.is_symlink() => Some("symbolic link"),
        _ if t.is_fifo() => Some("named pipe (FIFO)"),
        _ if t.is_socket() => Some("socket"),
        _ if t.is_block_device() => Some("block device"),
        _ if t.is_char_device() => Some("character device"),
        _ => Some("special file"),
    }
}

fn check_type(t: FileType) -> io::Result<()> {
    match special_kind(t) {
        None => Ok(()),
        Some(_) if t.is_symlink() => Err(refused(Refused::Symlink)),
        Some(kind) => Err(refused(Refused::NotRegular(kind))),
    }
}

/// Open `path` for reading under the folder rules above. Never blocks on a FIFO or device.
pub fn open_regular(path: &Path, links: Links<'_>) -> io::Result<File> {
    // Looked at first so that a device or FIFO is never opened at all (opening some devices has
    // effects); the descriptor is checked again below, which is what closes the race.
    let meta = std::fs::symlink_metadata(path)?;
    let target: PathBuf = if meta.file_type().is_symlink() {
        match links {
            Links::Refuse => return Err(refused(Refused::Symlink)),
            Links::Inside(folder) => {
                let target = std::fs::canonicalize(path)?;
                if !target.starts_with(std::fs::canonicalize(folder)?) {
                    return Err(refused(Refused::LinkOutside));
                }
                target
            }
        }
    } else {
        check_type(meta.file_type())?;
        path.to_path_buf()
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_NOFOLLOW | O_NONBLOCK)
        .open(&target)
        .map_err(|e| if e.raw_os_error() == Some(ELOOP) { refused(Refused::Symlink) } else { e })?;
    check_type(file.metadata()?.file_type())?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn only_regular_files_are_opened_and_links_only_to_inside_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let inside = dir.path().join("in");
        std::fs::create_dir(&inside).unwrap();
        let outside = dir.path().join("secret.csv");
        std::fs::write(&outside, "secret").unwrap();
        std::fs::write(inside.join("a.csv"), "a").unwrap();
        std::os::unix::fs::symlink(&outside, inside.join("out.csv")).unwrap();
        std::os::unix::fs::symlink(inside.join("a.csv"), inside.join("in.csv")).unwrap();
        std::os::unix::fs::symlink(inside.join("gone"), inside.join("dangling.csv")).unwrap();
        let fifo = inside.join("pipe.csv");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let sock = std::os::unix::net::UnixListener::bind(inside.join("s.csv")).unwrap();

        let open = |name: &str, links| {
            open_regular(&inside.join(name), links).map(|mut f| {
                let mut s = String::new();
                f.read_to_string(&mut s).unwrap();
                s
            })
        };
        /// What opening gives: the content, or the refusal (`None`: another error).
        type Opened<'a> = Result<&'a str, Option<Refused>>;
        let cases: [(&str, Links, Opened); 10] = [
            ("a.csv", Links::Refuse, Ok("a")),
            ("a.csv", Links::Inside(&inside), Ok("a")),
            ("out.csv", Links::Refuse, Err(Some(Refused::Symlink))),
            ("out.csv", Links::Inside(&inside), Err(Some(Refused::LinkOutside))),
            ("in.csv", Links::Refuse, Err(Some(Refused::Symlink))),
            ("in.csv", Links::Inside(&inside), Ok("a")),
            ("dangling.csv", Links::Inside(&inside), Err(None)),
            ("pipe.csv", Links::Refuse, Err(Some(Refused::NotRegular("named pipe (FIFO)")))),
            ("s.csv", Links::Refuse, Err(Some(Refused::NotRegular("socket")))),
            (".", Links::Refuse, Err(Some(Refused::NotRegular("directory")))),
        ];
        for (name, links, expected) in cases {
            let got = open(name, links).map_err(|e| refusal(&e));
            assert_eq!(got.as_deref().map_err(|e| *e), expected, "{name}");
        }
        drop(sock);
    }

    #[test]
    fn the_no_follow_flag_is_right_for_this_architecture() {
        // Opened directly, without the look before: the kernel itself must refuse the link.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t"), "x").unwrap();
        std::os::unix::fs::symlink(dir.path().join("t"), dir.path().join("l")).unwrap();
        let e = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(O_NOFOLLOW | O_NONBLOCK)
            .open(dir.path().join("l"))
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(ELOOP), "{e}");
    }
}
