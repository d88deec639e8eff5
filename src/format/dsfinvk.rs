//! DSFinV-K, the export every German cash register must produce: `transactions.csv` (Bonkopf,
//! one row per receipt) joined with `lines.csv` (Bonpos, one row per receipt line). `;`-separated,
//! CRLF, decimal comma with `.` grouping (`1.249,00`), local times without offset.
//!
//! **Which file leads.** The reader streams `transactions.csv` (the only file [`reads_file`]
//! accepts) and joins `lines.csv` of the same export: the file named alike in the same folder
//! (`x-transactions.csv` ↔ `x-lines.csv`, case aside). Two reasons. A receipt is a
//! `transactions.csv` row, so every receipt, also one without lines (an aborted one), gets exactly
//! one outcome at its own line of the file being ingested. And recognising a cancellation means
//! comparing its lines with those of the sale it cancels before that sale is decided, which needs
//! the lines of receipts further down the file. So the companion is read first into a map from
//! receipt key to lines: every line of one export, at most [`MAX_LINES`] of them. Without it the
//! file is unreadable, as cancelled sales could not be told.
//!
//! **One receipt.** Key `Z_KASSE_ID`/`Z_ERSTELLUNG`/`Z_NR`/`BON_ID`; order id
//! `{Z_KASSE_ID}-{Z_NR}-{BON_ID}` (`KASSE-01-17-1001`), the same in every export of that closing.
//! Time `BON_ENDE` (local, in the source's zone), value `UMS_BRUTTO`, `KUNDE_ID` as external id,
//! contents from the `Umsatz` lines (`ART_NR`, else `GTIN`; `ARTIKELTEXT`, `WARENGR`, `STK_BR` per
//! unit, `MENGE`), netted per article and unit price. A line voided while the receipt was rung up
//! is written in one of two ways (DSFinV-K 4.2.3), and both count for nothing: the voided line
//! itself flagged `P_STORNO`=1 with no second line (such a line is left out, as it is out of
//! `UMS_BRUTTO`), or an extra unflagged line with a negative `MENGE` that nets with its original.
//! A line with a negative unit price counts as the positive price times the negated quantity
//! (+1 at −2,40 is −1 at 2,40), so a void written that way nets too; no unit price is handed on
//! negative. Lines without an article number, and articles whose net quantity is not positive
//! (a void without its original, a negative-price line left over), are left out of the contents,
//! never out of the value.
//!
//! **Not a sale** (a `Skip` with the reason): `BON_TYP` other than `Beleg` (`AVTraining`,
//! `AVBelegabbruch`, `AVBelegstorno`, `AVTransfer`, `AVBestellung`, `AVRechnung`, ...;
//! `AVSachbezug`, and customers of `KUNDE_TYP` `Mitarbeiter`, only when the source skips staff
//! sales), a negative or zero `UMS_BRUTTO` (a return), a cancellation receipt (`BON_STORNO`=1, or
//! a legacy `AVBelegstorno` with a negative `UMS_BRUTTO`), and the receipt it cancels. By the
//! specification an `AVBelegstorno` is the cancelled receipt itself, flagged instead of reversed
//! (registers without a TSE); one with a positive `UMS_BRUTTO` is skipped as such.
//!
//! **Which receipt a cancellation cancels.** Real exports link the two in `references.csv`, which
//! this reader does not read; it applies this rule instead: a receipt *S* with `BON_STORNO`=1 (or
//! an `AVBelegstorno` with a negative `UMS_BRUTTO`, whatever its `BON_STORNO`) cancels the receipt
//! *O* when (1) both belong to the same closing (`Z_KASSE_ID`, `Z_ERSTELLUNG`, `Z_NR`), (2) *O*
//! comes before *S* in `lines.csv`, (3) *S*'s lines are exactly *O*'s with the signs reversed (same
//! articles, quantities and unit prices after netting; *O* adds up to more than zero, *S* to
//! less), and (4) *S*'s `UMS_BRUTTO` is exactly minus *O*'s. When several earlier receipts qualify,
//! the latest one not yet cancelled is taken: a cancellation is rung right after the sale it
//! corrects. The amount alone never cancels anything, and a return (a negative `Beleg`
//! without `BON_STORNO`) does not undo its sale: the sale happened. Because *S* comes after *O*, a
//! sale whose lines a later receipt reverses is held back until that receipt's row is read (rarely
//! more than one at a time), then delivered or skipped.
//!
//! A bad row becomes a `Reject` naming its line and column, never its value, and reading goes on;
//! a file without the essential columns, or without its companion, is [`FormatError::Unreadable`].
//! Amounts are read with the source's decimal separator (`,` unless configured otherwise);
//! computed ones are handed on exact.

use super::companion::{self, Kind};
use super::csv_table::{order_not_taken, Check, Row, Table};
use super::{Format, FormatError, Parsed, Policy, ReadOptions, Reject, Skip, Summary};
use crate::event::{pii, Amount, RawItem, RawOrder};
use rust_decimal::Decimal;
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Read};
use std::ops::ControlFlow;

/// Most `lines.csv` rows held for one export.
pub const MAX_LINES: usize = 1_000_000;

/// The `transactions.csv` header of the specification (DSFinV-K 2.x); other columns are reported
/// as ignored.
const RECEIPT_COLUMNS: [&str; 23] = [
    "Z_KASSE_ID",
    "Z_ERSTELLUNG",
    "Z_NR",
    "BON_ID",
    "BON_NR",
    "BON_TYP",
    "BON_NAME",
    "TERMINAL_ID",
    "BON_STORNO",
    "BON_START",
    "BON_ENDE",
    "BEDIENER_ID",
    "BEDIENER_NAME",
    "UMS_BRUTTO",
    "KUNDE_NAME",
    "KUNDE_ID",
    "KUNDE_TYP",
    "KUNDE_STRASSE",
    "KUNDE_PLZ",
    "KUNDE_ORT",
    "KUNDE_LAND",
    "KUNDE_USTID",
    "BON_NOTIZ",
];

pub(super) const LINES: Kind = Kind {
    what: "DSFinV-K lines.csv",
    primary: "transactions",
    companion: "lines",
    matches: |name| name.ends_with("lines.csv"),
};

/// Whether the file is the one this profile reads (`...transactions.csv`); `lines.csv` is its
/// companion, and the export's other tables (`transactions_vat.csv`, ...) are not read.
pub(super) fn reads_file(file_name: &str) -> bool {
    file_name.to_ascii_lowercase().ends_with("transactions.csv")
}

/// Where the receipt columns are.
struct Columns {
    key: [usize; 4],
    typ: usize,
    storno: usize,
    ende: usize,
    brutto: usize,
    kunde_id: Option<usize>,
    kunde_typ: Option<usize>,
}

