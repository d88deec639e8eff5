//! Square Dashboard exports: the Transactions CSV (format `square-transactions`, one row per payment
//! or refund) and the Item Details CSV (format `square-items`, one row per itemization). Both key
//! rows by `Transaction ID`; consecutive payment rows with the same id form one order (items of a
//! sale; the payments of a split tender). Columns are found by name: they drift between years
//! (37, 41, 44, 55 columns), and a file re-saved in Excel keeps the 2018 set.
//!
//! What this profile decides:
//! - **Not a sale** (a `Skip`): a row whose `Event Type` is `Refund` (or anything but `Payment`;
//!   without that column, a negative `Total Collected` or `Qty`). A refund carries the sale's own
//!   `Transaction ID` and often arrives later; it is skipped on its own and never merged into or
//!   subtracted from the sale, which was sent when it was first seen. Also skipped: a transaction
//!   whose `Transaction Status` is present and not `Complete`; with `skip_staff`, one whose
//!   `Discount Name` contains "staff" (any case; only the Transactions file has that column); and
//!   one with nothing left to send (a gift-card-only sale).
//! - **Value**, exact decimal: Transactions: `Total Collected` less `Tip` and `Gift Card Sales`
//!   (a tip and the sale of a gift card are not merchandise), and with `partial_refunds = net` less
//!   the `Partial Refunds` amount. Item Details: Σ(`Net Sales` + `Tax`) over the payment rows, which
//!   is the same number (that file has no tips). Money is `$49.68`, `-$0.95`, or after Excel
//!   `"$1,240.92 "` and `($32.41)`, always with `.` as the decimal point.
//! - **Time**: `Date` + `Time`, in the zone named by `Time Zone` (a display name such as
//!   `Eastern Time (US & Canada)`, mapped to IANA below); the source's zone when that is empty.
//!   A row with a date but no time (Excel empties the time columns) is rejected, or with
//!   `date_only = noon` sent at 12:00 local; such dates are read as `YYYY-MM-DD` or `M/D/YYYY`
//!   (Square US, the only Excel round trip seen).
//! - **Customer**: `Customer ID` and `Customer Reference ID`, both as external ids: they are the
//!   only customer identifiers these files carry (no email or phone), and the merchant's own
//!   reference id (a loyalty number) matches what other systems send as an external id. Never
//!   `Customer Name`, `Staff Name`/`Staff ID`/`Employee`, card digits, or the `Description` free
//!   text (it can hold typed-in contact details).
//! - **Items** (Item Details only): content id `SKU`, else `Token` (the item variation), else
//!   `Item`; unit price `Gross Sales` / `Qty`; category unless `None`.
//! - **Ids**: the order id is `Transaction ID`. `Location` is a display name, so the store comes
//!   from the source's `shop_id`. No currency column: it comes from the source.

use super::csv_table::{order_not_taken, read_orders, Check, Conventions, Row, Table};
use super::{DateOnly, FormatError, Parsed, PartialRefunds, Policy, ReadOptions, Reject, Skip, Summary};
use crate::event::{pii, Amount, RawItem, RawOrder};
use rust_decimal::Decimal;
use std::io::BufRead;
use std::ops::ControlFlow;

/// Square writes `.` as the decimal point, also in Excel's accounting format.
const DECIMAL: char = '.';

/// Transactions CSV columns: the 2026 set (55) plus names used in 2018–2022 exports.
const TRANSACTION_COLUMNS: [&str; 57] = [
    "Date",
    "Time",
    "Time Zone",
    "Gross Sales",
    "Discounts",
    "Service Charges",
    "Net Sales",
    "Gift Card Sales",
    "Tax",
    "Tip",
    "Partial Refunds",
    "Total Collected",
    "Source",
    "Card",
    "Card Entry Methods",
    "Cash",
    "Square Gift Card",
    "Other Tender",
    "Other Tender Type",
    "Tender Note",
    "Fees",
    "Net Total",
    "Transaction ID",
    "Payment ID",
    "Card Brand",
    "PAN Suffix",
    "Device Name",
    "Staff Name",
    "Staff ID",
    "Details",
    "Description",
    "Event Type",
    "Location",
    "Dining Option",
    "Customer ID",
    "Customer Name",
    "Customer Reference ID",
    "Device Nickname",
    "Third Party Fees",
    "Deposit ID",
    "Deposit Date",
    "Deposit Details",
    "Fee Percentage Rate",
    "Fee Fixed Rate",
    "Refund Reason",
    "Discount Name",
    "Transaction Status",
    "Cash App",
    "Order Reference ID",
    "Fulfillment Note",
    "Free Processing Applied",
    "Channel",
    "Unattributed Tips",
    "Table Info",
    "International Fee",
    "Other Tender Note",
    "Installment",
];

/// Item Details CSV columns (2026, 35).
const ITEM_COLUMNS: [&str; 35] = [
    "Date",
    "Time",
    "Time Zone",
    "Category",
    "Item",
    "Qty",
    "Price Point Name",
    "SKU",
    "Modifiers Applied",
    "Gross Sales",
    "Discounts",
    "Net Sales",
    "Tax",
    "Transaction ID",
    "Payment ID",
    "Device Name",
    "Notes",
    "Details",
    "Event Type",
    "Location",
    "Dining Option",
    "Customer ID",
    "Customer Name",
    "Customer Reference ID",
    "Unit",
    "Count",
    "GTIN",
    "Itemization Type",
    "Commission",
    "Employee",
    "Fulfillment Note",
    "Channel",
    "Token",
    "Card Brand",
    "PAN Suffix",
];

