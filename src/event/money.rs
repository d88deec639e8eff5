//! Money: exact decimal parsing of the ways POS exports write amounts, and TikTok's currency list.

use rust_decimal::Decimal;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("empty")]
    Empty,
    #[error("not an amount")]
    NotAnAmount,
    #[error("out of range (10^15 or more)")]
    OutOfRange,
}

/// Amounts (and quantities) must be smaller than this in magnitude: far above any sale, and small
/// enough that a price times a quantity, or a sum of them, is exact and cannot overflow.
const MAX_AMOUNT: i64 = 1_000_000_000_000_000;

/// Parse an amount written with `decimal` as the decimal separator (`.` or `,`).
///
/// Accepts a sign (`-1.44`), accounting parentheses (`(32.41)`), currency symbols or codes before or
/// after the number (`$1,240.92 `, `-$0.95`, `12,50 €`, `EUR 3.00`), and thousands separators
/// (`,`/`'`/space for a `.` decimal; `.`/space for a `,` decimal). Magnitudes of 10^15 or more are
/// [`MoneyError::OutOfRange`].
pub fn parse_amount(raw: &str, decimal: char) -> Result<Decimal, MoneyError> {
    let s = super::trim(raw);
    match plain_amount(s, decimal) {
        Some(value) => Ok(value),
        None => parse_written(s, decimal),
    }
}

/// The shape most cells have, read at once: digits, and a fraction after `decimal` (`1`, `49.68`;
/// at most 18 digits in all, and under [`MAX_AMOUNT`]). `None` for anything else, which
/// [`parse_written`] reads (or refuses) as written; both read such a cell alike (a property test).
fn plain_amount(s: &str, decimal: char) -> Option<Decimal> {
    let (int, frac) = match s.split_once(decimal) {
        Some((_, "")) => return None,
        Some((int, frac)) => (int, frac),
        None => (s, ""),
    };
    if int.is_empty() || int.len() + frac.len() > 18 {
        return None;
    }
    let mut mantissa: i64 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        if !b.is_ascii_digit() {
            return None;
        }
        mantissa = mantissa * 10 + i64::from(b - b'0');
    }
    let value = Decimal::new(mantissa, frac.len() as u32);
    (value < Decimal::from(MAX_AMOUNT)).then_some(value)
}

/// [`parse_amount`] of a trimmed cell in any of the shapes it accepts.
fn parse_written(mut s: &str, decimal: char) -> Result<Decimal, MoneyError> {
    if s.is_empty() {
        return Err(MoneyError::Empty);
    }
    let mut negative = false;
    if let Some(inner) = s.strip_prefix('(').and_then(|r| r.strip_suffix(')')) {
        negative = true;
        s = inner.trim();
    }
    s = strip_currency(s);
    if let Some(rest) = s.strip_prefix('-') {
        negative = !negative;
        s = strip_currency(rest);
    } else if let Some(rest) = s.strip_suffix('-') {
        negative = !negative;
        s = rest;
    }
    let thousands: &[char] =
        if decimal == ',' { &['.', ' ', '\u{a0}', '\u{202f}', '\''] } else { &[',', ' ', '\u{a0}', '\u{202f}', '\''] };
    let (int_part, frac_part) = match s.split_once(decimal) {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    // Digit groups between thousands separators: the first of 1 to 3 digits, every other of 3.
    let mut groups = int_part.split(|c| thousands.contains(&c));
    let first = groups.next().unwrap_or_default();
    let grouped = groups.clone().next().is_some();
    let grouped_ok = !grouped || ((1..=3).contains(&first.len()) && groups.clone().all(|g| g.len() == 3 && digits(g)));
    if !grouped_ok || !digits(first) || !frac_part.is_none_or(digits) {
        return Err(MoneyError::NotAnAmount);
    }
    // The number as `Decimal` reads it: as written when it has no thousands separator and a `.`
    // decimal (no copy: most cells), else its digits joined and a `.` before the fraction.
    let plain: std::borrow::Cow<str> = if !grouped && decimal == '.' {
        s.into()
    } else {
        let mut plain = String::with_capacity(s.len() + 1);
        plain.push_str(first);
        groups.for_each(|g| plain.push_str(g));
        if let Some(f) = frac_part {
            plain.push('.');
            plain.push_str(f);
        }
        plain.into()
    };
    if plain.is_empty() || plain == "." {
        return Err(MoneyError::NotAnAmount);
    }
    let value = Decimal::from_str(&plain).map_err(|_| MoneyError::NotAnAmount)?;
    if value >= Decimal::from(MAX_AMOUNT) {
        return Err(MoneyError::OutOfRange);
    }
    Ok(if negative { -value } else { value })
}

/// An amount as a reader hands it on: the text of a cell, parsed by [`Amount::resolve`] with the
/// source's decimal separator, or a value the reader computed, exact (never printed and parsed
/// again).
#[derive(Debug, Clone, PartialEq)]
pub enum Amount {
    Text(String),
    Exact(Decimal),
}

impl Amount {
    /// The amount, under the same rules for text and computed values: text as [`parse_amount`]
    /// reads it, and no magnitude of 10^15 or more.
    pub fn resolve(&self, decimal: char) -> Result<Decimal, MoneyError> {
        match self {
            Amount::Text(text) => parse_amount(text, decimal),
            Amount::Exact(value) if value.abs() >= Decimal::from(MAX_AMOUNT) => Err(MoneyError::OutOfRange),
            Amount::Exact(value) => Ok(*value),
        }
    }

    /// Text that is empty or white space: no amount given.
    pub fn is_blank(&self) -> bool {
        matches!(self, Amount::Text(text) if super::trim(text).is_empty())
    }

    /// The text of the cell, for an amount the reader did not compute.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Amount::Text(text) => Some(text),
            Amount::Exact(_) => None,
        }
    }
}

