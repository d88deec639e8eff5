//! Configuration: the TOML file as written ([`RawConfig`], `deny_unknown_fields`), and the validated
//! [`Config`] the rest of the program uses. [`validate`] is a pure function of the raw file and a
//! [`Context`] (where the file is, what the environment says); it reports every problem at once,
//! each naming its key and line.
//!
//! The access token is never part of the config file's plain text unless the user insists
//! (`access_token`, warned); it is loaded by [`load_token`] when needed and carried as a [`Token`],
//! whose `Debug` and `Display` are redacted.

use crate::event::money::Currency;
use crate::event::name::NameTable;
use crate::event::{pii, SourceDefaults};
use crate::format::{ConsentPolicy, DateOnly, Format, PartialRefunds, Policy, Quoting};
use jiff::tz::TimeZone;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

pub const DEFAULT_API_BASE: &str = "https://business-api.tiktok.com";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub event_source_id: Spanned<String>,
    pub access_token_file: Option<Spanned<PathBuf>>,
    pub access_token_credential: Option<Spanned<String>>,
    pub access_token_env: Option<Spanned<String>>,
    pub access_token: Option<Spanned<String>>,
    pub api_base: Option<Spanned<String>>,
    pub proxy: Option<Spanned<String>>,
    pub queue_path: Option<PathBuf>,
    pub test_event_code: Option<Spanned<String>>,
    #[serde(default)]
    pub dry_run: bool,
    pub dry_run_output: Option<PathBuf>,
    pub phone_region: Option<Spanned<String>>,
    pub attribution_window_days: Option<Spanned<u32>>,
    pub future_tolerance_minutes: Option<u32>,
    pub max_queue_mb: Option<Spanned<u64>>,
    pub metrics_textfile: Option<PathBuf>,
    pub ca_bundle: Option<PathBuf>,
    #[serde(default)]
    pub sender: RawSender,
    #[serde(default)]
    pub event_names: BTreeMap<String, String>,
    #[serde(default)]
    pub source: Vec<RawSource>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSender {
    pub batch_size: Option<Spanned<u32>>,
    pub backoff_base_ms: Option<u64>,
    pub backoff_max_secs: Option<u64>,
    pub connect_timeout_secs: Option<u64>,
    pub request_timeout_secs: Option<u64>,
    pub auth_retry_secs: Option<u64>,
    pub recovery_probe_secs: Option<u64>,
    pub recovery_jitter_secs: Option<u64>,
    pub sent_retention_days: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    pub name: Option<String>,
    pub path: Spanned<PathBuf>,
    pub format: Spanned<String>,
    pub extensions: Option<Vec<String>>,
    pub time_zone: Option<Spanned<String>>,
    #[serde(default)]
    pub time_formats: Vec<String>,
    pub currency: Option<Spanned<String>>,
    pub shop_id: Option<String>,
    pub till_id: Option<String>,
    pub decimal_separator: Option<Spanned<String>>,
    pub delimiter: Option<Spanned<String>>,
    pub quote: Option<Spanned<String>>,
    pub phone_region: Option<Spanned<String>>,
    pub after_ingest: Option<Spanned<String>>,
    pub archive_dir: Option<PathBuf>,
    pub settle_secs: Option<u64>,
    pub rescan_secs: Option<u64>,
    pub network_poll_secs: Option<u64>,
    pub encoding: Option<Spanned<String>>,
    #[serde(default)]
    pub skip_staff: bool,
    #[serde(default)]
    pub in_store_only: bool,
    pub partial_refunds: Option<Spanned<String>>,
    pub date_only: Option<Spanned<String>>,
    pub consent: Option<Spanned<String>>,
    pub append: Option<Spanned<bool>>,
    pub append_idle_secs: Option<Spanned<u64>>,
    pub done_marker: Option<Spanned<String>>,
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterIngest {
    Archive,
    Delete,
    Keep,
}

#[derive(Debug, Clone)]
pub struct SenderConfig {
    pub batch_size: usize,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
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
    /// Append mode: each file is one growing file (a day file), read part by part as it grows and
    /// never archived, deleted or quarantined (see `crate::append`).
    pub append: bool,
    /// In append mode, how long a file must be unchanged before its last record is taken too.
    pub append_idle: Duration,
    /// The name of the file the POS writes beside an export once the export is complete
    /// (`{name}.done`, `{stem}.ok`): when set, a file is taken only once its marker exists.
    pub done_marker: Option<String>,
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
    /// Things that are allowed but deserve a word in the log (an inline token, plain http).
    pub warnings: Vec<String>,
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

impl Context {
    pub fn from_env(config_path: &Path) -> Context {
        let config_dir = config_path.parent().map(Path::to_path_buf).unwrap_or_default();
        let config_dir = if config_dir.as_os_str().is_empty() { PathBuf::from(".") } else { config_dir };
        Context {
            config_dir,
            state_directory: std::env::var_os("STATE_DIRECTORY")
                .map(|v| PathBuf::from(v.to_string_lossy().split(':').next().unwrap_or_default().to_string())),
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

/// Read, parse and validate a config file.
pub fn load(path: &Path) -> Result<Config, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read { path: path.to_path_buf(), source })?;
    parse(&text, &Context::from_env(path)).map_err(|errors| LoadError::Invalid { path: path.to_path_buf(), errors })
}

/// Parse and validate config text.
pub fn parse(text: &str, ctx: &Context) -> Result<Config, Vec<ConfigError>> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start));
        let message = e.message().trim().to_string();
        vec![ConfigError { key: key_of_parse_error(&message), line, message }]
    })?;
    validate(raw, text, ctx)
}

