//! How a payload is stored: the event's wire JSON, packed.
//!
//! Every payload is JSON this agent wrote itself (`tiktok::wire::event_json`): the same keys in the
//! same order on every event, and one to three SHA-256 hashes as 64 lowercase hex characters. Of
//! its ~415 bytes about half is that skeleton and a quarter is hex, and every stored byte is
//! written twice (the WAL, then the database). Packing stores each hash as its 32 bytes, each
//! piece of the skeleton as one byte, and the event id, order id and event time, which the event's
//! row in `events` holds already, as a reference to it: about 26% of the JSON. The agent packs
//! straight from the event ([`pack_event`], no JSON built: at ingest, and for a payload rebuilt
//! from an archived file); the tests also pack JSON text (`pack`, which searches it for pieces and
//! hashes). Pure, no allocation past the output.
//!
//! Format (version 3; version 2, the same with a SHA-256 checksum, and version 1, that without
//! references, are still read), stored as a BLOB
//! (a payload stored as TEXT is plain JSON, as written by agents before this format, and is read
//! as it is):
//! - byte 0: [`VERSION`];
//! - then, byte by byte: `0x01` and 32 bytes: those bytes as 64 lowercase hex characters;
//!   `0x02..=0x1F`: the piece [`PIECES`]`[byte - 2]`; `0x7F` and one byte: `i`, `o`, `t`: the
//!   row's event id, order id, event time (in decimal), `0x7F`: the byte `0x7F` itself; any other
//!   byte: itself. A reference follows the piece that names its key (`,"event_id":"`...).
//!
//! JSON text never holds a raw byte below `0x20` (serde_json escapes control characters inside
//! strings), so the codes cannot be mistaken for text; a JSON that does hold one is stored as
//! plain TEXT. The pieces are fixed: changing them needs a new version byte, with the older ones
//! still read, and a new schema version (an older agent must refuse a queue it cannot read).
//!
//! The checksum stored beside a payload covers the stored bytes and, for a payload that refers to
//! its row, the row's values it refers to: damage to either is caught before the event is sent. It
//! is the first 8 bytes of their SHA-256 up to version 2, their XXH3 (64 bits) from version 3:
//! computed at ingest and again before each send, SHA-256 was ~3% of the agent's CPU in a backlog.
//! The checksum tells damage (a torn or rotted page, a bit flip), which XXH3 catches as well as
//! any 64-bit hash; it is not a defence against someone who can write the queue file.

use crate::event::Event;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use sha2::{Digest, Sha256};
use std::fmt;

/// The version written.
pub const VERSION: u8 = 3;

/// Version 3 with a SHA-256 checksum: read, no longer written.
const VERSION_2: u8 = 2;

/// The version before references to the row: read, no longer written.
const VERSION_1: u8 = 1;

const HEX: u8 = 0x01;
const FIRST_PIECE: u8 = 0x02;

/// Introduces a reference to the row (or, doubled, the byte itself).
const REF: u8 = 0x7F;
const REF_EVENT_ID: u8 = b'i';
const REF_ORDER_ID: u8 = b'o';
const REF_EVENT_TIME: u8 = b't';

/// The values of an event's row in `events` that its packed payload refers to instead of
/// repeating them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row<'a> {
    pub event_id: &'a str,
    pub order_id: &'a str,
    pub event_time: i64,
}

/// The skeleton of `tiktok::wire::event_json`, longest pieces first where one starts another.
/// Frozen: the code of a piece is its index + 2, stored in every packed payload.
pub const PIECES: [&str; 30] = [
    r#"{"event":"Purchase","event_time":"#,
    r#"{"event":""#,
    r#"","event_time":"#,
    r#","event_id":""#,
    r#"","user":{"email":[""#,
    r#"","user":{"phone":[""#,
    r#"","user":{"external_id":[""#,
    r#"","#,
    r#"],"phone":[""#,
    r#"],"external_id":[""#,
    r#"]},"properties":{"contents":[{"content_id":""#,
    r#"","properties":{"contents":[{"content_id":""#,
    r#"]},"properties":{"currency":""#,
    r#"","properties":{"currency":""#,
    r#"","content_name":""#,
    r#"","content_category":""#,
    r#"","brand":""#,
    r#"","price":"#,
    r#","price":"#,
    r#","quantity":"#,
    r#"},{"content_id":""#,
    r#"}],"content_type":"product","currency":""#,
    r#"","value":"#,
    r#","order_id":""#,
    r#"","shop_id":""#,
    r#"","num_items":"#,
    r#","description":""#,
    r#""}}"#,
    r#"}}"#,
    r#""]"#,
];

/// The pieces a reference to the row may follow: the event time after either of the first two,
/// the event id, the order id.
#[cfg(test)]
const EVENT_TIME_AFTER: [usize; 2] = [0, 2];
const EVENT_ID_AFTER: usize = 3;
const ORDER_ID_AFTER: usize = 23;

