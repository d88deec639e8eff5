//! Shopify's orders export (`orders_export.csv`, `orders_export_1.csv`; format `shopify-orders`).
//!
//! One row per line item. Consecutive rows with the same `Name` (`#1001`) form one order; the
//! order's columns are filled on its first row only, so they are read from there and continuation
//! rows add line items. Columns are found by name: exports from different years have 47, 66 or 79
//! of them.
//!
//! What this profile decides:
//! - **Not a sale** (a `Skip`): `Financial Status` `refunded` (fully refunded), `voided` or
//!   `expired` (never paid); any order with `Cancelled at` set; with `in_store_only`, an order
//!   whose `Source` is not `pos`; with `skip_staff`, an order whose `Discount Code` or `Tags`
//!   contains "staff" (any case); an order with nothing left to send (total, or total less refunds,
//!   of zero or less). Quantities and totals of refunded orders keep their original values, so the
//!   status is the only sign of a refund.
//! - **Value**: `Total` (subtotal after discounts, plus shipping and taxes), or with
//!   `partial_refunds = net` `Total` less `Refunded Amount`. Amounts are plain `49.68`.
//! - **Time**: `Paid at`, else `Created at`, both with the store's offset (`-0400`).
//! - **Customer**: `Email`; every distinct `Phone`, `Billing Phone` and `Shipping Phone`. Never
//!   `Employee`, names or addresses.
//! - **Items**: `Lineitem sku` (else `Lineitem name`) as content id, `Lineitem name`, the
//!   undiscounted unit price `Lineitem price`, `Lineitem quantity`, `Vendor` as brand.
//! - **Ids**: the order id is `Name`. The store comes from the source's `shop_id`: `Location` is a
//!   display name, not an id.

use super::csv_table::{order_not_taken, read_orders, Check, Conventions, Row, Table};
use super::{FormatError, Parsed, PartialRefunds, Policy, ReadOptions, Reject, Skip, Summary};
use crate::event::{pii, Amount, RawItem, RawOrder};
use rust_decimal::Decimal;
use std::io::BufRead;
use std::ops::ControlFlow;

const FORMAT: &str = "Shopify orders export";

/// Shopify writes amounts as plain `1400.00` (a file re-saved by a spreadsheet in another locale
/// is read with the source's `decimal_separator`).
const DECIMAL: char = '.';

/// The 79 columns of a 2025–2026 export; older exports have a subset.
const KNOWN: [&str; 79] = [
    "Name",
    "Email",
    "Financial Status",
    "Paid at",
    "Fulfillment Status",
    "Fulfilled at",
    "Accepts Marketing",
    "Currency",
    "Subtotal",
    "Shipping",
    "Taxes",
    "Total",
    "Discount Code",
    "Discount Amount",
    "Shipping Method",
    "Created at",
    "Lineitem quantity",
    "Lineitem name",
    "Lineitem price",
    "Lineitem compare at price",
    "Lineitem sku",
    "Lineitem requires shipping",
    "Lineitem taxable",
    "Lineitem fulfillment status",
    "Billing Name",
    "Billing Street",
    "Billing Address1",
    "Billing Address2",
    "Billing Company",
    "Billing City",
    "Billing Zip",
    "Billing Province",
    "Billing Country",
    "Billing Phone",
    "Shipping Name",
    "Shipping Street",
    "Shipping Address1",
    "Shipping Address2",
    "Shipping Company",
    "Shipping City",
    "Shipping Zip",
    "Shipping Province",
    "Shipping Country",
    "Shipping Phone",
    "Notes",
    "Note Attributes",
    "Cancelled at",
    "Payment Method",
    "Payment Reference",
    "Refunded Amount",
    "Vendor",
    "Outstanding Balance",
    "Employee",
    "Location",
    "Device ID",
    "Id",
    "Tags",
    "Risk Level",
    "Source",
    "Lineitem discount",
    "Tax 1 Name",
    "Tax 1 Value",
    "Tax 2 Name",
    "Tax 2 Value",
    "Tax 3 Name",
    "Tax 3 Value",
    "Tax 4 Name",
    "Tax 4 Value",
    "Tax 5 Name",
    "Tax 5 Value",
    "Phone",
    "Receipt Number",
    "Duties",
    "Billing Province Name",
    "Shipping Province Name",
    "Payment ID",
    "Payment Terms Name",
    "Next Payment Due At",
    "Payment References",
];

