//! One `[[source]]` table into a [`SourceConfig`], a small pure function per group of keys (format,
//! time zone and money, CSV dialect, column mappings, what happens after ingest, append mode,
//! done markers, timers). Problems go into [`Findings`] with the key as `source[i].key`.

use super::defaults;
use super::raw::RawSource;
use super::validate::{bounded, choice, phone_region, resolve, Findings};
use super::{AfterIngest, Context, SourceConfig};
use crate::event::money::Currency;
use crate::event::name::NameTable;
use crate::event::screen::{Screen, ZeroValue};
use crate::event::SourceDefaults;
use crate::format::{ConsentPolicy, DateOnly, Dialect, Format, PartialRefunds, Policy, Quoting};
use jiff::tz::TimeZone;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

type Region = phonenumber::country::Id;

/// Every `[[source]]`, in file order; two sources may not share a name.
pub(super) fn sources(
    raw: &[RawSource],
    ctx: &Context,
    phone_region: Option<Region>,
    event_names: &NameTable,
    f: &mut Findings,
) -> Vec<SourceConfig> {
    if raw.is_empty() {
        f.warn("no [[source]] configured: only `import` of named files will queue events");
    }
    let mut sources: Vec<SourceConfig> = Vec::new();
    for (i, src) in raw.iter().enumerate() {
        let source = source(i, src, ctx, phone_region, event_names, f);
        if sources.iter().any(|s| s.name == source.name) {
            f.error(&format!("source[{i}].name"), None, format!("source name `{}` is used twice", source.name));
        }
        if let Some(j) = sources.iter().position(|s| lexical(&s.path) == lexical(&source.path)) {
            f.error(
                &format!("source[{i}].path"),
                Some(src.path.span()),
                format!(
                    "`{}` is also source[{j}]'s folder: a file there would be read by one of them only; give each source its own folder",
                    source.path.display()
                ),
            );
        }
        sources.push(source);
    }
    sources
}

/// No source reads the queue's folder, nor archives into it: the agent writes its queue, WAL and
/// moved-aside copies there, and every file in an archive folder is hashed and pruned by age. A
/// source in a subfolder of the queue's folder is fine (folders are not read recursively).
pub(super) fn check_queue_apart(raw: &[RawSource], sources: &[SourceConfig], queue_path: &Path, f: &mut Findings) {
    let Some(queue_dir) = queue_path.parent().filter(|d| !d.as_os_str().is_empty()) else { return };
    let queue_dir = lexical(queue_dir);
    for (i, (src, source)) in raw.iter().zip(sources).enumerate() {
        if lexical(&source.path) == queue_dir {
            f.error(
                &format!("source[{i}].path"),
                Some(src.path.span()),
                format!(
                    "`{}` is the queue's folder; keep exports and the queue apart (move the source's path or queue_path)",
                    source.path.display()
                ),
            );
        } else if lexical(&source.archive_dir) == queue_dir {
            f.error(
                &format!("source[{i}].archive_dir"),
                None,
                format!(
                    "`{}` is the queue's folder, where old files would be pruned; set another archive_dir (or move queue_path)",
                    source.archive_dir.display()
                ),
            );
        }
    }
}