pub(super) fn read(
    input: impl BufRead,
    options: &ReadOptions,
    sink: &mut dyn FnMut(Parsed) -> ControlFlow<()>,
) -> Result<Summary, FormatError> {
    let decimal = options.decimal_separator.unwrap_or(Format::Dsfinvk.default_decimal_separator());
    let mut table = Table::open(input, options.csv)?;
    let [kasse, erstellung, z_nr, bon_id, typ, storno, ende, brutto] = table.required([
        "Z_KASSE_ID",
        "Z_ERSTELLUNG",
        "Z_NR",
        "BON_ID",
        "BON_TYP",
        "BON_STORNO",
        "BON_ENDE",
        "UMS_BRUTTO",
    ])?;
    let columns = Columns {
        key: [kasse, erstellung, z_nr, bon_id],
        typ,
        storno,
        ende,
        brutto,
        kunde_id: table.optional("KUNDE_ID"),
        kunde_typ: table.optional("KUNDE_TYP"),
    };
    let mut summary = Summary { ignored_columns: table.unknown_columns(&RECEIPT_COLUMNS), ..Summary::default() };
    let lines = load_lines(options, decimal)?;
    if lines.keyless > 0 {
        summary.notes.push(format!("{} row(s) of {} name no receipt and were left out", lines.keyless, lines.name));
    }
    let mut pairing = Pairing::new(reversals(&lines.receipts));
    let mut out: Vec<Parsed> = Vec::new();
    while let Some(next) = table.next_row()? {
        match next {
            Ok(row) => match receipt_key(&row, &columns.key) {
                Ok(key) => {
                    let verdict = judge(&row, &key, &columns, &lines, decimal, &options.policy);
                    pairing.receipt(key, row.line, verdict, &mut out);
                }
                Err(reject) => out.push(Parsed::Reject(reject)),
            },
            Err(reject) => out.push(Parsed::Reject(reject)),
        }
        if flush(&mut out, sink).is_break() {
            return Ok(summary);
        }
    }
    pairing.finish(&mut out);
    let _ = flush(&mut out, sink);
    Ok(summary)
}

/// Hand `out` to the sink in order, until the sink wants no more.
fn flush(out: &mut Vec<Parsed>, sink: &mut dyn FnMut(Parsed) -> ControlFlow<()>) -> ControlFlow<()> {
    for parsed in out.drain(..) {
        sink(parsed)?;
    }
    ControlFlow::Continue(())
}

/// The receipt key: `Z_KASSE_ID`, `Z_ERSTELLUNG`, `Z_NR`, `BON_ID`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    kasse: String,
    erstellung: String,
    z_nr: String,
    bon_id: String,
}

/// `Z_KASSE_ID`, `Z_ERSTELLUNG`, `Z_NR`: one closing (Kassenabschluss).
type Closing<'a> = (&'a str, &'a str, &'a str);

impl Key {
    fn order_id(&self) -> String {
        format!("{}-{}-{}", self.kasse, self.z_nr, self.bon_id)
    }

    fn closing(&self) -> Closing<'_> {
        (&self.kasse, &self.erstellung, &self.z_nr)
    }
}

/// The key of a row; every part must be there.
fn receipt_key(row: &Row, at: &[usize; 4]) -> Result<Key, Reject> {
    if let Some(&empty) = at.iter().find(|&&i| row.get(i).is_empty()) {
        return Err(row.reject(Some(empty), "empty"));
    }
    let [kasse, erstellung, z_nr, bon_id] = at.map(|i| row.get(i).to_string());
    Ok(Key { kasse, erstellung, z_nr, bon_id })
}

/// What one receipt is, before cancellations are paired.
#[derive(Debug, PartialEq)]
enum Verdict {
    Order(Box<RawOrder>, Decimal),
    /// A cancellation receipt with its `UMS_BRUTTO` and what marks it (`BON_STORNO=1`, or
    /// `BON_TYP AVBelegstorno`).
    Storno(Decimal, &'static str),
    Skip(String),
    Reject(Reject),
}

/// Decide one receipt row (pure).
fn judge(row: &Row, key: &Key, columns: &Columns, lines: &Lines, decimal: char, policy: &Policy) -> Verdict {
    let reject = |at: usize, reason: &str| Verdict::Reject(row.reject(Some(at), reason));
    let storno = match row.get(columns.storno) {
        "1" => true,
        "0" | "" => false,
        _ => return reject(columns.storno, "not 0 or 1"),
    };
    let total = match row.amount(columns.brutto, decimal) {
        Ok(total) => total,
        Err(e) => return Verdict::Reject(e),
    };
    let typ = row.get(columns.typ);
    match typ.to_ascii_lowercase().as_str() {
        "beleg" => {}
        "avsachbezug" if !policy.skip_staff => {}
        "avsachbezug" => return Verdict::Skip("staff benefit in kind (BON_TYP AVSachbezug)".into()),
        "avtraining" => return Verdict::Skip("training receipt (BON_TYP AVTraining)".into()),
        "avbelegabbruch" => return Verdict::Skip("aborted receipt (BON_TYP AVBelegabbruch)".into()),
        "avbelegstorno" if total < Decimal::ZERO => return Verdict::Storno(total, "BON_TYP AVBelegstorno"),
        "avbelegstorno" => return Verdict::Skip("cancelled receipt (BON_TYP AVBelegstorno)".into()),
        "" => return reject(columns.typ, "empty"),
        other if other.starts_with("av") => return Verdict::Skip(format!("BON_TYP {} is not a sale", pii::shown(typ))),
        _ => return Verdict::Skip(format!("unknown BON_TYP {}, not taken as a sale", pii::shown(typ))),
    }
    if storno {
        return Verdict::Storno(total, "BON_STORNO=1");
    }
    if total.is_zero() {
        return Verdict::Skip("zero total".into());
    }
    if total.is_sign_negative() {
        return Verdict::Skip("negative total (a return)".into());
    }
    let staff = row.opt(columns.kunde_typ).is_some_and(|t| t.eq_ignore_ascii_case("Mitarbeiter"));
    if policy.skip_staff && staff {
        return Verdict::Skip("staff purchase (KUNDE_TYP Mitarbeiter)".into());
    }
    if row.get(columns.ende).is_empty() {
        return reject(columns.ende, "empty");
    }
    let receipt = lines.receipts.get(key);
    let problem = receipt.and_then(|r| r.problem.as_ref()).or_else(|| lines.bad_bon_ids.get(&key.bon_id));
    if let Some(problem) = problem {
        return Verdict::Reject(Reject {
            line: row.line,
            field: problem.field.clone(),
            reason: format!("{} line {}: {}", lines.name, problem.line, problem.reason),
        });
    }
    let order = RawOrder {
        line: row.line,
        order_id: key.order_id(),
        event_time: row.get(columns.ende).to_string(),
        value: Some(row.get(columns.brutto).into()),
        external_ids: row.opt(columns.kunde_id).map(str::to_string).into_iter().collect(),
        items: receipt.map(|r| net_items(&r.lines, row.line)).unwrap_or_default(),
        ..RawOrder::default()
    };
    Verdict::Order(Box::new(order), total)
}

/// A line's quantity and unit price with the sign on the quantity: a negative unit price is the
/// positive price times the negated quantity (the same amount), so that a void written as +1 at
/// −2,40 nets with +1 at 2,40 (pure).
fn signed(l: &Line) -> (Decimal, Decimal) {
    if l.price < Decimal::ZERO {
        (-l.quantity, -l.price)
    } else {
        (l.quantity, l.price)
    }
}

/// The contents of a receipt: its `Umsatz` lines with an article number, netted per article and
/// unit price (see [`signed`]; a line void or a repeated article nets with its original), those
/// with a positive net quantity (pure). No unit price handed on is negative.
fn net_items(lines: &[Line], line: u64) -> Vec<RawItem> {
    let mut items: Vec<(RawItem, Decimal, Decimal)> = Vec::new();
    for l in lines.iter().filter(|l| l.sale) {
        let Some(id) = &l.content_id else { continue };
        let (l_quantity, l_price) = signed(l);
        let same = |(item, _, price): &&mut (RawItem, Decimal, Decimal)| {
            item.content_id.as_ref() == Some(id) && *price == l_price
        };
        match items.iter_mut().find(same) {
            Some((_, quantity, _)) => *quantity += l_quantity,
            None => items.push((
                RawItem {
                    line,
                    content_id: Some(id.clone()),
                    content_name: l.name.clone(),
                    content_category: l.category.clone(),
                    ..RawItem::default()
                },
                l_quantity,
                l_price,
            )),
        }
    }
    items
        .into_iter()
        .filter(|(_, quantity, _)| *quantity > Decimal::ZERO)
        .map(|(item, quantity, price)| RawItem {
            price: Some(Amount::Exact(price.normalize())),
            quantity: Some(Amount::Exact(quantity.normalize())),
            ..item
        })
        .collect()
}

/// Cancellations paired while the receipts stream by (see the module doc).
struct Pairing {
    /// From a receipt whose lines reverse an earlier one's to that earlier receipt.
    original_of: HashMap<Key, Key>,
    /// The earlier receipts of those pairs.
    reversed: HashSet<Key>,
    /// Sales waiting for the row of the receipt that reverses them.
    held: Vec<Held>,
    /// Cancellations read before their original: the original's key, the cancellation's order id,
    /// `UMS_BRUTTO` and what marks it.
    cancelled_ahead: HashMap<Key, (String, Decimal, &'static str)>,
}

/// A sale held back until the receipt that may cancel it is read.
struct Held {
    key: Key,
    order: Box<RawOrder>,
    total: Decimal,
}

impl Pairing {
    fn new(original_of: HashMap<Key, Key>) -> Pairing {
        let reversed = original_of.values().cloned().collect();
        Pairing { original_of, reversed, held: Vec::new(), cancelled_ahead: HashMap::new() }
    }

