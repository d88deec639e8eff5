//! JSON input: JSON Lines (`jsonl`, one record per line) and JSON documents (`json`, an array of
//! records, at the top or at a path such as `data.orders`, streamed one record at a time).
//!
//! A record is an order with its items nested (`items`/`contents`), or one line item of an order
//! (a flat record); consecutive records with the same `order_id` form one order, as rows do in CSV.
//! Without a mapping the keys are our field names and an unknown key rejects its record (a typo
//! must not silently drop data). With `columns = { email = "customer.email", items = "lines",
//! price = "unit_price" }` any other JSON export is described: each field is a dotted path into
//! the record (item fields into each element of `items`), and other keys are ignored.
//!
//! ```json
//! {"order_id":"000123","event_time":"2025-03-14T15:42:10-04:00","email":"a@example.com",
//!  "items":[{"content_id":"SOCK","price":8.0,"quantity":2}]}
//! ```

use super::csv_native::COLUMNS as FIELDS;
use super::csv_table::order_not_taken;
use super::{FormatError, Parsed, ReadOptions, Reject, Summary};
use crate::event::{RawItem, RawOrder};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use std::cell::Cell;
use std::io::{BufRead, Read};
use std::ops::ControlFlow;
use std::rc::Rc;

/// A record (a JSON Lines line, or one element of a document's array) longer than this is rejected
/// (JSON Lines) or ends the reading of the document, without being held in memory.
pub const MAX_RECORD_BYTES: usize = 4 * 1024 * 1024;

/// The fields are the native CSV's columns (`order_id` first); these of them are a line item's, in
/// each element of `items` or in the record itself when it is one line item.
const ITEM_FIELDS: [&str; 6] = ["content_id", "content_name", "content_category", "brand", "price", "quantity"];

/// Keys of `columns` that are not fields: where the items are in a record, and (documents) where the
/// records are in the document.
pub const PATH_KEYS: [&str; 2] = ["items", "records"];

