//! The event model and the pure step that turns one raw order (strings as a reader found them) into
//! a TikTok-ready event: names mapped, time in Unix seconds, money exact, identifiers hashed, the
//! event id derived.
//!
//! Nothing here does I/O. Raw PII enters in [`RawOrder`] and leaves only as [`pii::HashedId`].

pub mod id;
pub mod money;
pub mod name;
pub mod pii;
#[cfg(test)]
mod props;
pub mod screen;
pub mod time;

use id::EventId;
use jiff::tz::TimeZone;
pub use money::Amount;
use money::Currency;
use name::NameTable;
use pii::HashedId;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

/// [`str::trim`], with a fast path for the usual cell, which has nothing to trim: its first and
/// last bytes printable ASCII. The same result as `str::trim` for every string (a property test
/// holds it to that); a reader calls it ~25 times an order, where std's general search over
/// Unicode white space was 2% of a backlog's instructions.
#[inline]
pub fn trim(text: &str) -> &str {
    match text.as_bytes() {
        [first, .., last] if first.is_ascii_graphic() && last.is_ascii_graphic() => text,
        [only] if only.is_ascii_graphic() => text,
        _ => text.trim(),
    }
}

/// One order as a reader found it. Every value is the text of the export (trimmed or not), but
/// for amounts the reader computed, which are exact.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawOrder {
    /// Line of the file where the order starts (1-based).
    pub line: u64,
    pub order_id: String,
    pub event: Option<String>,
    pub event_time: String,
    pub emails: Vec<String>,
    pub phones: Vec<String>,
    pub external_ids: Vec<String>,
    pub currency: Option<String>,
    pub value: Option<Amount>,
    pub shop_id: Option<String>,
    pub till_id: Option<String>,
    pub description: Option<String>,
    /// IANA time zone named by the file itself (e.g. Square's `Time Zone` column, mapped); wins
    /// over the source's.
    pub time_zone: Option<String>,
    /// The customer's consent as the file records it; `None` when the file has no such field.
    pub consent: Option<bool>,
    pub items: Vec<RawItem>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawItem {
    pub line: u64,
    pub content_id: Option<String>,
    pub content_name: Option<String>,
    pub content_category: Option<String>,
    pub brand: Option<String>,
    pub price: Option<Amount>,
    pub quantity: Option<Amount>,
}

/// What a source contributes when the file does not say: time zone, currency, shop, till, region.
#[derive(Debug, Clone)]
pub struct SourceDefaults {
    pub time_zone: TimeZone,
    pub time_formats: Vec<String>,
    pub currency: Option<Currency>,
    pub shop_id: Option<String>,
    pub till_id: Option<String>,
    pub decimal_separator: char,
    pub phone_region: Option<phonenumber::country::Id>,
    pub event_names: NameTable,
}

/// A line item, ready for the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Content {
    pub content_id: String,
    pub content_name: Option<String>,
    pub content_category: Option<String>,
    pub brand: Option<String>,
    /// Unit price.
    pub price: Decimal,
    pub quantity: i64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct User {
    pub email: Vec<HashedId>,
    pub phone: Vec<HashedId>,
    pub external_id: Vec<HashedId>,
}

impl User {
    pub fn is_empty(&self) -> bool {
        self.email.is_empty() && self.phone.is_empty() && self.external_id.is_empty()
    }
}

/// A normalised event. Holds no raw PII.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event: &'static str,
    pub event_time: i64,
    pub event_id: EventId,
    pub user: User,
    pub contents: Vec<Content>,
    pub currency: Currency,
    pub value: Decimal,
    pub order_id: String,
    pub shop_id: String,
    pub description: Option<String>,
}

impl Event {
    pub fn num_items(&self) -> i64 {
        self.contents.iter().map(|c| c.quantity).sum()
    }
}

/// Why an order could not become an event: the field and the line it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: field `{field}`: {reason}")]
pub struct BuildError {
    pub line: u64,
    pub field: &'static str,
    pub reason: String,
}

/// Something dropped from an event that did not stop it (an identifier that could not be normalised).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub line: u64,
    pub field: &'static str,
    pub reason: String,
}

/// Turn a raw order into an event. Identifiers that cannot be normalised are dropped with a warning;
/// every other problem rejects the whole order, naming the field and line.
pub fn build(raw: &RawOrder, defaults: &SourceDefaults) -> Result<(Event, Vec<Warning>), BuildError> {
    build_taking(&mut raw.clone(), defaults)
}

