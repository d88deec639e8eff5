//! The harness the reader tests share: read a sample export (or a variant of it, written next to
//! copies of its companions when it has any), build every order with the source settings the
//! samples' README gives, and compare the outcome with the README's tables of expected purchases
//! and skips.

use super::{read, Format, FormatError, Parsed, Policy, ReadOptions, Reject, Skip, Summary};
use crate::event::money::Currency;
use crate::event::name::NameTable;
use crate::event::{build, pii, BuildError, Event, RawOrder, SourceDefaults};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pos-exports");

pub fn fixture(name: &str) -> PathBuf {
    Path::new(FIXTURES).join(name)
}

/// A source as the README configures it for one sample.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    pub format: Format,
    pub time_zone: &'static str,
    pub currency: &'static str,
    pub phone_region: Option<&'static str>,
    /// `None`: the format's default time formats.
    pub time_formats: Option<&'static [&'static str]>,
}

impl Source {
    fn defaults(&self) -> SourceDefaults {
        let formats = self.time_formats.unwrap_or(self.format.default_time_formats());
        SourceDefaults {
            time_zone: jiff::tz::TimeZone::get(self.time_zone).unwrap(),
            time_formats: formats.iter().map(|f| f.to_string()).collect(),
            currency: Currency::parse(self.currency),
            shop_id: Some("s1".into()),
            till_id: None,
            decimal_separator: self.format.default_decimal_separator(),
            phone_region: self.phone_region.and_then(pii::parse_region),
            event_names: NameTable::default(),
        }
    }
}

/// What a file turned into, one entry per order, skip or reject, in file order.
#[derive(Debug)]
pub enum Got {
    Purchase(Box<Event>),
    /// An order `event::build` refused, by its id.
    Unbuilt(String, BuildError),
    Skip {
        line: u64,
        order_id: String,
        reason: String,
    },
    Reject {
        line: u64,
        field: Option<String>,
        reason: String,
    },
}

impl Got {
    /// One line that says what a README table row says: for a purchase its time, value,
    /// lines / units and how many emails, phones and external ids survived hashing; for a
    /// skip its line and reason; for a reject (by the reader or by `event::build`) its line and
    /// field.
    pub fn outline(&self) -> String {
        match self {
            Got::Purchase(e) => format!(
                "purchase {} at {} value {} lines {}/{} email {} phone {} external {}",
                e.order_id,
                e.event_time,
                e.value,
                e.contents.len(),
                e.num_items(),
                e.user.email.len(),
                e.user.phone.len(),
                e.user.external_id.len()
            ),
            Got::Unbuilt(_, e) => format!("reject line {} field {}", e.line, e.field),
            Got::Skip { line, order_id, reason } => format!("skip {order_id} line {line}: {reason}"),
            Got::Reject { line, field, .. } => {
                format!("reject line {line} field {}", field.as_deref().unwrap_or("-"))
            }
        }
    }
}

pub fn outlines(got: &[Got]) -> Vec<String> {
    got.iter().map(Got::outline).collect()
}

/// Everything one read produced, orders already built into events.
#[derive(Debug)]
pub struct Outcome {
    pub events: Vec<Event>,
    pub build_errors: Vec<(String, BuildError)>,
    pub rejects: Vec<Reject>,
    pub skips: Vec<Skip>,
    pub summary: Summary,
}

pub fn run(source: &Source, path: &Path, policy: Policy) -> Outcome {
    let options = ReadOptions {
        path: Some(path.to_path_buf()),
        decimal_separator: Some(source.format.default_decimal_separator()),
        policy,
        ..ReadOptions::default()
    };
    let file = std::fs::File::open(path).unwrap();
    run_with(source, file, &options)
}

