//! NRF-ARTS POSLog XML: the retail industry's transaction log, both the 2.x batch (many
//! `Transaction`s in one `POSLog`, one file per store and business day) and 6.0 one-per-file
//! exports.
//!
//! The file is read with quick-xml's streaming pull parser over the decoded input, so a batch
//! with thousands of transactions is never held in memory: only the transaction being read is.
//! Elements and attributes are matched by local name, so the ARTS namespace and vendor prefixes
//! (`acs:`, `fu:`, `X:`) make no difference; anything this module does not know is ignored at
//! any depth.
//!
//! What one `Transaction` becomes:
//! - **Order id**: `{store}-{workstation}-{business day}-{sequence}`, from `RetailStoreID` (else
//!   `BusinessUnit/UnitID`, else the text of `BusinessUnit`; `RetailStoreID` wins when a
//!   transaction has both), `WorkstationID`, `BusinessDayDate` and `SequenceNumber`, e.g.
//!   `42-3-2025-03-14-161`. The business day is part of it because many tills restart their
//!   sequence numbers; a part the file lacks is left empty (`42-3-161` without a business day).
//!   Every part comes from the transaction itself, so a re-export yields the same id.
//! - **Time**: `EndDateTime` (completion), else `ReceiptDateTime`, else `BeginDateTime`. A time
//!   with an offset or `Z` is exact; one without is local time in the source's zone. POSLog 6.0
//!   writers put local time in `ReceiptDateTime` and UTC in `EndDateTime`, which is why
//!   `EndDateTime` comes first.
//! - **Value**: `Total[@TotalType='TransactionGrandAmount']`; a sale without it is rejected.
//!   **Currency**: `CurrencyCode`, else that total's `CurrencyCode`/`Currency` attribute, else
//!   the first other amount's `Currency` attribute, else the source's. `XXX` ("no currency") and
//!   an empty code are ignored wherever they are read, so the next in that order is taken.
//! - **Contents**: the `Sale` line items, by `ItemID` (else `POSIdentity/POSItemID`), with
//!   `Description` (else `ItemID/@Name`), `ActualSalesUnitPrice` (else `RegularSalesUnitPrice`)
//!   and `Quantity` (1 when absent). A line with a negative unit price counts as the positive
//!   price times the negated quantity (+1 at −2.40 is −1 at 2.40: the same amount), so no unit
//!   price is handed on negative. Lines are then netted per item and unit price, so a voided line
//!   written as an extra negative `LineItem VoidFlag="true"` (NCR; negative quantity or negative
//!   price) cancels its original; a `VoidFlag="true"` line with a positive quantity (and price) is
//!   itself the voided line and counts for nothing. Items whose net quantity is not positive (a
//!   void or negative-price line left over), and lines with no item id or no unit price, are left
//!   out of the contents (the value still comes from the total).
//! - **Customer**: `Customer/CustomerID`, `LoyaltyAccount/CustomerID`,
//!   `LoyaltyAccount/LoyaltyCard/PrimaryAccountNumber` and vendor `LoyaltyID`s become external
//!   ids. POSLog carries no email or phone worth sending.
//!
//! Not a sale (a `Skip` with the reason): a transaction without `RetailTransaction`
//! (`ControlTransaction` sign-on/off, tender control...), `TrainingModeFlag`, `CancelFlag`, a
//! `TransactionStatus` of voided, cancelled or suspended, a return (a `Return` line item, a line
//! in `SalesMode` `RETOUR`, a `Tender TypeCode="Refund"`, or a negative grand total; an exchange
//! mixing return and sale is skipped too), and a zero grand total. A voided `Return` line makes
//! no return: `Return` lines are netted per item and unit price like sale lines, and only an
//! item with a non-voided `Return` line whose net quantity is not zero makes one.
//!
//! A transaction with a bad value becomes a `Reject` naming the element (never its value) at the
//! line where its `Transaction` element starts (or, for a bad line item, where that starts), and
//! reading goes on. Malformed XML stops the read: transactions already delivered
//! stand, the one being read (or the rest of the file) becomes a `Reject`, and the read ends
//! without error. A file in which no transaction was read before the XML broke, or that has no
//! POSLog element at all, is unreadable.
//!
//! XML numbers always use `.` as the decimal point. The amounts handed on (value, unit prices,
//! netted quantities) are computed, so they go to `event::build` exact (`Amount::Exact`).

mod elements;
mod txn;

use super::{FormatError, Parsed, ReadOptions, Reject, Summary};
use quick_xml::events::{BytesStart, Event};
use quick_xml::{Decoder, Reader, XmlVersion};
use std::io::{BufRead, Read};
use std::ops::ControlFlow;
use txn::Txn;

/// Text of one element longer than this taints its transaction instead of being held.
const MAX_TEXT: usize = 4096;

/// The most bytes the XML parser may see without a `<` or `>`: it holds one whole text node or tag
/// before it hands it on, so a 50 MB text node would be held whole.
const MAX_WITHOUT_MARKUP: u64 = 1024 * 1024;