/// Where each field is found in a record.
#[derive(Debug)]
pub(super) struct Paths {
    /// No mapping: keys are our field names and an unknown key rejects its record.
    strict: bool,
    order: Vec<(&'static str, Vec<String>)>,
    item: Vec<(&'static str, Vec<String>)>,
    /// The items array; `None`: `items`, else `contents`.
    items: Option<Vec<String>>,
    /// The records array of a document; empty: the document itself.
    records: Vec<String>,
}

impl Paths {
    pub(super) fn new(columns: &std::collections::BTreeMap<String, String>) -> Paths {
        let path = |field: &str| match columns.get(field) {
            Some(p) => split_path(p),
            None => vec![field.to_string()],
        };
        Paths {
            strict: columns.is_empty(),
            order: FIELDS.iter().filter(|f| !ITEM_FIELDS.contains(f)).map(|f| (*f, path(f))).collect(),
            item: ITEM_FIELDS.iter().map(|f| (*f, path(f))).collect(),
            items: columns.get("items").map(|p| split_path(p)),
            records: columns.get("records").map(|p| split_path(p)).unwrap_or_default(),
        }
    }
}

/// A dotted path (`customer.emails.0`) as its segments.
pub fn split_path(path: &str) -> Vec<String> {
    path.trim().split('.').map(str::to_string).collect()
}

/// Whether `path` is a usable dotted path: no empty segment.
pub fn valid_path(path: &str) -> bool {
    split_path(path).iter().all(|s| !s.trim().is_empty())
}

/// JSON Lines: one record per line.
pub(super) fn read_lines(
    mut input: impl BufRead,
    options: &ReadOptions,
    sink: &mut dyn FnMut(Parsed) -> ControlFlow<()>,
) -> Result<Summary, FormatError> {
    let paths = Paths::new(&options.columns);
    let mut group = Group::default();
    let mut buf = Vec::new();
    let mut line = 0u64;
    loop {
        line += 1;
        buf.clear();
        let (read, complete) = read_line_capped(&mut input, &mut buf, MAX_RECORD_BYTES)?;
        if read == 0 {
            break;
        }
        let record = if !complete {
            Err((None, reject(line, None, format!("line longer than {MAX_RECORD_BYTES} bytes"))))
        } else {
            match std::str::from_utf8(&buf) {
                Err(_) => Err((None, reject(line, None, "not valid UTF-8".into()))),
                Ok(text) if text.trim().is_empty() => continue,
                Ok(text) => match serde_json::from_str::<Value>(text) {
                    Ok(value) => record(&value, line, &paths),
                    Err(e) => Err((None, reject(line, None, format!("invalid JSON: {e}")))),
                },
            }
        };
        if group.push(record, sink).is_break() {
            return Ok(Summary::default());
        }
    }
    let _ = group.finish(sink);
    Ok(Summary::default())
}

/// A JSON document: the array of records at `columns.records` (default: the document itself),
/// streamed. Broken JSON after some records keeps what came before it, and the rest of the file
/// becomes one rejected row; broken before any record, the file is unreadable.
pub(super) fn read_document(
    input: impl Read,
    options: &ReadOptions,
    sink: &mut dyn FnMut(Parsed) -> ControlFlow<()>,
) -> Result<Summary, FormatError> {
    let paths = Paths::new(&options.columns);
    let position = Rc::new(Position::default());
    let reader = Counting { inner: input, position: position.clone() };
    let mut de = serde_json::Deserializer::from_reader(reader);
    let mut group = Group::default();
    let mut records = 0u64;
    let mut stopped = false;
    let mut each = |value: Value, line: u64| {
        records += 1;
        let flow = group.push(record(&value, line, &paths), sink);
        stopped = flow.is_break();
        flow
    };
    let at = paths.records.clone();
    let found = AtPath { path: &at, each: &mut each, position: &position }
        .deserialize(&mut de)
        .and_then(|found| de.end().map(|()| found));
    let where_ = if at.is_empty() { "the document".to_string() } else { format!("`{}`", at.join(".")) };
    match found {
        _ if stopped => return Ok(Summary::default()),
        Ok(true) => {}
        Ok(false) => {
            return Err(FormatError::Unreadable {
                line: 1,
                reason: format!("no records: {where_} is not in the document"),
            })
        }
        Err(e) if e.is_io() && position.too_long.get() => {
            let line = position.record_line.get().unwrap_or(1);
            let reason = format!("record longer than {MAX_RECORD_BYTES} bytes; the rest of the file is not read");
            if records == 0 {
                return Err(FormatError::Unreadable { line, reason });
            }
            let _ = group.push(Err((None, reject(line, None, reason))), sink);
        }
        Err(e) if e.is_io() => {
            return Err(FormatError::Io(e.into()));
        }
        Err(e) => {
            let line = e.line() as u64;
            // A data error quotes the value it met (`invalid type: string "…"`), which may be a
            // customer's e-mail address: only its place is named.
            let reason = if e.is_data() && records == 0 {
                format!("{where_} is not an array of records (line {}, column {})", e.line(), e.column())
            } else if e.is_data() {
                format!(
                    "unexpected value at line {}, column {}; the rest of the file is not read",
                    e.line(),
                    e.column()
                )
            } else {
                format!("invalid JSON ({e}); the rest of the file is not read")
            };
            if records == 0 {
                return Err(FormatError::Unreadable { line: line.max(1), reason });
            }
            let _ = group.push(Err((None, reject(line, None, reason))), sink);
        }
    }
    let _ = group.finish(sink);
    Ok(Summary::default())
}

/// Where the reading is, shared between the byte counter under the parser and the record visitor.
#[derive(Default)]
struct Position {
    /// Newlines handed to the parser so far.
    newlines: Cell<u64>,
    /// While a record is read: bytes handed to the parser since it started.
    record_bytes: Cell<Option<usize>>,
    /// The line of the first byte of the current record (not whitespace or a separator).
    record_line: Cell<Option<u64>>,
    too_long: Cell<bool>,
}

impl Position {
    /// A record is about to be read.
    fn mark(&self) {
        self.record_bytes.set(Some(0));
        self.record_line.set(None);
    }
}

/// The input, counting lines and capping the size of a record.
struct Counting<R> {
    inner: R,
    position: Rc<Position>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let p = &self.position;
        for b in &buf[..n] {
            if p.record_line.get().is_none() && p.record_bytes.get().is_some() && !b" \t\r\n,".contains(b) {
                p.record_line.set(Some(p.newlines.get() + 1));
            }
            if *b == b'\n' {
                p.newlines.set(p.newlines.get() + 1);
            }
        }
        if let Some(bytes) = p.record_bytes.get() {
            let bytes = bytes + n;
            p.record_bytes.set(Some(bytes));
            if bytes > MAX_RECORD_BYTES {
                p.too_long.set(true);
                return Err(std::io::Error::other("record too long"));
            }
        }
        Ok(n)
    }
}

/// Find the array at `path` in a document and hand each element to `each`; true if found.
struct AtPath<'a, F> {
    path: &'a [String],
    each: &'a mut F,
    position: &'a Position,
}

