//! Readers for export files. A reader turns bytes into [`RawOrder`]s and row-level [`Reject`]s,
//! streaming: it never holds more than one order in memory.
//!
//! Readers are pure over `std::io::Read`: no database, no logging, and no file system except a
//! profile's companion file next to the one being read (Toast's CheckDetails, Loyverse's receipts,
//! DSFinV-K's lines; found and opened by `companion`) or, for SumUp, a first pass over the file
//! being read to index its refund rows. A problem with a row becomes a `Reject` naming the line and
//! field, and reading goes on; a sale that must not be sent (refund, void, training...) becomes a
//! `Skip` with its reason; only a file that cannot be read at all (no header, missing required
//! columns, I/O error) is a [`FormatError`].
//!
//! Every format is one row of `REGISTRY`: its name, defaults, reader and rules; [`Format`] is a
//! handle on a row.
//!
//! Input is decoded to UTF-8 before any reader sees it: a UTF-8 BOM is dropped, UTF-16 (with BOM)
//! and the configured or detected legacy encoding (Windows-1252) are transcoded.

mod companion;
mod csv_native;
pub use csv_native::COLUMNS as NATIVE_COLUMNS;
mod csv_table;
mod dsfinvk;
mod json;
pub use json::{valid_path as valid_json_path, PATH_KEYS as JSON_PATH_KEYS};
mod loyverse;
mod poslog;
#[cfg(test)]
mod profile_tests;
#[cfg(test)]
mod props;
mod record_cap;
mod shopify;
mod square;
mod sumup;
mod toast;

use crate::event::RawOrder;
use record_cap::RecordTooLong;
use std::io::{BufRead, BufReader, Read};
use std::ops::ControlFlow;

/// Every input format, one row each. A new format is its reader file and a row here; config
/// validation, the fuzz harness and the tests read this table.
const REGISTRY: &[FormatSpec] = &[
    // The agent's own CSV: one row per line item, header names are our field names.
    FormatSpec {
        name: "native-csv",
        extensions: &["csv", "txt"],
        mapping: Mapping::Columns,
        append: Some(Append::AfterHeader),
        ..FormatSpec::new(|input, options, sink| csv_native::read(input, options, sink))
    },
    // JSON Lines: one order (or line item) per line.
    FormatSpec {
        name: "jsonl",
        extensions: &["jsonl", "ndjson", "json"],
        mapping: Mapping::Paths(&["items"]),
        append: Some(Append::Lines),
        ..FormatSpec::new(|input, options, sink| json::read_lines(input, options, sink))
    },
    // A JSON document: an array of orders (or line items), at the top or at a path.
    FormatSpec {
        name: "json",
        extensions: &["json"],
        mapping: Mapping::Paths(&json::PATH_KEYS),
        ..FormatSpec::new(|input, options, sink| json::read_document(input, options, sink))
    },
    // Shopify Admin orders export (`orders_export.csv`). It writes `2025-03-14 15:42:10 -0400`,
    // which is always understood.
    FormatSpec {
        name: "shopify-orders",
        ..FormatSpec::new(|input, options, sink| shopify::read(input, options, sink))
    },
    // Square Dashboard Transactions CSV, also after a round trip through Excel. `Date` + `Time`:
    // `2025-03-14 15:42:10` is always understood; 2017 files wrote `11/15/2017`.
    FormatSpec {
        name: "square-transactions",
        time_formats: &["%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M"],
        ..FormatSpec::new(|input, options, sink| square::read_transactions(input, options, sink))
    },
    // Square Dashboard Item Details CSV.
    FormatSpec {
        name: "square-items",
        time_formats: &["%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M"],
        ..FormatSpec::new(|input, options, sink| square::read_items(input, options, sink))
    },
    // Loyverse back-office receipts export: `receipts-by-item*.csv`, joined with `receipts*.csv`.
    // Day first, as Philippine and most non-US accounts write it; a US account that exports
    // `7/28/26 1:33 PM` must set `time_formats`, never have its dates guessed.
    FormatSpec {
        name: "loyverse",
        time_formats: &["%d/%m/%Y %H:%M"],
        reads_file: loyverse::reads_file,
        companion: Some(&loyverse::RECEIPTS),
        ..FormatSpec::new(|input, options, sink| loyverse::read(input, options, sink))
    },
    // Toast nightly data export: `ItemSelectionDetails*.csv`, joined with `CheckDetails*.csv`.
    FormatSpec {
        name: "toast",
        time_formats: &["%m/%d/%y %I:%M %p"],
        reads_file: toast::reads_file,
        companion: Some(&toast::CHECK_DETAILS),
        ..FormatSpec::new(|input, options, sink| toast::read(input, options, sink))
    },
    // SumUp sales report (German UI headers).
    FormatSpec {
        name: "sumup",
        time_formats: &["%d.%m.%Y, %H:%M"],
        ..FormatSpec::new(|input, options, sink| sumup::read(input, options, sink))
    },
    // DSFinV-K (Germany): `transactions.csv` receipts joined with their `lines.csv`. ISO 8601
    // times (`2025-03-14T15:42:10`, `...Z`, `...+01:00`), which are always understood.
    FormatSpec {
        name: "dsfinvk",
        decimal_separator: ',',
        reads_file: dsfinvk::reads_file,
        companion: Some(&dsfinvk::LINES),
        ..FormatSpec::new(|input, options, sink| dsfinvk::read(input, options, sink))
    },
    // NRF-ARTS POSLog XML, 2.x batches and 6.0 one-per-file. ISO 8601 times.
    FormatSpec {
        name: "arts-poslog",
        extensions: &["xml"],
        ..FormatSpec::new(|input, options, sink| poslog::read(input, options, sink))
    },
];

