//! Configuration: the TOML file as written ([`RawConfig`], `deny_unknown_fields`), and the validated
//! [`Config`] the rest of the program uses. [`validate`] is a pure function of the raw file and a
//! [`Context`] (where the file is, what the environment says); it reports every problem at once,
//! each naming its key and line.
//!
//! The access token is never part of the config file's plain text unless the user insists
//! (`access_token`, warned); it is loaded by [`load_token`] when needed and carried as a [`Token`],
//! whose `Debug` and `Display` are redacted.
//!
//! Parts: `raw` (the serde structs), `validate` (top level and `[sender]`), `source` (each
//! `[[source]]`), `defaults` (every default and bound), `token`, `url` (hosts and
//! [`redact_url`]), `describe` (`check-config`), `folders` (the sources' folders on disk, looked
//! at by [`load`] only).

pub mod defaults;
mod describe;
mod folders;
mod raw;
mod source;
#[cfg(test)]
pub(crate) mod test_support;
mod token;
mod url;
mod validate;

pub use defaults::{parse_cli_timeout, DEFAULT_API_BASE, MAX_CLI_TIMEOUT};
pub use describe::describe;
pub use raw::{RawConfig, RawSender, RawSource};
pub use source::check_done_marker;
pub use token::{load_token, Token, TokenError, TokenSource};
pub use url::{redact_in, redact_url};
pub use validate::validate;