impl From<&str> for Amount {
    fn from(text: &str) -> Self {
        Amount::Text(text.to_string())
    }
}

impl From<String> for Amount {
    fn from(text: String) -> Self {
        Amount::Text(text)
    }
}

impl From<Decimal> for Amount {
    fn from(value: Decimal) -> Self {
        Amount::Exact(value)
    }
}

/// Remove white space, currency symbols and a three-letter currency code around a number.
fn strip_currency(s: &str) -> &str {
    let symbols = |c: char| c.is_whitespace() || "$€£¥₱₩₹".contains(c);
    let mut s = s.trim_matches(symbols);
    let is_code = |t: &str| t.len() == 3 && t.bytes().all(|b| b.is_ascii_alphabetic());
    if s.len() > 3 && s.is_char_boundary(3) && is_code(&s[..3]) {
        s = s[3..].trim_matches(symbols);
    }
    if s.len() > 3 && s.is_char_boundary(s.len() - 3) && is_code(&s[s.len() - 3..]) {
        s = s[..s.len() - 3].trim_matches(symbols);
    }
    s
}

/// The `f64` nearest to `value`, as the wire sends amounts (JSON floats). `rust_decimal`'s own
/// conversion is not always the nearest (-8042607218703.55 became ...703.551); Rust's parsing of
/// the exact decimal text is.
pub fn as_f64(value: Decimal) -> f64 {
    if value.is_zero() {
        // `-0` and `-0.00` too: a zero amount is sent as `0.0`, never `-0.0`.
        return 0.0;
    }
    value.to_string().parse().unwrap_or(0.0)
}

/// Append `value` as a JSON number, exactly as serde_json writes [`as_f64`] of it (the wire has
/// always sent amounts as JSON floats: `12.5`, `10.0`, `0.05`), without going through one. A value
/// of at most 15 significant digits is one `f64` apart from every other such value, so the shortest
/// text that reads back as its nearest `f64` (what serde_json writes, through `zmij`) is the
/// value's own digits, trailing zeros dropped; it is written from them in serde_json's layout. Any
/// other value (more digits, or a size written with an exponent) goes through the `f64`. A test
/// holds the two to the same text over every amount of up to 5 digits at scales 0 to 6 and a
/// spread of longer ones, and a property test holds the packed JSON to the wire's.
pub fn write_json_number(value: Decimal, out: &mut Vec<u8>) {
    if !write_plain(value, out) {
        serde_json::to_writer(out, &as_f64(value)).expect("writing to a Vec cannot fail");
    }
}

