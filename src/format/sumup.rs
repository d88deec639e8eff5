//! SumUp's sales report CSV with German UI headers (`Datum,Typ,Transaktionsnummer,…`), one row per
//! item line. This module owns reading it into orders.
//!
//! **Orders.** Consecutive rows with the same `Transaktionsnummer` form one transaction, whose
//! number is the order id. Sale rows (`Typ`=`Verkauf`, or `Sale`) give the contents: `Sku` (the
//! item's `Beschreibung` when blank, as SumUp items often have no SKU), `Beschreibung`, `Category`,
//! `Menge`, and a unit price of `Preis (brutto)` / `Menge`. The value is Σ `Preis (brutto)` (the line
//! totals after `Rabatt`); the currency is `Währung`. The time is the first sale row's `Datum`
//! (`14.03.2025, 15:42`, local, read with the source's time formats, default `%d.%m.%Y, %H:%M`).
//!
//! **Refunds.** A refund is a row with `Typ`=`Rückerstattung` (`Refund` before 2026-02) carrying the
//! sale's `Transaktionsnummer` and a negative price, anywhere later in the report. So that a sale is
//! decided once and correctly, the reader first reads the file at `ReadOptions::path` once to index
//! its refund rows (a map of transaction number → refunded amount, one entry per refunded
//! transaction), then streams the report. A sale whose refunds cancel it is skipped as fully
//! refunded; a partly refunded one is sent with the sale's value (`Policy::partial_refunds` =
//! `Gross`) or the value less the refunds (`Net`). The refund rows themselves are skipped. Without
//! a path only refund rows right after their sale's rows are netted, and a note says so.
//!
//! **Customer.** The report has no customer data. `Konto` is the merchant's own login email: it is
//! never read, so it can never become `user.email`. No staff marker exists, so `skip_staff` has
//! nothing to act on.

use super::companion;
use super::csv_table::{order_not_taken, read_orders, Check, Row, Table};
use super::{Format, FormatError, Parsed, PartialRefunds, Policy, ReadOptions, Reject, Skip, Summary};
use crate::event::{pii, Amount, RawItem, RawOrder};
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::io::BufRead;
use std::ops::ControlFlow;

/// The sales report header, German UI (16 columns).
const COLUMNS: [&str; 16] = [
    "Datum",
    "Typ",
    "Transaktionsnummer",
    "Zahlungsmethode",
    "Menge",
    "Beschreibung",
    "Category",
    "Sku",
    "Währung",
    "Preis vor Rabatt",
    "Rabatt",
    "Preis (brutto)",
    "Preis (netto)",
    "Steuer",
    "Steuersatz",
    "Konto",
];

const REQUIRED: [&str; 6] = ["Transaktionsnummer", "Datum", "Typ", "Menge", "Beschreibung", "Preis (brutto)"];

/// Where the columns are.
struct Columns {
    date: usize,
    kind: usize,
    quantity: usize,
    description: usize,
    gross: usize,
    sku: Option<usize>,
    category: Option<usize>,
    currency: Option<usize>,
}

/// What a row's `Typ` says.
#[derive(Debug, PartialEq, Eq)]
enum Kind<'a> {
    Sale,
    Refund,
    Other(&'a str),
}

fn kind(typ: &str) -> Kind<'_> {
    match typ {
        "Verkauf" | "Sale" => Kind::Sale,
        "Rückerstattung" | "Refund" => Kind::Refund,
        other => Kind::Other(other),
    }
}

/// A transaction being read from consecutive rows.
struct Transaction {
    order: RawOrder,
    /// Σ `Preis (brutto)` of the sale rows.
    value: Decimal,
    sales: usize,
    refund_rows: usize,
    /// Σ `Preis (brutto)` of the refund rows among these rows (used when there is no index).
    refunded_here: Decimal,
    other: Option<String>,
}

/// Refunded amount (negative) per transaction number, or the reject of an unreadable refund row.
type Refunds = HashMap<String, Result<Decimal, Reject>>;