/// A path with `.` dropped and `..` taken back, without looking at the disk (links are compared
/// by [`super::folders`]).
pub(super) fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.components().next_back(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Whether a format's rows can carry a shop id of their own: only the formats whose `columns`
/// map our fields (`native-csv`, `jsonl`, `json`, with a `shop_id` column or path). The POS
/// profiles' rows never do, so their source must set `shop_id`.
fn rows_carry_shop_id(format: Format) -> bool {
    format.supports_columns() && format.column_fields().contains(&"shop_id")
}

/// `shop_id`: trimmed-empty is none; required when the format's rows carry no shop id, else every
/// order would be rejected at run time.
fn shop_id(
    key: &str,
    raw: Option<&Spanned<String>>,
    format: (Format, Range<usize>),
    f: &mut Findings,
) -> Option<String> {
    let shop_id = raw.map(|s| s.get_ref().clone()).filter(|s| !s.trim().is_empty());
    if shop_id.is_none() && !rows_carry_shop_id(format.0) {
        f.error(
            key,
            Some(raw.map_or(format.1, |s| s.span())),
            format!(
                "is required for format = \"{}\": its rows carry no shop id, so every order would be rejected; set shop_id to the store's id (e.g. shop_id = \"berlin-01\")",
                format.0.name()
            ),
        );
    }
    shop_id
}

/// The `i`-th `[[source]]`; `phone_region` and `event_names` are the top level's.
fn source(
    i: usize,
    src: &RawSource,
    ctx: &Context,
    phone_region: Option<Region>,
    event_names: &NameTable,
    f: &mut Findings,
) -> SourceConfig {
    let key = |k: &str| format!("source[{i}].{k}");
    let name = src.name.clone().unwrap_or_else(|| format!("source{}", i + 1));
    let format = format(&key("format"), &src.format, f);
    let shop_id = shop_id(&key("shop_id"), src.shop_id.as_ref(), (format, src.format.span()), f);
    let time_zone = time_zone(&key("time_zone"), src.time_zone.as_ref(), f);
    let currency = src.currency.as_ref().and_then(|c| currency(&key("currency"), c, f));
    let decimal_separator = decimal_separator(&key("decimal_separator"), src.decimal_separator.as_ref(), format, f);
    let delimiter = src.delimiter.as_ref().and_then(|d| delimiter(&key("delimiter"), d, f));
    let quote = quote(&key("quote"), src.quote.as_ref(), delimiter, f);
    let source_region = match &src.phone_region {
        Some(r) => self::phone_region(&key("phone_region"), r, f),
        None => phone_region,
    };
    let after_ingest = choice(
        src.after_ingest.as_ref(),
        &[("archive", AfterIngest::Archive), ("delete", AfterIngest::Delete), ("keep", AfterIngest::Keep)],
        &key("after_ingest"),
        f,
    );
    let encoding = src.encoding.as_ref().and_then(|e| encoding(&key("encoding"), e, f));
    let policy = policy(src, &key, f);
    let screen = screen(src, &key, f);
    check_columns(&key, &src.columns, format, f);
    let path = resolve(ctx, src.path.get_ref());
    let archive_dir = archive_dir(&path, src.archive_dir.as_deref());
    let extensions = extensions(src.extensions.as_deref(), format);
    let append = append(src, &key, format, encoding, f);
    let done_marker =
        src.done_marker.as_ref().and_then(|m| done_marker(&key("done_marker"), m, &extensions, append, f));
    let settle = bounded(&key("settle_secs"), src.settle_secs.as_ref(), defaults::SETTLE_SECS, f);
    let rescan = bounded(&key("rescan_secs"), src.rescan_secs.as_ref(), defaults::RESCAN_SECS, f);
    let network_poll =
        bounded(&key("network_poll_secs"), src.network_poll_secs.as_ref(), defaults::NETWORK_POLL_SECS, f);
    let append_idle = bounded(&key("append_idle_secs"), src.append_idle_secs.as_ref(), defaults::APPEND_IDLE_SECS, f);
    let archive_keep_days =
        src.archive_keep_days.as_ref().map(|days| archive_keep_days(&key("archive_keep_days"), days, f));
    let expect_files_within =
        src.expect_files_within.as_ref().and_then(|d| expect_files_within(&key("expect_files_within"), d, f));
    SourceConfig {
        name,
        path,
        format,
        extensions,
        csv: Dialect { delimiter, quote },
        defaults: SourceDefaults {
            time_zone,
            time_formats: if src.time_formats.is_empty() {
                format.default_time_formats().iter().map(|f| f.to_string()).collect()
            } else {
                src.time_formats.clone()
            },
            currency,
            shop_id,
            till_id: src.till_id.clone().filter(|s| !s.trim().is_empty()),
            decimal_separator,
            phone_region: source_region,
            event_names: event_names.clone(),
        },
        after_ingest,
        archive_dir,
        archive_keep_days,
        settle: Duration::from_secs(settle),
        rescan: Duration::from_secs(rescan.max(1)),
        columns: src.columns.clone(),
        network_poll: Duration::from_secs(network_poll.max(1)),
        encoding,
        policy,
        screen,
        append,
        append_idle: Duration::from_secs(append_idle.max(1)),
        done_marker,
        follow_symlinks: src.follow_symlinks,
        expect_files_within,
        path_line: None,
    }
}

/// `expect_files_within`: a duration (`"26h"`) between a minute and a year.
fn expect_files_within(key: &str, raw: &Spanned<String>, f: &mut Findings) -> Option<Duration> {
    let (min, max) = (defaults::EXPECT_FILES_WITHIN_MIN, defaults::EXPECT_FILES_WITHIN_MAX);
    match defaults::parse_duration(raw.get_ref()) {
        Some(d) if (min..=max).contains(&d) => Some(d),
        Some(_) => {
            f.error(key, Some(raw.span()), "must be between a minute (\"1m\") and a year (\"365d\")");
            None
        }
        None => {
            f.error(
                key,
                Some(raw.span()),
                format!("`{}` is not a duration (e.g. \"26h\", \"2d\", \"90m\")", raw.get_ref()),
            );
            None
        }
    }
}

/// `format`: one of [`Format::ALL`]'s names.
fn format(key: &str, raw: &Spanned<String>, f: &mut Findings) -> Format {
    Format::from_name(raw.get_ref()).unwrap_or_else(|| {
        let known: Vec<&str> = Format::ALL.iter().map(|(n, _)| *n).collect();
        f.error(key, Some(raw.span()), format!("unknown format `{}` (known: {})", raw.get_ref(), known.join(", ")));
        Format::NativeCsv
    })
}

/// `time_zone`: an IANA name; the system's zone when absent.
fn time_zone(key: &str, raw: Option<&Spanned<String>>, f: &mut Findings) -> TimeZone {
    let Some(tz) = raw else { return TimeZone::system() };
    TimeZone::get(tz.get_ref()).unwrap_or_else(|_| {
        f.error(key, Some(tz.span()), format!("`{}` is not an IANA time zone (e.g. Europe/Berlin)", tz.get_ref()));
        TimeZone::UTC
    })
}

/// `currency`: one of TikTok's currency codes.
fn currency(key: &str, raw: &Spanned<String>, f: &mut Findings) -> Option<Currency> {
    let parsed = Currency::parse(raw.get_ref());
    if parsed.is_none() {
        f.error(key, Some(raw.span()), format!("`{}` is not one of TikTok's supported currencies", raw.get_ref()));
    }
    parsed
}

/// `decimal_separator`: `.` or `,`; the format's own when absent.
fn decimal_separator(key: &str, raw: Option<&Spanned<String>>, format: Format, f: &mut Findings) -> char {
    match raw.map(|d| (d.get_ref().as_str(), d.span())) {
        None => format.default_decimal_separator(),
        Some((".", _)) => '.',
        Some((",", _)) => ',',
        Some((_, span)) => {
            f.error(key, Some(span), "must be \".\" or \",\"");
            '.'
        }
    }
}

/// `delimiter`: one ASCII character other than `"` and the line ends, or a tab.
fn delimiter(key: &str, raw: &Spanned<String>, f: &mut Findings) -> Option<u8> {
    match raw.get_ref().as_str() {
        "\\t" | "\t" | "tab" => Some(b'\t'),
        s if s.len() == 1 && s.is_ascii() && !matches!(s, "\"" | "\r" | "\n") => Some(s.as_bytes()[0]),
        _ => {
            f.error(key, Some(raw.span()), "must be one ASCII character other than a line end (or \"tab\")");
            None
        }
    }
}

/// `quote`: one ASCII character other than the delimiter and the line ends, or `none`; detected
/// when absent.
fn quote(key: &str, raw: Option<&Spanned<String>>, delimiter: Option<u8>, f: &mut Findings) -> Quoting {
    match raw.map(|q| (q.get_ref().as_str(), q.span())) {
        None => Quoting::Detect,
        Some(("none", _)) => Quoting::Off,
        Some((q, _))
            if q.len() == 1 && q.is_ascii() && !matches!(q, "\r" | "\n") && Some(q.as_bytes()[0]) != delimiter =>
        {
            Quoting::Char(q.as_bytes()[0])
        }
        Some((_, span)) => {
            f.error(
                key,
                Some(span),
                "must be one ASCII character other than the delimiter or a line end (e.g. \"'\"), or \"none\"",
            );
            Quoting::Detect
        }
    }
}

/// `encoding`: a WHATWG encoding label.
fn encoding(key: &str, raw: &Spanned<String>, f: &mut Findings) -> Option<&'static encoding_rs::Encoding> {
    let found = encoding_rs::Encoding::for_label(raw.get_ref().trim().as_bytes());
    if found.is_none() {
        f.error(
            key,
            Some(raw.span()),
            format!("`{}` is not an encoding label (e.g. utf-8, windows-1252, utf-16le)", raw.get_ref()),
        );
    }
    found
}

