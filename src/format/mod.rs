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

/// The input formats the agent reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// The agent's own CSV: one row per line item, header names are our field names.
    NativeCsv,
    /// JSON Lines: one order (or line item) per line.
    Jsonl,
    /// A JSON document: an array of orders (or line items), at the top or at a path.
    Json,
    /// Shopify Admin orders export (`orders_export.csv`).
    ShopifyOrders,
    /// Square Dashboard Transactions CSV, also after a round trip through Excel.
    SquareTransactions,
    /// Square Dashboard Item Details CSV.
    SquareItems,
    /// Loyverse back-office receipts export: `receipts-by-item*.csv`, joined with `receipts*.csv`.
    Loyverse,
    /// Toast nightly data export: `ItemSelectionDetails*.csv`, joined with `CheckDetails*.csv`.
    Toast,
    /// SumUp sales report (German UI headers).
    Sumup,
    /// DSFinV-K (Germany): `transactions.csv` receipts joined with their `lines.csv`.
    Dsfinvk,
    /// NRF-ARTS POSLog XML, 2.x batches and 6.0 one-per-file.
    ArtsPoslog,
}

impl Format {
    /// Every format, as named in the config.
    pub const ALL: &'static [(&'static str, Format)] = &[
        ("native-csv", Format::NativeCsv),
        ("jsonl", Format::Jsonl),
        ("json", Format::Json),
        ("shopify-orders", Format::ShopifyOrders),
        ("square-transactions", Format::SquareTransactions),
        ("square-items", Format::SquareItems),
        ("loyverse", Format::Loyverse),
        ("toast", Format::Toast),
        ("sumup", Format::Sumup),
        ("dsfinvk", Format::Dsfinvk),
        ("arts-poslog", Format::ArtsPoslog),
    ];

    pub fn from_name(name: &str) -> Option<Format> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }

    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, f)| *f == self).map_or("?", |(n, _)| n)
    }

    /// Whether a file with this name is one this format reads. Formats split over several files
    /// read one of them and take the others as companions.
    pub fn reads_file(self, file_name: &str) -> bool {
        match self {
            Format::Loyverse => loyverse::reads_file(file_name),
            Format::Toast => toast::reads_file(file_name),
            Format::Dsfinvk => dsfinvk::reads_file(file_name),
            Format::NativeCsv
            | Format::Jsonl
            | Format::Json
            | Format::ShopifyOrders
            | Format::SquareTransactions
            | Format::SquareItems
            | Format::Sumup
            | Format::ArtsPoslog => true,
        }
    }

    /// The companion file that belongs to the export at `path` alone (named like it), for formats
    /// split over two files: the file is taken once both have settled, and they are archived together.
    pub fn companion_of(self, path: &std::path::Path) -> Option<std::path::PathBuf> {
        let kind = match self {
            Format::Loyverse => &loyverse::RECEIPTS,
            Format::Toast => &toast::CHECK_DETAILS,
            Format::Dsfinvk => &dsfinvk::LINES,
            _ => return None,
        };
        companion::named_alike(path, kind)
    }

    /// Date/time formats tried when the source does not set `time_formats`.
    pub fn default_time_formats(self) -> &'static [&'static str] {
        match self {
            // Shopify writes `2025-03-14 15:42:10 -0400`, which is always understood.
            Format::NativeCsv | Format::Jsonl | Format::Json | Format::ShopifyOrders => &[],
            // `Date` + `Time`: `2025-03-14 15:42:10` is always understood; 2017 files wrote
            // `11/15/2017`.
            Format::SquareTransactions | Format::SquareItems => &["%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M"],
            // Day first, as Philippine and most non-US accounts write it; a US account that exports
            // `7/28/26 1:33 PM` must set `time_formats`, never have its dates guessed.
            Format::Loyverse => &["%d/%m/%Y %H:%M"],
            Format::Toast => &["%m/%d/%y %I:%M %p"],
            Format::Sumup => &["%d.%m.%Y, %H:%M"],
            // ISO 8601 (`2025-03-14T15:42:10`, `...Z`, `...+01:00`), which is always understood.
            Format::Dsfinvk | Format::ArtsPoslog => &[],
        }
    }

    /// Decimal separator used when the source does not set one.
    pub fn default_decimal_separator(self) -> char {
        match self {
            Format::NativeCsv
            | Format::Jsonl
            | Format::Json
            | Format::ShopifyOrders
            | Format::SquareTransactions
            | Format::SquareItems
            | Format::Loyverse
            | Format::Toast
            | Format::Sumup
            | Format::ArtsPoslog => '.',
            Format::Dsfinvk => ',',
        }
    }

    /// File name endings picked up by default.
    pub fn default_extensions(self) -> &'static [&'static str] {
        match self {
            Format::NativeCsv => &["csv", "txt"],
            Format::Jsonl => &["jsonl", "ndjson", "json"],
            Format::Json => &["json"],
            Format::ShopifyOrders
            | Format::SquareTransactions
            | Format::SquareItems
            | Format::Loyverse
            | Format::Toast
            | Format::Sumup
            | Format::Dsfinvk => &["csv"],
            Format::ArtsPoslog => &["xml"],
        }
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
    /// compute a value parse with it and write their result with it.
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
pub fn read(
    format: Format,
    input: impl Read,
    options: &ReadOptions,
    sink: &mut dyn FnMut(Parsed) -> ControlFlow<()>,
) -> Result<Summary, FormatError> {
    let input = decode(input, options.encoding)?;
    match format {
        Format::NativeCsv => csv_native::read(input, options, sink),
        Format::Jsonl => json::read_lines(input, options, sink),
        Format::Json => json::read_document(input, options, sink),
        Format::ShopifyOrders => shopify::read(input, options, sink),
        Format::SquareTransactions => square::read_transactions(input, options, sink),
        Format::SquareItems => square::read_items(input, options, sink),
        Format::Loyverse => loyverse::read(input, options, sink),
        Format::Toast => toast::read(input, options, sink),
        Format::Sumup => sumup::read(input, options, sink),
        Format::Dsfinvk => dsfinvk::read(input, options, sink),
        Format::ArtsPoslog => poslog::read(input, options, sink),
    }
}

/// `input` as UTF-8: a UTF-8 BOM dropped, UTF-16 (with BOM) or the given legacy encoding transcoded.
/// Every file a reader sees (the one being read, and a companion) goes through here.
pub(crate) fn decode(
    input: impl Read,
    encoding: Option<&'static encoding_rs::Encoding>,
) -> std::io::Result<impl BufRead> {
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