impl<'de, F: FnMut(Value, u64) -> ControlFlow<()>> DeserializeSeed<'de> for AtPath<'_, F> {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        if self.path.is_empty() {
            deserializer.deserialize_seq(self)
        } else {
            deserializer.deserialize_map(self)
        }
    }
}

impl<'de, F: FnMut(Value, u64) -> ControlFlow<()>> Visitor<'de> for AtPath<'_, F> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str("an array of records")
        } else {
            write!(f, "an object with `{}`", self.path[0])
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        loop {
            self.position.mark();
            let Some(value) = seq.next_element::<Value>()? else { break };
            if (self.each)(value, self.position.record_line.get().unwrap_or(0)).is_break() {
                return Err(de::Error::custom("stopped"));
            }
        }
        self.position.record_bytes.set(None);
        Ok(true)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut found = false;
        let mut seed = Some(self);
        while let Some(key) = map.next_key::<String>()? {
            match seed.take_if(|s| s.path[0] == key) {
                Some(s) => {
                    found = map.next_value_seed(AtPath { path: &s.path[1..], each: s.each, position: s.position })?
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(found)
    }
}

fn reject(line: u64, field: Option<&str>, reason: String) -> Reject {
    Reject { line, field: field.map(str::to_string), reason }
}

/// A record read: the order it belongs to with what it adds, or why not (with its order id when it
/// has a readable one, so that the rest of that order is rejected with it).
type Record = Result<RawOrder, (Option<String>, Reject)>;

/// One record as (part of) an order.
fn record(value: &Value, line: u64, paths: &Paths) -> Record {
    let Value::Object(map) = value else {
        return Err((None, reject(line, None, "not a JSON object".into())));
    };
    let order_id = lookup(value, &paths.order[0].1).and_then(|v| text(v).ok().flatten());
    let bad = |field: &str, reason: String| (order_id.clone(), reject(line, Some(field), reason));
    if paths.strict {
        let known = |k: &str| FIELDS.contains(&k) || k == "items" || k == "contents";
        if let Some(unknown) = map.keys().find(|k| !known(k)) {
            let all = [&FIELDS[..], &["items"]].concat().join(", ");
            return Err(bad(unknown, format!("unknown field (known: {all})")));
        }
    }
    let mut order = RawOrder { line, ..RawOrder::default() };
    for (field, path) in &paths.order {
        let shown = path.join(".");
        let Some(v) = lookup(value, path) else { continue };
        match *field {
            "email" | "phone" | "external_id" => {
                let values = list(v).map_err(|reason| bad(&shown, reason))?;
                match *field {
                    "email" => order.emails = values,
                    "phone" => order.phones = values,
                    _ => order.external_ids = values,
                }
            }
            "consent" => {
                order.consent = match v {
                    Value::Bool(b) => Some(*b),
                    Value::Null => Some(false),
                    Value::String(s) => Some(super::consent_given(s)),
                    _ => return Err(bad(&shown, "must be true/false or a yes/no string".into())),
                }
            }
            _ => {
                let Some(s) = text(v).map_err(|reason| bad(&shown, reason))? else { continue };
                match *field {
                    "order_id" => order.order_id = s,
                    "event_time" => order.event_time = s,
                    "event" => order.event = Some(s),
                    "currency" => order.currency = Some(s),
                    "value" => order.value = Some(s.into()),
                    "shop_id" => order.shop_id = Some(s),
                    "till_id" => order.till_id = Some(s),
                    _ => order.description = Some(s),
                }
            }
        }
    }
    if order.order_id.trim().is_empty() {
        return Err(bad(&paths.order[0].1.join("."), "missing".into()));
    }
    let items_path = match &paths.items {
        Some(p) => Some(p.clone()),
        None => ["items", "contents"].iter().map(|k| vec![k.to_string()]).find(|p| lookup(value, p).is_some()),
    };
    match items_path.as_ref().map(|p| (p.join("."), lookup(value, p))) {
        Some((_, None | Some(Value::Null))) => {}
        Some((shown, Some(Value::Array(items)))) => {
            for (i, element) in items.iter().enumerate() {
                let at = format!("{shown}[{i}]");
                if !element.is_object() {
                    return Err(bad(&at, "not an object".into()));
                }
                if paths.strict {
                    if let Some(unknown) =
                        element.as_object().into_iter().flatten().find(|(k, _)| !ITEM_FIELDS.contains(&k.as_str()))
                    {
                        return Err(bad(&format!("{at}.{}", unknown.0), "unknown field".into()));
                    }
                }
                if let Some(item) = item(element, line, paths, &at).map_err(|(f, r)| bad(&f, r))? {
                    order.items.push(item);
                }
            }
        }
        Some((shown, Some(_))) => return Err(bad(&shown, "not an array".into())),
        // No items array: the record itself may be one line item.
        None => {
            if let Some(item) = item(value, line, paths, "").map_err(|(f, r)| bad(&f, r))? {
                order.items.push(item);
            }
        }
    }
    Ok(order)
}

/// The line item in `element`, if it has any item field.
fn item(element: &Value, line: u64, paths: &Paths, at: &str) -> Result<Option<RawItem>, (String, String)> {
    let mut item = RawItem { line, ..RawItem::default() };
    let mut any = false;
    for (field, path) in &paths.item {
        let Some(v) = lookup(element, path) else { continue };
        let shown = if at.is_empty() { path.join(".") } else { format!("{at}.{}", path.join(".")) };
        let Some(s) = text(v).map_err(|reason| (shown, reason))? else { continue };
        any = true;
        match *field {
            "content_id" => item.content_id = Some(s),
            "content_name" => item.content_name = Some(s),
            "content_category" => item.content_category = Some(s),
            "brand" => item.brand = Some(s),
            "price" => item.price = Some(s.into()),
            _ => item.quantity = Some(s.into()),
        }
    }
    Ok(any.then_some(item))
}

/// The value at a dotted path: object keys, or array indexes where the value is an array.
fn lookup<'v>(value: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(value, |v, segment| match v {
        Value::Object(map) => map.get(segment),
        Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

fn text(v: &Value) -> Result<Option<String>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) => Ok(Some(n.to_string())),
        _ => Err("must be a string or a number".into()),
    }
}