/// Square's `Time Zone` display names (the Rails/ActiveSupport set) and their IANA zones.
const TIME_ZONES: [(&str, &str); 151] = [
    ("International Date Line West", "Pacific/Midway"),
    ("Midway Island", "Pacific/Midway"),
    ("American Samoa", "Pacific/Pago_Pago"),
    ("Hawaii", "Pacific/Honolulu"),
    ("Alaska", "America/Anchorage"),
    ("Pacific Time (US & Canada)", "America/Los_Angeles"),
    ("Tijuana", "America/Tijuana"),
    ("Mountain Time (US & Canada)", "America/Denver"),
    ("Arizona", "America/Phoenix"),
    ("Chihuahua", "America/Chihuahua"),
    ("Mazatlan", "America/Mazatlan"),
    ("Central Time (US & Canada)", "America/Chicago"),
    ("Saskatchewan", "America/Regina"),
    ("Guadalajara", "America/Mexico_City"),
    ("Mexico City", "America/Mexico_City"),
    ("Monterrey", "America/Monterrey"),
    ("Central America", "America/Guatemala"),
    ("Eastern Time (US & Canada)", "America/New_York"),
    ("Indiana (East)", "America/Indiana/Indianapolis"),
    ("Bogota", "America/Bogota"),
    ("Lima", "America/Lima"),
    ("Quito", "America/Lima"),
    ("Atlantic Time (Canada)", "America/Halifax"),
    ("Caracas", "America/Caracas"),
    ("La Paz", "America/La_Paz"),
    ("Santiago", "America/Santiago"),
    ("Newfoundland", "America/St_Johns"),
    ("Brasilia", "America/Sao_Paulo"),
    ("Buenos Aires", "America/Argentina/Buenos_Aires"),
    ("Montevideo", "America/Montevideo"),
    ("Georgetown", "America/Guyana"),
    ("Puerto Rico", "America/Puerto_Rico"),
    ("Greenland", "America/Nuuk"),
    ("Mid-Atlantic", "Atlantic/South_Georgia"),
    ("Azores", "Atlantic/Azores"),
    ("Cape Verde Is.", "Atlantic/Cape_Verde"),
    ("Dublin", "Europe/Dublin"),
    ("Edinburgh", "Europe/London"),
    ("Lisbon", "Europe/Lisbon"),
    ("London", "Europe/London"),
    ("Casablanca", "Africa/Casablanca"),
    ("Monrovia", "Africa/Monrovia"),
    ("UTC", "UTC"),
    ("Belgrade", "Europe/Belgrade"),
    ("Bratislava", "Europe/Bratislava"),
    ("Budapest", "Europe/Budapest"),
    ("Ljubljana", "Europe/Ljubljana"),
    ("Prague", "Europe/Prague"),
    ("Sarajevo", "Europe/Sarajevo"),
    ("Skopje", "Europe/Skopje"),
    ("Warsaw", "Europe/Warsaw"),
    ("Zagreb", "Europe/Zagreb"),
    ("Brussels", "Europe/Brussels"),
    ("Copenhagen", "Europe/Copenhagen"),
    ("Madrid", "Europe/Madrid"),
    ("Paris", "Europe/Paris"),
    ("Amsterdam", "Europe/Amsterdam"),
    ("Berlin", "Europe/Berlin"),
    ("Bern", "Europe/Zurich"),
    ("Zurich", "Europe/Zurich"),
    ("Rome", "Europe/Rome"),
    ("Stockholm", "Europe/Stockholm"),
    ("Vienna", "Europe/Vienna"),
    ("West Central Africa", "Africa/Algiers"),
    ("Bucharest", "Europe/Bucharest"),
    ("Cairo", "Africa/Cairo"),
    ("Helsinki", "Europe/Helsinki"),
    ("Kyiv", "Europe/Kyiv"),
    ("Riga", "Europe/Riga"),
    ("Sofia", "Europe/Sofia"),
    ("Tallinn", "Europe/Tallinn"),
    ("Vilnius", "Europe/Vilnius"),
    ("Athens", "Europe/Athens"),
    ("Istanbul", "Europe/Istanbul"),
    ("Minsk", "Europe/Minsk"),
    ("Jerusalem", "Asia/Jerusalem"),
    ("Harare", "Africa/Harare"),
    ("Pretoria", "Africa/Johannesburg"),
    ("Kaliningrad", "Europe/Kaliningrad"),
    ("Moscow", "Europe/Moscow"),
    ("St. Petersburg", "Europe/Moscow"),
    ("Volgograd", "Europe/Volgograd"),
    ("Samara", "Europe/Samara"),
    ("Kuwait", "Asia/Kuwait"),
    ("Riyadh", "Asia/Riyadh"),
    ("Nairobi", "Africa/Nairobi"),
    ("Baghdad", "Asia/Baghdad"),
    ("Tehran", "Asia/Tehran"),
    ("Abu Dhabi", "Asia/Dubai"),
    ("Muscat", "Asia/Muscat"),
    ("Baku", "Asia/Baku"),
    ("Tbilisi", "Asia/Tbilisi"),
    ("Yerevan", "Asia/Yerevan"),
    ("Kabul", "Asia/Kabul"),
    ("Ekaterinburg", "Asia/Yekaterinburg"),
    ("Islamabad", "Asia/Karachi"),
    ("Karachi", "Asia/Karachi"),
    ("Tashkent", "Asia/Tashkent"),
    ("Chennai", "Asia/Kolkata"),
    ("Kolkata", "Asia/Kolkata"),
    ("Mumbai", "Asia/Kolkata"),
    ("New Delhi", "Asia/Kolkata"),
    ("Kathmandu", "Asia/Kathmandu"),
    ("Astana", "Asia/Almaty"),
    ("Dhaka", "Asia/Dhaka"),
    ("Sri Jayawardenepura", "Asia/Colombo"),
    ("Almaty", "Asia/Almaty"),
    ("Novosibirsk", "Asia/Novosibirsk"),
    ("Rangoon", "Asia/Yangon"),
    ("Bangkok", "Asia/Bangkok"),
    ("Hanoi", "Asia/Bangkok"),
    ("Jakarta", "Asia/Jakarta"),
    ("Krasnoyarsk", "Asia/Krasnoyarsk"),
    ("Beijing", "Asia/Shanghai"),
    ("Chongqing", "Asia/Shanghai"),
    ("Hong Kong", "Asia/Hong_Kong"),
    ("Urumqi", "Asia/Urumqi"),
    ("Kuala Lumpur", "Asia/Kuala_Lumpur"),
    ("Singapore", "Asia/Singapore"),
    ("Taipei", "Asia/Taipei"),
    ("Perth", "Australia/Perth"),
    ("Irkutsk", "Asia/Irkutsk"),
    ("Ulaanbaatar", "Asia/Ulaanbaatar"),
    ("Seoul", "Asia/Seoul"),
    ("Osaka", "Asia/Tokyo"),
    ("Sapporo", "Asia/Tokyo"),
    ("Tokyo", "Asia/Tokyo"),
    ("Yakutsk", "Asia/Yakutsk"),
    ("Darwin", "Australia/Darwin"),
    ("Adelaide", "Australia/Adelaide"),
    ("Canberra", "Australia/Sydney"),
    ("Melbourne", "Australia/Melbourne"),
    ("Sydney", "Australia/Sydney"),
    ("Brisbane", "Australia/Brisbane"),
    ("Hobart", "Australia/Hobart"),
    ("Vladivostok", "Asia/Vladivostok"),
    ("Guam", "Pacific/Guam"),
    ("Port Moresby", "Pacific/Port_Moresby"),
    ("Magadan", "Asia/Magadan"),
    ("Srednekolymsk", "Asia/Srednekolymsk"),
    ("Solomon Is.", "Pacific/Guadalcanal"),
    ("New Caledonia", "Pacific/Noumea"),
    ("Fiji", "Pacific/Fiji"),
    ("Kamchatka", "Asia/Kamchatka"),
    ("Marshall Is.", "Pacific/Majuro"),
    ("Auckland", "Pacific/Auckland"),
    ("Wellington", "Pacific/Auckland"),
    ("Nuku'alofa", "Pacific/Tongatapu"),
    ("Tokelau Is.", "Pacific/Fakaofo"),
    ("Chatham Is.", "Pacific/Chatham"),
    ("Samoa", "Pacific/Apia"),
];

