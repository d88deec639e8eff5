//! Loyverse's back-office receipts export (Receipts → Export): `receipts-*.csv`, one row per
//! receipt, and `receipts-by-item-*.csv`, one row per receipt line. This module owns reading that
//! pair into orders; it never sends names (`Customer name`, `Cashier name`) anywhere.
//!
//! **Which file leads.** The reader streams `receipts-by-item` and joins `receipts` from the same
//! folder (the one named alike, else the only one). Every by-item row carries its receipt's number,
//! `Date`, `Receipt type`, `Status` and `Customer contacts`, so that file alone decides what is a
//! sale and gives the contents with real quantities (`Iced Latte` 2.000 → 320.00), which the
//! receipts file has only as text (`2 x Iced Latte, …`). The receipts file adds the receipt's
//! `Total collected`, the value the samples' README expects (after discounts, with taxes), so the
//! map taken from it is one small entry per receipt of the export. The other way round would hold
//! every line of the export in memory. Without the receipts file the value is Σ (`Net sales` +
//! `Taxes`) of the lines, the same number in a consistent export, and a note says so.
//!
//! **What is sent.** A receipt of type `Sale` that is not `Cancelled` and has a positive value.
//! A refund is its own receipt with its own number (`Receipt type`=`Refund`) and is skipped; it
//! never changes the sale it refunds, which may have been sent already. Loyverse marks no staff
//! sales, so `skip_staff` has nothing to act on.
//!
//! **Fields.** Order id: `Receipt number` (`1-1001`: POS number and sequence). Time: `Date`, local,
//! no seconds; day-first or month-first follows the account's locale and is decided by the
//! source's time formats (default `%d/%m/%Y %H:%M`), never guessed. Items: `SKU` (the item name
//! when blank), `Item` (+ ` (Variant)`), `Category`, `Quantity`, and a unit price of `Net sales` /
//! `Quantity` (after the line's discount). Customer: `Customer contacts` is free text holding an
//! email or a phone (`+63 917 555 0134`); see [`contacts`].

use super::companion::{self, Kind, Unread};
use super::csv_table::{order_not_taken, read_orders, Check, Row, Table};
use super::{Format, FormatError, Parsed, ReadOptions, Reject, Skip, Summary};
use crate::event::{pii, Amount, RawItem, RawOrder};
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::io::BufRead;
use std::ops::ControlFlow;

/// The `receipts-by-item` header (23 columns; some accounts have no `Dining option`).
const BY_ITEM_COLUMNS: [&str; 24] = [
    "Date",
    "Receipt number",
    "Receipt type",
    "Category",
    "SKU",
    "Item",
    "Item name",
    "Variant",
    "Modifiers applied",
    "Quantity",
    "Gross sales",
    "Discounts",
    "Net sales",
    "Cost of goods",
    "Gross profit",
    "Taxes",
    "Dining option",
    "POS",
    "Store",
    "Cashier name",
    "Customer name",
    "Customer contacts",
    "Comment",
    "Status",
];

pub(super) const RECEIPTS: Kind = Kind {
    what: "Loyverse receipts",
    primary: "receipts-by-item",
    companion: "receipts",
    matches: |name| name.contains("receipts") && !name.contains("receipts-by-item") && name.ends_with(".csv"),
};

/// Whether the file is the one this profile reads (`receipts-by-item*.csv`); the receipts file is
/// its companion.
pub(super) fn reads_file(file_name: &str) -> bool {
    file_name.to_ascii_lowercase().contains("receipts-by-item")
}

/// Where the by-item columns are.
struct Columns {
    date: usize,
    kind: usize,
    item: usize,
    quantity: usize,
    net: usize,
    sku: Option<usize>,
    variant: Option<usize>,
    category: Option<usize>,
    taxes: Option<usize>,
    contacts: Option<usize>,
    status: Option<usize>,
}

/// A receipt being read from consecutive by-item rows.
struct Receipt {
    order: RawOrder,
    /// Σ (`Net sales` + `Taxes`) of the lines: the value when the receipts file has none.
    lines_total: Decimal,
    not_sale: Option<String>,
    contacts: Option<String>,
}