fn list(v: &Value) -> Result<Vec<String>, String> {
    match v {
        Value::Array(values) => values
            .iter()
            .filter_map(|v| text(v).transpose())
            .collect::<Result<_, _>>()
            .map_err(|_| "must be a string or an array of strings".to_string()),
        other => Ok(text(other)?.into_iter().collect()),
    }
}

/// Consecutive records of one order, merged: order-level values from the first record that has
/// them, identifiers and items from all. A bad record rejects its whole order.
#[derive(Default)]
struct Group {
    pending: Option<(RawOrder, Option<Reject>)>,
}

impl Group {
    fn push(&mut self, record: Record, sink: &mut dyn FnMut(Parsed) -> ControlFlow<()>) -> ControlFlow<()> {
        let id = match &record {
            Ok(order) => Some(order.order_id.clone()),
            Err((id, _)) => id.clone(),
        };
        if let Some((pending, bad)) = self.pending.as_mut().filter(|(p, _)| Some(&p.order_id) == id.as_ref()) {
            match record {
                Ok(more) => merge(pending, more),
                Err((_, reject)) => {
                    bad.get_or_insert(reject);
                }
            }
            return ControlFlow::Continue(());
        }
        self.finish(sink)?;
        match record {
            Ok(order) => self.pending = Some((order, None)),
            Err((Some(id), reject)) => {
                self.pending = Some((RawOrder { line: reject.line, order_id: id, ..RawOrder::default() }, Some(reject)))
            }
            Err((None, reject)) => return sink(Parsed::Reject(reject)),
        }
        ControlFlow::Continue(())
    }

