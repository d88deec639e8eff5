//! A CSV export read as a table, for every CSV reader (the native format and the POS profiles): the
//! header mapped to the columns a reader asks for, each following record given its exact line, cells
//! read as checked text and amounts, and runs of consecutive records read as orders
//! ([`read_orders`]).
//!
//! It decides nothing about sales: which rows form an order, and what is sent, belongs to the reader.
//! A reject names a column and a line; it quotes a cell only where a reader's [`Conventions`] ask for
//! it (a Shopify or Square amount), and then only a harmless one ([`pii::shown`]), never an
//! identifier. A first line that is a data row is described by its fields' shapes, never quoted.

use super::record_cap::RecordCap;
use super::{Dialect, FormatError, Parsed, Quoting, Reject, MAX_RECORD_BYTES};
use crate::event::money::parse_amount;
use crate::event::pii::{self, Shape};
use rust_decimal::Decimal;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Chain, Cursor, Read};
use std::ops::ControlFlow;
use std::rc::Rc;

/// The CSV parser over an input whose line ends are counted: the header line read for sniffing the
/// delimiter, then the rest, each record capped at [`MAX_RECORD_BYTES`].
type Csv<R> = csv::Reader<RecordCap<Chain<Cursor<Vec<u8>>, BufReader<LineEnds<R>>>>>;

/// How a reader's header names are matched and its rejects worded, where readers differ.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Conventions {
    pub names: Names,
    /// A reject for a cell that is not an amount quotes the cell when it is harmless (a number, a
    /// word), else names its shape ([`pii::shown`]): a phone number in a price column is never quoted.
    pub quote_bad_amounts: bool,
}

impl Conventions {
    /// Shopify's and Square's exports, whose headers drift between years: names in any case, and a
    /// bad amount quoted in its reject.
    pub const DRIFTING: Conventions = Conventions { names: Names::AnyCase, quote_bad_amounts: true };
}

/// How header names are kept and matched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum Names {
    /// As the file spells them (trimmed), matched exactly.
    #[default]
    Exact,
    /// As the file spells them (trimmed), matched whatever their ASCII case.
    AnyCase,
    /// Lower-cased as they are read, so that rejects and ignored columns name them so; matched
    /// whatever their ASCII case.
    Lowercased,
}

/// The header, shared by the table and its rows so that a row can name its columns.
struct Header {
    names: Vec<String>,
    conventions: Conventions,
}

/// A CSV file whose header has been read.
pub(super) struct Table<R> {
    reader: Csv<R>,
    header: Rc<Header>,
    record: csv::ByteRecord,
    /// A record handed back by [`Table::recycle`], read into next with its room: a reader that
    /// hands its rows back allocates nothing per record.
    spare: Option<csv::ByteRecord>,
}

/// One non-blank record and the line it starts on. Its cells are checked as they are read, unless
/// [`Table::next_row`] (or [`Row::check`]) checked them all first.
pub(super) struct Row {
    pub line: u64,
    cells: Cells,
    header: Rc<Header>,
}

/// A record's cells: text when the whole record is valid UTF-8 (checked once, by the csv crate:
/// a pass over its bytes where they are ASCII), else bytes, each checked again as it is read, so
/// that a reject names the column that is not UTF-8.
enum Cells {
    Text(csv::StringRecord),
    Bytes(csv::ByteRecord),
}

impl Cells {
    fn of(record: csv::ByteRecord) -> Cells {
        csv::StringRecord::from_byte_record(record).map_or_else(|e| Cells::Bytes(e.into_byte_record()), Cells::Text)
    }

    fn bytes(&self) -> &csv::ByteRecord {
        match self {
            Cells::Text(text) => text.as_byte_record(),
            Cells::Bytes(bytes) => bytes,
        }
    }

    fn into_bytes(self) -> csv::ByteRecord {
        match self {
            Cells::Text(text) => text.into_byte_record(),
            Cells::Bytes(bytes) => bytes,
        }
    }
}

/// What a record must pass before it counts as a row.
#[derive(Debug, Clone, Copy)]
pub(super) enum Check<'a> {
    /// Nothing: the reader checks the field count itself, and each cell as it reads it.
    Nothing,
    /// As many fields as the header, and these cells UTF-8, checked in this order.
    Cells(&'a [usize]),
    /// As many fields as the header, and every cell UTF-8.
    EveryCell,
}