pub(super) fn read(
    input: impl BufRead,
    _options: &ReadOptions,
    sink: &mut dyn FnMut(Parsed) -> ControlFlow<()>,
) -> Result<Summary, FormatError> {
    let mut reader = Reader::from_reader(LineCounter { inner: input, newlines: 0, since_markup: 0 });
    // Text is not trimmed per event: `A &amp; B` arrives as three events. Values are trimmed
    // when their element closes.
    reader.config_mut().expand_empty_elements = true;
    let mut buf = Vec::new();
    let mut outside = Outside::default();
    let mut txn: Option<Txn> = None;
    loop {
        buf.clear();
        let event = reader.read_event_into(&mut buf);
        let line = 1 + reader.get_ref().newlines;
        let decoder = reader.decoder();
        let event = match event {
            Ok(event) => event,
            Err(quick_xml::Error::Io(e)) => match e.get_ref().and_then(|inner| inner.downcast_ref::<NoMarkup>()) {
                Some(no_markup) => return broken(&outside, txn, line, &no_markup.to_string(), sink),
                None => return Err(FormatError::Io(std::io::Error::new(e.kind(), e.to_string()))),
            },
            Err(e) => return broken(&outside, txn, line, &e.to_string(), sink),
        };
        match event {
            Event::Start(e) => {
                // The line of the `<`: the reader stands just past the `>`.
                let line = line - count_newlines(&e);
                match txn.as_mut() {
                    Some(t) => t.open(&e, line, decoder),
                    None if e.local_name().as_ref() == b"Transaction" => {
                        outside.root.get_or_insert_with(|| "Transaction".into());
                        let mut t = Txn::new(line);
                        t.open(&e, line, decoder);
                        txn = Some(t);
                    }
                    None => outside.open(&e),
                }
            }
            Event::End(_) => match txn.as_mut().map(Txn::close) {
                Some(true) => {
                    outside.transactions += 1;
                    if let Some(done) = txn.take() {
                        if sink(done.finish()).is_break() {
                            return Ok(Summary::default());
                        }
                    }
                }
                Some(false) => {}
                None => outside.depth = outside.depth.saturating_sub(1),
            },
            Event::Text(e) if txn.is_none() && outside.root.is_some() && outside.depth == 0 => {
                // After the root element: anything but white space was appended to the file.
                let first = e.iter().position(|b| !b.is_ascii_whitespace());
                if let (Some(first), false) = (first, outside.trailing_reported) {
                    outside.trailing_reported = true;
                    // The reader stands past the text; its first visible byte is on this line.
                    let line = line - count_newlines(&e[first..]);
                    let reason = "text after the end of the document (appended to the file?) is not read";
                    if sink(Parsed::Reject(Reject { line, field: None, reason: reason.into() })).is_break() {
                        return Ok(Summary::default());
                    }
                }
            }
            Event::Text(e) => {
                if let Some(t) = txn.as_mut().filter(|t| t.wants_text()) {
                    match e.decode() {
                        Ok(text) => t.text(&text),
                        Err(err) => t.taint(line, None, format!("text is not valid UTF-8: {err}")),
                    }
                }
            }
            Event::CData(e) => {
                if let Some(t) = txn.as_mut().filter(|t| t.wants_text()) {
                    match e.decode() {
                        Ok(text) => t.text(&text),
                        Err(err) => t.taint(line, None, format!("text is not valid UTF-8: {err}")),
                    }
                }
            }
            Event::GeneralRef(e) => {
                if let Some(t) = txn.as_mut().filter(|t| t.wants_text()) {
                    let resolved = match e.resolve_char_ref() {
                        Ok(Some(c)) => Some(c.to_string()),
                        Ok(None) => e
                            .decode()
                            .ok()
                            .and_then(|name| quick_xml::escape::resolve_predefined_entity(&name).map(str::to_string)),
                        Err(_) => None,
                    };
                    match resolved {
                        Some(text) => t.text(&text),
                        None => t.taint(line, None, "unknown entity reference".into()),
                    }
                }
            }
            Event::Eof => break,
            // Empty elements arrive as Start and End (`expand_empty_elements`).
            Event::Empty(_) | Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    let line = 1 + reader.get_ref().newlines;
    if txn.is_some() {
        let error = "the file ends inside a transaction (truncated?)";
        return broken(&outside, txn, line, error, sink);
    }
    match (&outside.root, outside.transactions) {
        (None, _) => Err(FormatError::Unreadable { line, reason: "not a POSLog file: no XML element found".into() }),
        (Some(root), 0) if root != "POSLog" => Err(FormatError::Unreadable {
            line: 1,
            reason: format!("not a POSLog file: root element `{root}` holds no Transaction"),
        }),
        _ if outside.depth > 0 => {
            let _ = sink(Parsed::Reject(Reject {
                line,
                field: None,
                reason: "the file ends before its closing tags (truncated?); later transactions may be missing".into(),
            }));
            Ok(Summary::default())
        }
        _ => Ok(Summary::default()),
    }
}

/// Malformed or truncated XML at `line`. Once a transaction was delivered, the one being read (or
/// the rest of the file) becomes a reject and the read ends; before that, the file is unreadable.
fn broken(
    outside: &Outside,
    txn: Option<Txn>,
    line: u64,
    error: &str,
    sink: &mut dyn FnMut(Parsed) -> ControlFlow<()>,
) -> Result<Summary, FormatError> {
    if outside.transactions == 0 {
        return Err(FormatError::Unreadable { line, reason: format!("malformed xml: {error}") });
    }
    let reason = format!("malformed xml near line {line}: {error}; the rest of the file is not read");
    let _ = sink(match txn {
        Some(t) => t.reject_all(&reason),
        None => Parsed::Reject(Reject { line, field: None, reason }),
    });
    Ok(Summary::default())
}

/// What is known about the document outside any transaction.
#[derive(Default)]
struct Outside {
    root: Option<String>,
    depth: usize,
    transactions: u64,
    /// Text after the root element was rejected (once per file).
    trailing_reported: bool,
}

impl Outside {
    fn open(&mut self, e: &BytesStart) {
        if self.root.is_none() {
            self.root = Some(String::from_utf8_lossy(e.local_name().as_ref()).into_owned());
        }
        self.depth += 1;
    }
}

/// The attributes of one start tag, by local name, decoded.
#[derive(Default)]
struct Attrs(Vec<(String, String)>);

impl Attrs {
    fn of(e: &BytesStart, decoder: Decoder) -> Result<Attrs, String> {
        let mut out = Vec::new();
        for attr in e.attributes() {
            let attr = attr.map_err(|err| format!("malformed attribute: {err}"))?;
            let value = attr
                .decoded_and_normalized_value(XmlVersion::Implicit1_0, decoder)
                .map_err(|err| format!("malformed attribute value: {err}"))?;
            let name = String::from_utf8_lossy(attr.key.local_name().as_ref()).into_owned();
            out.push((name, value.trim().to_string()));
        }
        Ok(Attrs(out))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// An XML boolean attribute: `true` or `1`.
    fn flag(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
    }
}

fn count_newlines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|b| **b == b'\n').count() as u64
}

/// Counts the line breaks the XML reader has consumed, so the line of an element can be told
/// from the reader's position without keeping the file; and fails the read with [`NoMarkup`] once
/// [`MAX_WITHOUT_MARKUP`] bytes pass without a `<` or `>`, so the parser never holds more.
struct LineCounter<R> {
    inner: R,
    newlines: u64,
    /// Bytes consumed since the last `<` or `>`.
    since_markup: u64,
}

/// What [`LineCounter`] fails a read with.
#[derive(Debug, thiserror::Error)]
#[error("more than {MAX_WITHOUT_MARKUP} bytes without a `<` or `>` (not XML, or a text node too long to read)")]
struct NoMarkup;

impl<R: BufRead> Read for LineCounter<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.newlines += count_newlines(&buf[..n]);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for LineCounter<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.since_markup > MAX_WITHOUT_MARKUP {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, NoMarkup));
        }
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        if amt > 0 {
            // The bytes being consumed are already buffered, so this does no I/O.
            if let Ok(buf) = self.inner.fill_buf() {
                let consumed = &buf[..amt.min(buf.len())];
                self.newlines += count_newlines(consumed);
                self.since_markup = match consumed.iter().rposition(|b| matches!(b, b'<' | b'>')) {
                    Some(at) => (consumed.len() - at - 1) as u64,
                    None => self.since_markup + consumed.len() as u64,
                };
            }
        }
        self.inner.consume(amt);
    }
}

