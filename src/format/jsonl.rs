//! JSON Lines: one order per line, items nested.
//!
//! ```json
//! {"order_id":"000123","event_time":"2025-03-14T15:42:10-04:00","email":"a@example.com",
//!  "items":[{"content_id":"SOCK","price":8.0,"quantity":2}]}
//! ```

use super::{FormatError, Parsed, Reject, Summary};
use crate::event::{RawItem, RawOrder};
use serde_json::{Map, Value};
use std::io::BufRead;
use std::ops::ControlFlow;

/// A line longer than this is rejected without being held in memory.
pub const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;

const ORDER_KEYS: [&str; 14] = [
    "order_id",
    "event_time",
    "event",
    "email",
    "phone",
    "external_id",
    "currency",
    "value",
    "shop_id",
    "till_id",
    "description",
    "items",
    "contents",
    "consent",
];
const ITEM_KEYS: [&str; 6] = ["content_id", "content_name", "content_category", "brand", "price", "quantity"];

pub(super) fn read(
    mut input: impl BufRead,
    sink: &mut dyn FnMut(Parsed) -> ControlFlow<()>,
) -> Result<Summary, FormatError> {
    let mut buf = Vec::new();
    let mut line = 0u64;
    loop {
        line += 1;
        buf.clear();
        let (read, complete) = read_line_capped(&mut input, &mut buf, MAX_LINE_BYTES)?;
        if read == 0 {
            break;
        }
        let parsed = if !complete {
            reject(line, None, format!("line longer than {MAX_LINE_BYTES} bytes"))
        } else {
            match std::str::from_utf8(&buf) {
                Err(_) => reject(line, None, "not valid UTF-8".into()),
                Ok(text) if text.trim().is_empty() => continue,
                Ok(text) => parse_line(text, line).unwrap_or_else(Parsed::Reject),
            }
        };
        if sink(parsed).is_break() {
            break;
        }
    }
    Ok(Summary::default())
}

/// Read up to and including the next `\n` into `buf`, keeping at most `cap` bytes. Returns the bytes
/// consumed and whether the whole line fitted.
fn read_line_capped(input: &mut impl BufRead, buf: &mut Vec<u8>, cap: usize) -> std::io::Result<(usize, bool)> {
    let mut consumed = 0;
    let mut fits = true;
    loop {
        let available = input.fill_buf()?;
        if available.is_empty() {
            return Ok((consumed, fits));
        }
        let (chunk, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        if fits && buf.len() + chunk.len() <= cap {
            buf.extend_from_slice(chunk);
        } else {
            fits = false;
            buf.clear();
        }
        let n = chunk.len();
        input.consume(n);
        consumed += n;
        if done {
            return Ok((consumed, fits));
        }
    }
}

fn reject(line: u64, field: Option<&str>, reason: String) -> Parsed {
    Parsed::Reject(Reject { line, field: field.map(str::to_string), reason })
}

fn parse_line(text: &str, line: u64) -> Result<Parsed, Reject> {
    let bad = |field: Option<&str>, reason: String| Reject { line, field: field.map(str::to_string), reason };
    let value: Value = serde_json::from_str(text).map_err(|e| bad(None, format!("invalid JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(bad(None, "not a JSON object".into()));
    };
    if let Some(unknown) = map.keys().find(|k| !ORDER_KEYS.contains(&k.as_str())) {
        return Err(bad(Some(unknown), format!("unknown field (known: {})", ORDER_KEYS.join(", "))));
    }
    let get = |key: &str| scalar(&map, key).map_err(|reason| bad(Some(key), reason));
    let get_list = |key: &str| list(&map, key).map_err(|reason| bad(Some(key), reason));
    let mut order = RawOrder {
        line,
        order_id: get("order_id")?.ok_or_else(|| bad(Some("order_id"), "missing".into()))?,
        event: get("event")?,
        event_time: get("event_time")?.ok_or_else(|| bad(Some("event_time"), "missing".into()))?,
        emails: get_list("email")?,
        phones: get_list("phone")?,
        external_ids: get_list("external_id")?,
        currency: get("currency")?,
        value: get("value")?,
        shop_id: get("shop_id")?,
        till_id: get("till_id")?,
        description: get("description")?,
        time_zone: None,
        consent: match map.get("consent") {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(Value::Null) => Some(false),
            Some(Value::String(s)) => Some(super::consent_given(s)),
            Some(_) => return Err(bad(Some("consent"), "must be true/false or a yes/no string".into())),
        },
        items: Vec::new(),
    };
    let items_key = if map.contains_key("items") { "items" } else { "contents" };
    match map.get(items_key) {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let path = format!("{items_key}[{i}]");
                let Value::Object(item) = item else {
                    return Err(bad(Some(&path), "not an object".into()));
                };
                if let Some(unknown) = item.keys().find(|k| !ITEM_KEYS.contains(&k.as_str())) {
                    return Err(bad(Some(&format!("{path}.{unknown}")), "unknown field".into()));
                }
                let field = |key: &str| scalar(item, key).map_err(|reason| bad(Some(&format!("{path}.{key}")), reason));
                order.items.push(RawItem {
                    line,
                    content_id: field("content_id")?,
                    content_name: field("content_name")?,
                    content_category: field("content_category")?,
                    brand: field("brand")?,
                    price: field("price")?,
                    quantity: field("quantity")?,
                });
            }
        }
        Some(_) => return Err(bad(Some(items_key), "not an array".into())),
    }
    Ok(Parsed::Order(Box::new(order)))
}

fn scalar(map: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err("must be a string or a number".into()),
    }
}