pub fn run_with(source: &Source, input: impl std::io::Read, options: &ReadOptions) -> Outcome {
    let (got, summary) = read_all(source, input, options);
    let mut outcome =
        Outcome { events: Vec::new(), build_errors: Vec::new(), rejects: Vec::new(), skips: Vec::new(), summary };
    for got in got {
        match got {
            Got::Purchase(event) => outcome.events.push(*event),
            Got::Unbuilt(order_id, e) => outcome.build_errors.push((order_id, e)),
            Got::Skip { line, order_id, reason } => outcome.skips.push(Skip { line, order_id, reason }),
            Got::Reject { line, field, reason } => outcome.rejects.push(Reject { line, field, reason }),
        }
    }
    outcome
}

/// Read `input` as the source's format (decoding as the agent does) and build each order into an
/// event, which must come without warnings: everything the file turned into, in file order.
pub fn read_all(source: &Source, input: impl std::io::Read, options: &ReadOptions) -> (Vec<Got>, Summary) {
    let mut defaults = source.defaults();
    // As the agent does: the source's decimal separator is the readers' and `event::build`'s.
    if let Some(decimal) = options.decimal_separator {
        defaults.decimal_separator = decimal;
    }
    let mut got = Vec::new();
    let summary = read(source.format, input, options, &mut |parsed| {
        got.push(match parsed {
            Parsed::Order(raw) => match build(&raw, &defaults) {
                Ok((event, warnings)) => {
                    assert!(warnings.is_empty(), "{}: {warnings:?}", raw.order_id);
                    Got::Purchase(Box::new(event))
                }
                Err(e) => Got::Unbuilt(raw.order_id.clone(), e),
            },
            Parsed::Skip(s) => Got::Skip { line: s.line, order_id: s.order_id, reason: s.reason },
            Parsed::Reject(r) => Got::Reject { line: r.line, field: r.field, reason: r.reason },
        });
        ControlFlow::Continue(())
    })
    .expect("the file is readable");
    (got, summary)
}

/// What a reader makes of `bytes` with the default options, in file order.
pub fn parse(format: Format, bytes: impl AsRef<[u8]>) -> Result<Vec<Parsed>, FormatError> {
    let mut out = Vec::new();
    read(format, bytes.as_ref(), &ReadOptions::default(), &mut |parsed| {
        out.push(parsed);
        ControlFlow::Continue(())
    })?;
    Ok(out)
}

/// The orders among what a reader found.
pub fn orders(parsed: &[Parsed]) -> Vec<&RawOrder> {
    parsed.iter().filter_map(|p| if let Parsed::Order(o) = p { Some(o.as_ref()) } else { None }).collect()
}

/// The skips among what a reader found.
pub fn skips(parsed: &[Parsed]) -> Vec<&Skip> {
    parsed.iter().filter_map(|p| if let Parsed::Skip(s) = p { Some(s) } else { None }).collect()
}

/// The rejects among what a reader found.
pub fn rejects(parsed: &[Parsed]) -> Vec<&Reject> {
    parsed.iter().filter_map(|p| if let Parsed::Reject(r) = p { Some(r) } else { None }).collect()
}

/// One row of a README table of purchases.
#[derive(Debug, Clone, PartialEq)]
pub struct Purchase {
    pub order_id: &'static str,
    pub event_time: i64,
    pub value: &'static str,
    pub lines: usize,
    pub units: i64,
    pub email: bool,
    pub phone: bool,
    pub external_id: bool,
}

impl Purchase {
    fn of(event: &Event) -> (String, i64, String, usize, i64, bool, bool, bool) {
        (
            event.order_id.clone(),
            event.event_time,
            event.value.normalize().to_string(),
            event.contents.len(),
            event.num_items(),
            !event.user.email.is_empty(),
            !event.user.phone.is_empty(),
            !event.user.external_id.is_empty(),
        )
    }

    fn expected(&self) -> (String, i64, String, usize, i64, bool, bool, bool) {
        let value: rust_decimal::Decimal = self.value.parse().unwrap();
        (
            self.order_id.to_string(),
            self.event_time,
            value.normalize().to_string(),
            self.lines,
            self.units,
            self.email,
            self.phone,
            self.external_id,
        )
    }
}

