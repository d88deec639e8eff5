//! A POS export's CSV read by column name, for the profiles (`loyverse`, `toast`, `sumup`): the
//! header mapped to the columns a profile asks for, each following record checked (field count,
//! UTF-8) and given its exact line before the profile sees it, and the amount parsing every profile
//! shares.
//!
//! It decides nothing about sales: which rows form an order, and what is sent, belongs to the
//! profile. It never names a cell's value in a reject, only its column and line.

use super::{FormatError, Parsed, Reject};
use crate::event::money::parse_amount;
use rust_decimal::Decimal;
use std::collections::VecDeque;
use std::io::{BufReader, Chain, Cursor, Read};
use std::ops::ControlFlow;

/// What [`super::open_csv`] makes of an input whose line ends are counted.
type Csv<R> = csv::Reader<Chain<Cursor<Vec<u8>>, BufReader<LineEnds<R>>>>;

/// A CSV file whose header has been read.
pub(super) struct Table<R> {
    reader: Csv<R>,
    header: Vec<String>,
    record: csv::ByteRecord,
}

/// One record of the table, checked: as many fields as the header, all UTF-8.
pub(super) struct Row {
    pub line: u64,
    fields: csv::StringRecord,
}

/// A record that cannot be read as a row, with the order key when it could still be read.
pub(super) struct BadRow {
    pub key: Option<String>,
    pub reject: Reject,
}

impl<R: Read> Table<R> {
    /// Open `input` with [`super::open_csv`] and read the header (the first record); a file
    /// without one is unreadable.
    pub fn open(input: R, delimiter: Option<u8>) -> Result<Self, FormatError> {
        // Not `super::open_csv`: line numbers here come from `LineEnds`, which counts the original
        // bytes, so the reader must see them unchanged (CRLF included).
        let mut input = BufReader::new(LineEnds { inner: input, offset: 0, ends: VecDeque::new(), lines_before: 0 });
        let mut first_line = Vec::new();
        std::io::BufRead::read_until(&mut std::io::Read::by_ref(&mut input).take(1024 * 1024), b'\n', &mut first_line)?;
        let delimiter = delimiter.unwrap_or_else(|| super::detect_delimiter(&first_line));
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .flexible(true)
            .has_headers(false)
            .from_reader(Cursor::new(first_line).chain(input));
        let mut record = csv::ByteRecord::new();
        if !reader.read_byte_record(&mut record).map_err(csv_error)? {
            return Err(FormatError::Unreadable { line: 1, reason: "empty file: no header".into() });
        }
        let header = record.iter().map(|name| String::from_utf8_lossy(name).trim().to_string()).collect();
        Ok(Table { reader, header, record })
    }

    /// The positions of columns a profile cannot do without; the file is unreadable when any is
    /// missing, and the error names every missing one.
    pub fn required<const N: usize>(&self, names: [&str; N]) -> Result<[usize; N], FormatError> {
        let found = names.map(|name| self.optional(name));
        let missing: Vec<String> =
            names.iter().zip(&found).filter(|(_, at)| at.is_none()).map(|(name, _)| format!("`{name}`")).collect();
        if !missing.is_empty() {
            return Err(FormatError::Unreadable {
                line: 1,
                reason: format!(
                    "missing required column{} {} (header has: {})",
                    if missing.len() == 1 { "" } else { "s" },
                    missing.join(", "),
                    self.header.join(",")
                ),
            });
        }
        Ok(found.map(|at| at.unwrap_or_default()))
    }