/// The IANA zone for one of Square's `Time Zone` display names.
fn iana_zone(display: &str) -> Option<&'static str> {
    TIME_ZONES.iter().find(|(name, _)| name.eq_ignore_ascii_case(display)).map(|(_, zone)| *zone)
}

/// Which of the two files is being read, and where its amount columns are.
enum Amounts {
    Transactions {
        total_collected: usize,
        tip: Option<usize>,
        gift_card_sales: Option<usize>,
        partial_refunds: Option<usize>,
        discount_name: Option<usize>,
        transaction_status: Option<usize>,
    },
    Items {
        item: usize,
        qty: usize,
        gross_sales: usize,
        net_sales: usize,
        tax: Option<usize>,
        sku: Option<usize>,
        token: Option<usize>,
        category: Option<usize>,
    },
}

/// Where the columns this profile reads are in the file.
struct Cols {
    date: usize,
    transaction_id: usize,
    time: Option<usize>,
    time_zone: Option<usize>,
    event_type: Option<usize>,
    customer_ids: [Option<usize>; 2],
    amounts: Amounts,
    /// The decimal separator of amounts: the source's, else Square's `.`.
    decimal: char,
}

impl Cols {
    fn new<R>(table: &Table<R>, export: &str, amounts: Amounts, decimal: char) -> Result<Cols, FormatError> {
        let [date, transaction_id] = table.required_in(export, ["Date", "Transaction ID"])?;
        Ok(Cols {
            date,
            transaction_id,
            time: table.optional("Time"),
            time_zone: table.optional("Time Zone"),
            event_type: table.optional("Event Type"),
            customer_ids: ["Customer ID", "Customer Reference ID"].map(|n| table.optional(n)),
            amounts,
            decimal,
        })
    }
}

/// Read a Square Transactions CSV.
pub(super) fn read_transactions(
    input: impl BufRead,
    options: &ReadOptions,
    sink: &mut dyn FnMut(Parsed) -> ControlFlow<()>,
) -> Result<Summary, FormatError> {
    let export = "Square transactions export";
    read(input, options, sink, export, &TRANSACTION_COLUMNS, |table| {
        let [total_collected] = table.required_in(export, ["Total Collected"])?;
        Ok(Amounts::Transactions {
            total_collected,
            tip: table.optional("Tip"),
            gift_card_sales: table.optional("Gift Card Sales"),
            partial_refunds: table.optional("Partial Refunds"),
            discount_name: table.optional("Discount Name"),
            transaction_status: table.optional("Transaction Status"),
        })
    })
}

/// Read a Square Item Details CSV.
pub(super) fn read_items(
    input: impl BufRead,
    options: &ReadOptions,
    sink: &mut dyn FnMut(Parsed) -> ControlFlow<()>,
) -> Result<Summary, FormatError> {
    let export = "Square item details export";
    read(input, options, sink, export, &ITEM_COLUMNS, |table| {
        let [item, qty, gross_sales, net_sales] =
            table.required_in(export, ["Item", "Qty", "Gross Sales", "Net Sales"])?;
        Ok(Amounts::Items {
            item,
            qty,
            gross_sales,
            net_sales,
            tax: table.optional("Tax"),
            sku: table.optional("SKU"),
            token: table.optional("Token"),
            category: table.optional("Category"),
        })
    })
}

