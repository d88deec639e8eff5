//! The pure step from [`RawConfig`] to [`Config`], one small function per part of the file. Every
//! problem is collected into [`Findings`], each naming its key and line, so the user sees them all
//! at once. No I/O besides looking up time zones.

use super::defaults::{self, Limit};
use super::raw::{RawConfig, RawSender};
use super::source::{check_queue_apart, sources};
use super::token::{token_problem, TokenProblem};
use super::url::{is_loopback, redact_url, url_host};
use super::{dry_run_queue, line_of, test_queue, Config, ConfigError, Context, SenderConfig, Token, TokenSource};
use crate::event::name::NameTable;
use crate::event::pii;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// What validation found besides the values: errors (key and line) and warnings, in file order.
pub(super) struct Findings<'t> {
    text: &'t str,
    pub(super) errors: Vec<ConfigError>,
    pub(super) warnings: Vec<String>,
}

impl<'t> Findings<'t> {
    pub(super) fn new(text: &'t str) -> Findings<'t> {
        Findings { text, errors: Vec::new(), warnings: Vec::new() }
    }

    /// An error at `key`, on the line `span` starts on (if known).
    pub(super) fn error(&mut self, key: &str, span: Option<Range<usize>>, message: impl Into<String>) {
        let line = span.map(|s| line_of(self.text, s.start));
        self.errors.push(ConfigError { key: key.to_string(), line, message: message.into() });
    }

    pub(super) fn warn(&mut self, warning: impl Into<String>) {
        self.warnings.push(warning.into());
    }
}

/// Turn the raw file into a [`Config`], or list every problem.
pub fn validate(raw: RawConfig, text: &str, ctx: &Context) -> Result<Config, Vec<ConfigError>> {
    let mut f = Findings::new(text);
    let event_source_id = event_source_id(&raw.event_source_id, &mut f);
    let token = token_source(&raw, ctx, &mut f);
    let api_base = api_base(raw.api_base.as_ref(), &mut f);
    check_proxy(raw.proxy.as_ref(), &mut f);
    let test_event_code =
        raw.test_event_code.as_ref().map(|s| s.get_ref().trim().to_string()).filter(|s| !s.is_empty());
    let queue_path = queue_path(raw.queue_path.as_deref(), raw.dry_run, test_event_code.is_some(), ctx, &mut f);
    let phone_region = raw.phone_region.as_ref().and_then(|r| phone_region("phone_region", r, &mut f));
    let attribution_window = attribution_window(raw.attribution_window_days.as_ref(), &mut f);
    let future_minutes = bounded(
        "future_tolerance_minutes",
        raw.future_tolerance_minutes.as_ref(),
        defaults::FUTURE_TOLERANCE_MINUTES,
        &mut f,
    );
    let sender = sender(&raw.sender, &mut f);
    let event_names = event_names(&raw.event_names, &mut f);
    let sources = sources(&raw.source, ctx, phone_region, &event_names, &mut f);
    check_queue_apart(&raw.source, &sources, &queue_path, &mut f);
    let max_queue_bytes = max_queue_bytes(raw.max_queue_mb.as_ref(), &mut f);
    let log_format = choice(raw.log_format.as_ref(), &defaults::LOG_FORMATS, "log_format", &mut f);
    if !f.errors.is_empty() {
        return Err(f.errors);
    }
    Ok(Config {
        max_queue_bytes,
        metrics_textfile: raw.metrics_textfile.as_deref().map(|p| resolve(ctx, p)),
        ca_bundle: raw.ca_bundle.as_deref().map(|p| resolve(ctx, p)),
        log_format,
        event_source_id,
        token,
        api_base,
        proxy: raw.proxy.map(|p| p.into_inner()),
        queue_path,
        test_event_code,
        dry_run: raw.dry_run,
        dry_run_output: raw.dry_run_output.as_deref().map(|p| resolve(ctx, p)),
        attribution_window,
        future_tolerance: Duration::from_secs(future_minutes * 60),
        sender,
        sources,
        warnings: f.warnings,
    })
}

/// A path as written, resolved against the config file's folder when relative.
pub(super) fn resolve(ctx: &Context, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        ctx.config_dir.join(p)
    }
}

