//! Which built events are sent: a source's value and match-key policies ([`Screen`], [`screen`]),
//! and what TikTok can match an event by ([`MatchKey`], [`Coverage`]). Pure.
//!
//! TikTok matches offline events by e-mail or phone; `external_id` is for web and CRM events, so a
//! sale that carries only a customer id (or nothing) probably never matches an ad.

use super::{Event, User};

/// `zero_value`: what becomes of a purchase whose value is 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ZeroValue {
    /// Not sent, counted as a skipped sale (a voided or fully discounted sale tells TikTok nothing).
    #[default]
    Skip,
    /// Sent with value 0.
    Send,
}

/// A source's rules for which built events are sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Screen {
    pub zero_value: ZeroValue,
    /// `require_match_key`: skip sales with neither e-mail nor phone.
    pub require_match_key: bool,
}

/// Why `event` is not sent under `rules` (a skipped sale, counted and shown), or `None` to send it.
pub fn screen(event: &Event, rules: &Screen) -> Option<&'static str> {
    if event.event == "Purchase" && event.value.is_zero() && rules.zero_value == ZeroValue::Skip {
        return Some("its value is 0 (zero_value = \"skip\")");
    }
    if rules.require_match_key && !MatchKey::of(&event.user).can_match() {
        return Some("no e-mail or phone to match it by (require_match_key = true)");
    }
    None
}

/// The best key TikTok can match an event by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKey {
    /// An e-mail (perhaps a phone too).
    Email,
    /// A phone, no e-mail.
    Phone,
    /// Only a customer id: probably never matched offline.
    ExternalIdOnly,
    /// No identifier at all.
    None,
}

impl MatchKey {
    pub fn of(user: &User) -> MatchKey {
        if !user.email.is_empty() {
            MatchKey::Email
        } else if !user.phone.is_empty() {
            MatchKey::Phone
        } else if !user.external_id.is_empty() {
            MatchKey::ExternalIdOnly
        } else {
            MatchKey::None
        }
    }

    /// Whether TikTok can match an offline event by it (e-mail or phone).
    pub fn can_match(self) -> bool {
        matches!(self, MatchKey::Email | MatchKey::Phone)
    }
}

/// Events counted by their [`MatchKey`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Coverage {
    pub email: u64,
    pub phone: u64,
    pub external_id_only: u64,
    pub none: u64,
}

