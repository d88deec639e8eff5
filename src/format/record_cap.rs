//! A cap on the size of one CSV record, applied to the bytes on their way into the CSV parser.
//!
//! The csv crate keeps a whole record in memory before it returns it, so a file without line
//! ends, or with a quote that is never closed, would be held whole. [`RecordCap`] follows the
//! same grammar as the parser (it runs a `csv_core` reader configured like the `csv` crate's
//! default, with the file's delimiter) over the bytes it passes on, and fails the read with
//! [`RecordTooLong`] as soon as one record grows past the cap. The readers turn that into an
//! unreadable file naming the line where the record starts (see `FormatError`'s `From`).
//!
//! It passes every byte through unchanged, so the parser's positions and line numbers are those
//! of the input.

use std::io::{self, Read};

/// The largest CSV record (one row, including quoted line breaks) a reader takes. Rows of real
/// exports are a few hundred bytes; a record this long means the file's line structure is broken.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// The most fields a CSV record may have. Real exports have up to a few hundred columns; a record
/// of a million empty fields (a line of commas) would cost tens of MB in field offsets and names.
pub const MAX_RECORD_FIELDS: usize = 4096;

/// A record over a cap: what [`RecordCap`] fails a read with.
#[derive(Debug, thiserror::Error)]
pub enum RecordTooLong {
    #[error(
        "a record longer than {limit} bytes starts on this line (a line without a line end, or a \
         quote that is never closed), so the file cannot be read from here on"
    )]
    Bytes { line: u64, limit: usize },
    #[error("a record of more than {limit} fields starts on this line, so the file cannot be read from here on")]
    Fields { line: u64, limit: usize },
}

impl RecordTooLong {
    /// The line the record starts on (1-based).
    pub fn line(&self) -> u64 {
        match self {
            RecordTooLong::Bytes { line, .. } | RecordTooLong::Fields { line, .. } => *line,
        }
    }
}

/// Passes bytes through, failing the read once a CSV record exceeds `limit` bytes.
pub(crate) struct RecordCap<R> {
    inner: R,
    parser: csv_core::Reader,
    limit: usize,
    /// `\n` bytes before the current record's first byte.
    lines_before: u64,
    /// `\n` bytes inside the current record (quoted line breaks, or its own line end).
    lines_inside: u64,
    /// Between records: the line ends that come before the next record's first byte.
    between: bool,
    /// Bytes of the current record so far.
    bytes: usize,
    /// Fields of the current record ended so far.
    fields: usize,
}

impl<R> RecordCap<R> {
    /// `quote`: the quote character, `None` for no quoting (as the CSV reader above is set up).
    pub fn new(inner: R, delimiter: u8, quote: Option<u8>, limit: usize) -> Self {
        RecordCap {
            inner,
            parser: csv_core::ReaderBuilder::new()
                .delimiter(delimiter)
                .quote(quote.unwrap_or(b'"'))
                .quoting(quote.is_some())
                .build(),
            limit,
            lines_before: 0,
            lines_inside: 0,
            between: true,
            bytes: 0,
            fields: 0,
        }
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Follow the records in `input`, the next bytes of the stream.
    fn track(&mut self, mut input: &[u8]) -> Result<(), RecordTooLong> {
        // Field contents are not needed, only where records end and how many fields they have.
        let mut scratch = [0u8; 4096];
        let mut ends = [0usize; 64];
        while !input.is_empty() {
            let (result, used, _, fields) = self.parser.read_record(input, &mut scratch, &mut ends);
            // A call ends a record at most at its last byte, so only its start can lie between
            // records (the line ends before the record's first byte).
            let mut piece = &input[..used];
            if self.between {
                let ends_before = piece.iter().take_while(|b| matches!(b, b'\r' | b'\n')).count();
                self.lines_before += count_newlines(&piece[..ends_before]);
                piece = &piece[ends_before..];
                self.between = piece.is_empty();
            }
            self.bytes += piece.len();
            self.lines_inside += count_newlines(piece);
            self.fields += fields;
            if self.bytes > self.limit {
                return Err(RecordTooLong::Bytes { line: self.lines_before + 1, limit: self.limit });
            }
            if self.fields > MAX_RECORD_FIELDS {
                return Err(RecordTooLong::Fields { line: self.lines_before + 1, limit: MAX_RECORD_FIELDS });
            }
            if result == csv_core::ReadRecordResult::Record {
                self.lines_before += std::mem::take(&mut self.lines_inside);
                self.between = true;
                self.bytes = 0;
                self.fields = 0;
            }
            input = &input[used..];
        }
        Ok(())
    }
}

fn count_newlines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|b| **b == b'\n').count() as u64
}

impl<R: Read> Read for RecordCap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.track(&buf[..n]).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read `input` through a cap of `limit` bytes in chunks of `chunk`: Ok(all bytes) or the
    /// line of the over-long record.
    fn pass(input: &[u8], limit: usize, chunk: usize) -> Result<Vec<u8>, u64> {
        let mut cap = RecordCap::new(io::BufReader::with_capacity(chunk, input), b',', Some(b'"'), limit);
        let mut out = Vec::new();
        match cap.read_to_end(&mut out) {
            Ok(_) => Ok(out),
            Err(e) => Err(e.into_inner().unwrap().downcast::<RecordTooLong>().unwrap().line()),
        }
    }

    #[test]
    fn records_within_the_cap_pass_unchanged() {
        let input = b"a,b\r\n\"x\ny\",2\n\n\n333,4\r\n";
        for chunk in [1, 2, 5, 64] {
            assert_eq!(pass(input, 8, chunk), Ok(input.to_vec()), "chunk {chunk}");
        }
    }

    #[test]
    fn an_over_long_record_names_the_line_it_starts_on() {
        let cases: &[(&[u8], u64)] = &[
            (b"0123456789", 1),
            (b"a,b\n1,2\n0123456789\n3,4\n", 3),
            (b"a,b\r\n\r\n\r\n0123456789\r\n", 4),
            (b"a,b\n\"never,\nclosed\n1,2\n3,4\n", 2),
            (b"a,b\n\"o\nk\",1\n\"x\",0123456789\n", 4),
        ];
        for (input, line) in cases {
            for chunk in [1, 3, 64] {
                assert_eq!(pass(input, 8, chunk), Err(*line), "{:?} chunk {chunk}", String::from_utf8_lossy(input));
            }
        }
    }

    #[test]
    fn a_record_of_too_many_fields_names_its_line() {
        let wide = format!("a,b\n1,2\n{}\n", ",".repeat(MAX_RECORD_FIELDS));
        assert_eq!(pass(wide.as_bytes(), usize::MAX, 64), Err(3));
        let widest_allowed = format!("a,b\n{}\n", ",".repeat(MAX_RECORD_FIELDS - 1));
        assert!(pass(widest_allowed.as_bytes(), usize::MAX, 64).is_ok());
    }

    #[test]
    fn quotes_inside_an_unquoted_field_are_data() {
        // A `12" pizza` does not open a quoted field, so the next line is a new record.
        let input = b"a,b\n12\" pizza,1\n2,2\n3,3\n";
        assert!(pass(input, 16, 4).is_ok());
    }
}