fn key_of_parse_error(message: &str) -> String {
    message.split('`').nth(1).map(str::to_string).unwrap_or_else(|| "(file)".to_string())
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

/// Turn the raw file into a [`Config`], or list every problem.
pub fn validate(raw: RawConfig, text: &str, ctx: &Context) -> Result<Config, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut error = |key: &str, span: Option<std::ops::Range<usize>>, message: String| {
        errors.push(ConfigError { key: key.to_string(), line: span.map(|s| line_of(text, s.start)), message });
    };
    let resolve = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            ctx.config_dir.join(p)
        }
    };

    let event_source_id = raw.event_source_id.get_ref().trim().to_string();
    if !(event_source_id.len() >= 15
        && event_source_id.len() <= 22
        && event_source_id.bytes().all(|b| b.is_ascii_digit()))
    {
        error(
            "event_source_id",
            Some(raw.event_source_id.span()),
            "must be the offline event set id: 19 digits, written as a string".into(),
        );
    }

    let mut token_sources = Vec::new();
    if let Some(p) = &raw.access_token_file {
        token_sources.push(TokenSource::File(resolve(p.get_ref())));
    }
    if let Some(name) = &raw.access_token_credential {
        if name.get_ref().is_empty() || name.get_ref().contains('/') {
            error("access_token_credential", Some(name.span()), "must be a credential name (no `/`)".into());
        }
        token_sources.push(TokenSource::Credential(name.get_ref().clone()));
    }
    if let Some(var) = &raw.access_token_env {
        token_sources.push(TokenSource::Env(var.get_ref().clone()));
    }
    if let Some(inline) = &raw.access_token {
        warnings.push(
            "the access token is written in the config file itself; prefer access_token_file or a systemd credential"
                .into(),
        );
        token_sources.push(TokenSource::Inline(Token::new(inline.get_ref().trim().to_string())));
    }
    if token_sources.len() > 1 {
        error(
            "access_token_file",
            None,
            "set only one of access_token_file, access_token_credential, access_token_env, access_token".into(),
        );
    }
    let token = token_sources.into_iter().next();
    if token.is_none() && !raw.dry_run {
        error(
            "access_token_file",
            None,
            "no access token configured (set access_token_file, access_token_credential or access_token_env)".into(),
        );
    }

    let api_base =
        raw.api_base.as_ref().map_or(DEFAULT_API_BASE.to_string(), |s| s.get_ref().trim_end_matches('/').to_string());
    if let Some(spanned) = &raw.api_base {
        match url_host(&api_base) {
            None => error("api_base", Some(spanned.span()), "must be an http:// or https:// URL".into()),
            Some((false, host)) if !is_loopback(&host) => warnings
                .push(format!("api_base {api_base} is plain http: the access token crosses the network unencrypted")),
            Some(_) => {}
        }
    }
    if let Some(proxy) = &raw.proxy {
        if url_host(proxy.get_ref()).is_none() && !proxy.get_ref().starts_with("socks") {
            error("proxy", Some(proxy.span()), "must be a proxy URL such as http://proxy.example:3128".into());
        }
    }

    let queue_path = match (&raw.queue_path, &ctx.state_directory, &ctx.user_data_dir) {
        (Some(p), _, _) => resolve(p),
        (None, Some(state), _) => state.join("queue.sqlite"),
        (None, None, Some(data)) => data.join("queue.sqlite"),
        (None, None, None) => {
            error("queue_path", None, "no default location found; set queue_path".into());
            PathBuf::new()
        }
    };
    let queue_path = if raw.dry_run { dry_run_queue(&queue_path) } else { queue_path };

    let test_event_code =
        raw.test_event_code.as_ref().map(|s| s.get_ref().trim().to_string()).filter(|s| !s.is_empty());

    let phone_region = match &raw.phone_region {
        Some(r) => {
            let region = pii::parse_region(r.get_ref());
            if region.is_none() {
                error("phone_region", Some(r.span()), format!("`{}` is not an ISO 3166 country code", r.get_ref()));
            }
            region
        }
        None => None,
    };
    let window_days = raw.attribution_window_days.as_ref().map_or(28, |d| *d.get_ref());
    if let Some(d) = &raw.attribution_window_days {
        if *d.get_ref() == 0 {
            error("attribution_window_days", Some(d.span()), "must be at least 1".into());
        } else if *d.get_ref() > 28 {
            warnings.push(format!(
                "attribution_window_days = {window_days}: TikTok matches offline events only within 28 days"
            ));
        }
    }

    let s = &raw.sender;
    let batch_size = s.batch_size.as_ref().map_or(1000, |b| *b.get_ref());
    if let Some(b) = &s.batch_size {
        if !(1..=1000).contains(b.get_ref()) {
            error("sender.batch_size", Some(b.span()), "must be 1 to 1000 (TikTok refuses larger batches)".into());
        }
    }
    let secs = |v: Option<u64>, default: u64| Duration::from_secs(v.unwrap_or(default));
    let sender = SenderConfig {
        batch_size: batch_size as usize,
        backoff_base: Duration::from_millis(s.backoff_base_ms.unwrap_or(1000).max(1)),
        backoff_max: secs(s.backoff_max_secs, 300).max(Duration::from_secs(1)),
        connect_timeout: secs(s.connect_timeout_secs, 10).max(Duration::from_secs(1)),
        request_timeout: secs(s.request_timeout_secs, 30).max(Duration::from_secs(1)),
        auth_retry: secs(s.auth_retry_secs, 300).max(Duration::from_secs(1)),
        recovery_probe: secs(s.recovery_probe_secs, 5).max(Duration::from_secs(1)),
        recovery_jitter: secs(s.recovery_jitter_secs, 5),
        sent_retention: Duration::from_secs(u64::from(s.sent_retention_days.unwrap_or(35)) * 86_400),
    };

    let event_names = match NameTable::new(&raw.event_names) {
        Ok(t) => t,
        Err(e) => {
            error("event_names", None, e.to_string());
            NameTable::default()
        }
    };

    if raw.source.is_empty() {
        warnings.push("no [[source]] configured: only `import` of named files will queue events".into());
    }
    let mut sources = Vec::new();
    for (i, src) in raw.source.iter().enumerate() {
        let key = |k: &str| format!("source[{i}].{k}");
        let name = src.name.clone().unwrap_or_else(|| format!("source{}", i + 1));
        let format = Format::from_name(src.format.get_ref()).unwrap_or_else(|| {
            let known: Vec<&str> = Format::ALL.iter().map(|(n, _)| *n).collect();
            error(
                &key("format"),
                Some(src.format.span()),
                format!("unknown format `{}` (known: {})", src.format.get_ref(), known.join(", ")),
            );
            Format::NativeCsv
        });
        let time_zone = match &src.time_zone {
            Some(tz) => TimeZone::get(tz.get_ref()).unwrap_or_else(|_| {
                error(
                    &key("time_zone"),
                    Some(tz.span()),
                    format!("`{}` is not an IANA time zone (e.g. Europe/Berlin)", tz.get_ref()),
                );
                TimeZone::UTC
            }),
            None => TimeZone::system(),
        };
        let currency = src.currency.as_ref().and_then(|c| {
            let parsed = Currency::parse(c.get_ref());
            if parsed.is_none() {
                error(
                    &key("currency"),
                    Some(c.span()),
                    format!("`{}` is not one of TikTok's supported currencies", c.get_ref()),
                );
            }
            parsed
        });
        let decimal_separator = match src.decimal_separator.as_ref().map(|d| (d.get_ref().as_str(), d.span())) {
            None => format.default_decimal_separator(),
            Some((".", _)) => '.',
            Some((",", _)) => ',',
            Some((_, span)) => {
                error(&key("decimal_separator"), Some(span), "must be \".\" or \",\"".into());
                '.'
            }
        };
        let delimiter = src.delimiter.as_ref().and_then(|d| match d.get_ref().as_str() {
            "\\t" | "\t" | "tab" => Some(b'\t'),
            s if s.len() == 1 && s.is_ascii() && s != "\"" => Some(s.as_bytes()[0]),
            _ => {
                error(&key("delimiter"), Some(d.span()), "must be one ASCII character (or \"tab\")".into());
                None
            }
        });
        let quote = match src.quote.as_ref().map(|q| (q.get_ref().as_str(), q.span())) {
            None => Quoting::Detect,
            Some(("none", _)) => Quoting::Off,
            Some((q, _)) if q.len() == 1 && q.is_ascii() && Some(q.as_bytes()[0]) != delimiter => {
                Quoting::Char(q.as_bytes()[0])
            }
            Some((_, span)) => {
                error(
                    &key("quote"),
                    Some(span),
                    "must be one ASCII character other than the delimiter (e.g. \"'\"), or \"none\"".into(),
                );
                Quoting::Detect
            }
        };
        let source_region = match &src.phone_region {
            Some(r) => {
                let region = pii::parse_region(r.get_ref());
                if region.is_none() {
                    error(
                        &key("phone_region"),
                        Some(r.span()),
                        format!("`{}` is not an ISO 3166 country code", r.get_ref()),
                    );
                }
                region
            }
            None => phone_region,
        };
        let after_ingest = choice(
            src.after_ingest.as_ref(),
            &[("archive", AfterIngest::Archive), ("delete", AfterIngest::Delete), ("keep", AfterIngest::Keep)],
            &key("after_ingest"),
            &mut error,
        );
        let encoding = src.encoding.as_ref().and_then(|e| {
            let found = encoding_rs::Encoding::for_label(e.get_ref().trim().as_bytes());
            if found.is_none() {
                error(
                    &key("encoding"),
                    Some(e.span()),
                    format!("`{}` is not an encoding label (e.g. utf-8, windows-1252, utf-16le)", e.get_ref()),
                );
            }
            found
        });
        let partial_refunds = choice(
            src.partial_refunds.as_ref(),
            &[("gross", PartialRefunds::Gross), ("net", PartialRefunds::Net)],
            &key("partial_refunds"),
            &mut error,
        );
        let date_only = choice(
            src.date_only.as_ref(),
            &[("reject", DateOnly::Reject), ("noon", DateOnly::Noon)],
            &key("date_only"),
            &mut error,
        );
        let consent = choice(
            src.consent.as_ref(),
            &[("strip", ConsentPolicy::Strip), ("skip", ConsentPolicy::Skip)],
            &key("consent"),
            &mut error,
        );
        let mut fields = crate::format::NATIVE_COLUMNS.to_vec();
        match format {
            Format::Jsonl => fields.push("items"),
            Format::Json => fields.extend(crate::format::JSON_PATH_KEYS),
            _ => {}
        }
        for (field, column) in &src.columns {
            let at = key(&format!("columns.{field}"));
            if !fields.contains(&field.as_str()) {
                error(&at, None, format!("`{field}` is not a field (fields: {})", fields.join(", ")));
            } else if matches!(format, Format::Jsonl | Format::Json) && !crate::format::valid_json_path(column) {
                error(&at, None, format!("`{column}` is not a dotted path (e.g. \"customer.email\")"));
            } else if column.trim().is_empty() {
                error(&at, None, "must name a column".into());
            }
        }
        if !src.columns.is_empty() && !matches!(format, Format::NativeCsv | Format::Jsonl | Format::Json) {
            error(
                &key("columns"),
                None,
                format!(
                    "column mappings apply to format = \"native-csv\", \"jsonl\" or \"json\"; `{}` knows its columns",
                    format.name()
                ),
            );
        }
        let path = resolve(src.path.get_ref());
        let archive_dir = src.archive_dir.as_ref().map_or_else(
            || path.join("archive"),
            |a| {
                if a.is_absolute() {
                    a.clone()
                } else {
                    path.join(a)
                }
            },
        );
        let extensions: Vec<String> = src
            .extensions
            .clone()
            .unwrap_or_else(|| format.default_extensions().iter().map(|e| e.to_string()).collect())
            .into_iter()
            .map(|e| e.trim_start_matches('.').to_ascii_lowercase())
            .collect();
        let append = src.append.as_ref().is_some_and(|a| *a.get_ref());
        if let Some(a) = src.append.as_ref().filter(|a| *a.get_ref()) {
            if !matches!(format, Format::NativeCsv | Format::Jsonl) {
                error(
                    &key("append"),
                    Some(a.span()),
                    format!(
                        "append mode reads native-csv and jsonl files only, not `{}` (exports that are written whole need no append mode)",
                        format.name()
                    ),
                );
            }
            if let Some(after) = src.after_ingest.as_ref().filter(|v| v.get_ref() != "keep") {
                error(
                    &key("after_ingest"),
                    Some(after.span()),
                    "a file in append mode is still being written, so it is never archived or deleted; remove after_ingest (or set \"keep\")".into(),
                );
            }
            if encoding.is_some_and(|e| e == encoding_rs::UTF_16LE || e == encoding_rs::UTF_16BE) {
                error(
                    &key("encoding"),
                    src.encoding.as_ref().map(|e| e.span()),
                    "append mode reads UTF-8 or single-byte encodings, not UTF-16".into(),
                );
            }
        }
        if let Some(idle) = &src.append_idle_secs {
            if !append {
                warnings.push(format!("{}: has no effect without append = true", key("append_idle_secs")));
            } else if *idle.get_ref() == 0 {
                error(&key("append_idle_secs"), Some(idle.span()), "must be at least 1".into());
            }
        }
        let done_marker = src.done_marker.as_ref().and_then(|m| match check_done_marker(m.get_ref(), &extensions) {
            Ok(()) if append => {
                error(
                    &key("done_marker"),
                    Some(m.span()),
                    "a file in append mode is never done; remove done_marker".into(),
                );
                None
            }
            Ok(()) => Some(m.get_ref().clone()),
            Err(reason) => {
                error(&key("done_marker"), Some(m.span()), reason);
                None
            }
        });
        if sources.iter().any(|s: &SourceConfig| s.name == name) {
            error(&key("name"), None, format!("source name `{name}` is used twice"));
        }
        sources.push(SourceConfig {
            name,
            path,
            format,
            extensions,
            csv: crate::format::Dialect { delimiter, quote },
            defaults: SourceDefaults {
                time_zone,
                time_formats: if src.time_formats.is_empty() {
                    format.default_time_formats().iter().map(|f| f.to_string()).collect()
                } else {
                    src.time_formats.clone()
                },
                currency,
                shop_id: src.shop_id.clone().filter(|s| !s.trim().is_empty()),
                till_id: src.till_id.clone().filter(|s| !s.trim().is_empty()),
                decimal_separator,
                phone_region: source_region,
                event_names: event_names.clone(),
            },
            after_ingest,
            archive_dir,
            settle: Duration::from_secs(src.settle_secs.unwrap_or(2)),
            rescan: Duration::from_secs(src.rescan_secs.unwrap_or(30).max(1)),
            columns: src.columns.clone(),
            network_poll: Duration::from_secs(src.network_poll_secs.unwrap_or(10).max(1)),
            encoding,
            policy: Policy {
                skip_staff: src.skip_staff,
                in_store_only: src.in_store_only,
                partial_refunds,
                date_only,
                consent,
            },
            append,
            append_idle: Duration::from_secs(src.append_idle_secs.as_ref().map_or(300, |s| *s.get_ref()).max(1)),
            done_marker,
        });
    }

    let max_queue_mb = raw.max_queue_mb.as_ref().map_or(2048, |m| *m.get_ref());
    if let Some(m) = &raw.max_queue_mb {
        if *m.get_ref() < 16 {
            error("max_queue_mb", Some(m.span()), "must be at least 16".into());
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Config {
        max_queue_bytes: max_queue_mb * 1024 * 1024,
        metrics_textfile: raw.metrics_textfile.as_deref().map(resolve),
        ca_bundle: raw.ca_bundle.as_deref().map(resolve),
        event_source_id,
        token,
        api_base,
        proxy: raw.proxy.map(|p| p.into_inner()),
        queue_path,
        test_event_code,
        dry_run: raw.dry_run,
        dry_run_output: raw.dry_run_output.as_deref().map(resolve),
        attribution_window: Duration::from_secs(u64::from(window_days) * 86_400),
        future_tolerance: Duration::from_secs(u64::from(raw.future_tolerance_minutes.unwrap_or(60)) * 60),
        sender,
        sources,
        warnings,
    })
}