/// Where the columns this profile reads are in the file.
struct Cols {
    name: usize,
    financial_status: usize,
    total: usize,
    created_at: usize,
    paid_at: Option<usize>,
    cancelled_at: Option<usize>,
    refunded_amount: Option<usize>,
    currency: Option<usize>,
    source: Option<usize>,
    discount_code: Option<usize>,
    tags: Option<usize>,
    email: Option<usize>,
    phones: [Option<usize>; 3],
    lineitem_name: Option<usize>,
    lineitem_sku: Option<usize>,
    lineitem_price: Option<usize>,
    lineitem_quantity: Option<usize>,
    vendor: Option<usize>,
    /// The decimal separator of amounts: the source's, else Shopify's `.`.
    decimal: char,
}

impl Cols {
    fn find<R>(table: &Table<R>, policy: &Policy, decimal: char) -> Result<Cols, FormatError> {
        let [name, financial_status, total, created_at] =
            table.required_in(FORMAT, ["Name", "Financial Status", "Total", "Created at"])?;
        let source = table.optional("Source");
        if policy.in_store_only && source.is_none() {
            return Err(FormatError::Unreadable {
                line: 1,
                reason: "missing column `Source`, which in_store_only needs to tell in-store \
                         orders from online ones"
                    .into(),
            });
        }
        Ok(Cols {
            name,
            financial_status,
            total,
            created_at,
            paid_at: table.optional("Paid at"),
            cancelled_at: table.optional("Cancelled at"),
            refunded_amount: table.optional("Refunded Amount"),
            currency: table.optional("Currency"),
            source,
            discount_code: table.optional("Discount Code"),
            tags: table.optional("Tags"),
            email: table.optional("Email"),
            phones: ["Phone", "Billing Phone", "Shipping Phone"].map(|n| table.optional(n)),
            lineitem_name: table.optional("Lineitem name"),
            lineitem_sku: table.optional("Lineitem sku"),
            lineitem_price: table.optional("Lineitem price"),
            lineitem_quantity: table.optional("Lineitem quantity"),
            vendor: table.optional("Vendor"),
            decimal,
        })
    }
}

/// The order being read: its `Name`, its first line, and what its first row made of it.
struct Group {
    key: String,
    line: u64,
    state: State,
}

enum State {
    Send(Box<RawOrder>),
    Skip(String),
    Bad(Reject),
}

impl Group {
    fn start(key: String, row: &Row, cols: &Cols, policy: &Policy) -> Group {
        let state = row.check_width().and_then(|()| first_row(row, cols, policy, &key)).unwrap_or_else(State::Bad);
        Group { key, line: row.line, state }
    }

    /// Every row of a sale (its first included) adds its line item, and a bad one spoils the sale;
    /// the rows of an order that is skipped or already bad are not read.
    fn add(&mut self, row: &Row, cols: &Cols) -> Result<(), Reject> {
        match &mut self.state {
            State::Send(order) => row.check_width().and_then(|()| add_item(order, row, cols)),
            State::Skip(_) | State::Bad(_) => Ok(()),
        }
    }

    fn finish(self, bad: Option<Reject>) -> Parsed {
        match (self.state, bad) {
            (State::Skip(reason), _) => Parsed::Skip(Skip { line: self.line, order_id: self.key, reason }),
            (State::Bad(reject), _) | (State::Send(_), Some(reject)) => {
                Parsed::Reject(order_not_taken(&self.key, reject))
            }
            (State::Send(order), None) => Parsed::Order(order),
        }
    }
}

pub(super) fn read(
    input: impl BufRead,
    options: &ReadOptions,
    sink: &mut dyn FnMut(Parsed) -> ControlFlow<()>,
) -> Result<Summary, FormatError> {
    let mut table = Table::open_as(input, options.csv, Conventions::DRIFTING)?;
    let cols = Cols::find(&table, &options.policy, options.decimal_separator.unwrap_or(DECIMAL))?;
    let summary = Summary { ignored_columns: table.unknown_columns(&KNOWN), ..Summary::default() };
    read_orders(
        &mut table,
        // The order's key is read first; the field count and each cell are checked as they are read.
        Check::Nothing,
        |row| row.key(cols.name),
        |key, row| Group::start(key, row, &cols, &options.policy),
        |group, row| group.add(row, &cols),
        Group::finish,
        sink,
    )?;
    Ok(summary)
}