impl<R: Read> Table<R> {
    /// Open `input` and read the header (the first record); a file without one is unreadable, and
    /// so is one from a record over [`MAX_RECORD_BYTES`] on. Header names are matched exactly.
    pub fn open(input: R, dialect: Dialect) -> Result<Self, FormatError> {
        Self::open_as(input, dialect, Conventions::default())
    }

    /// [`Table::open`] with a reader's own conventions.
    pub fn open_as(input: R, dialect: Dialect, conventions: Conventions) -> Result<Self, FormatError> {
        // Line numbers come from `LineEnds`, which counts the original bytes, so the parser must see
        // them unchanged (CRLF included).
        let mut input = BufReader::new(LineEnds { inner: input, offset: 0, ends: VecDeque::new(), lines_before: 0 });
        let mut first_line = Vec::new();
        input.by_ref().take(MAX_RECORD_BYTES as u64).read_until(b'\n', &mut first_line)?;
        let delimiter = dialect.delimiter.unwrap_or_else(|| detect_delimiter(&first_line));
        let quote = match dialect.quote {
            Quoting::Detect => Some(detect_quote(&first_line, delimiter)),
            Quoting::Char(q) => Some(q),
            Quoting::Off => None,
        };
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .quote(quote.unwrap_or(b'"'))
            .quoting(quote.is_some())
            .flexible(true)
            .has_headers(false)
            .from_reader(RecordCap::new(Cursor::new(first_line).chain(input), delimiter, quote, MAX_RECORD_BYTES));
        let mut record = csv::ByteRecord::new();
        if !reader.read_byte_record(&mut record).map_err(csv_error)? {
            return Err(FormatError::Unreadable { line: 1, reason: "empty file: no header".into() });
        }
        let names = record
            .iter()
            .map(|name| {
                let name = String::from_utf8_lossy(name).trim().to_string();
                match conventions.names {
                    Names::Lowercased => name.to_ascii_lowercase(),
                    Names::Exact | Names::AnyCase => name,
                }
            })
            .collect();
        Ok(Table { reader, header: Rc::new(Header { names, conventions }), record, spare: None })
    }

    /// The next non-blank record, unchecked, or `None` at the end.
    pub fn next_record(&mut self) -> Result<Option<Row>, FormatError> {
        loop {
            if !self.reader.read_byte_record(&mut self.record).map_err(csv_error)? {
                return Ok(None);
            }
            let blank =
                self.record.len() == 1 && self.record.get(0).is_some_and(|f| f.iter().all(u8::is_ascii_whitespace));
            if !blank {
                break;
            }
        }
        let start = self.record.position().map_or(0, |p| p.byte());
        let line = self.reader.get_mut().get_mut().get_mut().1.get_mut().line_of(start);
        let record = std::mem::replace(&mut self.record, self.spare.take().unwrap_or_default());
        Ok(Some(Row { line, cells: Cells::of(record), header: Rc::clone(&self.header) }))
    }

    /// Hand a row's record back, to be read into again.
    pub fn recycle(&mut self, row: Row) {
        self.spare = Some(row.cells.into_bytes());
    }

    /// The next non-blank record checked as a whole ([`Check::EveryCell`]), or the reject that says
    /// why it cannot be read; `None` at the end.
    pub fn next_row(&mut self) -> Result<Option<Result<Row, Reject>>, FormatError> {
        Ok(self.next_record()?.map(|row| row.check(Check::EveryCell).map(|()| row)))
    }
}

impl<R> Table<R> {
    /// The positions of columns a reader cannot do without; the file is unreadable when any is
    /// missing, and the error names every missing one.
    pub fn required<const N: usize>(&self, names: [&str; N]) -> Result<[usize; N], FormatError> {
        self.find_all(names, "missing required column")
    }

    /// [`Table::required`], saying which export the file is not.
    pub fn required_in<const N: usize>(&self, export: &str, names: [&str; N]) -> Result<[usize; N], FormatError> {
        self.find_all(names, &format!("not a {export} file: missing column"))
    }

