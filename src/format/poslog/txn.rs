//! One `Transaction` as it is read, element by element, and what it becomes once it closes: an
//! order, a skip or a reject (pure: the XML is read in `mod.rs`).

use super::elements::{role, tag, Field, Tag};
use super::{Attrs, MAX_TEXT};
use crate::event::money::parse_amount;
use crate::event::{Amount, RawItem, RawOrder};
use crate::format::{Parsed, Reject, Skip};
use quick_xml::events::BytesStart;
use quick_xml::Decoder;
use rust_decimal::Decimal;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) enum Kind {
    #[default]
    Missing,
    Retail,
    Control,
    Other(String),
}

/// One open element inside the transaction.
pub(super) struct Frame {
    tag: Tag,
    field: Option<Field>,
    line: u64,
    text: String,
}

/// A `Sale` or `Return` line item as read.
#[derive(Debug, Default, Clone)]
pub(super) struct LineAcc {
    pub(super) line: u64,
    pub(super) void: bool,
    /// A `Sale` (not a `Return` or another kind of line).
    pub(super) is_sale: bool,
    /// A `Return`.
    pub(super) is_return: bool,
    pub(super) item_id: Option<String>,
    pub(super) pos_item_id: Option<String>,
    pub(super) description: Option<String>,
    pub(super) name_attr: Option<String>,
    pub(super) regular_price: Option<String>,
    pub(super) actual_price: Option<String>,
    pub(super) quantity: Option<String>,
}