/// An order's first row: whether it is a sale, and if so the order (its items are added by
/// [`Group::add`]).
fn first_row(row: &Row, cols: &Cols, policy: &Policy, key: &str) -> Result<State, Reject> {
    if let Some(reason) = not_a_sale(row, cols, policy)? {
        return Ok(State::Skip(reason));
    }
    let total = row.amount(cols.total, cols.decimal)?;
    let value = match policy.partial_refunds {
        PartialRefunds::Gross => total,
        PartialRefunds::Net => total - row.amount_or_zero(cols.refunded_amount, cols.decimal)?,
    };
    if value <= Decimal::ZERO {
        let what = match policy.partial_refunds {
            PartialRefunds::Gross => "Total",
            PartialRefunds::Net => "Total less Refunded Amount",
        };
        return Ok(State::Skip(format!("nothing to send ({what} is {value})")));
    }
    let event_time = match row.text_opt(cols.paid_at)? {
        Some(paid) => paid,
        None => match row.text(cols.created_at)? {
            "" => return Err(row.reject(Some(cols.created_at), "empty, and so is `Paid at`")),
            created => created,
        },
    };
    let mut phones: Vec<String> = Vec::new();
    for col in cols.phones {
        if let Some(phone) = row.text_opt(col)? {
            if !phones.iter().any(|p| p == phone) {
                phones.push(phone.to_string());
            }
        }
    }
    let order = RawOrder {
        line: row.line,
        order_id: key.to_string(),
        event_time: event_time.to_string(),
        emails: row.text_opt(cols.email)?.map(String::from).into_iter().collect(),
        phones,
        currency: row.text_opt(cols.currency)?.map(String::from),
        value: Some(Amount::Exact(value)),
        ..RawOrder::default()
    };
    Ok(State::Send(Box::new(order)))
}

/// Why an order is not a sale to send, or `None` when it is one.
fn not_a_sale(row: &Row, cols: &Cols, policy: &Policy) -> Result<Option<String>, Reject> {
    let status = row.text(cols.financial_status)?;
    let reason = match status.to_ascii_lowercase().as_str() {
        "refunded" => Some(format!("fully refunded (Financial Status = {status})")),
        "voided" => Some(format!("voided (Financial Status = {status})")),
        "expired" => Some(format!("never paid (Financial Status = {status})")),
        _ => None,
    };
    if reason.is_some() {
        return Ok(reason);
    }
    if row.text_opt(cols.cancelled_at)?.is_some() {
        return Ok(Some("cancelled (Cancelled at is set)".into()));
    }
    if policy.in_store_only {
        let source = row.text(cols.source)?;
        if !source.eq_ignore_ascii_case("pos") {
            return Ok(Some(format!("not an in-store order (Source = {})", pii::bare(source))));
        }
    }
    if policy.skip_staff {
        for (col, name) in [(cols.discount_code, "Discount Code"), (cols.tags, "Tags")] {
            let text = row.text(col)?;
            if text.to_lowercase().contains("staff") {
                return Ok(Some(format!("staff sale ({name} contains `staff`)")));
            }
        }
    }
    Ok(None)
}