impl Coverage {
    pub fn add(&mut self, key: MatchKey) {
        match key {
            MatchKey::Email => self.email += 1,
            MatchKey::Phone => self.phone += 1,
            MatchKey::ExternalIdOnly => self.external_id_only += 1,
            MatchKey::None => self.none += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.email + self.phone + self.external_id_only + self.none
    }

    /// Events with neither e-mail nor phone.
    pub fn unmatchable(&self) -> u64 {
        self.external_id_only + self.none
    }

    /// Whether most events cannot be matched (more than half have neither e-mail nor phone).
    pub fn mostly_unmatchable(&self) -> bool {
        self.unmatchable() * 2 > self.total()
    }

    /// One line: "match keys: 3 e-mail, 1 phone only, 2 external_id only, 0 none".
    pub fn summary(&self) -> String {
        format!(
            "match keys: {} e-mail, {} phone only, {} external_id only, {} none",
            self.email, self.phone, self.external_id_only, self.none
        )
    }

    /// A one-line hint when most events cannot be matched.
    pub fn hint(&self) -> Option<String> {
        self.mostly_unmatchable().then(|| {
            format!(
                "hint: {} of {} sales have no e-mail or phone, and TikTok matches offline events only by those: map an e-mail or phone column if the export has one",
                self.unmatchable(),
                self.total()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::pii::{self, HashedId};
    use rust_decimal::Decimal;

    fn user(email: bool, phone: bool, external_id: bool) -> User {
        let h = |on: bool, text: &str| -> Vec<HashedId> {
            if on {
                vec![pii::hash_external_id(text).unwrap()]
            } else {
                vec![]
            }
        };
        User { email: h(email, "e"), phone: h(phone, "p"), external_id: h(external_id, "x") }
    }

    fn event(name: &'static str, value: &str, user: User) -> Event {
        Event {
            event: name,
            event_time: 0,
            event_id: crate::event::id::EventId::derive("s", "t", "1"),
            user,
            contents: vec![],
            currency: crate::event::money::Currency::parse("USD").unwrap(),
            value: value.parse::<Decimal>().unwrap(),
            order_id: "1".into(),
            shop_id: "s".into(),
            description: None,
        }
    }

    #[test]
    fn the_best_key_names_the_event() {
        let cases = [
            ((true, true, true), MatchKey::Email, true),
            ((true, false, false), MatchKey::Email, true),
            ((false, true, true), MatchKey::Phone, true),
            ((false, false, true), MatchKey::ExternalIdOnly, false),
            ((false, false, false), MatchKey::None, false),
        ];
        for ((e, p, x), key, can) in cases {
            assert_eq!(MatchKey::of(&user(e, p, x)), key, "{e} {p} {x}");
            assert_eq!(key.can_match(), can, "{key:?}");
        }
    }

    #[test]
    fn screening_by_value_and_match_key() {
        let skip = Screen::default();
        let send = Screen { zero_value: ZeroValue::Send, ..Screen::default() };
        let strict = Screen { require_match_key: true, ..Screen::default() };
        let cases = [
            ("a plain sale", "Purchase", "12.50", user(true, false, false), skip, None),
            ("zero, skipped by default", "Purchase", "0", user(true, false, false), skip, Some("zero_value")),
            ("zero written 0.00", "Purchase", "0.00", user(true, false, false), skip, Some("zero_value")),
            ("zero sent", "Purchase", "0", user(true, false, false), send, None),
            ("a zero lead is not a purchase", "Lead", "0", user(true, false, false), skip, None),
            ("no key, not required", "Purchase", "5", user(false, false, true), skip, None),
            (
                "customer id only, required",
                "Purchase",
                "5",
                user(false, false, true),
                strict,
                Some("require_match_key"),
            ),
            ("nothing, required", "Lead", "5", user(false, false, false), strict, Some("require_match_key")),
            ("phone, required", "Purchase", "5", user(false, true, false), strict, None),
        ];
        for (name, ev, value, u, rules, want) in cases {
            let got = screen(&event(ev, value, u), &rules);
            match want {
                None => assert_eq!(got, None, "{name}"),
                Some(key) => assert!(got.is_some_and(|r| r.contains(key)), "{name}: {got:?}"),
            }
        }
    }

    #[test]
    fn coverage_hints_when_most_cannot_match() {
        let cases: [(&[MatchKey], bool); 5] = [
            (&[], false),
            (&[MatchKey::Email, MatchKey::Phone, MatchKey::None], false),
            (&[MatchKey::Email, MatchKey::None], false),
            (&[MatchKey::Email, MatchKey::ExternalIdOnly, MatchKey::None], true),
            (&[MatchKey::ExternalIdOnly], true),
        ];
        for (keys, hint) in cases {
            let mut c = Coverage::default();
            keys.iter().for_each(|k| c.add(*k));
            assert_eq!(c.total(), keys.len() as u64);
            assert_eq!(c.hint().is_some(), hint, "{keys:?}");
        }
        let mut c = Coverage::default();
        [MatchKey::Email, MatchKey::Phone, MatchKey::ExternalIdOnly, MatchKey::None, MatchKey::None]
            .iter()
            .for_each(|k| c.add(*k));
        assert_eq!(c.summary(), "match keys: 1 e-mail, 1 phone only, 1 external_id only, 2 none");
        assert!(c.hint().unwrap().starts_with("hint: 3 of 5 sales have no e-mail or phone"));
    }
}
