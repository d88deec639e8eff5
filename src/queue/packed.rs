//! How a payload is stored: the event's wire JSON, packed.
//!
//! Every payload is JSON this agent wrote itself (`tiktok::wire::event_json`): the same keys in the
//! same order on every event, and one to three SHA-256 hashes as 64 lowercase hex characters. Of
//! its ~415 bytes about half is that skeleton and a quarter is hex, and every stored byte is
//! written twice (the WAL, then the database). Packing stores each hash as its 32 bytes and each
//! piece of the skeleton as one byte: about 45% of the JSON. Pure, no allocation past the output.
//!
//! Format (version 1), stored as a BLOB (a payload stored as TEXT is plain JSON, as written by
//! agents before this format, and is read as it is):
//! - byte 0: [`VERSION`];
//! - then, byte by byte: `0x01` and 32 bytes: those bytes as 64 lowercase hex characters;
//!   `0x02..=0x1F`: the piece [`PIECES`]`[byte - 2]`; any other byte: itself.
//!
//! JSON text never holds a raw byte below `0x20` (serde_json escapes control characters inside
//! strings), so the codes cannot be mistaken for text; a JSON that does hold one is stored as
//! plain TEXT. The pieces are fixed for version 1: changing them needs a new version byte, with
//! this one still read.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use sha2::{Digest, Sha256};
use std::fmt;

pub const VERSION: u8 = 1;

const HEX: u8 = 0x01;
const FIRST_PIECE: u8 = 0x02;

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

/// The checksum of stored payload bytes: the first 8 bytes of their SHA-256.
pub fn checksum(stored: &[u8]) -> i64 {
    let digest = Sha256::digest(stored);
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
    /// How `json` is stored.
    pub fn of(json: &str) -> Stored {
        pack(json).map_or_else(|| Stored::Text(json.to_owned()), Stored::Packed)
    }

    /// The stored bytes, which the checksum covers.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Stored::Packed(b) => b,
            Stored::Text(t) => t.as_bytes(),
        }
    }

    /// The checksum stored beside it: the first 8 bytes of the SHA-256 of the stored bytes (for a
    /// TEXT payload, its JSON, as agents before the packed format computed it).
    pub fn checksum(&self) -> i64 {
        checksum(self.bytes())
    }

    /// The JSON.
    pub fn into_json(self) -> Result<String, Unpackable> {
        match self {
            Stored::Packed(b) => unpack(&b),
            Stored::Text(t) => Ok(t),
        }
    }
}