    fn find_all<const N: usize>(&self, names: [&str; N], missing_column: &str) -> Result<[usize; N], FormatError> {
        let found = names.map(|name| self.optional(name));
        let missing: Vec<String> =
            names.iter().zip(&found).filter(|(_, at)| at.is_none()).map(|(name, _)| format!("`{name}`")).collect();
        if !missing.is_empty() {
            return Err(FormatError::Unreadable {
                line: 1,
                reason: format!(
                    "{missing_column}{} {} ({})",
                    if missing.len() == 1 { "" } else { "s" },
                    missing.join(", "),
                    header_shown(&self.header.names)
                ),
            });
        }
        Ok(found.map(|at| at.unwrap_or_default()))
    }

    /// The position of a column the reader can do without (the first of that name).
    pub fn optional(&self, name: &str) -> Option<usize> {
        self.header.names.iter().position(|h| self.header.matches(h, name))
    }

    /// The header's names, in file order.
    pub fn names(&self) -> &[String] {
        &self.header.names
    }

    /// Header columns that are not among the format's `known` ones (ignored).
    pub fn unknown_columns(&self, known: &[&str]) -> Vec<String> {
        let names = &self.header.names;
        names
            .iter()
            .enumerate()
            .filter(|(_, h)| !h.is_empty() && !known.iter().any(|k| self.header.matches(h, k)))
            .map(|(at, h)| column_shown(at, h))
            .collect()
    }
}

impl Header {
    fn matches(&self, name: &str, asked: &str) -> bool {
        match self.conventions.names {
            Names::Exact => name == asked,
            Names::AnyCase | Names::Lowercased => name.eq_ignore_ascii_case(asked),
        }
    }
}

impl Row {
    /// Whether the record passes `check`, or the reject naming its line and the first problem.
    pub fn check(&self, check: Check) -> Result<(), Reject> {
        match check {
            Check::Nothing => Ok(()),
            // Every cell of a record held as text is UTF-8 already.
            Check::Cells(_) | Check::EveryCell if matches!(self.cells, Cells::Text(_)) => self.check_width(),
            Check::Cells(cells) => {
                self.check_width()?;
                cells.iter().try_for_each(|&at| self.cell(at).map(drop))
            }
            Check::EveryCell => {
                self.check_width()?;
                (0..self.cells.bytes().len()).try_for_each(|at| self.cell(at).map(drop))
            }
        }
    }

    /// A record whose field count differs from the header's cannot be trusted: its cells may have
    /// slipped into the wrong columns.
    pub fn check_width(&self) -> Result<(), Reject> {
        let width = self.header.names.len();
        let record = self.cells.bytes();
        if record.len() == width {
            return Ok(());
        }
        Err(self.reject(None, width_mismatch(record, width)))
    }

    /// The header's name of column `at`.
    pub fn name(&self, at: usize) -> &str {
        self.header.names.get(at).map_or("", String::as_str)
    }

    /// A reject for this row's line, naming column `at` (when given).
    pub fn reject(&self, at: Option<usize>, reason: impl Into<String>) -> Reject {
        Reject { line: self.line, field: at.map(|at| self.name(at).to_string()), reason: reason.into() }
    }

    /// The text of column `at` as written (untrimmed); empty when the record has no such field.
    pub fn cell(&self, at: usize) -> Result<&str, Reject> {
        match &self.cells {
            Cells::Text(text) => Ok(text.get(at).unwrap_or_default()),
            Cells::Bytes(bytes) => std::str::from_utf8(bytes.get(at).unwrap_or_default())
                .map_err(|_| self.reject(Some(at), "not valid UTF-8")),
        }
    }

    /// The trimmed text of a column; empty when the column is absent from the file or the cell is.
    pub fn text(&self, at: impl Into<Option<usize>>) -> Result<&str, Reject> {
        match at.into() {
            Some(at) => self.cell(at).map(str::trim),
            None => Ok(""),
        }
    }

    /// The trimmed text of a column, `None` when it is empty or the column is absent.
    pub fn text_opt(&self, at: impl Into<Option<usize>>) -> Result<Option<&str>, Reject> {
        self.text(at).map(|text| Some(text).filter(|text| !text.is_empty()))
    }

    /// The trimmed text of column `at` of a checked row; empty when the column is blank.
    pub fn get(&self, at: usize) -> &str {
        self.text(at).unwrap_or_default()
    }

    /// The trimmed text of an optional column of a checked row, `None` when the column is absent or
    /// blank.
    pub fn opt(&self, at: Option<usize>) -> Option<&str> {
        self.text_opt(at).ok().flatten()
    }

