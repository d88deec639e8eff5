//! Customer identifiers: normalisation and SHA-256 hashing, exactly as TikTok's reference says.
//!
//! This module owns the only place where raw PII is touched. It never logs, prints or stores a raw
//! value; errors describe what was wrong without repeating the value. [`shape`] and [`shown`] are
//! how every other message names a cell that may be customer data.

use sha2::{Digest, Sha256};
use std::fmt;

/// A SHA-256 digest as 64 lowercase hex characters. Can only be built from a hash, never from raw PII.
/// Held inline (no allocation per hashed identifier), with the digest's 32 bytes, which the queue
/// stores (`queue::packed`) without reading the hex back.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HashedId {
    hex: [u8; 64],
    digest: [u8; 32],
}

impl HashedId {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.hex).expect("hex digits are ASCII")
    }

    /// The digest's bytes: what [`HashedId::as_str`] writes in hex.
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    fn of(normalised: &str) -> HashedId {
        let digest: [u8; 32] = Sha256::digest(normalised.as_bytes()).into();
        let mut hex = [0u8; 64];
        hex_into(&digest, &mut hex);
        HashedId { hex, digest }
    }

    /// A value that already is a SHA-256 hex digest (any case) passes through, lower-cased.
    fn pre_hashed(value: &str) -> Option<HashedId> {
        let hex: [u8; 64] = value.as_bytes().try_into().ok()?;
        let hex = hex.map(|b| b.to_ascii_lowercase());
        Some(HashedId { digest: unhex_64(&hex)?, hex })
    }
}

impl fmt::Debug for HashedId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HashedId({})", self.as_str())
    }
}

/// Lowercase hex of `bytes`, without a formatter per byte.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    hex_into(bytes, &mut out);
    String::from_utf8(out).expect("hex digits are ASCII")
}

/// The 32 bytes that exactly 64 lowercase hex characters spell (what [`hex`] writes of them).
pub fn unhex_64(hex: &[u8]) -> Option<[u8; 32]> {
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let hex: &[u8; 64] = hex.try_into().ok()?;
    let mut raw = [0u8; 32];
    for (byte, pair) in raw.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(raw)
}

/// Lowercase hex of `bytes` into `out` (twice as long).
pub fn hex_into(bytes: &[u8], out: &mut [u8]) {
    for (&b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(b)]);
    }
}

/// Each byte's two lowercase hex digits: one load and one store a byte (hex is written twice
/// per identifier, once hashed and once more for each request that sends it).
static HEX_PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0u8; 2]; 256];
    let mut b = 0;
    while b < 256 {
        pairs[b] = [DIGITS[b >> 4], DIGITS[b & 15]];
        b += 1;
    }
    pairs
};

/// Why an identifier was dropped. The messages never contain the value itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PiiError {
    #[error("not an email address")]
    NotAnEmail,
    #[error("not a valid phone number for region {0}")]
    InvalidPhone(String),
    #[error("not a valid phone number (no country code and no default region configured)")]
    PhoneWithoutRegion,
}

/// Trim and lower-case, then hash. Empty input is `Ok(None)`.
pub fn hash_email(raw: &str) -> Result<Option<HashedId>, PiiError> {
    let trimmed = super::trim(raw);
    if trimmed.is_empty() {
        return Ok(None);
    }
    if let Some(h) = HashedId::pre_hashed(trimmed) {
        return Ok(Some(h));
    }
    // Addresses are ASCII and short: lower-cased on the stack, the same as `to_lowercase` gives.
    let mut buf = [0u8; 256];
    if trimmed.is_ascii() && trimmed.len() <= buf.len() {
        let lower = &mut buf[..trimmed.len()];
        lower.copy_from_slice(trimmed.as_bytes());
        lower.make_ascii_lowercase();
        return hash_normalised_email(std::str::from_utf8(lower).expect("ASCII"));
    }
    hash_normalised_email(&trimmed.to_lowercase())
}