/// What the agent knows about one format: a row of [`REGISTRY`].
struct FormatSpec {
    /// The name in the config (`format = "toast"`).
    name: &'static str,
    /// File name endings picked up by default.
    extensions: &'static [&'static str],
    /// Date/time formats tried when the source does not set `time_formats`.
    time_formats: &'static [&'static str],
    /// Decimal separator used when the source does not set one.
    decimal_separator: char,
    /// Whether a file with this name is one this format reads (the others of a split export are
    /// its companions).
    reads_file: fn(&str) -> bool,
    /// The companion of a split export, named like the file read.
    companion: Option<&'static companion::Kind<'static>>,
    /// What a source's `columns` table maps.
    mapping: Mapping,
    /// How append mode reads a growing file; `None`: not at all.
    append: Option<Append>,
    read: Reader,
}

/// A format's reader over decoded input.
type Reader =
    for<'a> fn(Input<'a>, &ReadOptions, &mut dyn FnMut(Parsed) -> ControlFlow<()>) -> Result<Summary, FormatError>;

/// What every reader reads: the file's bytes decoded to UTF-8 (see [`decode`]).
type Input<'a> = BufReader<encoding_rs_io::DecodeReaderBytes<Box<dyn Read + 'a>, Vec<u8>>>;

impl FormatSpec {
    /// A row with the common defaults: any `.csv` file, times always understood, `.` decimals,
    /// its own columns, no companion and no append mode.
    const fn new(read: Reader) -> FormatSpec {
        FormatSpec {
            name: "",
            extensions: &["csv"],
            time_formats: &[],
            decimal_separator: '.',
            reads_file: |_| true,
            companion: None,
            mapping: Mapping::None,
            append: None,
            read,
        }
    }
}

/// What a source's `columns` table maps for a format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// Nothing: the format knows its columns.
    None,
    /// Our field names to the export's column names.
    Columns,
    /// Our field names, and these keys, to dotted paths into each record.
    Paths(&'static [&'static str]),
}

/// How append mode reads the new part of a growing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Append {
    /// As CSV: the part is read after the file's header line.
    AfterHeader,
    /// Line by line: each line stands alone.
    Lines,
}

/// An input format: a handle on its row of the registry.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Format(u8);