    /// The position of a column the profile can do without.
    pub fn optional(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|h| h == name)
    }

    /// The header's name of column `at`.
    pub fn name(&self, at: usize) -> &str {
        self.header.get(at).map_or("", String::as_str)
    }

    /// Header columns that are not among the format's `known` ones (ignored).
    pub fn unknown_columns(&self, known: &[&str]) -> Vec<String> {
        self.header.iter().filter(|h| !h.is_empty() && !known.contains(&h.as_str())).cloned().collect()
    }

    /// The next non-blank record, or `None` at the end. `key` is the column of the order key, read
    /// into [`BadRow::key`] when the record is bad so that the profile can taint that order.
    pub fn next_row(&mut self, key: usize) -> Result<Option<Result<Row, BadRow>>, FormatError> {
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
        let line = self.reader.get_mut().get_mut().1.get_mut().line_of(start);
        let key_text = self
            .record
            .get(key)
            .and_then(|b| std::str::from_utf8(b).ok())
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_string);
        let bad = |field: Option<String>, reason: String| BadRow {
            key: key_text.clone(),
            reject: Reject { line, field, reason },
        };
        if self.record.len() != self.header.len() {
            return Ok(Some(Err(bad(
                None,
                format!("row has {} fields, header has {}", self.record.len(), self.header.len()),
            ))));
        }
        match csv::StringRecord::from_byte_record(std::mem::take(&mut self.record)) {
            Ok(fields) => Ok(Some(Ok(Row { line, fields }))),
            Err(e) => {
                let field = self.name(e.utf8_error().field()).to_string();
                Ok(Some(Err(bad(Some(field), "not valid UTF-8".into()))))
            }
        }
    }
}

/// The line ends (`\r`, `\n`) the CSV parser has been given, so that a record's line can be told
/// exactly: the parser's own count runs one behind after a CRLF line end or a blank line. Holds
/// only the line ends read ahead of the current record.
pub(super) struct LineEnds<R> {
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
        for (i, byte) in buf[..n].iter().enumerate() {
            if matches!(byte, b'\r' | b'\n') {
                self.ends.push_back((self.offset + i as u64, *byte));
            }
        }
        self.offset += n as u64;
        Ok(n)
    }
}

impl Row {
    /// The trimmed text of column `at`; empty when the column is blank.
    pub fn get(&self, at: usize) -> &str {
        self.fields.get(at).map_or("", str::trim)
    }

    /// The trimmed text of an optional column, `None` when the column is absent or blank.
    pub fn opt(&self, at: Option<usize>) -> Option<&str> {
        at.map(|at| self.get(at)).filter(|v| !v.is_empty())
    }
}