/// The first 8 bytes of the SHA-256 of `stored`: the checksum of a payload stored as TEXT or in
/// version 1 (and of bytes of no known format).
pub fn checksum(stored: &[u8]) -> i64 {
    first_8(Sha256::digest(stored).as_slice())
}

/// The checksum of a payload's stored bytes as the column holds them (`blob`: a BLOB, else TEXT),
/// for the event of `row`: [`checksum`], and for a packed payload that refers to its row, of the
/// row's values too (XXH3 from version 3, SHA-256 before).
pub(super) fn checksum_of(stored: &[u8], blob: bool, row: Row<'_>) -> i64 {
    match (blob, stored.first()) {
        (true, Some(&VERSION)) => {
            // XXH3 of the bytes one after the other: in one call on a copy where they fit the
            // stack (a packed payload is ~110 bytes), for what the streaming hasher costs beside.
            let mut buffer = [0u8; 512];
            let mut covered = 0;
            row_checksum(stored, row, |b| covered += b.len());
            match buffer.get_mut(..covered) {
                Some(copy) => {
                    let mut len = 0;
                    row_checksum(stored, row, |b| {
                        copy[len..len + b.len()].copy_from_slice(b);
                        len += b.len();
                    });
                    xxhash_rust::xxh3::xxh3_64(copy) as i64
                }
                None => {
                    let mut hasher = xxhash_rust::xxh3::Xxh3Default::new();
                    row_checksum(stored, row, |b| hasher.update(b));
                    hasher.digest() as i64
                }
            }
        }
        (true, Some(&VERSION_2)) => {
            let mut hasher = Sha256::new();
            row_checksum(stored, row, |b| hasher.update(b));
            first_8(hasher.finalize().as_slice())
        }
        _ => checksum(stored),
    }
}

/// Feed `hash` what the checksum of a payload that refers to its row covers: the stored bytes, then
/// the row's values.
fn row_checksum(stored: &[u8], row: Row<'_>, mut hash: impl FnMut(&[u8])) {
    hash(stored);
    // Event ids are percent-encoded: never a zero byte, so the two texts cannot run together.
    hash(&[0]);
    hash(row.event_id.as_bytes());
    hash(&[0]);
    hash(row.order_id.as_bytes());
    hash(&row.event_time.to_be_bytes());
}

/// Whether stored bytes (`blob`: a BLOB, else TEXT) are a packed payload that refers to its row
/// (version 2 or 3).
fn refers_to_row(stored: &[u8], blob: bool) -> bool {
    blob && matches!(stored.first(), Some(&(VERSION | VERSION_2)))
}

fn first_8(digest: &[u8]) -> i64 {
    i64::from_be_bytes(digest[..8].try_into().expect("a SHA-256 has 32 bytes"))
}

/// A packed payload that does not unpack (damaged, or written by a newer agent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpackable(&'static str);

impl fmt::Display for Unpackable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stored payload does not unpack: {}", self.0)
    }
}

/// A payload as stored in `payloads.json`: packed (a BLOB), or plain JSON (TEXT: stored by an older
/// agent, or a JSON [`pack`] cannot carry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    Packed(Vec<u8>),
    Text(String),
}

impl Stored {
    /// How `json`, the payload of the event of `row`, is stored (tests: the agent packs from the
    /// event, [`pack_event`]).
    #[cfg(test)]
    pub fn of(json: &str, row: Row<'_>) -> Stored {
        pack(json, row).map_or_else(|| Stored::Text(json.to_owned()), Stored::Packed)
    }

    /// The stored bytes, which the checksum covers.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Stored::Packed(b) => b,
            Stored::Text(t) => t.as_bytes(),
        }
    }

    /// The checksum stored beside it (see the module's documentation; for a TEXT payload, of its
    /// JSON, as agents before the packed format computed it).
    pub fn checksum(&self, row: Row<'_>) -> i64 {
        checksum_of(self.bytes(), matches!(self, Stored::Packed(_)), row)
    }

    /// The JSON of the event of `row`.
    pub fn into_json(self, row: Row<'_>) -> Result<String, Unpackable> {
        match self {
            Stored::Packed(b) => unpack(&b, row),
            Stored::Text(t) => Ok(t),
        }
    }
}

/// A stored payload as SQLite hands it over (not copied), its stored checksum, and its event's
/// row: its JSON appended to `json`, or `false` (nothing appended) when it is damaged (it, or the
/// row's values it refers to, do not match its checksum, or it does not unpack). No checksum
/// (stored by an agent before checksums): not verified, except a version 2 or 3 payload, always
/// stored with one: damaged. `scratch` is room to unpack in, kept by the caller from payload to payload.
pub fn verified_into(
    stored: ValueRef<'_>,
    checksum: Option<i64>,
    row: Row<'_>,
    scratch: &mut Vec<u8>,
    json: &mut String,
) -> bool {
    let (bytes, packed) = match stored {
        ValueRef::Blob(b) => (b, true),
        ValueRef::Text(t) => (t, false),
        _ => return false,
    };
    // Versions 2 and 3 are written only with a checksum: without one it is damaged (the column).
    match checksum {
        None if refers_to_row(bytes, packed) => return false,
        Some(sum) if sum != checksum_of(bytes, packed, row) => return false,
        _ => {}
    }
    let text = if packed {
        scratch.clear();
        if unpack_into(bytes, row, scratch).is_err() {
            return false;
        }
        std::str::from_utf8(scratch)
    } else {
        std::str::from_utf8(bytes)
    };
    let Ok(text) = text else { return false };
    json.push_str(text);
    true
}