/// Whether `text` has white space in it (`char::is_whitespace`), decided from its bytes when it is
/// ASCII with no white space (the usual address), else char by char.
fn has_white_space(text: &str) -> bool {
    text.bytes().any(|b| !b.is_ascii() || matches!(b, b' ' | b'\t' | b'\n' | b'\x0B' | b'\x0C' | b'\r'))
        && text.chars().any(char::is_whitespace)
}

fn hash_normalised_email(normalised: &str) -> Result<Option<HashedId>, PiiError> {
    let Some((local, domain)) = normalised.split_once('@') else {
        return Err(PiiError::NotAnEmail);
    };
    if local.is_empty() || domain.is_empty() || has_white_space(normalised) {
        return Err(PiiError::NotAnEmail);
    }
    Ok(Some(HashedId::of(normalised)))
}

/// The value as given (surrounding white space removed), hashed. Empty input is `None`.
pub fn hash_external_id(raw: &str) -> Option<HashedId> {
    let trimmed = super::trim(raw);
    if trimmed.is_empty() {
        return None;
    }
    Some(HashedId::pre_hashed(trimmed).unwrap_or_else(|| HashedId::of(trimmed)))
}

/// Make a phone number E.164 (`+` and digits) and hash it.
///
/// A number written with its country code (`+1 415-555-0142`, `(+1)2133734253`, `0049 30 1234567`) is
/// taken as it is once its punctuation is removed. A national number (`030 1234567`) is made E.164
/// with `region` (ISO 3166 alpha-2) and must be valid there, as libphonenumber decides. Either way
/// the result has 8 to 15 digits. Anything else is an error: a number is never sent unnormalised.
pub fn hash_phone(raw: &str, region: Option<phonenumber::country::Id>) -> Result<Option<HashedId>, PiiError> {
    let trimmed = super::trim(raw);
    if trimmed.is_empty() {
        return Ok(None);
    }
    if let Some(h) = HashedId::pre_hashed(trimmed) {
        return Ok(Some(h));
    }
    normalise_phone(trimmed, region).map(|e164| Some(HashedId::of(&e164)))
}

/// The E.164 form of a phone number, or why it has none. Public for tests and `preview`.
pub fn normalise_phone(raw: &str, region: Option<phonenumber::country::Id>) -> Result<String, PiiError> {
    if let Some(e164) = explicit_international(raw) {
        return Ok(e164);
    }
    let Some(region) = region else {
        return Err(PiiError::PhoneWithoutRegion);
    };
    let invalid = || PiiError::InvalidPhone(format!("{region:?}"));
    let number = phonenumber::parse(Some(region), raw).map_err(|_| invalid())?;
    if !phonenumber::is_valid(&number) {
        return Err(invalid());
    }
    let e164 = number.format().mode(phonenumber::Mode::E164).to_string();
    // The same plausibility as a number written with its country code: 8 to 15 digits (a few
    // regions have valid numbers shorter than that, such as Luxembourg's `3000` → `+3523000`).
    match e164.strip_prefix('+') {
        Some(digits) if (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) => Ok(e164),
        _ => Err(invalid()),
    }
}

/// A number that carries its own country code: a leading `+` (possibly inside brackets) or the
/// international prefix `00`, then 8 to 15 digits once punctuation is removed.
fn explicit_international(raw: &str) -> Option<String> {
    const PUNCTUATION: &[char] = &[' ', '-', '.', '(', ')', '/', '\u{a0}'];
    // `+` and the digits, built in place (the `00` prefix removed once all are read).
    let mut e164 = String::with_capacity(18);
    e164.push('+');
    let mut plus = false;
    for c in raw.chars() {
        match c {
            '+' if !plus && e164.len() == 1 => plus = true,
            '0'..='9' => e164.push(c),
            c if PUNCTUATION.contains(&c) => {}
            _ => return None,
        }
    }
    if !plus {
        e164.strip_prefix("+00")?;
        e164.replace_range(1..3, "");
    }
    let digits = &e164[1..];
    let plausible = (8..=15).contains(&digits.len()) && !digits.starts_with('0');
    plausible.then_some(e164)
}