/// [`write_json_number`] for a value of at most 15 significant digits written without an
/// exponent; `false` (nothing written) for any other.
fn write_plain(value: Decimal, out: &mut Vec<u8>) -> bool {
    let (mut mantissa, mut scale) = (value.mantissa().unsigned_abs(), value.scale());
    if mantissa == 0 {
        out.extend_from_slice(b"0.0");
        return true;
    }
    while scale > 0 && mantissa % 10 == 0 {
        mantissa /= 10;
        scale -= 1;
    }
    if mantissa >= 1_000_000_000_000_000 {
        return false;
    }
    let mut buffer = itoa::Buffer::new();
    let digits = buffer.format(mantissa as u64).as_bytes();
    // Where the decimal point falls in the digits: serde_json (`zmij`) writes 0.0000ddd down to
    // four zeros, and with an exponent below that.
    let point = digits.len() as i64 - i64::from(scale);
    if point <= -5 {
        return false;
    }
    if value.is_sign_negative() {
        out.push(b'-');
    }
    if scale == 0 {
        out.extend_from_slice(digits);
        out.extend_from_slice(b".0");
    } else if point > 0 {
        let (int, frac) = digits.split_at(point as usize);
        out.extend_from_slice(int);
        out.push(b'.');
        out.extend_from_slice(frac);
    } else {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', point.unsigned_abs() as usize));
        out.extend_from_slice(digits);
    }
    true
}

/// ISO 4217 codes TikTok accepts (`tiktok-events-api.md`).
pub const CURRENCIES: [&str; 62] = [
    "AED", "ARS", "AUD", "BDT", "BHD", "BIF", "BOB", "BRL", "CAD", "CHF", "CLP", "CNY", "COP", "CRC", "CZK", "DKK",
    "DZD", "EGP", "EUR", "GBP", "GTQ", "HKD", "HNL", "HUF", "IDR", "ILS", "INR", "ISK", "JPY", "KES", "KHR", "KRW",
    "KWD", "KZT", "MAD", "MOP", "MXN", "MYR", "NGN", "NIO", "NOK", "NZD", "OMR", "PEN", "PHP", "PKR", "PLN", "PYG",
    "QAR", "RON", "RUB", "SAR", "SEK", "SGD", "THB", "TRY", "TWD", "UAH", "USD", "VES", "VND", "ZAR",
];

/// A currency TikTok accepts. Built only through [`Currency::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Currency(&'static str);

impl Currency {
    pub fn parse(raw: &str) -> Option<Currency> {
        let upper = raw.trim().to_ascii_uppercase();
        CURRENCIES.iter().find(|c| **c == upper).map(|c| Currency(c))
    }