/// Read either file (`export`, whose header names `known` columns and whose amount columns
/// `amounts` finds) as transactions: consecutive rows with the same `Transaction ID` that are all
/// payments, or all not, form one.
fn read<R: BufRead>(
    input: R,
    options: &ReadOptions,
    sink: &mut dyn FnMut(Parsed) -> ControlFlow<()>,
    export: &str,
    known: &[&str],
    amounts: impl FnOnce(&Table<R>) -> Result<Amounts, FormatError>,
) -> Result<Summary, FormatError> {
    let mut table = Table::open_as(input, options.csv, Conventions::DRIFTING)?;
    let amounts = amounts(&table)?;
    let cols = Cols::new(&table, export, amounts, options.decimal_separator.unwrap_or(DECIMAL))?;
    let summary = Summary { ignored_columns: table.unknown_columns(known), ..Summary::default() };
    let policy = &options.policy;
    read_orders(
        &mut table,
        // The transaction's key is read first; the field count and each cell are checked as they
        // are read.
        Check::Nothing,
        |row| {
            // A row that cannot be read counts as a payment: it may well have been one.
            let payment = !matches!(row_kind(row, &cols), Ok(Some(_)));
            Ok((row.key(cols.transaction_id)?, payment))
        },
        |(key, _), row| Group::start(key, row, &cols, policy),
        |group, row| group.add(row, &cols, policy),
        |group, bad| group.finish(bad, &cols),
        sink,
    )?;
    Ok(summary)
}

/// The transaction being read: its id, its first line, and what its first row made of it.
struct Group {
    key: String,
    line: u64,
    state: State,
}

enum State {
    /// A sale, with the value of its rows so far.
    Send {
        order: Box<RawOrder>,
        value: Decimal,
    },
    Skip(String),
    Bad(Reject),
}

impl Group {
    fn start(key: String, row: &Row, cols: &Cols, policy: &Policy) -> Group {
        let state = match row_kind(row, cols) {
            Err(reject) => State::Bad(reject),
            Ok(Some(reason)) => State::Skip(reason),
            Ok(None) => first_row(row, cols, policy, &key).unwrap_or_else(State::Bad),
        };
        Group { key, line: row.line, state }
    }

    /// Every payment row of a sale (its first included) adds its value and item, and a bad one
    /// spoils the sale; the rows of a transaction that is skipped or already bad are not read.
    fn add(&mut self, row: &Row, cols: &Cols, policy: &Policy) -> Result<(), Reject> {
        match &mut self.state {
            State::Send { order, value } => row_kind(row, cols).and_then(|_| add_row(order, value, row, cols, policy)),
            State::Skip(_) | State::Bad(_) => Ok(()),
        }
    }

    fn finish(self, bad: Option<Reject>, cols: &Cols) -> Parsed {
        let amounts = &cols.amounts;
        let skip = |reason| Parsed::Skip(Skip { line: self.line, order_id: self.key.clone(), reason });
        match (self.state, bad) {
            (State::Skip(reason), _) => skip(reason),
            (State::Bad(reject), _) | (State::Send { .. }, Some(reject)) => {
                Parsed::Reject(order_not_taken(&self.key, reject))
            }
            (State::Send { value, .. }, None) if value <= Decimal::ZERO => {
                let what = match amounts {
                    Amounts::Transactions { .. } => "Total Collected less tips and gift card sales",
                    Amounts::Items { .. } => "Net Sales plus Tax",
                };
                skip(format!("nothing to send ({what} is {value})"))
            }
            (State::Send { mut order, value }, None) => {
                order.value = Some(Amount::Exact(value));
                Parsed::Order(order)
            }
        }
    }
}

/// Whether a row can be read and is a payment (`None`), or why it is not one.
fn row_kind(row: &Row, cols: &Cols) -> Result<Option<String>, Reject> {
    row.check_width().and_then(|()| not_a_payment(row, cols))
}

/// Why a row is not (part of) a payment, or `None` when it is one.
fn not_a_payment(row: &Row, cols: &Cols) -> Result<Option<String>, Reject> {
    let event_type = row.text(cols.event_type)?;
    if event_type.eq_ignore_ascii_case("payment") {
        return Ok(None);
    }
    if event_type.eq_ignore_ascii_case("refund") {
        return Ok(Some(format!("refund (Event Type = {event_type})")));
    }
    if !event_type.is_empty() {
        return Ok(Some(format!("not a payment (Event Type = {})", pii::bare(event_type))));
    }
    // Older files have no `Event Type`: a refund shows as a negative amount.
    let (col, name) = match cols.amounts {
        Amounts::Transactions { total_collected, .. } => (total_collected, "Total Collected"),
        Amounts::Items { qty, .. } => (qty, "Qty"),
    };
    Ok((row.amount(col, cols.decimal)? < Decimal::ZERO).then(|| format!("refund (negative {name})")))
}