/// The events are exactly `expected`, in file order, and nothing was rejected.
pub fn assert_purchases(outcome: &Outcome, expected: &[Purchase]) {
    assert!(outcome.rejects.is_empty(), "{:?}", outcome.rejects);
    assert!(outcome.build_errors.is_empty(), "{:?}", outcome.build_errors);
    let got: Vec<_> = outcome.events.iter().map(Purchase::of).collect();
    let want: Vec<_> = expected.iter().map(Purchase::expected).collect();
    assert_eq!(got, want);
}

/// The skips are exactly these (order id, line, a phrase of the reason), in file order.
pub fn assert_skips(outcome: &Outcome, expected: &[(&str, u64, &str)]) {
    let got: Vec<_> = outcome.skips.iter().map(|s| (s.order_id.as_str(), s.line)).collect();
    let want: Vec<_> = expected.iter().map(|(id, line, _)| (*id, *line)).collect();
    assert_eq!(got, want, "{:?}", outcome.skips);
    for (skip, (_, _, phrase)) in outcome.skips.iter().zip(expected) {
        assert!(skip.reason.contains(phrase), "{skip:?} should say {phrase:?}");
    }
}

/// One bad row (at `line`, in `field`) rejected its order `order_id`, and only that order: the
/// others were delivered (`delivered`, by id, in file order) and the skips are `skips`.
pub fn assert_only_rejected(
    outcome: &Outcome,
    (line, field): (u64, &str),
    order_id: &str,
    delivered: &[&str],
    skips: &[(&str, u64, &str)],
) {
    assert_eq!(outcome.rejects.len(), 1);
    let reject = &outcome.rejects[0];
    assert_eq!((reject.line, reject.field.as_deref()), (line, Some(field)));
    assert!(reject.reason.contains(&format!("order `{order_id}`")), "{reject:?}");
    let ids: Vec<_> = outcome.events.iter().map(|e| e.order_id.as_str()).collect();
    assert_eq!(ids, delivered);
    assert_skips(outcome, skips);
}

/// A change to a sample, for the generated variants.
#[derive(Debug, Clone, Copy)]
pub enum Change {
    /// Columns in reverse order.
    Reverse,
    /// A column the format does not know, second from the left.
    ExtraColumn,
    /// Without this column.
    Drop(&'static str),
    /// CRLF line ends.
    Crlf,
    /// A UTF-8 BOM first (or kept, when the sample has one).
    Bom,
    /// The cell of `column` on file line `line` replaced.
    Cell { line: usize, column: &'static str, value: &'static str },
}

pub const EXTRA_COLUMN: &str = "Loyalty Tier";

/// The sample `name` rewritten with `changes` (LF, no BOM unless asked).
pub fn variant(name: &str, changes: &[Change]) -> Vec<u8> {
    let (mut crlf, mut bom) = (false, false);
    let mut sample = Sample::fixture(name);
    for change in changes {
        sample = match *change {
            Change::Reverse => sample.reversed(),
            Change::ExtraColumn => sample.insert_column(1, EXTRA_COLUMN, "gold"),
            Change::Drop(column) => sample.without(column),
            Change::Crlf => {
                crlf = true;
                sample
            }
            Change::Bom => {
                bom = true;
                sample
            }
            Change::Cell { line, column, value } => sample.set(line - 2, column, value),
        };
    }
    let mut out = if bom { b"\xEF\xBB\xBF".to_vec() } else { vec![] };
    out.extend(sample.to_csv(crlf));
    out
}

/// A CSV file as a table of text, to rewrite into the variants real exports take (columns
/// reordered, added or dropped, cells changed, CRLF).
pub struct Sample {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Sample {
    pub fn parse(text: &str) -> Sample {
        Sample::parse_with(text, b',')
    }