/// What the receipts file says about one receipt.
#[derive(Debug)]
struct Totals {
    total: Option<Decimal>,
    not_sale: Option<String>,
    contacts: Option<String>,
}

pub(super) fn read(
    input: impl BufRead,
    options: &ReadOptions,
    sink: &mut dyn FnMut(Parsed) -> ControlFlow<()>,
) -> Result<Summary, FormatError> {
    let decimal = options.decimal_separator.unwrap_or(Format::Loyverse.default_decimal_separator());
    let mut table = Table::open(input, options.csv)?;
    let item_column = match (table.optional("Item"), table.optional("Item name")) {
        (None, Some(_)) => "Item name",
        _ => "Item",
    };
    let [number, date, kind, item, quantity, net] =
        table.required(["Receipt number", "Date", "Receipt type", item_column, "Quantity", "Net sales"])?;
    let columns = Columns {
        date,
        kind,
        item,
        quantity,
        net,
        sku: table.optional("SKU"),
        variant: table.optional("Variant"),
        category: table.optional("Category"),
        taxes: table.optional("Taxes"),
        contacts: table.optional("Customer contacts"),
        status: table.optional("Status"),
    };
    let mut summary = Summary { ignored_columns: table.unknown_columns(&BY_ITEM_COLUMNS), ..Summary::default() };
    let receipts = load_receipts(options, decimal, &mut summary.notes)?;
    let mut computed = 0usize;
    read_orders(
        &mut table,
        Check::EveryCell,
        |row| row.key(number),
        |order_id, row| Receipt {
            order: RawOrder { line: row.line, order_id, ..RawOrder::default() },
            lines_total: Decimal::ZERO,
            not_sale: None,
            contacts: None,
        },
        |receipt, row| add_line(receipt, row, &columns, decimal),
        |receipt, bad| {
            let totals = receipts.as_ref().map(|r| r.get(&receipt.order.order_id));
            let parsed = finish(receipt, bad, totals.flatten());
            if matches!((totals, &parsed), (Some(None), Parsed::Order(_))) {
                computed += 1;
            }
            parsed
        },
        sink,
    )?;
    if computed > 0 {
        summary
            .notes
            .push(format!("{computed} receipt(s) not in the receipts file: their values are the sums of their lines"));
    }
    Ok(summary)
}

/// Take one by-item row into its receipt.
fn add_line(receipt: &mut Receipt, row: &Row, columns: &Columns, decimal: char) -> Result<(), Reject> {
    if receipt.order.event_time.is_empty() {
        receipt.order.event_time = row.get(columns.date).to_string();
    }
    if receipt.contacts.is_none() {
        receipt.contacts = row.opt(columns.contacts).map(str::to_string);
    }
    let kind = row.get(columns.kind);
    if kind.is_empty() {
        return Err(row.reject(Some(columns.kind), "empty"));
    }
    if receipt.not_sale.is_none() {
        receipt.not_sale = not_a_sale(kind, row.opt(columns.status));
    }
    if receipt.not_sale.is_some() {
        // Amounts of a receipt that is not sent do not matter.
        return Ok(());
    }
    let quantity = row.amount(columns.quantity, decimal)?;
    let net = row.amount(columns.net, decimal)?;
    let taxes = row.amount_or_zero(columns.taxes, decimal)?;
    let price = row.unit_price(columns.quantity, net, quantity)?;
    receipt.lines_total += net + taxes;
    let name = row.get(columns.item);
    let content_name = match row.opt(columns.variant) {
        Some(variant) => format!("{name} ({variant})"),
        None => name.to_string(),
    };
    receipt.order.items.push(RawItem {
        line: row.line,
        content_id: Some(row.opt(columns.sku).unwrap_or(name).to_string()),
        content_name: Some(content_name),
        content_category: row.opt(columns.category).map(str::to_string),
        brand: None,
        price: Some(Amount::Exact(price.normalize())),
        quantity: Some(row.get(columns.quantity).into()),
    });
    Ok(())
}

