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
    if value.is_empty() {
        return Err(TokenError::Empty(origin));
    }
    Ok(Token::new(value))
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