/// [`build`], moving the text the event keeps out of `raw` instead of copying it (an ingest's
/// reader: a copy and a free fewer per kept cell). What is left of `raw` is its line, consent,
/// identifiers and amounts; its `order_id` too when this fails (the items' text may be gone then).
pub fn build_taking(raw: &mut RawOrder, defaults: &SourceDefaults) -> Result<(Event, Vec<Warning>), BuildError> {
    let err = |line: u64, field: &'static str, reason: String| BuildError { line, field, reason };
    let line = raw.line;
    no_nul_bytes(raw)?;
    let order_id = trim(&raw.order_id);
    if order_id.is_empty() {
        return Err(err(line, "order_id", "empty".into()));
    }
    let event = defaults
        .event_names
        .resolve(raw.event.as_deref().unwrap_or(""))
        .map_err(|e| err(line, "event", e.to_string()))?;
    let file_zone = match non_empty(raw.time_zone.as_deref()) {
        Some(name) => Some(
            TimeZone::get(name.trim())
                .map_err(|_| err(line, "time_zone", format!("{} is not an IANA time zone", pii::shown(name))))?,
        ),
        None => None,
    };
    let zone = file_zone.as_ref().unwrap_or(&defaults.time_zone);
    let event_time = time::parse_event_time(&raw.event_time, zone, &defaults.time_formats)
        .map_err(|e| err(line, "event_time", e.to_string()))?;
    let currency = match non_empty(raw.currency.as_deref()) {
        Some(code) => Currency::parse(code)
            .ok_or_else(|| err(line, "currency", format!("{} is not a currency TikTok accepts", pii::shown(code))))?,
        None => defaults
            .currency
            .ok_or_else(|| err(line, "currency", "empty, and the source has no default currency".into()))?,
    };
    let shop_id = non_empty(raw.shop_id.as_deref())
        .or(defaults.shop_id.as_deref())
        .ok_or_else(|| err(line, "shop_id", "empty, and the source has no default shop_id".into()))
        .map(trim)?;
    let till_id = trim(non_empty(raw.till_id.as_deref()).or(defaults.till_id.as_deref()).unwrap_or(""));
    let event_id = EventId::derive(shop_id, till_id, order_id);

    let mut contents = Vec::with_capacity(raw.items.len());
    for item in &mut raw.items {
        contents.push(build_content(item, defaults.decimal_separator)?);
    }
    let value = match given(raw.value.as_ref()) {
        Some(v) => v.resolve(defaults.decimal_separator).map_err(|e| err(line, "value", amount_problem(v, e)))?,
        None if !contents.is_empty() => contents
            .iter()
            .try_fold(Decimal::ZERO, |sum, c| sum.checked_add(c.price.checked_mul(Decimal::from(c.quantity))?))
            .ok_or_else(|| err(line, "value", "out of range (the sum of the items)".into()))?,
        None => return Err(err(line, "value", "empty, and the order has no priced items".into())),
    };
    if value.is_sign_negative() && !value.is_zero() {
        // A refund or return as a whole: not a purchase (readers net partial refunds themselves).
        return Err(err(line, "value", format!("negative ({value}), so this is not a sale")));
    }

    let mut warnings = Vec::new();
    let user = build_user(raw, defaults, &mut warnings);
    // The file's shop when it names one, else the source's (checked above: one of them is there).
    let shop_id = take_non_empty(&mut raw.shop_id)
        .unwrap_or_else(|| defaults.shop_id.as_deref().unwrap_or_default().trim().to_string());
    let event = Event {
        event,
        event_time,
        event_id,
        user,
        contents,
        currency,
        value,
        order_id: take_trimmed(&mut raw.order_id),
        shop_id,
        description: raw.description.take().filter(|d| !trim(d).is_empty()),
    };
    Ok((event, warnings))
}

/// `text` trimmed: moved out when it has nothing to trim, else copied.
fn take_trimmed(text: &mut String) -> String {
    let trimmed = trim(text);
    if trimmed.len() == text.len() {
        std::mem::take(text)
    } else {
        trimmed.to_string()
    }
}