fn list(map: &Map<String, Value>, key: &str) -> Result<Vec<String>, String> {
    match map.get(key) {
        Some(Value::Array(values)) => values
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                _ => Err("must be a string or an array of strings".to_string()),
            })
            .collect(),
        _ => Ok(scalar(map, key)?.into_iter().collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::profile_tests::parse;
    use crate::format::Format;

    #[test]
    fn orders_with_nested_items() {
        let text = r#"{"order_id":"A1","event_time":1741981330,"email":["a@example.com","b@example.com"],"phone":"+14155550142","value":49.68,"items":[{"content_id":"SOCK","price":8.0,"quantity":2}]}

{"order_id":42,"event_time":"2025-03-14T15:42:10Z","contents":[]}
"#;
        let parsed = parse(Format::Jsonl, text).unwrap();
        assert_eq!(parsed.len(), 2);
        let Parsed::Order(a) = &parsed[0] else { panic!() };
        assert_eq!(a.emails.len(), 2);
        assert_eq!(a.value.as_deref(), Some("49.68"));
        assert_eq!(a.items[0].price.as_deref(), Some("8.0"));
        assert_eq!(a.items[0].quantity.as_deref(), Some("2"));
        let Parsed::Order(b) = &parsed[1] else { panic!() };
        assert_eq!((b.order_id.as_str(), b.line), ("42", 3));
    }

    #[test]
    fn bad_lines_are_rejected_with_line_and_field() {
        let text = "{\"order_id\":\"A1\"}\nnot json\n{\"order_id\":\"A2\",\"event_time\":1,\"emial\":\"x\"}\n{\"order_id\":\"A3\",\"event_time\":1,\"items\":[{\"price\":{}}]}\n";
        let fields: Vec<_> = parse(Format::Jsonl, text)
            .unwrap()
            .into_iter()
            .map(|p| match p {
                Parsed::Reject(r) => (r.line, r.field),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            fields,
            vec![
                (1, Some("event_time".to_string())),
                (2, None),
                (3, Some("emial".to_string())),
                (4, Some("items[0].price".to_string()))
            ]
        );
    }

    #[test]
    fn over_long_lines_are_skipped_without_losing_the_next() {
        let mut input = Vec::new();
        input.extend(std::iter::repeat_n(b'x', 100));
        input.extend_from_slice(b"\nnext\n");
        let mut reader = std::io::BufReader::with_capacity(16, &input[..]);
        let mut buf = Vec::new();
        assert_eq!(read_line_capped(&mut reader, &mut buf, 50).unwrap(), (101, false));
        buf.clear();
        assert_eq!(read_line_capped(&mut reader, &mut buf, 50).unwrap(), (5, true));
        assert_eq!(buf, b"next\n");
    }
}
