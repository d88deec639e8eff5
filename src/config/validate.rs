//! The pure step from [`RawConfig`] to [`Config`]: every problem is collected, each naming its key
//! and line. No I/O besides looking up time zones.

use super::raw::RawConfig;
use super::{dry_run_queue, line_of, AfterIngest, Config, ConfigError, Context, SenderConfig, SourceConfig};
use super::{Token, TokenSource, DEFAULT_API_BASE};
use crate::event::money::Currency;
use crate::event::name::NameTable;
use crate::event::{pii, SourceDefaults};
use crate::format::{ConsentPolicy, DateOnly, Format, PartialRefunds, Policy, Quoting};
use jiff::tz::TimeZone;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

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
