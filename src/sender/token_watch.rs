//! A token fix without waiting: the send loop marks the token file's [`Stamp`] before each step
//! and, while sending is paused, looks at it again on a short timer; a new stamp (the file written,
//! replaced, created, removed or its mode changed) means "try again now" instead of after
//! `auth_retry_secs`. One `stat` per look; the token itself is read only by
//! [`crate::config::load_token`], never here.

use crate::config::TokenSource;
use std::path::PathBuf;

/// What a `stat` says about the token file: any change of it is a change of the stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    inode: u64,
    len: u64,
    mode: u32,
    modified: (i64, i64),
    changed: (i64, i64),
}

impl Stamp {
    /// The stamp of `path`, or None when there is no file there (or it cannot be looked at).
    pub fn of(path: &std::path::Path) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt as _;
        let m = std::fs::metadata(path).ok()?;
        Some(Stamp {
            dev: m.dev(),
            inode: m.ino(),
            len: m.len(),
            mode: m.mode(),
            modified: (m.mtime(), m.mtime_nsec()),
            changed: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// The token file of one config and its stamp when last marked.
#[derive(Debug, Clone)]
pub struct TokenWatch {
    path: Option<PathBuf>,
    seen: Option<Stamp>,
}

impl TokenWatch {
    /// Watch where `source` reads the token from; nothing to watch for an environment variable or
    /// a token written in the config (they change only with a restart or reload).
    pub fn new(source: Option<&TokenSource>) -> TokenWatch {
        TokenWatch { path: source.and_then(TokenSource::path), seen: None }
    }

    /// Take the file as it is now as the one the next step reads.
    pub fn mark(&mut self) {
        self.seen = self.path.as_deref().and_then(Stamp::of);
    }

    /// Whether the file changed since [`TokenWatch::mark`] (always false with nothing to watch).
    pub fn changed(&self) -> bool {
        self.path.as_deref().is_some_and(|p| Stamp::of(p) != self.seen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn a_written_replaced_chmodded_or_removed_token_file_is_a_change() {
        let dir = std::env::temp_dir().join(format!("oea-tw-{}-{}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        let mut watch = TokenWatch::new(Some(&TokenSource::File(path.clone())));
        watch.mark();
        assert!(!watch.changed(), "no file, still no file");
        let steps: [(&str, &dyn Fn()); 4] = [
            ("created", &|| std::fs::write(&path, "bad\n").unwrap()),
            ("rewritten", &|| std::fs::write(&path, "a-longer-good-token\n").unwrap()),
            ("chmodded", &|| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap()),
            ("replaced", &|| {
                std::fs::write(dir.join("new"), "a-longer-good-token\n").unwrap();
                std::fs::rename(dir.join("new"), &path).unwrap();
            }),
        ];
        for (what, change) in steps {
            change();
            assert!(watch.changed(), "{what}");
            watch.mark();
            assert!(!watch.changed(), "{what}, then marked");
        }
        std::fs::remove_file(&path).unwrap();
        assert!(watch.changed(), "removed");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_environment_or_inline_token_has_nothing_to_watch() {
        for source in [TokenSource::Env("OEA_TOKEN".into()), TokenSource::Inline(crate::config::Token::new("t".into()))]
        {
            let mut watch = TokenWatch::new(Some(&source));
            watch.mark();
            assert!(!watch.changed());
        }
        assert!(!TokenWatch::new(None).changed());
    }
}