use crate::event::SourceDefaults;
use crate::format::{Format, Policy};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How log lines look (`log_format`): tracing's plain lines, or one JSON object per line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// The value as the config spells it.
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }

    /// The format spelt `word`, as the config spells it.
    pub fn parse(word: &str) -> Option<LogFormat> {
        defaults::LOG_FORMATS.iter().find(|(w, _)| *w == word).map(|(_, f)| *f)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterIngest {
    Archive,
    Delete,
    Keep,
}

impl AfterIngest {
    /// The value as the config spells it (`after_ingest = "archive"`).
    pub fn name(self) -> &'static str {
        match self {
            AfterIngest::Archive => "archive",
            AfterIngest::Delete => "delete",
            AfterIngest::Keep => "keep",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SenderConfig {
    pub batch_size: usize,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// The backoff cap after throttling (longer than `backoff_max`, for server and network errors).
    pub throttle_backoff_max: Duration,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub auth_retry: Duration,
    pub recovery_probe: Duration,
    pub recovery_jitter: Duration,
    pub sent_retention: Duration,
}

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub name: String,
    pub path: PathBuf,
    pub format: Format,
    pub extensions: Vec<String>,
    /// CSV delimiter and quoting.
    pub csv: crate::format::Dialect,
    pub defaults: SourceDefaults,
    pub after_ingest: AfterIngest,
    pub archive_dir: PathBuf,
    /// `archive_keep_days`: how long archived files are kept (by modification time); `None` for
    /// the default, [`SourceConfig::archive_keep`].
    pub archive_keep_days: Option<u64>,
    pub settle: Duration,
    pub rescan: Duration,
    /// Rescan interval for a folder on a network file system (inotify sees nothing there).
    pub network_poll: Duration,
    /// Native CSV: our field name → the export's column name.
    pub columns: BTreeMap<String, String>,
    /// A configured legacy encoding; `None` means UTF-8/UTF-16, with Windows-1252 as the fallback
    /// for files that are not valid UTF-8.
    pub encoding: Option<&'static encoding_rs::Encoding>,
    pub policy: Policy,
    /// Which built events are sent: `zero_value`, `require_match_key`.
    pub screen: crate::event::screen::Screen,
    /// Append mode: each file is one growing file (a day file), read part by part as it grows and
    /// never archived, deleted or quarantined (see `crate::append`).
    pub append: bool,
    /// In append mode, how long a file must be unchanged before its last record is taken too.
    pub append_idle: Duration,
    /// The name of the file the POS writes beside an export once the export is complete
    /// (`{name}.done`, `{stem}.ok`): when set, a file is taken only once its marker exists.
    pub done_marker: Option<String>,
    /// Whether a symbolic link in the folder is read (only when its target is inside the folder).
    pub follow_symlinks: bool,
    /// `expect_files_within`: a source with no new file for longer is a warning in `status` and
    /// the metrics.
    pub expect_files_within: Option<Duration>,
    /// The config line of `path`, for messages that say where to fix it (`None` when parsed
    /// from text without a file).
    pub path_line: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub event_source_id: String,
    pub token: Option<TokenSource>,
    pub api_base: String,
    pub proxy: Option<String>,
    pub queue_path: PathBuf,
    pub test_event_code: Option<String>,
    pub dry_run: bool,
    pub dry_run_output: Option<PathBuf>,
    pub attribution_window: Duration,
    pub future_tolerance: Duration,
    pub sender: SenderConfig,
    pub sources: Vec<SourceConfig>,
    /// Cap on the queue database's size; ingest holds files back (they wait in their folder) above
    /// 90 % of it, and SQLite refuses to grow past it.
    pub max_queue_bytes: u64,
    /// Prometheus textfile for node_exporter's textfile collector (opt-in).
    pub metrics_textfile: Option<PathBuf>,
    /// Extra CA certificates (PEM) trusted besides the built-in roots (TLS-inspecting proxies).
    pub ca_bundle: Option<PathBuf>,
    /// How log lines look; `$OFFLINE_EVENTS_AGENT_LOG_FORMAT` wins over it (see `crate::logging`).
    pub log_format: LogFormat,
    /// Things that are allowed but deserve a word in the log (an inline token, plain http).
    pub warnings: Vec<String>,
}

impl SourceConfig {
    /// How long archived files are kept: `archive_keep_days`, or by default the attribution
    /// `window` and a margin (archived files are the queue's redo log for that long).
    pub fn archive_keep(&self, window: Duration) -> Duration {
        let day = Duration::from_secs(86_400);
        match self.archive_keep_days {
            Some(days) => day * days as u32,
            None => window + day * defaults::ARCHIVE_KEEP_MARGIN_DAYS as u32,
        }
    }
}

/// What validation needs to know besides the file.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// Directory of the config file: relative paths are resolved against it.
    pub config_dir: PathBuf,
    /// `$STATE_DIRECTORY` (set by systemd's `StateDirectory=`).
    pub state_directory: Option<PathBuf>,
    /// The per-user data directory from `directories`, used when not run as a service.
    pub user_data_dir: Option<PathBuf>,
}

/// The package's config (`/etc/offline-events-agent/config.toml`) belongs to the service, whose
/// queue is in its `StateDirectory=`: a command run by hand (`sudo offline-events-agent status`) with
/// that config must look at the service's queue, not at one in the caller's home directory.
fn package_state_dir(config_dir: &Path) -> Option<PathBuf> {
    (config_dir == Path::new(PACKAGE_CONFIG_DIR)).then(|| PathBuf::from(PACKAGE_STATE_DIR))
}

/// Where the .deb/.rpm put the config, and the unit's `StateDirectory=`.
const PACKAGE_CONFIG_DIR: &str = "/etc/offline-events-agent";
const PACKAGE_STATE_DIR: &str = "/var/lib/offline-events-agent";

impl Context {
    pub fn from_env(config_path: &Path) -> Context {
        let config_dir = config_path.parent().map(Path::to_path_buf).unwrap_or_default();
        let config_dir = if config_dir.as_os_str().is_empty() { PathBuf::from(".") } else { config_dir };
        let state_directory = std::env::var_os("STATE_DIRECTORY")
            .map(|v| PathBuf::from(v.to_string_lossy().split(':').next().unwrap_or_default().to_string()))
            .or_else(|| package_state_dir(&config_dir));
        Context {
            config_dir,
            state_directory,
            user_data_dir: directories::ProjectDirs::from("", "", "offline-events-agent")
                .map(|d| d.data_dir().to_path_buf()),
        }
    }
}

/// One problem with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: `{}`: {}", self.key, self.message),
            None => write!(f, "`{}`: {}", self.key, self.message),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config {path}:\n{}", errors.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Invalid { path: PathBuf, errors: Vec<ConfigError> },
}

/// Read, parse and validate a config file, then look at its folders on disk
/// ([`folders::check`]: a source path that is a file is an error, a missing one a warning).
pub fn load(path: &Path) -> Result<Config, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read { path: path.to_path_buf(), source })?;
    let invalid = |errors| LoadError::Invalid { path: path.to_path_buf(), errors };
    let raw = parse_raw(&text).map_err(invalid)?;
    let path_lines: Vec<Option<usize>> = raw.source.iter().map(|s| Some(line_of(&text, s.path.span().start))).collect();
    let mut config = validate(raw, &text, &Context::from_env(path)).map_err(invalid)?;
    for (source, line) in config.sources.iter_mut().zip(&path_lines) {
        source.path_line = *line;
    }
    let (errors, warnings) = folders::check(&config, &path_lines);
    if !errors.is_empty() {
        return Err(invalid(errors));
    }
    config.warnings.extend(warnings);
    Ok(config)
}