impl ToSql for Stored {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Stored::Packed(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            Stored::Text(t) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
        })
    }
}

impl FromSql for Stored {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value {
            ValueRef::Blob(b) => Ok(Stored::Packed(b.to_vec())),
            // A TEXT that is not UTF-8 (damaged) is kept as bytes: its checksum tells.
            ValueRef::Text(t) => Ok(match std::str::from_utf8(t) {
                Ok(t) => Stored::Text(t.to_owned()),
                Err(_) => Stored::Packed(t.to_vec()),
            }),
            _ => Err(FromSqlError::InvalidType),
        }
    }
}

/// `json`, the payload of the event of `row`, packed, or `None` where it holds a byte the format
/// cannot carry (store it as TEXT).
#[cfg(test)]
pub fn pack(json: &str, row: Row<'_>) -> Option<Vec<u8>> {
    let bytes = json.as_bytes();
    let mut time = itoa::Buffer::new();
    let time = time.format(row.event_time).as_bytes();
    let mut out = Vec::with_capacity(bytes.len() / 2 + 16);
    out.push(VERSION);
    // Literal bytes are copied a run at a time, up to the next piece, hash or 0x7F.
    let (mut i, mut run) = (0, 0);
    while i < bytes.len() {
        let b = bytes[i];
        if b < 0x20 {
            return None;
        }
        if let Some(piece) = piece_at(&bytes[i..]) {
            out.extend_from_slice(&bytes[run..i]);
            out.push(FIRST_PIECE + piece as u8);
            i += PIECES[piece].len();
            if let Some((code, len)) = row_value_at(piece, &bytes[i..], row, time) {
                out.extend_from_slice(&[REF, code]);
                i += len;
            }
            run = i;
            continue;
        }
        if b == REF {
            out.extend_from_slice(&bytes[run..i]);
            out.extend_from_slice(&[REF, REF]);
            i += 1;
            run = i;
            continue;
        }
        if b != b'"' && i > 0 && bytes[i - 1] == b'"' {
            if let Some(raw) = hash_at(&bytes[i..]) {
                out.extend_from_slice(&bytes[run..i]);
                out.push(HEX);
                out.extend_from_slice(&raw);
                i += 64;
                run = i;
                continue;
            }
        }
        i += 1;
    }
    out.extend_from_slice(&bytes[run..]);
    Some(out)
}

/// The payload of `event` (its row `row`) packed, written straight from the event: the same bytes
/// once unpacked as [`pack`] of `tiktok::wire::event_json(event)` (a test holds the two together
/// over generated events), without building that JSON and searching it for pieces and hashes.
/// The layout follows `wire::Data`'s fields and their serde attributes; strings are escaped by
/// serde_json, as there, and amounts written by `money::write_json_number` as serde_json writes
/// the wire's `f64`.
pub fn pack_event(event: &Event, row: Row<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    pack_event_into(event, row, &mut out);
    out
}