/// The row's line item, if it has one. Prices and quantities are checked by `event::build`.
fn add_item(order: &mut RawOrder, row: &Row, cols: &Cols) -> Result<(), Reject> {
    let name = row.text_opt(cols.lineitem_name)?;
    let Some(content_id) = row.text_opt(cols.lineitem_sku)?.or(name) else {
        return Ok(());
    };
    order.items.push(RawItem {
        line: row.line,
        content_id: Some(content_id.to_string()),
        content_name: name.map(String::from),
        brand: row.text_opt(cols.vendor)?.map(String::from),
        price: row.text_opt(cols.lineitem_price)?.map(Amount::from),
        quantity: row.text_opt(cols.lineitem_quantity)?.map(Amount::from),
        ..RawItem::default()
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::profile_tests::{outlines, read_all, Got, Sample, Source};
    use crate::event::id::EventId;
    use crate::event::money::Currency;
    use crate::format::{read as read_any, Format, PartialRefunds, Policy, ReadOptions};
    use rust_decimal::Decimal;
    use std::ops::ControlFlow;
    use std::str::FromStr;

    const FIXTURE: &str =
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pos-exports/shopify-orders_export.csv"));

    /// The README's source settings: the zone and the currency are in the file, so the source's
    /// own zone (UTC) and currency (none) must not matter.
    const SOURCE: Source = Source {
        format: Format::ShopifyOrders,
        time_zone: "UTC",
        currency: "",
        phone_region: Some("US"),
        time_formats: None,
    };

    fn options(policy: Policy) -> ReadOptions {
        ReadOptions { policy, ..ReadOptions::default() }
    }

    fn check(bytes: &[u8], policy: Policy) -> Vec<Got> {
        read_all(&SOURCE, bytes, &options(policy)).0
    }

    /// The README table for `shopify-orders_export.csv`, with the default policy (send gross,
    /// all channels, staff sales included).
    const README: [&str; 7] = [
        "purchase #1001 at 1741981330 value 49.68 lines 2/3 email 1 phone 1 external 0",
        "purchase #1002 at 1741982731 value 19.44 lines 1/1 email 0 phone 0 external 0",
        "purchase #1003 at 1741987204 value 20.74 lines 1/1 email 1 phone 0 external 0",
        "skip #1004 line 6: fully refunded (Financial Status = refunded)",
        "purchase #1005 at 1742058849 value 43.20 lines 2/3 email 1 phone 1 external 0",
        "purchase #1006 at 1742085903 value 37.40 lines 1/1 email 1 phone 1 external 0",
        "skip #1007 line 10: voided (Financial Status = voided)",
    ];

    fn readme_with(changes: &[(usize, &str)]) -> Vec<String> {
        let mut expected: Vec<String> = README.iter().map(|s| s.to_string()).collect();
        for (i, line) in changes {
            expected[*i] = line.to_string();
        }
        expected
    }

    #[test]
    fn the_sample_export_gives_the_readme_table() {
        assert_eq!(outlines(&check(FIXTURE.as_bytes(), Policy::default())), README);
    }

    #[test]
    fn policies_pin_partial_refunds_channels_and_staff_sales() {
        let cases: [(Policy, Vec<String>); 3] = [
            (
                Policy { partial_refunds: PartialRefunds::Net, ..Policy::default() },
                readme_with(&[(4, "purchase #1005 at 1742058849 value 32.40 lines 2/3 email 1 phone 1 external 0")]),
            ),
            (
                Policy { in_store_only: true, ..Policy::default() },
                readme_with(&[(5, "skip #1006 line 9: not an in-store order (Source = web)")]),
            ),
            (
                Policy { skip_staff: true, ..Policy::default() },
                readme_with(&[(2, "skip #1003 line 5: staff sale (Discount Code contains `staff`)")]),
            ),
        ];
        for (policy, expected) in cases {
            assert_eq!(outlines(&check(FIXTURE.as_bytes(), policy.clone())), expected, "{policy:?}");
        }
    }

    #[test]
    fn continuation_rows_add_items_and_the_first_row_sets_the_order() {
        let got = check(FIXTURE.as_bytes(), Policy::default());
        let Got::Purchase(first) = &got[0] else { panic!("{got:?}") };
        let items: Vec<_> = first
            .contents
            .iter()
            .map(|c| {
                (c.content_id.as_str(), c.content_name.as_deref(), c.brand.as_deref(), c.price.to_string(), c.quantity)
            })
            .collect();
        assert_eq!(
            items,
            [
                ("SOCK-NVY-M", Some("Crew Socks - Navy / M"), Some("Harbor Goods"), "8.00".to_string(), 2),
                ("DRS-LIN-SND-S", Some("Linen Dress - Sand / S"), Some("Harbor Goods"), "30.00".to_string(), 1),
            ]
        );
        assert_eq!(first.currency, Currency::parse("USD").unwrap());
        assert_eq!(first.event_id, EventId::derive("s1", "", "#1001"));
        // #1003: the undiscounted unit price, the discount lives in the total.
        let Got::Purchase(third) = &got[2] else { panic!("{got:?}") };
        assert_eq!(third.contents[0].content_id, "HAT-WOOL-CHR");
        assert_eq!(third.contents[0].price, Decimal::from_str("24.00").unwrap());
    }

    #[test]
    fn the_raw_order_keeps_every_distinct_phone_and_no_staff_identifiers() {
        let mut orders = Vec::new();
        read_any(Format::ShopifyOrders, FIXTURE.as_bytes(), &ReadOptions::default(), &mut |p| {
            if let crate::format::Parsed::Order(o) = p {
                orders.push(*o);
            }
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(orders[0].emails, ["ava.thornton@example.com"]);
        assert_eq!(orders[0].phones, ["+14155550142", "+1 415-555-0142"]);
        assert_eq!(orders[0].shop_id, None);
        let text = format!("{orders:?}");
        for never in ["Sam Lee", "Downtown Store", "Ava Thornton", "4021337"] {
            assert!(!text.contains(never), "{never} leaked into {text}");
        }
    }

    #[test]
    fn variants_of_the_export_read_the_same() {
        type Variant = (&'static str, Box<dyn Fn(Sample) -> Sample>, bool);
        let variants: Vec<Variant> = vec![
            ("columns reversed", Box::new(Sample::reversed), false),
            ("unknown column", Box::new(|t| t.with_column("Loyalty Tier", "gold")), false),
            ("crlf", Box::new(|t| t), true),
            (
                "older export without the trailing columns",
                Box::new(|t| {
                    ["Payment References", "Next Payment Due At", "Payment Terms Name"]
                        .into_iter()
                        .fold(t, Sample::without)
                }),
                true,
            ),
        ];
        for (name, variant, crlf) in variants {
            let bytes = variant(Sample::parse(FIXTURE)).to_csv(crlf);
            let (got, summary) = read_all(&SOURCE, &bytes[..], &ReadOptions::default());
            assert_eq!(outlines(&got), README, "{name}");
            let expected_ignored: &[&str] = match name {
                "unknown column" => &["Loyalty Tier"],
                _ => &[],
            };
            assert_eq!(summary.ignored_columns, expected_ignored, "{name}");
        }
    }

    #[test]
    fn missing_optional_columns_fall_back() {
        // Without `Phone`, the Billing Phone still counts; without `Lineitem sku`, the name is
        // the content id.
        let bytes = Sample::parse(FIXTURE).without("Phone").without("Lineitem sku").to_csv(false);
        let got = check(&bytes, Policy::default());
        assert_eq!(outlines(&got), README);
        let Got::Purchase(first) = &got[0] else { panic!("{got:?}") };
        assert_eq!(first.contents[0].content_id, "Crew Socks - Navy / M");

        // Without `Paid at`, `Created at` (two seconds earlier in #1001) is the time.
        let bytes = Sample::parse(FIXTURE).without("Paid at").to_csv(false);
        let got = check(&bytes, Policy::default());
        assert_eq!(got[0].outline(), "purchase #1001 at 1741981328 value 49.68 lines 2/3 email 1 phone 1 external 0");
    }

    #[test]
    fn a_bad_cell_rejects_its_order_and_the_rest_is_delivered() {
        let bytes = Sample::parse(FIXTURE).set(2, "Total", "19.4.4").to_csv(false);
        let got = check(&bytes, Policy::default());
        let expected = readme_with(&[(1, "reject line 4 field Total")]);
        assert_eq!(outlines(&got), expected);
        let Got::Reject { reason, .. } = &got[1] else { panic!("{got:?}") };
        assert_eq!(reason, "order `#1002` not taken: not an amount: `19.4.4`");

        // A bad price on a continuation row rejects the whole order, naming that row.
        let bytes = Sample::parse(FIXTURE).set(1, "Lineitem price", "thirty").to_csv(false);
        let got = check(&bytes, Policy::default());
        assert_eq!(got[0].outline(), "reject line 3 field price");
        assert_eq!(outlines(&got)[1..], README[1..]);

        // A row cut short cannot be trusted.
        let mut text = FIXTURE.to_string();
        let cut = text.find("\n#1002").unwrap();
        text.replace_range(cut - 20..cut, "");
        let got = check(text.as_bytes(), Policy::default());
        assert_eq!(got[0].outline(), "reject line 3 field -");
        assert_eq!(outlines(&got)[1..], README[1..]);
    }

    #[test]
    fn a_file_without_the_essential_columns_is_unreadable() {
        let cases: [(Vec<u8>, Policy, &str); 3] = [
            (
                Sample::parse(FIXTURE).without("Name").without("Total").to_csv(false),
                Policy::default(),
                "missing columns `Name`, `Total`",
            ),
            (
                Sample::parse(FIXTURE).without("Source").to_csv(false),
                Policy { in_store_only: true, ..Policy::default() },
                "missing column `Source`",
            ),
            (Vec::new(), Policy::default(), "empty file"),
        ];
        for (bytes, policy, message) in cases {
            let err = read_any(Format::ShopifyOrders, &bytes[..], &options(policy), &mut |_| ControlFlow::Continue(()))
                .unwrap_err();
            assert!(err.to_string().contains(message), "{err}");
        }
    }
}
