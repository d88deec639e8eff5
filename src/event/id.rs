//! Deterministic event ids.
//!
//! Rule (v1): the shop id, the till id (when there is one) and the order id, each percent-encoded
//! (every byte outside `A-Z a-z 0-9 - . _ ~` becomes `%XX`), joined with `:`. So shop `s042`, till
//! `t1`, order `000123` give `s042:t1:000123`; order `#1001` gives `s042:t1:%231001`. Because `:` is
//! always encoded inside a part, two different (shop, till, order) triples never give the same id.
//! An id longer than 128 characters is replaced by `h1-` and the first 40 hex characters of the
//! SHA-256 of the long form. The same order exported again, in any file, gets the same id, so a
//! re-send is deduplicated by TikTok and a re-export is not queued twice.

use sha2::{Digest, Sha256};
use std::fmt::Write;

const MAX_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventId(String);

impl EventId {
    pub fn derive(shop_id: &str, till_id: &str, order_id: &str) -> EventId {
        let mut id = String::with_capacity(shop_id.len() + till_id.len() + order_id.len() + 2);
        encode_into(&mut id, shop_id);
        if !till_id.is_empty() {
            id.push(':');
            encode_into(&mut id, till_id);
        }
        id.push(':');
        encode_into(&mut id, order_id);
        if id.len() <= MAX_LEN {
            return EventId(id);
        }
        let digest = Sha256::digest(id.as_bytes());
        let mut short = String::from("h1-");
        for byte in &digest[..20] {
            let _ = write!(short, "{byte:02x}");
        }
        EventId(short)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn encode_into(out: &mut String, part: &str) {
    for byte in part.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        let cases = [
            (("s042", "t1", "000123"), "s042:t1:000123"),
            (("s042", "", "000123"), "s042:000123"),
            (("s042", "t1", "#1001"), "s042:t1:%231001"),
            (("s042", "t1", "1-1001"), "s042:t1:1-1001"),
            (("a:b", "c", "d"), "a%3Ab:c:d"),
            (("a", "b:c", "d"), "a:b%3Ac:d"),
            (("Café", "1", "x y"), "Caf%C3%A9:1:x%20y"),
        ];
        for ((shop, till, order), expected) in cases {
            assert_eq!(EventId::derive(shop, till, order).as_str(), expected);
        }
    }

    #[test]
    fn long_ids_are_hashed_deterministically() {
        let order = "x".repeat(200);
        let a = EventId::derive("s", "t", &order);
        assert!(a.as_str().starts_with("h1-"));
        assert_eq!(a.as_str().len(), 43);
        assert_eq!(a, EventId::derive("s", "t", &order));
        assert_ne!(a, EventId::derive("s", "u", &order));
    }
}
