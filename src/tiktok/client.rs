//! The HTTP client: one POST per batch, over ureq with rustls. It returns what the server said
//! (status, `Retry-After`, body) and leaves the meaning to [`super::classify`]. The access token is
//! only ever put in the `Access-Token` header; it is never part of an error or a log line.
//!
//! Redirects are never followed: the token goes to `api_base`'s origin and nowhere else, and a 3xx
//! comes back as a [`Reply`] with its `Location` (see [`super::classify::classify_reply`]). URLs in
//! errors and in [`Client::url`] are redacted ([`crate::config::redact_url`]).

use super::lookup::Lookups;
use crate::config::{redact_in, redact_url};
use std::time::Duration;
use ureq::unversioned::transport::DefaultConnector;

pub const TRACK_PATH: &str = "/open_api/v1.3/event/track/";

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub api_base: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// An explicit proxy URL; `None` uses `HTTPS_PROXY`/`ALL_PROXY`/`NO_PROXY` from the environment.
    pub proxy: Option<String>,
    /// Extra CA certificates (PEM). When set, the trusted roots are the system bundle plus these,
    /// instead of the built-in Mozilla roots (for TLS-inspecting proxies).
    pub ca_bundle: Option<std::path::PathBuf>,
}

/// The system's CA file on Debian/Ubuntu and on RHEL-like systems.
const SYSTEM_CA_FILES: [&str; 2] = ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"];

/// Every certificate in PEM text.
fn certificates(pem: &[u8]) -> Vec<ureq::tls::Certificate<'static>> {
    ureq::tls::parse_pem(pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect()
}

/// What the server answered.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
    /// The `Location` header (a redirect's target), as sent.
    pub location: Option<String>,
    /// The `Date` header, as sent: the server's clock (see [`crate::sender::clock`]).
    pub date: Option<String>,
    pub body: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The proxy URL, redacted.
    #[error("invalid proxy `{0}`")]
    Proxy(String),
    #[error("ca bundle {path}: {reason}")]
    CaBundle { path: String, reason: String },
    /// The request did not get an answer: connection refused or reset, DNS, TLS, timeout. `url`
    /// and `reason` are redacted.
    #[error("{url}: {reason}")]
    Transport { url: String, reason: String, connect: bool },
}

pub struct Client {
    agent: ureq::Agent,
    /// The host lookups `agent` makes, kept for a while; forgotten when a request gets no answer.
    lookups: Lookups,
    /// The endpoint, redacted, for messages.
    url: String,
    /// The endpoint as requested.
    target: String,
    /// The configured proxy, whose secrets are redacted from errors too.
    proxy: Option<String>,
}

impl Client {
    pub fn new(config: &ClientConfig) -> Result<Client, ClientError> {
        let proxy = match &config.proxy {
            Some(p) => Some(ureq::Proxy::new(p).map_err(|_| ClientError::Proxy(redact_url(p)))?),
            None => ureq::Proxy::try_from_env(),
        };
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(path) = &config.ca_bundle {
            let shown = path.display().to_string();
            let pem = std::fs::read(path)
                .map_err(|e| ClientError::CaBundle { path: shown.clone(), reason: e.to_string() })?;
            let extra = certificates(&pem);
            if extra.is_empty() {
                return Err(ClientError::CaBundle { path: shown, reason: "no PEM certificate in it".into() });
            }
            let mut roots: Vec<_> = SYSTEM_CA_FILES
                .iter()
                .filter_map(|f| std::fs::read(f).ok())
                .flat_map(|pem| certificates(&pem))
                .collect();
            roots.extend(extra);
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&roots));
        }
        let settings = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .proxy(proxy)
            .timeout_connect(Some(config.connect_timeout))
            .timeout_global(Some(config.request_timeout))
            .user_agent(concat!("offline-events-agent/", env!("CARGO_PKG_VERSION")))
            .build();
        let lookups = Lookups::default();
        let agent = ureq::Agent::with_parts(settings, DefaultConnector::new(), lookups.clone());
        let target = track_url(&config.api_base);
        Ok(Client { agent, lookups, url: redact_url(&target), target, proxy: config.proxy.clone() })
    }

    /// The endpoint, redacted for display (credentials and query hidden).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// POST one body. Any answer, whatever its status (a 3xx included: it is not followed), is `Ok`.
    pub fn post(&self, token: &str, body: &str) -> Result<Reply, ClientError> {
        let response = self
            .agent
            .post(&self.target)
            .header("Access-Token", token)
            .header("Content-Type", "application/json")
            .send(body)
            .map_err(|e| self.transport(e))?;
        let status = response.status().as_u16();
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let (retry_after, location, date) = (header("retry-after"), header("location"), header("date"));
        let body =
            response.into_body().with_config().limit(1024 * 1024).read_to_string().map_err(|e| self.transport(e))?;
        Ok(Reply { status, retry_after, location, date, body })
    }

    /// Ask the endpoint for nothing but its clock: a `HEAD` without the token, whose answer (any
    /// status) carries a `Date` header. `Ok(None)` when the answer has none.
    pub fn server_date(&self) -> Result<Option<String>, ClientError> {
        let response = self.agent.head(&self.target).call().map_err(|e| self.transport(e))?;
        Ok(response.headers().get("date").and_then(|v| v.to_str().ok()).map(str::to_string))
    }

    /// A request that got no answer, its URL and reason redacted.
    fn transport(&self, e: ureq::Error) -> ClientError {
        self.lookups.forget();
        let connect = matches!(e, ureq::Error::ConnectionFailed | ureq::Error::HostNotFound | ureq::Error::Io(_))
            || matches!(&e, ureq::Error::Timeout(t) if matches!(t, ureq::Timeout::Connect | ureq::Timeout::Resolve));
        let reason = redact_in(&e.to_string(), &self.target);
        let reason = match &self.proxy {
            Some(proxy) => redact_in(&reason, proxy),
            None => reason,
        };
        ClientError::Transport { url: self.url.clone(), reason, connect }
    }
}

