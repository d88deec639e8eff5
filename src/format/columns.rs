//! Columns by name, for the readers of POS exports (profiles) whose column sets drift between
//! years: the header row is read once and each column a profile uses is resolved to a position;
//! each data row is then read by position, with rejects that name the export's own column and line.
//!
//! This module owns header matching (trimmed, ASCII case-insensitive, first occurrence wins), the
//! "missing required columns" error, the list of unknown columns, and cell access (UTF-8 checks,
//! amounts). It knows no particular POS and never decides what a row means.

use super::{FormatError, Reject, Summary};
use crate::event::money::parse_amount;
use rust_decimal::Decimal;
use std::io::Read;

/// The position of a column in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Col(usize);

/// The header row of a file.
pub(super) struct Header {
    names: Vec<String>,
}

impl Header {
    /// Read the header (the first record). An empty file is unreadable.
    pub(super) fn read<R: Read>(reader: &mut csv::Reader<R>) -> Result<Header, FormatError> {
        let mut record = csv::ByteRecord::new();
        if !reader.read_byte_record(&mut record).map_err(csv_error)? {
            return Err(FormatError::Unreadable { line: 1, reason: "empty file: no header".into() });
        }
        let names = record.iter().map(|raw| String::from_utf8_lossy(raw).trim().to_string()).collect();
        Ok(Header { names })
    }

    /// The column called `name`, if the file has it.
    pub(super) fn optional(&self, name: &str) -> Option<Col> {
        self.names.iter().position(|n| n.eq_ignore_ascii_case(name)).map(Col)
    }

    /// The columns a profile cannot do without; a file lacking any of them is unreadable, and the
    /// error names every missing one.
    pub(super) fn required<const N: usize>(&self, format: &str, names: [&str; N]) -> Result<[Col; N], FormatError> {
        let found = names.map(|n| self.optional(n));
        let missing: Vec<String> =
            names.iter().zip(&found).filter(|(_, col)| col.is_none()).map(|(n, _)| format!("`{n}`")).collect();
        if !missing.is_empty() {
            return Err(FormatError::Unreadable {
                line: 1,
                reason: format!(
                    "not a {format} file: missing column{} {} (header has: {})",
                    if missing.len() == 1 { "" } else { "s" },
                    missing.join(", "),
                    self.names.join(",")
                ),
            });
        }
        Ok(found.map(|col| col.unwrap_or(Col(0))))
    }

    /// The number of columns, which every row must have.
    pub(super) fn width(&self) -> usize {
        self.names.len()
    }

    /// The file's summary: the header columns that are not in `known` (ignored).
    pub(super) fn summary(&self, known: &[&str]) -> Summary {
        Summary {
            ignored_columns: self
                .names
                .iter()
                .filter(|n| !n.is_empty() && !known.iter().any(|k| k.eq_ignore_ascii_case(n)))
                .cloned()
                .collect(),
            ..Summary::default()
        }
    }

    /// A data row, read against this header.
    pub(super) fn row<'r>(&'r self, record: &'r csv::ByteRecord) -> Row<'r> {
        Row { record, names: &self.names, line: record.position().map_or(0, |p| p.line()) }
    }
}

/// One data row and the line it starts on.
pub(super) struct Row<'r> {
    record: &'r csv::ByteRecord,
    names: &'r [String],
    pub line: u64,
}

impl<'r> Row<'r> {
    /// A blank line (one empty or white-space field), which readers pass over.
    pub(super) fn is_blank(&self) -> bool {
        self.record.len() == 1 && self.record.get(0).is_some_and(|f| f.iter().all(u8::is_ascii_whitespace))
    }

    /// A reject for this row's line, naming `col` (when given).
    pub(super) fn reject(&self, col: Option<Col>, reason: impl Into<String>) -> Reject {
        Reject { line: self.line, field: col.map(|Col(i)| self.names[i].clone()), reason: reason.into() }
    }

    /// A row whose field count differs from the header's cannot be trusted: its cells may have
    /// slipped into the wrong columns.
    pub(super) fn check_width(&self, width: usize) -> Result<(), Reject> {
        if self.record.len() == width {
            return Ok(());
        }
        Err(self.reject(None, format!("row has {} fields, header has {width}", self.record.len())))
    }