/// `event_source_id`: the offline event set id, trimmed.
fn event_source_id(raw: &Spanned<String>, f: &mut Findings) -> String {
    let id = raw.get_ref().trim().to_string();
    if !(id.len() >= 15 && id.len() <= 22 && id.bytes().all(|b| b.is_ascii_digit())) {
        f.error(
            "event_source_id",
            Some(raw.span()),
            "must be the offline event set id: 19 digits, written as a string",
        );
    } else if id.len() != defaults::EVENT_SOURCE_ID_DIGITS {
        f.warn(format!(
            "event_source_id has {} digits, but an offline event set id has {}: copy the ID from the event set in TikTok Events Manager",
            id.len(),
            defaults::EVENT_SOURCE_ID_DIGITS
        ));
    }
    id
}

/// The one `access_token*` key that is set; none only in a dry run.
fn token_source(raw: &RawConfig, ctx: &Context, f: &mut Findings) -> Option<TokenSource> {
    let mut token_sources = Vec::new();
    if let Some(p) = &raw.access_token_file {
        token_sources.push(TokenSource::File(resolve(ctx, p.get_ref())));
    }
    if let Some(name) = &raw.access_token_credential {
        if name.get_ref().is_empty() || name.get_ref().contains('/') {
            f.error("access_token_credential", Some(name.span()), "must be a credential name (no `/`)");
        }
        token_sources.push(TokenSource::Credential(name.get_ref().clone()));
    }
    if let Some(var) = &raw.access_token_env {
        token_sources.push(TokenSource::Env(var.get_ref().clone()));
    }
    if let Some(inline) = &raw.access_token {
        f.warn(
            "the access token is written in the config file itself; prefer access_token_file or a systemd credential",
        );
        let value = inline.get_ref().trim();
        match token_problem(value) {
            None => {}
            Some(TokenProblem::Empty) => f.error("access_token", Some(inline.span()), "is empty"),
            Some(TokenProblem::ControlCharacter(what)) => f.error(
                "access_token",
                Some(inline.span()),
                format!("contains a control character ({what}); it must be one line of printable characters"),
            ),
        }
        token_sources.push(TokenSource::Inline(Token::new(value.to_string())));
    }
    if token_sources.len() > 1 {
        f.error(
            "access_token_file",
            None,
            "set only one of access_token_file, access_token_credential, access_token_env, access_token",
        );
    }
    let token = token_sources.into_iter().next();
    if token.is_none() && !raw.dry_run {
        f.error(
            "access_token_file",
            None,
            "no access token configured (set access_token_file, access_token_credential or access_token_env)",
        );
    }
    token
}

/// `api_base` without a trailing `/`; plain http is warned about unless it is loopback.
fn api_base(raw: Option<&Spanned<String>>, f: &mut Findings) -> String {
    let Some(spanned) = raw else { return defaults::DEFAULT_API_BASE.to_string() };
    let api_base = spanned.get_ref().trim_end_matches('/').to_string();
    match url_host(&api_base) {
        None => f.error("api_base", Some(spanned.span()), "must be an http:// or https:// URL"),
        Some((false, host)) if !is_loopback(&host) => f.warn(format!(
            "api_base {} is plain http: the access token crosses the network unencrypted",
            redact_url(&api_base)
        )),
        Some(_) => {}
    }
    api_base
}

fn check_proxy(raw: Option<&Spanned<String>>, f: &mut Findings) {
    if let Some(proxy) = raw {
        if url_host(proxy.get_ref()).is_none() && !proxy.get_ref().starts_with("socks") {
            f.error("proxy", Some(proxy.span()), "must be a proxy URL such as http://proxy.example:3128");
        }
    }
}