pub(super) fn read(
    input: impl BufRead,
    options: &ReadOptions,
    sink: &mut dyn FnMut(Parsed) -> ControlFlow<()>,
) -> Result<Summary, FormatError> {
    let decimal = options.decimal_separator.unwrap_or(Format::Sumup.default_decimal_separator());
    let mut table = Table::open(input, options.csv)?;
    let [number, date, kind, quantity, description, gross] = table.required(REQUIRED)?;
    let columns = Columns {
        date,
        kind,
        quantity,
        description,
        gross,
        sku: table.optional("Sku"),
        category: table.optional("Category"),
        currency: table.optional("Währung"),
    };
    let mut summary = Summary { ignored_columns: table.unknown_columns(&COLUMNS), ..Summary::default() };
    let refunds = match &options.path {
        Some(path) => Some(index_refunds(path, options, decimal)?),
        None => {
            summary
                .notes
                .push("the file's path is not known, so only refund rows right after their sale were netted".into());
            None
        }
    };
    read_orders(
        &mut table,
        Check::EveryCell,
        |row| row.key(number),
        |order_id, row| Transaction {
            order: RawOrder { line: row.line, order_id, ..RawOrder::default() },
            value: Decimal::ZERO,
            sales: 0,
            refund_rows: 0,
            refunded_here: Decimal::ZERO,
            other: None,
        },
        |tx, row| add_row(tx, row, &columns, decimal, refunds.is_none()),
        |tx, bad| {
            let refunded = match &refunds {
                Some(index) => index.get(&tx.order.order_id).cloned().unwrap_or(Ok(Decimal::ZERO)),
                None => Ok(tx.refunded_here),
            };
            finish(tx, bad, refunded, &options.policy)
        },
        sink,
    )?;
    Ok(summary)
}

/// Take one row into its transaction; refund rows are summed here only when there is no index.
fn add_row(
    tx: &mut Transaction,
    row: &Row,
    columns: &Columns,
    decimal: char,
    net_refunds_here: bool,
) -> Result<(), Reject> {
    match kind(row.get(columns.kind)) {
        Kind::Sale => {}
        Kind::Refund => {
            tx.refund_rows += 1;
            if net_refunds_here {
                tx.refunded_here -= row.amount(columns.gross, decimal)?.abs();
            }
            return Ok(());
        }
        Kind::Other(typ) => {
            tx.other.get_or_insert_with(|| format!("`Typ` is {}, not a sale", pii::shown(typ)));
            return Ok(());
        }
    }
    tx.sales += 1;
    if tx.order.event_time.is_empty() {
        tx.order.event_time = row.get(columns.date).to_string();
    }
    if tx.order.currency.is_none() {
        tx.order.currency = row.opt(columns.currency).map(str::to_string);
    }
    let quantity = row.amount(columns.quantity, decimal)?;
    let gross = row.amount(columns.gross, decimal)?;
    let price = row.unit_price(columns.quantity, gross, quantity)?;
    tx.value += gross;
    let description = row.get(columns.description);
    tx.order.items.push(RawItem {
        line: row.line,
        content_id: Some(row.opt(columns.sku).unwrap_or(description).to_string()),
        content_name: Some(description.to_string()).filter(|d| !d.is_empty()),
        content_category: row.opt(columns.category).map(str::to_string),
        brand: None,
        price: Some(Amount::Exact(price.normalize())),
        quantity: Some(row.get(columns.quantity).into()),
    });
    Ok(())
}

/// What one transaction becomes, given the refunds against it (a negative amount, or zero).
fn finish(tx: Transaction, bad: Option<Reject>, refunded: Result<Decimal, Reject>, policy: &Policy) -> Parsed {
    let Transaction { mut order, value, sales, refund_rows, other, .. } = tx;
    let skip = |reason: String| Parsed::Skip(Skip { line: order.line, order_id: order.order_id.clone(), reason });
    if let Some(reason) = other {
        return skip(reason);
    }
    if let Some(reject) = bad {
        return Parsed::Reject(order_not_taken(&order.order_id, reject));
    }
    if sales == 0 {
        return skip(format!(
            "refund ({refund_rows} `Rückerstattung` row(s)), netted against its sale when that is in this file"
        ));
    }
    let refunded = match refunded {
        Ok(refunded) => refunded,
        Err(reject) => return Parsed::Reject(order_not_taken(&order.order_id, reject)),
    };
    if value <= Decimal::ZERO {
        return skip(format!("not a sale: the transaction's value is {value}"));
    }
    let net = value + refunded;
    if net <= Decimal::ZERO {
        return skip(format!("fully refunded ({value} sold, {refunded} refunded)"));
    }
    let sent = match policy.partial_refunds {
        PartialRefunds::Gross => value,
        PartialRefunds::Net => net,
    };
    order.value = Some(Amount::Exact(sent.normalize()));
    Parsed::Order(Box::new(order))
}