/// [`pack_event`], appended to `out` (the held events of an ingest share one buffer).
pub fn pack_event_into(event: &Event, row: Row<'_>, out: &mut Vec<u8>) {
    let mut p = Packer(out);
    p.0.push(VERSION);
    if event.event == "Purchase" {
        p.piece(0);
    } else {
        p.piece(1);
        p.string(event.event);
        p.piece(2);
    }
    if event.event_time == row.event_time {
        p.refer(REF_EVENT_TIME);
    } else {
        p.0.extend_from_slice(itoa::Buffer::new().format(event.event_time).as_bytes());
    }
    p.piece(EVENT_ID_AFTER);
    // A reference stands for JSON text: only a value that JSON writes as it is.
    if event.event_id.as_str() == row.event_id && json_as_is(row.event_id) {
        p.refer(REF_EVENT_ID);
    } else {
        p.string(event.event_id.as_str());
    }
    // `"user"` holds the lists that are not empty; after the last one the text goes on with `"]`
    // and `},"properties"...`, written as the literal `"` and a piece starting with `]`.
    let user = &event.user;
    let lists = [(&user.email, 4, None), (&user.phone, 5, Some(8)), (&user.external_id, 6, Some(9))];
    let mut in_user = false;
    for (list, first_piece, next_piece) in lists {
        if list.is_empty() {
            continue;
        }
        match (in_user, next_piece) {
            (false, _) => p.piece(first_piece),
            (true, Some(next)) => {
                p.0.push(b'"');
                p.piece(next);
            }
            (true, None) => unreachable!("e-mail is the first list"),
        }
        in_user = true;
        for (i, hash) in list.iter().enumerate() {
            if i > 0 {
                // `",` and the next hash's opening quote.
                p.piece(7);
                p.0.push(b'"');
            }
            p.digest(hash.digest());
        }
    }
    let contents = &event.contents;
    match (in_user, contents.is_empty()) {
        (true, false) => {
            p.0.push(b'"');
            p.piece(10);
        }
        (true, true) => {
            p.0.push(b'"');
            p.piece(12);
        }
        (false, false) => p.piece(11),
        (false, true) => p.piece(13),
    }
    for (i, c) in contents.iter().enumerate() {
        if i > 0 {
            p.piece(20);
        }
        p.string(&c.content_id);
        for (value, piece) in [(&c.content_name, 14), (&c.content_category, 15), (&c.brand, 16)] {
            if let Some(value) = value {
                p.piece(piece);
                p.string(value);
            }
        }
        p.piece(17);
        p.amount(c.price);
        p.piece(19);
        p.0.extend_from_slice(itoa::Buffer::new().format(c.quantity).as_bytes());
    }
    if !contents.is_empty() {
        p.piece(21);
    }
    p.string(event.currency.code());
    p.piece(22);
    p.amount(event.value);
    p.piece(ORDER_ID_AFTER);
    if event.order_id == row.order_id && json_as_is(row.order_id) {
        p.refer(REF_ORDER_ID);
    } else {
        p.string(&event.order_id);
    }
    p.piece(24);
    p.string(&event.shop_id);
    if !contents.is_empty() {
        p.piece(25);
        p.0.extend_from_slice(itoa::Buffer::new().format(event.num_items()).as_bytes());
    }
    match (&event.description, contents.is_empty()) {
        (Some(description), no_contents) => {
            if no_contents {
                // Close the shop id's string.
                p.0.push(b'"');
            }
            p.piece(26);
            p.string(description);
            p.piece(27);
        }
        // `"}}`: the shop id's string closed, and both objects.
        (None, true) => p.piece(27),
        (None, false) => p.piece(28),
    }
}

/// Whether JSON writes the string `s` as it is inside its quotes (nothing to escape).
fn json_as_is(s: &str) -> bool {
    s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\')
}

/// The packed bytes [`pack_event`] writes, appended to a buffer.
struct Packer<'a>(&'a mut Vec<u8>);

impl Packer<'_> {
    fn piece(&mut self, index: usize) {
        self.0.push(FIRST_PIECE + index as u8);
    }

    fn refer(&mut self, code: u8) {
        self.0.extend_from_slice(&[REF, code]);
    }

    /// The inside of a JSON string as serde_json writes it (escaped), a 0x7F doubled.
    fn string(&mut self, s: &str) {
        if json_as_is(s) && !s.as_bytes().contains(&REF) {
            self.0.extend_from_slice(s.as_bytes());
            return;
        }
        let quoted = serde_json::to_vec(s).expect("a string serialises");
        for &b in &quoted[1..quoted.len() - 1] {
            if b == REF {
                self.0.push(REF);
            }
            self.0.push(b);
        }
    }

    /// A SHA-256 digest, stored as its 32 bytes (unpacked as 64 lowercase hex characters).
    fn digest(&mut self, digest: &[u8; 32]) {
        self.0.push(HEX);
        self.0.extend_from_slice(digest);
    }

    /// An amount, as the wire JSON writes it (a float: `tiktok::wire`).
    fn amount(&mut self, value: rust_decimal::Decimal) {
        crate::event::money::write_json_number(value, self.0);
    }
}

/// The reference to the row's value that `at`, just after the piece `piece`, starts with (the
/// value and the byte that ends it in the JSON), as its code and the length of the value.
#[cfg(test)]
fn row_value_at(piece: usize, at: &[u8], row: Row<'_>, time: &[u8]) -> Option<(u8, usize)> {
    let (code, value, end) = match piece {
        EVENT_ID_AFTER => (REF_EVENT_ID, row.event_id.as_bytes(), b'"'),
        ORDER_ID_AFTER => (REF_ORDER_ID, row.order_id.as_bytes(), b'"'),
        p if EVENT_TIME_AFTER.contains(&p) => (REF_EVENT_TIME, time, b','),
        _ => return None,
    };
    (!value.is_empty() && at.starts_with(value) && at.get(value.len()) == Some(&end)).then_some((code, value.len()))
}

/// The JSON of a packed payload of the event of `row`.
pub fn unpack(packed: &[u8], row: Row<'_>) -> Result<String, Unpackable> {
    let mut out = Vec::with_capacity(packed.len() * 4 + row.event_id.len() + row.order_id.len() + 84);
    unpack_into(packed, row, &mut out)?;
    String::from_utf8(out).map_err(|_| Unpackable("not UTF-8"))
}

/// [`unpack`], the JSON's bytes appended to `out` (not checked as UTF-8).
fn unpack_into(packed: &[u8], row: Row<'_>, out: &mut Vec<u8>) -> Result<(), Unpackable> {
    let Some((&version, rest)) = packed.split_first() else {
        return Err(Unpackable("empty"));
    };
    let refers = match version {
        VERSION | VERSION_2 => true,
        VERSION_1 => false,
        _ => return Err(Unpackable("unknown format version")),
    };
    expand(rest, refers, row, out)
}