/// The formats code names directly; any other is reached by name.
#[allow(non_upper_case_globals)]
impl Format {
    pub const NativeCsv: Format = Format::named("native-csv");
    pub const Jsonl: Format = Format::named("jsonl");
    pub const Json: Format = Format::named("json");
    pub const ShopifyOrders: Format = Format::named("shopify-orders");
    pub const SquareTransactions: Format = Format::named("square-transactions");
    pub const SquareItems: Format = Format::named("square-items");
    pub const Loyverse: Format = Format::named("loyverse");
    pub const Toast: Format = Format::named("toast");
    pub const Sumup: Format = Format::named("sumup");
    pub const Dsfinvk: Format = Format::named("dsfinvk");
    pub const ArtsPoslog: Format = Format::named("arts-poslog");
}

impl Format {
    /// Every format, as named in the config, in the registry's order.
    pub const ALL: &'static [(&'static str, Format)] = &Format::all();

    /// The row named `name`; a name that is not in the registry fails the build.
    const fn named(name: &str) -> Format {
        let mut i = 0;
        while i < REGISTRY.len() {
            if str_eq(REGISTRY[i].name, name) {
                return Format(i as u8);
            }
            i += 1;
        }
        panic!("no such format in the registry")
    }

    const fn all() -> [(&'static str, Format); REGISTRY.len()] {
        let mut all = [("", Format(0)); REGISTRY.len()];
        let mut i = 0;
        while i < REGISTRY.len() {
            all[i] = (REGISTRY[i].name, Format(i as u8));
            i += 1;
        }
        all
    }

    fn spec(self) -> &'static FormatSpec {
        &REGISTRY[usize::from(self.0)]
    }

    pub fn from_name(name: &str) -> Option<Format> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }

    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// Whether a file with this name is one this format reads. Formats split over several files
    /// read one of them and take the others as companions.
    pub fn reads_file(self, file_name: &str) -> bool {
        (self.spec().reads_file)(file_name)
    }

    /// The companion file that belongs to the export at `path` alone (named like it), for formats
    /// split over two files: the file is taken once both have settled, and they are archived together.
    pub fn companion_of(self, path: &std::path::Path) -> Option<std::path::PathBuf> {
        companion::named_alike(path, self.spec().companion?)
    }

    /// Why this format does not read the file at `path` and which file to read instead (a
    /// companion names the file of its export that joins it); `None` when it reads it.
    pub fn not_read(self, path: &std::path::Path) -> Option<String> {
        let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
        if self.reads_file(&name) {
            return None;
        }
        Some(match self.spec().companion {
            Some(kind) if (kind.matches)(&name) => format!(
                "the {} file of a split {} export, which is read through its other file: use {} instead (it joins this one)",
                kind.what,
                self.name(),
                crate::source::shown(&companion::primary_alike(path, kind))
            ),
            _ => format!("not a file the {} format reads (the other files of its export are not read)", self.name()),
        })
    }

    /// Whether the format is split over two files (its reader joins a companion).
    pub fn has_companion(self) -> bool {
        self.spec().companion.is_some()
    }

    /// Date/time formats tried when the source does not set `time_formats`.
    pub fn default_time_formats(self) -> &'static [&'static str] {
        self.spec().time_formats
    }

    /// Decimal separator used when the source does not set one.
    pub fn default_decimal_separator(self) -> char {
        self.spec().decimal_separator
    }

    /// File name endings picked up by default.
    pub fn default_extensions(self) -> &'static [&'static str] {
        self.spec().extensions
    }

    /// What a source's `columns` table maps for this format.
    pub fn mapping(self) -> Mapping {
        self.spec().mapping
    }

    /// Whether a source of this format may set `columns`.
    pub fn supports_columns(self) -> bool {
        self.spec().mapping != Mapping::None
    }

    /// Whether a mapped column is a dotted path into a record (`customer.email`), not a CSV
    /// column name.
    pub fn columns_are_paths(self) -> bool {
        matches!(self.spec().mapping, Mapping::Paths(_))
    }

    /// The fields a `columns` table may name: ours, and the format's own keys (`items`, `records`).
    pub fn column_fields(self) -> Vec<&'static str> {
        let mut fields = NATIVE_COLUMNS.to_vec();
        if let Mapping::Paths(keys) = self.spec().mapping {
            fields.extend(keys);
        }
        fields
    }

    /// How append mode reads a growing file of this format; `None`: it cannot.
    pub fn append(self) -> Option<Append> {
        self.spec().append
    }

    /// Whether append mode can read this format.
    pub fn supports_append(self) -> bool {
        self.spec().append.is_some()
    }
}

