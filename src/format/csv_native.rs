//! The agent's native CSV: a header of our field names, one row per line item, consecutive rows of
//! the same `order_id` forming one order.

#[cfg(test)]
use super::detect_delimiter;
use super::{FormatError, Parsed, ReadOptions, Reject, Summary};
use crate::event::{RawItem, RawOrder};
use std::io::BufRead;
use std::ops::ControlFlow;

/// Column names of the native format.
pub const COLUMNS: [&str; 18] = [
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
    "content_id",
    "content_name",
    "content_category",
    "brand",
    "price",
    "quantity",
    "consent",
];

#[derive(Clone, Copy)]
enum Col {
    OrderId,
    EventTime,
    Event,
    Email,
    Phone,
    ExternalId,
    Currency,
    Value,
    ShopId,
    TillId,
    Description,
    ContentId,
    ContentName,
    ContentCategory,
    Brand,
    Price,
    Quantity,
    Consent,
}

const COLS: [Col; 18] = [
    Col::OrderId,
    Col::EventTime,
    Col::Event,
    Col::Email,
    Col::Phone,
    Col::ExternalId,
    Col::Currency,
    Col::Value,
    Col::ShopId,
    Col::TillId,
    Col::Description,
    Col::ContentId,
    Col::ContentName,
    Col::ContentCategory,
    Col::Brand,
    Col::Price,
    Col::Quantity,
    Col::Consent,
];

/// The order being assembled from consecutive rows, and whether one of its rows was bad.
struct Group {
    order: RawOrder,
    bad: Option<Reject>,
}

pub(super) fn read(
    mut input: impl BufRead,
    options: &ReadOptions,
    sink: &mut dyn FnMut(Parsed) -> ControlFlow<()>,
) -> Result<Summary, FormatError> {
    let mut reader = super::open_csv(&mut input, options.delimiter)?;
    let mut record = csv::ByteRecord::new();
    let unreadable = |reason: String| FormatError::Unreadable { line: 1, reason };
    if !reader.read_byte_record(&mut record).map_err(csv_error)? {
        return Err(unreadable("empty file: no header".into()));
    }
    let mut columns: [Option<usize>; 18] = [None; 18];
    let mut summary = Summary::default();
    for (i, raw) in record.iter().enumerate() {
        let name = String::from_utf8_lossy(raw).trim().to_ascii_lowercase();
        match COLUMNS.iter().position(|c| *c == name) {
            Some(k) if columns[k].is_some() => return Err(unreadable(format!("column `{name}` appears twice"))),
            Some(k) => columns[k] = Some(i),
            None => summary.ignored_columns.push(name),
        }
    }
    for required in [0, 1] {
        if columns[required].is_none() {
            return Err(unreadable(format!(
                "missing required column `{}` (header has: {})",
                COLUMNS[required],
                String::from_utf8_lossy(record.as_slice())
            )));
        }
    }
    let width = record.len();
    let consent_column = columns[17].is_some();

    let mut group: Option<Group> = None;
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                // An I/O error mid-file: what was read so far stands, the rest is unreadable.
                return Err(csv_error(e));
            }
        }
        let line = record.position().map_or(0, |p| p.line());
        if record.len() == 1 && record.get(0).is_some_and(|f| f.iter().all(u8::is_ascii_whitespace)) {
            continue;
        }
        let row = match decode_row(&record, &columns, width, line) {
            Ok(row) => row,
            Err((order_id, reject)) => {
                // The row's order (when known) is tainted; an unknown order stands alone.
                match (&mut group, order_id) {
                    (Some(g), Some(id)) if g.order.order_id == id => {
                        g.bad.get_or_insert(reject);
                    }
                    (_, Some(id)) => {
                        if flush(&mut group, consent_column, sink).is_break() {
                            return Ok(summary);
                        }
                        group = Some(Group {
                            order: RawOrder { line, order_id: id, ..RawOrder::default() },
                            bad: Some(reject),
                        });
                    }
                    (_, None) => {
                        if sink(Parsed::Reject(reject)).is_break() {
                            return Ok(summary);
                        }
                    }
                }
                continue;
            }
        };
        let same = group.as_ref().is_some_and(|g| g.order.order_id == row.order_id);
        if !same {
            if flush(&mut group, consent_column, sink).is_break() {
                return Ok(summary);
            }
            group = Some(Group {
                order: RawOrder { line, order_id: row.order_id.clone(), ..RawOrder::default() },
                bad: None,
            });
        }
        let g = group.as_mut().expect("group was just set");
        merge(&mut g.order, row, line);
    }
    let _ = flush(&mut group, consent_column, sink);
    Ok(summary)
}

