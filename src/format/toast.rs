//! Toast's nightly data export: `ItemSelectionDetails.csv`, one row per item selection, read as
//! the primary file, joined with `CheckDetails.csv` from the same folder for the customer. This
//! module owns reading that pair into orders; it never reads names (`Customer`, `Server`).
//!
//! **Orders.** Rows are grouped by `Order Id` (consecutive rows), which is also the order id sent:
//! it is Toast's unique id (`1300000020250314001`), while `Order #` (`101`) is a short counter that
//! starts again, so event ids made from it would collide across days. The time is `Order Date`
//! (`3/14/25 6:10 PM`, local, read with the source's time formats, default `%m/%d/%y %I:%M %p`),
//! never `Sent Date` (the kitchen fire time). Rows with `Void?`=`true` and deferred revenue
//! (`Deferred`=`true`, gift-card sales) are left out of their order. The value is Σ (`Net Price` +
//! `Tax`) of the remaining rows, which is CheckDetails' `Total` (tips are in neither file). Items:
//! `SKU` (or `Item Id` when blank), `Menu Item`, `Menu Group`, `Qty`, and a unit price of `Net Price`
//! / `Qty`.
//!
//! **Not sent** (skipped with the reason): an order whose rows are all voided or deferred, an order
//! of zero value (a comp: `Discount` = `Gross Price`), and, with `skip_staff`, an order whose check
//! has a `Reason of Discount` naming staff or employees.
//!
//! **Customer.** CheckDetails is the only Toast file with email and phone. The reader loads from it
//! a map of `Check Id` → `Customer Email`, `Customer Phone`, `Customer Id` (sent as external id) and
//! `Reason of Discount` (a business day's checks), and attaches the customers of every check of an
//! order. The CheckDetails file of the same export is the one named
//! alike (`x-ItemSelectionDetails.csv` → `x-CheckDetails.csv`), else the only one in the folder.
//! Without it, orders are sent without customer data and the summary says so.

use super::companion::{self, Kind, Unread};
use super::csv_table::{self, order_not_taken, read_orders, Row, Table};
use super::{Format, FormatError, Parsed, Policy, ReadOptions, Reject, Skip, Summary};
use crate::event::{Amount, RawItem, RawOrder};
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::io::BufRead;
use std::ops::ControlFlow;

/// The `ItemSelectionDetails` header (32 columns).
const ITEM_COLUMNS: [&str; 32] = [
    "Location",
    "Order Id",
    "Order #",
    "Sent Date",
    "Order Date",
    "Check Id",
    "Server",
    "Table",
    "Dining Area",
    "Service",
    "Dining Option",
    "Item Selection Id",
    "Item Id",
    "Master Id",
    "SKU",
    "PLU",
    "Menu Item",
    "Menu Subgroup(s)",
    "Menu Group",
    "Menu",
    "Sales Category",
    "Gross Price",
    "Discount",
    "Net Price",
    "Qty",
    "Tax",
    "Void?",
    "Deferred",
    "Tax Exempt",
    "Tax Inclusion Option",
    "Dining Option Tax",
    "Tab Name",
];

pub(super) const CHECK_DETAILS: Kind = Kind {
    what: "CheckDetails",
    primary: "ItemSelectionDetails",
    companion: "CheckDetails",
    matches: |name| name.contains("checkdetails") && name.ends_with(".csv"),
};

/// Whether the file is the one this profile reads (`ItemSelectionDetails*.csv`); CheckDetails is
/// its companion, and the export's other files are not read.
pub(super) fn reads_file(file_name: &str) -> bool {
    file_name.to_ascii_lowercase().contains("itemselectiondetails")
}

/// Where the item-selection columns are.
struct Columns {
    date: usize,
    item_id: usize,
    net: usize,
    quantity: usize,
    tax: usize,
    void: usize,
    check: Option<usize>,
    sku: Option<usize>,
    name: Option<usize>,
    group: Option<usize>,
    deferred: Option<usize>,
}

/// An order being read from consecutive rows.
struct Order {
    order: RawOrder,
    /// Σ (`Net Price` + `Tax`) of the rows that count.
    value: Decimal,
    checks: Vec<String>,
}

/// The CheckDetails file joined: its name (for notes) and what it says per `Check Id`.
struct CheckDetails {
    file: String,
    checks: HashMap<String, Check>,
}

/// What CheckDetails says about one check.
#[derive(Debug)]
struct Check {
    email: Option<String>,
    phone: Option<String>,
    customer_id: Option<String>,
    discount_reason: Option<String>,
}