    /// Add to `out` what the receipt `key` and the sale waiting for it (if any) are.
    fn receipt(&mut self, key: Key, line: u64, verdict: Verdict, out: &mut Vec<Parsed>) {
        let order_id = key.order_id();
        let original = self.original_of.get(&key);
        let waiting = original.and_then(|o| self.held.iter().position(|h| &h.key == o)).map(|i| self.held.remove(i));
        let cancelled =
            |by: &str, mark: &str| format!("cancelled by receipt `{by}` ({mark}, reversed lines and amount)");
        match verdict {
            Verdict::Storno(total, mark) => {
                let reason = match (waiting, original) {
                    (Some(o), _) if o.total == -total => {
                        out.push(skip(o.order.line, &o.order.order_id, cancelled(&order_id, mark)));
                        format!("cancellation receipt ({mark}) of receipt `{}`", o.order.order_id)
                    }
                    (Some(o), _) => {
                        out.push(Parsed::Order(o.order));
                        format!("cancellation receipt ({mark}); no receipt in this export has the opposite amount")
                    }
                    (None, Some(o)) => {
                        self.cancelled_ahead.insert(o.clone(), (order_id.clone(), total, mark));
                        format!("cancellation receipt ({mark})")
                    }
                    (None, None) => {
                        format!("cancellation receipt ({mark}); the receipt it cancels is not in this export")
                    }
                };
                out.push(skip(line, &order_id, reason));
            }
            Verdict::Order(order, total) => {
                out.extend(waiting.map(|h| Parsed::Order(h.order)));
                match self.cancelled_ahead.remove(&key) {
                    Some((by, by_total, mark)) if by_total == -total => {
                        out.push(skip(line, &order_id, cancelled(&by, mark)))
                    }
                    _ if self.reversed.contains(&key) => self.held.push(Held { key, order, total }),
                    _ => out.push(Parsed::Order(order)),
                }
            }
            Verdict::Skip(reason) => {
                out.extend(waiting.map(|h| Parsed::Order(h.order)));
                out.push(skip(line, &order_id, reason));
            }
            Verdict::Reject(reject) => {
                out.extend(waiting.map(|h| Parsed::Order(h.order)));
                out.push(Parsed::Reject(order_not_taken(&order_id, reject)));
            }
        }
    }