/// Why a receipt of this type and status is not a sale, if it is not.
fn not_a_sale(kind: &str, status: Option<&str>) -> Option<String> {
    if kind.eq_ignore_ascii_case("refund") {
        return Some("refund receipt (`Receipt type` is `Refund`)".into());
    }
    if !kind.eq_ignore_ascii_case("sale") {
        return Some(format!("`Receipt type` is {}, not `Sale`", pii::shown(kind)));
    }
    if status.is_some_and(|s| s.eq_ignore_ascii_case("cancelled")) {
        return Some("cancelled (`Status` is `Cancelled`)".into());
    }
    None
}

/// What one receipt becomes, given what the receipts file says about it (when it was joined).
fn finish(receipt: Receipt, bad: Option<Reject>, totals: Option<&Totals>) -> Parsed {
    let Receipt { mut order, lines_total, not_sale, contacts } = receipt;
    let skip = |reason: String| Parsed::Skip(Skip { line: order.line, order_id: order.order_id.clone(), reason });
    if let Some(reason) = not_sale.or_else(|| totals.and_then(|t| t.not_sale.clone())) {
        return skip(reason);
    }
    if let Some(reject) = bad {
        return Parsed::Reject(order_not_taken(&order.order_id, reject));
    }
    let value = totals.and_then(|t| t.total).unwrap_or(lines_total);
    if value <= Decimal::ZERO {
        return skip(format!("not a sale: the receipt's value is {value}"));
    }
    let contacts = contacts.or_else(|| totals.and_then(|t| t.contacts.clone()));
    (order.emails, order.phones) = contacts.as_deref().map(split_contacts).unwrap_or_default();
    order.value = Some(Amount::Exact(value.normalize()));
    Parsed::Order(Box::new(order))
}

/// Split Loyverse's free-text `Customer contacts` into emails and phones: a word with `@` is an
/// email; what remains of a part (parts are separated by `,` `;` `|` or a line break) is a phone
/// when it is only digits, spaces and `+-().` with at least seven digits. Anything else is dropped.
fn split_contacts(text: &str) -> (Vec<String>, Vec<String>) {
    let (mut emails, mut phones) = (Vec::new(), Vec::new());
    for part in text.split([',', ';', '|', '\n']) {
        let (with_at, rest): (Vec<&str>, Vec<&str>) = part.split_whitespace().partition(|w| w.contains('@'));
        emails.extend(with_at.into_iter().map(str::to_string));
        let rest = rest.join(" ");
        let digits = rest.chars().filter(char::is_ascii_digit).count();
        let phone_like = rest.chars().all(|c| c.is_ascii_digit() || " +-().".contains(c));
        if digits >= 7 && phone_like {
            phones.push(rest);
        }
    }
    (emails, phones)
}

/// The receipts file of the same export as a map of receipt number → what it says, or `None`
/// (with a note) when there is none to join.
fn load_receipts(
    options: &ReadOptions,
    decimal: char,
    notes: &mut Vec<String>,
) -> Result<Option<HashMap<String, Totals>>, FormatError> {
    let without = "receipt values are the sums of their lines";
    let required = ["Receipt number", "Total collected"];
    let Some((shown, mut table, [number, total])) = companion::join(options, &RECEIPTS, required, without, notes)?
    else {
        return Ok(None);
    };
    let kind = table.optional("Receipt type");
    let status = table.optional("Status");
    let contacts = table.optional("Customer contacts");
    let mut receipts = HashMap::new();
    let mut unread = Unread::default();
    while let Some(next) = companion::next_row(&mut table, &shown, without, notes)? {
        let Some(row) = unread.count(next) else { continue };
        let total = unread.count(row.amount(total, decimal));
        let totals = Totals {
            total,
            not_sale: not_a_sale(row.opt(kind).unwrap_or("Sale"), row.opt(status)),
            contacts: row.opt(contacts).map(str::to_string),
        };
        receipts.entry(row.get(number).to_string()).or_insert(totals);
    }
    if let Some((count, first)) = unread.first() {
        notes.push(format!(
            "{shown}: {count} row(s) not read (first: line {}{}: {}); those receipts' values are the sums of their lines",
            first.line,
            first.field.map(|f| format!(", field `{f}`")).unwrap_or_default(),
            first.reason
        ));
    }
    Ok(Some(receipts))
}