/// A first pass over the report: the refunded amount of every transaction with refund rows.
fn index_refunds(path: &std::path::Path, options: &ReadOptions, decimal: char) -> Result<Refunds, FormatError> {
    let mut table = companion::open(path, options)?;
    let [number, _, kind_at, _, _, gross] = table.required(REQUIRED)?;
    let mut refunds = Refunds::new();
    while let Some(next) = table.next_row()? {
        // Bad records are the streaming pass's to report.
        let Ok(row) = next else { continue };
        if kind(row.get(kind_at)) != Kind::Refund || row.get(number).is_empty() {
            continue;
        }
        let refund = row.amount(gross, decimal).map(|a| -a.abs());
        let entry = refunds.entry(row.get(number).to_string()).or_insert(Ok(Decimal::ZERO));
        *entry = match (entry.clone(), refund) {
            (Err(first), _) => Err(first),
            (Ok(_), Err(reject)) => Err(reject),
            (Ok(sum), Ok(refund)) => Ok(sum + refund),
        };
    }
    Ok(refunds)
}

#[cfg(test)]
mod tests {
    use super::super::profile_tests::{
        assert_only_rejected, assert_purchases, assert_skips, assert_variants_read_alike, fixture, folder_with, parse,
        run, run_with, variant, Change, Purchase, Source,
    };
    use super::*;

    const REPORT: &str = "sumup-sales-report-de.csv";

    /// No currency configured: it comes from `Währung`.
    const SOURCE: Source = Source {
        format: Format::Sumup,
        time_zone: "Europe/Berlin",
        currency: "",
        phone_region: Some("DE"),
        time_formats: None,
    };

    /// The README's table for `sumup-sales-report-de.csv`.
    const PURCHASES: [Purchase; 2] = [
        Purchase {
            order_id: "TDXK4P2Q9A",
            event_time: 1741963320,
            value: "10.50",
            lines: 2,
            units: 3,
            email: false,
            phone: false,
            external_id: false,
        },
        Purchase {
            order_id: "TDXK4P2S7C",
            event_time: 1741969200,
            value: "4.05",
            lines: 1,
            units: 1,
            email: false,
            phone: false,
            external_id: false,
        },
    ];

    const SKIPS: [(&str, u64, &str); 2] = [("TDXK4P2R1B", 4, "fully refunded"), ("TDXK4P2R1B", 6, "refund")];

    #[test]
    fn the_sample_report_gives_the_readme_purchases_and_skips() {
        let outcome = run(&SOURCE, &fixture(REPORT), Policy::default());
        assert_purchases(&outcome, &PURCHASES);
        assert_skips(&outcome, &SKIPS);
        assert!(outcome.summary.ignored_columns.is_empty());
        assert!(outcome.summary.notes.is_empty(), "{:?}", outcome.summary);
        for event in &outcome.events {
            assert_eq!(event.currency.code(), "EUR");
        }
    }

    #[test]
    fn the_merchant_login_is_never_a_customer_email() {
        // Every row's `Konto` is an email address; no event may carry any email.
        let outcome = run(&SOURCE, &fixture(REPORT), Policy::default());
        assert!(!outcome.events.is_empty());
        assert!(outcome.events.iter().all(|e| e.user.is_empty()));
    }