#[cfg(test)]
mod tests {
    use super::elements::*;
    use super::txn::*;
    use super::*;
    use crate::event::money::Currency;
    use crate::event::name::NameTable;
    use crate::event::{build, pii, Event, SourceDefaults};
    use crate::event::{Amount, RawItem, RawOrder};
    use crate::format::profile_tests::{
        assert_purchases, assert_skips, fixture, orders, rejects, run, skips, Outcome, Purchase, Source,
    };
    use crate::format::{read as read_any, Format, Policy};
    use rust_decimal::Decimal;

    /// The README's sources for the POSLog samples.
    const NEW_YORK: Source = Source {
        format: Format::ArtsPoslog,
        time_zone: "America/New_York",
        currency: "USD",
        phone_region: None,
        time_formats: None,
    };
    const BERLIN: Source = Source {
        format: Format::ArtsPoslog,
        time_zone: "Europe/Berlin",
        currency: "EUR",
        phone_region: None,
        time_formats: None,
    };

    /// A computed amount, as its normalised decimal text.
    fn exact(amount: &Option<Amount>) -> String {
        match amount {
            Some(Amount::Exact(value)) => value.to_string(),
            other => panic!("not a computed amount: {other:?}"),
        }
    }

    fn text(name: &str) -> String {
        std::fs::read_to_string(fixture(name)).unwrap()
    }

    fn parse(bytes: impl AsRef<[u8]>) -> Result<Vec<Parsed>, FormatError> {
        crate::format::profile_tests::parse(Format::ArtsPoslog, bytes)
    }

    /// Content id, unit price (normalised) and quantity of each line of an event.
    fn contents(event: &Event) -> Vec<(String, String, i64)> {
        event.contents.iter().map(|c| (c.content_id.clone(), c.price.normalize().to_string(), c.quantity)).collect()
    }

    fn external_ids(ids: &[&str]) -> Vec<pii::HashedId> {
        ids.iter().filter_map(|id| pii::hash_external_id(id)).collect()
    }