/// Parse a configured default region (`"DE"`, `"us"`).
pub fn parse_region(code: &str) -> Option<phonenumber::country::Id> {
    code.trim().to_ascii_uppercase().parse().ok()
}

/// What a cell looks like, for messages that must not quote it: a file, log line or table names a
/// bad or unexpected cell by its column and this shape, never by its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Empty,
    Email,
    Phone,
    /// Digits, with at most a sign and decimal/grouping separators.
    Number,
    /// Digits with date or time separators (`2024-03-14`, `3/14/2024`, `10:00`).
    DateTime,
    /// One short token of letters, digits and `_-./` (a status, a code, an id): safe to quote.
    Word,
    /// Anything else, with its length in characters.
    Text(usize),
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shape::Empty => f.write_str("is empty"),
            Shape::Email => f.write_str("looks like an e-mail address"),
            Shape::Phone => f.write_str("looks like a phone number"),
            Shape::Number => f.write_str("is a number"),
            Shape::DateTime => f.write_str("is a date or time"),
            Shape::Word => f.write_str("is a word"),
            Shape::Text(n) => write!(f, "is text of {n} characters"),
        }
    }
}

/// Longest [`Shape::Word`]; longer tokens are [`Shape::Text`].
const MAX_WORD: usize = 32;

/// The shape of a cell (trimmed). Pure; the cell is never kept.
pub fn shape(cell: &str) -> Shape {
    let cell = super::trim(cell);
    if cell.is_empty() {
        return Shape::Empty;
    }
    if let Some((local, domain)) = cell.split_once('@') {
        if !local.trim().is_empty() && !domain.trim().is_empty() {
            return Shape::Email;
        }
    }
    let digits = cell.chars().filter(char::is_ascii_digit).count();
    let only = |allowed: &str| cell.chars().all(|c| c.is_ascii_digit() || allowed.contains(c));
    if digits >= 3 && only("-/.: TZ+") && is_date_or_time(cell) {
        return Shape::DateTime;
    }
    if digits > 0 && only("+-.,") && cell.chars().skip(1).all(|c| c != '+' && c != '-') {
        // Bare digits as long as a phone number may be one (`2133734253`, `+12133734253`).
        let bare = cell.trim_start_matches('+').chars().all(|c| c.is_ascii_digit());
        return if bare && (7..=15).contains(&digits) { Shape::Phone } else { Shape::Number };
    }
    if (7..=15).contains(&digits) && only(" -.()/+\u{a0}") {
        return Shape::Phone;
    }
    let chars = cell.chars().count();
    let word = |c: char| c.is_alphanumeric() || "_-./#$€£%,".contains(c);
    // A token with a phone number's worth of digits is a word only with a few letters and no long
    // run of digits (`KASSE-01-17-1001`), so that a number with a prefix (`x213-373-4253`) is not.
    let letters = cell.chars().filter(|c| c.is_alphabetic()).count();
    let longest_run = cell.split(|c: char| !c.is_ascii_digit()).map(str::len).max().unwrap_or(0);
    let few_digits = digits < 7 || (letters >= 3 && longest_run < 7);
    if chars <= MAX_WORD && few_digits && cell.chars().all(word) {
        return Shape::Word;
    }
    Shape::Text(chars)
}

/// `2024-03-14`, `14.03.2024`, `3/14/2024` (with an optional time), or a time (`10:00`).
fn is_date_or_time(cell: &str) -> bool {
    let date = cell.split([' ', 'T']).next().unwrap_or("");
    let parts: Vec<usize> = date.split(['-', '/', '.']).map(str::len).collect();
    let dated = matches!(parts.as_slice(), [4, 1..=2, 1..=2] | [1..=2, 1..=2, 2 | 4]);
    dated || (parts.len() == 1 && cell.contains(':'))
}