/// Where the queue of the config at `path` is, read leniently for `status` when the config does
/// not load: its `queue_path` (and `dry_run`, `test_event_code`) if the TOML parses that far, else the default
/// location. `None` when there is no default either.
pub fn queue_path_leniently(path: &Path) -> Option<PathBuf> {
    /// Only the two keys; every other key (known, unknown or mistyped) is ignored.
    #[derive(Default, serde::Deserialize)]
    struct Lenient {
        queue_path: Option<PathBuf>,
        dry_run: Option<bool>,
        test_event_code: Option<String>,
    }
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lenient: Lenient = toml::from_str(&text).unwrap_or_default();
    let mut findings = validate::Findings::new(&text);
    let found = validate::queue_path(
        lenient.queue_path.as_deref(),
        lenient.dry_run.unwrap_or(false),
        lenient.test_event_code.is_some_and(|c| !c.trim().is_empty()),
        &Context::from_env(path),
        &mut findings,
    );
    (!found.as_os_str().is_empty()).then_some(found)
}

/// Parse and validate config text (nothing on disk is looked at).
pub fn parse(text: &str, ctx: &Context) -> Result<Config, Vec<ConfigError>> {
    validate(parse_raw(text)?, text, ctx)
}

/// The TOML as written, or its one syntax or type error with its line.
fn parse_raw(text: &str) -> Result<RawConfig, Vec<ConfigError>> {
    toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start));
        let message = e.message().trim().to_string();
        vec![ConfigError { key: key_of_parse_error(&message), line, message }]
    })
}

fn key_of_parse_error(message: &str) -> String {
    message.split('`').nth(1).map(str::to_string).unwrap_or_else(|| "(file)".to_string())
}

pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

/// Command-line settings that win over the config file, re-applied on every reload.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub test_event_code: Option<String>,
    pub dry_run: bool,
}

impl Overrides {
    pub fn apply(&self, config: &mut Config) {
        if self.dry_run && !config.dry_run {
            config.dry_run = true;
            config.queue_path = dry_run_queue(&config.queue_path);
        }
        if let Some(code) = &self.test_event_code {
            if !config.test_session() && !config.dry_run {
                config.queue_path = test_queue(&config.queue_path);
            }
            config.test_event_code = Some(code.clone());
        }
    }
}

/// A dry run never touches the real queue: `queue.sqlite` becomes `queue.dry-run.sqlite`.
pub fn dry_run_queue(path: &Path) -> PathBuf {
    beside(path, "dry-run")
}

/// A test session (`test_event_code`) never touches the real queue either: its events are sent as
/// test events, which TikTok does not count, so they must not count as sent for real.
/// `queue.sqlite` becomes `queue.test.sqlite`.
pub fn test_queue(path: &Path) -> PathBuf {
    beside(path, "test")
}

/// `queue.sqlite` with `.{tag}` before its extension.
fn beside(path: &Path, tag: &str) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "queue".into());
    let name = match path.extension() {
        Some(ext) => format!("{stem}.{tag}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{tag}"),
    };
    path.with_file_name(name)
}

impl Config {
    /// A test session: every event goes out with `test_event_code`, from a queue of its own.
    pub fn test_session(&self) -> bool {
        self.test_event_code.is_some()
    }