    /// The order key in column `at`: its trimmed text, which must not be empty. A record of NUL
    /// bytes only (padding) has none: it belongs to no order.
    pub fn key(&self, at: usize) -> Result<String, Reject> {
        if is_nul_padding(self.cells.bytes()) {
            return Err(self.reject(None, NUL_PADDING));
        }
        match self.text(at)? {
            "" => Err(self.reject(Some(at), "empty")),
            key => Ok(key.to_string()),
        }
    }

    /// The amount in column `at`, or the reject naming the column and line.
    pub fn amount(&self, at: usize, decimal: char) -> Result<Decimal, Reject> {
        let text = self.text(at)?;
        parse_amount(text, decimal).map_err(|e| {
            if self.header.conventions.quote_bad_amounts && !text.is_empty() {
                self.reject(Some(at), format!("{e}: {}", pii::shown(text)))
            } else {
                self.reject(Some(at), e.to_string())
            }
        })
    }

    /// An amount that counts as zero when the cell is empty or the column is absent.
    pub fn amount_or_zero(&self, at: impl Into<Option<usize>>, decimal: char) -> Result<Decimal, Reject> {
        match at.into() {
            Some(at) if !self.text(at)?.is_empty() => self.amount(at, decimal),
            _ => Ok(Decimal::ZERO),
        }
    }

    /// A unit price from a line total, or the reject naming the quantity column when there is none.
    pub fn unit_price(&self, quantity_at: usize, total: Decimal, quantity: Decimal) -> Result<Decimal, Reject> {
        total.checked_div(quantity).ok_or_else(|| self.reject(Some(quantity_at), "zero, so the line has no unit price"))
    }
}

/// Why a record whose field count differs from the header's cannot be read, in words an operator
/// can act on: a record of NUL bytes only is padding, and one that runs over several lines
/// probably has a quote that is never closed (everything up to the next quote became one field).
fn width_mismatch(record: &csv::ByteRecord, width: usize) -> String {
    if is_nul_padding(record) {
        return NUL_PADDING.into();
    }
    let lines = record.as_slice().iter().filter(|b| **b == b'\n').count();
    let mut reason = format!("row has {} fields, header has {width}", record.len());
    if lines > 0 {
        reason.push_str(&format!(" (it runs over {} lines: a quote that is never closed?)", lines + 1));
    }
    reason
}

/// Whether a record is nothing but NUL bytes: the padding of a file that was preallocated, or
/// whose writer stopped before filling it.
fn is_nul_padding(record: &csv::ByteRecord) -> bool {
    !record.as_slice().is_empty() && record.as_slice().iter().all(|b| *b == 0)
}

const NUL_PADDING: &str = "only NUL bytes where a row should be (the file is padded, or was not completely written)";