    pub fn code(self) -> &'static str {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn computed_amounts_keep_the_bound_of_written_ones() {
        let cases: &[(Amount, char, Result<Decimal, MoneyError>)] = &[
            (Amount::Exact(d("105.93")), ',', Ok(d("105.93"))),
            (Amount::Exact(d("-2.40")), '.', Ok(d("-2.40"))),
            (Amount::Exact(d("999999999999999.99")), '.', Ok(d("999999999999999.99"))),
            (Amount::Exact(d("1000000000000000")), '.', Err(MoneyError::OutOfRange)),
            (Amount::Exact(d("-1000000000000000")), '.', Err(MoneyError::OutOfRange)),
            ("12,50 €".into(), ',', Ok(d("12.50"))),
            ("1000000000000000".into(), '.', Err(MoneyError::OutOfRange)),
            ("lots".into(), '.', Err(MoneyError::NotAnAmount)),
        ];
        for (amount, decimal, want) in cases {
            assert_eq!(&amount.resolve(*decimal), want, "{amount:?}");
        }
        assert!(Amount::from(" ").is_blank() && !Amount::Exact(Decimal::ZERO).is_blank());
    }

    #[test]
    fn amounts() {
        let cases: &[(&str, char, &str)] = &[
            ("49.68", '.', "49.68"),
            ("$22.50", '.', "22.50"),
            ("-$0.95", '.', "-0.95"),
            ("\"$1,240.92 \"", '.', "1240.92"),
            ("$1,149.00 ", '.', "1149.00"),
            ("($33.62)", '.', "-33.62"),
            ("1.249,00", ',', "1249.00"),
            ("10,50", ',', "10.50"),
            ("12,50 €", ',', "12.50"),
            ("EUR 3.00", '.', "3.00"),
            ("1'000.50", '.', "1000.50"),
            ("26.990", '.', "26.990"),
            ("7.60-", '.', "-7.60"),
            ("0", '.', "0"),
        ];
        for (input, sep, expected) in cases {
            let input = input.trim_matches('"');
            assert_eq!(parse_amount(input, *sep), Ok(d(expected)), "{input:?}");
        }
    }

    proptest::proptest! {
        /// A cell of digits and separators is read alike by the plain shape's shortcut and as
        /// written: the same value and the same number of decimals.
        #[test]
        fn the_plain_shape_is_read_as_written(s in "[0-9.,]{0,22}", comma in proptest::bool::ANY) {
            let decimal = if comma { ',' } else { '.' };
            if let Some(v) = plain_amount(&s, decimal) {
                let written = parse_written(&s, decimal).unwrap();
                proptest::prop_assert_eq!((v.mantissa(), v.scale()), (written.mantissa(), written.scale()), "{:?}", s);
            }
        }
    }

    #[test]
    fn the_plain_shape() {
        for (s, decimal, want) in
            [("49.68", '.', Some("49.68")), ("007", '.', Some("7")), ("10,50", ',', Some("10.50"))]
        {
            assert_eq!(plain_amount(s, decimal), want.map(d), "{s}");
        }
        for (s, decimal) in
            [("1.", '.'), (".5", '.'), ("1,5", '.'), ("1.5", ','), ("-1", '.'), ("1000000000000000", '.')]
        {
            assert_eq!(plain_amount(s, decimal), None, "{s}");
        }
        assert_eq!(plain_amount("999999999999999.999", '.'), Some(d("999999999999999.999")));
        assert_eq!(plain_amount("0.0000000000000001", '.').map(|v| v.scale()), Some(16));
    }

    #[test]
    fn not_amounts() {
        for input in ["", "abc", "1.2.3", "12,5x", "--5", ".", "1,2,3", "12,34.5", "1.5e3"] {
            assert!(parse_amount(input, '.').is_err(), "{input:?}");
        }
        assert!(parse_amount("1,2,3", ',').is_err());
    }

    #[test]
    fn amounts_of_a_quadrillion_or_more_are_out_of_range() {
        assert_eq!(parse_amount("999,999,999,999,999.9999", '.'), Ok(d("999999999999999.9999")));
        for input in ["1000000000000000", "-1000000000000000.00", "79228162514264337593543950335"] {
            assert_eq!(parse_amount(input, '.'), Err(MoneyError::OutOfRange), "{input}");
        }
    }

    #[test]
    fn round_trip_of_formatted_decimals() {
        for cents in [-123456789i64, -1, 0, 1, 99, 100, 4968, 124092, 99999999] {
            let value = Decimal::new(cents, 2);
            assert_eq!(parse_amount(&value.to_string(), '.'), Ok(value));
            let comma = value.to_string().replace('.', ",");
            assert_eq!(parse_amount(&comma, ','), Ok(value));
        }
    }

    #[test]
    fn json_numbers_are_written_as_serde_json_writes_the_float() {
        let serde = |v: Decimal| serde_json::to_string(&as_f64(v)).unwrap();
        let ours = |v: Decimal| {
            let mut out = Vec::new();
            write_json_number(v, &mut out);
            String::from_utf8(out).unwrap()
        };
        let cases: &[(&str, &str)] = &[
            ("12.50", "12.5"),
            ("10", "10.0"),
            ("46.00", "46.0"),
            ("0.05", "0.05"),
            ("-0.95", "-0.95"),
            ("1200", "1200.0"),
            ("0.00001", "0.00001"),
            ("0.000001", "1e-6"),
            ("0.0001234", "0.0001234"),
            ("999999999999999", "999999999999999.0"),
            ("999999999999999.99", "1000000000000000.0"),
            ("0", "0.0"),
            ("0.00", "0.0"),
            ("-0", "0.0"),
            ("-0.00", "0.0"),
            ("79228162514264337593543950335", "7.922816251426434e+28"),
            // rust_decimal's to_f64 gives -8042607218703.551 here: not the nearest f64.
            ("-8042607218703.55", "-8042607218703.55"),
            ("999999999999.99", "999999999999.99"),
        ];
        for (value, want) in cases {
            assert_eq!(ours(d(value)), *want, "{value}");
            assert_eq!(ours(d(value)), serde(d(value)), "{value}");
        }
        // Every amount of up to 5 digits at every scale a till writes, and a spread of longer ones
        // up to 15 digits and past them (checked once with 10x as many of each).
        let long = (0..20_000).flat_map(|i| [i * 49_999_999_999 + 17, 999_999_999_999_999 - i * 7_777_777_777]);
        for mantissa in (0..100_000i64).chain(long) {
            for scale in 0..=6 {
                for value in [Decimal::new(mantissa, scale), Decimal::new(-mantissa, scale)] {
                    assert_eq!(ours(value), serde(value), "{value}");
                }
            }
        }
    }

    #[test]
    fn currencies() {
        assert_eq!(Currency::parse(" usd").map(Currency::code), Some("USD"));
        assert_eq!(Currency::parse("EUR").map(Currency::code), Some("EUR"));
        assert!(Currency::parse("XXX").is_none());
        assert!(Currency::parse("$").is_none());
    }
}