/// The packed bytes after the version byte, expanded into `out` (`refers`: version 2 or 3, with
/// references to `row`).
fn expand(mut rest: &[u8], refers: bool, row: Row<'_>, out: &mut Vec<u8>) -> Result<(), Unpackable> {
    loop {
        // The literal run up to the next code.
        let run = rest.iter().position(|&b| b < 0x20 || (refers && b == REF)).unwrap_or(rest.len());
        // Most codes follow one another without a literal between them.
        if run > 0 {
            out.extend_from_slice(&rest[..run]);
        }
        let Some((&code, tail)) = rest[run..].split_first() else { return Ok(()) };
        rest = tail;
        match code {
            HEX => {
                let Some((raw, tail)) = rest.split_first_chunk::<32>() else {
                    return Err(Unpackable("a hash cut short"));
                };
                rest = tail;
                let mut hex = [0u8; 64];
                crate::event::pii::hex_into(raw, &mut hex);
                out.extend_from_slice(&hex);
            }
            REF => {
                let Some((&what, tail)) = rest.split_first() else {
                    return Err(Unpackable("a reference cut short"));
                };
                rest = tail;
                match what {
                    REF => out.push(REF),
                    REF_EVENT_ID => out.extend_from_slice(row.event_id.as_bytes()),
                    REF_ORDER_ID => out.extend_from_slice(row.order_id.as_bytes()),
                    REF_EVENT_TIME => out.extend_from_slice(itoa::Buffer::new().format(row.event_time).as_bytes()),
                    _ => return Err(Unpackable("an unknown reference")),
                }
            }
            0x00 => return Err(Unpackable("a zero byte")),
            code => out.extend_from_slice(PIECES[usize::from(code - FIRST_PIECE)].as_bytes()),
        }
    }
}

/// The longest piece `at` starts with, by index.
#[cfg(test)]
fn piece_at(at: &[u8]) -> Option<usize> {
    let candidates = BY_FIRST_BYTE.get(usize::from(at[0]))?;
    if candidates[0] == NONE {
        return None;
    }
    // The first 8 bytes compared as one word rule out nearly every candidate without a memcmp.
    let word = at.first_chunk::<8>().map(|w| u64::from_le_bytes(*w));
    candidates.iter().take_while(|&&i| i != NONE).map(|&i| usize::from(i)).find(|&i| {
        let (head, mask) = HEADS[i];
        word.is_none_or(|w| w & mask == head) && at.starts_with(PIECES[i].as_bytes())
    })
}

/// Each piece's first 8 bytes (fewer for a shorter piece) as a little-endian word, and the mask of
/// the bytes it has.
#[cfg(test)]
static HEADS: [(u64, u64); PIECES.len()] = {
    let mut heads = [(0u64, 0u64); PIECES.len()];
    let mut i = 0;
    while i < PIECES.len() {
        let bytes = PIECES[i].as_bytes();
        let mut k = 0;
        while k < 8 && k < bytes.len() {
            heads[i].0 |= (bytes[k] as u64) << (8 * k);
            heads[i].1 |= 0xff << (8 * k);
            k += 1;
        }
        i += 1;
    }
    heads
};

#[cfg(test)]
const NONE: u8 = u8::MAX;

/// For each byte below 128, the indices of the pieces starting with it, longest first
/// ([`NONE`]-terminated).
#[cfg(test)]
static BY_FIRST_BYTE: [[u8; 32]; 128] = {
    let mut table = [[NONE; 32]; 128];
    let mut i = 0;
    while i < PIECES.len() {
        let first = PIECES[i].as_bytes()[0] as usize;
        // Insert i keeping the row sorted by piece length, longest first.
        let mut slot = 0;
        while table[first][slot] != NONE && PIECES[table[first][slot] as usize].len() >= PIECES[i].len() {
            slot += 1;
        }
        let mut end = slot;
        while table[first][end] != NONE {
            end += 1;
        }
        while end > slot {
            table[first][end] = table[first][end - 1];
            end -= 1;
        }
        table[first][slot] = i as u8;
        i += 1;
    }
    table
};

