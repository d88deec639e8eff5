//! Bad input. Every file of `tests/fixtures/bad-input/` (see its README.md), the format-agnostic
//! ones in every format of `Format::ALL`, and files made here (a 50 MB line, a file written byte
//! by byte, one deleted right after it is dropped, one without read permission) are dropped next to
//! a good file of the same format. The agent must never crash (exit 0 or 75, no panic), must
//! deliver every good order (the good file's, and the good rows of the bad file) with no
//! violation at the fake TikTok, and must record every bad part with a precise reason: a rejected
//! row naming the file, its line and why, an event dead on arrival with its reason, or the whole
//! file quarantined with a `.reason` beside it.
//!
//! Fixture text carries `{NOW-600}` placeholders (Unix seconds, an offset in seconds or with a
//! `m`/`h`/`d` unit, `|ms` for milliseconds or `|strftime` for a UTC date), filled in here so
//! that good rows are always recent.

use crate::support::*;
use offline_events_agent::event::id::EventId;
use offline_events_agent::format::Format;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);
/// Cases run side by side: each is a process that mostly waits on SQLite and loopback HTTP.
const WORKERS: usize = 4;
/// The peak memory the agent may use while reading a 50 MB line.
const MAX_RSS_KIB: u64 = 64 * 1024;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad-input")
}

// ---- what each file must become --------------------------------------------------------------