/// A transaction's first payment row: whether it is a sale to send, and if so the order (its rows'
/// values and items are added by [`Group::add`]).
fn first_row(row: &Row, cols: &Cols, policy: &Policy, key: &str) -> Result<State, Reject> {
    if let Amounts::Transactions { discount_name, transaction_status, .. } = cols.amounts {
        let status = row.text(transaction_status)?;
        if !status.is_empty() && !status.eq_ignore_ascii_case("complete") {
            return Ok(State::Skip(format!("not complete (Transaction Status = {})", pii::bare(status))));
        }
        let discount = row.text(discount_name)?;
        if policy.skip_staff && discount.to_lowercase().contains("staff") {
            return Ok(State::Skip("staff sale (Discount Name contains `staff`)".to_string()));
        }
    }
    let mut external_ids = Vec::new();
    for col in cols.customer_ids {
        if let Some(id) = row.text_opt(col)? {
            external_ids.push(id.to_string());
        }
    }
    let order = RawOrder {
        line: row.line,
        order_id: key.to_string(),
        event_time: event_time(row, cols, policy.date_only)?,
        time_zone: time_zone(row, cols)?,
        external_ids,
        ..RawOrder::default()
    };
    Ok(State::Send { order: Box::new(order), value: Decimal::ZERO })
}

/// Add a payment row's value (and, in the Item Details file, its item) to the order.
fn add_row(order: &mut RawOrder, value: &mut Decimal, row: &Row, cols: &Cols, policy: &Policy) -> Result<(), Reject> {
    match cols.amounts {
        Amounts::Transactions { total_collected, tip, gift_card_sales, partial_refunds, .. } => {
            let refunded = match policy.partial_refunds {
                PartialRefunds::Gross => Decimal::ZERO,
                // Square writes refunds negative; the sign is not trusted.
                PartialRefunds::Net => row.amount_or_zero(partial_refunds, cols.decimal)?.abs(),
            };
            *value += row.amount(total_collected, cols.decimal)?
                - row.amount_or_zero(tip, cols.decimal)?
                - row.amount_or_zero(gift_card_sales, cols.decimal)?
                - refunded;
        }
        Amounts::Items { item, qty, gross_sales, net_sales, tax, sku, token, category } => {
            *value += row.amount(net_sales, cols.decimal)? + row.amount_or_zero(tax, cols.decimal)?;
            let quantity = row.amount(qty, cols.decimal)?;
            let gross = row.amount(gross_sales, cols.decimal)?;
            let name = row.text_opt(item)?;
            let content_id = row.text_opt(sku)?.or(row.text_opt(token)?).or(name);
            // A row without any identity or quantity adds to the value but is no content.
            let (Some(content_id), Some(price)) = (content_id, gross.checked_div(quantity)) else {
                return Ok(());
            };
            order.items.push(RawItem {
                line: row.line,
                content_id: Some(content_id.to_string()),
                content_name: name.map(String::from),
                content_category: row.text_opt(category)?.filter(|c| !c.eq_ignore_ascii_case("none")).map(String::from),
                price: Some(Amount::Exact(price.round_dp(4).normalize())),
                quantity: Some(Amount::Exact(quantity.normalize())),
                ..RawItem::default()
            });
        }
    }
    Ok(())
}

/// The row's local time as `event::build` reads it (with the source's time formats), or for a row
/// with a date but no time, what `date_only` says.
fn event_time(row: &Row, cols: &Cols, date_only: DateOnly) -> Result<String, Reject> {
    let date = row.text(cols.date)?;
    if date.is_empty() {
        return Err(row.reject(Some(cols.date), "empty"));
    }
    if let Some(time) = row.text_opt(cols.time)? {
        return Ok(format!("{date} {time}"));
    }
    match date_only {
        DateOnly::Reject => Err(row.reject(
            cols.time.or(Some(cols.date)),
            "empty: the row has a date but no time of day (a file re-saved in Excel?); \
             date_only = \"noon\" would send it at 12:00 local time",
        )),
        DateOnly::Noon => noon(date).ok_or_else(|| {
            row.reject(Some(cols.date), format!("{} is not a date in YYYY-MM-DD or M/D/YYYY form", pii::shown(date)))
        }),
    }
}

/// 12:00 on `date` (`2025-03-14` or Square US's `3/14/2025`), as `2025-03-14 12:00:00`.
fn noon(date: &str) -> Option<String> {
    let date = date.parse::<jiff::civil::Date>().or_else(|_| jiff::civil::Date::strptime("%m/%d/%Y", date)).ok()?;
    Some(format!("{date} 12:00:00"))
}