/// Which sales are taken and how: staff, in-store, partial refunds, date-only times, consent.
fn policy(src: &RawSource, key: &impl Fn(&str) -> String, f: &mut Findings) -> Policy {
    let partial_refunds = choice(
        src.partial_refunds.as_ref(),
        &[("gross", PartialRefunds::Gross), ("net", PartialRefunds::Net)],
        &key("partial_refunds"),
        f,
    );
    let date_only =
        choice(src.date_only.as_ref(), &[("reject", DateOnly::Reject), ("noon", DateOnly::Noon)], &key("date_only"), f);
    let consent = choice(
        src.consent.as_ref(),
        &[("strip", ConsentPolicy::Strip), ("skip", ConsentPolicy::Skip)],
        &key("consent"),
        f,
    );
    Policy { skip_staff: src.skip_staff, in_store_only: src.in_store_only, partial_refunds, date_only, consent }
}

/// Which built events are sent: `zero_value` (default [`defaults::ZERO_VALUE`]) and
/// `require_match_key`.
fn screen(src: &RawSource, key: &impl Fn(&str) -> String, f: &mut Findings) -> Screen {
    let choices = [("skip", ZeroValue::Skip), ("send", ZeroValue::Send)];
    debug_assert_eq!(choices[0].1, defaults::ZERO_VALUE);
    let zero_value = choice(src.zero_value.as_ref(), &choices, &key("zero_value"), f);
    Screen { zero_value, require_match_key: src.require_match_key.unwrap_or(defaults::REQUIRE_MATCH_KEY) }
}