pub(super) fn read(
    input: impl BufRead,
    options: &ReadOptions,
    sink: &mut dyn FnMut(Parsed) -> ControlFlow<()>,
) -> Result<Summary, FormatError> {
    let decimal = options.decimal_separator.unwrap_or(Format::Toast.default_decimal_separator());
    let mut table = Table::open(input, options.csv)?;
    let [order_id, date, item_id, net, quantity, tax, void] =
        table.required(["Order Id", "Order Date", "Item Id", "Net Price", "Qty", "Tax", "Void?"])?;
    let columns = Columns {
        date,
        item_id,
        net,
        quantity,
        tax,
        void,
        check: table.optional("Check Id"),
        sku: table.optional("SKU"),
        name: table.optional("Menu Item"),
        group: table.optional("Menu Group"),
        deferred: table.optional("Deferred"),
    };
    let mut summary = Summary { ignored_columns: table.unknown_columns(&ITEM_COLUMNS), ..Summary::default() };
    if columns.check.is_none() {
        summary.notes.push("no `Check Id` column: orders are sent without customer data".into());
    }
    let checks = match columns.check {
        Some(_) => load_checks(options, &mut summary.notes)?,
        None => None,
    };
    let mut unmatched = 0usize;
    read_orders(
        &mut table,
        csv_table::Check::EveryCell,
        |row| row.key(order_id),
        |order_id, row| Order {
            order: RawOrder { line: row.line, order_id, ..RawOrder::default() },
            value: Decimal::ZERO,
            checks: Vec::new(),
        },
        |order, row| add_line(order, row, &columns, decimal),
        |order, bad| {
            let customers = checks.as_ref().map(|details| {
                let found: Vec<&Check> = order.checks.iter().filter_map(|c| details.checks.get(c)).collect();
                unmatched += order.checks.len() - found.len();
                found
            });
            finish(order, bad, &customers.unwrap_or_default(), &options.policy)
        },
        sink,
    )?;
    if let (Some(details), 1..) = (&checks, unmatched) {
        summary
            .notes
            .push(format!("{unmatched} check(s) not in {}: their orders are sent without customer data", details.file));
    }
    Ok(summary)
}

/// Take one item-selection row into its order.
fn add_line(order: &mut Order, row: &Row, columns: &Columns, decimal: char) -> Result<(), Reject> {
    if order.order.event_time.is_empty() {
        order.order.event_time = row.get(columns.date).to_string();
    }
    if let Some(check) = row.opt(columns.check) {
        if !order.checks.iter().any(|c| c == check) {
            order.checks.push(check.to_string());
        }
    }
    let void = flag(row, Some(columns.void))?;
    let deferred = flag(row, columns.deferred)?;
    if void || deferred {
        return Ok(());
    }
    let net = row.amount(columns.net, decimal)?;
    let tax = row.amount(columns.tax, decimal)?;
    let quantity = row.amount(columns.quantity, decimal)?;
    let price = row.unit_price(columns.quantity, net, quantity)?;
    order.value += net + tax;
    let item_id = row.get(columns.item_id);
    order.order.items.push(RawItem {
        line: row.line,
        content_id: Some(row.opt(columns.sku).unwrap_or(item_id).to_string()),
        content_name: row.opt(columns.name).map(str::to_string),
        content_category: row.opt(columns.group).map(str::to_string),
        brand: None,
        price: Some(Amount::Exact(price.normalize())),
        quantity: Some(row.get(columns.quantity).into()),
    });
    Ok(())
}

/// A `true`/`false` column (blank or absent: false).
fn flag(row: &Row, at: Option<usize>) -> Result<bool, Reject> {
    match row.opt(at) {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(_) => Err(row.reject(at, "neither true nor false")),
    }
}

/// What one order becomes, given the CheckDetails rows of its checks.
fn finish(order: Order, bad: Option<Reject>, checks: &[&Check], policy: &Policy) -> Parsed {
    let Order { mut order, value, .. } = order;
    if let Some(reject) = bad {
        return Parsed::Reject(order_not_taken(&order.order_id, reject));
    }
    let skip = |reason: String| Parsed::Skip(Skip { line: order.line, order_id: order.order_id.clone(), reason });
    if order.items.is_empty() {
        return skip("every item is voided (`Void?`) or deferred (`Deferred`)".into());
    }
    let staff = checks.iter().filter_map(|c| c.discount_reason.as_deref()).any(is_staff);
    if policy.skip_staff && staff {
        return skip("staff sale (`Reason of Discount` names staff or an employee)".to_string());
    }
    if value.is_zero() {
        return skip("zero value (comp)".into());
    }
    if value < Decimal::ZERO {
        return skip(format!("not a sale: the order's value is {value}"));
    }
    for check in checks {
        order.emails.extend(check.email.clone());
        order.phones.extend(check.phone.clone());
        order.external_ids.extend(check.customer_id.clone());
    }
    order.value = Some(Amount::Exact(value.normalize()));
    Parsed::Order(Box::new(order))
}