/// `queue_path`, else the service's state directory, else the user's data directory; a dry run
/// and a test session each use a queue of their own beside it.
pub(super) fn queue_path(raw: Option<&Path>, dry_run: bool, test: bool, ctx: &Context, f: &mut Findings) -> PathBuf {
    let queue_path = match (raw, &ctx.state_directory, &ctx.user_data_dir) {
        (Some(p), _, _) => resolve(ctx, p),
        (None, Some(state), _) => state.join("queue.sqlite"),
        (None, None, Some(data)) => data.join("queue.sqlite"),
        (None, None, None) => {
            f.error("queue_path", None, "no default location found; set queue_path");
            PathBuf::new()
        }
    };
    match (dry_run, test) {
        (true, _) => dry_run_queue(&queue_path),
        (false, true) => test_queue(&queue_path),
        (false, false) => queue_path,
    }
}

/// A `phone_region` (top level or a source's): an ISO 3166 country code.
pub(super) fn phone_region(key: &str, raw: &Spanned<String>, f: &mut Findings) -> Option<phonenumber::country::Id> {
    let region = pii::parse_region(raw.get_ref());
    if region.is_none() {
        f.error(key, Some(raw.span()), format!("`{}` is not an ISO 3166 country code", raw.get_ref()));
    }
    region
}

/// `attribution_window_days`: at least a day; longer than TikTok matches is warned about.
fn attribution_window(raw: Option<&Spanned<u32>>, f: &mut Findings) -> Duration {
    let limit = defaults::ATTRIBUTION_WINDOW_DAYS;
    let days = match raw {
        None => limit.default,
        Some(d) if *d.get_ref() == 0 => {
            f.error("attribution_window_days", Some(d.span()), "must be at least 1");
            limit.default
        }
        Some(d) => {
            let days = bounded("attribution_window_days", Some(d), limit, f);
            if days > defaults::TIKTOK_MATCH_WINDOW_DAYS {
                f.warn(format!(
                    "attribution_window_days = {days}: TikTok matches offline events only within {} days",
                    defaults::TIKTOK_MATCH_WINDOW_DAYS
                ));
            }
            days
        }
    };
    Duration::from_secs(days * 86_400)
}

/// `[sender]`: batch size and the delays and timeouts of delivery, each within its bound.
fn sender(s: &RawSender, f: &mut Findings) -> SenderConfig {
    let batch_size = s.batch_size.as_ref().map_or(defaults::DEFAULT_BATCH_SIZE, |b| *b.get_ref());
    if let Some(b) = &s.batch_size {
        if !(1..=defaults::MAX_BATCH_SIZE).contains(b.get_ref()) {
            f.error(
                "sender.batch_size",
                Some(b.span()),
                format!("must be 1 to {} (TikTok refuses larger batches)", defaults::MAX_BATCH_SIZE),
            );
        }
    }
    let mut secs = |key: &str, value: Option<&Spanned<u64>>, limit: Limit| {
        Duration::from_secs(bounded(&format!("sender.{key}"), value, limit, f))
    };
    let one = Duration::from_secs(1);
    let backoff_max = secs("backoff_max_secs", s.backoff_max_secs.as_ref(), defaults::BACKOFF_MAX_SECS).max(one);
    let throttle_backoff_max =
        secs("throttle_backoff_max_secs", s.throttle_backoff_max_secs.as_ref(), defaults::THROTTLE_BACKOFF_MAX_SECS)
            .max(one);
    let connect_timeout =
        secs("connect_timeout_secs", s.connect_timeout_secs.as_ref(), defaults::CONNECT_TIMEOUT_SECS).max(one);
    let request_timeout =
        secs("request_timeout_secs", s.request_timeout_secs.as_ref(), defaults::REQUEST_TIMEOUT_SECS).max(one);
    let auth_retry = secs("auth_retry_secs", s.auth_retry_secs.as_ref(), defaults::AUTH_RETRY_SECS).max(one);
    let recovery_probe =
        secs("recovery_probe_secs", s.recovery_probe_secs.as_ref(), defaults::RECOVERY_PROBE_SECS).max(one);
    let recovery_jitter = secs("recovery_jitter_secs", s.recovery_jitter_secs.as_ref(), defaults::RECOVERY_JITTER_SECS);
    let backoff_base_ms = bounded("sender.backoff_base_ms", s.backoff_base_ms.as_ref(), defaults::BACKOFF_BASE_MS, f);
    let retention_days =
        bounded("sender.sent_retention_days", s.sent_retention_days.as_ref(), defaults::SENT_RETENTION_DAYS, f);
    SenderConfig {
        batch_size: batch_size as usize,
        backoff_base: Duration::from_millis(backoff_base_ms.max(1)),
        backoff_max,
        throttle_backoff_max,
        connect_timeout,
        request_timeout,
        auth_retry,
        recovery_probe,
        recovery_jitter,
        sent_retention: Duration::from_secs(retention_days * 86_400),
    }
}