/// Read the rest of `table` as orders: each run of consecutive rows with the same text in column
/// `key` is one order, begun by `start` (its key and first line), fed row by row to `add`, and
/// turned by `finish` into what `sink` gets. The first problem of a run (a bad record, or a reject
/// from `add`) goes to `finish` with it; a record whose key cannot be read is rejected alone. Only
/// one order is held at a time. Stops early when `sink` breaks.
pub(super) fn read_orders<R: Read, G>(
    table: &mut Table<R>,
    key: usize,
    mut start: impl FnMut(String, u64) -> G,
    mut add: impl FnMut(&mut G, &Table<R>, &Row) -> Result<(), Reject>,
    mut finish: impl FnMut(G, Option<Reject>) -> Parsed,
    sink: &mut dyn FnMut(Parsed) -> ControlFlow<()>,
) -> Result<(), FormatError> {
    let mut current: Option<(String, G, Option<Reject>)> = None;
    while let Some(next) = table.next_row(key)? {
        let (id, line, row) = match next {
            Ok(row) if row.get(key).is_empty() => {
                let reject =
                    Reject { line: row.line, field: Some(table.name(key).to_string()), reason: "empty".into() };
                if sink(Parsed::Reject(reject)).is_break() {
                    return Ok(());
                }
                continue;
            }
            Ok(row) => (row.get(key).to_string(), row.line, Ok(row)),
            Err(BadRow { key: Some(id), reject }) => (id, reject.line, Err(reject)),
            Err(BadRow { key: None, reject }) => {
                if sink(Parsed::Reject(reject)).is_break() {
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
        let (_, group, bad) = current.get_or_insert_with(|| (id.clone(), start(id, line), None));
        let added = row.and_then(|row| add(group, table, &row));
        if let Err(reject) = added {
            bad.get_or_insert(reject);
        }
    }
    if let Some((_, group, bad)) = current {
        let _ = sink(finish(group, bad));
    }
    Ok(())
}

/// Parse the amount in column `at` of `row`, or the reject naming the column and line.
pub(super) fn amount<R: Read>(table: &Table<R>, row: &Row, at: usize, decimal: char) -> Result<Decimal, Reject> {
    parse_amount(row.get(at), decimal).map_err(|e| Reject {
        line: row.line,
        field: Some(table.name(at).to_string()),
        reason: e.to_string(),
    })
}

/// `value` written the way the source writes amounts, for `event::build` to read back exactly.
pub(super) fn amount_text(value: Decimal, decimal: char) -> String {
    let text = value.normalize().to_string();
    if decimal == '.' {
        text
    } else {
        text.replace('.', &decimal.to_string())
    }
}

/// A unit price from a line total, or the reject naming the quantity column when there is none.
pub(super) fn unit_price<R: Read>(
    table: &Table<R>,
    row: &Row,
    quantity_at: usize,
    total: Decimal,
    quantity: Decimal,
) -> Result<Decimal, Reject> {
    total.checked_div(quantity).ok_or_else(|| Reject {
        line: row.line,
        field: Some(table.name(quantity_at).to_string()),
        reason: "zero, so the line has no unit price".into(),
    })
}

/// A row's or order's `Reject` restated as the reason its order was not taken.
pub(super) fn order_not_taken(order_id: &str, mut reject: Reject) -> Reject {
    reject.reason = format!("order `{order_id}` not taken: {}", reject.reason);
    reject
}

fn csv_error(e: csv::Error) -> FormatError {
    let line = e.position().map_or(0, |p| p.line());
    match e.into_kind() {
        csv::ErrorKind::Io(io) => FormatError::Io(io),
        other => FormatError::Unreadable { line, reason: format!("{other:?}") },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn table(text: &str) -> Table<&[u8]> {
        Table::open(text.as_bytes(), None).unwrap()
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
        let mut bytes = b"key,name\nK1,ok\n\nK2\nK3,Caf".to_vec();
        bytes.extend_from_slice(&[0xE9, b'\n']);
        let mut t = Table::open(&bytes[..], None).unwrap();
        let row = t.next_row(0).unwrap().unwrap().ok().unwrap();
        assert_eq!((row.line, row.get(1)), (2, "ok"));
        let Err(short) = t.next_row(0).unwrap().unwrap() else { panic!("a short row is bad") };
        assert_eq!((short.key.as_deref(), short.reject.line), (Some("K2"), 4));
        let Err(utf8) = t.next_row(0).unwrap().unwrap() else { panic!("invalid UTF-8 is bad") };
        assert_eq!(utf8.key.as_deref(), Some("K3"));
        assert_eq!(utf8.reject.field.as_deref(), Some("name"));
        assert!(t.next_row(0).unwrap().is_none());
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
        ];
        for (text, lines) in cases {
            let mut t = table(text);
            let mut got = Vec::new();
            while let Some(row) = t.next_row(0).unwrap() {
                got.push(row.ok().unwrap().line);
            }
            assert_eq!(got, *lines, "{text:?}");
        }
    }

    #[test]
    fn computed_amounts_are_written_with_the_source_separator() {
        let d = |s| Decimal::from_str(s).unwrap();
        assert_eq!(amount_text(d("36.38000000"), '.'), "36.38");
        assert_eq!(amount_text(d("460.00"), '.'), "460");
        assert_eq!(amount_text(d("-2.40"), ','), "-2,4");
        assert_eq!(parse_amount(&amount_text(d("1249.5"), ','), ','), Ok(d("1249.5")));
    }
}