/// A problem that rejects the transaction: line, element, reason.
pub(super) type Problem = (u64, Option<&'static str>, String);

/// The transaction being read.
#[derive(Default)]
pub(super) struct Txn {
    line: u64,
    /// The open elements from `Transaction` inward, and their tags (the path [`role`] reads).
    path: Vec<Frame>,
    tags: Vec<Tag>,
    kind: Kind,
    training: bool,
    cancelled: bool,
    status: Option<String>,
    store: Option<String>,
    business_unit: Option<String>,
    unit_id: Option<String>,
    workstation: Option<String>,
    sequence: Option<String>,
    business_day: Option<String>,
    begin: Option<String>,
    end: Option<String>,
    receipt: Option<String>,
    currency_code: Option<String>,
    total_currency: Option<String>,
    amount_currency: Option<String>,
    grand_total: Option<String>,
    external_ids: Vec<String>,
    current: Option<LineAcc>,
    sales: Vec<LineAcc>,
    returns: Vec<LineAcc>,
    retour: bool,
    refund_tender: bool,
    problem: Option<Problem>,
}

impl Txn {
    pub(super) fn new(line: u64) -> Txn {
        Txn { line, ..Txn::default() }
    }

    pub(super) fn taint(&mut self, line: u64, field: Option<&'static str>, reason: String) {
        self.problem.get_or_insert((line, field, reason));
    }

    pub(super) fn open(&mut self, e: &BytesStart, line: u64, decoder: Decoder) {
        let tag = tag(e.local_name().as_ref());
        let depth = self.tags.len();
        let parent = self.tags.last().copied();
        self.tags.push(tag);
        let mut field = role(&self.tags);
        let attrs = match Attrs::of(e, decoder) {
            Ok(attrs) => attrs,
            Err(reason) => {
                self.taint(line, None, reason);
                Attrs::default()
            }
        };
        match (depth, tag) {
            (0, Tag::Transaction) => {
                self.training |= attrs.flag("TrainingModeFlag");
                self.cancelled |= attrs.flag("CancelFlag");
            }
            (1, Tag::RetailTransaction) => {
                self.kind = Kind::Retail;
                self.training |= attrs.flag("TrainingModeFlag");
                self.cancelled |= attrs.flag("CancelFlag");
                self.status = attrs.get("TransactionStatus").map(str::to_string);
            }
            (1, Tag::ControlTransaction) if self.kind == Kind::Missing => self.kind = Kind::Control,
            (1, Tag::OtherTransaction) if self.kind == Kind::Missing => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                self.kind = Kind::Other(name);
            }
            (2, Tag::LineItem) if parent == Some(Tag::RetailTransaction) => {
                self.current = Some(LineAcc { line, void: attrs.flag("VoidFlag"), ..LineAcc::default() });
            }
            (3, Tag::Sale | Tag::Return) if parent == Some(Tag::LineItem) => {
                if let Some(current) = self.current.as_mut() {
                    current.is_sale |= tag == Tag::Sale;
                    current.is_return |= tag == Tag::Return;
                    current.void |= attrs.flag("VoidFlag");
                }
            }
            (3, Tag::Tender)
                if parent == Some(Tag::LineItem)
                    && attrs.get("TypeCode").is_some_and(|t| t.eq_ignore_ascii_case("Refund")) =>
            {
                self.refund_tender = true;
            }
            (2, Tag::Total) if parent == Some(Tag::RetailTransaction) => {
                let grand = attrs.get("TotalType").is_some_and(|t| t == "TransactionGrandAmount");
                if grand && self.grand_total.is_none() {
                    self.total_currency = known_currency(attrs.get("CurrencyCode"))
                        .or_else(|| known_currency(attrs.get("Currency")))
                        .map(str::to_string);
                } else {
                    field = None;
                }
            }
            (4, Tag::ItemId) if matches!(parent, Some(Tag::Sale | Tag::Return)) => {
                if let Some(current) = self.current.as_mut() {
                    current.name_attr = attrs.get("Name").map(str::to_string);
                }
            }
            _ => {}
        }
        if self.amount_currency.is_none() && self.kind == Kind::Retail {
            self.amount_currency = known_currency(attrs.get("Currency")).map(str::to_string);
        }
        self.path.push(Frame { tag, field, line, text: String::new() });
    }

    /// Whether the innermost open element is one whose text is read.
    pub(super) fn wants_text(&self) -> bool {
        self.path.last().is_some_and(|f| f.field.is_some())
    }

    pub(super) fn text(&mut self, text: &str) {
        let Some(frame) = self.path.last_mut() else {
            return;
        };
        let Some(field) = frame.field else {
            return;
        };
        if frame.text.len() + text.len() > MAX_TEXT {
            let line = frame.line;
            frame.field = None;
            let reason = format!("longer than {MAX_TEXT} bytes");
            self.taint(line, Some(field.element()), reason);
            return;
        }
        frame.text.push_str(text);
    }

    /// Close the innermost element; true when it was the `Transaction` itself.
    pub(super) fn close(&mut self) -> bool {
        let Some(frame) = self.path.pop() else {
            return true;
        };
        if let Some(field) = frame.field {
            let value = frame.text.trim();
            if !value.is_empty() {
                self.set(field, value.to_string());
            }
        }
        self.tags.pop();
        if frame.tag == Tag::LineItem && self.tags == [Tag::Transaction, Tag::RetailTransaction] {
            if let Some(line) = self.current.take() {
                if line.is_return {
                    self.returns.push(line.clone());
                }
                if line.is_sale {
                    self.sales.push(line);
                }
            }
        }
        self.path.is_empty()
    }

    fn set(&mut self, field: Field, value: String) {
        let first = |slot: &mut Option<String>| {
            if slot.is_none() {
                *slot = Some(value.clone());
            }
        };
        match field {
            Field::Store => first(&mut self.store),
            Field::BusinessUnit => first(&mut self.business_unit),
            Field::UnitId => first(&mut self.unit_id),
            Field::Workstation => first(&mut self.workstation),
            Field::Sequence => first(&mut self.sequence),
            Field::BusinessDay => first(&mut self.business_day),
            Field::Begin => first(&mut self.begin),
            Field::End => first(&mut self.end),
            Field::Receipt => first(&mut self.receipt),
            Field::Currency => {
                if known_currency(Some(&value)).is_some() {
                    first(&mut self.currency_code)
                }
            }
            Field::GrandTotal => first(&mut self.grand_total),
            Field::ExternalId => {
                if !self.external_ids.contains(&value) {
                    self.external_ids.push(value);
                }
            }
            Field::SalesMode => {
                if value.eq_ignore_ascii_case("RETOUR") {
                    self.retour = true;
                }
            }
            Field::ItemId
            | Field::PosItemId
            | Field::Description
            | Field::RegularPrice
            | Field::ActualPrice
            | Field::Quantity => {
                let Some(line) = self.current.as_mut() else {
                    return;
                };
                let slot = match field {
                    Field::ItemId => &mut line.item_id,
                    Field::PosItemId => &mut line.pos_item_id,
                    Field::Description => &mut line.description,
                    Field::RegularPrice => &mut line.regular_price,
                    Field::ActualPrice => &mut line.actual_price,
                    _ => &mut line.quantity,
                };
                first(slot);
            }
        }
    }

    fn order_id(&self) -> String {
        let store = self.store.as_deref().or(self.unit_id.as_deref()).or(self.business_unit.as_deref()).unwrap_or("");
        let mut id = format!("{store}-{}", self.workstation.as_deref().unwrap_or(""));
        if let Some(day) = &self.business_day {
            id.push('-');
            id.push_str(day);
        }
        id.push('-');
        id.push_str(self.sequence.as_deref().unwrap_or(""));
        id
    }

    /// Reject the whole transaction with `reason` (used when the XML breaks inside it).
    pub(super) fn reject_all(self, reason: &str) -> Parsed {
        Parsed::Reject(Reject {
            line: self.line,
            field: None,
            reason: format!("transaction `{}` not taken: {reason}", self.order_id()),
        })
    }

    /// What the complete transaction is: an order, a skip or a reject (pure).
    pub(super) fn finish(self) -> Parsed {
        let order_id = self.order_id();
        let line = self.line;
        let skip = |reason: String| Parsed::Skip(Skip { line, order_id: order_id.clone(), reason });
        let reject = |at: u64, field: Option<&str>, reason: String| {
            Parsed::Reject(Reject {
                line: at,
                field: field.map(str::to_string),
                reason: format!("transaction `{order_id}` not taken: {reason}"),
            })
        };
        if let Some((at, field, reason)) = &self.problem {
            return reject(*at, *field, reason.clone());
        }
        match &self.kind {
            Kind::Retail => {}
            Kind::Control => return skip("control transaction (sign-on, sign-off or no-sale), not a sale".into()),
            Kind::Other(name) => return skip(format!("`{name}` is not a sale")),
            Kind::Missing => return skip("no RetailTransaction, not a sale".into()),
        }
        if self.training {
            return skip("training transaction (TrainingModeFlag)".into());
        }
        if self.cancelled {
            return skip("cancelled transaction (CancelFlag)".into());
        }
        if let Some(status) = self.status.as_deref().filter(|s| not_completed(s)) {
            return skip(format!("TransactionStatus {}", crate::event::pii::shown(status)));
        }
        if self.sequence.is_none() {
            return reject(line, Some("SequenceNumber"), "missing".into());
        }
        let total = self.grand_total.as_deref().map(|raw| (raw, parse_amount(raw, '.')));
        let mut markers = Vec::new();
        if returned(&self.returns) {
            markers.push("a Return line item");
        }
        if self.retour {
            markers.push("SalesMode RETOUR");
        }
        if self.refund_tender {
            markers.push("Tender TypeCode=\"Refund\"");
        }
        if matches!(total, Some((_, Ok(v))) if v.is_sign_negative() && !v.is_zero()) {
            markers.push("negative TransactionGrandAmount");
        }
        if !markers.is_empty() {
            return skip(format!("return: {}", markers.join(", ")));
        }
        let total = match total {
            None => return reject(line, Some("Total"), "no Total with TotalType=\"TransactionGrandAmount\"".into()),
            Some((_, Err(e))) => {
                return reject(line, Some("Total"), e.to_string());
            }
            Some((_, Ok(v))) => v,
        };
        if total.is_zero() {
            return skip("zero total".into());
        }
        let Some(event_time) = self.end.clone().or_else(|| self.receipt.clone()).or_else(|| self.begin.clone()) else {
            return reject(line, Some("EndDateTime"), "missing".into());
        };
        let items = match net_items(&self.sales) {
            Ok(items) => items,
            Err((at, field, reason)) => return reject(at, Some(field), reason),
        };
        let currency = self.currency_code.or(self.total_currency).or(self.amount_currency);
        Parsed::Order(Box::new(RawOrder {
            line,
            order_id,
            event_time,
            external_ids: self.external_ids,
            currency,
            value: Some(Amount::Exact(total.normalize())),
            items,
            ..RawOrder::default()
        }))
    }
}