    /// The Berlin source's defaults as `event::build` gets them, with `decimal` as separator.
    fn berlin(decimal: char) -> SourceDefaults {
        SourceDefaults {
            time_zone: jiff::tz::TimeZone::get(BERLIN.time_zone).unwrap(),
            time_formats: Vec::new(),
            currency: Currency::parse(BERLIN.currency),
            shop_id: Some("s1".into()),
            till_id: None,
            decimal_separator: decimal,
            phone_region: None,
            event_names: NameTable::default(),
        }
    }

    fn purchase(order_id: &'static str, event_time: i64, value: &'static str, lines: usize, units: i64) -> Purchase {
        Purchase { order_id, event_time, value, lines, units, email: false, phone: false, external_id: false }
    }

    #[test]
    fn batch_sample_gives_the_readme_purchases_and_skips() {
        let outcome = run(&NEW_YORK, &fixture("arts-poslog-sale.xml"), Policy::default());
        assert_purchases(
            &outcome,
            &[
                Purchase { external_id: true, ..purchase("42-3-2025-03-14-161", 1741981330, "49.68", 2, 3) },
                purchase("42-3-2025-03-14-162", 1741982731, "5.40", 1, 1),
            ],
        );
        assert_skips(
            &outcome,
            &[
                ("42-3-2025-03-14-160", 8, "control transaction"),
                ("42-3-2025-03-14-163", 151, "training transaction (TrainingModeFlag)"),
                ("42-3-2025-03-14-164", 179, "cancelled transaction (CancelFlag)"),
                ("42-3-2025-03-14-165", 203, "return: a Return line item"),
            ],
        );
        for marker in ["Tender TypeCode=\"Refund\"", "negative TransactionGrandAmount"] {
            assert!(outcome.skips[3].reason.contains(marker), "{}", outcome.skips[3].reason);
        }
        let [sale, pin] = &outcome.events[..] else { panic!("two purchases") };
        // The tote and its void line net to nothing and are dropped.
        assert_eq!(
            contents(sale),
            [("SOCK-NVY-M".to_string(), "8".to_string(), 2), ("DRS-LIN-SND-S".to_string(), "30".to_string(), 1)]
        );
        assert_eq!(sale.user.external_id, external_ids(&["C-000042", "4000012345"]));
        assert_eq!(contents(pin), [("PIN-ENM-FRN".to_string(), "5".to_string(), 1)]);
        assert!(outcome.events.iter().all(|e| e.currency.code() == "USD"));
    }

    #[test]
    fn v6_sale_uses_the_utc_end_time_not_the_local_receipt_time() {
        let outcome = run(&BERLIN, &fixture("arts-poslog-v6-sale.xml"), Policy::default());
        assert_purchases(
            &outcome,
            &[Purchase { external_id: true, ..purchase("100-10001-2025-03-14-3601", 1741963330, "105.93", 2, 3) }],
        );
        assert_skips(&outcome, &[]);
        let sale = &outcome.events[0];
        assert_ne!(sale.event_time, 1741966930, "local ReceiptDateTime read as UTC");
        assert_eq!(
            contents(sale),
            [
                ("4006381000112".to_string(), "79.95".to_string(), 1),
                ("4006381000228".to_string(), "12.99".to_string(), 2)
            ]
        );
        assert_eq!(sale.contents[0].content_name.as_deref(), Some("Merino Cardigan, M, NAVY, 410"));
        assert_eq!(sale.user.external_id, external_ids(&["22000417", "T220004179"]));
        assert_eq!(sale.currency.code(), "EUR");
    }

    #[test]
    fn v6_return_is_skipped_and_makes_no_purchase() {
        let outcome = run(&BERLIN, &fixture("arts-poslog-v6-return.xml"), Policy::default());
        assert_purchases(&outcome, &[]);
        assert_skips(&outcome, &[("100-10001-2025-03-15-3644", 6, "return: SalesMode RETOUR")]);
        assert!(outcome.skips[0].reason.contains("Refund"), "{}", outcome.skips[0].reason);
    }

    #[test]
    fn the_files_currency_wins_over_the_sources() {
        let euro_source = Source { currency: "EUR", ..NEW_YORK };
        let outcome: Outcome = run(&euro_source, &fixture("arts-poslog-sale.xml"), Policy::default());
        assert!(outcome.events.iter().all(|e| e.currency.code() == "USD"));
        let parsed = parse(text("arts-poslog-v6-sale.xml").as_bytes()).unwrap();
        assert_eq!(orders(&parsed)[0].currency.as_deref(), Some("EUR"), "from the total's CurrencyCode");
        let without = text("arts-poslog-v6-sale.xml").replace(" CurrencyCode=\"EUR\"", "");
        let parsed = parse(without.as_bytes()).unwrap();
        assert_eq!(orders(&parsed)[0].currency.as_deref(), Some("EUR"), "from the amounts' Currency");
    }