    pub fn parse_with(text: &str, delimiter: u8) -> Sample {
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(false)
            .flexible(true)
            .from_reader(text.as_bytes());
        let mut records = reader.records().map(|r| r.expect("fixture is valid CSV").iter().map(String::from).collect());
        let header = records.next().expect("fixture has a header");
        Sample { header, rows: records.collect() }
    }

    /// The sample file `name`, without its BOM (`;`-separated samples read as such).
    pub fn fixture(name: &str) -> Sample {
        let text = std::fs::read_to_string(fixture(name)).unwrap();
        let text = text.trim_start_matches('\u{feff}');
        Sample::parse_with(text, super::csv_table::detect_delimiter(text.as_bytes()))
    }

    fn position(&self, name: &str) -> usize {
        self.header.iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name}"))
    }

    /// Columns in reverse order.
    pub fn reversed(mut self) -> Sample {
        self.header.reverse();
        self.rows.iter_mut().for_each(|r| r.reverse());
        self
    }

    /// An extra column at the front, with the same value on every row.
    pub fn with_column(self, name: &str, value: &str) -> Sample {
        self.insert_column(0, name, value)
    }

    /// An extra column at position `at`, with the same value on every row.
    pub fn insert_column(mut self, at: usize, name: &str, value: &str) -> Sample {
        self.header.insert(at, name.into());
        self.rows.iter_mut().for_each(|r| r.insert(at, value.into()));
        self
    }

    pub fn without(mut self, name: &str) -> Sample {
        let i = self.position(name);
        self.header.remove(i);
        self.rows.iter_mut().for_each(|r| {
            r.remove(i);
        });
        self
    }

    /// Set one cell; `row` counts data rows from 0.
    pub fn set(mut self, row: usize, name: &str, value: &str) -> Sample {
        let i = self.position(name);
        self.rows[row][i] = value.into();
        self
    }