/// `columns`: each names one of our fields (JSON formats: as a dotted path); only the formats
/// without fixed columns take mappings.
fn check_columns(key: &impl Fn(&str) -> String, columns: &BTreeMap<String, String>, format: Format, f: &mut Findings) {
    let fields = format.column_fields();
    for (field, column) in columns {
        let at = key(&format!("columns.{field}"));
        if !fields.contains(&field.as_str()) {
            f.error(&at, None, format!("`{field}` is not a field (fields: {})", fields.join(", ")));
        } else if format.columns_are_paths() && !crate::format::valid_json_path(column) {
            f.error(&at, None, format!("`{column}` is not a dotted path (e.g. \"customer.email\")"));
        } else if column.trim().is_empty() {
            f.error(&at, None, "must name a column");
        }
    }
    if !columns.is_empty() && !format.supports_columns() {
        let mapped = names_where(Format::supports_columns);
        f.error(
            &key("columns"),
            None,
            format!("column mappings apply to format = {mapped}; `{}` knows its columns", format.name()),
        );
    }
}

/// The registry's formats that can do something, as the config spells them: `"a", "b" or "c"`.
fn names_where(can: fn(Format) -> bool) -> String {
    let names: Vec<String> = Format::ALL.iter().filter(|(_, f)| can(*f)).map(|(n, _)| format!("\"{n}\"")).collect();
    match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// `archive_keep_days`: at least a day, at most [`defaults::ARCHIVE_KEEP_DAYS`]'s maximum.
fn archive_keep_days(key: &str, raw: &Spanned<u64>, f: &mut Findings) -> u64 {
    if *raw.get_ref() == 0 {
        f.error(key, Some(raw.span()), "must be at least 1");
        return 1;
    }
    bounded(key, Some(raw), defaults::ARCHIVE_KEEP_DAYS, f)
}

/// `archive_dir`, relative to the source's folder; `archive` in it when absent.
fn archive_dir(path: &Path, raw: Option<&Path>) -> PathBuf {
    match raw {
        None => path.join("archive"),
        Some(a) if a.is_absolute() => a.to_path_buf(),
        Some(a) => path.join(a),
    }
}

/// `extensions` without dots, lower case; the format's own when absent.
fn extensions(raw: Option<&[String]>, format: Format) -> Vec<String> {
    let given = raw.map(<[String]>::to_vec);
    given
        .unwrap_or_else(|| format.default_extensions().iter().map(|e| e.to_string()).collect())
        .into_iter()
        .map(|e| e.trim_start_matches('.').to_ascii_lowercase())
        .collect()
}

/// `append`: only for line formats, with files kept in place and not UTF-16; `append_idle_secs`
/// at least 1, and warned about without append mode.
fn append(
    src: &RawSource,
    key: &impl Fn(&str) -> String,
    format: Format,
    encoding: Option<&'static encoding_rs::Encoding>,
    f: &mut Findings,
) -> bool {
    let append = src.append.as_ref().is_some_and(|a| *a.get_ref());
    if let Some(a) = src.append.as_ref().filter(|a| *a.get_ref()) {
        if !format.supports_append() {
            f.error(
                &key("append"),
                Some(a.span()),
                format!(
                    "append mode reads format = {} only, not `{}` (exports that are written whole need no append mode)",
                    names_where(Format::supports_append),
                    format.name()
                ),
            );
        }
        if let Some(after) = src.after_ingest.as_ref().filter(|v| v.get_ref() != "keep") {
            f.error(
                &key("after_ingest"),
                Some(after.span()),
                "a file in append mode is still being written, so it is never archived or deleted; remove after_ingest (or set \"keep\")",
            );
        }
        if encoding.is_some_and(|e| e == encoding_rs::UTF_16LE || e == encoding_rs::UTF_16BE) {
            f.error(
                &key("encoding"),
                src.encoding.as_ref().map(|e| e.span()),
                "append mode reads UTF-8 or single-byte encodings, not UTF-16",
            );
        }
    }
    if let Some(idle) = &src.append_idle_secs {
        if !append {
            f.warn(format!("{}: has no effect without append = true", key("append_idle_secs")));
        } else if *idle.get_ref() == 0 {
            f.error(&key("append_idle_secs"), Some(idle.span()), "must be at least 1");
        }
    }
    append
}

/// `done_marker`: a valid template ([`check_done_marker`]), and never with append mode.
fn done_marker(
    key: &str,
    raw: &Spanned<String>,
    extensions: &[String],
    append: bool,
    f: &mut Findings,
) -> Option<String> {
    match check_done_marker(raw.get_ref(), extensions) {
        Ok(()) if append => {
            f.error(key, Some(raw.span()), "a file in append mode is never done; remove done_marker");
            None
        }
        Ok(()) => Some(raw.get_ref().clone()),
        Err(reason) => {
            f.error(key, Some(raw.span()), reason);
            None
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{check_bound, ctx, errors, MINIMAL};
    use crate::config::{describe, parse};

    #[test]
    fn archived_files_are_kept_for_the_window_and_a_margin_unless_archive_keep_days_says() {
        let day = Duration::from_secs(86_400);
        let with = |extra: &str| parse(&format!("attribution_window_days = 10\n{MINIMAL}{extra}"), &ctx());
        assert_eq!(with("").unwrap().sources[0].archive_keep(day * 10), day * 17);
        assert_eq!(with("archive_keep_days = 3\n").unwrap().sources[0].archive_keep(day * 10), day * 3);
        let line = MINIMAL.lines().count() + 1;
        assert_eq!(
            errors(&format!("{MINIMAL}archive_keep_days = 0\n")),
            [("source[0].archive_keep_days".to_string(), Some(line))]
        );
        check_bound("source[0].archive_keep_days", defaults::ARCHIVE_KEEP_DAYS, line, |n| {
            format!("{MINIMAL}archive_keep_days = {n}\n")
        });
    }

    #[test]
    fn expect_files_within_is_a_duration_from_a_minute_to_a_year() {
        let with = |value: &str| format!("{MINIMAL}expect_files_within = \"{value}\"\n");
        assert_eq!(parse(MINIMAL, &ctx()).unwrap().sources[0].expect_files_within, None);
        let c = parse(&with("26h"), &ctx()).unwrap();
        assert_eq!(c.sources[0].expect_files_within, Some(Duration::from_secs(26 * 3600)));
        let line = MINIMAL.lines().count() + 1;
        for bad in ["26", "30s", "366d", "soon"] {
            assert_eq!(errors(&with(bad)), [("source[0].expect_files_within".to_string(), Some(line))], "{bad}");
        }
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
        for bad in
            ["quote = \"\"", "quote = \"ab\"", "quote = \";\"\ndelimiter = \";\"", "quote = \"é\"", "quote = \"\\n\""]
        {
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
    fn every_source_duration_has_a_maximum() {
        let keys = [
            ("settle_secs", defaults::SETTLE_SECS),
            ("rescan_secs", defaults::RESCAN_SECS),
            ("network_poll_secs", defaults::NETWORK_POLL_SECS),
            ("append_idle_secs", defaults::APPEND_IDLE_SECS),
        ];
        for (key, limit) in keys {
            let with = |n: u64| {
                MINIMAL
                    .replace("format = \"native-csv\"", &format!("format = \"native-csv\"\nappend = true\n{key} = {n}"))
            };
            check_bound(&format!("source[0].{key}"), limit, 9, with);
        }
    }

    #[test]
    fn source_timers_default_and_never_go_below_a_second() {
        let s = &parse(MINIMAL, &ctx()).unwrap().sources[0];
        assert_eq!(
            (s.settle, s.rescan, s.network_poll),
            (Duration::from_secs(2), Duration::from_secs(30), Duration::from_secs(10))
        );
        let zero = "settle_secs = 0\nrescan_secs = 0\nnetwork_poll_secs = 0";
        let s = &parse(&MINIMAL.replace("shop_id", &format!("{zero}\nshop_id")), &ctx()).unwrap().sources[0];
        assert_eq!(
            (s.settle, s.rescan, s.network_poll),
            (Duration::ZERO, Duration::from_secs(1), Duration::from_secs(1))
        );
    }

    #[test]
    fn delimiters_are_one_ascii_character_or_a_tab() {
        let cases = [
            (";", Some(b';')),
            ("tab", Some(b'\t')),
            ("\\t", Some(b'\t')),
            ("\t", Some(b'\t')),
            ("\"", None),
            ("\n", None),
            ("\r", None),
            (";;", None),
            ("é", None),
        ];
        for (written, expected) in cases {
            let mut f = Findings::new("x");
            assert_eq!(delimiter("d", &Spanned::new(0..1, written.to_string()), &mut f), expected, "{written}");
            assert_eq!(f.errors.is_empty(), expected.is_some(), "{written}");
        }
    }

    #[test]
    fn decimal_separators_are_a_point_or_a_comma_else_the_formats_own() {
        let mut f = Findings::new("x");
        let sep = |s: &str, f: &mut Findings| {
            decimal_separator("k", Some(&Spanned::new(0..1, s.to_string())), Format::NativeCsv, f)
        };
        assert_eq!(sep(",", &mut f), ',');
        assert_eq!(sep(".", &mut f), '.');
        assert_eq!(
            decimal_separator("k", None, Format::NativeCsv, &mut f),
            Format::NativeCsv.default_decimal_separator()
        );
        assert!(f.errors.is_empty());
        sep(";", &mut f);
        assert_eq!(f.errors.len(), 1);
    }

    #[test]
    fn extensions_lose_their_dot_and_case_and_archives_sit_in_the_source_folder() {
        let given = ["CSV".to_string(), ".Txt".to_string()];
        assert_eq!(extensions(Some(&given), Format::NativeCsv), ["csv", "txt"]);
        assert_eq!(extensions(None, Format::NativeCsv), Format::NativeCsv.default_extensions());
        let pos = Path::new("/srv/pos");
        assert_eq!(archive_dir(pos, None), PathBuf::from("/srv/pos/archive"));
        assert_eq!(archive_dir(pos, Some(Path::new("done"))), PathBuf::from("/srv/pos/done"));
        assert_eq!(archive_dir(pos, Some(Path::new("/var/done"))), PathBuf::from("/var/done"));
    }

    #[test]
    fn a_format_whose_rows_carry_no_shop_id_needs_the_sources() {
        // (format, shop_id line or none, error)
        let cases = [
            ("native-csv", None, false),
            ("jsonl", None, false),
            ("json", None, false),
            ("toast", Some("shop_id = \"s1\""), false),
            ("toast", None, true),
            ("toast", Some("shop_id = \" \""), true),
            ("arts-poslog", None, true),
            ("shopify-orders", None, true),
            ("square-items", None, true),
            ("dsfinvk", None, true),
        ];
        for (format, shop, error) in cases {
            let text = MINIMAL
                .replace("shop_id = \"s042\"", shop.unwrap_or(""))
                .replace("\"native-csv\"", &format!("\"{format}\""));
            let e = parse(&text, &ctx()).err().unwrap_or_default();
            assert_eq!(!e.is_empty(), error, "{format} {shop:?}: {e:?}");
            if error {
                let line = if shop.is_some() { 10 } else { 7 };
                assert_eq!((e[0].key.as_str(), e[0].line), ("source[0].shop_id", Some(line)), "{format}");
                assert!(e[0].message.contains(&format!("required for format = \"{format}\"")), "{e:?}");
            }
        }
    }

    #[test]
    fn a_folder_is_read_by_one_source_and_never_the_queues() {
        // (second source's path, queue_path, the errors' keys)
        let cases: [(&str, &str, &[&str]); 9] = [
            ("/srv/b", "/var/lib/oea/queue.sqlite", &[]),
            ("/srv/pos", "/var/lib/oea/queue.sqlite", &["source[1].path"]),
            ("/srv/./pos/", "/var/lib/oea/queue.sqlite", &["source[1].path"]),
            ("/srv/x/../pos", "/var/lib/oea/queue.sqlite", &["source[1].path"]),
            ("/var/lib/oea", "/var/lib/oea/queue.sqlite", &["source[1].path"]),
            ("/var/lib/oea/./", "/var/lib/oea/queue.sqlite", &["source[1].path"]),
            // A subfolder of the queue's folder is not read with it.
            ("/var/lib/oea/in", "/var/lib/oea/queue.sqlite", &[]),
            ("/srv/b", "/srv/pos/state/queue.sqlite", &[]),
            // The first source's archive folder.
            ("/srv/b", "/srv/pos/archive/queue.sqlite", &["source[0].archive_dir"]),
        ];
        for (path, queue, keys) in cases {
            let text = format!(
                "queue_path = \"{queue}\"\n{MINIMAL}\n[[source]]\nname = \"b\"\npath = \"{path}\"\nformat = \"jsonl\"\n"
            );
            let found: Vec<String> =
                parse(&text, &ctx()).err().unwrap_or_default().into_iter().map(|e| e.key).collect();
            assert_eq!(found, keys, "{path} {queue}");
        }
        assert_eq!(lexical(Path::new("/a/./b/../c/")), PathBuf::from("/a/c"));
        assert_eq!(lexical(Path::new("../a")), PathBuf::from("../a"));
    }

    #[test]
    fn two_sources_may_not_share_a_name() {
        let second = "[[source]]\npath = \"/srv/b\"\nformat = \"jsonl\"\n";
        assert!(parse(&format!("{MINIMAL}\n{second}"), &ctx()).is_ok());
        let named = MINIMAL.replace("[[source]]", "[[source]]\nname = \"till\"");
        let twice = format!("{named}\n{}", second.replace("[[source]]", "[[source]]\nname = \"till\""));
        assert_eq!(errors(&twice), vec![("source[1].name".to_string(), None)]);
    }
}
