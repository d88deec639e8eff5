//! The access token: where it comes from ([`TokenSource`]), the secret itself ([`Token`], whose
//! `Debug` and `Display` are redacted) and [`load_token`], the only code that reads it.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where the access token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    File(PathBuf),
    Credential(String),
    Env(String),
    /// Written in the config file itself (warned about).
    Inline(Token),
}

impl TokenSource {
    /// The file the token is read from: the token file, or the credential in
    /// `$CREDENTIALS_DIRECTORY` (None when that is not set); None for an environment variable or a
    /// token written in the config. Where a fixed token must be written (`status` says so while
    /// paused on the token), and what the sender watches to try again at once.
    pub fn path(&self) -> Option<PathBuf> {
        match self {
            TokenSource::File(path) => Some(path.clone()),
            TokenSource::Credential(name) => {
                std::env::var_os("CREDENTIALS_DIRECTORY").map(|dir| Path::new(&dir).join(name))
            }
            TokenSource::Env(_) | TokenSource::Inline(_) => None,
        }
    }
}

/// The access token. Never printed: `Debug` and `Display` show `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(value: String) -> Token {
        Token(value)
    }

    /// The secret itself, for the `Access-Token` header and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read access token file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("access token file {0} is readable by every user (mode {1:o}); run: chmod 600 {0}")]
    WorldReadable(PathBuf, u32),
    #[error("systemd credential `{0}` not found: $CREDENTIALS_DIRECTORY is not set (add LoadCredential= to the unit)")]
    NoCredentialsDirectory(String),
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    #[error("the access token from {0} is empty")]
    Empty(String),
    /// A CR/LF (a second line), tab or other control character: never valid in an HTTP header.
    #[error("the access token from {origin} contains a control character ({what}); it must be one line of printable characters")]
    ControlCharacter { origin: String, what: String },
    #[error("no access token configured")]
    None,
}

/// Load the token from where the config says it is. Re-read on every use, so a fixed token file
/// takes effect without a restart.
pub fn load_token(source: Option<&TokenSource>) -> Result<Token, TokenError> {
    let read_file = |path: &Path| -> Result<String, TokenError> {
        let meta = std::fs::metadata(path).map_err(|source| TokenError::Read { path: path.to_path_buf(), source })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o004 != 0 {
                return Err(TokenError::WorldReadable(path.to_path_buf(), mode));
            }
        }
        #[cfg(not(unix))]
        let _ = meta;
        std::fs::read_to_string(path).map_err(|source| TokenError::Read { path: path.to_path_buf(), source })
    };
    let (value, origin) = match source {
        None => return Err(TokenError::None),
        Some(TokenSource::File(path)) => (read_file(path)?, path.display().to_string()),
        Some(TokenSource::Credential(name)) => {
            let dir = std::env::var_os("CREDENTIALS_DIRECTORY")
                .ok_or_else(|| TokenError::NoCredentialsDirectory(name.clone()))?;
            let path = Path::new(&dir).join(name);
            (read_file(&path)?, format!("credential {name}"))
        }
        Some(TokenSource::Env(var)) => {
            (std::env::var(var).map_err(|_| TokenError::EnvMissing(var.clone()))?, format!("${var}"))
        }
        Some(TokenSource::Inline(token)) => (token.expose().to_string(), "the config file".into()),
    };
    let value = value.trim().to_string();
    match token_problem(&value) {
        None => Ok(Token::new(value)),
        Some(TokenProblem::Empty) => Err(TokenError::Empty(origin)),
        Some(TokenProblem::ControlCharacter(what)) => Err(TokenError::ControlCharacter { origin, what }),
    }
}

/// What makes a (trimmed) token unusable, described without quoting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TokenProblem {
    Empty,
    /// The first control character, named (`CR`, `LF`, `TAB`, `U+0007`) with its position.
    ControlCharacter(String),
}

/// Whether `token` can go into the `Access-Token` header: not empty, no control characters.
pub(super) fn token_problem(token: &str) -> Option<TokenProblem> {
    if token.is_empty() {
        return Some(TokenProblem::Empty);
    }
    let (i, c) = token.chars().enumerate().find(|(_, c)| c.is_control())?;
    let name = match c {
        '\r' => "CR".to_string(),
        '\n' => "LF".to_string(),
        '\t' => "TAB".to_string(),
        c => format!("U+{:04X}", u32::from(c)),
    };
    Some(TokenProblem::ControlCharacter(format!("{name} at character {}", i + 1)))
}

impl fmt::Display for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::File(p) => write!(f, "file {}", p.display()),
            TokenSource::Credential(n) => write!(f, "systemd credential {n}"),
            TokenSource::Env(v) => write!(f, "environment variable {v}"),
            TokenSource::Inline(_) => write!(f, "inline in the config file (<redacted>)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_one_line_of_printable_characters() {
        let control = |s: &str| Some(TokenProblem::ControlCharacter(s.to_string()));
        let cases = [
            ("abc123", None),
            ("with space", None),
            ("", Some(TokenProblem::Empty)),
            ("abc\r\ndef", control("CR at character 4")),
            ("abc\ndef", control("LF at character 4")),
            ("a\tb", control("TAB at character 2")),
            ("a\u{7}b", control("U+0007 at character 2")),
            ("a\u{7f}", control("U+007F at character 2")),
            ("é\u{85}", control("U+0085 at character 2")),
        ];
        for (token, problem) in cases {
            assert_eq!(token_problem(token), problem, "{token:?}");
        }
    }

    #[test]
    fn a_token_file_with_a_second_line_is_refused_without_quoting_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cr3tA\r\ns3cr3tB\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let e = load_token(Some(&TokenSource::File(path.clone()))).unwrap_err().to_string();
        assert!(e.contains(&path.display().to_string()) && e.contains("control character (CR"), "{e}");
        assert!(!e.contains("s3cr3t"), "{e}");
        std::fs::write(&path, "abc\n").unwrap();
        assert_eq!(load_token(Some(&TokenSource::File(path))).unwrap().expose(), "abc");
    }
}