/// A header as a message shows it: the names joined with commas, control characters escaped, cut
/// after 200 characters (the "header" of a file that is not CSV at all is noise). A first line
/// that looks like a data row (a headerless export, or a later part of a file a POS kept writing to)
/// is never quoted: its fields are described by position and shape only, as they may be an
/// e-mail address or phone number.
fn header_shown(names: &[String]) -> String {
    const SHOWN: usize = 200;
    if looks_like_data(names) {
        return data_row_shown(names);
    }
    let joined = names.join(",");
    let mut shown = String::from("header has: ");
    for c in joined.chars().take(SHOWN) {
        if c.is_control() {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    if joined.chars().nth(SHOWN).is_some() {
        shown.push('…');
    }
    shown
}

/// Whether a header name is a value a data row holds rather than a column name: an e-mail address,
/// phone number, number or date. Such a name is never quoted.
fn is_data_cell(name: &str) -> bool {
    matches!(pii::shape(name), Shape::Email | Shape::Phone | Shape::Number | Shape::DateTime)
}

/// Whether the first line reads as a data row: any of its fields is a value ([`is_data_cell`]).
fn looks_like_data(names: &[String]) -> bool {
    names.iter().any(|name| is_data_cell(name))
}

/// A first line that is a data row, by its fields' positions and shapes (the first few that are
/// not empty).
fn data_row_shown(names: &[String]) -> String {
    const FIELDS: usize = 8;
    let described: Vec<String> = names
        .iter()
        .enumerate()
        .filter(|(_, name)| !name.is_empty())
        .take(FIELDS)
        .map(|(i, name)| format!("field {} {}", i + 1, pii::shape(name)))
        .collect();
    let more = if names.iter().filter(|n| !n.is_empty()).count() > FIELDS { ", …" } else { "" };
    format!(
        "the first line is a data row of {} field{}, not a header: {}{more}; a file without a header, or a later part of an export?",
        names.len(),
        if names.len() == 1 { "" } else { "s" },
        described.join(", ")
    )
}

/// Header column `at` (`name`) as a message or summary shows it: its name, unless the name is a
/// value ([`is_data_cell`]), which is named by its position only.
pub(super) fn column_shown(at: usize, name: &str) -> String {
    if is_data_cell(name) {
        format!("field {}", at + 1)
    } else {
        name.to_string()
    }
}

/// Pick the delimiter that occurs most often in the header line (`,` `;` tab `|`).
pub(super) fn detect_delimiter(header: &[u8]) -> u8 {
    let line = header.split(|b| *b == b'\n').next().unwrap_or(&[]);
    [b',', b';', b'\t', b'|']
        .into_iter()
        .max_by_key(|d| (line.iter().filter(|b| *b == d).count(), *d == b','))
        .unwrap_or(b',')
}

/// `'` when every name in the header line is wrapped in single quotes (and there is more than a
/// lone `'`), else `"`. Exports that quote with `'` quote their header too.
fn detect_quote(header: &[u8], delimiter: u8) -> u8 {
    let line = header.split(|b| *b == b'\n').next().unwrap_or(&[]);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let single = |f: &[u8]| {
        let f = f.trim_ascii();
        f.len() >= 2 && f.starts_with(b"'") && f.ends_with(b"'")
    };
    if !line.is_empty() && line.split(|b| *b == delimiter).all(single) {
        b'\''
    } else {
        b'"'
    }
}

/// The line ends (`\r`, `\n`) the CSV parser has been given, so that a record's line can be told
/// exactly: the parser's own count runs one behind after a CRLF line end or a blank line
/// (BurntSushi/rust-csv#395). Holds only the line ends read ahead of the current record.
struct LineEnds<R> {
    inner: R,
    /// Bytes read so far.
    offset: u64,
    /// Offsets of the `\r` and `\n` bytes not yet passed.
    ends: VecDeque<(u64, u8)>,
    /// `\n` bytes passed.
    lines_before: u64,
}

impl<R> LineEnds<R> {
    /// The line of the record whose parse began at byte `start`: the parser begins right after the
    /// previous record's terminator, so line ends (the `\n` of a CRLF, blank lines) may come first.
    fn line_of(&mut self, start: u64) -> u64 {
        let mut at = start;
        while let Some(&(offset, byte)) = self.ends.front() {
            if offset > at {
                break;
            }
            if offset == at {
                at += 1;
            }
            if byte == b'\n' {
                self.lines_before += 1;
            }
            self.ends.pop_front();
        }
        self.lines_before + 1
    }
}

impl<R: Read> Read for LineEnds<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        for i in memchr::memchr2_iter(b'\r', b'\n', &buf[..n]) {
            self.ends.push_back((self.offset + i as u64, buf[i]));
        }
        self.offset += n as u64;
        Ok(n)
    }
}

/// Read the rest of `table` as orders: each run of consecutive records with the same `key` is one
/// order, begun by `start` (with its key and first record, which may have failed `check`), fed row
/// by row to `add` (only records that pass `check`), and turned by `finish` into what `sink` gets.
/// The first problem of a run (a record that fails `check`, or a reject from `add`) goes to `finish`
/// with it. A record without a key is rejected alone, for the problem `check` found or else the one
/// `key` did. Only one order is held at a time. Stops early when `sink` breaks.
pub(super) fn read_orders<R: Read, K: Clone + PartialEq, G>(
    table: &mut Table<R>,
    check: Check,
    mut key: impl FnMut(&Row) -> Result<K, Reject>,
    mut start: impl FnMut(K, &Row) -> G,
    mut add: impl FnMut(&mut G, &Row) -> Result<(), Reject>,
    mut finish: impl FnMut(G, Option<Reject>) -> Parsed,
    sink: &mut dyn FnMut(Parsed) -> ControlFlow<()>,
) -> Result<(), FormatError> {
    let mut current: Option<(K, G, Option<Reject>)> = None;
    while let Some(row) = table.next_record()? {
        let checked = row.check(check);
        let id = match key(&row) {
            Ok(id) => id,
            Err(reject) => {
                table.recycle(row);
                if sink(Parsed::Reject(checked.err().unwrap_or(reject))).is_break() {
                    return Ok(());
                }
                continue;
            }
        };
        if current.as_ref().is_some_and(|(current_id, ..)| *current_id != id) {
            if let Some((_, group, bad)) = current.take() {
                if sink(finish(group, bad)).is_break() {
                    return Ok(());
                }
            }
        }
        let (_, group, bad) = current.get_or_insert_with(|| (id.clone(), start(id, &row), None));
        if let Err(reject) = checked.and_then(|()| add(group, &row)) {
            bad.get_or_insert(reject);
        }
        table.recycle(row);
    }
    if let Some((_, group, bad)) = current {
        let _ = sink(finish(group, bad));
    }
    Ok(())
}