    #[test]
    fn amounts_are_handed_on_exact_whatever_the_source_separator() {
        let options = ReadOptions { decimal_separator: Some(','), ..ReadOptions::default() };
        let mut got = Vec::new();
        read_any(Format::ArtsPoslog, text("arts-poslog-v6-sale.xml").as_bytes(), &options, &mut |p| {
            got.push(p);
            ControlFlow::Continue(())
        })
        .unwrap();
        let order = orders(&got)[0];
        let exact = |s| Some(Amount::Exact(Decimal::from_str_exact(s).unwrap()));
        assert_eq!(order.value, exact("105.93"));
        assert_eq!(order.items[0].price, exact("79.95"));
        for decimal in [',', '.'] {
            let (event, _) = build(order, &berlin(decimal)).unwrap();
            assert_eq!(event.value.normalize().to_string(), "105.93");
        }
    }

    /// The batch sample without its control transaction: 161, 162, 163, ... .
    fn batch_without_control() -> String {
        let text = text("arts-poslog-sale.xml");
        let first = text.find("<Transaction ").unwrap();
        let second = first + 1 + text[first + 1..].find("<Transaction ").unwrap();
        format!("{}{}", &text[..first], &text[second..])
    }

    #[test]
    fn a_file_cut_anywhere_in_the_second_transaction_keeps_the_first() {
        let text = batch_without_control();
        let first = text.find("<Transaction ").unwrap();
        let second = first + 1 + text[first + 1..].find("<Transaction ").unwrap();
        let second_end = second + text[second..].find("</Transaction>").unwrap();
        for cut in second..second_end {
            let parsed = parse(&text.as_bytes()[..cut]).unwrap_or_else(|e| panic!("{cut}: {e}"));
            let ids: Vec<_> = orders(&parsed).iter().map(|o| o.order_id.clone()).collect();
            assert_eq!(ids, vec!["42-3-2025-03-14-161"], "cut at {cut}");
            let r = rejects(&parsed);
            assert_eq!(r.len(), 1, "cut at {cut}: {parsed:?}");
            assert!(r[0].reason.contains("truncated") || r[0].reason.contains("malformed xml"), "{}", r[0].reason);
        }
        // Cut in the middle of its sale lines: the reject names the transaction and where it starts.
        let cut = second + text[second..].find("<Sale").unwrap() + 3;
        let parsed = parse(&text.as_bytes()[..cut]).unwrap();
        let r = rejects(&parsed);
        let second_line = 1 + text[..second].matches('\n').count() as u64;
        assert_eq!(r[0].line, second_line);
        assert!(r[0].reason.contains("`42-3-2025-03-14-162`"), "{}", r[0].reason);
    }

    #[test]
    fn malformed_xml_after_good_transactions_rejects_the_rest() {
        let text =
            batch_without_control().replace("<SequenceNumber>163</SequenceNumber>", "<SequenceNumber>163</Sequence>");
        let parsed = parse(text.as_bytes()).unwrap();
        let ids: Vec<_> = orders(&parsed).iter().map(|o| o.order_id.clone()).collect();
        assert_eq!(ids, vec!["42-3-2025-03-14-161", "42-3-2025-03-14-162"]);
        let r = rejects(&parsed);
        assert_eq!(r.len(), 1);
        assert!(r[0].reason.contains("malformed xml near line"), "{}", r[0].reason);
        assert!(skips(&parsed).is_empty(), "nothing after the break is read");
    }