/// A cell as a message may show it unquoted (`Source = pos`): itself when harmless, else its shape.
pub fn bare(cell: &str) -> std::borrow::Cow<'_, str> {
    match shape(cell) {
        Shape::Number | Shape::DateTime | Shape::Word => cell.trim().into(),
        other => format!("a value that {other}").into(),
    }
}

/// A cell as a message may show it: quoted when it is a number, date or short word (a status, a
/// code), else only its shape, so that an e-mail address, phone number or name in the wrong column
/// is never repeated.
pub fn shown(cell: &str) -> String {
    match shape(cell) {
        Shape::Number | Shape::DateTime | Shape::Word => format!("`{}`", cell.trim()),
        other => format!("a value that {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_is_written_as_two_lowercase_hex_digits() {
        let bytes: Vec<u8> = (0..=255).collect();
        let want: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(super::hex(&bytes), want);
        assert_eq!(unhex_64(super::hex(&bytes[224..]).as_bytes()).map(Vec::from), Some(bytes[224..].to_vec()));
    }

    #[test]
    fn white_space_is_found_as_char_is_whitespace_finds_it() {
        // Every ASCII byte alone and inside a word, and non-ASCII text with and without it.
        let mut cases: Vec<String> =
            (0u8..128).flat_map(|b| [(b as char).to_string(), format!("a{}b", b as char)]).collect();
        cases.extend(["", "é", "a\u{a0}b", "a\u{85}", "\u{2003}", "jöhn@exämple.com", "\u{3000}x"].map(String::from));
        for text in &cases {
            assert_eq!(has_white_space(text), text.chars().any(char::is_whitespace), "{text:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn white_space_is_found_in_any_text_as_char_is_whitespace_finds_it(text in "[ \\t\\n\\x0B\\x0C\\r\u{85}\u{a0}\u{2003}\u{3000}a-zé@.]{0,12}") {
            proptest::prop_assert_eq!(has_white_space(&text), text.chars().any(char::is_whitespace));
        }
    }

    fn hex(h: Option<HashedId>) -> String {
        h.expect("a hash").as_str().to_string()
    }

    #[test]
    fn reference_vectors() {
        let cases = [(" ALICE_abc@gmail.com ", "848a771458438fc2ec420560d769fb9b9b86851ee338ec56517baabd79d3bb4f")];
        for (input, expected) in cases {
            assert_eq!(hex(hash_email(input).unwrap()), expected, "email {input:?}");
        }
        let phones = [
            ("(+1)2133734253", "9f7ec22d72092cd3c0b58726ed9c2d91b92e51a3f29837508fb2948bb22dd2fd"),
            ("+15555555555", "910a625c4ba147b544e6bd2f267e130ae14c591b6ba9c25cb8573322dedbebd0"),
        ];
        for (input, expected) in phones {
            assert_eq!(hex(hash_phone(input, None).unwrap()), expected, "phone {input:?}");
        }
        assert_eq!(
            hex(hash_external_id("user_123")),
            "80fba0ae1c48e3978e43e4efc365e14e12ea0c830ba8ba5b9a2dafc7e3f2ab8b"
        );
    }

    #[test]
    fn pre_hashed_values_pass_through_lower_cased() {
        let upper = "848A771458438FC2EC420560D769FB9B9B86851EE338EC56517BAABD79D3BB4F";
        let lower = upper.to_ascii_lowercase();
        assert_eq!(hex(hash_email(upper).unwrap()), lower);
        assert_eq!(hex(hash_phone(upper, None).unwrap()), lower);
        assert_eq!(hex(hash_external_id(upper)), lower);
        // The digest the queue stores is the one the hex spells, hashed here or passed through.
        for h in [hash_external_id(upper), hash_external_id("user_123")].into_iter().flatten() {
            assert_eq!(super::hex(h.digest()), h.as_str());
        }
        assert!(HashedId::pre_hashed(&format!("+{}", &lower[1..])).is_none(), "a sign is not a hex digit");
    }

    #[test]
    fn phones_become_e164() {
        let de = parse_region("de");
        let us = parse_region("US");
        let cases: &[(&str, Option<phonenumber::country::Id>, Result<&str, ()>)] = &[
            ("(+1)2133734253", None, Ok("+12133734253")),
            ("+1 415-555-0142", None, Ok("+14155550142")),
            ("0049 30 1234567", None, Ok("+49301234567")),
            ("030 1234567", de, Ok("+49301234567")),
            ("0151-23456789", de, Ok("+4915123456789")),
            ("(213) 373-4253", us, Ok("+12133734253")),
            ("030 1234567", None, Err(())),
            ("12", de, Err(())),
            ("call me", us, Err(())),
            ("+0 123", None, Err(())),
            ("3000", parse_region("LU"), Err(())),
            ("+352 3000", None, Err(())),
        ];
        for (input, region, expected) in cases {
            let got = normalise_phone(input, *region).map_err(|_| ());
            assert_eq!(got.as_deref(), expected.as_deref(), "phone {input:?} region {region:?}");
        }
    }

    #[test]
    fn emails_are_trimmed_lowercased_and_checked() {
        assert_eq!(hash_email("   ").unwrap(), None);
        assert_eq!(hash_email("no-at-sign"), Err(PiiError::NotAnEmail));
        assert_eq!(hash_email("a b@example.com"), Err(PiiError::NotAnEmail));
        assert_eq!(hash_email("A@Example.com").unwrap(), hash_email("a@example.com").unwrap());
    }

    #[test]
    fn errors_never_repeat_the_value() {
        let secret = "12-secret";
        let err = normalise_phone(secret, parse_region("DE")).unwrap_err();
        assert!(!err.to_string().contains("secret"));
    }

    #[test]
    fn cells_are_described_by_shape() {
        let cases = [
            ("", Shape::Empty),
            ("   ", Shape::Empty),
            (" ALICE_abc@gmail.com ", Shape::Email),
            ("a@b", Shape::Email),
            ("(+1)2133734253", Shape::Phone),
            ("+1 415-555-0142", Shape::Phone),
            ("0151 23456789", Shape::Phone),
            ("213-373-4253", Shape::Phone),
            ("2133734253", Shape::Phone),
            ("+12133734253", Shape::Phone),
            ("123456", Shape::Number),
            ("12345678.50", Shape::Number),
            ("12.50", Shape::Number),
            ("-3,5", Shape::Number),
            ("1.000,00", Shape::Number),
            ("2024-03-14", Shape::DateTime),
            ("2024-03-14T10:00:00Z", Shape::DateTime),
            ("3/14/2024 10:00", Shape::DateTime),
            ("14.03.2024", Shape::DateTime),
            ("10:00", Shape::DateTime),
            ("refunded", Shape::Word),
            ("KASSE-01-17-1001", Shape::Word),
            ("#1001", Shape::Word),
            ("$19,44", Shape::Word),
            ("x213-373-4253", Shape::Text(13)),
            ("ab2133734253", Shape::Text(12)),
            ("tel:2133734253", Shape::Text(14)),
            ("Alice Smith", Shape::Text(11)),
            ("a-very-long-token-that-goes-on-and-on", Shape::Text(37)),
            ("@", Shape::Text(1)),
        ];
        for (cell, expected) in cases {
            assert_eq!(shape(cell), expected, "{cell:?}");
        }
    }

    #[test]
    fn shown_quotes_only_harmless_shapes() {
        let cases = [
            ("refunded", "`refunded`"),
            (" 12.50 ", "`12.50`"),
            ("2024-03-14", "`2024-03-14`"),
            (" ALICE_abc@gmail.com ", "a value that looks like an e-mail address"),
            ("(+1)2133734253", "a value that looks like a phone number"),
            ("Alice Smith", "a value that is text of 11 characters"),
            ("", "a value that is empty"),
        ];
        for (cell, expected) in cases {
            assert_eq!(shown(cell), expected, "{cell:?}");
            assert_eq!(bare(cell), expected.trim_matches('`'), "{cell:?}");
        }
    }
}
