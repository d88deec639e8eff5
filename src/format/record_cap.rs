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
//!
//! Most bytes of an export are plain lines: between two records, up to the next quote, each line
//! end ends a record and each delimiter a field. Those lines are measured without the parser
//! ([`RecordCap::skip_plain_lines`]): parsing every record twice (here and in the `csv` crate)
//! cost ~2% of an ingest's instructions.

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
    delimiter: u8,
    quote: Option<u8>,
    /// Plain lines may be measured without the parser: not when a line end is the delimiter (the
    /// configuration refuses one; the parser takes it as a delimiter), nor in tests that compare.
    skip_plain: bool,
    /// The parser has had its first bytes, and with them any byte-order mark, which it drops only
    /// at the start of the first bytes it is given.
    started: bool,
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
            delimiter,
            quote,
            skip_plain: !matches!(delimiter, b'\r' | b'\n'),
            started: false,
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
            if self.between && self.skip_plain && self.started {
                input = self.skip_plain_lines(input);
                if input.is_empty() {
                    break;
                }
            }
            let (result, used, _, fields) = self.parser.read_record(input, &mut scratch, &mut ends);
            self.started = true;
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

    /// Between records, the whole lines before the next quote, each within both caps, followed
    /// without the parser: there each line end (`\r` or `\n`) ends a record, or is a blank line's,
    /// and each delimiter ends a field, as the parser would find. It stops at the first line over
    /// a cap (which the parser then reports) and returns the bytes after the last line it took.
    /// The parser, left between records, is where it would be after them: at a record's end, where
    /// line ends are skipped and any other byte starts the next record.
    fn skip_plain_lines<'a>(&mut self, input: &'a [u8]) -> &'a [u8] {
        let plain = match self.quote {
            Some(quote) => &input[..memchr::memchr(quote, input).unwrap_or(input.len())],
            None => input,
        };
        let mut at = 0;
        while let Some(end) = memchr::memchr2(b'\n', b'\r', &plain[at..]) {
            let line = &plain[at..=at + end];
            let fields = memchr::memchr_iter(self.delimiter, line).count() + 1;
            if line.len() > self.limit || fields > MAX_RECORD_FIELDS {
                break;
            }
            self.lines_before += u64::from(line[end] == b'\n');
            at += end + 1;
        }
        &input[at..]
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
        pass_with(input, limit, chunk, Some(b'"'), true)
    }

    /// [`pass`] with `quote`, and plain lines measured without the parser or not.
    fn pass_with(
        input: &[u8],
        limit: usize,
        chunk: usize,
        quote: Option<u8>,
        skip_plain: bool,
    ) -> Result<Vec<u8>, u64> {
        let mut cap = RecordCap::new(io::BufReader::with_capacity(chunk, input), b',', quote, limit);
        cap.skip_plain = skip_plain;
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
        // In small reads the parser measures the record; in a read that holds it whole, the lines
        // are measured without it.
        for chunk in [64, 1 << 16] {
            let wide = format!("a,b\n1,2\n{}\n3,4\n", ",".repeat(MAX_RECORD_FIELDS));
            assert_eq!(pass(wide.as_bytes(), usize::MAX, chunk), Err(3), "chunk {chunk}");
            let widest_allowed = format!("a,b\n{}\n", ",".repeat(MAX_RECORD_FIELDS - 1));
            assert!(pass(widest_allowed.as_bytes(), usize::MAX, chunk).is_ok(), "chunk {chunk}");
        }
    }

    /// Plain lines measured without the parser end as the parser ends them: the same bytes pass,
    /// and the same line is named, whatever the reads, the quoting, the caps and the line ends.
    #[test]
    fn plain_lines_are_measured_as_the_parser_measures_them() {
        let mut rng = fastrand::Rng::with_seed(12);
        let alphabet: [&[u8]; 9] = [b"a", b"b", b",", b",", b"\"", b"\r", b"\n", b"\n", b"\xEF\xBB\xBF"];
        for case in 0..4000 {
            let len = rng.usize(0..200);
            let mut input: Vec<u8> = (0..len).flat_map(|_| alphabet[rng.usize(..alphabet.len())]).copied().collect();
            if case % 3 == 0 {
                // Mostly plain lines, a quote now and then.
                input.retain(|&b| b != b'"' || rng.u8(..) < 20);
            }
            let limit = rng.usize(1..24);
            let chunk = [1, 2, 7, 64, 4096][rng.usize(..5)];
            let quote = [Some(b'"'), None][rng.usize(..2)];
            assert_eq!(
                pass_with(&input, limit, chunk, quote, true),
                pass_with(&input, limit, chunk, quote, false),
                "{:?} limit {limit} chunk {chunk} quote {quote:?}",
                String::from_utf8_lossy(&input)
            );
        }
    }

    /// The parser drops a byte-order mark only at the start of the first bytes it is given: one
    /// on a later line is data, which opens no quoted field here.
    #[test]
    fn a_byte_order_mark_after_the_first_line_is_data() {
        assert_eq!(pass(b"a\n\xEF\xBB\xBF\"\nb\n", 5, 4096), Ok(b"a\n\xEF\xBB\xBF\"\nb\n".to_vec()));
        let mut unclosed = b"h\n\xEF\xBB\xBF\"a,\"b\n".to_vec();
        unclosed.extend(b"x\n".repeat(100));
        assert_eq!(pass(&unclosed, 64, 4096), Err(2), "the quote of the second field is never closed");
    }

    /// A line end as the delimiter (which the configuration refuses) does not end a record.
    #[test]
    fn a_line_end_as_the_delimiter_is_left_to_the_parser() {
        let cap = |input: &[u8]| {
            let mut cap = RecordCap::new(io::BufReader::with_capacity(4096, input), b'\r', Some(b'"'), 3);
            cap.read_to_end(&mut Vec::new())
                .map_err(|e| e.into_inner().unwrap().downcast::<RecordTooLong>().unwrap().line())
        };
        assert_eq!(cap(b"h\na\rb\n"), Err(2));
    }

    #[test]
    fn quotes_inside_an_unquoted_field_are_data() {
        // A `12" pizza` does not open a quoted field, so the next line is a new record.
        let input = b"a,b\n12\" pizza,1\n2,2\n3,3\n";
        assert!(pass(input, 16, 4).is_ok());
    }
}