/// Command-line settings that win over the config file, re-applied on every reload.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub test_event_code: Option<String>,
    pub dry_run: bool,
}

impl Overrides {
    pub fn apply(&self, config: &mut Config) {
        if let Some(code) = &self.test_event_code {
            config.test_event_code = Some(code.clone());
        }
        if self.dry_run && !config.dry_run {
            config.dry_run = true;
            config.queue_path = dry_run_queue(&config.queue_path);
        }
    }
}

/// A `done_marker` template names a file beside the export: it must hold `{name}` (the export's
/// file name) or `{stem}` (its name without the last extension), no folder, and end in an extension
/// the source does not read (else a marker would be read as an export).
pub fn check_done_marker(template: &str, extensions: &[String]) -> Result<(), String> {
    if !template.contains("{name}") && !template.contains("{stem}") {
        return Err(format!("`{template}` must contain {{name}} or {{stem}} (e.g. \"{{name}}.done\")"));
    }
    if template.contains('/') || template.contains('\\') {
        return Err(format!("`{template}` must be a file name in the same folder, without a path"));
    }
    let example = template.replace("{name}", "x.csv").replace("{stem}", "x");
    match std::path::Path::new(&example).extension().and_then(|e| e.to_str()) {
        Some(ext) if !extensions.contains(&ext.to_ascii_lowercase()) => Ok(()),
        _ => Err(format!(
            "`{template}` must end in an extension the source does not read (it reads .{}), e.g. \"{{name}}.done\"",
            extensions.join(", .")
        )),
    }
}

