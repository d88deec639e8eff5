//! `check-config`'s report of the effective settings. The token is never shown, nor the
//! credentials or query of a URL.

use super::url::redact_url;
use super::Config;

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
    let _ = writeln!(out, "api_base        = {}", redact_url(&config.api_base));
    let proxy = config.proxy.as_deref().map_or("from environment, if any".to_string(), redact_url);
    let _ = writeln!(out, "proxy           = {proxy}");
    let _ = writeln!(out, "queue_path      = {}", config.queue_path.display());
    let _ = writeln!(out, "test_event_code = {}", config.test_event_code.as_deref().unwrap_or("none"));
    let _ = writeln!(out, "dry_run         = {}", config.dry_run);
    let _ = writeln!(out, "attribution     = {} days", config.attribution_window.as_secs() / 86_400);
    let s = &config.sender;
    let _ = writeln!(
        out,
        "sender          = batch {} events, backoff {:?}..{:?} ({:?} throttled), timeouts connect {:?} request {:?}, auth retry {:?}",
        s.batch_size, s.backoff_base, s.backoff_max, s.throttle_backoff_max, s.connect_timeout, s.request_timeout, s.auth_retry
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
    use crate::config::parse;
    use crate::config::test_support::{ctx, MINIMAL};

    #[test]
    fn url_credentials_and_queries_are_not_shown() {
        let text = format!(
            "api_base = \"http://user:s3cr3t@127.0.0.1:9/?token=abc\"\nproxy = \"http://px:pw0rd@proxy.example:3128\"\n{MINIMAL}"
        );
        let shown = describe(&parse(&text, &ctx()).unwrap());
        assert!(shown.contains("api_base        = http://***@127.0.0.1:9/?***\n"), "{shown}");
        assert!(shown.contains("proxy           = http://***@proxy.example:3128\n"), "{shown}");
        for secret in ["s3cr3t", "token=abc", "pw0rd"] {
            assert!(!shown.contains(secret), "{secret}: {shown}");
        }
    }
}