/// `a == b`, at compile time.
const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

impl std::fmt::Debug for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl serde::Serialize for Format {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Format {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Format::from_name(&name).ok_or_else(|| serde::de::Error::custom(format!("unknown format `{name}`")))
    }
}

/// How a CSV export separates and quotes its fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dialect {
    /// `None`: detected from the header line.
    pub delimiter: Option<u8>,
    pub quote: Quoting,
}

/// How a CSV export quotes fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Quoting {
    /// `"`, or `'` when every header name is wrapped in single quotes.
    #[default]
    Detect,
    /// This quote character.
    Char(u8),
    /// No quoting at all: a quote is an ordinary character (exports that write `5" display`).
    Off,
}

/// Per-source reading options.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// CSV delimiter and quoting.
    pub csv: Dialect,
    /// Legacy encoding of the file (configured, or detected because it is not valid UTF-8). `None`:
    /// UTF-8, or UTF-16 when the file starts with a UTF-16 BOM.
    pub encoding: Option<&'static encoding_rs::Encoding>,
    /// The file being read, for profiles that join a companion file from the same folder.
    pub path: Option<std::path::PathBuf>,
    /// Decimal separator of amounts (the source's); `None`: the format's default. Profiles that
    /// compute a value parse its cells with it and hand the result on exact.
    pub decimal_separator: Option<char>,
    /// What counts as a sale.
    pub policy: Policy,
    /// Which export column (native CSV) or dotted path (JSON) holds each of our fields
    /// (`order_id` → `Bon-Nr`, `email` → `customer.email`), for exports not written in our names.
    pub columns: std::collections::BTreeMap<String, String>,
}

/// What a profile sends and what it skips, where the source may choose.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Skip staff purchases (discount codes, tags or discount names that mark a staff sale).
    pub skip_staff: bool,
    /// In a file mixing channels (Shopify), send only in-store (POS) orders.
    pub in_store_only: bool,
    /// How a partially refunded order is valued.
    pub partial_refunds: PartialRefunds,
    /// What to do with a row that has a date but no time of day.
    pub date_only: DateOnly,
    /// What to do with a sale whose customer gave no consent (files with a consent field).
    pub consent: ConsentPolicy,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ConsentPolicy {
    /// Send the sale without any customer identifier.
    #[default]
    Strip,
    /// Do not send the sale at all.
    Skip,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PartialRefunds {
    /// Send the order's original total: it was a purchase when it happened.
    #[default]
    Gross,
    /// Send the total less the refunded amount known at export time.
    Net,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DateOnly {
    /// Reject the row with a clear message.
    #[default]
    Reject,
    /// Use 12:00 local time on that date.
    Noon,
}

/// One thing a reader found.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    Order(Box<RawOrder>),
    Reject(Reject),
    /// A transaction that is not a sale to send (refund, void, training, zero total...).
    Skip(Skip),
}

/// A transaction deliberately not sent, and why (logged and counted, never silent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    pub line: u64,
    pub order_id: String,
    pub reason: String,
}

/// A row (or order) that was not taken, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub line: u64,
    pub field: Option<String>,
    pub reason: String,
}

/// What a reader says about the file as a whole once it is done.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Header columns the format does not know (ignored).
    pub ignored_columns: Vec<String>,
    /// Things about the file as a whole worth telling the operator (a companion file missing, so
    /// orders went without customer data).
    pub notes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("read error: {0}")]
    Io(std::io::Error),
    #[error("line {line}: {reason}")]
    Unreadable { line: u64, reason: String },
}