/// A row's or order's `Reject` restated as the reason its order was not taken.
pub(super) fn order_not_taken(order_id: &str, mut reject: Reject) -> Reject {
    reject.reason = format!("order `{order_id}` not taken: {}", reject.reason);
    reject
}

/// A CSV error: I/O stays I/O, anything else makes the file unreadable from that line on.
fn csv_error(e: csv::Error) -> FormatError {
    let line = e.position().map_or(0, |p| p.line());
    match e.into_kind() {
        csv::ErrorKind::Io(io) => io.into(),
        other => FormatError::Unreadable { line, reason: format!("{other:?}") },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Table<&[u8]> {
        Table::open(text.as_bytes(), Dialect::default()).unwrap()
    }

    /// Records are read into the record a row handed back (`Table::recycle`): a short record
    /// after a wide one has only its own cells, and every order sees its own rows.
    #[test]
    fn a_recycled_record_holds_only_the_next_records_cells() {
        let mut t = table("k,a,b,c\n1,x,y,z\n2,p\n2,,q\n3\n");
        let mut seen: Vec<(String, Vec<String>)> = Vec::new();
        read_orders(
            &mut t,
            Check::Nothing,
            |row| row.key(0),
            |key, _| (key, Vec::new()),
            |(_, cells): &mut (String, Vec<String>), row| {
                cells.push((1..4).map(|at| row.cell(at).unwrap_or("?")).collect::<Vec<_>>().join("|"));
                Ok(())
            },
            |group, _| {
                seen.push(group);
                Parsed::Reject(Reject { line: 0, field: None, reason: String::new() })
            },
            &mut |_| ControlFlow::Continue(()),
        )
        .unwrap();
        let want = [("1", vec!["x|y|z"]), ("2", vec!["p||", "|q|"]), ("3", vec!["||"])];
        let want: Vec<(String, Vec<String>)> =
            want.iter().map(|(k, c)| (k.to_string(), c.iter().map(|c| c.to_string()).collect())).collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn columns_are_found_by_name_and_missing_ones_are_all_named() {
        let t = table("B,A,C\n");
        assert_eq!(t.required(["A", "C"]).unwrap(), [1, 2]);
        assert_eq!(t.optional("B"), Some(0));
        assert_eq!(t.optional("D"), None);
        let err = t.required(["A", "D", "E"]).unwrap_err().to_string();
        assert!(err.contains("`D`, `E`"), "{err}");
        assert_eq!(t.unknown_columns(&["A", "B"]), vec!["C".to_string()]);
    }

    #[test]
    fn bad_records_name_line_field_and_key() {
        let mut bytes = "key,name\nK1,Zoë ok\n\nK2\nK3,Caf".as_bytes().to_vec();
        bytes.extend_from_slice(&[0xE9, b'\n']);
        let mut t = Table::open(&bytes[..], Dialect::default()).unwrap();
        let row = t.next_row().unwrap().unwrap().ok().unwrap();
        assert_eq!((row.line, row.get(1)), (2, "Zoë ok"));
        let short = t.next_record().unwrap().unwrap();
        let Err(reject) = short.check(Check::EveryCell) else { panic!("a short row is bad") };
        assert_eq!((short.key(0).ok().as_deref(), reject.line), (Some("K2"), 4));
        let utf8 = t.next_record().unwrap().unwrap();
        let Err(reject) = utf8.check(Check::EveryCell) else { panic!("invalid UTF-8 is bad") };
        assert_eq!(utf8.key(0).ok().as_deref(), Some("K3"));
        assert_eq!(reject.field.as_deref(), Some("name"));
        assert!(t.next_row().unwrap().is_none());
    }

    #[test]
    fn records_get_their_lines_whatever_the_line_ends() {
        let cases: &[(&str, &[u64])] = &[
            ("h\nA\nB\nC\n", &[2, 3, 4]),
            ("h\r\nA\r\nB\r\nC\r\n", &[2, 3, 4]),
            ("h\r\nA\r\nB", &[2, 3]),
            ("h\n\nA\n\n\nB\n", &[3, 6]),
            ("h\r\n\r\nA\r\nB\r\n\r\n", &[3, 4]),
            ("h\n\"A\nx\"\nB", &[2, 4]),
            ("h\r\n\"A\r\n\r\nx\"\r\nB\r\n", &[2, 5]),
            ("h\r\n1\r\n\"2\r\nx\"\r\n3\r\n", &[2, 3, 5]),
            ("h\n1\n\"2\nx\"\n3\n", &[2, 3, 5]),
        ];
        for (text, lines) in cases {
            for chunk in [1, 2, 3, 64] {
                let mut t = Table::open(Trickle { bytes: text.as_bytes(), chunk }, Dialect::default()).unwrap();
                let mut got = Vec::new();
                while let Some(row) = t.next_row().unwrap() {
                    got.push(row.ok().unwrap().line);
                }
                assert_eq!(got, *lines, "{text:?} read {chunk} byte(s) at a time");
            }
        }
    }

    /// An input that hands out at most `chunk` bytes a read, so that a CRLF may be split.
    struct Trickle<'a> {
        bytes: &'a [u8],
        chunk: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.chunk.min(out.len()).min(self.bytes.len());
            out[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    #[test]
    fn conventions_decide_name_matching_and_amount_rejects() {
        let text = "Total,Note\n1.4.4,x\n";
        let mut exact = Table::open(text.as_bytes(), Dialect::default()).unwrap();
        assert_eq!((exact.optional("total"), exact.optional("Total")), (None, Some(0)));
        let row = exact.next_row().unwrap().unwrap().ok().unwrap();
        assert_eq!(row.amount(0, '.').unwrap_err().reason, "not an amount");

        let mut drifting = Table::open_as(text.as_bytes(), Dialect::default(), Conventions::DRIFTING).unwrap();
        assert_eq!(drifting.optional("TOTAL"), Some(0));
        assert_eq!(drifting.unknown_columns(&["total"]), ["Note"]);
        let err = drifting.required_in("Shop export", ["total", "Name"]).unwrap_err().to_string();
        assert!(err.contains("not a Shop export file: missing column `Name`"), "{err}");
        let row = drifting.next_row().unwrap().unwrap().ok().unwrap();
        let reject = row.amount(0, '.').unwrap_err();
        assert_eq!((reject.field.as_deref(), reject.reason.as_str()), (Some("Total"), "not an amount: `1.4.4`"));

        let lowercased = Conventions { names: Names::Lowercased, ..Conventions::default() };
        let table = Table::open_as(text.as_bytes(), Dialect::default(), lowercased).unwrap();
        assert_eq!((table.names(), table.optional("TOTAL")), (&["total".to_string(), "note".to_string()][..], Some(0)));
    }

    #[test]
    fn quoting_is_detected_from_the_header_or_set() {
        let detect = [
            ("a,b,c", b'"'),
            ("'a','b','c'\r\n", b'\''),
            ("'a';'b'", b'\''),
            ("'a',b", b'"'),
            ("\"a\",\"b\"", b'"'),
            ("'", b'"'),
            ("", b'"'),
        ];
        for (header, quote) in detect {
            let delimiter = detect_delimiter(header.as_bytes());
            assert_eq!(detect_quote(header.as_bytes(), delimiter) as char, quote as char, "{header:?}");
        }
        let cells = |text: &str, quote: Quoting| -> Vec<String> {
            let mut t = Table::open(text.as_bytes(), Dialect { delimiter: None, quote }).unwrap();
            let row = t.next_row().unwrap().unwrap().unwrap();
            (0..3).map(|i| row.get(i).to_string()).collect()
        };
        let single = "'id','name','price'\n'1','O''Brien, Pat','2,50'\n";
        assert_eq!(cells(single, Quoting::Detect), ["1", "O'Brien, Pat", "2,50"]);
        let inches = "id;name;price\n1;\"Big\" 27\" display;199\n";
        assert_eq!(cells(inches, Quoting::Off), ["1", "\"Big\" 27\" display", "199"]);
        assert_ne!(cells(inches, Quoting::Detect)[1], "\"Big\" 27\" display");
        let set = "id|name|price\n1|#a|b#|3\n";
        assert_eq!(cells(set, Quoting::Char(b'#')), ["1", "a|b", "3"]);
    }

    #[test]
    fn delimiters() {
        assert_eq!(detect_delimiter(b"a,b,c\n1;2"), b',');
        assert_eq!(detect_delimiter(b"a;b;c"), b';');
        assert_eq!(detect_delimiter(b"a\tb"), b'\t');
        assert_eq!(detect_delimiter(b"single"), b',');
    }

    #[test]
    fn a_record_over_the_cap_makes_the_file_unreadable_from_its_line() {
        let mut text = b"key,name\nK1,ok\nK2,".to_vec();
        text.extend(std::iter::repeat_n(b'x', MAX_RECORD_BYTES + 1));
        let mut t = Table::open(&text[..], Dialect::default()).unwrap();
        assert!(t.next_row().unwrap().unwrap().is_ok());
        match t.next_row() {
            Err(FormatError::Unreadable { line: 3, reason }) => assert!(reason.contains("longer than"), "{reason}"),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("read a record over the cap"),
        }
        let header = vec![b'h'; MAX_RECORD_BYTES + 1];
        assert!(matches!(Table::open(&header[..], Dialect::default()), Err(FormatError::Unreadable { line: 1, .. })));
    }

    #[test]
    fn rejects_say_what_probably_happened() {
        let record = |fields: &[&[u8]]| csv::ByteRecord::from(fields.to_vec());
        assert_eq!(width_mismatch(&record(&[b"a", b"b"]), 3), "row has 2 fields, header has 3");
        let unclosed = width_mismatch(&record(&[b"a", b"b\nc\nd"]), 3);
        assert!(unclosed.ends_with("(it runs over 3 lines: a quote that is never closed?)"), "{unclosed}");
        assert_eq!(width_mismatch(&record(&[b"\0\0\0"]), 3), NUL_PADDING);
        let mut t = Table::open(&b"key,name\n\0\0\0\0"[..], Dialect::default()).unwrap();
        let padding = t.next_record().unwrap().unwrap();
        assert_eq!(padding.key(0).unwrap_err().reason, NUL_PADDING);
    }

    #[test]
    fn headers_in_messages_are_short_and_printable() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(header_shown(&names(&["a", "b\u{1b}[31m", "c\0"])), "header has: a,b\\u{1b}[31m,c\\u{0}");
        let long = header_shown(&names(&[&"x".repeat(500)]));
        assert_eq!(long.chars().count(), "header has: ".len() + 201);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn a_data_row_where_the_header_should_be_is_described_never_quoted() {
        let data = table("A1,2025-03-14 10:00:00, ALICE_abc@gmail.com ,(+1)2133734253,SKU-1,Tea,2.50\n");
        let got = data.required(["order_id"]).unwrap_err().to_string();
        let expected = "missing required column `order_id` (the first line is a data row of 7 fields, not a header: \
                        field 1 is a word, field 2 is a date or time, field 3 looks like an e-mail address, field 4 \
                        looks like a phone number, field 5 is a word, field 6 is a word, field 7 is a number; a file \
                        without a header, or a later part of an export?)";
        assert!(got.ends_with(expected), "{got}");
        assert!(!got.contains("ALICE") && !got.contains("2133734253") && !got.contains("Tea"), "{got}");
        let header = table("order_id,e-mail\n").required(["order_id", "x"]).unwrap_err().to_string();
        assert!(header.ends_with("missing required column `x` (header has: order_id,e-mail)"), "{header}");
        let t = table("A1, ALICE_abc@gmail.com ,note\n");
        assert_eq!(t.unknown_columns(&[]), vec!["A1".to_string(), "field 2".into(), "note".into()]);
    }
}