/// A `TransactionStatus` that means the sale did not complete.
pub(super) fn not_completed(status: &str) -> bool {
    let s = status.trim().to_ascii_lowercase();
    ["void", "cancel", "suspend"].iter().any(|word| s.contains(word))
}

/// A currency code as read, unless it is empty or `XXX` (ISO 4217 for "no currency") (pure).
pub(super) fn known_currency(code: Option<&str>) -> Option<&str> {
    code.filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("XXX"))
}

/// A line's quantity and unit price with the sign on the quantity: a negative unit price is the
/// positive price times the negated quantity, the same amount (pure).
pub(super) fn signed(quantity: Decimal, price: Decimal) -> (Decimal, Decimal) {
    if price < Decimal::ZERO {
        (-quantity, -price)
    } else {
        (quantity, price)
    }
}

/// Whether the `Return` lines return anything (pure): netted per item and unit price like sale
/// lines (see [`net_items`]), an item with a non-voided line whose net quantity is not zero (a
/// return may be written with a positive or a negative quantity). A voided line alone returns
/// nothing; a line whose quantity or price cannot be read returns something unless voided.
pub(super) fn returned(lines: &[LineAcc]) -> bool {
    /// Item and unit price.
    type Key<'a> = (Option<&'a str>, Option<Decimal>);
    // Net quantity, and whether a line that is not voided is among them.
    let mut nets: HashMap<Key, (Decimal, bool)> = HashMap::new();
    for line in lines {
        let quantity = line.quantity.as_deref().map_or(Ok(Decimal::ONE), |q| parse_amount(q, '.'));
        let price = line.actual_price.as_deref().or(line.regular_price.as_deref()).map(|p| parse_amount(p, '.'));
        let (quantity, price) = match (quantity, price.transpose()) {
            (Ok(q), Ok(Some(p))) => {
                let (q, p) = signed(q, p);
                (q, Some(p.normalize()))
            }
            (Ok(q), Ok(None)) => (q, None),
            _ if line.void => continue,
            _ => return true,
        };
        if line.void && quantity.is_sign_positive() {
            continue;
        }
        let id = line.item_id.as_deref().or(line.pos_item_id.as_deref());
        let net = nets.entry((id, price)).or_insert((Decimal::ZERO, false));
        net.0 += quantity;
        net.1 |= !line.void;
    }
    nets.values().any(|(quantity, returned)| *returned && !quantity.is_zero())
}