fn flush(
    group: &mut Option<Group>,
    consent_column: bool,
    sink: &mut dyn FnMut(Parsed) -> ControlFlow<()>,
) -> ControlFlow<()> {
    let Some(mut g) = group.take() else {
        return ControlFlow::Continue(());
    };
    if consent_column && g.order.consent.is_none() {
        g.order.consent = Some(false);
    }
    let parsed = match g.bad {
        None => Parsed::Order(Box::new(g.order)),
        Some(mut reject) => {
            reject.reason = format!("order `{}` not taken: {}", g.order.order_id, reject.reason);
            Parsed::Reject(reject)
        }
    };
    sink(parsed)
}

/// One decoded row: every known column's text (None when absent or empty).
struct Row {
    order_id: String,
    values: [Option<String>; 18],
}

fn decode_row(
    record: &csv::ByteRecord,
    columns: &[Option<usize>; 18],
    width: usize,
    line: u64,
) -> Result<Row, (Option<String>, Reject)> {
    let mut values: [Option<String>; 18] = Default::default();
    let mut first_error: Option<Reject> = None;
    for (k, col) in columns.iter().enumerate() {
        let Some(i) = col else { continue };
        let Some(bytes) = record.get(*i) else {
            continue;
        };
        match std::str::from_utf8(bytes) {
            Ok(s) if s.trim().is_empty() => {}
            Ok(s) => values[k] = Some(s.to_string()),
            Err(_) => {
                first_error.get_or_insert(Reject {
                    line,
                    field: Some(COLUMNS[k].into()),
                    reason: "not valid UTF-8".into(),
                });
            }
        }
    }
    let order_id = values[0].as_ref().map(|s| s.trim().to_string());
    if record.len() != width {
        let reject =
            Reject { line, field: None, reason: format!("row has {} fields, header has {width}", record.len()) };
        return Err((order_id, reject));
    }
    if let Some(reject) = first_error {
        return Err((order_id, reject));
    }
    let Some(order_id) = order_id else {
        return Err((None, Reject { line, field: Some("order_id".into()), reason: "empty".into() }));
    };
    Ok(Row { order_id, values })
}