/// Whether a discount reason marks a staff sale (`Staff Meal`, `Employee 50%`).
fn is_staff(reason: &str) -> bool {
    let reason = reason.to_lowercase();
    reason.contains("staff") || reason.contains("employee")
}

/// The CheckDetails file of the same export, as a map of `Check Id` → the four columns the profile
/// uses; `None` (with a note) when there is none to join.
fn load_checks(options: &ReadOptions, notes: &mut Vec<String>) -> Result<Option<CheckDetails>, FormatError> {
    let without = "orders are sent without customer data";
    let Some((shown, mut table, [check])) = companion::join(options, &CHECK_DETAILS, ["Check Id"], without, notes)?
    else {
        return Ok(None);
    };
    let email = table.optional("Customer Email");
    let phone = table.optional("Customer Phone");
    let customer_id = table.optional("Customer Id");
    let discount_reason = table.optional("Reason of Discount");
    let mut checks = HashMap::new();
    let mut unread = Unread::default();
    while let Some(next) = companion::next_row(&mut table, &shown, without, notes)? {
        let Some(row) = unread.count(next) else { continue };
        if row.get(check).is_empty() {
            continue;
        }
        let found = Check {
            email: row.opt(email).map(str::to_string),
            phone: row.opt(phone).map(str::to_string),
            customer_id: row.opt(customer_id).map(str::to_string),
            discount_reason: row.opt(discount_reason).map(str::to_string),
        };
        checks.entry(row.get(check).to_string()).or_insert(found);
    }
    if let Some((count, first)) = unread.first() {
        notes.push(format!(
            "{shown}: {count} row(s) not read (first: line {}: {}); {without} for their checks",
            first.line, first.reason
        ));
    }
    Ok(Some(CheckDetails { file: shown, checks }))
}

#[cfg(test)]
mod tests {
    use super::super::profile_tests::{
        assert_companion_unreadable_from_its_end_is_joined_up_to_it, assert_only_rejected, assert_purchases,
        assert_skips, assert_variants_read_alike, fixture, folder_with, parse, run, variant, Change, Purchase, Source,
    };
    use super::*;

    const ITEMS: &str = "toast-ItemSelectionDetails.csv";
    const CHECKS_FILE: &str = "toast-CheckDetails.csv";

    const SOURCE: Source = Source {
        format: Format::Toast,
        time_zone: "America/New_York",
        currency: "USD",
        phone_region: Some("US"),
        time_formats: None,
    };

    /// The README's table for `toast-ItemSelectionDetails.csv` + `toast-CheckDetails.csv`.
    const PURCHASES: [Purchase; 2] = [
        Purchase {
            order_id: "1300000020250314001",
            event_time: 1741990200,
            value: "36.38",
            lines: 2,
            units: 2,
            email: true,
            phone: true,
            external_id: true,
        },
        Purchase {
            order_id: "1300000020250314002",
            event_time: 1741992900,
            value: "14.98",
            lines: 1,
            units: 1,
            email: false,
            phone: false,
            external_id: false,
        },
    ];

    const SKIPS: [(&str, u64, &str); 1] = [("1300000020250314003", 6, "zero value (comp)")];

    fn anonymous() -> [Purchase; 2] {
        PURCHASES.map(|p| Purchase { email: false, phone: false, external_id: false, ..p })
    }

    #[test]
    fn the_sample_export_gives_the_readme_purchases_and_skips() {
        let outcome = run(&SOURCE, &fixture(ITEMS), Policy::default());
        assert_purchases(&outcome, &PURCHASES);
        assert_skips(&outcome, &SKIPS);
        assert!(outcome.summary.ignored_columns.is_empty());
        assert!(outcome.summary.notes.is_empty(), "{:?}", outcome.summary);
    }

    #[test]
    fn voided_rows_are_left_out_and_items_carry_unit_prices() {
        let outcome = run(&SOURCE, &fixture(ITEMS), Policy::default());
        let lines: Vec<_> = outcome
            .events
            .iter()
            .flat_map(|e| &e.contents)
            .map(|c| (c.content_id.as_str(), c.content_name.as_deref().unwrap_or(""), c.price.normalize().to_string()))
            .collect();
        assert_eq!(
            lines,
            vec![
                ("1300000000000000501", "Espresso Martini", "16".to_string()),
                ("1300000000000000502", "Harbor Burger", "18".to_string()),
                ("1300000000000000503", "Caesar Salad", "14".to_string()),
            ]
        );
    }

