//! The harness the profile tests share: read a sample export (or a variant of it written next to
//! copies of its companions), build every order with the source settings the samples' README gives,
//! and compare the outcome with the README's tables of expected purchases and skips.

use super::{read, Format, Parsed, Policy, ReadOptions, Reject, Skip, Summary};
use crate::event::money::Currency;
use crate::event::name::NameTable;
use crate::event::{build, pii, BuildError, Event, SourceDefaults};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pos-exports");

pub fn fixture(name: &str) -> PathBuf {
    Path::new(FIXTURES).join(name)
}

/// A source as the README configures it for one sample.
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
    let defaults = source.defaults();
    let mut outcome = Outcome {
        events: Vec::new(),
        build_errors: Vec::new(),
        rejects: Vec::new(),
        skips: Vec::new(),
        summary: Summary::default(),
    };
    outcome.summary = read(source.format, input, options, &mut |parsed| {
        match parsed {
            Parsed::Order(raw) => match build(&raw, &defaults) {
                Ok((event, warnings)) => {
                    assert!(warnings.is_empty(), "{}: {warnings:?}", raw.order_id);
                    outcome.events.push(event);
                }
                Err(e) => outcome.build_errors.push((raw.order_id.clone(), e)),
            },
            Parsed::Reject(r) => outcome.rejects.push(r),
            Parsed::Skip(s) => outcome.skips.push(s),
        }
        ControlFlow::Continue(())
    })
    .unwrap();
    outcome
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
    let text = std::fs::read_to_string(fixture(name)).unwrap();
    let text = text.trim_start_matches('\u{feff}');
    let mut rows: Vec<Vec<String>> = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes())
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect();
    let (mut crlf, mut bom) = (false, false);
    for change in changes {
        let at = |rows: &Vec<Vec<String>>, column: &str| rows[0].iter().position(|h| h == column).unwrap();
        match *change {
            Change::Reverse => rows.iter_mut().for_each(|r| r.reverse()),
            Change::ExtraColumn => {
                for (i, row) in rows.iter_mut().enumerate() {
                    let cell = if i == 0 { EXTRA_COLUMN } else { "gold" };
                    row.insert(1, cell.to_string());
                }
            }
            Change::Drop(column) => {
                let i = at(&rows, column);
                rows.iter_mut().for_each(|r| {
                    r.remove(i);
                });
            }
            Change::Crlf => crlf = true,
            Change::Bom => bom = true,
            Change::Cell { line, column, value } => {
                let i = at(&rows, column);
                rows[line - 1][i] = value.to_string();
            }
        }
    }
    let mut out = if bom { b"\xEF\xBB\xBF".to_vec() } else { vec![] };
    let mut writer = csv::WriterBuilder::new()
        .terminator(if crlf { csv::Terminator::CRLF } else { csv::Terminator::Any(b'\n') })
        .from_writer(&mut out);
    for row in &rows {
        writer.write_record(row).unwrap();
    }
    drop(writer);
    out
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

#[test]
fn profiles_are_known_by_their_config_names() {
    for (name, format) in [("loyverse", Format::Loyverse), ("toast", Format::Toast), ("sumup", Format::Sumup)] {
        assert_eq!(Format::from_name(name), Some(format));
        assert_eq!(format.name(), name);
        assert_eq!(format.default_extensions(), ["csv"]);
        assert_eq!(format.default_time_formats().len(), 1);
        let serde_name = serde_json::to_value(format).unwrap();
        assert_eq!(serde_name, name);
    }
    assert!(Format::Sumup.reads_file("sumup-sales-report-de.csv"));
    assert!(Format::NativeCsv.reads_file("CheckDetails.csv"));
}
