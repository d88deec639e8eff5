//! The request body of `POST /open_api/v1.3/event/track/`.
//!
//! An event is serialised once, when it is queued ([`event_json`]); a batch body is those stored
//! strings joined ([`batch_body`]), so sending never re-parses the queue.

use crate::event::Event;
use serde::Serialize;

#[derive(Serialize)]
struct Data<'a> {
    event: &'a str,
    event_time: i64,
    event_id: &'a str,
    #[serde(skip_serializing_if = "User::is_empty")]
    user: User<'a>,
    properties: Properties<'a>,
}

#[derive(Serialize)]
struct User<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    email: Vec<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    phone: Vec<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    external_id: Vec<&'a str>,
}

impl User<'_> {
    fn is_empty(&self) -> bool {
        self.email.is_empty() && self.phone.is_empty() && self.external_id.is_empty()
    }
}

#[derive(Serialize)]
struct Properties<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    contents: Vec<Content<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<&'static str>,
    currency: &'static str,
    value: f64,
    order_id: &'a str,
    shop_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    num_items: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
}

#[derive(Serialize)]
struct Content<'a> {
    content_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_category: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    brand: Option<&'a str>,
    price: f64,
    quantity: i64,
}

/// One `data[]` element as JSON.
pub fn event_json(event: &Event) -> String {
    let data = Data {
        event: event.event,
        event_time: event.event_time,
        event_id: event.event_id.as_str(),
        user: User {
            email: hashes(&event.user.email),
            phone: hashes(&event.user.phone),
            external_id: hashes(&event.user.external_id),
        },
        properties: Properties {
            contents: event
                .contents
                .iter()
                .map(|c| Content {
                    content_id: &c.content_id,
                    content_name: c.content_name.as_deref(),
                    content_category: c.content_category.as_deref(),
                    brand: c.brand.as_deref(),
                    price: crate::event::money::as_f64(c.price),
                    quantity: c.quantity,
                })
                .collect(),
            content_type: (!event.contents.is_empty()).then_some("product"),
            currency: event.currency.code(),
            value: crate::event::money::as_f64(event.value),
            order_id: &event.order_id,
            shop_id: &event.shop_id,
            num_items: (!event.contents.is_empty()).then(|| event.num_items()),
            description: event.description.as_deref(),
        },
    };
    serde_json::to_string(&data).expect("event data always serialises")
}

fn hashes(v: &[crate::event::pii::HashedId]) -> Vec<&str> {
    v.iter().map(|h| h.as_str()).collect()
}

/// A whole request body from stored `data[]` elements.
pub fn batch_body<'a, I>(event_source_id: &str, test_event_code: Option<&str>, events: I) -> String
where
    I: IntoIterator<Item = &'a str>,
    I::IntoIter: Clone,
{
    let mut body = String::new();
    batch_body_into(&mut body, event_source_id, test_event_code, events);
    body
}

/// [`batch_body`] written into `body` (what it held is dropped, its room kept).
pub fn batch_body_into<'a, I>(body: &mut String, event_source_id: &str, test_event_code: Option<&str>, events: I)
where
    I: IntoIterator<Item = &'a str>,
    I::IntoIter: Clone,
{
    let events = events.into_iter();
    // Sized once: a batch of 1000 is about half a megabyte, grown by doubling it was copied
    // several times and left the allocator holding a block twice its size.
    let size = events.clone().map(|e| e.len() + 1).sum::<usize>() + 256 + test_event_code.map_or(0, str::len);
    body.clear();
    body.reserve(size);
    body.push_str(r#"{"event_source":"offline","event_source_id":"#);
    body.push_str(&serde_json::to_string(event_source_id).expect("a string serialises"));
    if let Some(code) = test_event_code {
        body.push_str(r#","test_event_code":"#);
        body.push_str(&serde_json::to_string(code).expect("a string serialises"));
    }
    body.push_str(r#","data":["#);
    for (i, event) in events.enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(event);
    }
    body.push_str("]}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::id::EventId;
    use crate::event::money::Currency;
    use crate::event::{pii, Content as C, User as U};
    use rust_decimal::Decimal;
    use serde_json::json;
    use std::str::FromStr;

    #[test]
    fn the_reference_example_round_trips() {
        let event = Event {
            event: "Purchase",
            event_time: 1704721970,
            event_id: EventId::derive("s042", "t1", "000123"),
            user: U {
                email: vec![pii::hash_email("alice_abc@gmail.com").unwrap().unwrap()],
                phone: vec![pii::hash_phone("+12133734253", None).unwrap().unwrap()],
                external_id: vec![],
            },
            contents: vec![
                C {
                    content_id: "1077218".into(),
                    content_name: Some("socks".into()),
                    content_category: None,
                    brand: None,
                    price: Decimal::from_str("8.00").unwrap(),
                    quantity: 2,
                },
                C {
                    content_id: "1197218".into(),
                    content_name: Some("dress".into()),
                    content_category: None,
                    brand: None,
                    price: Decimal::from_str("30").unwrap(),
                    quantity: 1,
                },
            ],
            currency: Currency::parse("USD").unwrap(),
            value: Decimal::from_str("46.00").unwrap(),
            order_id: "000123".into(),
            shop_id: "s042".into(),
            description: None,
        };
        let data = event_json(&event);
        let body: serde_json::Value =
            serde_json::from_str(&batch_body("7181537436256731137", None, [data.as_str()])).unwrap();
        assert_eq!(
            body,
            json!({"event_source":"offline","event_source_id":"7181537436256731137",
             "data":[{"event":"Purchase","event_time":1704721970,"event_id":"s042:t1:000123",
               "user":{"email":["848a771458438fc2ec420560d769fb9b9b86851ee338ec56517baabd79d3bb4f"],
                       "phone":["9f7ec22d72092cd3c0b58726ed9c2d91b92e51a3f29837508fb2948bb22dd2fd"]},
               "properties":{"contents":[{"content_id":"1077218","content_name":"socks","price":8.0,"quantity":2},
                                         {"content_id":"1197218","content_name":"dress","price":30.0,"quantity":1}],
                 "content_type":"product","currency":"USD","value":46.0,"order_id":"000123","shop_id":"s042",
                 "num_items":3}}]})
        );
    }

    #[test]
    fn test_event_code_is_top_level() {
        let body: serde_json::Value = serde_json::from_str(&batch_body("1", Some("TEST\"1"), ["{}", "{}"])).unwrap();
        assert_eq!(body["test_event_code"], "TEST\"1");
        assert_eq!(body["data"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn a_body_written_into_a_used_buffer_is_the_same_body() {
        let mut body = batch_body("1", Some("T"), ["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"]);
        batch_body_into(&mut body, "2", None, ["{}"]);
        assert_eq!(body, batch_body("2", None, ["{}"]));
        assert_eq!(body, r#"{"event_source":"offline","event_source_id":"2","data":[{}]}"#);
    }
}