/// `{api_base}/open_api/v1.3/event/track/`, whatever trailing slash `api_base` has; a query in
/// `api_base` stays after the path.
pub fn track_url(api_base: &str) -> String {
    let (base, query) = api_base.split_at(api_base.find('?').unwrap_or(api_base.len()));
    format!("{}{TRACK_PATH}{query}", base.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_bundle_without_certificates_is_an_error() {
        let dir = std::env::temp_dir().join(format!("oea-ca-{}", std::process::id()));
        std::fs::write(&dir, "not a certificate").unwrap();
        let config = ClientConfig {
            api_base: "https://example.com".into(),
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            proxy: None,
            ca_bundle: Some(dir.clone()),
        };
        let err = Client::new(&config).err().expect("an error");
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
        let _ = std::fs::remove_file(dir);
    }

    #[test]
    fn urls() {
        assert_eq!(
            track_url("https://business-api.tiktok.com"),
            "https://business-api.tiktok.com/open_api/v1.3/event/track/"
        );
        assert_eq!(track_url("http://127.0.0.1:9/"), "http://127.0.0.1:9/open_api/v1.3/event/track/");
        assert_eq!(track_url("http://u:p@h:9/?t=a"), "http://u:p@h:9/open_api/v1.3/event/track/?t=a");
    }

    #[test]
    fn urls_in_errors_are_redacted() {
        let config = |api_base: &str, proxy: Option<&str>| ClientConfig {
            api_base: api_base.into(),
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            proxy: proxy.map(str::to_string),
            ca_bundle: None,
        };
        let err = Client::new(&config("http://h", Some("bogus://u:s3cr3t@[x"))).err().expect("an error");
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
        // Port 9 (discard) on loopback: nothing listens, the connection is refused.
        let client = Client::new(&config("http://user:s3cr3t@127.0.0.1:9/?token=abc", None)).unwrap();
        assert_eq!(client.url(), "http://***@127.0.0.1:9/open_api/v1.3/event/track/?***");
        let err = client.post("t", "{}").expect_err("no server");
        assert!(matches!(err, ClientError::Transport { .. }), "{err}");
        let shown = err.to_string();
        assert!(!shown.contains("s3cr3t") && !shown.contains("abc"), "{shown}");
    }

    /// The client keeps its host lookup while requests are answered, and forgets it when one is
    /// not, so that the retry looks the host up again.
    #[test]
    fn a_lookup_is_kept_while_requests_are_answered() {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // One connection, two answered requests, then closed with the listener.
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            for _ in 0..2 {
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                reader.by_ref().take(length).read_to_end(&mut Vec::new()).unwrap();
                (&stream).write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").unwrap();
            }
        });
        let client = Client::new(&ClientConfig {
            api_base: format!("http://127.0.0.1:{port}"),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            proxy: None,
            ca_bundle: None,
        })
        .unwrap();
        assert_eq!(client.post("t", "{}").unwrap().status, 200);
        assert_eq!(client.lookups.kept_hosts(), 1);
        assert_eq!(client.post("t", "{}").unwrap().status, 200);
        server.join().unwrap();
        assert!(client.post("t", "{}").is_err(), "nothing listens any more");
        assert_eq!(client.lookups.kept_hosts(), 0);
    }
}
