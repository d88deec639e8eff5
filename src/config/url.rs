//! URLs as the config holds them (`api_base`, `proxy`): their host, whether it is loopback, and
//! [`redact_url`], the only form in which such a URL is ever shown (credentials and query hidden).

/// A URL fit to print: `user:password@` becomes `***@`, a `?query` becomes `?***` and a `#fragment`
/// `#***`. Scheme, host, port and path are kept, so the user can still tell which server is meant.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => format!("***{}", &authority[at..]),
        None => authority.to_string(),
    };
    let tail = match tail.find(['?', '#']) {
        Some(i) => format!("{}{}***", &tail[..i], &tail[i..=i]),
        None => tail.to_string(),
    };
    format!("{scheme}{authority}{tail}")
}

/// `text` (an error message from a library, say) with `url` and its secret parts (credentials,
/// query, fragment) replaced as [`redact_url`] does, wherever they appear.
pub fn redact_in(text: &str, url: &str) -> String {
    let mut out = text.replace(url, &redact_url(url));
    for secret in secrets(url) {
        out = out.replace(secret, "***");
    }
    out
}

/// The parts of `url` that [`redact_url`] hides, longest first.
fn secrets(url: &str) -> Vec<&str> {
    let rest = url.find("://").map_or(url, |i| &url[i + 3..]);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let mut found = Vec::new();
    if let Some(at) = authority.rfind('@') {
        found.push(&authority[..at]);
    }
    if let Some(i) = tail.find(['?', '#']) {
        found.push(&tail[i + 1..]);
    }
    found.retain(|s| !s.is_empty());
    found.sort_by_key(|s| std::cmp::Reverse(s.len()));
    found
}

/// `(is_https, host)` of an http(s) URL.
pub(super) fn url_host(url: &str) -> Option<(bool, String)> {
    let (https, rest) =
        if let Some(r) = url.strip_prefix("https://") { (true, r) } else { (false, url.strip_prefix("http://")?) };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    let host = if host.starts_with('[') {
        host.split(']').next().unwrap_or("").trim_start_matches('[').to_string()
    } else {
        host.split(':').next().unwrap_or("").to_string()
    };
    (!host.is_empty()).then_some((https, host))
}

pub(super) fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_query_and_fragment_are_redacted() {
        let cases = [
            ("https://business-api.tiktok.com", "https://business-api.tiktok.com"),
            ("http://127.0.0.1:8080/open_api/", "http://127.0.0.1:8080/open_api/"),
            ("http://user:secret@127.0.0.1:8080/?token=abc", "http://***@127.0.0.1:8080/?***"),
            ("http://user@h/p", "http://***@h/p"),
            ("http://a:b@c@d/x", "http://***@d/x"),
            ("socks5://user:pw@proxy:1080", "socks5://***@proxy:1080"),
            ("http://proxy.example:3128", "http://proxy.example:3128"),
            ("user:pw@proxy:3128", "***@proxy:3128"),
            ("http://h/a?b=c#d", "http://h/a?***"),
            ("http://h/a#frag", "http://h/a#***"),
            ("http://h?x=1", "http://h?***"),
            ("http://h/p@x", "http://h/p@x"),
            ("http://[::1]:80/", "http://[::1]:80/"),
            ("", ""),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn secrets_are_redacted_inside_other_text() {
        let url = "http://user:secret@h:1/p?token=abc";
        let cases = [
            (format!("bad uri: {url}"), "bad uri: http://***@h:1/p?***"),
            ("connecting to user:secret@h:1".to_string(), "connecting to ***@h:1"),
            ("query token=abc refused".to_string(), "query *** refused"),
            ("nothing here".to_string(), "nothing here"),
        ];
        for (text, shown) in cases {
            assert_eq!(redact_in(&text, url), shown, "{text}");
        }
        assert_eq!(redact_in("http://h/ is down", "http://h/"), "http://h/ is down");
    }

    #[test]
    fn url_hosts_and_loopback() {
        let cases = [
            ("https://business-api.tiktok.com/open_api", Some((true, "business-api.tiktok.com"))),
            ("http://127.0.0.1:8080", Some((false, "127.0.0.1"))),
            ("http://user:pw@[::1]:80/x", Some((false, "::1"))),
            ("ftp://x", None),
            ("https://", None),
        ];
        for (url, expected) in cases {
            assert_eq!(url_host(url), expected.map(|(https, host)| (https, host.to_string())), "{url}");
        }
        for (host, loopback) in [("localhost", true), ("127.0.0.1", true), ("::1", true), ("10.0.0.1", false)] {
            assert_eq!(is_loopback(host), loopback, "{host}");
        }
    }
}