/// Net the sale lines per item and unit price (pure), with the sign of a negative unit price moved
/// to the quantity (see [`signed`]). A voided line with a negative quantity cancels its original;
/// one with a positive quantity is the voided line itself and is dropped.
pub(super) fn net_items(sales: &[LineAcc]) -> Result<Vec<RawItem>, (u64, &'static str, String)> {
    struct Net {
        item: RawItem,
        quantity: Decimal,
    }
    let mut nets: Vec<Net> = Vec::new();
    let mut index: HashMap<(String, Decimal), usize> = HashMap::new();
    for line in sales {
        let quantity = match line.quantity.as_deref() {
            Some(q) => parse_amount(q, '.').map_err(|e| (line.line, "Quantity", e.to_string()))?,
            None => Decimal::ONE,
        };
        let (price_field, price) = match (&line.actual_price, &line.regular_price) {
            (Some(p), _) => ("ActualSalesUnitPrice", p),
            (None, Some(p)) => ("RegularSalesUnitPrice", p),
            (None, None) => continue,
        };
        let price_value = parse_amount(price, '.').map_err(|e| (line.line, price_field, e.to_string()))?;
        let (quantity, price_value) = signed(quantity, price_value);
        if line.void && quantity.is_sign_positive() {
            continue;
        }
        let Some(content_id) = line.item_id.clone().or_else(|| line.pos_item_id.clone()) else {
            continue;
        };
        let key = (content_id.clone(), price_value.normalize());
        match index.get(&key) {
            Some(&i) => nets[i].quantity += quantity,
            None => {
                index.insert(key, nets.len());
                nets.push(Net {
                    item: RawItem {
                        line: line.line,
                        content_id: Some(content_id),
                        content_name: line.description.clone().or_else(|| line.name_attr.clone()),
                        price: Some(Amount::Exact(price_value.normalize())),
                        ..RawItem::default()
                    },
                    quantity,
                });
            }
        }
    }
    Ok(nets
        .into_iter()
        .filter(|n| n.quantity > Decimal::ZERO)
        .map(|n| RawItem { quantity: Some(Amount::Exact(n.quantity.normalize())), ..n.item })
        .collect())
}