    /// The sales still held at the end of the file were not cancelled in it.
    fn finish(self, out: &mut Vec<Parsed>) {
        out.extend(self.held.into_iter().map(|h| Parsed::Order(h.order)));
    }
}

fn skip(line: u64, order_id: &str, reason: String) -> Parsed {
    Parsed::Skip(Skip { line, order_id: order_id.to_string(), reason })
}

/// The companion, read into memory.
struct Lines {
    /// Its file name, for reject reasons.
    name: String,
    receipts: HashMap<Key, Receipt>,
    /// Rows that could not be read as a whole (field count, UTF-8, key), by the `BON_ID` they name:
    /// the receipts with that `BON_ID` are not taken.
    bad_bon_ids: HashMap<String, Reject>,
    /// Rows without even a `BON_ID`, which belong to no receipt.
    keyless: usize,
}

/// The lines of one receipt.
#[derive(Debug, Default)]
struct Receipt {
    /// Position of the receipt's first line in the companion.
    seq: usize,
    lines: Vec<Line>,
    /// The receipt's first bad line (line and column in the companion).
    problem: Option<Reject>,
}

#[derive(Debug, Clone)]
struct Line {
    content_id: Option<String>,
    name: Option<String>,
    category: Option<String>,
    quantity: Decimal,
    price: Decimal,
    /// `GV_TYP` `Umsatz` (or none): a sold article, not a discount, deposit or tip.
    sale: bool,
}

/// Find and read the companion `lines.csv`.
fn load_lines(options: &ReadOptions, decimal: char) -> Result<Lines, FormatError> {
    let unreadable = |reason: String| FormatError::Unreadable {
        line: 1,
        reason: format!("{reason} (DSFinV-K receipts are read together with their lines.csv)"),
    };
    let path = companion::find(options, &LINES)?.map_err(unreadable)?;
    let name = companion::file_name(&path);
    let own = options.path.as_deref().map(companion::file_name).unwrap_or_default();
    let named_alike = own.to_ascii_lowercase().replacen("transactions", "lines", 1);
    if name.to_ascii_lowercase() != named_alike {
        // Lines of another export would leave every receipt without lines, cancellations unseen.
        return Err(unreadable(format!("no {named_alike} next to {own}, only {name}")));
    }
    let in_companion = |e: FormatError| match e {
        FormatError::Unreadable { line, reason } => {
            FormatError::Unreadable { line, reason: format!("{}: {reason}", companion::file_name(&path)) }
        }
        other => other,
    };
    let table = companion::open(&path, options).map_err(in_companion)?;
    read_lines(table, name, decimal).map_err(in_companion)
}

/// Read a `lines.csv` table into receipts.
fn read_lines<R: Read>(mut table: Table<R>, name: String, decimal: char) -> Result<Lines, FormatError> {
    let [kasse, erstellung, z_nr, bon_id, menge, stk_br] =
        table.required(["Z_KASSE_ID", "Z_ERSTELLUNG", "Z_NR", "BON_ID", "MENGE", "STK_BR"])?;
    let key_at = [kasse, erstellung, z_nr, bon_id];
    let [art_nr, gtin, text, warengr, gv_typ, p_storno] =
        ["ART_NR", "GTIN", "ARTIKELTEXT", "WARENGR", "GV_TYP", "P_STORNO"].map(|c| table.optional(c));
    let mut lines = Lines { name: name.clone(), receipts: HashMap::new(), bad_bon_ids: HashMap::new(), keyless: 0 };
    let mut rows = 0usize;
    while let Some(row) = table.next_record()? {
        rows += 1;
        if rows > MAX_LINES {
            return Err(FormatError::Unreadable {
                line: 1,
                reason: format!("more than {MAX_LINES} lines; export fewer closings at a time"),
            });
        }
        if let Err(reject) = row.check(Check::EveryCell) {
            match row.key(bon_id) {
                Ok(bon_id) => {
                    lines.bad_bon_ids.entry(bon_id).or_insert(reject);
                }
                Err(_) => lines.keyless += 1,
            }
            continue;
        }
        let key = match receipt_key(&row, &key_at) {
            Ok(key) => key,
            Err(reject) if !row.get(bon_id).is_empty() => {
                lines.bad_bon_ids.entry(row.get(bon_id).to_string()).or_insert(reject);
                continue;
            }
            Err(_) => {
                lines.keyless += 1;
                continue;
            }
        };
        let seq = lines.receipts.len();
        let receipt = lines.receipts.entry(key).or_insert_with(|| Receipt { seq, ..Receipt::default() });
        if receipt.problem.is_some() {
            continue;
        }
        let parsed = row.amount(menge, decimal).and_then(|quantity| Ok((quantity, row.amount(stk_br, decimal)?)));
        // `P_STORNO`=1: the line was voided as it was rung up, and is in no amount (DSFinV-K 4.2.3).
        let voided = match row.opt(p_storno) {
            None | Some("0") => Ok(false),
            Some("1") => Ok(true),
            Some(_) => Err(row.reject(p_storno, "not 0 or 1")),
        };
        match parsed.and_then(|parsed| Ok((parsed, voided?))) {
            Ok((_, true)) => {}
            Ok(((quantity, price), false)) => {
                let cell = |at: Option<usize>| row.opt(at).map(str::to_string);
                let kind = row.opt(gv_typ);
                receipt.lines.push(Line {
                    content_id: cell(art_nr).or_else(|| cell(gtin)),
                    name: cell(text),
                    category: cell(warengr),
                    quantity,
                    price,
                    sale: kind.is_none_or(|k| k.eq_ignore_ascii_case("Umsatz")),
                });
            }
            Err(reject) => receipt.problem = Some(reject),
        }
    }
    Ok(lines)
}

/// Per article and unit price: net quantity and unit price (both without sign), and whether the
/// line adds to the total.
type Signature = Vec<(String, Decimal, Decimal, bool)>;

/// A receipt's lines as a comparable signature (pure); `None` for a receipt without lines.
fn signature(lines: &[Line]) -> Option<Signature> {
    let mut net: Vec<(String, Decimal, Decimal)> = Vec::new();
    for l in lines {
        let article = l.content_id.clone().or_else(|| l.name.clone()).unwrap_or_default();
        let (l_quantity, price) = signed(l);
        let price = price.normalize();
        match net.iter_mut().find(|(a, p, _)| *a == article && *p == price) {
            Some((_, _, quantity)) => *quantity += l_quantity,
            None => net.push((article, price, l_quantity)),
        }
    }
    let mut sig: Signature = net
        .into_iter()
        .filter(|(_, _, quantity)| !quantity.is_zero())
        .map(|(article, price, quantity)| {
            let adds = price.is_zero() || quantity.is_sign_positive() == price.is_sign_positive();
            (article, quantity.abs().normalize(), price.abs(), adds)
        })
        .collect();
    sig.sort();
    Some(sig).filter(|s| !s.is_empty())
}

/// Pair each receipt whose lines exactly reverse an earlier receipt's in the same closing with
/// that receipt: the map goes from the reversing receipt (its lines add up to less than zero) to
/// the original (more than zero) (pure). Each receipt is in at most one pair; the latest unpaired
/// original is taken.
fn reversals(receipts: &HashMap<Key, Receipt>) -> HashMap<Key, Key> {
    let mut ordered: Vec<(&Key, &Receipt)> = receipts.iter().filter(|(_, r)| r.problem.is_none()).collect();
    ordered.sort_by_key(|(_, r)| r.seq);
    // Unpaired originals by closing and signature, in file order.
    let mut open: HashMap<(Closing, Signature), Vec<&Key>> = HashMap::new();
    let mut pairs = HashMap::new();
    for (key, receipt) in ordered {
        let Some(sig) = signature(&receipt.lines) else {
            continue;
        };
        let amount: Decimal = receipt.lines.iter().map(|l| l.quantity * l.price).sum();
        if amount > Decimal::ZERO {
            open.entry((key.closing(), sig)).or_default().push(key);
            continue;
        }
        if amount.is_zero() {
            continue;
        }
        let mut reversed: Signature = sig.into_iter().map(|(a, q, p, adds)| (a, q, p, !adds)).collect();
        reversed.sort();
        if let Some(original) = open.get_mut(&(key.closing(), reversed)).and_then(Vec::pop) {
            pairs.insert(key.clone(), original.clone());
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::money::parse_amount;
    use crate::event::{pii, Event};
    use crate::format::profile_tests::{assert_purchases, assert_skips, fixture, run, Outcome, Purchase, Source};
    use crate::format::read as read_any;
    use std::path::Path;

    /// The README's source for the DSFinV-K samples.
    const BERLIN: Source = Source {
        format: Format::Dsfinvk,
        time_zone: "Europe/Berlin",
        currency: "EUR",
        phone_region: None,
        time_formats: None,
    };

    const README_PURCHASES: [Purchase; 2] = [
        Purchase {
            order_id: "KASSE-01-17-1001",
            event_time: 1741963330,
            value: "10.50",
            lines: 2,
            units: 3,
            email: false,
            phone: false,
            external_id: true,
        },
        Purchase {
            order_id: "KASSE-01-17-1005",
            event_time: 1741971665,
            value: "1249.00",
            lines: 1,
            units: 1,
            email: false,
            phone: false,
            external_id: true,
        },
    ];

    /// In file order of the outcomes: 1003 at once, 1002 when 1004 (its cancellation) is read.
    const README_SKIPS: [(&str, u64, &str); 3] = [
        ("KASSE-01-17-1003", 4, "training receipt (BON_TYP AVTraining)"),
        ("KASSE-01-17-1002", 3, "cancelled by receipt `KASSE-01-17-1004` (BON_STORNO=1"),
        ("KASSE-01-17-1004", 5, "cancellation receipt (BON_STORNO=1) of receipt `KASSE-01-17-1002`"),
    ];

    fn assert_readme(outcome: &Outcome) {
        assert_purchases(outcome, &README_PURCHASES);
        assert_skips(outcome, &README_SKIPS);
        let lines: Vec<u64> = outcome.events.iter().map(|e| e.contents.len() as u64).collect();
        assert_eq!(lines, [2, 1]);
        assert_eq!(
            contents(&outcome.events[0]),
            [("10021".to_string(), "3.8".to_string(), 2), ("20001".to_string(), "2.9".to_string(), 1)]
        );
        assert_eq!(contents(&outcome.events[1]), [("90001".to_string(), "1249".to_string(), 1)]);
        for (event, id) in outcome.events.iter().zip(["K-0042", "K-0107"]) {
            assert_eq!(event.user.external_id, [pii::hash_external_id(id).unwrap()], "{}", event.order_id);
            assert_eq!(event.currency.code(), "EUR");
        }
    }

    /// Content id, unit price (normalised) and quantity of each line of an event.
    fn contents(event: &Event) -> Vec<(String, String, i64)> {
        event.contents.iter().map(|c| (c.content_id.clone(), c.price.normalize().to_string(), c.quantity)).collect()
    }

    #[test]
    fn sample_export_gives_the_readme_purchases_and_skips() {
        let outcome = run(&BERLIN, &fixture("dsfinvk-transactions.csv"), Policy::default());
        assert_readme(&outcome);
        assert!(outcome.summary.ignored_columns.is_empty());
        assert!(outcome.summary.notes.is_empty());
        let cappuccino = &outcome.events[0].contents[0];
        assert_eq!(cappuccino.content_name.as_deref(), Some("Cappuccino"));
        assert_eq!(cappuccino.content_category.as_deref(), Some("Heißgetränke"));
    }

    /// The sample files as rows of cells (they quote nothing).
    fn rows(name: &str) -> Vec<Vec<String>> {
        let text = std::fs::read_to_string(fixture(name)).unwrap();
        text.split("\r\n").filter(|l| !l.is_empty()).map(|l| l.split(';').map(str::to_string).collect()).collect()
    }

    fn join(rows: &[Vec<String>]) -> String {
        rows.iter().map(|r| r.join(";") + "\r\n").collect()
    }

    /// The sample pair with `change` applied to the rows of both files.
    fn variant(change: impl Fn(&mut Vec<Vec<String>>)) -> (String, String) {
        let mut t = rows("dsfinvk-transactions.csv");
        let mut l = rows("dsfinvk-lines.csv");
        change(&mut t);
        change(&mut l);
        (join(&t), join(&l))
    }

    /// Write an export (`x-transactions.csv`, and `x-lines.csv` when given) into a fresh folder.
    fn export(transactions: &str, lines: Option<&str>) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let primary = dir.path().join("x-transactions.csv");
        std::fs::write(&primary, transactions).unwrap();
        if let Some(lines) = lines {
            std::fs::write(dir.path().join("x-lines.csv"), lines).unwrap();
        }
        (dir, primary)
    }

    fn run_export(transactions: &str, lines: &str, policy: Policy) -> Outcome {
        let (_dir, path) = export(transactions, Some(lines));
        run(&BERLIN, &path, policy)
    }

    fn read_path(path: &Path) -> Result<Summary, FormatError> {
        let options = ReadOptions { path: Some(path.to_path_buf()), ..ReadOptions::default() };
        read_any(Format::Dsfinvk, std::fs::File::open(path).unwrap(), &options, &mut |_| ControlFlow::Continue(()))
    }

    fn ids(outcome: &Outcome) -> Vec<&str> {
        outcome.events.iter().map(|e| e.order_id.as_str()).collect()
    }

    #[test]
    fn layout_variants_read_the_same() {
        let (t, l) = variant(|_| {});
        let cases = [
            ("reversed", variant(|rows| rows.iter_mut().for_each(|r| r.reverse())), vec![]),
            ("rotated", variant(|rows| rows.iter_mut().for_each(|r| r.rotate_left(5))), vec![]),
            (
                "extra column",
                variant(|rows| {
                    for (i, r) in rows.iter_mut().enumerate() {
                        r.insert(3, if i == 0 { "FILIALE".into() } else { "Köln".into() });
                    }
                }),
                vec!["FILIALE".to_string()],
            ),
            ("bom", (format!("\u{feff}{t}"), format!("\u{feff}{l}")), vec![]),
            ("lf", (t.replace("\r\n", "\n"), l.replace("\r\n", "\n")), vec![]),
        ];
        for (name, (t, l), ignored) in cases {
            let outcome = run_export(&t, &l, Policy::default());
            assert_readme(&outcome);
            assert_eq!(outcome.summary.ignored_columns, ignored, "{name}");
        }
    }

    #[test]
    fn amounts_follow_the_source_separator() {
        // A register configured to write decimal points: the source says `.`, and so do the amounts
        // handed on.
        let (t, l) = variant(|rows| {
            for row in rows.iter_mut().skip(1) {
                for cell in row.iter_mut() {
                    if cell.contains(',') {
                        *cell = cell.replace('.', "").replace(',', ".");
                    }
                }
            }
        });
        let (_dir, path) = export(&t, Some(&l));
        let options = ReadOptions { path: Some(path.clone()), decimal_separator: Some('.'), ..ReadOptions::default() };
        let mut orders = Vec::new();
        read_any(Format::Dsfinvk, std::fs::File::open(&path).unwrap(), &options, &mut |p| {
            if let Parsed::Order(o) = p {
                orders.push(o);
            }
            ControlFlow::Continue(())
        })
        .unwrap();
        let values: Vec<_> = orders.iter().map(|o| o.value.as_ref().and_then(Amount::as_text).unwrap()).collect();
        assert_eq!(values, ["10.50", "1249.00"]);
        let exact = Some(Amount::Exact(Decimal::from_str_exact("3.8").unwrap()));
        assert_eq!(orders[0].items[0].price, exact);
        // The sample itself, with the default `,`: computed amounts are the same exact values.
        let outcome = run(&BERLIN, &fixture("dsfinvk-transactions.csv"), Policy::default());
        assert_eq!(outcome.events.len(), 2);
        let mut first = None;
        let options = ReadOptions { path: Some(fixture("dsfinvk-transactions.csv")), ..ReadOptions::default() };
        read_any(
            Format::Dsfinvk,
            std::fs::File::open(fixture("dsfinvk-transactions.csv")).unwrap(),
            &options,
            &mut |p| {
                if let Parsed::Order(o) = p {
                    first.get_or_insert(o);
                }
                ControlFlow::Continue(())
            },
        )
        .unwrap();
        assert_eq!(first.unwrap().items[0].price, exact);
    }

    #[test]
    fn a_malformed_money_cell_rejects_its_receipt_only() {
        let (t, l) = variant(|_| {});
        let outcome = run_export(&t.replace(";10,50;", ";10,5O;"), &l, Policy::default());
        let r = &outcome.rejects;
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!((r[0].line, r[0].field.as_deref()), (2, Some("UMS_BRUTTO")));
        assert!(r[0].reason.contains("`KASSE-01-17-1001`"), "{}", r[0].reason);
        assert!(!r[0].reason.contains("10,5O"), "a reject never repeats the cell: {}", r[0].reason);
        assert_eq!(ids(&outcome), ["KASSE-01-17-1005"]);
        assert_skips(&outcome, &README_SKIPS);

        // A bad line in the companion rejects its receipt, naming the companion's line and column.
        let outcome = run_export(&t, &l.replace(";1.249,00000", ";1.2.49,00000"), Policy::default());
        let r = &outcome.rejects;
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!((r[0].line, r[0].field.as_deref()), (6, Some("STK_BR")));
        assert!(r[0].reason.contains("x-lines.csv line 7"), "{}", r[0].reason);
        assert_eq!(ids(&outcome), ["KASSE-01-17-1001"]);
    }

    #[test]
    fn bad_rows_are_rejected_with_line_and_field() {
        let (t, l) = variant(|_| {});
        let cases: &[(&str, &str, Option<&str>)] = &[
            (";1001;1001;Beleg;;T1;0;", ";1001;1001;Beleg;;T1;2;", Some("BON_STORNO")),
            (";1001;1001;Beleg;;T1;0;", ";1001;1001;;;T1;0;", Some("BON_TYP")),
            ("KASSE-01;2025-03-14T22:05:00;17;1001;", ";2025-03-14T22:05:00;17;1001;", Some("Z_KASSE_ID")),
            (";2025-03-14T15:42:10;7;", ";;7;", Some("BON_ENDE")),
            (";Emma Schulz;K-0042;;;;;;;", ";Emma Schulz;K-0042;;;;;;", None),
        ];
        for (from, to, field) in cases {
            let outcome = run_export(&t.replace(from, to), &l, Policy::default());
            let r = &outcome.rejects;
            assert_eq!(r.len(), 1, "{to}: {r:?}");
            assert_eq!((r[0].line, r[0].field.as_deref()), (2, *field), "{to}");
            assert_eq!(ids(&outcome), ["KASSE-01-17-1005"], "{to}: the rest is delivered");
        }
        // A companion row with a field too few: the receipt it names is not taken.
        let short = l.replace(";2,000;1,000;Stück;3,80000", ";2,000;1,000;3,80000");
        let outcome = run_export(&t, &short, Policy::default());
        assert_eq!(outcome.rejects.len(), 1, "{:?}", outcome.rejects);
        assert_eq!(outcome.rejects[0].line, 2);
        assert!(outcome.rejects[0].reason.contains("x-lines.csv line 2"), "{}", outcome.rejects[0].reason);
    }

    #[test]
    fn unreadable_exports_name_what_is_missing() {
        let (t, l) = variant(|_| {});
        let without = |rows: &mut Vec<Vec<String>>, column: &str| {
            if let Some(i) = rows[0].iter().position(|c| c == column) {
                rows.iter_mut().for_each(|r| {
                    r.remove(i);
                });
            }
        };
        let (no_money, _) = variant(|rows| {
            without(rows, "UMS_BRUTTO");
            without(rows, "BON_ENDE");
        });
        let (_, no_menge) = variant(|rows| without(rows, "MENGE"));
        let cases: Vec<(&str, String, Option<String>, &[&str])> = vec![
            ("no companion", t.clone(), None, &["no DSFinV-K lines.csv file next to x-transactions.csv"]),
            ("columns", no_money, Some(l.clone()), &["missing required columns `BON_ENDE`, `UMS_BRUTTO`"]),
            ("companion columns", t.clone(), Some(no_menge), &["x-lines.csv", "column `MENGE`"]),
            ("empty", String::new(), Some(l.clone()), &["empty file"]),
            ("empty companion", t.clone(), Some(String::new()), &["x-lines.csv", "empty file"]),
        ];
        for (name, t, l, words) in cases {
            let (_dir, path) = export(&t, l.as_deref());
            match read_path(&path) {
                Err(FormatError::Unreadable { reason, .. }) => {
                    for word in words {
                        assert!(reason.contains(word), "{name}: {reason}");
                    }
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        // The lines of another export are not taken for this one's.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a-transactions.csv");
        std::fs::write(&path, &t).unwrap();
        std::fs::write(dir.path().join("b-lines.csv"), &l).unwrap();
        let err = read_path(&path).unwrap_err().to_string();
        assert!(err.contains("no a-lines.csv next to a-transactions.csv, only b-lines.csv"), "{err}");
    }

    #[test]
    fn staff_receipts_follow_the_policy() {
        let (t, l) = variant(|_| {});
        let t = t.replace(";1005;Beleg;", ";1005;AVSachbezug;");
        let staff = Policy { skip_staff: true, ..Policy::default() };
        let outcome = run_export(&t, &l, staff.clone());
        assert_eq!(ids(&outcome), ["KASSE-01-17-1001"]);
        assert!(outcome.skips[3].reason.contains("AVSachbezug"), "{:?}", outcome.skips);
        assert_eq!(run_export(&t, &l, Policy::default()).events.len(), 2);
        // A customer of type Mitarbeiter is a staff sale too.
        let t = t.replace(";Emma Schulz;K-0042;;", ";Emma Schulz;K-0042;Mitarbeiter;");
        let outcome = run_export(&t, &l, staff);
        assert!(outcome.events.is_empty());
        assert!(outcome.skips[0].reason.contains("KUNDE_TYP Mitarbeiter"), "{:?}", outcome.skips);
    }

    #[test]
    fn companions_are_found_by_name_in_any_case() {
        for (primary, reads) in [
            ("dsfinvk-transactions.csv", true),
            ("TRANSACTIONS.CSV", true),
            ("Kasse1-Transactions.csv", true),
            ("dsfinvk-lines.csv", false),
            ("transactions_vat.csv", false),
            ("orders.csv", false),
        ] {
            assert_eq!(Format::Dsfinvk.reads_file(primary), reads, "{primary}");
        }
        let dir = tempfile::tempdir().unwrap();
        let primary = dir.path().join("Kasse1-Transactions.csv");
        std::fs::copy(fixture("dsfinvk-transactions.csv"), &primary).unwrap();
        std::fs::copy(fixture("dsfinvk-lines.csv"), dir.path().join("KASSE1-LINES.csv")).unwrap();
        std::fs::copy(fixture("dsfinvk-lines.csv"), dir.path().join("other-lines.csv")).unwrap();
        assert_readme(&run(&BERLIN, &primary, Policy::default()));
    }

    fn line(id: &str, quantity: &str, price: &str) -> Line {
        Line {
            content_id: Some(id.into()),
            name: None,
            category: None,
            quantity: parse_amount(quantity, ',').unwrap(),
            price: parse_amount(price, ',').unwrap(),
            sale: true,
        }
    }

    type Listed = (&'static str, &'static str, Vec<Line>);

    fn receipts(list: &[Listed]) -> HashMap<Key, Receipt> {
        list.iter()
            .enumerate()
            .map(|(seq, (z_nr, bon_id, lines))| {
                let key = Key {
                    kasse: "K".into(),
                    erstellung: "2025-03-14T22:05:00".into(),
                    z_nr: z_nr.to_string(),
                    bon_id: bon_id.to_string(),
                };
                (key, Receipt { seq, lines: lines.clone(), problem: None })
            })
            .collect()
    }

    #[test]
    fn reversals_pair_only_exact_mirrors_in_the_same_closing() {
        let espresso = || vec![line("E", "1,000", "2,40")];
        let minus_espresso = || vec![line("E", "-1,000", "2,40")];
        let cappuccino = || line("C", "1", "2,90");
        // Name, receipts in file order, expected (reversal, original) pairs by BON_ID.
        type Case = (&'static str, Vec<Listed>, Vec<(&'static str, &'static str)>);
        let cases: Vec<Case> = vec![
            (
                "sample shape",
                vec![("17", "1", espresso()), ("17", "2", vec![line("A", "1", "4,5")]), ("17", "3", minus_espresso())],
                vec![("3", "1")],
            ),
            (
                "negative price instead of quantity",
                vec![("17", "1", espresso()), ("17", "2", vec![line("E", "1", "-2,4")])],
                vec![("2", "1")],
            ),
            (
                "the latest of two equal receipts",
                vec![("17", "1", espresso()), ("17", "2", espresso()), ("17", "3", minus_espresso())],
                vec![("3", "2")],
            ),
            (
                "two cancellations, two originals",
                vec![
                    ("17", "1", espresso()),
                    ("17", "2", espresso()),
                    ("17", "3", minus_espresso()),
                    ("17", "4", minus_espresso()),
                ],
                vec![("3", "2"), ("4", "1")],
            ),
            ("another closing", vec![("16", "1", espresso()), ("17", "2", minus_espresso())], vec![]),
            ("reversal first", vec![("17", "1", minus_espresso()), ("17", "2", espresso())], vec![]),
            ("another article", vec![("17", "1", espresso()), ("17", "2", vec![line("X", "-1", "2,40")])], vec![]),
            ("another price", vec![("17", "1", espresso()), ("17", "2", vec![line("E", "-1", "2,50")])], vec![]),
            (
                "partial",
                vec![("17", "1", vec![line("E", "1", "2,40"), cappuccino()]), ("17", "2", minus_espresso())],
                vec![],
            ),
            (
                "a line void nets before comparing",
                vec![
                    ("17", "1", vec![line("E", "1", "2,40"), cappuccino(), line("C", "-1", "2,90")]),
                    ("17", "2", minus_espresso()),
                ],
                vec![("2", "1")],
            ),
            ("no lines", vec![("17", "1", vec![]), ("17", "2", vec![])], vec![]),
        ];
        for (name, list, want) in cases {
            let mut got: Vec<(String, String)> =
                reversals(&receipts(&list)).iter().map(|(s, o)| (s.bon_id.clone(), o.bon_id.clone())).collect();
            got.sort();
            let want: Vec<(String, String)> = want.iter().map(|(s, o)| (s.to_string(), o.to_string())).collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn a_reversal_cancels_only_with_the_storno_flag_and_the_opposite_amount() {
        let (t, l) = variant(|_| {});
        let all = ["KASSE-01-17-1001", "KASSE-01-17-1002", "KASSE-01-17-1005"];
        // A return (a negative Beleg without BON_STORNO) does not undo the sale.
        let outcome = run_export(&t.replace(";1004;Beleg;;T1;1;", ";1004;Beleg;;T1;0;"), &l, Policy::default());
        assert_eq!(ids(&outcome), all);
        assert!(outcome.skips.iter().any(|s| s.reason.contains("negative total")), "{:?}", outcome.skips);
        // A cancellation whose amount is not the opposite of the sale's cancels nothing.
        let outcome = run_export(&t.replace(";-2,40;", ";-2,50;"), &l, Policy::default());
        assert_eq!(ids(&outcome), all);
        // The cancellation's row may come first in transactions.csv; the pair still cancels.
        let mut r = rows("dsfinvk-transactions.csv");
        r.swap(2, 4);
        let outcome = run_export(&join(&r), &l, Policy::default());
        assert_eq!(ids(&outcome), ["KASSE-01-17-1001", "KASSE-01-17-1005"]);
        assert_eq!(outcome.skips.len(), 3);
        assert!(outcome.skips.iter().any(|s| s.reason.contains("cancelled by receipt `KASSE-01-17-1004`")));
    }

    #[test]
    fn net_items_treat_a_negative_unit_price_as_a_negative_quantity() {
        // Name, lines, expected contents (id, unit price, quantity) as handed on.
        type Case = (&'static str, Vec<Line>, Vec<(&'static str, &'static str, &'static str)>);
        let cases: Vec<Case> = vec![
            ("plain", vec![line("E", "1", "2,40")], vec![("E", "2,4", "1")]),
            ("repeated article", vec![line("E", "1", "2,40"), line("E", "2", "2,4")], vec![("E", "2,4", "3")]),
            (
                "void as negative quantity",
                vec![line("E", "2", "2,40"), line("E", "-1", "2,40")],
                vec![("E", "2,4", "1")],
            ),
            ("void as negative price", vec![line("E", "1", "2,40"), line("E", "1", "-2,40")], vec![]),
            (
                "negative price, one left",
                vec![line("E", "2", "2,40"), line("E", "1", "-2,40")],
                vec![("E", "2,4", "1")],
            ),
            ("negative price first", vec![line("E", "1", "-2,40"), line("E", "2", "2,40")], vec![("E", "2,4", "1")]),
            ("both negative", vec![line("E", "1", "2,40"), line("E", "-1", "-2,40")], vec![("E", "2,4", "2")]),
            ("only a negative price", vec![line("R", "1", "-0,50"), line("E", "1", "2,40")], vec![("E", "2,4", "1")]),
            ("free article", vec![line("F", "1", "0,00")], vec![("F", "0", "1")]),
        ];
        for (name, lines, want) in cases {
            let exact = |a: Option<Amount>| a.unwrap().resolve(',').unwrap();
            let got: Vec<(String, Decimal, Decimal)> = net_items(&lines, 2)
                .into_iter()
                .map(|i| (i.content_id.unwrap(), exact(i.price), exact(i.quantity)))
                .collect();
            let amount = |a: &str| parse_amount(a, ',').unwrap();
            let want: Vec<(String, Decimal, Decimal)> =
                want.iter().map(|(i, p, q)| (i.to_string(), amount(p), amount(q))).collect();
            assert_eq!(got, want, "{name}");
        }
    }

    /// The sample with `row` (cells of `lines.csv`) inserted after the companion's line `after`.
    fn with_line(after: usize, row: &str) -> (String, String) {
        variant(|rows| {
            if rows[0][0] == "Z_KASSE_ID" && rows[0].iter().any(|c| c == "P_STORNO") {
                rows.insert(after, row.split(';').map(str::to_string).collect());
            }
        })
    }

    #[test]
    fn a_line_voided_with_p_storno_counts_for_nothing() {
        // DSFinV-K 4.2.3: P_STORNO=1 marks the voided line itself; no reversing line follows.
        let voided = |bon: &str, menge: &str| {
            format!(
                "KASSE-01;2025-03-14T22:05:00;17;{bon};9;;Cappuccino;T1;Umsatz;;1;1;;10021;;1;Heißgetränke;\
                 {menge};1,000;Stück;3,80000"
            )
        };
        // In a sale: the contents stay those of the README.
        let (t, l) = with_line(2, &voided("1001", "1,000"));
        assert_readme(&run_export(&t, &l, Policy::default()));
        // In a cancelled sale: the cancellation still mirrors what was sold.
        let (t, l) = with_line(3, &voided("1002", "1,000"));
        assert_readme(&run_export(&t, &l, Policy::default()));
        // The other way of voiding a line, a reversing line without the flag, nets with its original.
        let reversal = voided("1001", "-1,000").replace(";1;1;;10021;", ";1;0;;10021;");
        let (t, l) = with_line(2, &voided("1001", "1,000").replace(";1;1;;10021;", ";1;0;;10021;"));
        let mut l: Vec<String> = l.split("\r\n").map(str::to_string).collect();
        l.insert(3, reversal);
        assert_readme(&run_export(&t, &l.join("\r\n"), Policy::default()));
        // A flag other than 0 or 1 rejects its receipt.
        let (t, l) = with_line(2, &voided("1001", "1,000").replace(";1;1;;10021;", ";1;x;;10021;"));
        let outcome = run_export(&t, &l, Policy::default());
        assert_eq!(ids(&outcome), ["KASSE-01-17-1005"]);
        assert_eq!(outcome.rejects[0].field.as_deref(), Some("P_STORNO"), "{:?}", outcome.rejects);
        assert!(outcome.rejects[0].reason.contains("x-lines.csv line 3"), "{}", outcome.rejects[0].reason);
    }

    #[test]
    fn a_legacy_avbelegstorno_cancels_its_sale_like_bon_storno() {
        let (t, l) = variant(|_| {});
        let cases: &[(&str, &str, &[&str], &str)] = &[
            (";1004;Beleg;;T1;1;", ";1004;AVBelegstorno;;T1;0;", &["KASSE-01-17-1001", "KASSE-01-17-1005"], ""),
            (";1004;Beleg;;T1;1;", ";1004;AVBelegstorno;;T1;1;", &["KASSE-01-17-1001", "KASSE-01-17-1005"], ""),
            // Not the opposite amount: nothing is cancelled, the legacy receipt is still skipped.
            (
                ";1004;Beleg;;T1;1;2025-03-14T16:20:00;2025-03-14T16:20:12;7;Jana;-2,40;",
                ";1004;AVBelegstorno;;T1;0;2025-03-14T16:20:00;2025-03-14T16:20:12;7;Jana;-2,50;",
                &["KASSE-01-17-1001", "KASSE-01-17-1002", "KASSE-01-17-1005"],
                "BON_TYP AVBelegstorno",
            ),
            // The form of the specification: the cancelled receipt itself, flagged, not reversed.
            (
                ";1005;Beleg;;T1;0;",
                ";1005;AVBelegstorno;;T1;1;",
                &["KASSE-01-17-1001"],
                "cancelled receipt (BON_TYP AVBelegstorno)",
            ),
        ];
        for (from, to, want, reason) in cases {
            let outcome = run_export(&t.replace(from, to), &l, Policy::default());
            assert_eq!(ids(&outcome), *want, "{to}");
            assert!(outcome.rejects.is_empty(), "{to}: {:?}", outcome.rejects);
            assert!(outcome.skips.iter().any(|s| s.reason.contains(reason)), "{to}: {:?}", outcome.skips);
        }
        // The pair, with the legacy type: the sale names its cancellation, the cancellation its sale.
        let outcome = run_export(&t.replace(";1004;Beleg;;T1;1;", ";1004;AVBelegstorno;;T1;0;"), &l, Policy::default());
        let reasons: Vec<&str> = outcome.skips.iter().map(|s| s.reason.as_str()).collect();
        assert_eq!(
            reasons[1..],
            [
                "cancelled by receipt `KASSE-01-17-1004` (BON_TYP AVBelegstorno, reversed lines and amount)",
                "cancellation receipt (BON_TYP AVBelegstorno) of receipt `KASSE-01-17-1002`",
            ]
        );
        // Read before its sale, it cancels it all the same.
        let mut r = rows("dsfinvk-transactions.csv");
        r.swap(2, 4);
        let swapped = join(&r).replace(";1004;Beleg;;T1;1;", ";1004;AVBelegstorno;;T1;0;");
        assert_eq!(ids(&run_export(&swapped, &l, Policy::default())), ["KASSE-01-17-1001", "KASSE-01-17-1005"]);
    }

    #[test]
    fn stopping_early_is_honoured() {
        let path = fixture("dsfinvk-transactions.csv");
        let options = ReadOptions { path: Some(path.clone()), ..ReadOptions::default() };
        let mut seen = 0;
        read_any(Format::Dsfinvk, std::fs::File::open(&path).unwrap(), &options, &mut |_| {
            seen += 1;
            ControlFlow::Break(())
        })
        .unwrap();
        assert_eq!(seen, 1);
    }
}