/// [`take_trimmed`] of a cell that has text.
fn take_non_empty(cell: &mut Option<String>) -> Option<String> {
    cell.as_mut().filter(|t| !trim(t).is_empty()).map(take_trimmed)
}

/// Why an amount cell cannot be read: a cell that is not an amount is described by its shape
/// ([`pii::shape`]), never quoted, as it may be a phone number in the wrong column.
fn amount_problem(amount: &Amount, e: money::MoneyError) -> String {
    match (amount.as_text(), &e) {
        (Some(text), money::MoneyError::NotAnAmount) => format!("{e} (the cell {})", pii::shape(text)),
        _ => e.to_string(),
    }
}

fn build_content(item: &mut RawItem, decimal: char) -> Result<Content, BuildError> {
    let err = |field: &'static str, reason: String| BuildError { line: item.line, field, reason };
    let content_id = take_non_empty(&mut item.content_id).ok_or_else(|| err("content_id", "empty".into()))?;
    let price = match given(item.price.as_ref()) {
        Some(p) => p.resolve(decimal).map_err(|e| err("price", amount_problem(p, e)))?,
        None => return Err(err("price", "empty".into())),
    };
    let quantity = match given(item.quantity.as_ref()) {
        Some(q) => q.resolve(decimal).map_err(|e| err("quantity", amount_problem(q, e)))?,
        None => Decimal::ONE,
    };
    if quantity.is_sign_negative() && !quantity.is_zero() {
        // A return or void line: the order is not the purchase it looks like.
        return Err(err("quantity", "negative (a returned or voided line), so this is not a plain sale".into()));
    }
    // TikTok wants an integer quantity. A fractional one (0.5 kg) becomes one unit priced at the line total.
    let (price, quantity) = if quantity.fract().is_zero() {
        let q = quantity.to_i64().ok_or_else(|| err("quantity", "out of range".into()))?;
        (price, q)
    } else {
        (price.checked_mul(quantity).ok_or_else(|| err("quantity", "out of range".into()))?, 1)
    };
    Ok(Content {
        content_id,
        content_name: take_non_empty(&mut item.content_name),
        content_category: take_non_empty(&mut item.content_category),
        brand: take_non_empty(&mut item.brand),
        price,
        quantity,
    })
}

/// A NUL byte is never part of the text of a real export: the file is damaged there, so the order
/// is not taken (rather than sending, or hashing, text with NULs in it).
fn no_nul_bytes(raw: &RawOrder) -> Result<(), BuildError> {
    let nul = |line: u64, field: &'static str| BuildError {
        line,
        field,
        reason: "contains a NUL byte (the file is damaged there)".into(),
    };
    let has_nul = |text: Option<&str>| text.is_some_and(|t| t.contains('\0'));
    fn amount(a: &Option<Amount>) -> Option<&str> {
        a.as_ref().and_then(Amount::as_text)
    }
    let order = [
        ("order_id", Some(raw.order_id.as_str())),
        ("event", raw.event.as_deref()),
        ("event_time", Some(raw.event_time.as_str())),
        ("currency", raw.currency.as_deref()),
        ("value", amount(&raw.value)),
        ("shop_id", raw.shop_id.as_deref()),
        ("till_id", raw.till_id.as_deref()),
        ("description", raw.description.as_deref()),
        ("time_zone", raw.time_zone.as_deref()),
    ];
    if let Some((field, _)) = order.iter().find(|(_, text)| has_nul(*text)) {
        return Err(nul(raw.line, field));
    }
    let identifiers = [("email", &raw.emails), ("phone", &raw.phones), ("external_id", &raw.external_ids)];
    if let Some((field, _)) = identifiers.iter().find(|(_, list)| list.iter().any(|t| has_nul(Some(t)))) {
        return Err(nul(raw.line, field));
    }
    for item in &raw.items {
        let fields = [
            ("content_id", item.content_id.as_deref()),
            ("content_name", item.content_name.as_deref()),
            ("content_category", item.content_category.as_deref()),
            ("brand", item.brand.as_deref()),
            ("price", amount(&item.price)),
            ("quantity", amount(&item.quantity)),
        ];
        if let Some((field, _)) = fields.iter().find(|(_, text)| has_nul(*text)) {
            return Err(nul(item.line, field));
        }
    }
    Ok(())
}