/// The IANA zone the row's `Time Zone` names, `None` when it is empty (the source's zone applies).
fn time_zone(row: &Row, cols: &Cols) -> Result<Option<String>, Reject> {
    let Some(name) = row.text_opt(cols.time_zone)? else {
        return Ok(None);
    };
    if name.contains('/') {
        // Already an IANA name; `event::build` checks it.
        return Ok(Some(name.to_string()));
    }
    match iana_zone(name) {
        Some(zone) => Ok(Some(zone.to_string())),
        None => {
            Err(row.reject(cols.time_zone, format!("{} is not a time zone name this reader knows", pii::shown(name))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::profile_tests::{outlines, parse, read_all, Got, Sample, Source};
    use super::TIME_ZONES;
    use crate::format::{read as read_any, DateOnly, Format, Parsed, PartialRefunds, Policy, ReadOptions};
    use rust_decimal::Decimal;
    use std::ops::ControlFlow;
    use std::str::FromStr;

    const TRANSACTIONS: &str =
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pos-exports/square-transactions.csv"));
    const ITEMS: &str =
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pos-exports/square-items.csv"));
    const EXCEL: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/pos-exports/square-transactions-excel-resaved.csv"
    ));

    /// The README's source settings: America/New_York, USD (not in the file), shop `s1`, US
    /// phones, and the format's default time formats.
    fn source(format: Format) -> Source {
        Source { format, time_zone: "America/New_York", currency: "USD", phone_region: Some("US"), time_formats: None }
    }

    fn check(format: Format, bytes: &[u8], policy: Policy) -> Vec<Got> {
        let options = ReadOptions { policy, ..ReadOptions::default() };
        read_all(&source(format), bytes, &options).0
    }

    const Q7B: &str = "Q7bT2nWd9LpR3sVx8KcY1mZeFgHaJ";

    /// The README table for `square-transactions.csv` (no items in this file).
    const TRANSACTIONS_README: [&str; 4] = [
        "purchase Q7bT2nWd9LpR3sVx8KcY1mZeFgHaJ at 1741981330 value 49.68 lines 0/0 email 0 phone 0 external 2",
        "purchase K2mV8xRt5NcW1qLz7PdS4hYbJfGeU at 1741982731 value 19.44 lines 0/0 email 0 phone 0 external 0",
        "purchase W9pD3kLs6TqZ2vMx8BnR5cYhJgFaE at 1741987204 value 20.74 lines 0/0 email 0 phone 0 external 1",
        "skip Q7bT2nWd9LpR3sVx8KcY1mZeFgHaJ line 5: refund (Event Type = Refund)",
    ];

    /// The README table for `square-items.csv`.
    const ITEMS_README: [&str; 4] = [
        "purchase Q7bT2nWd9LpR3sVx8KcY1mZeFgHaJ at 1741981330 value 49.68 lines 2/3 email 0 phone 0 external 2",
        "purchase K2mV8xRt5NcW1qLz7PdS4hYbJfGeU at 1741982731 value 19.44 lines 1/1 email 0 phone 0 external 0",
        "purchase W9pD3kLs6TqZ2vMx8BnR5cYhJgFaE at 1741987204 value 20.74 lines 1/1 email 0 phone 0 external 1",
        "skip Q7bT2nWd9LpR3sVx8KcY1mZeFgHaJ line 6: refund (Event Type = Refund)",
    ];

    fn with(table: &[&str], changes: &[(usize, &str)]) -> Vec<String> {
        let mut expected: Vec<String> = table.iter().map(|s| s.to_string()).collect();
        for (i, line) in changes {
            expected[*i] = line.to_string();
        }
        expected
    }

    #[test]
    fn the_sample_exports_give_the_readme_tables() {
        let cases: [(Format, &str, &[&str]); 2] = [
            (Format::SquareTransactions, TRANSACTIONS, &TRANSACTIONS_README),
            (Format::SquareItems, ITEMS, &ITEMS_README),
        ];
        for (format, text, expected) in cases {
            assert_eq!(outlines(&check(format, text.as_bytes(), Policy::default())), expected, "{format:?}");
        }
    }

    #[test]
    fn item_rows_become_contents_with_unit_prices() {
        let got = check(Format::SquareItems, ITEMS.as_bytes(), Policy::default());
        let Got::Purchase(first) = &got[0] else { panic!("{got:?}") };
        let items: Vec<_> = first
            .contents
            .iter()
            .map(|c| {
                (c.content_id.as_str(), c.content_name.as_deref(), c.content_category.as_deref(), c.price, c.quantity)
            })
            .collect();
        let d = |s| Decimal::from_str(s).unwrap();
        assert_eq!(
            items,
            [
                ("MUG-SPK-01", Some("Speckled Mug"), Some("Ceramics"), d("18"), 2),
                ("PRT-BOT-A4", Some("Botanical Print"), Some("Prints"), d("10"), 1),
            ]
        );
        // Category `None` means no category.
        let Got::Purchase(third) = &got[2] else { panic!("{got:?}") };
        assert_eq!(third.contents[0].content_category, None);

        // Without a SKU the variation token is the content id, without either the item name.
        let bytes = Sample::parse(ITEMS).set(0, "SKU", "").to_csv(false);
        let got = check(Format::SquareItems, &bytes, Policy::default());
        let Got::Purchase(first) = &got[0] else { panic!("{got:?}") };
        assert_eq!(first.contents[0].content_id, "Y36H4C6V4YFFYACSEXAMPLE1");
        let bytes = Sample::parse(ITEMS).without("SKU").without("Token").to_csv(false);
        let got = check(Format::SquareItems, &bytes, Policy::default());
        let Got::Purchase(first) = &got[0] else { panic!("{got:?}") };
        assert_eq!(first.contents[0].content_id, "Speckled Mug");
    }

    #[test]
    fn customer_ids_are_external_ids_and_nothing_else_is_taken() {
        let mut orders = Vec::new();
        read_any(Format::SquareTransactions, TRANSACTIONS.as_bytes(), &ReadOptions::default(), &mut |p| {
            if let Parsed::Order(o) = p {
                orders.push(*o);
            }
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(orders[0].external_ids, ["AE8X8MPTGN7DF5M76JAC10EXA1", "LOYAL-0042"]);
        assert!(orders[0].emails.is_empty() && orders[0].phones.is_empty());
        assert_eq!(orders[0].time_zone.as_deref(), Some("America/New_York"));
        let text = format!("{orders:?}");
        for never in ["Ava Thornton", "Sam Lee", "TMa1B2c3D4e5F6g7", "1881", "Speckled Mug x 2", "Harbor Goods"] {
            assert!(!text.contains(never), "{never} leaked into {text}");
        }
    }

    #[test]
    fn policies_pin_staff_sales_and_partial_refunds() {
        let staff = Policy { skip_staff: true, ..Policy::default() };
        assert_eq!(
            outlines(&check(Format::SquareTransactions, TRANSACTIONS.as_bytes(), staff.clone())),
            with(
                &TRANSACTIONS_README,
                &[(2, "skip W9pD3kLs6TqZ2vMx8BnR5cYhJgFaE line 4: staff sale (Discount Name contains `staff`)")]
            )
        );
        // The item file has no discount names: the staff sale cannot be told apart there.
        assert_eq!(outlines(&check(Format::SquareItems, ITEMS.as_bytes(), staff)), ITEMS_README);

        let bytes = Sample::parse(TRANSACTIONS).set(0, "Partial Refunds", "-$2.00").to_csv(false);
        let net = Policy { partial_refunds: PartialRefunds::Net, ..Policy::default() };
        assert_eq!(
            check(Format::SquareTransactions, &bytes, net)[0].outline(),
            TRANSACTIONS_README[0].replace("49.68", "47.68")
        );
        assert_eq!(outlines(&check(Format::SquareTransactions, &bytes, Policy::default())), TRANSACTIONS_README);
    }

    #[test]
    fn tips_and_gift_card_sales_are_not_merchandise() {
        let bytes = Sample::parse(TRANSACTIONS)
            // A $5 tip on the first sale.
            .set(0, "Tip", "$5.00")
            .set(0, "Total Collected", "$54.68")
            // A $10 gift card sold with the tote.
            .set(1, "Gift Card Sales", "$10.00")
            .set(1, "Total Collected", "$29.44")
            // A gift card and nothing else.
            .set(2, "Gift Card Sales", "$20.74")
            .to_csv(false);
        let got = check(Format::SquareTransactions, &bytes, Policy::default());
        assert_eq!(
            outlines(&got),
            with(
                &TRANSACTIONS_README,
                &[(
                    2,
                    "skip W9pD3kLs6TqZ2vMx8BnR5cYhJgFaE line 4: nothing to send (Total Collected \
                     less tips and gift card sales is 0)"
                )]
            )
        );
    }

    #[test]
    fn the_excel_resaved_file_has_dates_without_times() {
        let read = |policy: Policy, encoding| {
            let options = ReadOptions { encoding, policy, ..ReadOptions::default() };
            read_all(&source(Format::SquareTransactions), EXCEL, &options).0
        };
        let cp1252 = Some(encoding_rs::WINDOWS_1252);
        let refund = "skip F1qW4eR7tY0uI3oP6aS9dF2gH5 line 4: refund (Event Type = Refund)";

        let got = read(Policy::default(), cp1252);
        assert_eq!(outlines(&got), ["reject line 2 field Time", "reject line 3 field Time", refund]);
        let Got::Reject { reason, .. } = &got[0] else { panic!("{got:?}") };
        assert!(
            reason.starts_with(
                "order `E4rT7yU1iO3pA6sD9fG2hJ5kL8` not taken: empty: the row has a date but no time of day"
            ),
            "{reason}"
        );

        let noon = Policy { date_only: DateOnly::Noon, ..Policy::default() };
        let expected = [
            "purchase E4rT7yU1iO3pA6sD9fG2hJ5kL8 at 1741968000 value 1240.92 lines 0/0 email 0 phone 0 external 1",
            "purchase F1qW4eR7tY0uI3oP6aS9dF2gH5 at 1741968000 value 19.44 lines 0/0 email 0 phone 0 external 0",
            refund,
        ];
        assert_eq!(outlines(&read(noon.clone(), cp1252)), expected);
        // Only unused columns hold non-ASCII bytes, so a wrong decoding changes nothing.
        assert_eq!(outlines(&read(noon, None)), expected);
    }

    #[test]
    fn the_excel_customer_name_survives_decoding_and_is_never_sent() {
        let (text, _, had_errors) = encoding_rs::WINDOWS_1252.decode(EXCEL);
        assert!(!had_errors);
        assert!(text.contains(",Zoë Ørsted,") && text.contains(",Café Mug,"));
        assert!(encoding_rs::UTF_8.decode_without_bom_handling(EXCEL).1);

        let options = ReadOptions {
            encoding: Some(encoding_rs::WINDOWS_1252),
            policy: Policy { date_only: DateOnly::Noon, ..Policy::default() },
            ..ReadOptions::default()
        };
        let mut seen = Vec::new();
        read_any(Format::SquareTransactions, EXCEL, &options, &mut |p| {
            seen.push(format!("{p:?}"));
            ControlFlow::Continue(())
        })
        .unwrap();
        let seen = seen.join("\n");
        assert!(seen.contains("CX7QW2ER9TY4UI6OP1AS3DEXA3"), "{seen}");
        for never in ["Zoë", "Ørsted", "Zo\u{fffd}", "Café", "Walnut"] {
            assert!(!seen.contains(never), "{never} in {seen}");
        }
    }

    #[test]
    fn variants_of_the_exports_read_the_same() {
        type Variant = (&'static str, Box<dyn Fn(Sample) -> Sample>, bool);
        let variants = || -> Vec<Variant> {
            vec![
                ("columns reversed", Box::new(Sample::reversed), false),
                ("unknown column", Box::new(|t| t.with_column("Loyalty Tier", "gold")), false),
                ("crlf", Box::new(|t| t), true),
                (
                    "older export without the newest columns",
                    Box::new(|t| t.without("Channel").without("Card Brand")),
                    true,
                ),
            ]
        };
        let files: [(Format, &str, &[&str]); 2] = [
            (Format::SquareTransactions, TRANSACTIONS, &TRANSACTIONS_README),
            (Format::SquareItems, ITEMS, &ITEMS_README),
        ];
        for (format, text, expected) in files {
            for (name, variant, crlf) in variants() {
                let bytes = variant(Sample::parse(text)).to_csv(crlf);
                let (got, summary) = read_all(&source(format), &bytes[..], &ReadOptions::default());
                assert_eq!(outlines(&got), expected, "{format:?} {name}");
                let expected_ignored: &[&str] = match name {
                    "unknown column" => &["Loyalty Tier"],
                    _ => &[],
                };
                assert_eq!(summary.ignored_columns, expected_ignored, "{format:?} {name}");
            }
        }
    }

    #[test]
    fn missing_optional_columns_fall_back() {
        // No `Customer Reference ID`: one external id left. No `Time Zone`: the source's zone.
        let bytes = Sample::parse(TRANSACTIONS).without("Customer Reference ID").without("Time Zone").to_csv(false);
        let got = check(Format::SquareTransactions, &bytes, Policy::default());
        assert_eq!(
            outlines(&got),
            with(&TRANSACTIONS_README, &[(0, &TRANSACTIONS_README[0].replace("external 2", "external 1"))])
        );
        // No `Event Type` (older files): a refund is told by its negative amount.
        for (format, text, line) in [(Format::SquareTransactions, TRANSACTIONS, 5), (Format::SquareItems, ITEMS, 6)] {
            let bytes = Sample::parse(text).without("Event Type").to_csv(false);
            let got = check(format, &bytes, Policy::default());
            let column = match format {
                Format::SquareTransactions => "Total Collected",
                _ => "Qty",
            };
            assert_eq!(got[3].outline(), format!("skip {Q7B} line {line}: refund (negative {column})"));
            assert_eq!(got.len(), 4);
        }
    }

    #[test]
    fn the_time_zone_column_wins_over_the_source() {
        let cases = [
            ("Pacific Time (US & Canada)", Some(1741981330 + 3 * 3600)),
            ("Central Time (US & Canada)", Some(1741981330 + 3600)),
            ("Arizona", Some(1741981330 + 3 * 3600)),
            ("London", Some(1741966930)),
            ("Europe/Berlin", Some(1741963330)),
            ("Mars Standard Time", None),
        ];
        for (zone, expected) in cases {
            let bytes = Sample::parse(TRANSACTIONS).set(0, "Time Zone", zone).to_csv(false);
            let got = check(Format::SquareTransactions, &bytes, Policy::default());
            match (&got[0], expected) {
                (Got::Purchase(e), Some(t)) => assert_eq!(e.event_time, t, "{zone}"),
                (Got::Reject { line, field, .. }, None) => {
                    assert_eq!((*line, field.as_deref()), (2, Some("Time Zone")))
                }
                (other, _) => panic!("{zone}: {other:?}"),
            }
        }
    }

    #[test]
    fn every_mapped_time_zone_exists() {
        for (name, zone) in TIME_ZONES {
            assert!(jiff::tz::TimeZone::get(zone).is_ok(), "{name} → {zone}");
        }
        for (name, zone) in [
            ("Eastern Time (US & Canada)", "America/New_York"),
            ("Central Time (US & Canada)", "America/Chicago"),
            ("Mountain Time (US & Canada)", "America/Denver"),
            ("Pacific Time (US & Canada)", "America/Los_Angeles"),
            ("Alaska", "America/Anchorage"),
            ("Hawaii", "Pacific/Honolulu"),
            ("Atlantic Time (Canada)", "America/Halifax"),
            ("Arizona", "America/Phoenix"),
            ("London", "Europe/London"),
            ("Sydney", "Australia/Sydney"),
        ] {
            assert_eq!(super::iana_zone(name), Some(zone));
        }
    }

    #[test]
    fn a_bad_cell_rejects_its_transaction_and_the_rest_is_delivered() {
        let bytes = Sample::parse(TRANSACTIONS).set(1, "Total Collected", "$19,44").to_csv(false);
        let got = check(Format::SquareTransactions, &bytes, Policy::default());
        assert_eq!(outlines(&got), with(&TRANSACTIONS_README, &[(1, "reject line 3 field Total Collected")]));
        let Got::Reject { reason, .. } = &got[1] else { panic!("{got:?}") };
        assert_eq!(reason, "order `K2mV8xRt5NcW1qLz7PdS4hYbJfGeU` not taken: not an amount: `$19,44`");

        // In the item file a bad second row spoils its whole transaction, naming that row.
        let bytes = Sample::parse(ITEMS).set(1, "Net Sales", "ten").to_csv(false);
        let got = check(Format::SquareItems, &bytes, Policy::default());
        assert_eq!(outlines(&got), with(&ITEMS_README, &[(0, "reject line 3 field Net Sales")]));

        // A row without its transaction id stands alone (and is told before the open order).
        let bytes = Sample::parse(ITEMS).set(2, "Transaction ID", "").to_csv(false);
        let got = check(Format::SquareItems, &bytes, Policy::default());
        assert_eq!(
            outlines(&got),
            ["reject line 4 field Transaction ID", ITEMS_README[0], ITEMS_README[2], ITEMS_README[3]]
        );
    }

    #[test]
    fn a_file_without_the_essential_columns_is_unreadable() {
        let cases: [(Format, Vec<u8>, &str); 3] = [
            (
                Format::SquareTransactions,
                Sample::parse(TRANSACTIONS).without("Total Collected").to_csv(false),
                "missing column `Total Collected`",
            ),
            (
                Format::SquareItems,
                Sample::parse(ITEMS).without("Transaction ID").without("Qty").to_csv(false),
                "missing column `Qty`",
            ),
            (
                // An item file is not a transactions file.
                Format::SquareTransactions,
                ITEMS.as_bytes().to_vec(),
                "missing column `Total Collected`",
            ),
        ];
        for (format, bytes, message) in cases {
            let err = parse(format, &bytes).unwrap_err();
            assert!(err.to_string().contains(message), "{err}");
        }
    }
}