/// `[event_names]`: the table mapping the export's kinds of sale to TikTok's event names.
fn event_names(raw: &BTreeMap<String, String>, f: &mut Findings) -> NameTable {
    NameTable::new(raw).unwrap_or_else(|e| {
        f.error("event_names", None, e.to_string());
        NameTable::default()
    })
}

/// `max_queue_mb` in bytes: at least 16 MB, at most 16 TiB.
fn max_queue_bytes(raw: Option<&Spanned<u64>>, f: &mut Findings) -> u64 {
    let mb = match raw {
        Some(m) if *m.get_ref() < defaults::MIN_QUEUE_MB => {
            f.error("max_queue_mb", Some(m.span()), format!("must be at least {}", defaults::MIN_QUEUE_MB));
            defaults::MAX_QUEUE_MB.default
        }
        _ => bounded("max_queue_mb", raw, defaults::MAX_QUEUE_MB, f),
    };
    mb * 1024 * 1024
}

/// A number in a key's unit: the default when absent; above the key's maximum an error naming the
/// maximum (the default is returned then, and never used, as the config is refused).
pub(super) fn bounded<T: Copy + Into<u64>>(key: &str, raw: Option<&Spanned<T>>, limit: Limit, f: &mut Findings) -> u64 {
    let Some(value) = raw else { return limit.default };
    let n: u64 = (*value.get_ref()).into();
    if n > limit.max {
        f.error(key, Some(value.span()), format!("must be at most {} ({})", limit.max, limit.max_words));
        return limit.default;
    }
    n
}

