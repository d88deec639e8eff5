//! `check-config`'s report of the effective settings. The token is never shown, nor the
//! credentials or query of a URL.

use super::url::redact_url;
use super::{AfterIngest, Config, SourceConfig};

/// One line of the report: a section's header, or a key (as the config spells it) and its value.
enum Line {
    Header(String),
    Pair(&'static str, String),
}

/// The effective settings as `check-config` prints them: every key as the config spells it and
/// its value (`format = native-csv`, `after_ingest = archive`), aligned, then the warnings. The
/// token is never shown.
pub fn describe(config: &Config) -> String {
    let mut lines = top_level(config);
    let s = &config.sender;
    lines.push(Line::Header("[sender]".into()));
    lines.extend([
        Line::Pair("batch_size", s.batch_size.to_string()),
        Line::Pair("backoff_base_ms", s.backoff_base.as_millis().to_string()),
        Line::Pair("backoff_max_secs", s.backoff_max.as_secs().to_string()),
        Line::Pair("throttle_backoff_max_secs", s.throttle_backoff_max.as_secs().to_string()),
        Line::Pair("connect_timeout_secs", s.connect_timeout.as_secs().to_string()),
        Line::Pair("request_timeout_secs", s.request_timeout.as_secs().to_string()),
        Line::Pair("auth_retry_secs", s.auth_retry.as_secs().to_string()),
        Line::Pair("sent_retention_days", (s.sent_retention.as_secs() / 86_400).to_string()),
    ]);
    for src in &config.sources {
        lines.push(Line::Header(format!("[[source]] {}", src.name)));
        lines.extend(source(src, config));
    }
    let width = lines.iter().map(|l| if let Line::Pair(k, _) = l { k.len() } else { 0 }).max().unwrap_or(0);
    let mut out = String::new();
    for line in lines {
        match line {
            Line::Header(h) => out.push_str(&format!("\n{h}\n")),
            Line::Pair(key, value) => out.push_str(&format!("{key:<width$} = {value}\n")),
        }
    }
    for w in &config.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    out
}

fn top_level(config: &Config) -> Vec<Line> {
    let path_or = |p: Option<&std::path::Path>, none: &str| p.map_or(none.to_string(), |p| p.display().to_string());
    vec![
        Line::Pair("event_source_id", config.event_source_id.clone()),
        Line::Pair(
            "access token",
            config.token.as_ref().map_or("none (dry run)".to_string(), |t| format!("<redacted>, from {t}")),
        ),
        Line::Pair("api_base", redact_url(&config.api_base)),
        Line::Pair("proxy", config.proxy.as_deref().map_or("from environment, if any".to_string(), redact_url)),
        Line::Pair("ca_bundle", path_or(config.ca_bundle.as_deref(), "none (built-in roots)")),
        Line::Pair("queue_path", config.queue_path.display().to_string()),
        Line::Pair("max_queue_mb", (config.max_queue_bytes / (1024 * 1024)).to_string()),
        Line::Pair("metrics_textfile", path_or(config.metrics_textfile.as_deref(), "none")),
        Line::Pair("log_format", config.log_format.name().to_string()),
        Line::Pair("test_event_code", config.test_event_code.as_deref().unwrap_or("none").to_string()),
        Line::Pair("dry_run", config.dry_run.to_string()),
        Line::Pair("attribution_window_days", (config.attribution_window.as_secs() / 86_400).to_string()),
        Line::Pair("future_tolerance_minutes", (config.future_tolerance.as_secs() / 60).to_string()),
    ]
}

/// One `[[source]]`'s lines, indented under its header.
fn source(src: &SourceConfig, config: &Config) -> Vec<Line> {
    let d = &src.defaults;
    let mut lines = vec![
        Line::Pair("  path", src.path.display().to_string()),
        Line::Pair("  format", format!("{} (.{})", src.format.name(), src.extensions.join(", ."))),
        Line::Pair("  time_zone", d.time_zone.iana_name().unwrap_or("(system)").to_string()),
        Line::Pair("  currency", d.currency.map_or("from file", |c| c.code()).to_string()),
        Line::Pair("  shop_id", d.shop_id.as_deref().unwrap_or("from file").to_string()),
        Line::Pair("  till_id", d.till_id.as_deref().unwrap_or("none").to_string()),
        Line::Pair("  phone_region", d.phone_region.map_or("none".to_string(), |r| r.as_ref().to_string())),
    ];
    if src.append {
        lines.push(Line::Pair(
            "  append",
            format!(
                "true: append mode (files never moved; last record taken after {}s idle)",
                src.append_idle.as_secs()
            ),
        ));
    } else {
        let after = match src.after_ingest {
            AfterIngest::Archive => format!(
                "archive (into {}, kept {} days)",
                src.archive_dir.display(),
                src.archive_keep(config.attribution_window).as_secs() / 86_400
            ),
            other => other.name().to_string(),
        };
        lines.push(Line::Pair("  after_ingest", after));
        if let Some(m) = &src.done_marker {
            lines.push(Line::Pair("  done_marker", format!("{m} (a file is taken once `{m}` exists)")));
        }
    }
    lines.push(Line::Pair("  settle_secs", src.settle.as_secs().to_string()));
    lines.push(Line::Pair("  rescan_secs", src.rescan.as_secs().to_string()));
    let zero = match src.screen.zero_value {
        crate::event::screen::ZeroValue::Skip => "skip",
        crate::event::screen::ZeroValue::Send => "send",
    };
    lines.push(Line::Pair("  zero_value", zero.to_string()));
    lines.push(Line::Pair("  require_match_key", src.screen.require_match_key.to_string()));
    lines.push(Line::Pair("  follow_symlinks", src.follow_symlinks.to_string()));
    if let Some(d) = src.expect_files_within {
        lines.push(Line::Pair("  expect_files_within", crate::config::defaults::duration_words(d)));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::config::test_support::{ctx, MINIMAL};

    #[test]
    fn settings_are_shown_as_the_config_spells_them_and_aligned() {
        let text = format!("phone_region = \"de\"\nmetrics_textfile = \"/var/lib/oea/m.prom\"\n{MINIMAL}");
        let shown = describe(&parse(&text, &ctx()).unwrap());
        // (key, value)
        let expected = [
            ("metrics_textfile", "/var/lib/oea/m.prom"),
            ("  format", "native-csv (.csv, .txt)"),
            ("  phone_region", "DE"),
            ("  shop_id", "s042"),
            ("  after_ingest", "archive (into /srv/pos/archive, kept 35 days)"),
            ("attribution_window_days", "28"),
        ];
        let column = shown.lines().next().and_then(|l| l.find(" = ")).unwrap();
        for (key, value) in expected {
            let line = format!("{key:<column$} = {value}");
            assert!(shown.lines().any(|l| l == line), "{line}\n{shown}");
        }
        assert!(shown.lines().filter(|l| l.contains(" = ")).all(|l| l.find(" = ") == Some(column)), "{shown}");
        let delete = describe(&parse(&format!("{MINIMAL}after_ingest = \"delete\"\n"), &ctx()).unwrap());
        assert!(delete.lines().any(|l| l.starts_with("  after_ingest") && l.ends_with("= delete")), "{delete}");
    }

    #[test]
    fn url_credentials_and_queries_are_not_shown() {
        let text = format!(
            "api_base = \"http://user:s3cr3t@127.0.0.1:9/?token=abc\"\nproxy = \"http://px:pw0rd@proxy.example:3128\"\n{MINIMAL}"
        );
        let shown = describe(&parse(&text, &ctx()).unwrap());
        let value = |key: &str| {
            shown.lines().filter_map(|l| l.split_once(" = ")).find(|(k, _)| k.trim() == key).map(|(_, v)| v)
        };
        assert_eq!(value("api_base"), Some("http://***@127.0.0.1:9/?***"), "{shown}");
        assert_eq!(value("proxy"), Some("http://***@proxy.example:3128"), "{shown}");
        for secret in ["s3cr3t", "token=abc", "pw0rd"] {
            assert!(!shown.contains(secret), "{secret}: {shown}");
        }
    }
}