    #[test]
    fn only_item_selection_files_are_read() {
        assert!(reads_file(ITEMS));
        assert!(reads_file("ItemSelectionDetails.csv"));
        for other in [CHECKS_FILE, "OrderDetails.csv", "PaymentDetails.csv", "AllItemsReport.csv"] {
            assert!(!reads_file(other), "{other}");
        }
    }

    #[test]
    fn without_check_details_orders_go_without_customers_and_a_note_says_so() {
        let bytes = std::fs::read(fixture(ITEMS)).unwrap();
        let (_dir, path) = folder_with(ITEMS, &bytes, &[]);
        let outcome = run(&SOURCE, &path, Policy::default());
        assert_purchases(&outcome, &anonymous());
        assert_skips(&outcome, &SKIPS);
        assert_eq!(outcome.summary.notes.len(), 1, "{:?}", outcome.summary);
        assert!(outcome.summary.notes[0].contains("no CheckDetails file"));
        assert!(outcome.summary.notes[0].contains("without customer data"));
    }

    #[test]
    fn a_companion_unreadable_from_some_line_on_is_joined_up_to_it_and_named_in_a_note() {
        assert_companion_unreadable_from_its_end_is_joined_up_to_it(&SOURCE, ITEMS, CHECKS_FILE, &PURCHASES, &SKIPS);
    }

    #[test]
    fn generated_variants_read_the_same() {
        let cases: &[(&str, &[Change])] = &[
            ("columns reversed", &[Change::Reverse]),
            ("an unknown column", &[Change::ExtraColumn]),
            ("no `SKU`", &[Change::Drop("SKU")]),
            ("no `Deferred`", &[Change::Drop("Deferred")]),
            ("no `Sent Date`", &[Change::Drop("Sent Date")]),
            ("CRLF", &[Change::Crlf]),
            ("BOM", &[Change::Bom]),
        ];
        assert_variants_read_alike(&SOURCE, ITEMS, &[CHECKS_FILE], cases, &PURCHASES, &SKIPS);
    }

    #[test]
    fn check_details_columns_are_found_by_name() {
        let items = std::fs::read(fixture(ITEMS)).unwrap();
        let checks = variant(CHECKS_FILE, &[Change::Reverse, Change::Crlf, Change::Bom]);
        let (dir, path) = folder_with(ITEMS, &items, &[]);
        std::fs::write(dir.path().join(CHECKS_FILE), checks).unwrap();
        let outcome = run(&SOURCE, &path, Policy::default());
        assert_purchases(&outcome, &PURCHASES);
    }

    #[test]
    fn a_malformed_amount_rejects_its_order_and_the_rest_flows() {
        let bytes = variant(ITEMS, &[Change::Cell { line: 3, column: "Tax", value: "1,26,0" }]);
        let (_dir, path) = folder_with(ITEMS, &bytes, &[CHECKS_FILE]);
        let outcome = run(&SOURCE, &path, Policy::default());
        assert_only_rejected(&outcome, (3, "Tax"), "1300000020250314001", &["1300000020250314002"], &SKIPS);
    }

    #[test]
    fn staff_discounts_are_skipped_only_when_asked() {
        let checks =
            variant(CHECKS_FILE, &[Change::Cell { line: 2, column: "Reason of Discount", value: "Staff Meal" }]);
        let items = std::fs::read(fixture(ITEMS)).unwrap();
        let (dir, path) = folder_with(ITEMS, &items, &[]);
        std::fs::write(dir.path().join(CHECKS_FILE), checks).unwrap();
        let outcome = run(&SOURCE, &path, Policy::default());
        assert_purchases(&outcome, &PURCHASES);
        let policy = Policy { skip_staff: true, ..Policy::default() };
        let outcome = run(&SOURCE, &path, policy);
        assert_purchases(&outcome, &PURCHASES[1..]);
        assert_skips(&outcome, &[("1300000020250314001", 2, "staff sale"), SKIPS[0]]);
    }

    #[test]
    fn a_file_without_essential_columns_is_unreadable() {
        let bytes = variant(ITEMS, &[Change::Drop("Void?")]);
        let err = parse(Format::Toast, &bytes).unwrap_err().to_string();
        assert!(err.contains("missing required column `Void?`"), "{err}");
    }
}