/// A key that takes one of a fixed set of words: its value, the first choice when it is absent,
/// and an error naming the key, its line and the choices when it is none of them.
pub(super) fn choice<T: Copy>(
    value: Option<&Spanned<String>>,
    choices: &[(&str, T)],
    key: &str,
    f: &mut Findings,
) -> T {
    let Some(value) = value else { return choices[0].1 };
    match choices.iter().find(|(word, _)| *word == value.get_ref().as_str()) {
        Some((_, chosen)) => *chosen,
        None => {
            let words: Vec<&str> = choices.iter().map(|(word, _)| *word).collect();
            f.error(key, Some(value.span()), format!("`{}` is not one of {}", value.get_ref(), words.join(", ")));
            choices[0].1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::describe;
    use crate::config::parse;
    use crate::config::test_support::{check_bound, ctx, errors, MINIMAL};

    /// A value on line 1 of a one-line file.
    fn spanned<T>(value: T) -> Spanned<T> {
        Spanned::new(0..1, value)
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
        let line =
            |value: &str| MINIMAL.replace("access_token_file = \"token\"", &format!("access_token = \"{value}\""));
        for bad in ["s3cr3t\\r\\nx", "s3\\tcr3t", "  "] {
            let e = parse(&line(bad), &ctx()).unwrap_err();
            assert_eq!((e[0].key.as_str(), e[0].line), ("access_token", Some(3)), "{bad}: {e:?}");
            assert!(!e[0].to_string().contains("s3"), "{e:?}");
        }
        assert!(parse(&line("s3cr3t\\r\\nx"), &ctx()).unwrap_err()[0].message.contains("control character (CR"));
    }

    #[test]
    fn plain_http_is_only_quiet_on_loopback() {
        let local = parse(&format!("api_base = \"http://127.0.0.1:8080\"\n{MINIMAL}"), &ctx()).unwrap();
        assert!(local.warnings.is_empty());
        let remote = parse(&format!("api_base = \"http://proxy.example\"\n{MINIMAL}"), &ctx()).unwrap();
        assert_eq!(remote.warnings.len(), 1);
        assert_eq!(errors(&format!("api_base = \"ftp://x\"\n{MINIMAL}"))[0].0, "api_base");
    }

    #[test]
    fn every_top_level_and_sender_duration_has_a_maximum() {
        let top = [
            ("attribution_window_days", defaults::ATTRIBUTION_WINDOW_DAYS),
            ("future_tolerance_minutes", defaults::FUTURE_TOLERANCE_MINUTES),
            ("max_queue_mb", defaults::MAX_QUEUE_MB),
        ];
        for (key, limit) in top {
            check_bound(key, limit, 1, |n| format!("{key} = {n}\n{MINIMAL}"));
        }
        let sender = [
            ("backoff_base_ms", defaults::BACKOFF_BASE_MS),
            ("backoff_max_secs", defaults::BACKOFF_MAX_SECS),
            ("throttle_backoff_max_secs", defaults::THROTTLE_BACKOFF_MAX_SECS),
            ("connect_timeout_secs", defaults::CONNECT_TIMEOUT_SECS),
            ("request_timeout_secs", defaults::REQUEST_TIMEOUT_SECS),
            ("auth_retry_secs", defaults::AUTH_RETRY_SECS),
            ("recovery_probe_secs", defaults::RECOVERY_PROBE_SECS),
            ("recovery_jitter_secs", defaults::RECOVERY_JITTER_SECS),
            ("sent_retention_days", defaults::SENT_RETENTION_DAYS),
        ];
        let line = MINIMAL.lines().count() + 3;
        for (key, limit) in sender {
            check_bound(&format!("sender.{key}"), limit, line, |n| format!("{MINIMAL}\n[sender]\n{key} = {n}\n"));
        }
    }

    #[test]
    fn a_u64_max_duration_is_refused_not_a_panic() {
        let text = format!("{MINIMAL}\n[sender]\nrequest_timeout_secs = {}\n", i64::MAX);
        assert_eq!(errors(&text)[0].0, "sender.request_timeout_secs");
    }

    #[test]
    fn sender_defaults_and_floors() {
        let c = parse(MINIMAL, &ctx()).unwrap().sender;
        assert_eq!(c.backoff_base, Duration::from_millis(defaults::BACKOFF_BASE_MS.default));
        assert_eq!(c.backoff_max, Duration::from_secs(60));
        assert_eq!(c.throttle_backoff_max, Duration::from_secs(300));
        assert_eq!(c.connect_timeout, Duration::from_secs(10));
        assert_eq!(c.request_timeout, Duration::from_secs(30));
        assert_eq!(c.auth_retry, Duration::from_secs(300));
        assert_eq!(c.recovery_probe, Duration::from_secs(5));
        assert_eq!(c.recovery_jitter, Duration::from_secs(5));
        assert_eq!(c.sent_retention, Duration::from_secs(35 * 86_400));
        let zero = "backoff_base_ms = 0\nbackoff_max_secs = 0\nrequest_timeout_secs = 0\nrecovery_jitter_secs = 0";
        let c = parse(&format!("{MINIMAL}\n[sender]\n{zero}\n"), &ctx()).unwrap().sender;
        assert_eq!(c.backoff_base, Duration::from_millis(1));
        assert_eq!(c.backoff_max, Duration::from_secs(1));
        assert_eq!(c.request_timeout, Duration::from_secs(1));
        assert_eq!(c.recovery_jitter, Duration::ZERO);
    }

    #[test]
    fn event_source_ids_are_15_to_22_digits_and_warned_unless_19() {
        // (id, valid, warned)
        let cases = [
            ("7181537436256731137", true, false),
            (" 718153743625673 ", true, true),
            ("7181537436256731137123", true, true),
            ("718153743625673113", true, true),
            ("71815374362567", false, false),
            ("71815374362567311371234", false, false),
            ("71815374362567x1137", false, false),
        ];
        for (id, valid, warned) in cases {
            let mut f = Findings::new("x");
            assert_eq!(event_source_id(&spanned(id.to_string()), &mut f), id.trim());
            assert_eq!(f.errors.is_empty(), valid, "{id}");
            assert_eq!(f.warnings.len(), usize::from(warned), "{id}: {:?}", f.warnings);
        }
    }

    #[test]
    fn the_queue_lives_where_it_is_told_else_in_the_state_or_data_directory() {
        let mut f = Findings::new("");
        let mut ctx = ctx();
        assert_eq!(
            queue_path(Some(Path::new("q.sqlite")), false, false, &ctx, &mut f),
            PathBuf::from("/etc/oea/q.sqlite")
        );
        assert_eq!(
            queue_path(None, true, false, &ctx, &mut f),
            PathBuf::from("/home/u/.local/share/oea/queue.dry-run.sqlite")
        );
        ctx.user_data_dir = None;
        assert!(f.errors.is_empty());
        queue_path(None, false, false, &ctx, &mut f);
        assert_eq!(f.errors[0].key, "queue_path");
    }

    #[test]
    fn attribution_windows_are_a_day_or_more_and_warned_past_tiktoks() {
        let cases = [(1, false, false), (28, false, false), (29, false, true), (0, true, false)];
        for (days, error, warned) in cases {
            let mut f = Findings::new("x");
            let window = attribution_window(Some(&spanned(days)), &mut f);
            assert_eq!((f.errors.is_empty(), f.warnings.is_empty()), (!error, !warned), "{days}");
            if !error {
                assert_eq!(window, Duration::from_secs(u64::from(days) * 86_400));
            }
        }
        assert_eq!(attribution_window(None, &mut Findings::new("")), Duration::from_secs(28 * 86_400));
    }

    #[test]
    fn the_queue_cap_is_16_mb_to_16_tib() {
        let mut f = Findings::new("x");
        assert_eq!(max_queue_bytes(None, &mut f), 2048 * 1024 * 1024);
        assert_eq!(max_queue_bytes(Some(&spanned(16)), &mut f), 16 * 1024 * 1024);
        assert!(f.errors.is_empty());
        max_queue_bytes(Some(&spanned(15)), &mut f);
        assert_eq!(f.errors[0].message, "must be at least 16");
    }

    #[test]
    fn bounded_takes_the_default_the_value_or_reports_the_maximum() {
        let limit = Limit { default: 7, max: 10, max_words: "ten" };
        let mut f = Findings::new("a\nb = 11");
        assert_eq!(bounded("b", None::<&Spanned<u64>>, limit, &mut f), 7);
        assert_eq!(bounded("b", Some(&spanned(10u64)), limit, &mut f), 10);
        assert!(f.errors.is_empty());
        bounded("b", Some(&Spanned::new(2..8, 11u64)), limit, &mut f);
        assert_eq!(f.errors[0].to_string(), "line 2: `b`: must be at most 10 (ten)");
    }

    #[test]
    fn a_choice_is_one_of_its_words_or_the_first_when_absent() {
        let words = [("gross", 1), ("net", 2)];
        let mut f = Findings::new("x");
        assert_eq!(choice(None, &words, "k", &mut f), 1);
        assert_eq!(choice(Some(&spanned("net".to_string())), &words, "k", &mut f), 2);
        assert!(f.errors.is_empty());
        choice(Some(&spanned("both".to_string())), &words, "k", &mut f);
        assert_eq!(f.errors[0].to_string(), "line 1: `k`: `both` is not one of gross, net");
    }
}
