//! Event names: what POS exports call a sale, mapped onto TikTok's standard names.

use std::collections::BTreeMap;

/// Standard event names TikTok accepts for offline events (current names only; legacy aliases are
/// mapped onto these before sending).
pub const STANDARD: [&str; 18] = [
    "AddPaymentInfo",
    "AddToCart",
    "AddToWishlist",
    "ApplicationApproval",
    "CompleteRegistration",
    "Contact",
    "CustomizeProduct",
    "Download",
    "FindLocation",
    "InitiateCheckout",
    "Lead",
    "Purchase",
    "Schedule",
    "Search",
    "StartTrial",
    "SubmitApplication",
    "Subscribe",
    "ViewContent",
];

/// Built-in aliases (lower-case keys).
const ALIASES: [(&str, &str); 9] = [
    ("sale", "Purchase"),
    ("sales", "Purchase"),
    ("purchase", "Purchase"),
    ("order", "Purchase"),
    ("completepayment", "Purchase"),
    ("complete_payment", "Purchase"),
    ("placeanorder", "Purchase"),
    ("submitform", "Lead"),
    ("lead", "Lead"),
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{} maps to no standard TikTok event", super::pii::shown(.0))]
    Unknown(String),
    #[error("`{from}` is mapped to `{to}`, which is not a standard TikTok event")]
    BadTarget { from: String, to: String },
}

/// The mapping from export names to standard names: built-ins plus the configured table.
#[derive(Debug, Clone, Default)]
pub struct NameTable {
    custom: BTreeMap<String, &'static str>,
}

impl NameTable {
    /// Build from the configured table (`[event_names]`, keys matched case-insensitively).
    pub fn new(custom: &BTreeMap<String, String>) -> Result<NameTable, NameError> {
        let mut table = NameTable::default();
        for (from, to) in custom {
            let target = standard(to).ok_or_else(|| NameError::BadTarget { from: from.clone(), to: to.clone() })?;
            table.custom.insert(from.trim().to_lowercase(), target);
        }
        Ok(table)
    }

    /// The standard name for `raw`; an empty name means `Purchase` (a sale).
    pub fn resolve(&self, raw: &str) -> Result<&'static str, NameError> {
        let key = raw.trim().to_lowercase();
        if key.is_empty() {
            return Ok("Purchase");
        }
        if let Some(target) = self.custom.get(&key) {
            return Ok(target);
        }
        if let Some((_, target)) = ALIASES.iter().find(|(alias, _)| *alias == key) {
            return Ok(target);
        }
        standard(raw).ok_or_else(|| NameError::Unknown(raw.trim().to_string()))
    }
}

/// The canonical spelling of a standard name, matched case-insensitively.
pub fn standard(name: &str) -> Option<&'static str> {
    let name = name.trim();
    STANDARD.iter().copied().find(|s| s.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_aliases_standard_and_custom_names() {
        let custom = BTreeMap::from([("Verkauf".to_string(), "purchase".to_string())]);
        let table = NameTable::new(&custom).unwrap();
        let cases: &[(&str, Result<&str, ()>)] = &[
            ("", Ok("Purchase")),
            ("sale", Ok("Purchase")),
            ("SALE", Ok("Purchase")),
            ("purchase", Ok("Purchase")),
            ("CompletePayment", Ok("Purchase")),
            ("verkauf", Ok("Purchase")),
            ("Lead", Ok("Lead")),
            ("viewcontent", Ok("ViewContent")),
            ("refund", Err(())),
            ("MyCustomEvent", Err(())),
        ];
        for (input, expected) in cases {
            assert_eq!(table.resolve(input).map_err(|_| ()), *expected, "{input:?}");
        }
    }

    #[test]
    fn a_custom_mapping_to_a_non_standard_name_is_a_config_error() {
        let custom = BTreeMap::from([("sale".to_string(), "Sold".to_string())]);
        assert!(matches!(NameTable::new(&custom), Err(NameError::BadTarget { .. })));
    }
}