/// The 32 bytes of 64 lowercase hex characters at the start of `at` followed by `"`.
#[cfg(test)]
fn hash_at(at: &[u8]) -> Option<[u8; 32]> {
    if at.len() < 65 || at[64] != b'"' {
        return None;
    }
    crate::event::pii::unhex_64(&at[..64])
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "3c3b503668ec5bdada0e509ae7a1a29869ddcc4723358276b8a2c362cfc1f372";

    /// The row of the bench's event.
    const ROW: Row = Row { event_id: "s042:t1:00000000", order_id: "00000000", event_time: 1796459308 };

    /// A row none of whose values a test text holds.
    const ELSEWHERE: Row = Row { event_id: "none:such", order_id: "-", event_time: -7 };

    #[test]
    fn payloads_round_trip_and_shrink() {
        let full = format!(
            r#"{{"event":"Purchase","event_time":1796459308,"event_id":"s042:t1:00000000","user":{{"email":["{HASH}"],"phone":["{HASH}"]}},"properties":{{"contents":[{{"content_id":"SKU-00000","content_name":"Item 0","price":1.0,"quantity":1}}],"content_type":"product","currency":"USD","value":1.0,"order_id":"00000000","shop_id":"s042","num_items":1}}}}"#
        );
        let cases: Vec<(&str, String, usize)> = vec![
            ("a bench event", full.clone(), 39),
            (
                "no user, no contents, a description",
                r#"{"event":"Purchase","event_time":1,"event_id":"a:b","properties":{"currency":"EUR","value":0.0,"order_id":"b","shop_id":"a","description":"Tisch \"groß\" ☕"}}"#.into(),
                80,
            ),
            (
                "another event name, two contents, brand and category, an external id",
                format!(
                    r#"{{"event":"PlaceAnOrder","event_time":2,"event_id":"x","user":{{"external_id":["{HASH}"]}},"properties":{{"contents":[{{"content_id":"1","content_category":"c","brand":"b","price":2.5,"quantity":2}},{{"content_id":"2","price":1.0,"quantity":1}}],"content_type":"product","currency":"GBP","value":6.0,"order_id":"o","shop_id":"s","num_items":3}}}}"#
                ),
                60,
            ),
            ("hex of the wrong length stays text", format!(r#"{{"x":"{}"}}"#, &HASH[..63]), 110),
            ("upper-case hex stays text", format!(r#"{{"x":"{}"}}"#, HASH.to_uppercase()), 110),
            ("empty object", "{}".into(), 200),
            ("empty", String::new(), 200),
        ];
        for (what, json, at_most_percent) in cases {
            let packed = pack(&json, ROW).unwrap_or_else(|| panic!("{what}: not packed"));
            let unpacked = unpack(&packed, ROW);
            assert_eq!(unpacked.as_deref(), Ok(json.as_str()), "{what}");
            assert!(
                packed.len() * 100 <= json.len().max(1) * at_most_percent,
                "{what}: {} of {} bytes",
                packed.len(),
                json.len()
            );
        }
    }

    /// Texts made of pieces, pieces cut short, hex runs of every kind and other characters, from a
    /// fixed seed: each one unpacks to itself.
    #[test]
    fn any_mix_of_pieces_hex_and_text_round_trips() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        // The row's values (whole, cut short, run on), and DEL, which the format escapes.
        let others = [
            "\"",
            "\\u0001",
            "é",
            "☕",
            "\"\"",
            "a",
            "0",
            ",",
            "]",
            "}",
            "{",
            "x\"",
            "\\n",
            "s042:t1:00000000",
            "s042:t1:0000",
            "00000000",
            "000000001",
            "1796459308",
            "17964593080",
            "\u{7f}",
            "\u{7f}\u{7f}i",
            "-",
        ];
        for _ in 0..5000 {
            let mut text = String::new();
            for _ in 0..next(12) {
                match next(5) {
                    0 | 1 => text.push_str(PIECES[next(PIECES.len())]),
                    2 => {
                        let piece = PIECES[next(PIECES.len())];
                        text.push_str(&piece[..next(piece.len())]);
                    }
                    3 => {
                        let len = [64, 63, 65, 1][next(4)];
                        let hex: String = (0..len).map(|_| b"0123456789abcdef"[next(16)] as char).collect();
                        text.push_str(&hex);
                        if next(2) == 0 {
                            text.push('"');
                        }
                    }
                    _ => text.push_str(others[next(others.len())]),
                }
            }
            for row in [ROW, ELSEWHERE] {
                let packed = pack(&text, row).expect("no control bytes");
                assert_eq!(unpack(&packed, row).as_deref(), Ok(text.as_str()), "{text:?}");
            }
        }
    }

    #[test]
    fn a_json_with_a_control_byte_is_not_packed() {
        assert_eq!(pack("{\"a\":\"\u{1}\"}", ROW), None);
    }

    /// The event id, order id and event time are stored as references where they follow their
    /// keys, and only there; a payload of another row unpacks with that row's values (and its
    /// checksum tells the two apart).
    #[test]
    fn the_rows_values_are_referred_to_after_their_keys_only() {
        let json = r#"{"event":"Purchase","event_time":1796459308,"event_id":"s042:t1:00000000","properties":{"value":1796459308,"order_id":"00000000","shop_id":"00000000"}}"#;
        let packed = pack(json, ROW).unwrap();
        let refs = |code: u8| packed.windows(2).filter(|w| w == &[REF, code]).count();
        assert_eq!((refs(REF_EVENT_TIME), refs(REF_EVENT_ID), refs(REF_ORDER_ID)), (1, 1, 1), "{packed:?}");
        assert_eq!(unpack(&packed, ROW).as_deref(), Ok(json));
        let other = Row { event_id: "s042:t1:9", order_id: "9", event_time: 5 };
        assert_eq!(
            unpack(&packed, other).as_deref(),
            Ok(
                r#"{"event":"Purchase","event_time":5,"event_id":"s042:t1:9","properties":{"value":1796459308,"order_id":"9","shop_id":"00000000"}}"#
            )
        );
        let stored = Stored::Packed(packed);
        assert_ne!(stored.checksum(ROW), stored.checksum(other));
        for changed in
            [Row { event_time: 1796459309, ..ROW }, Row { order_id: "00000001", ..ROW }, Row { event_id: "x", ..ROW }]
        {
            assert_ne!(stored.checksum(ROW), stored.checksum(changed), "{changed:?}");
        }
        // A value that only starts the text after the key is not referred to.
        let short = Row { order_id: "0000", event_id: "s042", event_time: 179645930 };
        let packed = pack(json, short).unwrap();
        assert!(!packed.contains(&REF), "{packed:?}");
        assert_eq!(unpack(&packed, short).as_deref(), Ok(json));
    }

    /// Version 2 is version 3 with the first 8 bytes of a SHA-256 as its checksum: still read and
    /// verified as such. Version 3's checksum is fixed as the XXH3 (64 bits) of the stored bytes and
    /// the row's values, as queues keep it.
    #[test]
    fn version_2_payloads_keep_their_sha256_checksum_and_version_3_is_xxh3() {
        let json = r#"{"event":"Purchase","event_time":1796459308,"event_id":"s042:t1:00000000","value":1.0}"#;
        let v3 = pack(json, ROW).unwrap();
        assert_eq!(v3[0], VERSION);
        let v2 = [&[VERSION_2][..], &v3[1..]].concat();
        let covered =
            [&v3[..], b"\0", ROW.event_id.as_bytes(), b"\0", ROW.order_id.as_bytes(), &ROW.event_time.to_be_bytes()]
                .concat();
        assert_eq!(Stored::Packed(v3.clone()).checksum(ROW), xxhash_rust::xxh3::xxh3_64(&covered) as i64);
        // A payload too long to be copied whole is hashed as a stream, to the same checksum; either
        // side of the copy's 512 bytes.
        let mut lengths = Vec::new();
        for n in (300..=520).chain([600, 2000]) {
            let long = pack(&format!(r#"{{"event":"{}"}}"#, "x".repeat(n)), ROW).unwrap();
            let covered_long = [&long[..], &covered[v3.len()..]].concat();
            lengths.push(covered_long.len());
            assert_eq!(Stored::Packed(long).checksum(ROW), xxhash_rust::xxh3::xxh3_64(&covered_long) as i64, "{n}");
        }
        assert!(lengths.contains(&512) && lengths.contains(&513), "{lengths:?}");
        let covered_v2 = [&v2[..], &covered[v3.len()..]].concat();
        let sha = checksum(&covered_v2);
        assert_eq!(Stored::Packed(v2.clone()).checksum(ROW), sha);
        assert_eq!(unpack(&v2, ROW).as_deref(), Ok(json));
        for (stored, sum) in [(&v2, sha), (&v3, Stored::Packed(v3.clone()).checksum(ROW))] {
            let mut json_out = String::new();
            assert!(verified_into(ValueRef::Blob(stored), Some(sum), ROW, &mut Vec::new(), &mut json_out));
            assert_eq!(json_out, json);
            assert!(!verified_into(ValueRef::Blob(stored), Some(sum ^ 1), ROW, &mut Vec::new(), &mut json_out));
            assert!(!verified_into(ValueRef::Blob(stored), None, ROW, &mut Vec::new(), &mut json_out), "no checksum");
        }
    }

    #[test]
    fn version_1_payloads_still_unpack_and_keep_their_checksum() {
        // Version 1 as written by the agent before references: 0x7F is a plain byte there.
        let v1 = [&[VERSION_1, FIRST_PIECE + 1][..], b"Purchase\x7f", &[FIRST_PIECE + 27]].concat();
        assert_eq!(unpack(&v1, ROW).as_deref(), Ok("{\"event\":\"Purchase\u{7f}\"}}"));
        assert_eq!(Stored::Packed(v1.clone()).checksum(ROW), checksum(&v1));
        let mut json = String::from("before,");
        assert!(verified_into(ValueRef::Blob(&v1), Some(checksum(&v1)), ELSEWHERE, &mut Vec::new(), &mut json));
        assert_eq!(json, "before,{\"event\":\"Purchase\u{7f}\"}}");
    }

    mod from_events {
        use super::super::*;
        use crate::event::id::EventId;
        use crate::event::money::Currency;
        use crate::event::pii::{hash_email, hash_external_id};
        use crate::event::{Content, User};
        use crate::tiktok::wire::event_json;
        use proptest::prelude::*;
        use rust_decimal::Decimal;

        fn text() -> impl Strategy<Value = String> {
            prop_oneof![any::<String>(), "[a-z0-9 \"\\\\\u{7f}\u{1}-]{0,12}", Just("Purchase".to_string())]
        }

        fn amount() -> impl Strategy<Value = Decimal> {
            (any::<i64>(), 0u32..12).prop_map(|(m, scale)| Decimal::new(m, scale))
        }

        fn content() -> impl Strategy<Value = Content> {
            (
                text(),
                prop::option::of(text()),
                prop::option::of(text()),
                prop::option::of(text()),
                amount(),
                -1_000_000i64..1_000_000,
            )
                .prop_map(|(content_id, content_name, content_category, brand, price, quantity)| Content {
                    content_id,
                    content_name,
                    content_category,
                    brand,
                    price,
                    quantity,
                })
        }

        fn event() -> impl Strategy<Value = Event> {
            (
                (prop::sample::select(vec!["Purchase", "PlaceAnOrder", "Custom \"x\"\u{7f}"]), any::<i64>()),
                (text(), text(), text(), text()),
                (
                    prop::collection::vec(0u8..3, 0..3),
                    prop::collection::vec(text(), 0..3),
                    prop::collection::vec(text(), 0..3),
                ),
                prop::collection::vec(content(), 0..3),
                (prop::sample::select(vec!["USD", "EUR", "JPY"]), amount(), prop::option::of(text())),
            )
                .prop_map(
                    |(
                        (name, event_time),
                        (shop, till, order_id, shop_id),
                        (emails, phones, externals),
                        contents,
                        (currency, value, description),
                    )| {
                        let email = |n: &u8| hash_email(&format!("c{n}@example.com")).unwrap().unwrap();
                        Event {
                            event: name,
                            event_time,
                            event_id: EventId::derive(&shop, &till, &order_id),
                            user: User {
                                email: emails.iter().map(email).collect(),
                                phone: phones.iter().filter_map(|p| hash_external_id(&format!("p{p}"))).collect(),
                                external_id: externals.iter().filter_map(|e| hash_external_id(e)).collect(),
                            },
                            contents,
                            currency: Currency::parse(currency).unwrap(),
                            value,
                            order_id,
                            shop_id,
                            description,
                        }
                    },
                )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// Packed straight from the event, a payload unpacks to the JSON the wire format
            /// writes for it, with its own row (references) or another one (none).
            #[test]
            fn an_event_packed_directly_unpacks_to_its_wire_json(ev in event(), other in (text(), text(), any::<i64>())) {
                let json = event_json(&ev);
                let own = Row { event_id: ev.event_id.as_str(), order_id: &ev.order_id, event_time: ev.event_time };
                let packed = pack_event(&ev, own);
                prop_assert_eq!(unpack(&packed, own), Ok(json.clone()));
                let elsewhere = Row { event_id: &other.0, order_id: &other.1, event_time: other.2 };
                prop_assert_eq!(unpack(&pack_event(&ev, elsewhere), elsewhere), Ok(json.clone()));
                // About as short as packing the JSON (which finds the same pieces, hashes and ids;
                // the two may cut the skeleton at other places).
                let searched = pack(&json, own).map_or(usize::MAX, |p| p.len());
                prop_assert!(packed.len() <= searched.saturating_add(4), "{} > {}: {:?}", packed.len(), searched, packed);
            }
        }
    }

    #[test]
    fn numbers_are_written_in_decimal() {
        for n in [0, 7, -7, 10, 1796459308, i64::MAX, i64::MIN] {
            let row = Row { event_time: n, ..ROW };
            assert_eq!(unpack(&[VERSION, REF, REF_EVENT_TIME], row), Ok(n.to_string()), "{n}");
        }
    }

    #[test]
    fn damaged_or_foreign_blobs_are_refused_not_misread() {
        let packed = pack(&format!(r#"{{"a":"{HASH}"}}"#), ROW).unwrap();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("a newer version", [&[VERSION + 1][..], &packed[1..]].concat()),
            ("a hash cut short", packed[..packed.len() - 20].to_vec()),
            ("a zero byte", vec![VERSION, b'{', 0, b'}']),
            ("not UTF-8", vec![VERSION, 0xff]),
            ("a reference cut short", vec![VERSION, b'{', REF]),
            ("an unknown reference", vec![VERSION, b'{', REF, b'x', b'}']),
        ];
        for (what, blob) in cases {
            assert!(unpack(&blob, ROW).is_err(), "{what}");
        }
    }

    #[test]
    fn every_piece_has_a_code_and_starts_with_a_json_delimiter() {
        assert!(PIECES.len() <= usize::from(0x20 - FIRST_PIECE));
        for piece in PIECES {
            assert!(matches!(piece.as_bytes()[0], b'{' | b',' | b'"' | b']' | b'}'), "{piece}");
            assert!(pack(piece, ROW).is_some_and(|p| p.len() == 2), "{piece} packs to one code");
        }
        for (at, piece) in [(EVENT_ID_AFTER, r#","event_id":""#), (ORDER_ID_AFTER, r#","order_id":""#)] {
            assert_eq!(PIECES[at], piece);
        }
        for at in EVENT_TIME_AFTER {
            assert!(PIECES[at].ends_with(r#""event_time":"#), "{}", PIECES[at]);
        }
    }
}