/// A key that takes one of a fixed set of words: its value, the first choice when it is absent,
/// and an error naming the key, its line and the choices when it is none of them.
fn choice<T: Copy>(
    value: Option<&Spanned<String>>,
    choices: &[(&str, T)],
    key: &str,
    error: &mut impl FnMut(&str, Option<std::ops::Range<usize>>, String),
) -> T {
    let Some(value) = value else { return choices[0].1 };
    match choices.iter().find(|(word, _)| *word == value.get_ref().as_str()) {
        Some((_, chosen)) => *chosen,
        None => {
            let words: Vec<&str> = choices.iter().map(|(word, _)| *word).collect();
            error(key, Some(value.span()), format!("`{}` is not one of {}", value.get_ref(), words.join(", ")));
            choices[0].1
        }
    }
}

/// A dry run never touches the real queue: `queue.sqlite` becomes `queue.dry-run.sqlite`.
pub fn dry_run_queue(path: &Path) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "queue".into());
    let name = match path.extension() {
        Some(ext) => format!("{stem}.dry-run.{}", ext.to_string_lossy()),
        None => format!("{stem}.dry-run"),
    };
    path.with_file_name(name)
}

/// `(is_https, host)` of an http(s) URL.
fn url_host(url: &str) -> Option<(bool, String)> {
    let (https, rest) =
        if let Some(r) = url.strip_prefix("https://") { (true, r) } else { (false, url.strip_prefix("http://")?) };
    let authority = rest.split('/').next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    let host = if host.starts_with('[') {
        host.split(']').next().unwrap_or("").trim_start_matches('[').to_string()
    } else {
        host.split(':').next().unwrap_or("").to_string()
    };
    (!host.is_empty()).then_some((https, host))
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
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

/// The effective settings as `check-config` prints them. The token is never shown.
pub fn describe(config: &Config) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "event_source_id = {}", config.event_source_id);
    let _ = writeln!(
        out,
        "access token    = {}",
        config.token.as_ref().map_or("none (dry run)".to_string(), |t| format!("<redacted>, from {t}"))
    );
    let _ = writeln!(out, "api_base        = {}", config.api_base);
    let _ = writeln!(out, "proxy           = {}", config.proxy.as_deref().unwrap_or("from environment, if any"));
    let _ = writeln!(out, "queue_path      = {}", config.queue_path.display());
    let _ = writeln!(out, "test_event_code = {}", config.test_event_code.as_deref().unwrap_or("none"));
    let _ = writeln!(out, "dry_run         = {}", config.dry_run);
    let _ = writeln!(out, "attribution     = {} days", config.attribution_window.as_secs() / 86_400);
    let s = &config.sender;
    let _ = writeln!(
        out,
        "sender          = batch {} events, backoff {:?}..{:?}, timeouts connect {:?} request {:?}, auth retry {:?}",
        s.batch_size, s.backoff_base, s.backoff_max, s.connect_timeout, s.request_timeout, s.auth_retry
    );
    for src in &config.sources {
        let d = &src.defaults;
        let _ = writeln!(
            out,
            "source {:<9}= {} ({:?}, .{}), time zone {}, currency {}, shop {}, till {}, {}, settle {:?}, rescan {:?}",
            src.name,
            src.path.display(),
            src.format,
            src.extensions.join("/."),
            d.time_zone.iana_name().unwrap_or("(system)"),
            d.currency.map_or("from file", |c| c.code()),
            d.shop_id.as_deref().unwrap_or("from file"),
            d.till_id.as_deref().unwrap_or("none"),
            if src.append {
                format!("append mode (files never moved; last record taken after {:?} idle)", src.append_idle)
            } else {
                let marker = src.done_marker.as_ref().map(|m| format!(", taken once `{m}` exists")).unwrap_or_default();
                format!("after ingest {:?}{marker}", src.after_ingest)
            },
            src.settle,
            src.rescan,
        );
    }
    for w in &config.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            config_dir: PathBuf::from("/etc/oea"),
            state_directory: None,
            user_data_dir: Some(PathBuf::from("/home/u/.local/share/oea")),
        }
    }

    const MINIMAL: &str = r#"
