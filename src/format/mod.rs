//! Readers for export files. A reader turns bytes into [`RawOrder`]s and row-level [`Reject`]s,
//! streaming: it never holds more than one order in memory.
//!
//! Readers are pure over `std::io::Read`: no file system, no database, no logging. A problem with a
//! row becomes a `Reject` naming the line and field, and reading goes on; only a file that cannot be
//! read at all (no header, missing required columns, I/O error) is a [`FormatError`].

mod csv_native;
mod jsonl;

use crate::event::RawOrder;
use std::io::{BufRead, BufReader, Read};
use std::ops::ControlFlow;

/// The input formats the agent reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// The agent's own CSV: one row per line item, header names are our field names.
    NativeCsv,
    /// JSON Lines: one order per line with nested items.
    Jsonl,
}

impl Format {
    /// File name endings picked up by default.
    pub fn default_extensions(self) -> &'static [&'static str] {
        match self {
            Format::NativeCsv => &["csv", "txt"],
            Format::Jsonl => &["jsonl", "ndjson", "json"],
        }
    }
}

/// Per-source reading options.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// CSV delimiter; detected from the header line when `None`.
    pub delimiter: Option<u8>,
}

/// One thing a reader found.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    Order(Box<RawOrder>),
    Reject(Reject),
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
}

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("read error: {0}")]
    Io(#[from] std::io::Error),
    #[error("line {line}: {reason}")]
    Unreadable { line: u64, reason: String },
}

/// Read a whole file, handing each order or reject to `sink`. `sink` may stop the read early by
/// returning `ControlFlow::Break`.
pub fn read(
    format: Format,
    input: impl Read,
    options: &ReadOptions,
    sink: &mut dyn FnMut(Parsed) -> ControlFlow<()>,
) -> Result<Summary, FormatError> {
    let mut input = BufReader::with_capacity(64 * 1024, input);
    skip_utf8_bom(&mut input)?;
    match format {
        Format::NativeCsv => csv_native::read(input, options, sink),
        Format::Jsonl => jsonl::read(input, sink),
    }
}

fn skip_utf8_bom(input: &mut impl BufRead) -> std::io::Result<()> {
    let buf = input.fill_buf()?;
    if buf.starts_with(b"\xEF\xBB\xBF") {
        input.consume(3);
    }
    Ok(())
}