    #[test]
    fn items_use_the_description_when_sku_is_blank() {
        let outcome = run(&SOURCE, &fixture(REPORT), Policy::default());
        let lines: Vec<_> = outcome
            .events
            .iter()
            .flat_map(|e| &e.contents)
            .map(|c| {
                (
                    c.content_id.as_str(),
                    c.content_category.as_deref().unwrap_or(""),
                    c.quantity,
                    c.price.normalize().to_string(),
                )
            })
            .collect();
        assert_eq!(
            lines,
            vec![
                ("Cappuccino", "Heißgetränke", 2, "3.8".to_string()),
                ("Croissant", "Gebäck", 1, "2.9".to_string()),
                ("Apfelkuchen", "Gebäck", 1, "4.05".to_string()),
            ]
        );
    }

    #[test]
    fn a_partial_refund_is_valued_by_the_policy() {
        let bytes = variant(REPORT, &[Change::Cell { line: 6, column: "Preis (brutto)", value: "-1.00" }]);
        let (_dir, path) = folder_with(REPORT, &bytes, &[]);
        let partly = |value| Purchase {
            order_id: "TDXK4P2R1B",
            event_time: 1741964700,
            value,
            lines: 1,
            units: 1,
            email: false,
            phone: false,
            external_id: false,
        };
        let cases = [(PartialRefunds::Gross, "2.40"), (PartialRefunds::Net, "1.40")];
        for (partial_refunds, value) in cases {
            let policy = Policy { partial_refunds, ..Policy::default() };
            let outcome = run(&SOURCE, &path, policy);
            assert_purchases(&outcome, &[PURCHASES[0].clone(), partly(value), PURCHASES[1].clone()]);
            assert_skips(&outcome, &[("TDXK4P2R1B", 6, "refund")]);
        }
    }

    #[test]
    fn generated_variants_read_the_same() {
        let cases: &[(&str, &[Change])] = &[
            ("columns reversed", &[Change::Reverse]),
            ("an unknown column", &[Change::ExtraColumn]),
            ("no `Sku`", &[Change::Drop("Sku")]),
            ("no `Konto`", &[Change::Drop("Konto")]),
            ("CRLF", &[Change::Crlf]),
            ("BOM", &[Change::Bom]),
        ];
        assert_variants_read_alike(&SOURCE, REPORT, &[], cases, &PURCHASES, &SKIPS);
    }

    #[test]
    fn a_malformed_amount_rejects_its_transaction_and_the_rest_flows() {
        let bytes = variant(REPORT, &[Change::Cell { line: 5, column: "Preis (brutto)", value: "4,05,1" }]);
        let (_dir, path) = folder_with(REPORT, &bytes, &[]);
        let outcome = run(&SOURCE, &path, Policy::default());
        assert_only_rejected(&outcome, (5, "Preis (brutto)"), "TDXK4P2S7C", &["TDXK4P2Q9A"], &SKIPS);
    }

    #[test]
    fn without_a_path_only_adjacent_refunds_net() {
        let adjacent = "Datum,Typ,Transaktionsnummer,Menge,Beschreibung,Preis (brutto)\n\
                        \"14.03.2025, 16:05\",Verkauf,T1,1,Espresso,2.40\n\
                        \"14.03.2025, 16:20\",Rückerstattung,T1,1,,-2.40\n\
                        \"14.03.2025, 16:30\",Verkauf,T2,1,Espresso,2.40\n\
                        \"14.03.2025, 16:40\",Verkauf,T3,1,Espresso,2.40\n\
                        \"14.03.2025, 16:50\",Refund,T2,1,,-2.40\n";
        let source = Source { currency: "EUR", ..SOURCE };
        let outcome = run_with(&source, adjacent.as_bytes(), &ReadOptions::default());
        let ids: Vec<_> = outcome.events.iter().map(|e| e.order_id.as_str()).collect();
        assert_eq!(ids, vec!["T2", "T3"]);
        assert_skips(&outcome, &[("T1", 2, "fully refunded"), ("T2", 6, "refund")]);
        assert_eq!(outcome.summary.notes.len(), 1);
    }

    #[test]
    fn a_report_without_essential_columns_is_unreadable() {
        let bytes = variant(REPORT, &[Change::Drop("Transaktionsnummer")]);
        let err = parse(Format::Sumup, &bytes).unwrap_err().to_string();
        assert!(err.contains("missing required column `Transaktionsnummer`"), "{err}");
    }
}