fn merge(order: &mut RawOrder, row: Row, line: u64) {
    let mut item = RawItem { line, ..RawItem::default() };
    let mut has_item = false;
    for (col, value) in COLS.iter().zip(row.values) {
        let Some(value) = value else { continue };
        let first = |slot: &mut Option<String>| {
            if slot.is_none() {
                *slot = Some(value.clone());
            }
        };
        match col {
            Col::OrderId => {}
            Col::EventTime if order.event_time.is_empty() => order.event_time = value,
            Col::EventTime => {}
            Col::Event => first(&mut order.event),
            Col::Email => order.emails.push(value),
            Col::Phone => order.phones.push(value),
            Col::ExternalId => order.external_ids.push(value),
            Col::Currency => first(&mut order.currency),
            Col::Value => first(&mut order.value),
            Col::ShopId => first(&mut order.shop_id),
            Col::TillId => first(&mut order.till_id),
            Col::Description => first(&mut order.description),
            Col::ContentId => (item.content_id, has_item) = (Some(value), true),
            Col::ContentName => (item.content_name, has_item) = (Some(value), true),
            Col::ContentCategory => item.content_category = Some(value),
            Col::Brand => item.brand = Some(value),
            Col::Price => (item.price, has_item) = (Some(value), true),
            Col::Quantity => (item.quantity, has_item) = (Some(value), true),
            // Order-level, from the first row that has it (a file with a consent column but no
            // value for an order means no consent: see `flush`).
            Col::Consent => {
                if order.consent.is_none() {
                    order.consent = Some(super::consent_given(&value));
                }
            }
        }
    }
    if has_item {
        order.items.push(item);
    }
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
    use crate::format::{read as read_any, Format};

    fn parse(text: &str) -> Vec<Parsed> {
        let mut out = Vec::new();
        read_any(Format::NativeCsv, text.as_bytes(), &ReadOptions::default(), &mut |p| {
            out.push(p);
            ControlFlow::Continue(())
        })
        .unwrap();
        out
    }

    fn orders(parsed: &[Parsed]) -> Vec<&RawOrder> {
        parsed.iter().filter_map(|p| if let Parsed::Order(o) = p { Some(o.as_ref()) } else { None }).collect()
    }

    fn rejects(parsed: &[Parsed]) -> Vec<(u64, String)> {
        parsed
            .iter()
            .filter_map(|p| if let Parsed::Reject(r) = p { Some((r.line, r.reason.clone())) } else { None })
            .collect()
    }

    #[test]
    fn consecutive_rows_group_into_one_order() {
        let text = "\u{feff}order_id,event_time,email,content_id,price,quantity\n\
                    A1,2025-03-14 15:42:10,a@example.com,SOCK,8.00,2\n\
                    A1,,,DRESS,30.00,1\n\
                    A2,2025-03-14 16:00:00,,PIN,5.00,1\n";
        let parsed = parse(text);
        let o = orders(&parsed);
        assert_eq!(o.len(), 2);
        assert_eq!(o[0].order_id, "A1");
        assert_eq!(o[0].line, 2);
        assert_eq!(o[0].items.len(), 2);
        assert_eq!(o[0].items[1].line, 3);
        assert_eq!(o[0].emails, vec!["a@example.com".to_string()]);
        assert_eq!(o[1].items[0].content_id.as_deref(), Some("PIN"));
    }

    #[test]
    fn semicolons_are_detected_and_crlf_is_fine() {
        let text = "order_id;event_time;value\r\nB1;1741981330;10,50\r\n";
        let parsed = parse(text);
        assert_eq!(orders(&parsed)[0].value.as_deref(), Some("10,50"));
    }

    #[test]
    fn a_bad_row_rejects_its_order_and_the_rest_flows() {
        let text = "order_id,event_time,content_id,price\n\
                    A1,1741981330,X,1.00\n\
                    A1,1741981330,Y\n\
                    A2,1741981330,Z,2.00\n\
                    ,1741981330,W,3.00\n\
                    A3,1741981330,V,4.00\n";
        let parsed = parse(text);
        let ids: Vec<_> = orders(&parsed).iter().map(|o| o.order_id.clone()).collect();
        assert_eq!(ids, vec!["A2", "A3"]);
        let r = rejects(&parsed);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].0, 3);
        assert!(r[0].1.contains("order `A1`"), "{}", r[0].1);
        assert_eq!(r[1].0, 5);
    }

    #[test]
    fn invalid_utf8_names_the_field() {
        let mut bytes = b"order_id,event_time,content_name,price\nA1,1741981330,Caf".to_vec();
        bytes.extend_from_slice(&[0xE9]);
        bytes.extend_from_slice(b",1.00\n");
        let mut out = Vec::new();
        read_any(Format::NativeCsv, &bytes[..], &ReadOptions::default(), &mut |p| {
            out.push(p);
            ControlFlow::Continue(())
        })
        .unwrap();
        match &out[0] {
            Parsed::Reject(r) => assert_eq!(r.field.as_deref(), Some("content_name")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn missing_required_columns_make_the_file_unreadable() {
        let err = read_any(Format::NativeCsv, &b"id,time\n1,2\n"[..], &ReadOptions::default(), &mut |_| {
            ControlFlow::Continue(())
        })
        .unwrap_err();
        assert!(err.to_string().contains("order_id"), "{err}");
        let err = read_any(Format::NativeCsv, &b""[..], &ReadOptions::default(), &mut |_| ControlFlow::Continue(()))
            .unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
    }

    #[test]
    fn delimiters() {
        assert_eq!(detect_delimiter(b"a,b,c\n1;2"), b',');
        assert_eq!(detect_delimiter(b"a;b;c"), b';');
        assert_eq!(detect_delimiter(b"a\tb"), b'\t');
        assert_eq!(detect_delimiter(b"single"), b',');
    }
}