    fn finish(&mut self, sink: &mut dyn FnMut(Parsed) -> ControlFlow<()>) -> ControlFlow<()> {
        match self.pending.take() {
            None => ControlFlow::Continue(()),
            Some((order, Some(reject))) => sink(Parsed::Reject(order_not_taken(&order.order_id, reject))),
            Some((order, None)) => sink(Parsed::Order(Box::new(order))),
        }
    }
}

fn merge(order: &mut RawOrder, more: RawOrder) {
    fn first<T>(slot: &mut Option<T>, value: Option<T>) {
        if slot.is_none() {
            *slot = value;
        }
    }
    if order.event_time.is_empty() {
        order.event_time = more.event_time;
    }
    first(&mut order.event, more.event);
    first(&mut order.currency, more.currency);
    first(&mut order.value, more.value);
    first(&mut order.shop_id, more.shop_id);
    first(&mut order.till_id, more.till_id);
    first(&mut order.description, more.description);
    order.consent = order.consent.or(more.consent);
    order.emails.extend(more.emails);
    order.phones.extend(more.phones);
    order.external_ids.extend(more.external_ids);
    order.items.extend(more.items);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Amount;
    use crate::format::profile_tests::{orders, parse, rejects};
    use crate::format::Format;

    fn read_with(format: Format, columns: &[(&str, &str)], text: &str) -> Result<Vec<Parsed>, FormatError> {
        let options = ReadOptions {
            columns: columns.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..ReadOptions::default()
        };
        let mut out = Vec::new();
        crate::format::read(format, text.as_bytes(), &options, &mut |p| {
            out.push(p);
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }

    /// Each thing found in one line: `order ID@line items=N emails=N` or `reject@line field: reason`.
    fn outline(parsed: &[Parsed]) -> Vec<String> {
        parsed
            .iter()
            .map(|p| match p {
                Parsed::Order(o) => format!(
                    "order {}@{} items={} emails={} value={}",
                    o.order_id,
                    o.line,
                    o.items.len(),
                    o.emails.len(),
                    o.value.as_ref().and_then(Amount::as_text).unwrap_or("-")
                ),
                Parsed::Reject(r) => format!("reject@{} {}", r.line, r.field.as_deref().unwrap_or("-")),
                Parsed::Skip(s) => format!("skip {}", s.order_id),
            })
            .collect()
    }

    #[test]
    fn json_lines_orders_with_nested_items() {
        let text = r#"{"order_id":"A1","event_time":1741981330,"email":["a@example.com","b@example.com"],"phone":"+14155550142","value":49.68,"items":[{"content_id":"SOCK","price":8.0,"quantity":2}]}

{"order_id":42,"event_time":"2025-03-14T15:42:10Z","contents":[]}
"#;
        let parsed = parse(Format::Jsonl, text).unwrap();
        assert_eq!(
            outline(&parsed),
            ["order A1@1 items=1 emails=2 value=49.68", "order 42@3 items=0 emails=0 value=-"]
        );
        let a = orders(&parsed)[0];
        assert_eq!(a.items[0].price.as_ref().and_then(Amount::as_text), Some("8.0"));
        assert_eq!(a.items[0].quantity.as_ref().and_then(Amount::as_text), Some("2"));
    }

    #[test]
    fn without_a_mapping_bad_records_are_rejected_with_line_and_field() {
        let text = "{\"order_id\":\"A1\",\"event_time\":true}\nnot json\n{\"order_id\":\"A2\",\"event_time\":1,\"emial\":\"x\"}\n{\"order_id\":\"A3\",\"event_time\":1,\"items\":[{\"price\":{}}]}\n[1]\n";
        let fields: Vec<_> = rejects(&parse(Format::Jsonl, text).unwrap())
            .into_iter()
            .map(|r| (r.line, r.field.clone().unwrap_or_default()))
            .collect();
        let want = [(1, "event_time"), (2, ""), (3, "emial"), (4, "items[0].price"), (5, "")];
        assert_eq!(fields, want.map(|(l, f)| (l, f.to_string())));
        // A record without an order id is rejected for it; one without a time is left to `event::build`.
        let parsed = parse(Format::Jsonl, "{\"event_time\":1}\n").unwrap();
        assert_eq!(rejects(&parsed)[0].field.as_deref(), Some("order_id"));
    }

    #[test]
    fn consecutive_flat_records_of_one_order_are_one_order() {
        let text =
            "{\"order_id\":\"A1\",\"event_time\":1,\"email\":\"a@example.com\",\"content_id\":\"X\",\"price\":1}\n\
                    {\"order_id\":\"A1\",\"content_id\":\"Y\",\"price\":2,\"email\":\"b@example.com\"}\n\
                    {\"order_id\":\"A2\",\"event_time\":1,\"content_id\":\"Z\",\"price\":3}\n\
                    {\"order_id\":\"A3\",\"event_time\":1,\"content_id\":\"V\",\"price\":3}\n\
                    {\"order_id\":\"A3\",\"content_id\":\"W\",\"price\":{}}\n\
                    {\"order_id\":\"A4\",\"event_time\":1}\n";
        let parsed = parse(Format::Jsonl, text).unwrap();
        assert_eq!(
            outline(&parsed),
            [
                "order A1@1 items=2 emails=2 value=-",
                "order A2@3 items=1 emails=0 value=-",
                "reject@5 price",
                "order A4@6 items=0 emails=0 value=-"
            ]
        );
        assert!(rejects(&parsed)[0].reason.contains("order `A3` not taken"), "{:?}", rejects(&parsed));
    }

    #[test]
    fn a_mapping_describes_any_json_export() {
        let columns = [
            ("order_id", "receipt.number"),
            ("event_time", "receipt.closed_at"),
            ("email", "customer.contact.email"),
            ("phone", "customer.phones"),
            ("value", "totals.gross"),
            ("items", "receipt.lines"),
            ("content_id", "article.sku"),
            ("price", "unit_price"),
            ("quantity", "qty"),
        ];
        let text = r#"{"receipt":{"number":"R-1","closed_at":"2025-03-14T15:42:10Z","lines":[{"article":{"sku":"S1","color":"red"},"unit_price":"2.50","qty":2},{"article":{"sku":"S2"},"unit_price":1}]},"customer":{"contact":{"email":"a@example.com"},"phones":["+14155550142",null]},"totals":{"gross":6.0},"cashier":"Jana"}
{"receipt":{"number":"R-2","closed_at":"2025-03-14T15:50:00Z","lines":"oops"}}
{"receipt":{"closed_at":"2025-03-14T15:50:00Z"}}
"#;
        let parsed = read_with(Format::Jsonl, &columns, text).unwrap();
        assert_eq!(
            outline(&parsed),
            ["order R-1@1 items=2 emails=1 value=6.0", "reject@2 receipt.lines", "reject@3 receipt.number"]
        );
        let o = orders(&parsed)[0];
        assert_eq!(o.phones, ["+14155550142"]);
        assert_eq!(o.items[0].content_id.as_deref(), Some("S1"));
        fn cell(a: &Option<Amount>) -> Option<&str> {
            a.as_ref().and_then(Amount::as_text)
        }
        assert_eq!((cell(&o.items[0].price), cell(&o.items[0].quantity)), (Some("2.50"), Some("2")));
        assert_eq!(cell(&o.items[1].price), Some("1"));
    }

    #[test]
    fn a_document_is_streamed_record_by_record_with_the_line_each_starts_on() {
        let text = "{\n  \"meta\": {\"exported\": \"2025-03-14\", \"orders\": \"not these\"},\n  \"data\": {\"orders\": [\n    {\n      \"id\": \"D1\",\n      \"at\": 1741981330,\n      \"total\": 10\n    },\n    {\"id\": \"D2\", \"at\": 1741981330, \"total\": []},\n    {\"id\": \"D3\", \"at\": 1741981330}\n  ]},\n  \"trailer\": [1, 2, 3]\n}\n";
        let columns = [("records", "data.orders"), ("order_id", "id"), ("event_time", "at"), ("value", "total")];
        let parsed = read_with(Format::Json, &columns, text).unwrap();
        assert_eq!(
            outline(&parsed),
            ["order D1@4 items=0 emails=0 value=10", "reject@9 total", "order D3@10 items=0 emails=0 value=-"]
        );
        // A top-level array needs no `records`; without a mapping the keys are our names.
        let top = "[{\"order_id\":\"T1\",\"event_time\":1,\"items\":[{\"content_id\":\"X\",\"price\":1}]},\n {\"order_id\":\"T2\",\"event_time\":1}]";
        assert_eq!(
            outline(&parse(Format::Json, top).unwrap()),
            ["order T1@1 items=1 emails=0 value=-", "order T2@2 items=0 emails=0 value=-"]
        );
    }

    #[test]
    fn a_broken_document_keeps_the_records_before_the_break() {
        // Broken after two records: those stand, the rest is one rejected row at the break.
        let text = "[\n{\"order_id\":\"B1\",\"event_time\":1},\n{\"order_id\":\"B2\",\"event_time\":1},\n{\"order_id\":\"B3\",\"event_time\":1,,}\n]\n";
        let parsed = parse(Format::Json, text).unwrap();
        assert_eq!(
            outline(&parsed),
            ["order B1@2 items=0 emails=0 value=-", "order B2@3 items=0 emails=0 value=-", "reject@4 -"]
        );
        assert!(rejects(&parsed)[0].reason.contains("rest of the file is not read"));
        // Broken, not an array, or without the records' path before any record: unreadable.
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: [Case; 5] = [
            ("[{\"order_id\":", &[], "invalid JSON"),
            ("{\"order_id\":\"A\"}", &[], "not an array of records"),
            ("{\"data\":{}}", &[("records", "data.orders")], "`data.orders` is not in the document"),
            ("", &[], "EOF"),
            ("[] []", &[], "trailing characters"),
        ];
        for (text, columns, reason) in cases {
            match read_with(Format::Json, columns, text) {
                Err(FormatError::Unreadable { reason: got, .. }) => assert!(got.contains(reason), "{text}: {got}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_record_over_the_cap_ends_the_document_without_being_held() {
        let mut text =
            String::from("[{\"order_id\":\"C1\",\"event_time\":1},\n{\"order_id\":\"C2\",\"description\":\"");
        text.push_str(&"x".repeat(MAX_RECORD_BYTES + 1));
        text.push_str("\"}]");
        let parsed = parse(Format::Json, &text).unwrap();
        assert_eq!(outline(&parsed), ["order C1@1 items=0 emails=0 value=-", "reject@2 -"]);
        assert!(rejects(&parsed)[0].reason.contains("record longer than"));
        let alone = format!("[{}]", &text[text.find("{\"order_id\":\"C2").unwrap()..text.len() - 1]);
        assert!(matches!(parse(Format::Json, alone), Err(FormatError::Unreadable { line: 1, .. })));
    }

    #[test]
    fn reading_stops_when_the_sink_says_so() {
        let text = "[{\"order_id\":\"S1\",\"event_time\":1},{\"order_id\":\"S2\",\"event_time\":1},{\"order_id\":\"S3\",\"event_time\":1}]";
        let mut seen = 0;
        let summary = crate::format::read(Format::Json, text.as_bytes(), &ReadOptions::default(), &mut |_| {
            seen += 1;
            ControlFlow::Break(())
        });
        assert!(summary.is_ok());
        assert_eq!(seen, 1);
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