event_source_id = "7181537436256731137"
access_token_file = "token"

[[source]]
path = "/srv/pos"
format = "native-csv"
time_zone = "America/New_York"
currency = "USD"
shop_id = "s042"
"#;

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
    fn state_directory_wins_over_user_dirs_and_dry_run_uses_its_own_queue() {
        let mut ctx = ctx();
        ctx.state_directory = Some(PathBuf::from("/var/lib/oea"));
        let c = parse(MINIMAL, &ctx).unwrap();
        assert_eq!(c.queue_path, PathBuf::from("/var/lib/oea/queue.sqlite"));
        let c = parse(&format!("dry_run = true\n{MINIMAL}"), &ctx).unwrap();
        assert_eq!(c.queue_path, PathBuf::from("/var/lib/oea/queue.dry-run.sqlite"));
    }

    fn errors(text: &str) -> Vec<(String, Option<usize>)> {
        parse(text, &ctx()).unwrap_err().into_iter().map(|e| (e.key, e.line)).collect()
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
    fn unknown_keys_and_wrong_types_are_errors() {
        let e = errors(&format!("colour = \"red\"\n{MINIMAL}"));
        assert_eq!(e, vec![("colour".to_string(), Some(1))]);
        let e = errors(&MINIMAL.replace("format = \"native-csv\"", "format = \"native-csv\"\nsettle = 3"));
        assert_eq!(e[0].0, "settle");
        let text = format!("{MINIMAL}\n[sender]\nbatch_size = 5000\n");
        let line = text.lines().count();
        assert_eq!(errors(&text)[0], ("sender.batch_size".to_string(), Some(line)));
    }

    #[test]
    fn token_sources() {
        let e = errors(&MINIMAL.replace("access_token_file = \"token\"", ""));
        assert_eq!(e[0].0, "access_token_file");
        let both =
            MINIMAL.replace("access_token_file = \"token\"", "access_token_file = \"t\"\naccess_token_env = \"T\"");
        assert_eq!(errors(&both)[0].0, "access_token_file");
        let inline =
            parse(&MINIMAL.replace("access_token_file = \"token\"", "access_token = \"s3cr3t\""), &ctx()).unwrap();
        assert!(!inline.warnings.is_empty());
        assert!(!format!("{inline:?}").contains("s3cr3t"));
        assert!(!describe(&inline).contains("s3cr3t"));
    }

    #[test]
    fn column_mappings_name_our_fields_and_json_paths() {
        let with = |format: &str, columns: &str| {
            MINIMAL.replace("format = \"native-csv\"", &format!("format = \"{format}\"\ncolumns = {{ {columns} }}"))
        };
        let good = [
            ("native-csv", r#"order_id = "Bon-Nr", price = "Einzelpreis""#),
            ("jsonl", r#"order_id = "receipt.no", items = "receipt.lines", price = "unit.amount""#),
            ("json", r#"records = "data.orders", email = "customer.emails.0""#),
        ];
        for (format, columns) in good {
            let c = parse(&with(format, columns), &ctx()).unwrap_or_else(|e| panic!("{format}: {e:?}"));
            assert!(!c.sources[0].columns.is_empty());
        }
        let bad = [
            ("native-csv", r#"items = "lines""#, "source[0].columns.items"),
            ("native-csv", r#"price = " ""#, "source[0].columns.price"),
            ("jsonl", r#"records = "data""#, "source[0].columns.records"),
            ("jsonl", r#"emial = "e""#, "source[0].columns.emial"),
            ("json", r#"email = "customer..email""#, "source[0].columns.email"),
            ("json", r#"records = """#, "source[0].columns.records"),
            ("shopify-orders", r#"order_id = "Name""#, "source[0].columns"),
        ];
        for (format, columns, key) in bad {
            assert_eq!(errors(&with(format, columns))[0].0, key, "{format} {columns}");
        }
    }

    #[test]
    fn quoting_is_detected_or_set() {
        let with =
            |extra: &str| MINIMAL.replace("format = \"native-csv\"", &format!("format = \"native-csv\"\n{extra}"));
        let quote = |extra: &str| parse(&with(extra), &ctx()).unwrap().sources[0].csv.quote;
        assert_eq!(quote(""), Quoting::Detect);
        assert_eq!(quote("quote = \"'\""), Quoting::Char(b'\''));
        assert_eq!(quote("quote = \"none\""), Quoting::Off);
        for bad in ["quote = \"\"", "quote = \"ab\"", "quote = \";\"\ndelimiter = \";\"", "quote = \"é\""] {
            assert_eq!(errors(&with(bad))[0], ("source[0].quote".into(), Some(8)), "{bad}");
        }
    }

    #[test]
    fn done_markers_must_name_a_file_beside_the_export_that_is_not_read_itself() {
        let with = |m: &str| {
            MINIMAL.replace("format = \"native-csv\"", &format!("format = \"native-csv\"\ndone_marker = \"{m}\""))
        };
        for good in ["{name}.done", "{stem}.ok", "ready_{stem}.flag"] {
            let c = parse(&with(good), &ctx()).unwrap();
            assert_eq!(c.sources[0].done_marker.as_deref(), Some(good));
            assert!(describe(&c).contains(&format!("taken once `{good}` exists")));
        }
        for bad in ["sales.done", "{name}", "{stem}", "{stem}.csv", "{stem}.TXT", "done/{name}", "{stem}"] {
            assert_eq!(errors(&with(bad))[0], ("source[0].done_marker".into(), Some(8)), "{bad}");
        }
        let append = with("{name}.done").replace("done_marker", "append = true\ndone_marker");
        assert_eq!(errors(&append)[0].0, "source[0].done_marker");
        assert_eq!(parse(MINIMAL, &ctx()).unwrap().sources[0].done_marker, None);
    }

    #[test]
    fn append_mode_is_for_growing_line_files_that_stay_in_place() {
        let append =
            |extra: &str| MINIMAL.replace("format = \"native-csv\"", &format!("format = \"native-csv\"\n{extra}"));
        let c = parse(&append("append = true"), &ctx()).unwrap();
        assert!(c.sources[0].append);
        assert_eq!(c.sources[0].append_idle, Duration::from_secs(300));
        assert!(describe(&c).contains("append mode"));
        let c = parse(&append("append = true\nappend_idle_secs = 2\nafter_ingest = \"keep\""), &ctx()).unwrap();
        assert_eq!(c.sources[0].append_idle, Duration::from_secs(2));
        assert!(!parse(MINIMAL, &ctx()).unwrap().sources[0].append);
        assert_eq!(
            errors(&append("append = true\nafter_ingest = \"archive\""))[0],
            ("source[0].after_ingest".into(), Some(9))
        );
        let idle_alone = parse(&append("append_idle_secs = 5"), &ctx()).unwrap();
        assert!(
            idle_alone.warnings.iter().any(|w| w.contains("source[0].append_idle_secs")),
            "{:?}",
            idle_alone.warnings
        );
        assert_eq!(errors(&append("append = true\nencoding = \"utf-16le\""))[0].0, "source[0].encoding");
        let poslog = MINIMAL.replace("\"native-csv\"", "\"arts-poslog\"\nappend = true");
        assert_eq!(errors(&poslog)[0], ("source[0].append".into(), Some(8)));
    }

    #[test]
    fn plain_http_is_only_quiet_on_loopback() {
        let local = parse(&format!("api_base = \"http://127.0.0.1:8080\"\n{MINIMAL}"), &ctx()).unwrap();
        assert!(local.warnings.is_empty());
        let remote = parse(&format!("api_base = \"http://proxy.example\"\n{MINIMAL}"), &ctx()).unwrap();
        assert_eq!(remote.warnings.len(), 1);
        assert_eq!(errors(&format!("api_base = \"ftp://x\"\n{MINIMAL}"))[0].0, "api_base");
    }
}