    pub fn to_csv(&self, crlf: bool) -> Vec<u8> {
        let mut writer = csv::WriterBuilder::new()
            .terminator(if crlf { csv::Terminator::CRLF } else { csv::Terminator::Any(b'\n') })
            .from_writer(Vec::new());
        writer.write_record(&self.header).expect("in memory");
        for row in &self.rows {
            writer.write_record(row).expect("in memory");
        }
        writer.into_inner().expect("in memory")
    }
}

/// Each variant of the sample `name` (`cases`: its name and changes), read next to copies of the
/// samples `companions`, gives the sample's purchases and skips, and ignores only the extra column.
pub fn assert_variants_read_alike(
    source: &Source,
    name: &str,
    companions: &[&str],
    cases: &[(&str, &[Change])],
    purchases: &[Purchase],
    skips: &[(&str, u64, &str)],
) {
    for (case, changes) in cases {
        let bytes = variant(name, changes);
        let (_dir, path) = folder_with(name, &bytes, companions);
        let outcome = run(source, &path, Policy::default());
        assert_purchases(&outcome, purchases);
        assert_skips(&outcome, skips);
        let extra = matches!(changes, [Change::ExtraColumn]);
        assert_eq!(
            outcome.summary.ignored_columns,
            if extra { vec![EXTRA_COLUMN.to_string()] } else { vec![] },
            "{case}"
        );
    }
}

/// The sample `main` read next to its companion sample with a record over the size cap (an
/// unclosed quote) appended: the companion is joined up to that line, the sample's purchases and
/// skips are unchanged, and a note names the companion and the line.
pub fn assert_companion_unreadable_from_its_end_is_joined_up_to_it(
    source: &Source,
    main: &str,
    companion_name: &str,
    purchases: &[Purchase],
    skips: &[(&str, u64, &str)],
) {
    let mut companion = std::fs::read(fixture(companion_name)).unwrap();
    let lines = companion.iter().filter(|b| **b == b'\n').count();
    companion.extend_from_slice(b"\"a quote never closed,");
    companion.extend(std::iter::repeat_n(b'x', crate::format::MAX_RECORD_BYTES + 10));
    let (dir, path) = folder_with(main, &std::fs::read(fixture(main)).unwrap(), &[]);
    std::fs::write(dir.path().join(companion_name), companion).unwrap();
    let outcome = run(source, &path, Policy::default());
    assert_purchases(&outcome, purchases);
    assert_skips(&outcome, skips);
    let note = format!("{companion_name}: unreadable from line {} on", lines + 1);
    assert!(outcome.summary.notes.iter().any(|n| n.contains(&note)), "{:?}", outcome.summary.notes);
}

/// Write `bytes` as `name` into a fresh folder holding copies of the samples `companions`; the
/// folder lives as long as the returned guard.
pub fn folder_with(name: &str, bytes: &[u8], companions: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    for companion in companions {
        std::fs::copy(fixture(companion), dir.path().join(companion)).unwrap();
    }
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

/// A source in New York (USD, US phones), as the US samples' README configures them.
fn us(format: Format) -> Source {
    Source { format, time_zone: "America/New_York", currency: "USD", phone_region: Some("US"), time_formats: None }
}

/// A source in Berlin (EUR), as the German samples' README configures them.
fn de(format: Format) -> Source {
    Source { format, time_zone: "Europe/Berlin", currency: "EUR", phone_region: None, time_formats: None }
}

/// The dialects a POS or a spreadsheet writes the same export in, applied to every file of it.
#[derive(Debug, Clone, Copy)]
enum Dialect {
    Delimiter(u8),
    Utf16Le,
    Utf16Be,
    /// Windows-1252, configured on the source.
    Windows1252,
    /// Decimal separator swapped (`1,240.92` ↔ `1.240,92`, `12,50` ↔ `12.50`), `;`-delimited, and
    /// the source's `decimal_separator` set to match.
    SwappedDecimals,
}

/// A cell that is only a number or an amount: digits with `.`/`,`, maybe a sign, a currency symbol,
/// accounting parentheses, spaces around. Dates (`14.03.2025, 15:42`), phones and ids are not.
fn is_amount(cell: &str) -> bool {
    let core = cell.trim().trim_start_matches(['(', '-']).trim_end_matches(')').trim_start_matches(['$', '€', '£']);
    let core = core.trim_end_matches([' ', '€']);
    !core.is_empty()
        && core.starts_with(|c: char| c.is_ascii_digit())
        && core.chars().all(|c| c.is_ascii_digit() || c == '.' || c == ',')
        && core.chars().filter(|c| *c == '.' || *c == ',').count() <= 3
        && core.len() < 16
}

fn rewrite(bytes: &[u8], dialect: Dialect, decimal: char) -> Vec<u8> {
    let text = std::str::from_utf8(bytes).unwrap();
    let bom = text.starts_with('\u{feff}');
    let text = text.trim_start_matches('\u{feff}');
    let mut sample = Sample::parse_with(text, super::csv_table::detect_delimiter(text.as_bytes()));
    let mut delimiter = b',';
    match dialect {
        Dialect::Delimiter(d) => delimiter = d,
        Dialect::SwappedDecimals => {
            delimiter = b';';
            let swap = |c: char| match c {
                '.' => ',',
                ',' => '.',
                c => c,
            };
            for row in &mut sample.rows {
                for cell in row.iter_mut().filter(|c| is_amount(c) && (c.contains(decimal) || c.contains(','))) {
                    *cell = cell.chars().map(swap).collect();
                }
            }
        }
        _ => {}
    }
    let mut writer = csv::WriterBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    writer.write_record(&sample.header).unwrap();
    for row in &sample.rows {
        writer.write_record(row).unwrap();
    }
    let csv_text = String::from_utf8(writer.into_inner().unwrap()).unwrap();
    let text = if bom && !matches!(dialect, Dialect::Windows1252) { format!("\u{feff}{csv_text}") } else { csv_text };
    match dialect {
        Dialect::Utf16Le => {
            let body = if text.starts_with('\u{feff}') { text } else { format!("\u{feff}{text}") };
            body.encode_utf16().flat_map(u16::to_le_bytes).collect()
        }
        Dialect::Utf16Be => {
            let body = if text.starts_with('\u{feff}') { text } else { format!("\u{feff}{text}") };
            body.encode_utf16().flat_map(u16::to_be_bytes).collect()
        }
        Dialect::Windows1252 => {
            let (bytes, _, lossy) = encoding_rs::WINDOWS_1252.encode(&text);
            assert!(!lossy, "sample not representable in Windows-1252");
            bytes.into_owned()
        }
        _ => text.into_bytes(),
    }
}

/// Every CSV profile's sample (with its companion) reads the same, event for event, skip for skip,
/// reject for reject, whichever dialect the export was written in: another delimiter, UTF-16 LE/BE
/// with a BOM, Windows-1252, or decimal commas (points for DSFinV-K) with `;`.
#[test]
fn every_csv_profile_reads_the_same_in_every_dialect() {
    // (The Excel re-saved Square file is itself such a dialect, checked against its README table.)
    let profiles: [(Source, &str, &[&str]); 7] = [
        (Source { currency: "", time_zone: "UTC", ..us(Format::ShopifyOrders) }, "shopify-orders_export.csv", &[]),
        (us(Format::SquareTransactions), "square-transactions.csv", &[]),
        (us(Format::SquareItems), "square-items.csv", &[]),
        (
            Source { time_zone: "Asia/Manila", currency: "PHP", phone_region: Some("PH"), ..us(Format::Loyverse) },
            "loyverse-receipts-by-item.csv",
            &["loyverse-receipts.csv"],
        ),
        (us(Format::Toast), "toast-ItemSelectionDetails.csv", &["toast-CheckDetails.csv"]),
        (Source { currency: "", phone_region: Some("DE"), ..de(Format::Sumup) }, "sumup-sales-report-de.csv", &[]),
        (de(Format::Dsfinvk), "dsfinvk-transactions.csv", &["dsfinvk-lines.csv"]),
    ];
    let dialects = [
        Dialect::Delimiter(b';'),
        Dialect::Delimiter(b'\t'),
        Dialect::Delimiter(b'|'),
        Dialect::Utf16Le,
        Dialect::Utf16Be,
        Dialect::Windows1252,
        Dialect::SwappedDecimals,
    ];
    let outline_of = |outcome: &Outcome| -> Vec<String> {
        let mut lines: Vec<String> = outcome.events.iter().map(|e| format!("{e:?}")).collect();
        lines.extend(outcome.build_errors.iter().map(|(id, e)| format!("unbuilt {id} {} {}", e.line, e.field)));
        lines.extend(outcome.skips.iter().map(|s| format!("skip {} {} {}", s.order_id, s.line, s.reason)));
        lines.extend(outcome.rejects.iter().map(|r| format!("reject {} {:?}", r.line, r.field)));
        lines
    };
    let mut failures = Vec::new();
    for (source, main, companions) in &profiles {
        let decimal = source.format.default_decimal_separator();
        let original = {
            let (_dir, path) = folder_with(main, &std::fs::read(fixture(main)).unwrap(), companions);
            outline_of(&run(source, &path, Policy::default()))
        };
        assert!(!original.is_empty(), "{main}");
        for dialect in dialects {
            let dir = tempfile::tempdir().unwrap();
            for name in std::iter::once(main).chain(companions.iter()) {
                let bytes = rewrite(&std::fs::read(fixture(name)).unwrap(), dialect, decimal);
                std::fs::write(dir.path().join(name), bytes).unwrap();
            }
            let path = dir.path().join(main);
            let options = ReadOptions {
                path: Some(path.clone()),
                decimal_separator: Some(match dialect {
                    Dialect::SwappedDecimals if decimal == '.' => ',',
                    Dialect::SwappedDecimals => '.',
                    _ => decimal,
                }),
                encoding: matches!(dialect, Dialect::Windows1252).then_some(encoding_rs::WINDOWS_1252),
                ..ReadOptions::default()
            };
            let got = outline_of(&run_with(source, std::fs::File::open(&path).unwrap(), &options));
            if got != original {
                let diff: Vec<_> = got.iter().zip(&original).filter(|(a, b)| a != b).take(2).collect();
                failures.push(format!(
                    "{main} as {dialect:?}: {} vs {} things; first differences {diff:#?}\ngot: {got:#?}",
                    got.len(),
                    original.len()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Local times on both sides of a DST change become the right instants in every profile that
/// writes local times: 01:30 and 03:30 on the spring-forward day are one hour apart, 00:30 and
/// 02:30 (03:30 in Europe) on the fall-back day three (four) hours.
#[test]
fn local_times_across_dst_changes_are_exact_in_every_profile() {
    type Cells = &'static [(&'static str, &'static str)];
    type Case = (Source, &'static str, &'static [&'static str], [(Cells, Cells, i64); 2]);
    // Square's two exports write `Date` and `Time` alike.
    const SQUARE: [(Cells, Cells, i64); 2] = [
        (&[("Date", "2025-03-09"), ("Time", "01:30:00")], &[("Date", "2025-03-09"), ("Time", "03:30:00")], 3600),
        (&[("Date", "2025-11-02"), ("Time", "00:30:00")], &[("Date", "2025-11-02"), ("Time", "02:30:00")], 10800),
    ];
    // Profile, sample, companions, (cells before, cells after, seconds between them) per change.
    let cases: [Case; 6] = [
        (us(Format::SquareTransactions), "square-transactions.csv", &[], SQUARE),
        (us(Format::SquareItems), "square-items.csv", &[], SQUARE),
        (
            us(Format::Toast),
            "toast-ItemSelectionDetails.csv",
            &["toast-CheckDetails.csv"],
            [
                (&[("Order Date", "3/9/25 1:30 AM")], &[("Order Date", "3/9/25 3:30 AM")], 3600),
                (&[("Order Date", "11/2/25 12:30 AM")], &[("Order Date", "11/2/25 2:30 AM")], 10800),
            ],
        ),
        (
            de(Format::Loyverse),
            "loyverse-receipts-by-item.csv",
            &["loyverse-receipts.csv"],
            [
                (&[("Date", "30/03/2025 01:30")], &[("Date", "30/03/2025 03:30")], 3600),
                (&[("Date", "26/10/2025 00:30")], &[("Date", "26/10/2025 03:30")], 14400),
            ],
        ),
        (
            Source { currency: "", ..de(Format::Sumup) },
            "sumup-sales-report-de.csv",
            &[],
            [
                (&[("Datum", "30.03.2025, 01:30")], &[("Datum", "30.03.2025, 03:30")], 3600),
                (&[("Datum", "26.10.2025, 00:30")], &[("Datum", "26.10.2025, 03:30")], 14400),
            ],
        ),
        (
            de(Format::Dsfinvk),
            "dsfinvk-transactions.csv",
            &["dsfinvk-lines.csv"],
            [
                (&[("BON_ENDE", "2025-03-30T01:30:00")], &[("BON_ENDE", "2025-03-30T03:30:00")], 3600),
                (&[("BON_ENDE", "2025-10-26T00:30:00")], &[("BON_ENDE", "2025-10-26T03:30:00")], 14400),
            ],
        ),
    ];
    for (source, main, companions, changes) in &cases {
        for (before, after, seconds) in changes {
            let time_of = |cells: Cells| {
                let changes: Vec<Change> =
                    cells.iter().map(|(column, value)| Change::Cell { line: 2, column, value }).collect();
                let (_dir, path) = folder_with(main, &variant(main, &changes), companions);
                let outcome = run(source, &path, Policy::default());
                let first = outcome.events.first().unwrap_or_else(|| panic!("{main} {cells:?}: {outcome:?}"));
                first.event_time
            };
            assert_eq!(time_of(after) - time_of(before), *seconds, "{main}: {before:?} → {after:?}");
        }
    }
}