fn build_user(raw: &RawOrder, defaults: &SourceDefaults, warnings: &mut Vec<Warning>) -> User {
    let mut user = User::default();
    let mut warn = |field: &'static str, reason: String| warnings.push(Warning { line: raw.line, field, reason });
    for email in &raw.emails {
        match pii::hash_email(email) {
            Ok(Some(h)) => push_unique(&mut user.email, h),
            Ok(None) => {}
            Err(e) => warn("email", format!("dropped: {e}")),
        }
    }
    for phone in &raw.phones {
        match pii::hash_phone(phone, defaults.phone_region) {
            Ok(Some(h)) => push_unique(&mut user.phone, h),
            Ok(None) => {}
            Err(e) => warn("phone", format!("dropped: {e}")),
        }
    }
    for id in &raw.external_ids {
        if let Some(h) = pii::hash_external_id(id) {
            push_unique(&mut user.external_id, h);
        }
    }
    user
}

fn push_unique(list: &mut Vec<HashedId>, h: HashedId) {
    if !list.contains(&h) {
        list.push(h);
    }
}

/// An amount that is given: not missing, not blank text.
fn given(a: Option<&Amount>) -> Option<&Amount> {
    a.filter(|a| !a.is_blank())
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.filter(|v| !trim(v).is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::str::FromStr;

    #[test]
    fn the_fast_trim_trims_as_str_trim_does() {
        let cases = [
            "",
            " ",
            "a",
            " a",
            "a ",
            "\u{7f}",
            "a\u{7f}",
            "\u{a0}a",
            "a\u{3000}",
            "é",
            " é ",
            "\ta b\n",
            "x\u{85}",
            "ab",
            "a b",
        ];
        for text in cases {
            assert_eq!(trim(text), text.trim(), "{text:?}");
        }
    }

    fn defaults() -> SourceDefaults {
        SourceDefaults {
            time_zone: TimeZone::get("America/New_York").unwrap(),
            time_formats: vec![],
            currency: Currency::parse("USD"),
            shop_id: Some("s042".into()),
            till_id: Some("t1".into()),
            decimal_separator: '.',
            phone_region: pii::parse_region("US"),
            event_names: NameTable::default(),
        }
    }

    fn item(line: u64, id: &str, price: &str, qty: &str) -> RawItem {
        RawItem {
            line,
            content_id: Some(id.into()),
            price: Some(price.into()),
            quantity: Some(qty.into()),
            ..RawItem::default()
        }
    }

    fn order() -> RawOrder {
        RawOrder {
            line: 2,
            order_id: "000123".into(),
            event: Some("sale".into()),
            event_time: "2024-01-08 08:52:50".into(),
            emails: vec![" ALICE_abc@gmail.com ".into()],
            phones: vec!["(+1)2133734253".into(), "not a phone".into()],
            items: vec![item(2, "1077218", "8.00", "2"), item(3, "1197218", "30", "1")],
            ..RawOrder::default()
        }
    }

    /// The reader's build moves the text it keeps out of the order, trimmed the same whether moved
    /// (nothing to trim) or copied, and leaves what the ingest still reads: on a failure, the order
    /// id for the reject's message.
    #[test]
    fn a_taking_build_moves_kept_text_and_leaves_the_order_id_when_it_fails() {
        let cases = [
            // (order id, shop, description, content name) as written → as sent
            ("A1", Some("S9"), Some(" a note "), Some("Socks"), ("A1", "S9", Some(" a note "), Some("Socks"))),
            (" A1 ", Some(" S9\t"), Some(" "), Some(" Socks "), ("A1", "S9", None, Some("Socks"))),
            ("A1", None, None, Some("  "), ("A1", "s042", None, None)),
        ];
        for (order_id, shop, description, name, want) in cases {
            let mut raw = order();
            raw.order_id = order_id.into();
            raw.shop_id = shop.map(Into::into);
            raw.description = description.map(Into::into);
            raw.items[0].content_name = name.map(Into::into);
            let (event, _) = build_taking(&mut raw, &defaults()).unwrap();
            let got = (
                event.order_id.as_str(),
                event.shop_id.as_str(),
                event.description.as_deref(),
                event.contents[0].content_name.as_deref(),
            );
            assert_eq!(got, want, "{order_id:?}");
            assert_eq!(raw.line, 2);
            assert_eq!(raw.emails.len(), 1, "identifiers are read, not taken");
        }
        let mut bad = order();
        bad.order_id = " B7 ".into();
        bad.items[1].price = Some("lots".into());
        let e = build_taking(&mut bad, &defaults()).unwrap_err();
        assert_eq!((e.field, bad.order_id.as_str()), ("price", " B7 "));
    }

    #[test]
    fn a_sale_becomes_the_reference_example() {
        let (event, warnings) = build(&order(), &defaults()).unwrap();
        assert_eq!(event.event, "Purchase");
        assert_eq!(event.event_time, 1704721970);
        assert_eq!(event.event_id.as_str(), "s042:t1:000123");
        assert_eq!(event.value, Decimal::from_str("46").unwrap());
        assert_eq!(event.num_items(), 3);
        assert_eq!(event.user.email[0].as_str(), "848a771458438fc2ec420560d769fb9b9b86851ee338ec56517baabd79d3bb4f");
        assert_eq!(event.user.phone, vec![pii::hash_phone("+12133734253", None).unwrap().unwrap()]);
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].field, "phone");
    }

    #[test]
    fn bad_fields_reject_the_order_naming_field_and_line() {
        type Mutation = Box<dyn Fn(&mut RawOrder)>;
        let cases: Vec<(Mutation, &str, u64)> = vec![
            (Box::new(|o| o.order_id = " ".into()), "order_id", 2),
            (Box::new(|o| o.event = Some("refund".into())), "event", 2),
            (Box::new(|o| o.event_time = "soon".into()), "event_time", 2),
            (Box::new(|o| o.currency = Some("XXX".into())), "currency", 2),
            (Box::new(|o| o.value = Some("lots".into())), "value", 2),
            (Box::new(|o| o.items[1].price = Some("$x".into())), "price", 3),
            (Box::new(|o| o.items[1].content_id = None), "content_id", 3),
            (Box::new(|o| o.items[0].quantity = Some("two".into())), "quantity", 2),
            (Box::new(|o| o.items[1].quantity = Some("-1".into())), "quantity", 3),
            (Box::new(|o| o.items[1].content_name = Some("so\0cks".into())), "content_name", 3),
            (Box::new(|o| o.emails[0].push('\0')), "email", 2),
            (Box::new(|o| o.items[0].price = Some("1".repeat(16).into())), "price", 2),
            (Box::new(|o| o.value = Some("-5.00".into())), "value", 2),
            (Box::new(|o| o.items[1].price = Some("-40".into())), "value", 2),
        ];
        for (mutate, field, line) in cases {
            let mut o = order();
            mutate(&mut o);
            let e = build(&o, &defaults()).unwrap_err();
            assert_eq!((e.field, e.line), (field, line), "{e}");
        }
    }

    #[test]
    fn explicit_value_wins_and_fractional_quantities_become_one_line_total() {
        let mut o = order();
        o.value = Some("46.50".into());
        o.items = vec![item(2, "cheese", "20.00", "0.5")];
        let (event, _) = build(&o, &defaults()).unwrap();
        assert_eq!(event.value, Decimal::from_str("46.50").unwrap());
        assert_eq!(event.contents[0].quantity, 1);
        assert_eq!(event.contents[0].price, Decimal::from_str("10.000").unwrap());
    }

    #[test]
    fn a_zone_named_by_the_file_wins_over_the_source() {
        let mut o = order();
        o.time_zone = Some("America/Los_Angeles".into());
        let (event, _) = build(&o, &defaults()).unwrap();
        assert_eq!(event.event_time, 1704721970 + 3 * 3600);
        // An offset in the time itself still wins over both.
        o.event_time = "2024-01-08T08:52:50-05:00".into();
        assert_eq!(build(&o, &defaults()).unwrap().0.event_time, 1704721970);
        o.time_zone = Some("Pacific Time".into());
        let e = build(&o, &defaults()).unwrap_err();
        assert_eq!((e.field, e.line), ("time_zone", 2), "{e}");
    }

    #[test]
    fn missing_defaults_are_errors() {
        let mut d = defaults();
        d.currency = None;
        d.shop_id = None;
        assert_eq!(build(&order(), &d).unwrap_err().field, "currency");
        let mut o = order();
        o.currency = Some("eur".into());
        assert_eq!(build(&o, &d).unwrap_err().field, "shop_id");
    }
}