/// A stored payload as SQLite hands it over (not copied) and its stored checksum: the JSON, or
/// `None` when it is damaged (it does not match its checksum, or does not unpack). No checksum
/// (stored by an agent before checksums): not verified.
pub fn verified(stored: ValueRef<'_>, checksum: Option<i64>) -> Option<String> {
    let (bytes, packed) = match stored {
        ValueRef::Blob(b) => (b, true),
        ValueRef::Text(t) => (t, false),
        _ => return None,
    };
    if checksum.is_some_and(|sum| sum != self::checksum(bytes)) {
        return None;
    }
    if packed {
        unpack(bytes).ok()
    } else {
        String::from_utf8(bytes.to_vec()).ok()
    }
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

/// `json` packed, or `None` where it holds a byte the format cannot carry (store it as TEXT).
pub fn pack(json: &str) -> Option<Vec<u8>> {
    let bytes = json.as_bytes();
    let mut out = Vec::with_capacity(bytes.len() / 2 + 16);
    out.push(VERSION);
    // Literal bytes are copied a run at a time, up to the next piece or hash.
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

/// The JSON of a packed payload.
pub fn unpack(packed: &[u8]) -> Result<String, Unpackable> {
    let Some((&version, mut rest)) = packed.split_first() else {
        return Err(Unpackable("empty"));
    };
    if version != VERSION {
        return Err(Unpackable("unknown format version"));
    }
    let mut out = Vec::with_capacity(packed.len() * 2 + 64);
    loop {
        // The literal run up to the next code.
        let run = rest.iter().position(|&b| b < 0x20).unwrap_or(rest.len());
        out.extend_from_slice(&rest[..run]);
        let Some((&code, tail)) = rest[run..].split_first() else { break };
        rest = tail;
        match code {
            HEX => {
                let Some((raw, tail)) = rest.split_first_chunk::<32>() else {
                    return Err(Unpackable("a hash cut short"));
                };
                rest = tail;
                for byte in raw {
                    out.push(HEX_DIGITS[usize::from(byte >> 4)]);
                    out.push(HEX_DIGITS[usize::from(byte & 0x0f)]);
                }
            }
            0x00 => return Err(Unpackable("a zero byte")),
            code => out.extend_from_slice(PIECES[usize::from(code - FIRST_PIECE)].as_bytes()),
        }
    }
    String::from_utf8(out).map_err(|_| Unpackable("not UTF-8"))
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// The longest piece `at` starts with, by index.
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

const NONE: u8 = u8::MAX;

/// For each byte below 128, the indices of the pieces starting with it, longest first
/// ([`NONE`]-terminated).
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
fn hash_at(at: &[u8]) -> Option<[u8; 32]> {
    if at.len() < 65 || at[64] != b'"' {
        return None;
    }
    let mut raw = [0u8; 32];
    for (k, pair) in at[..64].chunks_exact(2).enumerate() {
        raw[k] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(raw)
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "3c3b503668ec5bdada0e509ae7a1a29869ddcc4723358276b8a2c362cfc1f372";

    #[test]
    fn payloads_round_trip_and_shrink() {
        let full = format!(
            r#"{{"event":"Purchase","event_time":1796459308,"event_id":"s042:t1:00000000","user":{{"email":["{HASH}"],"phone":["{HASH}"]}},"properties":{{"contents":[{{"content_id":"SKU-00000","content_name":"Item 0","price":1.0,"quantity":1}}],"content_type":"product","currency":"USD","value":1.0,"order_id":"00000000","shop_id":"s042","num_items":1}}}}"#
        );
        let cases: Vec<(&str, String, usize)> = vec![
            ("a bench event", full.clone(), 45),
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
            let packed = pack(&json).unwrap_or_else(|| panic!("{what}: not packed"));
            assert_eq!(unpack(&packed).as_deref(), Ok(json.as_str()), "{what}");
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
        let others = ["\"", "\\u0001", "é", "☕", "\"\"", "a", "0", ",", "]", "}", "{", "x\"", "\\n"];
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
                        let hex: String = (0..len).map(|_| HEX_DIGITS[next(16)] as char).collect();
                        text.push_str(&hex);
                        if next(2) == 0 {
                            text.push('"');
                        }
                    }
                    _ => text.push_str(others[next(others.len())]),
                }
            }
            let packed = pack(&text).expect("no control bytes");
            assert_eq!(unpack(&packed).as_deref(), Ok(text.as_str()), "{text:?}");
        }
    }

    #[test]
    fn a_json_with_a_control_byte_is_not_packed() {
        assert_eq!(pack("{\"a\":\"\u{1}\"}"), None);
    }

    #[test]
    fn damaged_or_foreign_blobs_are_refused_not_misread() {
        let packed = pack(&format!(r#"{{"a":"{HASH}"}}"#)).unwrap();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("a newer version", [&[2u8][..], &packed[1..]].concat()),
            ("a hash cut short", packed[..packed.len() - 20].to_vec()),
            ("a zero byte", vec![VERSION, b'{', 0, b'}']),
            ("not UTF-8", vec![VERSION, 0xff]),
        ];
        for (what, blob) in cases {
            assert!(unpack(&blob).is_err(), "{what}");
        }
    }

    #[test]
    fn every_piece_has_a_code_and_starts_with_a_json_delimiter() {
        assert!(PIECES.len() <= usize::from(0x20 - FIRST_PIECE));
        for piece in PIECES {
            assert!(matches!(piece.as_bytes()[0], b'{' | b',' | b'"' | b']' | b'}'), "{piece}");
            assert!(pack(piece).is_some_and(|p| p.len() == 2), "{piece} packs to one code");
        }
    }
}