impl From<std::io::Error> for FormatError {
    /// A CSV record over [`MAX_RECORD_BYTES`] (or of more than 4096 fields) surfaces from below the
    /// parser as a read error; it makes the file unreadable from the record's line, it is not an
    /// I/O failure.
    fn from(e: std::io::Error) -> Self {
        match e.get_ref().and_then(|inner| inner.downcast_ref::<RecordTooLong>()) {
            Some(too_long) => FormatError::Unreadable { line: too_long.line(), reason: too_long.to_string() },
            None => FormatError::Io(e),
        }
    }
}

pub use record_cap::MAX_RECORD_BYTES;

/// Read a whole file, handing each order or reject to `sink`. `sink` may stop the read early by
/// returning `ControlFlow::Break`.
pub fn read<'a>(
    format: Format,
    input: impl Read + 'a,
    options: &ReadOptions,
    sink: &mut dyn FnMut(Parsed) -> ControlFlow<()>,
) -> Result<Summary, FormatError> {
    let input: Box<dyn Read + 'a> = Box::new(input);
    (format.spec().read)(decode(input, options.encoding)?, options, sink)
}

/// `input` as UTF-8: a UTF-8 BOM dropped, UTF-16 (with BOM) or the given legacy encoding transcoded.
/// Every file a reader sees (the one being read, and a companion) goes through here.
pub(crate) fn decode<R: Read>(
    input: R,
    encoding: Option<&'static encoding_rs::Encoding>,
) -> std::io::Result<BufReader<encoding_rs_io::DecodeReaderBytes<R, Vec<u8>>>> {
    let decoded = encoding_rs_io::DecodeReaderBytesBuilder::new()
        .encoding(encoding)
        .bom_override(true)
        .strip_bom(true)
        .utf8_passthru(true)
        .build(input);
    let mut input = BufReader::with_capacity(64 * 1024, decoded);
    skip_utf8_bom(&mut input)?;
    Ok(input)
}

fn skip_utf8_bom(input: &mut impl BufRead) -> std::io::Result<()> {
    let buf = input.fill_buf()?;
    if buf.starts_with(b"\xEF\xBB\xBF") {
        input.consume(3);
    }
    Ok(())
}

/// Whether a consent cell says yes. Strict: anything that is not a clear yes (empty, "no",
/// unknown text) counts as no consent.
pub fn consent_given(cell: &str) -> bool {
    matches!(
        cell.trim().to_ascii_lowercase().as_str(),
        "yes" | "y" | "true" | "1" | "ja" | "j" | "oui" | "si" | "sí" | "granted" | "opt-in" | "optin" | "x"
    )
}

#[cfg(test)]
mod registry_tests {
    use super::*;

    #[test]
    fn a_companion_names_the_file_to_read_instead() {
        let f = |name| Format::from_name(name).unwrap();
        let table = [
            ("toast", "/pos/ItemSelectionDetails.csv", None),
            ("toast", "/pos/toast-CheckDetails.csv", Some("use /pos/toast-ItemSelectionDetails.csv instead")),
            ("toast", "/pos/2026/checkdetails_0312.csv", Some("use /pos/2026/ItemSelectionDetails_0312.csv instead")),
            ("toast", "/pos/PaymentDetails.csv", Some("not a file the toast format reads")),
            ("dsfinvk", "/x/lines.csv", Some("use /x/transactions.csv instead")),
            ("dsfinvk", "/x/transactions.csv", None),
            ("loyverse", "/l/receipts-2026.csv", Some("use /l/receipts-by-item-2026.csv instead")),
            ("loyverse", "/l/receipts-by-item-2026.csv", None),
            ("native-csv", "/n/CheckDetails.csv", None),
        ];
        for (format, path, expected) in table {
            let got = f(format).not_read(std::path::Path::new(path));
            match expected {
                None => assert_eq!(got, None, "{format} {path}"),
                Some(part) => assert!(got.as_deref().is_some_and(|g| g.contains(part)), "{format} {path}: {got:?}"),
            }
        }
    }