    #[test]
    fn unreadable_files() {
        let mut rng = fastrand::Rng::with_seed(7);
        let noise: Vec<u8> = (0..4096).map(|_| rng.u8(..)).collect();
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty", Vec::new(), "no XML element"),
            ("blank", b"  \n\n".to_vec(), "no XML element"),
            ("text", b"Z_KASSE_ID;Z_NR\n1;2\n".to_vec(), "no XML element"),
            ("other xml", b"<?xml version=\"1.0\"?><Orders><Order/></Orders>".to_vec(), "root element `Orders`"),
            ("garbage", b"\x01\x02<<<\xff\xfe>>>&&&<a <b".to_vec(), ""),
            ("noise", noise, ""),
            (
                "broken first",
                b"<POSLog><Transaction><SequenceNumber>1</Seq></Transaction></POSLog>".to_vec(),
                "malformed xml",
            ),
        ];
        for (name, bytes, words) in cases {
            match parse(&bytes) {
                Err(FormatError::Unreadable { reason, .. }) => {
                    assert!(reason.contains(words), "{name}: {reason}")
                }
                Err(FormatError::Io(e)) => panic!("{name}: i/o error {e}"),
                Ok(parsed) => {
                    assert!(orders(&parsed).is_empty(), "{name}: {parsed:?}");
                    assert!(words.is_empty(), "{name}: read as {parsed:?}");
                }
            }
        }
    }

    #[test]
    fn a_transaction_may_be_the_root() {
        let text = text("arts-poslog-v6-sale.xml");
        let start = text.find("<Transaction>").unwrap();
        let end = text.find("</POSLog>").unwrap();
        let parsed = parse(&text.as_bytes()[start..end]).unwrap();
        assert_eq!(orders(&parsed)[0].order_id, "100-10001-2025-03-14-3601");
        assert_eq!(orders(&parsed)[0].line, 1);
    }

    #[test]
    fn an_empty_batch_is_fine() {
        let parsed =
            parse(b"<?xml version=\"1.0\"?>\n<POSLog xmlns=\"http://www.nrf-arts.org/IXRetail/namespace/\"/>").unwrap();
        assert!(parsed.is_empty());
    }

    #[test]
    fn unknown_and_deeply_nested_elements_are_ignored() {
        let depth = 2000;
        let mut deep = String::new();
        for _ in 0..depth {
            deep.push_str("<fu:Nest a=\"1\">");
        }
        deep.push_str("<ItemID>BOGUS</ItemID><Total TotalType=\"TransactionGrandAmount\">999</Total><CustomerID>X-1</CustomerID><SequenceNumber>9</SequenceNumber>&amp;");
        for _ in 0..depth {
            deep.push_str("</fu:Nest>");
        }
        let original = text("arts-poslog-v6-sale.xml");
        let text = original
            .replace("<RetailTransaction>", &format!("<RetailTransaction>{deep}"))
            .replace(
                "<Sale>",
                "<Sale><X:Unknown><ItemID>NOPE</ItemID><Quantity>7</Quantity></X:Unknown>",
            )
            .replace(
                "<Transaction>",
                "<X:Extension><Transaction><SequenceNumber>1</SequenceNumber></Transaction></X:Extension><Transaction><fu:Blob>&lt;receipt&gt;&#65;&unknown;</fu:Blob>",
            );
        assert!(text.contains("fu:Nest"));
        let parsed = parse(text.as_bytes()).unwrap();
        let want = parse(original.as_bytes()).unwrap();
        // Lines move (the nesting is inserted on one line); nothing else may change.
        let without_lines = |o: &RawOrder| RawOrder {
            line: 0,
            items: o.items.iter().map(|i| RawItem { line: 0, ..i.clone() }).collect(),
            ..o.clone()
        };
        let got: Vec<_> = orders(&parsed).into_iter().map(without_lines).collect();
        let want: Vec<_> = orders(&want).into_iter().map(without_lines).collect();
        assert_eq!(got, want);
        assert!(rejects(&parsed).is_empty(), "{parsed:?}");
        assert_eq!(skips(&parsed).len(), 1, "the extension's transaction is read as one");
    }

    #[test]
    fn entities_in_text_are_resolved() {
        let text = text("arts-poslog-sale.xml").replace("CREW SOCKS NAVY M", "SOCKS &amp; MORE &#x41;");
        let parsed = parse(text.as_bytes()).unwrap();
        assert_eq!(orders(&parsed)[0].items[0].content_name.as_deref(), Some("SOCKS & MORE A"));
    }

    #[test]
    fn bad_values_reject_the_transaction_and_the_rest_flows() {
        let text = text("arts-poslog-sale.xml")
            .replace(
                "<Total TotalType=\"TransactionGrandAmount\">49.68</Total>",
                "<Total TotalType=\"TransactionGrandAmount\">49,6x</Total>",
            )
            .replace("<Quantity>1</Quantity>\n        </Sale>\n      </LineItem>\n      <LineItem>\n        <SequenceNumber>2</SequenceNumber>\n        <Tax", "<Quantity>one</Quantity>\n        </Sale>\n      </LineItem>\n      <LineItem>\n        <SequenceNumber>2</SequenceNumber>\n        <Tax");
        let parsed = parse(text.as_bytes()).unwrap();
        assert!(orders(&parsed).is_empty());
        let r: Vec<_> = rejects(&parsed).iter().map(|r| (r.line, r.field.clone(), r.reason.clone())).collect();
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!((r[0].0, r[0].1.as_deref()), (24, Some("Total")));
        assert!(r[0].2.contains("`42-3-2025-03-14-161`"), "{}", r[0].2);
        assert_eq!(r[1].1.as_deref(), Some("Quantity"));
        assert_eq!(r[1].0, 129, "the line item's line");
        assert_eq!(skips(&parsed).len(), 4);
    }

    #[test]
    fn missing_essentials_reject() {
        let base = text("arts-poslog-v6-sale.xml");
        let cases: &[(&str, &str, &str)] = &[
            ("<SequenceNumber>3601</SequenceNumber>", "", "SequenceNumber"),
            ("<Total TotalType=\"TransactionGrandAmount\" CurrencyCode=\"EUR\">105.930</Total>", "", "Total"),
        ];
        for (from, to, field) in cases {
            let parsed = parse(base.replace(from, to).as_bytes()).unwrap();
            let r = rejects(&parsed);
            assert_eq!(r.len(), 1, "{field}: {parsed:?}");
            assert_eq!(r[0].field.as_deref(), Some(*field));
            assert_eq!(r[0].line, 6);
        }
        // Without EndDateTime the local ReceiptDateTime is next, read in the source's zone.
        let text = base.replace("<EndDateTime>2025-03-14T14:42:10.327Z</EndDateTime>", "");
        let parsed = parse(text.as_bytes()).unwrap();
        let (event, _) = build(orders(&parsed)[0], &berlin('.')).unwrap();
        assert_eq!(event.event_time, 1741963330);
    }

    #[test]
    fn void_lines_net_out_either_way() {
        // NCR: an extra negative VoidFlag line (the sample); Xstore-style: the voided line itself
        // carries VoidFlag with its positive quantity and there is no reversal.
        let xstore = text("arts-poslog-sale.xml").replace(
            "<LineItem VoidFlag=\"true\" EntryMethod=\"Keyed\">\n        <SequenceNumber>4</SequenceNumber>",
            "<LineItem VoidFlag=\"false\" EntryMethod=\"Keyed\">\n        <SequenceNumber>4</SequenceNumber>",
        );
        let xstore = xstore
            .replacen(
                "<LineItem EntryMethod=\"Scanned\">\n        <SequenceNumber>3</SequenceNumber>",
                "<LineItem VoidFlag=\"true\" EntryMethod=\"Scanned\">\n        <SequenceNumber>3</SequenceNumber>",
                1,
            )
            .replace("<ExtendedAmount>-18.00</ExtendedAmount>", "<ExtendedAmount>18.00</ExtendedAmount>")
            .replace("<Quantity>-1</Quantity>", "<Quantity>1</Quantity>");
        for text in [text("arts-poslog-sale.xml"), xstore] {
            let parsed = parse(text.as_bytes()).unwrap();
            let ids: Vec<_> =
                orders(&parsed)[0].items.iter().map(|i| (i.content_id.clone().unwrap(), exact(&i.quantity))).collect();
            let tote = ids.iter().filter(|(id, _)| id == "TOTE-CNV-NAT").count();
            assert!(tote <= 1, "{ids:?}");
            assert_eq!(ids[0], ("SOCK-NVY-M".to_string(), "2".to_string()));
        }
    }

    fn sale_line(item: &str, quantity: &str, price: &str, void: bool) -> LineAcc {
        LineAcc {
            line: 1,
            void,
            is_sale: true,
            item_id: Some(item.into()),
            actual_price: Some(price.into()),
            quantity: Some(quantity.into()),
            ..LineAcc::default()
        }
    }

    #[test]
    fn net_items_treat_a_negative_unit_price_as_a_negative_quantity() {
        // Name, lines, expected contents (id, unit price, quantity) as handed on.
        type Case = (&'static str, Vec<LineAcc>, Vec<(&'static str, &'static str, &'static str)>);
        let l = sale_line;
        let cases: Vec<Case> = vec![
            ("plain", vec![l("E", "1", "2.40", false)], vec![("E", "2.4", "1")]),
            ("void as negative quantity", vec![l("E", "1", "2.40", false), l("E", "-1", "2.40", true)], vec![]),
            ("void as negative price", vec![l("E", "1", "2.40", false), l("E", "1", "-2.40", true)], vec![]),
            ("unflagged negative price", vec![l("E", "1", "2.40", false), l("E", "1", "-2.4", false)], vec![]),
            (
                "negative price, one left",
                vec![l("E", "2", "2.40", false), l("E", "1", "-2.40", true)],
                vec![("E", "2.4", "1")],
            ),
            (
                "negative price first",
                vec![l("E", "1", "-2.40", true), l("E", "2", "2.40", false)],
                vec![("E", "2.4", "1")],
            ),
            (
                "the voided line itself",
                vec![l("E", "1", "2.40", false), l("E", "1", "2.40", true)],
                vec![("E", "2.4", "1")],
            ),
            (
                "only a negative price",
                vec![l("R", "1", "-0.50", false), l("E", "1", "2.40", false)],
                vec![("E", "2.4", "1")],
            ),
        ];
        for (name, lines, want) in cases {
            let got: Vec<(String, String, String)> = net_items(&lines)
                .unwrap()
                .into_iter()
                .map(|i| (i.content_id.clone().unwrap(), exact(&i.price), exact(&i.quantity)))
                .collect();
            let want: Vec<(String, String, String)> =
                want.iter().map(|(i, p, q)| (i.to_string(), p.to_string(), q.to_string())).collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn retail_store_id_comes_first_in_the_order_id() {
        let v6 = text("arts-poslog-v6-sale.xml");
        let unit = "<BusinessUnit>\n         <UnitID Name=\"Harbor Mode Köln\">100</UnitID>\n      </BusinessUnit>";
        assert!(v6.contains(unit));
        let cases = [
            ("BusinessUnit/UnitID only (the sample)", v6.clone(), "100-10001-2025-03-14-3601"),
            ("both", v6.replace(unit, &format!("{unit}<RetailStoreID>7</RetailStoreID>")), "7-10001-2025-03-14-3601"),
            (
                "both, store last",
                v6.replace(unit, &format!("<RetailStoreID>7</RetailStoreID>{unit}")),
                "7-10001-2025-03-14-3601",
            ),
            ("RetailStoreID only", v6.replace(unit, "<RetailStoreID>7</RetailStoreID>"), "7-10001-2025-03-14-3601"),
            ("BusinessUnit text", v6.replace(unit, "<BusinessUnit>55</BusinessUnit>"), "55-10001-2025-03-14-3601"),
        ];
        for (name, text, want) in cases {
            let parsed = parse(text.as_bytes()).unwrap();
            assert_eq!(orders(&parsed)[0].order_id, want, "{name}");
        }
    }

    #[test]
    fn currency_xxx_is_no_currency_wherever_it_is_read() {
        let v6 = text("arts-poslog-v6-sale.xml");
        let batch = text("arts-poslog-sale.xml");
        // Name, file, currency handed on (`None`: the source's).
        let cases: Vec<(&str, String, Option<&str>)> = vec![
            (
                "Transaction/CurrencyCode",
                batch.replace("<CurrencyCode>USD</CurrencyCode>", "<CurrencyCode>XXX</CurrencyCode>"),
                None,
            ),
            ("lowercase", batch.replace("<CurrencyCode>USD</CurrencyCode>", "<CurrencyCode>xxx</CurrencyCode>"), None),
            ("the total's CurrencyCode", v6.replace("CurrencyCode=\"EUR\"", "CurrencyCode=\"XXX\""), Some("EUR")),
            (
                "the total's Currency",
                v6.replace(" CurrencyCode=\"EUR\">105.930", " Currency=\"XXX\">105.930"),
                Some("EUR"),
            ),
            (
                "every currency",
                v6.replace("Currency=\"EUR\"", "Currency=\"XXX\"")
                    .replace("CurrencyCode=\"EUR\"", "CurrencyCode=\"XXX\""),
                None,
            ),
            (
                "Transaction/CurrencyCode before the total's",
                v6.replace("<WorkstationID>", "<CurrencyCode>XXX</CurrencyCode><WorkstationID>"),
                Some("EUR"),
            ),
        ];
        for (name, text, want) in cases {
            let parsed = parse(text.as_bytes()).unwrap();
            let order = orders(&parsed)[0];
            assert_eq!(order.currency.as_deref(), want, "{name}");
        }
        // Built with a euro source, the batch without its currency is in euro, not rejected.
        let text = batch.replace("<CurrencyCode>USD</CurrencyCode>", "<CurrencyCode>XXX</CurrencyCode>");
        let parsed = parse(text.as_bytes()).unwrap();
        let (event, _) = build(orders(&parsed)[0], &berlin('.')).unwrap();
        assert_eq!(event.currency.code(), "EUR");
    }

    #[test]
    fn a_voided_return_line_does_not_make_a_return() {
        let v6 = text("arts-poslog-v6-sale.xml");
        let return_line = |void: &str, quantity: &str| {
            format!(
                "<LineItem{void}><SequenceNumber>9</SequenceNumber><Return ItemType=\"Stock\"><ItemID>RET-1</ItemID>\
                 <RegularSalesUnitPrice>5.00</RegularSalesUnitPrice><Quantity>{quantity}</Quantity></Return></LineItem>"
            )
        };
        let with = |lines: &[String]| v6.replacen("<LineItem>", &format!("{}<LineItem>", lines.concat()), 1);
        // Name, file, whether it is skipped as a return.
        let cases: Vec<(&str, String, bool)> = vec![
            ("no return", v6.clone(), false),
            ("a return line", with(&[return_line("", "1")]), true),
            ("a voided return line", with(&[return_line(" VoidFlag=\"true\"", "1")]), false),
            ("the flag on Return", with(&[return_line("", "1").replace("<Return ", "<Return VoidFlag=\"1\" ")]), false),
            (
                "a return and its void line",
                with(&[return_line("", "1"), return_line(" VoidFlag=\"true\"", "-1")]),
                false,
            ),
            ("two returns, one voided", with(&[return_line("", "2"), return_line(" VoidFlag=\"true\"", "-1")]), true),
            ("a void line alone", with(&[return_line(" VoidFlag=\"true\"", "-1")]), false),
            ("a return written negative", with(&[return_line("", "-1")]), true),
            ("a return without quantity", with(&[return_line("", "1").replace("<Quantity>1</Quantity>", "")]), true),
        ];
        for (name, text, is_return) in cases {
            let parsed = parse(text.as_bytes()).unwrap();
            assert!(rejects(&parsed).is_empty(), "{name}: {parsed:?}");
            let skipped = skips(&parsed).iter().any(|s| s.reason.contains("a Return line item"));
            assert_eq!(skipped, is_return, "{name}: {parsed:?}");
            assert_eq!(orders(&parsed).len(), usize::from(!is_return), "{name}");
        }
    }

    #[test]
    fn roles_follow_the_path() {
        use Tag::*;
        let cases: &[(&[Tag], Option<Field>)] = &[
            (&[Transaction, SequenceNumber], Some(Field::Sequence)),
            (&[Transaction, RetailTransaction, LineItem, SequenceNumber], None),
            (&[Transaction, RetailTransaction, LineItem, Sale, TransactionLink, SequenceNumber], None),
            (&[Transaction, BusinessUnit, UnitId], Some(Field::UnitId)),
            (&[Transaction, RetailTransaction, LineItem, Sale, ItemId], Some(Field::ItemId)),
            (&[Transaction, RetailTransaction, LineItem, Sale, Other, ItemId], None),
            (&[Transaction, RetailTransaction, Other, LoyaltyId], Some(Field::ExternalId)),
            (&[Transaction, RetailTransaction, LineItem, Sale, TransactionLink, LoyaltyId], None),
            (&[Transaction, ControlTransaction, Total], None),
        ];
        for (path, want) in cases {
            assert_eq!(role(path), *want, "{path:?}");
        }
    }
}