/// What the agent must make of a bad file.
#[derive(Debug, Clone)]
enum Expect {
    /// Exactly these: the file's good orders delivered, its bad rows rejected, its events that are
    /// out of the window dead on arrival; the file is archived.
    Parts(Parts),
    /// The file cannot be read at all: quarantined, its `.reason` containing these words.
    Quarantined(&'static str),
    /// Garbage in a format it was not meant for: quarantined, or at least one rejected row naming
    /// its line. Never taken silently.
    Recorded,
    /// Nothing in it: quarantined, or taken with nothing queued and nothing rejected.
    NothingOrQuarantined,
}

#[derive(Debug, Clone, Default)]
struct Parts {
    delivered: Vec<&'static str>,
    /// Line, field, words the reason contains.
    rejects: Vec<(u64, Option<&'static str>, &'static str)>,
    /// Order id and dead-letter reason.
    dead: Vec<(&'static str, &'static str)>,
    /// Order id and a content name its event must carry (decoding checks).
    names: Vec<(&'static str, &'static str)>,
}

impl Parts {
    fn delivered(mut self, ids: &[&'static str]) -> Self {
        self.delivered.extend(ids);
        self
    }
    fn reject(mut self, line: u64, field: Option<&'static str>, words: &'static str) -> Self {
        self.rejects.push((line, field, words));
        self
    }
    fn dead(mut self, order: &'static str, reason: &'static str) -> Self {
        self.dead.push((order, reason));
        self
    }
    fn named(mut self, order: &'static str, content_name: &'static str) -> Self {
        self.names.push((order, content_name));
        self
    }
    fn done(self) -> Expect {
        Expect::Parts(self)
    }
}

fn parts() -> Parts {
    Parts::default()
}

/// A corpus file, the format it is dropped as, and what must become of it.
struct Case {
    file: &'static str,
    format: &'static str,
    expect: Expect,
}

fn case(file: &'static str, format: &'static str, expect: Expect) -> Case {
    Case { file, format, expect }
}

/// Every file of the corpus, as its README.md lists it.
fn corpus() -> Vec<Case> {
    let fields = "row has 5 fields, header has 7";
    vec![
        case(
            "csv-truncated-last-row.csv",
            "native-csv",
            parts().delivered(&["TR1", "TR2"]).reject(4, None, fields).done(),
        ),
        case(
            "csv-unbalanced-quote.csv",
            "native-csv",
            parts().delivered(&["UQ1"]).reject(3, None, "runs over 3 lines: a quote that is never closed?").done(),
        ),
        case("csv-short-row.csv", "native-csv", parts().delivered(&["SR1", "SR3"]).reject(3, None, fields).done()),
        case(
            "csv-long-row.csv",
            "native-csv",
            parts().delivered(&["LR1", "LR3"]).reject(3, None, "row has 9 fields, header has 7").done(),
        ),
        case(
            "csv-invalid-dates.csv",
            "native-csv",
            parts()
                .delivered(&["ID1", "ID6"])
                .reject(3, Some("event_time"), "not a time in a known form")
                .reject(4, Some("event_time"), "not a time in a known form")
                .reject(5, Some("event_time"), "not a time in a known form")
                .reject(6, Some("event_time"), "neither seconds (10 digits) nor milliseconds")
                .done(),
        ),
        case(
            "csv-invalid-amounts.csv",
            "native-csv",
            parts()
                .delivered(&["IA1", "IA8"])
                .reject(3, Some("price"), "not an amount")
                .reject(4, Some("price"), "not an amount")
                .reject(5, Some("price"), "not an amount")
                .reject(6, Some("price"), "not an amount")
                .reject(7, Some("price"), "out of range")
                .reject(8, Some("quantity"), "not an amount")
                .done(),
        ),
        case(
            "csv-amount-overflow.csv",
            "native-csv",
            parts()
                .delivered(&["OV1", "OV4"])
                .reject(3, Some("value"), "out of range")
                .reject(4, Some("quantity"), "out of range")
                .done(),
        ),
        case(
            "csv-invalid-currency.csv",
            "native-csv",
            parts()
                .delivered(&["IC1", "IC5"])
                .reject(3, Some("currency"), "`XXX` is not a currency TikTok accepts")
                .reject(4, Some("currency"), "`EURO` is not a currency TikTok accepts")
                .reject(5, Some("currency"), "`€` is not a currency TikTok accepts")
                .done(),
        ),
        case(
            "csv-nonstandard-event-name.csv",
            "native-csv",
            parts()
                .delivered(&["EV1", "EV4"])
                .reject(3, Some("event"), "`Refund` maps to no standard TikTok event")
                .reject(4, Some("event"), "`Verkauf` maps to no standard TikTok event")
                .reject(6, Some("event"), "`purchase_v2` maps to no standard TikTok event")
                .done(),
        ),
        case(
            "binary-garbage.csv",
            "native-csv",
            Expect::Quarantined("missing required columns `order_id`, `event_time`"),
        ),
        case(
            "nul-padding.csv",
            "native-csv",
            parts().delivered(&["NP1", "NP2"]).reject(4, None, "only NUL bytes").done(),
        ),
        case(
            "nul-inside-a-field.csv",
            "native-csv",
            parts().delivered(&["NF1", "NF3"]).reject(3, Some("content_name"), "NUL byte").done(),
        ),
        case("empty.csv", "native-csv", Expect::Quarantined("empty file: no header")),
        case("header-only.csv", "native-csv", Expect::NothingOrQuarantined),
        case("bom-only.csv", "native-csv", Expect::Quarantined("empty file: no header")),
        case(
            "blank-lines-only.csv",
            "native-csv",
            Expect::Quarantined("missing required columns `order_id`, `event_time`"),
        ),
        case(
            "utf16le-with-bom.csv",
            "native-csv",
            parts().delivered(&["U16-1", "U16-2"]).named("U16-1", "Zoë's mug").named("U16-2", "Café crème").done(),
        ),
        case(
            "windows-1252.csv",
            "native-csv",
            parts().delivered(&["W1", "W2"]).named("W1", "Café au lait").named("W2", "Zoë Ørsted tote").done(),
        ),
        case(
            "invalid-utf8-in-one-field.csv",
            "native-csv",
            parts()
                .delivered(&["IU1", "IU3"])
                .named("IU1", "Zoë Ørsted tote")
                .reject(3, Some("content_name"), "not valid UTF-8")
                .done(),
        ),
        case("csv-duplicate-header-columns.csv", "native-csv", Expect::Quarantined("column `price` appears twice")),
        case(
            "csv-missing-required-column.csv",
            "native-csv",
            Expect::Quarantined("missing required column `event_time`"),
        ),
        case(
            "csv-order-rows-not-consecutive.csv",
            "native-csv",
            parts()
                .delivered(&["NC1", "NC2"])
                .reject(4, Some("order_id"), "appears again after other orders; its rows must be consecutive")
                .done(),
        ),
        case(
            "csv-negative-quantity.csv",
            "native-csv",
            parts().delivered(&["NQ1", "NQ3"]).reject(4, Some("quantity"), "negative").done(),
        ),
        case("csv-millisecond-timestamp.csv", "native-csv", parts().delivered(&["MS1"]).done()),
        case("csv-expired-40-days.csv", "native-csv", parts().delivered(&["EX2"]).dead("EX1", "expired").done()),
        case("csv-future-2-days.csv", "native-csv", parts().delivered(&["FU2"]).dead("FU1", "future").done()),
        case(
            "jsonl-malformed-line.jsonl",
            "jsonl",
            parts().delivered(&["JM1", "JM3"]).reject(2, None, "invalid JSON").done(),
        ),
        case(
            "jsonl-array-line.jsonl",
            "jsonl",
            parts().delivered(&["JA1", "JA3"]).reject(2, None, "not a JSON object").done(),
        ),
        case(
            "jsonl-nul-padding.jsonl",
            "jsonl",
            parts().delivered(&["JN1", "JN2"]).reject(3, None, "invalid JSON").done(),
        ),
        case(
            "jsonl-truncated-last-line.jsonl",
            "jsonl",
            parts().delivered(&["JT1"]).reject(2, None, "invalid JSON: EOF while parsing").done(),
        ),
        case(
            "json-truncated-document.json",
            "json",
            parts().delivered(&["JD1", "JD2"]).reject(4, None, "invalid JSON").done(),
        ),
        case(
            "json-record-not-an-object.json",
            "json",
            parts().delivered(&["JO1", "JO3"]).reject(3, None, "not a JSON object").done(),
        ),
        case("json-not-an-array.json", "json", Expect::Quarantined("the document is not an array of records")),
        case(
            "json-wrong-types.json",
            "json",
            parts()
                .delivered(&["JY1", "JY4"])
                .reject(3, Some("items"), "not an array")
                .reject(5, Some("value"), "must be a string or a number")
                .done(),
        ),
        case(
            "jsonl-wrong-types.jsonl",
            "jsonl",
            parts()
                .delivered(&["JW1", "JW6"])
                .reject(2, Some("items"), "not an array")
                .reject(3, Some("value"), "must be a string or a number")
                .reject(4, Some("order_id"), "must be a string or a number")
                .reject(5, Some("emial"), "unknown field")
                .done(),
        ),
        case(
            "arts-poslog-unclosed-tag.xml",
            "arts-poslog",
            Expect::Quarantined("line 13: malformed xml: ill-formed document: expected `</ExtendedAmount>`"),
        ),
        case(
            "arts-poslog-garbage-after-root.xml",
            "arts-poslog",
            parts()
                .delivered(&["100-7-902"])
                .reject(21, None, "text after the end of the document")
                .reject(22, None, "malformed xml near line 23: the file ends inside a transaction")
                .done(),
        ),
        case(
            "shopify-orders-invalid-total.csv",
            "shopify-orders",
            parts().delivered(&["#B1", "#B3"]).reject(3, Some("Total"), "not an amount").done(),
        ),
        case(
            "square-transactions-short-row.csv",
            "square-transactions",
            parts().delivered(&["SQ1txn", "SQ3txn"]).reject(3, None, fields).done(),
        ),
        case(
            "square-items-invalid-quantity.csv",
            "square-items",
            parts().delivered(&["SI1txn", "SI3txn"]).reject(3, Some("Qty"), "not an amount").done(),
        ),
        case(
            "loyverse-invalid-date-receipts-by-item.csv",
            "loyverse",
            parts().delivered(&["LV-1", "LV-3"]).reject(3, Some("event_time"), "not a time in a known form").done(),
        ),
        case(
            "toast-truncated-ItemSelectionDetails.csv",
            "toast",
            parts().delivered(&["TO1", "TO2"]).reject(4, None, "row has 6 fields, header has 10").done(),
        ),
        case(
            "sumup-invalid-amount.csv",
            "sumup",
            parts().delivered(&["SU1", "SU3"]).reject(3, Some("Preis (brutto)"), "not an amount").done(),
        ),
    ]
}

/// Corpus files that mean nothing in any format; each is also dropped as every format.
const ANY_FORMAT: [(&str, Expect); 4] = [
    ("binary-garbage.csv", Expect::Recorded),
    ("empty.csv", Expect::NothingOrQuarantined),
    ("bom-only.csv", Expect::NothingOrQuarantined),
    ("blank-lines-only.csv", Expect::NothingOrQuarantined),
];

// ---- good files ------------------------------------------------------------------------------

/// A good export of one format: its files (the first is the one read) and its order ids.
struct Good {
    files: Vec<(String, Vec<u8>)>,
    orders: Vec<String>,
}

/// A good export for each format, with recent times. A format of `Format::ALL` without one fails
/// `every_format_has_a_good_sample`: add it here.
fn good_sample(format: &str) -> Option<Good> {
    let at = |offset: i64, fmt: &str| fill(format!("{{NOW{offset}|{fmt}}}").as_bytes());
    let text = |s: String| s.into_bytes();
    let (name, body, orders): (&str, Vec<u8>, Vec<&str>) = match format {
        "native-csv" => ("good.csv", text(csv_orders("GOOD", 3, 2)), vec!["GOOD0", "GOOD1", "GOOD2"]),
        "jsonl" => {
            let line = |id: &str, t: i64| {
                format!(
                    r#"{{"order_id":"{id}","event_time":{t},"email":"{id}@example.com","items":[{{"content_id":"A","price":"2.50","quantity":2}},{{"content_id":"B","price":1,"quantity":1}}]}}"#
                )
            };
            let body = [line("GJ0", now() - 900), line("GJ1", now() - 800), String::new()].join("\n");
            ("good.jsonl", text(body), vec!["GJ0", "GJ1"])
        }
        "json" => {
            let record = |id: &str, t: i64| {
                serde_json::json!({"order_id": id, "event_time": t, "email": format!("{id}@example.com"),
                    "items": [{"content_id": "A", "price": "2.50", "quantity": 2}, {"content_id": "B", "price": 1}]})
            };
            let body = serde_json::to_string_pretty(&[record("GD0", now() - 900), record("GD1", now() - 800)]).unwrap();
            ("good.json", text(body), vec!["GD0", "GD1"])
        }
        "shopify-orders" => {
            let t = |o| String::from_utf8(at(o, "%Y-%m-%d %H:%M:%S +0000")).unwrap();
            let body = format!(
                "Name,Email,Financial Status,Paid at,Currency,Total,Created at,Lineitem quantity,Lineitem name,Lineitem price,Lineitem sku\n\
                 #G1,g1@example.com,paid,{a},USD,21.00,{a},2,Socks,8.00,SOCK-1\n\
                 #G1,,,,,,,1,Pin,5.00,PIN-1\n\
                 #G2,,paid,{b},USD,12.50,{b},1,Hat,12.50,HAT-1\n",
                a = t(-900),
                b = t(-800)
            );
            ("good.csv", text(body), vec!["#G1", "#G2"])
        }
        "square-transactions" => {
            let (d, h) =
                (|o| String::from_utf8(at(o, "%Y-%m-%d")).unwrap(), |o| String::from_utf8(at(o, "%H:%M:%S")).unwrap());
            let body = format!(
                "Date,Time,Time Zone,Total Collected,Transaction ID,Event Type,Customer ID\n\
                 {},{},,$21.00,G1txn,Payment,CUST-1\n{},{},,$12.50,G2txn,Payment,\n",
                d(-900),
                h(-900),
                d(-800),
                h(-800)
            );
            ("good.csv", text(body), vec!["G1txn", "G2txn"])
        }
        "square-items" => {
            let (d, h) =
                (|o| String::from_utf8(at(o, "%Y-%m-%d")).unwrap(), |o| String::from_utf8(at(o, "%H:%M:%S")).unwrap());
            let body = format!(
                "Date,Time,Time Zone,Item,Qty,Gross Sales,Net Sales,Tax,Transaction ID,Event Type,SKU\n\
                 {a},{b},,Socks,2.0,$16.00,$16.00,$0.00,G1txn,Payment,SOCK-1\n\
                 {a},{b},,Pin,1.0,$5.00,$5.00,$0.00,G1txn,Payment,PIN-1\n\
                 {c},{e},,Hat,1.0,$12.50,$12.50,$0.00,G2txn,Payment,HAT-1\n",
                a = d(-900),
                b = h(-900),
                c = d(-800),
                e = h(-800)
            );
            ("good.csv", text(body), vec!["G1txn", "G2txn"])
        }
        "loyverse" => {
            let t = |o| String::from_utf8(at(o, "%d/%m/%Y %H:%M")).unwrap();
            let body = format!(
                "\u{feff}Date,Receipt number,Receipt type,Item,Quantity,Net sales,Taxes,Status\n\
                 {a},G-1,Sale,Iced Latte,2.000,320.00,0.00,Closed\n\
                 {a},G-1,Sale,Banana Bread,1.000,140.00,0.00,Closed\n\
                 {b},G-2,Sale,Americano,1.000,150.00,0.00,Closed\n",
                a = t(-900),
                b = t(-800)
            );
            ("good-receipts-by-item.csv", text(body), vec!["G-1", "G-2"])
        }
        "toast" => {
            let t = |o| String::from_utf8(at(o, "%m/%d/%y %I:%M %p")).unwrap();
            let body = format!(
                "Order Id,Order #,Order Date,Check Id,Item Id,Menu Item,Net Price,Qty,Tax,Void?\n\
                 G1,1,{a},C1,I1,Burger,18.00,1.0,1.26,false\n\
                 G1,1,{a},C1,I2,Fries,5.00,1.0,0.35,false\n\
                 G2,2,{b},C2,I3,Salad,9.00,1.0,0.63,false\n",
                a = t(-900),
                b = t(-800)
            );
            ("good-ItemSelectionDetails.csv", text(body), vec!["G1", "G2"])
        }
        "sumup" => {
            let t = |o| String::from_utf8(at(o, "%d.%m.%Y, %H:%M")).unwrap();
            let body = format!(
                "Datum,Typ,Transaktionsnummer,Menge,Beschreibung,Währung,Preis (brutto)\n\
                 \"{a}\",Verkauf,G1,2,Cappuccino,EUR,7.60\n\"{a}\",Verkauf,G1,1,Croissant,EUR,2.90\n\
                 \"{b}\",Verkauf,G2,1,Espresso,EUR,2.10\n",
                a = t(-900),
                b = t(-800)
            );
            ("good.csv", text(body), vec!["G1", "G2"])
        }
        "dsfinvk" => {
            // `transactions.csv` joined with its `lines.csv`; `;`, decimal comma, local ISO times.
            let t = |o| String::from_utf8(at(o, "%Y-%m-%dT%H:%M:%S")).unwrap();
            let closing = t(-60);
            let receipts = format!(
                "Z_KASSE_ID;Z_ERSTELLUNG;Z_NR;BON_ID;BON_NR;BON_TYP;BON_STORNO;BON_ENDE;UMS_BRUTTO;KUNDE_ID\r\n\
                 KASSE-09;{closing};5;1;1;Beleg;0;{a};10,50;K-0042\r\nKASSE-09;{closing};5;2;2;Beleg;0;{b};2,90;\r\n",
                a = t(-900),
                b = t(-800)
            );
            let lines = format!(
                "Z_KASSE_ID;Z_ERSTELLUNG;Z_NR;BON_ID;POS_ZEILE;ARTIKELTEXT;GV_TYP;ART_NR;MENGE;STK_BR\r\n\
                 KASSE-09;{closing};5;1;1;Cappuccino;Umsatz;10021;2,000;3,80000\r\n\
                 KASSE-09;{closing};5;1;2;Croissant;Umsatz;20001;1,000;2,90000\r\n\
                 KASSE-09;{closing};5;2;1;Croissant;Umsatz;20001;1,000;2,90000\r\n"
            );
            return Some(Good {
                files: vec![("good-transactions.csv".into(), text(receipts)), ("good-lines.csv".into(), text(lines))],
                orders: vec!["KASSE-09-5-1".into(), "KASSE-09-5-2".into()],
            });
        }
        "arts-poslog" => {
            let t = |o| String::from_utf8(at(o, "%Y-%m-%dT%H:%M:%SZ")).unwrap();
            let day = String::from_utf8(at(-900, "%Y-%m-%d")).unwrap();
            let transaction = |seq: u32, end: String, sku: &str, amount: &str| {
                format!(
                    "<Transaction><BusinessUnit><UnitID>100</UnitID></BusinessUnit>\
                     <WorkstationID>7</WorkstationID><SequenceNumber>{seq}</SequenceNumber>\
                     <RetailTransaction><LineItem><Sale><ItemID>{sku}</ItemID>\
                     <ActualSalesUnitPrice Currency=\"EUR\">{amount}</ActualSalesUnitPrice>\
                     <ExtendedAmount Currency=\"EUR\">{amount}</ExtendedAmount><Quantity>1</Quantity></Sale>\
                     <SequenceNumber>1</SequenceNumber></LineItem>\
                     <Total TotalType=\"TransactionGrandAmount\" CurrencyCode=\"EUR\">{amount}</Total>\
                     </RetailTransaction><BusinessDayDate>{day}</BusinessDayDate>\
                     <EndDateTime>{end}</EndDateTime></Transaction>\n"
                )
            };
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
                 <POSLog xmlns=\"http://www.nrf-arts.org/IXRetail/namespace/\">\n{}{}</POSLog>\n",
                transaction(9001, t(-900), "SOCK-1", "8.00"),
                transaction(9002, t(-800), "HAT-1", "12.50")
            );
            return Some(Good {
                files: vec![("good.xml".into(), text(body))],
                orders: vec![format!("100-7-{day}-9001"), format!("100-7-{day}-9002")],
            });
        }
        _ => return None,
    };
    Some(Good { files: vec![(name.to_string(), body)], orders: orders.into_iter().map(String::from).collect() })
}

fn format_names() -> Vec<&'static str> {
    Format::ALL.iter().map(|(name, _)| *name).collect()
}

