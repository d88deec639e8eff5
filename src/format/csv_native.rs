//! The agent's native CSV: a header of our field names, one row per line item, consecutive rows of
//! the same `order_id` forming one order.

use super::csv_table::{order_not_taken, read_orders, Check, Conventions, Names, Row, Table};
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

pub(super) fn read(
    input: impl BufRead,
    options: &ReadOptions,
    sink: &mut dyn FnMut(Parsed) -> ControlFlow<()>,
) -> Result<Summary, FormatError> {
    let conventions = Conventions { names: Names::Lowercased, ..Conventions::default() };
    let mut table = Table::open_as(input, options.csv, conventions)?;
    // Our field name → the column that holds it in this export (itself unless mapped).
    let column_of = |field: &str| options.columns.get(field).map_or(field.to_string(), |c| c.trim().to_lowercase());
    let export_names: Vec<String> = COLUMNS.iter().map(|f| column_of(f)).collect();
    let names = table.names();
    let known = |name: &String| export_names.contains(name);
    if let Some((_, twice)) = names.iter().enumerate().find(|(i, name)| known(name) && names[..*i].contains(name)) {
        return Err(FormatError::Unreadable { line: 1, reason: format!("column `{twice}` appears twice") });
    }
    let summary =
        Summary { ignored_columns: names.iter().filter(|n| !known(n)).cloned().collect(), ..Summary::default() };
    let [order_id, _] = table.required([export_names[0].as_str(), export_names[1].as_str()])?;
    let columns: [Option<usize>; 18] = std::array::from_fn(|i| table.optional(&export_names[i]));
    // Only the columns this format reads must be UTF-8, the first bad one (in `COLUMNS` order) named.
    let cells: Vec<usize> = columns.iter().flatten().copied().collect();
    let consent_column = columns[17].is_some();
    read_orders(
        &mut table,
        Check::Cells(&cells),
        |row| row.key(order_id),
        |order_id, row| RawOrder { line: row.line, order_id, ..RawOrder::default() },
        |order, row| {
            merge(order, row, &columns);
            Ok(())
        },
        |order, bad| finish(order, bad, consent_column),
        sink,
    )?;
    Ok(summary)
}

/// What an order becomes: rejected for its first bad row, else sent (without consent when the file
/// has a consent column but no value for the order).
fn finish(mut order: RawOrder, bad: Option<Reject>, consent_column: bool) -> Parsed {
    if let Some(reject) = bad {
        return Parsed::Reject(order_not_taken(&order.order_id, reject));
    }
    if consent_column && order.consent.is_none() {
        order.consent = Some(false);
    }
    Parsed::Order(Box::new(order))
}

/// Take one row into its order: order-level values from the first row that has them, an item when
/// the row has one. Cells are taken as written (untrimmed); blank ones are left out.
fn merge(order: &mut RawOrder, row: &Row, columns: &[Option<usize>; 18]) {
    let mut item = RawItem { line: row.line, ..RawItem::default() };
    let mut has_item = false;
    for (col, at) in COLS.iter().zip(columns) {
        let cell = at.and_then(|at| row.cell(at).ok()).filter(|cell| !crate::event::trim(cell).is_empty());
        // A cell is copied only where it is kept.
        let Some(value) = cell else { continue };
        let first = |slot: &mut Option<String>| {
            if slot.is_none() {
                *slot = Some(value.to_string());
            }
        };
        let owned = || Some(value.to_string());
        match col {
            Col::OrderId => {}
            Col::EventTime if order.event_time.is_empty() => order.event_time = value.to_string(),
            Col::EventTime => {}
            Col::Event => first(&mut order.event),
            Col::Email => order.emails.push(value.to_string()),
            Col::Phone => order.phones.push(value.to_string()),
            Col::ExternalId => order.external_ids.push(value.to_string()),
            Col::Currency => first(&mut order.currency),
            Col::Value => {
                if order.value.is_none() {
                    order.value = Some(value.into());
                }
            }
            Col::ShopId => first(&mut order.shop_id),
            Col::TillId => first(&mut order.till_id),
            Col::Description => first(&mut order.description),
            Col::ContentId => (item.content_id, has_item) = (owned(), true),
            Col::ContentName => (item.content_name, has_item) = (owned(), true),
            Col::ContentCategory => item.content_category = owned(),
            Col::Brand => item.brand = owned(),
            Col::Price => (item.price, has_item) = (Some(value.into()), true),
            Col::Quantity => (item.quantity, has_item) = (Some(value.into()), true),
            // Order-level, from the first row that has it (a file with a consent column but no
            // value for an order means no consent: see `finish`).
            Col::Consent => {
                if order.consent.is_none() {
                    order.consent = Some(super::consent_given(value));
                }
            }
        }
    }
    if has_item {
        order.items.push(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Amount;
    use crate::format::profile_tests::{orders, parse, rejects};
    use crate::format::Format;

    #[test]
    fn consecutive_rows_group_into_one_order() {
        let text = "\u{feff}order_id,event_time,email,content_id,price,quantity\n\
                    A1,2025-03-14 15:42:10,a@example.com,SOCK,8.00,2\n\
                    A1,,,DRESS,30.00,1\n\
                    A2,2025-03-14 16:00:00,,PIN,5.00,1\n";
        let parsed = parse(Format::NativeCsv, text).unwrap();
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
        let parsed = parse(Format::NativeCsv, text).unwrap();
        assert_eq!(orders(&parsed)[0].value.as_ref().and_then(Amount::as_text), Some("10,50"));
    }

    #[test]
    fn a_bad_row_rejects_its_order_and_the_rest_flows() {
        let text = "order_id,event_time,content_id,price\n\
                    A1,1741981330,X,1.00\n\
                    A1,1741981330,Y\n\
                    A2,1741981330,Z,2.00\n\
                    ,1741981330,W,3.00\n\
                    A3,1741981330,V,4.00\n";
        let parsed = parse(Format::NativeCsv, text).unwrap();
        let ids: Vec<_> = orders(&parsed).iter().map(|o| o.order_id.clone()).collect();
        assert_eq!(ids, vec!["A2", "A3"]);
        let r = rejects(&parsed);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].line, 3);
        assert!(r[0].reason.contains("order `A1`"), "{}", r[0].reason);
        assert_eq!(r[1].line, 5);
    }

    #[test]
    fn rows_keep_their_own_lines_after_blank_lines_and_crlf() {
        let text = "order_id,event_time,content_id,price\r\n\r\nA1,1741981330,X,1.00\r\n\r\n\r\nA2,1741981330,Y\r\n";
        let parsed = parse(Format::NativeCsv, text).unwrap();
        assert_eq!(orders(&parsed)[0].line, 3);
        assert_eq!(rejects(&parsed)[0].line, 6);
    }

    #[test]
    fn invalid_utf8_names_the_field() {
        let mut bytes = b"order_id,event_time,content_name,price\nA1,1741981330,Caf".to_vec();
        bytes.extend_from_slice(&[0xE9]);
        bytes.extend_from_slice(b",1.00\n");
        let out = parse(Format::NativeCsv, &bytes).unwrap();
        match &out[0] {
            Parsed::Reject(r) => assert_eq!(r.field.as_deref(), Some("content_name")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn missing_required_columns_make_the_file_unreadable() {
        let err = parse(Format::NativeCsv, "id,time\n1,2\n").unwrap_err();
        assert!(err.to_string().contains("order_id"), "{err}");
        let err = parse(Format::NativeCsv, "").unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
    }
}