#[cfg(test)]
mod tests {
    use super::super::profile_tests::{
        assert_companion_unreadable_from_its_end_is_joined_up_to_it, assert_only_rejected, assert_purchases,
        assert_skips, assert_variants_read_alike, fixture, folder_with, parse, run, variant, Change, Purchase, Source,
    };
    use super::super::Policy;
    use super::*;

    const BY_ITEM: &str = "loyverse-receipts-by-item.csv";
    const RECEIPTS_FILE: &str = "loyverse-receipts.csv";

    const SOURCE: Source = Source {
        format: Format::Loyverse,
        time_zone: "Asia/Manila",
        currency: "PHP",
        phone_region: Some("PH"),
        time_formats: None,
    };

    /// The README's table for `loyverse-receipts.csv` + `loyverse-receipts-by-item.csv`.
    const PURCHASES: [Purchase; 3] = [
        Purchase {
            order_id: "1-1001",
            event_time: 1741938120,
            value: "460.00",
            lines: 2,
            units: 3,
            email: true,
            phone: false,
            external_id: false,
        },
        Purchase {
            order_id: "1-1002",
            event_time: 1741939500,
            value: "150.00",
            lines: 1,
            units: 1,
            email: false,
            phone: false,
            external_id: false,
        },
        Purchase {
            order_id: "1-1003",
            event_time: 1741944000,
            value: "270.00",
            lines: 2,
            units: 2,
            email: false,
            phone: true,
            external_id: false,
        },
    ];

    /// (receipt, its first line in the by-item file, why it is skipped)
    const SKIPS: [(&str, u64, &str); 2] = [("1-1004", 7, "cancelled"), ("1-1005", 8, "refund receipt")];

    #[test]
    fn the_sample_export_gives_the_readme_purchases_and_skips() {
        let outcome = run(&SOURCE, &fixture(BY_ITEM), Policy::default());
        assert_purchases(&outcome, &PURCHASES);
        assert_skips(&outcome, &SKIPS);
        assert!(outcome.summary.ignored_columns.is_empty());
        assert!(outcome.summary.notes.is_empty(), "{:?}", outcome.summary);
    }

    #[test]
    fn contents_carry_sku_name_quantity_and_unit_price() {
        let outcome = run(&SOURCE, &fixture(BY_ITEM), Policy::default());
        let lines: Vec<_> = outcome.events[..]
            .iter()
            .flat_map(|e| &e.contents)
            .map(|c| {
                (
                    c.content_id.as_str(),
                    c.content_name.as_deref().unwrap_or(""),
                    c.quantity,
                    c.price.normalize().to_string(),
                )
            })
            .collect();
        assert_eq!(
            lines,
            vec![
                ("10021", "Iced Latte", 2, "160".to_string()),
                ("20007", "Banana Bread", 1, "140".to_string()),
                ("10003", "Americano", 1, "150".to_string()),
                ("10030", "Matcha Latte", 1, "162".to_string()),
                ("20001", "Croissant", 1, "108".to_string()),
            ]
        );
    }

    #[test]
    fn month_first_formats_fail_on_these_files() {
        let source = Source { time_formats: Some(&["%m/%d/%Y %H:%M", "%m/%d/%y %I:%M %p"]), ..SOURCE };
        let outcome = run(&source, &fixture(BY_ITEM), Policy::default());
        assert!(outcome.events.is_empty(), "{:?}", outcome.events);
        let failed: Vec<_> = outcome.build_errors.iter().map(|(id, e)| (id.as_str(), e.field)).collect();
        assert_eq!(failed, vec![("1-1001", "event_time"), ("1-1002", "event_time"), ("1-1003", "event_time")]);
    }

    #[test]
    fn the_receipts_file_is_a_companion_not_a_primary() {
        assert!(reads_file("receipts-by-item-2025-03-14-2025-03-14.csv"));
        assert!(reads_file(BY_ITEM));
        assert!(!reads_file("receipts-2025-03-14-2025-03-14.csv"));
        assert!(!reads_file(RECEIPTS_FILE));
    }