    #[test]
    fn every_row_is_complete_and_named_once() {
        for (i, (name, format)) in Format::ALL.iter().enumerate() {
            assert!(!name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'), "row {i}: `{name}`");
            assert_eq!(Format::ALL.iter().filter(|(n, _)| n == name).count(), 1, "`{name}` is in the registry twice");
            assert_eq!(Format::from_name(name), Some(*format));
            assert_eq!(format.name(), *name);
            assert_eq!(format!("{format:?}"), *name);
            assert_eq!(serde_json::to_value(format).unwrap(), *name);
            assert_eq!(serde_json::from_value::<Format>(serde_json::json!(name)).unwrap(), *format);
            let extensions = format.default_extensions();
            assert!(!extensions.is_empty(), "`{name}` has no default extension");
            assert!(extensions.iter().all(|e| !e.starts_with('.') && *e == e.to_ascii_lowercase()), "`{name}`");
            assert!(matches!(format.default_decimal_separator(), '.' | ','), "`{name}`");
            if format.supports_append() {
                assert!(!format.has_companion(), "`{name}`: a split export cannot be read in append mode");
            }
        }
        assert_eq!(Format::from_name("csv"), None);
        assert!(serde_json::from_value::<Format>(serde_json::json!("csv")).is_err());
    }

    #[test]
    fn the_named_formats_are_their_rows() {
        let named = [
            (Format::NativeCsv, "native-csv"),
            (Format::Jsonl, "jsonl"),
            (Format::Json, "json"),
            (Format::ShopifyOrders, "shopify-orders"),
            (Format::SquareTransactions, "square-transactions"),
            (Format::SquareItems, "square-items"),
            (Format::Loyverse, "loyverse"),
            (Format::Toast, "toast"),
            (Format::Sumup, "sumup"),
            (Format::Dsfinvk, "dsfinvk"),
            (Format::ArtsPoslog, "arts-poslog"),
        ];
        for (format, name) in named {
            assert_eq!(format.name(), name);
        }
    }

    #[test]
    fn a_split_export_reads_one_of_its_files() {
        let cases = [
            (Format::Sumup, "sumup-sales-report-de.csv", true),
            (Format::NativeCsv, "CheckDetails.csv", true),
            (Format::ArtsPoslog, "POSLog_0042_20250314.xml", true),
            (Format::Toast, "ItemSelectionDetails_2025.csv", true),
            (Format::Toast, "CheckDetails_2025.csv", false),
            (Format::Loyverse, "receipts-by-item-2025.csv", true),
            (Format::Loyverse, "receipts-2025.csv", false),
            (Format::Dsfinvk, "transactions.csv", true),
            (Format::Dsfinvk, "lines.csv", false),
        ];
        for (format, file, reads) in cases {
            assert_eq!(format.reads_file(file), reads, "{format:?} {file}");
        }
    }

    #[test]
    fn column_mappings_name_our_fields_and_the_formats_keys() {
        assert_eq!(Format::NativeCsv.column_fields(), NATIVE_COLUMNS);
        assert!(Format::Jsonl.column_fields().ends_with(&["consent", "items"]));
        assert!(Format::Json.column_fields().ends_with(&["consent", "items", "records"]));
        let mapped: Vec<_> = Format::ALL.iter().filter(|(_, f)| f.supports_columns()).map(|(n, _)| *n).collect();
        assert_eq!(mapped, ["native-csv", "jsonl", "json"]);
        let paths: Vec<_> = Format::ALL.iter().filter(|(_, f)| f.columns_are_paths()).map(|(n, _)| *n).collect();
        assert_eq!(paths, ["jsonl", "json"]);
        let append: Vec<_> = Format::ALL.iter().filter(|(_, f)| f.supports_append()).map(|(n, _)| *n).collect();
        assert_eq!(append, ["native-csv", "jsonl"]);
    }
}