    /// Whether export files are archived, deleted or quarantined once ingested: never in a dry run
    /// or a test session, whose queues are not the real one (the files stay for the real run).
    pub fn disposes_files(&self) -> bool {
        !self.dry_run && !self.test_session()
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{ctx, errors, MINIMAL};
    use super::*;

    #[test]
    fn a_minimal_config_gets_defaults() {
        let c = parse(MINIMAL, &ctx()).unwrap();
        assert_eq!(c.token, Some(TokenSource::File(PathBuf::from("/etc/oea/token"))));
        assert_eq!(c.queue_path, PathBuf::from("/home/u/.local/share/oea/queue.sqlite"));
        assert_eq!(c.api_base, DEFAULT_API_BASE);
        assert_eq!(c.sender.batch_size, 1000);
        assert_eq!(c.sources[0].archive_dir, PathBuf::from("/srv/pos/archive"));
        assert_eq!(c.sources[0].after_ingest, AfterIngest::Archive);
        assert_eq!(c.attribution_window, Duration::from_secs(28 * 86_400));
    }

    #[test]
    fn only_the_package_config_points_at_the_service_state_directory() {
        for (dir, expected) in [
            ("/etc/offline-events-agent", Some("/var/lib/offline-events-agent")),
            ("/etc/offline-events-agent/", Some("/var/lib/offline-events-agent")),
            ("/etc", None),
            ("/home/u/offline-events-agent", None),
            ("/etc/offline-events-agent/sub", None),
        ] {
            assert_eq!(package_state_dir(Path::new(dir)), expected.map(PathBuf::from), "{dir}");
        }
    }

    #[test]
    fn state_directory_wins_over_user_dirs_and_dry_run_uses_its_own_queue() {
        let mut ctx = ctx();
        ctx.state_directory = Some(PathBuf::from("/var/lib/oea"));
        let c = parse(MINIMAL, &ctx).unwrap();
        assert_eq!(c.queue_path, PathBuf::from("/var/lib/oea/queue.sqlite"));
        let c = parse(&format!("dry_run = true\n{MINIMAL}"), &ctx).unwrap();
        assert_eq!(c.queue_path, PathBuf::from("/var/lib/oea/queue.dry-run.sqlite"));
    }

    #[test]
    fn a_test_session_uses_its_own_queue_and_never_moves_files() {
        let mut ctx = ctx();
        ctx.state_directory = Some(PathBuf::from("/var/lib/oea"));
        let real = parse(MINIMAL, &ctx).unwrap();
        assert!(real.disposes_files() && !real.test_session());
        let cases = [
            // (config line, --test-event-code, --dry-run, queue file)
            ("test_event_code = \"TEST1\"\n", None, false, "queue.test.sqlite"),
            ("", Some("TEST2"), false, "queue.test.sqlite"),
            ("test_event_code = \"TEST1\"\n", Some("TEST2"), false, "queue.test.sqlite"),
            ("", Some("TEST2"), true, "queue.dry-run.sqlite"),
            ("dry_run = true\n", Some("TEST2"), false, "queue.dry-run.sqlite"),
            ("test_event_code = \" \"\n", None, false, "queue.sqlite"),
        ];
        for (line, code, dry_run, file) in cases {
            let mut c = parse(&format!("{line}{MINIMAL}"), &ctx).unwrap();
            Overrides { test_event_code: code.map(str::to_string), dry_run }.apply(&mut c);
            assert_eq!(c.queue_path, PathBuf::from("/var/lib/oea").join(file), "{line:?} {code:?} {dry_run}");
            assert_eq!(c.disposes_files(), file == "queue.sqlite", "{line:?} {code:?} {dry_run}");
        }
    }

    #[test]
    fn errors_name_key_and_line() {
        let bad = MINIMAL
            .replace("\"America/New_York\"", "\"Mars/Olympus\"")
            .replace("\"USD\"", "\"XXX\"")
            .replace("\"7181537436256731137\"", "\"abc\"");
        assert_eq!(
            errors(&bad),
            vec![
                ("event_source_id".to_string(), Some(2)),
                ("source[0].time_zone".to_string(), Some(8)),
                ("source[0].currency".to_string(), Some(9)),
            ]
        );
    }

    #[test]
    fn the_queue_path_is_found_in_a_config_that_does_not_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "colour = 1\nqueue_path = \"state/q.sqlite\"\n[[source]]\npath = 3\n").unwrap();
        assert_eq!(queue_path_leniently(&path), Some(dir.path().join("state/q.sqlite")));
        std::fs::write(&path, "queue_path = \"q.sqlite\"\ndry_run = true\n").unwrap();
        assert_eq!(queue_path_leniently(&path), Some(dir.path().join("q.dry-run.sqlite")));
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_errors() {
        let e = errors(&format!("colour = \"red\"\n{MINIMAL}"));
        assert_eq!(e, vec![("colour".to_string(), Some(1))]);
        let e = errors(&MINIMAL.replace("format = \"native-csv\"", "format = \"native-csv\"\nsettle = 3"));
        assert_eq!(e[0].0, "settle");
        let text = format!("{MINIMAL}\n[sender]\nbatch_size = 5000\n");
        let line = text.lines().count();
        assert_eq!(errors(&text)[0], ("sender.batch_size".to_string(), Some(line)));
    }
}