    #[test]
    fn a_companion_unreadable_from_some_line_on_is_joined_up_to_it_and_named_in_a_note() {
        assert_companion_unreadable_from_its_end_is_joined_up_to_it(
            &SOURCE,
            BY_ITEM,
            RECEIPTS_FILE,
            &PURCHASES,
            &SKIPS,
        );
    }

    #[test]
    fn generated_variants_read_the_same() {
        let cases: &[(&str, &[Change])] = &[
            ("columns reversed", &[Change::Reverse]),
            ("an unknown column", &[Change::ExtraColumn]),
            ("no `Dining option`", &[Change::Drop("Dining option")]),
            ("no `Taxes`", &[Change::Drop("Taxes")]),
            ("CRLF", &[Change::Crlf]),
            ("BOM and CRLF", &[Change::Bom, Change::Crlf]),
            ("no BOM", &[]),
        ];
        assert_variants_read_alike(&SOURCE, BY_ITEM, &[RECEIPTS_FILE], cases, &PURCHASES, &SKIPS);
    }

    #[test]
    fn without_the_receipts_file_values_are_line_sums_and_a_note_says_so() {
        let bytes = variant(BY_ITEM, &[]);
        let (_dir, path) = folder_with(BY_ITEM, &bytes, &[]);
        let outcome = run(&SOURCE, &path, Policy::default());
        assert_purchases(&outcome, &PURCHASES);
        assert_skips(&outcome, &SKIPS);
        assert_eq!(outcome.summary.notes.len(), 1);
        assert!(outcome.summary.notes[0].contains("sums of their lines"));
    }

    #[test]
    fn without_customer_contacts_orders_go_without_identifiers() {
        let bytes = variant(BY_ITEM, &[Change::Drop("Customer contacts")]);
        let receipts = variant(RECEIPTS_FILE, &[Change::Drop("Customer contacts")]);
        let (dir, path) = folder_with(BY_ITEM, &bytes, &[]);
        std::fs::write(dir.path().join(RECEIPTS_FILE), receipts).unwrap();
        let outcome = run(&SOURCE, &path, Policy::default());
        let anonymous = PURCHASES.map(|p| Purchase { email: false, phone: false, ..p });
        assert_purchases(&outcome, &anonymous);
    }

    #[test]
    fn a_malformed_amount_rejects_its_receipt_and_the_rest_flows() {
        let bytes = variant(BY_ITEM, &[Change::Cell { line: 5, column: "Net sales", value: "1G2.00" }]);
        let (_dir, path) = folder_with(BY_ITEM, &bytes, &[RECEIPTS_FILE]);
        let outcome = run(&SOURCE, &path, Policy::default());
        assert_only_rejected(&outcome, (5, "Net sales"), "1-1003", &["1-1001", "1-1002"], &SKIPS);
    }

    #[test]
    fn a_file_without_essential_columns_is_unreadable() {
        let bytes = variant(BY_ITEM, &[Change::Drop("Receipt number"), Change::Drop("Quantity")]);
        let err = parse(Format::Loyverse, &bytes).unwrap_err().to_string();
        assert!(err.contains("`Receipt number`, `Quantity`"), "{err}");
    }

    #[test]
    fn customer_contacts_are_split_into_emails_and_phones() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            ("maria.santos@example.com", &["maria.santos@example.com"], &[]),
            ("+63 917 555 0134", &[], &["+63 917 555 0134"]),
            ("(0917) 555-0134", &[], &["(0917) 555-0134"]),
            ("paolo@example.com, +63 917 555 0134", &["paolo@example.com"], &["+63 917 555 0134"]),
            ("paolo@example.com 0917 555 0134", &["paolo@example.com"], &["0917 555 0134"]),
            ("call after 5pm", &[], &[]),
            ("12345", &[], &[]),
            ("", &[], &[]),
        ];
        for (text, emails, phones) in cases {
            let (e, p) = split_contacts(text);
            assert_eq!(e, *emails, "{text:?}");
            assert_eq!(p, *phones, "{text:?}");
        }
    }
}