/// The name a file dropped as `format` gets: `stem` with the good sample's ending (so that a
/// profile that reads only `*ItemSelectionDetails*.csv` takes it), else the format's extension.
fn name_for(format: &str, stem: &str) -> Option<String> {
    let (_, f) = Format::ALL.iter().find(|(n, _)| *n == format)?;
    let name = match good_sample(format) {
        Some(good) => format!("{stem}{}", good.files[0].0.trim_start_matches("good")),
        None => format!("{stem}.{}", f.default_extensions().first()?),
    };
    f.reads_file(&name).then_some(name)
}

// ---- placeholders ----------------------------------------------------------------------------

/// Fill `{NOW…}` placeholders; a UTF-16 LE file (with BOM) is decoded, filled and encoded again.
fn fill(bytes: &[u8]) -> Vec<u8> {
    if let Some(units) = bytes.strip_prefix(b"\xFF\xFE") {
        let units: Vec<u16> = units.chunks(2).map(|c| u16::from_le_bytes([c[0], *c.get(1).unwrap_or(&0)])).collect();
        let text = String::from_utf16(&units).expect("UTF-16 fixture");
        let filled = String::from_utf8(fill(text.as_bytes())).unwrap();
        let mut out = b"\xFF\xFE".to_vec();
        out.extend(filled.encode_utf16().flat_map(u16::to_le_bytes));
        return out;
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some(start) = find(rest, b"{NOW") {
        let Some(len) = rest[start..].iter().take(80).position(|b| *b == b'}') else { break };
        out.extend_from_slice(&rest[..start]);
        let spec = std::str::from_utf8(&rest[start + 4..start + len]).expect("placeholder is text");
        out.extend(placeholder(spec).into_bytes());
        rest = &rest[start + len + 1..];
    }
    out.extend_from_slice(rest);
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `-600`, `+2d`, `-40d|ms`, `-600|%Y-%m-%d` (after `NOW`).
fn placeholder(spec: &str) -> String {
    let (offset, form) = spec.split_once('|').unwrap_or((spec, ""));
    let unit = match offset.chars().last() {
        Some('m') => 60,
        Some('h') => 3600,
        Some('d') => 86_400,
        _ => 1,
    };
    let digits = offset.trim_end_matches(['m', 'h', 'd']);
    let t = now() + if digits.is_empty() { 0 } else { digits.parse::<i64>().expect("offset") * unit };
    match form {
        "" => t.to_string(),
        "ms" => format!("{}", t * 1000 + 123),
        strftime => jiff::Timestamp::from_second(t).unwrap().strftime(strftime).to_string(),
    }
}

// ---- running one case ------------------------------------------------------------------------

/// One bad file next to a good one, run through `run --once`.
struct Job {
    label: String,
    format: String,
    bad_name: String,
    bad: Vec<u8>,
    expect: Expect,
}

/// What the queue says about the files of one run.
struct Seen {
    rejects: Vec<Value>,
    dead: Vec<Value>,
}

fn seen(agent: &Agent) -> Seen {
    let list: Value = serde_json::from_str(&agent.cmd_ok(&["dead-letter", "list", "--json"])).unwrap();
    Seen {
        rejects: list["rejected_rows"].as_array().cloned().unwrap_or_default(),
        dead: list["dead_events"].as_array().cloned().unwrap_or_default(),
    }
}

fn rejects_of<'a>(seen: &'a Seen, file: &str) -> Vec<&'a Value> {
    seen.rejects
        .iter()
        .filter(|r| Path::new(r["path"].as_str().unwrap_or("")).file_name().is_some_and(|n| n == file))
        .collect()
}

