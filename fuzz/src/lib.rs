//! What the fuzz targets share: reading bytes as one format the way the agent does (then building
//! every order into an event), and an arbitrary raw order for `event::build`. A panic anywhere is
//! the crash libFuzzer reports; errors, rejects and skips are fine.

use arbitrary::Arbitrary;
use offline_events_agent::event::{
    self, money::Currency, name::NameTable, pii::parse_region, Amount, RawItem, RawOrder,
};
use offline_events_agent::format::{self, Format, Parsed, ReadOptions};
use std::ops::ControlFlow;

/// Read `data` as every format of the registry in turn (see [`read_as`]). Most readers give up at
/// a header that is not theirs, so an input costs little more than one read in its own format.
pub fn read_as_every_format(data: &[u8]) {
    for (_, format) in Format::ALL {
        read_as(*format, data);
    }
}

/// Read `data` as `format`, building every order into an event. The last byte picks the options a
/// source may set (legacy encoding, `;` delimiter, decimal comma, quoting, a path mapping for the
/// formats whose columns are dotted paths), so one corpus covers them without changing what the
/// reader sees.
pub fn read_as(format: Format, data: &[u8]) {
    let flags = data.last().copied().unwrap_or(0);
    let decimal = if flags & 4 != 0 { ',' } else { format.default_decimal_separator() };
    let options = ReadOptions {
        encoding: (flags & 1 != 0).then_some(encoding_rs::WINDOWS_1252),
        csv: format::Dialect {
            delimiter: (flags & 2 != 0).then_some(b';'),
            quote: match flags >> 4 & 3 {
                1 => format::Quoting::Off,
                2 => format::Quoting::Char(b'\''),
                _ => format::Quoting::Detect,
            },
        },
        // JSON: records, fields and items found through dotted paths (the mapped reader).
        columns: if flags & 64 != 0 && format.columns_are_paths() {
            [
                ("records", "d.r"),
                ("order_id", "o.id"),
                ("event_time", "o.t"),
                ("email", "c.e"),
                ("items", "l"),
                ("price", "p.v"),
            ]
            .into_iter()
            .filter(|(k, _)| format.column_fields().contains(k))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
        } else {
            Default::default()
        },
        decimal_separator: Some(decimal),
        ..ReadOptions::default()
    };
    let defaults = defaults(format, decimal, "UTC", "US");
    let _ = format::read(format, data, &options, &mut |parsed| {
        if let Parsed::Order(raw) = parsed {
            let _ = event::build(&raw, &defaults);
        }
        ControlFlow::Continue(())
    });
}

/// What a source contributes, as the config would give it.
pub fn defaults(format: Format, decimal: char, zone: &str, region: &str) -> event::SourceDefaults {
    event::SourceDefaults {
        time_zone: jiff::tz::TimeZone::get(zone).unwrap_or(jiff::tz::TimeZone::UTC),
        time_formats: format.default_time_formats().iter().map(|f| f.to_string()).collect(),
        currency: Currency::parse("USD"),
        shop_id: Some("s042".into()),
        till_id: Some("t1".into()),
        decimal_separator: decimal,
        phone_region: parse_region(region),
        event_names: NameTable::default(),
    }
}

/// A raw order as any reader might hand it over, with the source settings it is built under.
#[derive(Debug, Arbitrary)]
pub struct Order {
    order_id: String,
    event: Option<String>,
    event_time: String,
    emails: Vec<String>,
    phones: Vec<String>,
    external_ids: Vec<String>,
    currency: Option<String>,
    value: Option<String>,
    shop_id: Option<String>,
    till_id: Option<String>,
    description: Option<String>,
    time_zone: Option<String>,
    items: Vec<Item>,
    decimal_comma: bool,
    zone: u8,
    region: u8,
    format: u8,
}

#[derive(Debug, Arbitrary)]
pub struct Item {
    content_id: Option<String>,
    content_name: Option<String>,
    content_category: Option<String>,
    brand: Option<String>,
    price: Option<String>,
    quantity: Option<String>,
}

const ZONES: [&str; 4] = ["UTC", "America/New_York", "Europe/Berlin", "Asia/Manila"];
const REGIONS: [&str; 5] = ["US", "DE", "PH", "GB", "XX"];

/// Build `order` into an event (and its wire JSON) under the settings it carries.
pub fn build(order: Order) {
    let formats = Format::ALL;
    let (_, format) = formats[usize::from(order.format) % formats.len()];
    let decimal = if order.decimal_comma { ',' } else { '.' };
    let defaults = defaults(
        format,
        decimal,
        ZONES[usize::from(order.zone) % ZONES.len()],
        REGIONS[usize::from(order.region) % REGIONS.len()],
    );
    let raw = RawOrder {
        line: 2,
        order_id: order.order_id,
        event: order.event,
        event_time: order.event_time,
        emails: order.emails,
        phones: order.phones,
        external_ids: order.external_ids,
        currency: order.currency,
        value: order.value.map(Amount::from),
        shop_id: order.shop_id,
        till_id: order.till_id,
        description: order.description,
        time_zone: order.time_zone,
        items: order
            .items
            .into_iter()
            .enumerate()
            .map(|(i, item)| RawItem {
                line: 2 + i as u64,
                content_id: item.content_id,
                content_name: item.content_name,
                content_category: item.content_category,
                brand: item.brand,
                price: item.price.map(Amount::from),
                quantity: item.quantity.map(Amount::from),
            })
            .collect(),
        // Fields a reader sets from the file's own structure (consent, and any added later).
        ..RawOrder::default()
    };
    if let Ok((event, _)) = event::build(&raw, &defaults) {
        let _ = offline_events_agent::tiktok::wire::event_json(&event);
    }
}