    /// The trimmed text of a cell; empty when the column is absent from the file or the cell is.
    pub(super) fn text(&self, col: impl Into<Option<Col>>) -> Result<&'r str, Reject> {
        let Some(Col(i)) = col.into() else {
            return Ok("");
        };
        let bytes = self.record.get(i).unwrap_or_default();
        std::str::from_utf8(bytes).map(str::trim).map_err(|_| self.reject(Some(Col(i)), "not valid UTF-8"))
    }

    /// The trimmed text of a cell, `None` when it is empty or the column is absent.
    pub(super) fn opt(&self, col: impl Into<Option<Col>>) -> Result<Option<&'r str>, Reject> {
        self.text(col).map(|s| Some(s).filter(|s| !s.is_empty()))
    }

    /// An amount that must be there.
    pub(super) fn amount(&self, col: Col, decimal: char) -> Result<Decimal, Reject> {
        let text = self.text(col)?;
        parse_amount(text, decimal).map_err(|e| match text {
            "" => self.reject(Some(col), e.to_string()),
            _ => self.reject(Some(col), format!("{e}: `{text}`")),
        })
    }

    /// An amount that counts as zero when the cell is empty or the column is absent.
    pub(super) fn amount_or_zero(&self, col: impl Into<Option<Col>>, decimal: char) -> Result<Decimal, Reject> {
        match col.into() {
            Some(col) if !self.text(col)?.is_empty() => self.amount(col, decimal),
            _ => Ok(Decimal::ZERO),
        }
    }
}

/// A CSV error: I/O stays I/O, anything else makes the file unreadable from that line on.
pub(super) fn csv_error(e: csv::Error) -> FormatError {
    let line = e.position().map_or(0, |p| p.line());
    match e.into_kind() {
        csv::ErrorKind::Io(io) => FormatError::Io(io),
        other => FormatError::Unreadable { line, reason: format!("{other:?}") },
    }
}

/// What the profile tests share: running a reader and `event::build` over a file, and rewriting
/// a fixture into the variants real exports take (columns reordered, added or dropped, CRLF).
#[cfg(test)]
pub(super) mod testing {
    use crate::event::{self, Event, SourceDefaults};
    use crate::format::{read, Format, Parsed, ReadOptions, Summary};
    use std::ops::ControlFlow;

    /// What a file turned into, one entry per order or reject, in file order.
    #[derive(Debug)]
    pub enum Got {
        Purchase(Box<Event>),
        Skip { line: u64, order_id: String, reason: String },
        Reject { line: u64, field: Option<String>, reason: String },
    }

    impl Got {
        /// One line that says what a README table row says: for a purchase its time, value,
        /// lines / units and how many emails, phones and external ids survived hashing; for a
        /// skip its line and reason; for a reject its line and field.
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

    /// Read `bytes` as `format` (decoding as the agent does) and build each order into an event.
    /// A build failure shows up as a reject naming the event field.
    pub fn run(format: Format, bytes: &[u8], options: &ReadOptions, defaults: &SourceDefaults) -> (Vec<Got>, Summary) {
        let mut out = Vec::new();
        let summary = read(format, bytes, options, &mut |parsed| {
            out.push(match parsed {
                Parsed::Order(raw) => match event::build(&raw, defaults) {
                    Ok((event, _)) => Got::Purchase(Box::new(event)),
                    Err(e) => Got::Reject { line: e.line, field: Some(e.field.to_string()), reason: e.reason },
                },
                Parsed::Skip(s) => Got::Skip { line: s.line, order_id: s.order_id, reason: s.reason },
                Parsed::Reject(r) => Got::Reject { line: r.line, field: r.field, reason: r.reason },
            });
            ControlFlow::Continue(())
        })
        .expect("the file is readable");
        (out, summary)
    }

    /// A CSV file as a table of text, to rewrite into variants.
    pub struct Table {
        pub header: Vec<String>,
        pub rows: Vec<Vec<String>>,
    }

    impl Table {
        pub fn parse(text: &str) -> Table {
            let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(text.as_bytes());
            let mut records =
                reader.records().map(|r| r.expect("fixture is valid CSV").iter().map(String::from).collect());
            let header = records.next().expect("fixture has a header");
            Table { header, rows: records.collect() }
        }

        fn position(&self, name: &str) -> usize {
            self.header.iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name}"))
        }

        /// Columns in reverse order.
        pub fn reversed(mut self) -> Table {
            self.header.reverse();
            self.rows.iter_mut().for_each(|r| r.reverse());
            self
        }

        /// An extra column at the front, with the same value on every row.
        pub fn with_column(mut self, name: &str, value: &str) -> Table {
            self.header.insert(0, name.into());
            self.rows.iter_mut().for_each(|r| r.insert(0, value.into()));
            self
        }

        pub fn without(mut self, name: &str) -> Table {
            let i = self.position(name);
            self.header.remove(i);
            self.rows.iter_mut().for_each(|r| {
                r.remove(i);
            });
            self
        }

        /// Set one cell; `row` counts data rows from 0.
        pub fn set(mut self, row: usize, name: &str, value: &str) -> Table {
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
}