fn event_id(order: &str) -> String {
    EventId::derive("s042", "t1", order).as_str().to_string()
}

/// The agent's exit must be 0 (all delivered) or 75 (something left queued), never a crash.
fn check_exit(what: &str, status: std::process::ExitStatus, stderr: &str) -> Result<(), String> {
    if !matches!(status.code(), Some(0 | 75)) {
        return Err(format!("{what}: exit {status:?}\n{stderr}"));
    }
    if stderr.contains("panicked") || stderr.contains("RUST_BACKTRACE") {
        return Err(format!("{what}: panic\n{stderr}"));
    }
    Ok(())
}

fn drop_bytes(agent: &Agent, name: &str, bytes: &[u8]) -> PathBuf {
    let tmp = agent.dir.path().join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    let target = agent.inbox.join(name);
    std::fs::rename(&tmp, &target).unwrap();
    target
}

fn run_job(job: &Job) -> Result<(), String> {
    let good = good_sample(&job.format).expect("jobs are made only for formats with a good sample");
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent =
        Agent::new(&fake.base_url(), Opts { source: format!("format = \"{}\"", job.format), ..Opts::default() });
    for (name, body) in &good.files {
        drop_bytes(&agent, name, body);
    }
    drop_bytes(&agent, &job.bad_name, &job.bad);
    let out = agent.cmd(&["run", "--once", "--timeout-secs", "20"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    check_exit("run --once", out.status, &stderr)?;
    let fail = |what: String| Err(format!("{what}\n--- agent log:\n{stderr}"));
    let seen = seen(&agent);

    for (name, _) in &good.files {
        let rejects = rejects_of(&seen, name);
        if !rejects.is_empty() {
            return fail(format!("the good file {name} has rejected rows: {rejects:?}"));
        }
    }
    let mut expected: BTreeSet<String> = good.orders.iter().map(|o| event_id(o)).collect();
    if let Expect::Parts(p) = &job.expect {
        expected.extend(p.delivered.iter().map(|o| event_id(o)));
    }
    let delivered = fake.unique_ids();
    let must_deliver: BTreeSet<String> = good.orders.iter().map(|o| event_id(o)).collect();
    if !delivered.is_superset(&must_deliver) {
        return fail(format!("good orders lost: expected {must_deliver:?}, delivered {delivered:?}"));
    }
    if delivered != expected {
        return fail(format!("delivered {delivered:?}, expected exactly {expected:?}"));
    }
    if !fake.violations().is_empty() {
        return fail(format!("violations at TikTok: {:?}", fake.violations()));
    }

    let bad_rejects = rejects_of(&seen, &job.bad_name);
    let quarantined = agent.inbox.join("quarantine").join(&job.bad_name);
    let reason_file = agent.inbox.join("quarantine").join(format!("{}.reason", job.bad_name));
    let archived = agent.inbox.join("archive").join(&job.bad_name);
    let reason = std::fs::read_to_string(&reason_file).ok();
    let row_rejects: Vec<&&Value> = bad_rejects.iter().filter(|r| r["line"].as_i64() > Some(0)).collect();
    let well_formed = |r: &Value| r["line"].as_i64() > Some(0) && !r["reason"].as_str().unwrap_or("").is_empty();
    match &job.expect {
        Expect::Quarantined(words) => {
            match &reason {
                Some(text) if text.contains(words) => {}
                other => return fail(format!("not quarantined with `{words}`: reason file {other:?}")),
            }
            if !quarantined.exists() || agent.inbox.join(&job.bad_name).exists() {
                return fail(format!("{} is not in quarantine/", job.bad_name));
            }
        }
        Expect::Recorded => {
            let in_quarantine = reason.as_deref().is_some_and(|r| !r.trim().is_empty()) && quarantined.exists();
            if !in_quarantine && (row_rejects.is_empty() || !row_rejects.iter().all(|r| well_formed(r))) {
                return fail(format!("garbage taken silently: rejects {bad_rejects:?}, reason {reason:?}"));
            }
        }
        Expect::NothingOrQuarantined => {
            let in_quarantine = reason.as_deref().is_some_and(|r| !r.trim().is_empty()) && quarantined.exists();
            let taken_as_empty = archived.exists() && bad_rejects.is_empty();
            if !(in_quarantine || taken_as_empty) {
                return fail(format!("neither quarantined nor taken as empty: rejects {bad_rejects:?}"));
            }
        }
        Expect::Parts(p) => {
            if !archived.exists() {
                return fail(format!("{} was not taken (not in archive/); reason file: {reason:?}", job.bad_name));
            }
            let mut unmatched: Vec<&Value> = bad_rejects.clone();
            for (line, field, words) in &p.rejects {
                let at = unmatched.iter().position(|r| {
                    r["line"].as_u64() == Some(*line)
                        && r["field"].as_str() == *field
                        && r["reason"].as_str().is_some_and(|s| s.contains(words))
                });
                match at {
                    Some(i) => {
                        unmatched.remove(i);
                    }
                    None => {
                        return fail(format!(
                            "no reject at line {line} field {field:?} with `{words}`; rejects: {bad_rejects:#?}"
                        ))
                    }
                }
            }
            if !unmatched.is_empty() {
                return fail(format!("unexpected rejects: {unmatched:#?}"));
            }
            let dead: BTreeSet<(String, String)> = seen
                .dead
                .iter()
                .map(|d| (d["order_id"].as_str().unwrap_or("").into(), d["reason"].as_str().unwrap_or("").into()))
                .collect();
            let want: BTreeSet<(String, String)> = p.dead.iter().map(|(o, r)| (o.to_string(), r.to_string())).collect();
            if dead != want {
                return fail(format!("dead events {dead:?}, expected {want:?}"));
            }
            let accepted = fake.accepted();
            for (order, name) in &p.names {
                let event = accepted.iter().find(|e| e["event_id"] == event_id(order));
                let names: Vec<&str> = event
                    .and_then(|e| e["properties"]["contents"].as_array())
                    .map(|c| c.iter().filter_map(|c| c["content_name"].as_str()).collect())
                    .unwrap_or_default();
                if !names.contains(name) {
                    return fail(format!("{order}: content names {names:?}, expected {name:?}"));
                }
            }
        }
    }
    Ok(())
}

/// Run the jobs on a few threads; report every failure at once.
fn run_all(jobs: Vec<Job>) {
    let total = jobs.len();
    let queue = Mutex::new(jobs.into_iter());
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| loop {
                let Some(job) = queue.lock().unwrap().next() else { break };
                if let Err(e) = run_job(&job) {
                    failures.lock().unwrap().push(format!("== {}\n{e}", job.label));
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{} of {total} cases failed:\n\n{}", failures.len(), failures.join("\n\n"));
}

// ---- the tests -------------------------------------------------------------------------------

#[test]
fn every_format_has_a_good_sample() {
    let missing: Vec<&str> = format_names().into_iter().filter(|f| good_sample(f).is_none()).collect();
    assert!(
        missing.is_empty(),
        "formats without a good sample in tests/integration/bad_input.rs `good_sample` (so their bad-input \
         cases cannot check that good orders still arrive): {missing:?}"
    );
}

#[test]
fn every_format_is_fuzzed_through_the_registry() {
    // One target reads its input as every format of `Format::ALL`: a new format needs no target.
    let manifest = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/Cargo.toml")).unwrap();
    assert!(manifest.contains("name = \"read_format\""), "fuzz/Cargo.toml has no read_format target");
    let harness = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/src/lib.rs")).unwrap();
    assert!(harness.contains("for (_, format) in Format::ALL"), "the fuzz harness no longer reads every format");
}

#[test]
fn the_corpus_readme_and_the_case_table_list_the_same_files() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "README.md")
        .collect();
    let cases: BTreeSet<String> = corpus().iter().map(|c| c.file.to_string()).collect();
    assert_eq!(on_disk, cases, "files in tests/fixtures/bad-input/ vs cases in bad_input.rs");
    let readme = std::fs::read_to_string(corpus_dir().join("README.md")).unwrap();
    let undocumented: Vec<&String> = on_disk.iter().filter(|f| !readme.contains(&format!("`{f}`"))).collect();
    assert!(undocumented.is_empty(), "not in the corpus README.md: {undocumented:?}");
    let size: u64 = std::fs::read_dir(corpus_dir()).unwrap().flatten().map(|e| e.metadata().unwrap().len()).sum();
    assert!(size < 1024 * 1024, "the corpus is {size} bytes; generate big cases at test time instead");
}

#[test]
fn every_corpus_file_is_recorded_and_good_orders_still_arrive() {
    let formats = format_names();
    let mut jobs = Vec::new();
    for c in corpus() {
        if !formats.contains(&c.format) {
            eprintln!("SKIPPED {}: format `{}` is not in Format::ALL (yet)", c.file, c.format);
            continue;
        }
        if good_sample(c.format).is_none() {
            // `every_format_has_a_good_sample` fails for it.
            continue;
        }
        let bytes = std::fs::read(corpus_dir().join(c.file)).unwrap();
        jobs.push(Job {
            label: format!("{} as {}", c.file, c.format),
            format: c.format.to_string(),
            bad_name: c.file.to_string(),
            bad: fill(&bytes),
            expect: c.expect,
        });
    }
    run_all(jobs);
}

#[test]
fn files_that_mean_nothing_are_recorded_in_every_format() {
    let mut jobs = Vec::new();
    let nul_only = vec![0u8; 8192];
    // Over the CSV record cap, under the JSON Lines line cap; no line end at all.
    let long_line: Vec<u8> = b"order_id,".iter().copied().cycle().take(2 * 1024 * 1024 + 7).collect();
    let generated: [(&str, &[u8], Expect); 2] =
        [("nul-only", &nul_only, Expect::Recorded), ("long-line-2mib", &long_line, Expect::Recorded)];
    for format in format_names() {
        if good_sample(format).is_none() {
            continue;
        }
        for (file, expect) in &ANY_FORMAT {
            let stem = file.trim_end_matches(".csv");
            let Some(name) = name_for(format, stem) else { continue };
            let bytes = std::fs::read(corpus_dir().join(file)).unwrap();
            jobs.push(Job {
                label: format!("{file} as {format}"),
                format: format.into(),
                bad_name: name,
                bad: bytes,
                expect: expect.clone(),
            });
        }
        for (stem, bytes, expect) in &generated {
            let Some(name) = name_for(format, stem) else { continue };
            jobs.push(Job {
                label: format!("{stem} as {format}"),
                format: format.into(),
                bad_name: name,
                bad: bytes.to_vec(),
                expect: expect.clone(),
            });
        }
    }
    run_all(jobs);
}

/// Peak resident memory (KiB) of `agent` running `run --once`, with its exit checked.
fn peak_rss_of_run_once(agent: &Agent) -> u64 {
    let time = Path::new("/usr/bin/time");
    if time.exists() {
        let out = Command::new(time)
            .arg("-v")
            .arg(bin())
            .arg("--config")
            .arg(&agent.config)
            .args(["run", "--once", "--timeout-secs", "20"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_no_leak(&stderr);
        check_exit("run --once", out.status, &stderr).unwrap();
        let line = stderr.lines().find(|l| l.contains("Maximum resident set size")).expect("time -v output");
        return line.rsplit(':').next().unwrap().trim().parse().unwrap();
    }
    // No `time`: follow the process's own high-water mark while it runs.
    let mut child = Command::new(bin())
        .arg("--config")
        .arg(&agent.config)
        .args(["run", "--once", "--timeout-secs", "20"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        let status = std::fs::read_to_string(&status_file).unwrap_or_default();
        if let Some(kib) = status.lines().find_map(|l| l.strip_prefix("VmHWM:")) {
            peak = peak.max(kib.trim().trim_end_matches("kB").trim().parse().unwrap_or(0));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().unwrap();
    check_exit("run --once", out.status, &String::from_utf8_lossy(&out.stderr)).unwrap();
    peak
}

#[test]
fn a_50_mb_line_is_read_in_bounded_memory() {
    let line = 50 * 1024 * 1024;
    let after = |prefix: Vec<u8>, byte: u8| -> Vec<u8> {
        let mut bytes = prefix;
        bytes.extend(std::iter::repeat_n(byte, line));
        bytes
    };
    // A header of a million empty columns (under the byte cap, over the field cap), and a row of
    // 4000 (under both).
    let wide =
        format!("order_id,event_time,value{commas}\nWIDE1,{},5.00{commas}\n", now() - 60, commas = ",".repeat(4000));
    let widest = format!("order_id,event_time,value{}\n", ",".repeat(999_000));
    // Per format: files, and for each the words its quarantine reason or rejected row must hold.
    type Files = Vec<(&'static str, Vec<u8>, &'static str)>;
    let cases: [(&str, Files, &[&str]); 4] = [
        (
            "native-csv",
            vec![
                ("one-line.csv", vec![b'x'; line], "line 1: a record longer than 1048576 bytes starts on this line"),
                (
                    "row-3.csv",
                    after(csv_orders("BIG", 1, 1).into_bytes(), b'y'),
                    "line 3: a record longer than 1048576 bytes starts on this line",
                ),
                ("wide.csv", wide.into_bytes(), ""),
                ("million-empty-columns.csv", widest.into_bytes(), "line 1: a record of more than 4096 fields"),
            ],
            &["WIDE1"],
        ),
        (
            "jsonl",
            vec![(
                "one-line.jsonl",
                after(br#"{"order_id":"BIG","description":""#.to_vec(), b'z'),
                "line longer than 4194304 bytes",
            )],
            &[],
        ),
        (
            "json",
            vec![(
                "one-record.json",
                after(br#"[{"order_id":"BIG","description":""#.to_vec(), b'z'),
                "record longer than 4194304 bytes",
            )],
            &[],
        ),
        (
            "arts-poslog",
            vec![("one-line.xml", vec![b'x'; line], "line 1: malformed xml: more than 1048576 bytes without a `<`")],
            &[],
        ),
    ];
    for (format, files, also_delivered) in cases {
        let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
        let agent = Agent::new(&fake.base_url(), Opts { source: format!("format = \"{format}\""), ..Opts::default() });
        let good = good_sample(format).unwrap();
        for (name, body) in &good.files {
            drop_bytes(&agent, name, body);
        }
        for (name, body, _) in &files {
            drop_bytes(&agent, name, body);
        }
        let started = Instant::now();
        let peak = peak_rss_of_run_once(&agent);
        eprintln!("{format}: peak RSS {peak} KiB reading {} big file(s) in {:?}", files.len(), started.elapsed());
        assert!(peak < MAX_RSS_KIB, "{format}: peak RSS {peak} KiB, over {MAX_RSS_KIB} KiB");
        let expected: BTreeSet<String> =
            good.orders.iter().map(String::as_str).chain(also_delivered.iter().copied()).map(event_id).collect();
        assert_eq!(fake.unique_ids(), expected, "{format}");
        let seen = seen(&agent);
        for (name, _, words) in files.iter().filter(|(_, _, words)| !words.is_empty()) {
            let reason = std::fs::read_to_string(agent.inbox.join("quarantine").join(format!("{name}.reason")));
            let rejects = rejects_of(&seen, name);
            let recorded = reason.as_deref().is_ok_and(|r| r.contains(words))
                || rejects
                    .iter()
                    .any(|r| r["line"].as_u64() == Some(1) && r["reason"].as_str().unwrap().contains(words));
            assert!(recorded, "{format} {name}: reason {reason:?}, rejects {rejects:?}");
        }
    }
}

#[test]
fn a_file_still_being_written_is_taken_only_once_complete() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    let daemon = agent.spawn();
    agent.drop_file("good.csv", &csv_orders("GOOD", 2, 1));
    let content = csv_orders("SLOW", 4, 3);
    let path = agent.inbox.join("slow.csv");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&path).unwrap();
        // Byte by byte, with pauses shorter than `settle_secs` (1 s), as a slow POS writes.
        for (i, byte) in content.bytes().enumerate() {
            file.write_all(&[byte]).unwrap();
            file.flush().unwrap();
            std::thread::sleep(Duration::from_millis(if i % 97 == 0 { 300 } else { 3 }));
        }
    }
    let slow_ids = ids("SLOW", 4);
    let early: Vec<String> = fake.unique_ids().intersection(&slow_ids).cloned().collect();
    assert!(early.is_empty(), "taken before it was complete: {early:?}\n{}", daemon.log_text());
    let mut all = slow_ids.clone();
    all.extend(ids("GOOD", 2));
    assert!(fake.wait_for_unique(all.len(), T), "not delivered:\n{}", daemon.log_text());
    assert_eq!(fake.unique_ids(), all);
    assert_eq!(fake.accepted_ids().len(), all.len(), "nothing sent twice");
    for event in fake.accepted().iter().filter(|e| e["event_id"].as_str().is_some_and(|id| slow_ids.contains(id))) {
        assert_eq!(event["properties"]["contents"].as_array().unwrap().len(), 3, "a partial order: {event}");
    }
    assert!(rejects_of(&seen(&agent), "slow.csv").is_empty(), "{}", daemon.log_text());
    assert!(wait_until(T, || agent.inbox.join("archive/slow.csv").exists()), "{}", daemon.log_text());
    let log = daemon.log_text();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn a_file_deleted_right_after_it_is_dropped_is_taken_whole_or_not_at_all() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts { sender: "batch_size = 1000".into(), ..Opts::default() });
    let mut daemon = agent.spawn();
    assert!(wait_until(T, || daemon.log_text().contains("started")), "{}", daemon.log_text());
    let orders = 4000;
    let path = agent.drop_file("doomed.csv", &csv_orders("DEL", orders, 2));
    // Best effort: gone while the agent hashes or reads it.
    std::thread::sleep(Duration::from_millis(30));
    std::fs::remove_file(&path).unwrap();
    agent.drop_file("good.csv", &csv_orders("GOOD", 2, 1));
    let good = ids("GOOD", 2);
    assert!(wait_until(T, || fake.unique_ids().is_superset(&good)), "{}", daemon.log_text());
    assert!(wait_until(T, || agent.counts().0 == 0), "{}", daemon.log_text());
    let doomed = fake.unique_ids().difference(&good).count();
    eprintln!("the deleted file: {doomed} of its {orders} orders delivered");
    for line in daemon.log_text().lines().filter(|l| l.contains("doomed")) {
        eprintln!("  {line}");
    }
    assert!(doomed == 0 || doomed == orders, "a partial file was taken: {doomed} of {orders} orders");
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
    let (status, _) = daemon.terminate();
    assert!(status.success(), "{status:?}\n{}", daemon.log_text());
    assert!(!daemon.log_text().contains("panicked"), "{}", daemon.log_text());
}

#[test]
fn a_file_without_read_permission_is_reported_and_the_rest_delivered() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    agent.drop_file("good.csv", &csv_orders("GOOD", 2, 1));
    let locked = agent.drop_file("locked.csv", &csv_orders("LOCK", 2, 1));
    set_mode(&locked, 0o000);
    let out = if std::fs::read(&locked).is_err() {
        agent.cmd(&["run", "--once", "--timeout-secs", "20"])
    } else {
        // Root reads a file of mode 000 anyway. Run the agent as `nobody` instead, if we can.
        match run_once_as_nobody(&agent) {
            Ok(out) => out,
            Err(why) => {
                eprintln!(
                    "SKIPPED a_file_without_read_permission: the test runs as a user who can read a file of \
                     mode 000 (root), and cannot run the agent as another user ({why})"
                );
                return;
            }
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    check_exit("run --once", out.status, &stderr).unwrap();
    assert_eq!(fake.unique_ids(), ids("GOOD", 2));
    assert!(stderr.contains("locked.csv: Permission denied"), "{stderr}");
    let seen = seen(&agent);
    let recorded = rejects_of(&seen, "locked.csv");
    assert!(
        recorded.iter().any(|r| r["reason"].as_str().is_some_and(|r| r.contains("Permission denied"))),
        "not in dead-letter list: {recorded:?}"
    );
    assert!(locked.exists(), "a file that could not be read stays where it is");
}

/// `run --once` as user `nobody` (uid 65534) through `setpriv`, with the agent's folder given to
/// it; Err says why that cannot be done here.
fn run_once_as_nobody(agent: &Agent) -> Result<std::process::Output, String> {
    agent.give_to_nobody()?;
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", bin(), "--config"])
        .arg(&agent.config)
        .args(["run", "--once", "--timeout-secs", "20"])
        .env_remove("OFFLINE_EVENTS_AGENT_LOG")
        .output()
        .unwrap();
    assert_no_leak(&String::from_utf8_lossy(&out.stderr));
    Ok(out)
}

#[test]
fn a_file_made_readable_after_it_was_refused_is_taken_without_a_restart() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    if let Err(why) = agent.give_to_nobody() {
        // Without another user, root reads a file of mode 000 and there is nothing to test.
        assert!(why.contains("setpriv") || why.contains("chown"), "{why}");
        eprintln!("SKIPPED a_file_made_readable_after: {why}");
        return;
    }
    let daemon = agent.spawn_as_nobody();
    let locked = agent.inbox.join("locked.csv");
    let tmp = agent.dir.path().join("locked.tmp");
    std::fs::write(&tmp, csv_orders("LATE", 2, 1)).unwrap();
    set_mode(&tmp, 0o000);
    std::fs::rename(&tmp, &locked).unwrap();
    assert!(wait_until(T, || daemon.log_text().contains("locked.csv: Permission denied")), "{}", daemon.log_text());
    assert!(fake.unique_ids().is_empty());
    set_mode(&locked, 0o644);
    assert!(fake.wait_for_unique(2, T), "not taken after chmod:\n{}", daemon.log_text());
    assert_eq!(fake.unique_ids(), ids("LATE", 2));
    assert!(wait_until(T, || agent.inbox.join("archive/locked.csv").exists()), "{}", daemon.log_text());
    assert!(daemon.log_text().contains("readable now"), "{}", daemon.log_text());
    // Once it was read, it is no longer listed as unreadable.
    let listed = agent.cmd_ok(&["dead-letter", "list"]);
    assert!(!listed.contains("Permission denied"), "{listed}");
}
