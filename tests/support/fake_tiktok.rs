//! A strict fake of TikTok's Events API 2.0 endpoint `POST /open_api/v1.3/event/track/`
//! (offline events), served over real HTTP/1.1 on 127.0.0.1 with keep-alive.
//!
//! Only `std` and `serde_json` are used, so the file can be included by the integration
//! tests (`mod support;` -> `pub mod fake_tiktok;`) and by a bench
//! (`#[path = "../tests/support/fake_tiktok.rs"] mod fake_tiktok;`).
//!
//! Per request, in this order: the whole request is read; if the server is "down" the
//! connection is closed without an answer; otherwise one queued one-shot [`Fault`] is applied;
//! otherwise the persistent fault, if set; otherwise the request is validated strictly against
//! `shared/reference/tiktok-events-api.md`. Every rule broken is recorded in
//! [`FakeTikTok::violations`] and answered like TikTok does (HTTP 200, a non-zero `code`, a
//! message naming the path), accepting nothing from that batch.
//!
//! [`RequestRecord::status`] is `0` for requests that got no answer at all
//! ([`Fault::Reset`], [`Fault::Hang`], down).
#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The only path the fake serves.
pub const TRACK_PATH: &str = "/open_api/v1.3/event/track/";

const MAX_EVENTS: usize = 1000;
const MAX_AGE_SECS: i64 = 28 * 24 * 3600;
const MAX_FUTURE_SECS: i64 = 600;
const MAX_LINE: u64 = 16 * 1024;
const MAX_HEADERS: usize = 100;
const MAX_BODY: usize = 32 * 1024 * 1024;
/// Violations kept per request (the rest are summarised in one line).
const MAX_ISSUES_KEPT: usize = 20;

const TOP_KEYS: &[&str] = &["event_source", "event_source_id", "test_event_code", "data"];
const EVENT_KEYS: &[&str] = &["event", "event_time", "event_id", "user", "properties"];
const USER_KEYS: &[&str] = &["email", "phone", "external_id"];
const PROPERTY_KEYS: &[&str] =
    &["contents", "content_type", "currency", "value", "order_id", "shop_id", "num_items", "description"];
const CONTENT_KEYS: &[&str] = &["content_id", "content_name", "content_category", "brand", "price", "quantity"];

/// Standard event names (web, offline and CRM share one list).
pub const STANDARD_EVENTS: &[&str] = &[
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

/// Legacy names TikTok still accepts.
pub const LEGACY_EVENTS: &[&str] = &["CompletePayment", "SubmitForm", "ClickButton", "PlaceAnOrder"];

/// TikTok's list of 62 supported currencies.
pub const CURRENCIES: &[&str] = &[
    "AED", "ARS", "AUD", "BDT", "BHD", "BIF", "BOB", "BRL", "CAD", "CHF", "CLP", "CNY", "COP", "CRC", "CZK", "DKK",
    "DZD", "EGP", "EUR", "GBP", "GTQ", "HKD", "HNL", "HUF", "IDR", "ILS", "INR", "ISK", "JPY", "KES", "KHR", "KRW",
    "KWD", "KZT", "MAD", "MOP", "MXN", "MYR", "NGN", "NIO", "NOK", "NZD", "OMR", "PEN", "PHP", "PKR", "PLN", "PYG",
    "QAR", "RON", "RUB", "SAR", "SEK", "SGD", "THB", "TRY", "TWD", "UAH", "USD", "VES", "VND", "ZAR",
];

/// A way to misbehave for one request (queued with [`FakeTikTok::push_fault`]) or for every
/// request (with [`FakeTikTok::set_persistent_fault`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 200 with the envelope `{"code":N,"message":..,"request_id":..,"data":{}}`.
    Code(i64, String),
    /// That HTTP status with the given body (`Content-Type: application/json`).
    Http(u16, String),
    /// That HTTP status with `Retry-After: N` (seconds) and an envelope body with code 40100.
    HttpRetryAfter(u16, u64),
    /// HTTP 502 with an HTML body, as a gateway would answer.
    Html502,
    /// Read the request, then close the connection without writing anything.
    Reset,
    /// Read the request, write nothing for that long, then close the connection.
    Hang(Duration),
    /// Redirect mode: that 3xx status with `Location: <url>` and a `{"code":0}` envelope body
    /// (so a client that reads a redirect's body as an answer believes the batch was delivered).
    Redirect(u16, String),
}

/// One request the fake answered (or deliberately did not answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// HTTP status written; 0 when nothing was written (reset, hang, down).
    pub status: u16,
    /// The envelope's `code`, when the answer had one.
    pub code: Option<i64>,
    /// Length of the request's `data` array (0 when the body was not a JSON object with an array).
    pub events: usize,
    /// The top-level `test_event_code`, when it was a string.
    pub test_event_code: Option<String>,
    /// The string `event_id`s of the request's events, in order.
    pub event_ids: Vec<String>,
}

struct State {
    token: String,
    faults: VecDeque<Fault>,
    down: bool,
    persistent: Option<Fault>,
    rejected_ids: HashSet<String>,
    /// Request-level mode: every valid request refused with this code and message.
    request_refusal: Option<(i64, String)>,
    /// Unknown-code mode: a valid batch holding one of these ids answered with the code.
    unknown_code: Option<(i64, HashSet<String>)>,
    response_delay: Duration,
    /// Accepted events as compact JSON text (a quarter of the memory of `Value` trees, which
    /// matters when a bench pushes 250,000 events through).
    accepted: Vec<String>,
    accepted_ids: Vec<String>,
    unique: BTreeSet<String>,
    requests: Vec<RequestRecord>,
    violations: Vec<String>,
    /// Seconds the fake's clock (its `Date` header and its event_time checks) is off the real one.
    clock_offset: i64,
}

struct Shared {
    event_source_id: String,
    port: u16,
    state: Mutex<State>,
    /// Notified whenever `state` records something (for `wait_for_unique`).
    changed: Condvar,
    stopped: Mutex<bool>,
    stop_cv: Condvar,
    conns: Mutex<HashMap<u64, TcpStream>>,
    next_conn: AtomicU64,
    next_request: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn is_stopped(&self) -> bool {
        *lock(&self.stopped)
    }

    /// Sleeps for `d`; returns false early if the server is being dropped.
    fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now().checked_add(d);
        let mut stopped = lock(&self.stopped);
        loop {
            if *stopped {
                return false;
            }
            let now = Instant::now();
            let wait = match deadline {
                Some(dl) if now >= dl => return true,
                Some(dl) => dl - now,
                None => Duration::from_secs(3600),
            };
            stopped = match self.stop_cv.wait_timeout(stopped, wait) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }

    /// Unix seconds on the fake's clock.
    fn now(&self) -> i64 {
        unix_now() + lock(&self.state).clock_offset
    }

    fn request_id(&self, n: u64) -> String {
        format!("fake{:05}{:010}", self.port, n)
    }

    fn record(&self, status: u16, code: Option<i64>, summary: &Summary) {
        lock(&self.state).requests.push(summary.record(status, code));
        self.changed.notify_all();
    }
}

/// A strict fake TikTok Events API server on 127.0.0.1. Dropping it stops the accept loop and
/// closes the open connections (best effort, never blocks for long).
pub struct FakeTikTok {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept_thread: Option<JoinHandle<()>>,
}

impl FakeTikTok {
    /// Binds 127.0.0.1:0 and serves until dropped. `token` is the accepted `Access-Token`,
    /// `event_source_id` the Offline Event Set ID requests must carry.
    pub fn start(token: &str, event_source_id: &str) -> FakeTikTok {
        Self::start_on(token, event_source_id, 0)
    }

    /// As [`FakeTikTok::start`], on a given port (0: any). Used to bring a server "back" on the
    /// port an agent is already configured for, after an outage.
    pub fn start_on(token: &str, event_source_id: &str, port: u16) -> FakeTikTok {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("fake TikTok: bind 127.0.0.1");
        let addr = listener.local_addr().expect("fake TikTok: local address of the listener");
        let shared = Arc::new(Shared {
            event_source_id: event_source_id.to_string(),
            port: addr.port(),
            state: Mutex::new(State {
                token: token.to_string(),
                faults: VecDeque::new(),
                down: false,
                persistent: None,
                rejected_ids: HashSet::new(),
                request_refusal: None,
                unknown_code: None,
                response_delay: Duration::ZERO,
                accepted: Vec::new(),
                accepted_ids: Vec::new(),
                unique: BTreeSet::new(),
                requests: Vec::new(),
                violations: Vec::new(),
                clock_offset: 0,
            }),
            changed: Condvar::new(),
            stopped: Mutex::new(false),
            stop_cv: Condvar::new(),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
            next_request: AtomicU64::new(0),
        });
        let for_thread = Arc::clone(&shared);
        let accept_thread = thread::Builder::new()
            .name("fake-tiktok-accept".to_string())
            .spawn(move || accept_loop(listener, for_thread))
            .expect("fake TikTok: spawn the accept thread");
        FakeTikTok { shared, addr, accept_thread: Some(accept_thread) }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.addr.port())
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Changes the token accepted from now on.
    pub fn set_token(&self, token: &str) {
        lock(&self.shared.state).token = token.to_string();
    }

    /// Queues a one-shot fault; queued faults are consumed FIFO, one per request.
    pub fn push_fault(&self, f: Fault) {
        lock(&self.shared.state).faults.push_back(f);
    }

    /// While down, every request is read and its connection closed without an answer.
    pub fn set_down(&self, down: bool) {
        lock(&self.shared.state).down = down;
    }

    /// A fault applied to every request while set (after any queued one-shot fault).
    pub fn set_persistent_fault(&self, f: Option<Fault>) {
        lock(&self.shared.state).persistent = f;
    }

    /// Replaces the set of refused event_ids (an empty slice clears it). A valid batch holding
    /// one of them is refused whole with code 40002 and the message
    /// `data.N.properties.contents.0.content_id: Not a valid string`, N being the index of the
    /// first such event. This is not a violation.
    pub fn reject_event_ids(&self, ids: &[&str]) {
        lock(&self.shared.state).rejected_ids = ids.iter().map(|s| s.to_string()).collect();
    }

    /// Request-level refusal mode: every valid request is refused whole with `code` and a
    /// message that names no event, as TikTok answers a wrong event set id
    /// (`40002`, `Invalid value for event_source_id: not a valid string.`). `None` ends it. Not a
    /// violation.
    pub fn refuse_requests(&self, refusal: Option<(i64, &str)>) {
        lock(&self.shared.state).request_refusal = refusal.map(|(code, message)| (code, message.to_string()));
    }

    /// Unknown-code mode: a valid batch holding one of `ids` is answered with `code` (one the
    /// reference does not list) and the message `Unexpected failure, please retry`, accepting
    /// nothing from it. An empty slice ends it. Not a violation.
    pub fn unknown_code_for(&self, code: i64, ids: &[&str]) {
        lock(&self.shared.state).unknown_code =
            (!ids.is_empty()).then(|| (code, ids.iter().map(|s| s.to_string()).collect()));
    }

    /// Delays every normally handled response (the batch is accepted first, then the answer
    /// waits `d`).
    pub fn set_response_delay(&self, d: Duration) {
        lock(&self.shared.state).response_delay = d;
    }

    /// Runs the fake's clock `secs` off the real one: the `Date` header of every answer and the
    /// event_time checks use it.
    pub fn set_clock_offset(&self, secs: i64) {
        lock(&self.shared.state).clock_offset = secs;
    }

    /// Every accepted event object, in order, duplicates included.
    pub fn accepted(&self) -> Vec<Value> {
        let st = lock(&self.shared.state);
        st.accepted.iter().map(|text| serde_json::from_str(text).unwrap_or(Value::Null)).collect()
    }

    /// The event_id of every accepted event, in order, duplicates included.
    pub fn accepted_ids(&self) -> Vec<String> {
        lock(&self.shared.state).accepted_ids.clone()
    }

    /// The distinct accepted event_ids.
    pub fn unique_ids(&self) -> BTreeSet<String> {
        lock(&self.shared.state).unique.clone()
    }

    /// Every request answered or faulted, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.state).requests.clone()
    }

    /// Every rule violation seen, one human-readable line each.
    pub fn violations(&self) -> Vec<String> {
        lock(&self.shared.state).violations.clone()
    }

    /// Waits until at least `n` distinct event_ids were accepted; false on timeout.
    pub fn wait_for_unique(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        let mut st = lock(&self.shared.state);
        loop {
            if st.unique.len() >= n {
                return true;
            }
            let now = Instant::now();
            let wait = match deadline {
                Some(dl) if now >= dl => return false,
                Some(dl) => dl - now,
                None => Duration::from_secs(3600),
            };
            // Short waits, so that a missed notification can never stall the caller.
            let wait = wait.min(Duration::from_millis(50));
            st = match self.shared.changed.wait_timeout(st, wait) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

impl Drop for FakeTikTok {
    fn drop(&mut self) {
        *lock(&self.shared.stopped) = true;
        self.shared.stop_cv.notify_all();
        self.shared.changed.notify_all();
        // Wake the accept loop with a connection of our own.
        let woke = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok();
        for (_, conn) in lock(&self.shared.conns).drain() {
            let _ = conn.shutdown(Shutdown::Both);
        }
        if let Some(handle) = self.accept_thread.take() {
            if woke {
                let _ = handle.join();
            }
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = listener.accept();
        if shared.is_stopped() {
            return;
        }
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(_) => {
                thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        if let Ok(clone) = stream.try_clone() {
            lock(&shared.conns).insert(id, clone);
        }
        // Drop may have swept the connections between the check above and the insert.
        if shared.is_stopped() {
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        let for_conn = Arc::clone(&shared);
        let spawned = thread::Builder::new().name("fake-tiktok-conn".to_string()).spawn(move || {
            let _forget = ConnGuard { shared: &for_conn, id };
            serve_connection(&for_conn, stream);
        });
        if spawned.is_err() {
            if let Some(conn) = lock(&shared.conns).remove(&id) {
                let _ = conn.shutdown(Shutdown::Both);
            }
        }
    }
}

/// Removes a connection from the tracked set when its thread ends (even by panic).
struct ConnGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for ConnGuard<'_> {
    fn drop(&mut self) {
        lock(&self.shared.conns).remove(&self.id);
    }
}

struct Request {
    method: String,
    target: String,
    /// Header names lower-cased, values trimmed.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The client asked to close the connection after this request.
    close: bool,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

enum ReadOutcome {
    Request(Request),
    /// The client closed (or broke) the connection; nothing to answer.
    Closed,
    /// Unusable HTTP: answer this status, record a violation, close.
    Bad(u16, String),
}

enum Line {
    Data(String),
    Eof,
    TooLong,
}

fn read_line(reader: &mut BufReader<TcpStream>, buf: &mut Vec<u8>) -> io::Result<Line> {
    buf.clear();
    let n = reader.by_ref().take(MAX_LINE).read_until(b'\n', buf)?;
    if buf.last() != Some(&b'\n') {
        return Ok(if n as u64 >= MAX_LINE { Line::TooLong } else { Line::Eof });
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Line::Data(String::from_utf8_lossy(buf).into_owned()))
}

fn read_request(reader: &mut BufReader<TcpStream>, writer: &mut TcpStream) -> ReadOutcome {
    let mut buf = Vec::with_capacity(256);
    // Request line (tolerating a few stray empty lines between requests).
    let mut request_line = None;
    for _ in 0..4 {
        match read_line(reader, &mut buf) {
            Ok(Line::Data(l)) if l.is_empty() => continue,
            Ok(Line::Data(l)) => {
                request_line = Some(l);
                break;
            }
            Ok(Line::TooLong) => return ReadOutcome::Bad(414, "request line too long".into()),
            Ok(Line::Eof) | Err(_) => return ReadOutcome::Closed,
        }
    }
    let Some(request_line) = request_line else {
        return ReadOutcome::Bad(400, "no request line".into());
    };
    let parts: Vec<&str> = request_line.split(' ').collect();
    if parts.len() != 3 || parts[0].is_empty() || parts[1].is_empty() {
        return ReadOutcome::Bad(400, format!("malformed request line {:?}", cut(&request_line)));
    }
    let (method, target, version) = (parts[0], parts[1], parts[2]);
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return ReadOutcome::Bad(400, format!("unsupported HTTP version {:?}", cut(version)));
    }

    let mut headers: Vec<(String, String)> = Vec::new();
    loop {
        let line = match read_line(reader, &mut buf) {
            Ok(Line::Data(l)) => l,
            Ok(Line::TooLong) => return ReadOutcome::Bad(431, "header line too long".into()),
            Ok(Line::Eof) | Err(_) => return ReadOutcome::Closed,
        };
        if line.is_empty() {
            break;
        }
        if headers.len() >= MAX_HEADERS {
            return ReadOutcome::Bad(431, "too many header lines".into());
        }
        let Some((name, value)) = line.split_once(':') else {
            return ReadOutcome::Bad(400, format!("malformed header line {:?}", cut(&line)));
        };
        if name.is_empty() || name.bytes().any(|b| b <= b' ' || b >= 0x7f) {
            return ReadOutcome::Bad(400, format!("malformed header name {:?}", cut(name)));
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }

    if let Some((_, te)) = headers.iter().find(|(k, _)| k == "transfer-encoding") {
        return ReadOutcome::Bad(
            400,
            format!("Transfer-Encoding {:?} is not supported: send a Content-Length body", cut(te)),
        );
    }
    let mut length: Option<usize> = None;
    for (_, v) in headers.iter().filter(|(k, _)| k == "content-length") {
        let Ok(n) = v.parse::<usize>() else {
            return ReadOutcome::Bad(400, format!("invalid Content-Length {:?}", cut(v)));
        };
        if length.is_some_and(|old| old != n) {
            return ReadOutcome::Bad(400, "conflicting Content-Length headers".into());
        }
        length = Some(n);
    }
    let length = length.unwrap_or(0);
    if length > MAX_BODY {
        return ReadOutcome::Bad(413, format!("body of {length} bytes is too large"));
    }

    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.to_ascii_lowercase());
    if header("expect").is_some_and(|e| e == "100-continue")
        && writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err()
    {
        return ReadOutcome::Closed;
    }
    let connection = header("connection").unwrap_or_default();
    let close = if version == "HTTP/1.0" { !connection.contains("keep-alive") } else { connection.contains("close") };

    let mut body = Vec::with_capacity(length);
    match reader.by_ref().take(length as u64).read_to_end(&mut body) {
        Ok(n) if n == length => {}
        // The client went away in the middle of the body.
        _ => return ReadOutcome::Closed,
    }
    ReadOutcome::Request(Request { method: method.to_string(), target: target.to_string(), headers, body, close })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        414 => "URI Too Long",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn write_response(
    w: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &[u8],
    extra_headers: &[(&str, String)],
    close: bool,
) -> io::Result<()> {
    let mut out = Vec::with_capacity(body.len() + 256);
    write!(
        out,
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {}\r\nServer: fake-tiktok\r\n",
        status,
        reason(status),
        content_type,
        body.len(),
        if close { "close" } else { "keep-alive" }
    )?;
    for (name, value) in extra_headers {
        write!(out, "{name}: {value}\r\n")?;
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    w.write_all(&out)?;
    w.flush()
}

fn envelope(code: i64, message: &str, request_id: &str) -> Vec<u8> {
    json!({"code": code, "message": message, "request_id": request_id, "data": {}}).to_string().into_bytes()
}

fn serve_connection(shared: &Shared, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    loop {
        match read_request(&mut reader, &mut writer) {
            ReadOutcome::Closed => return,
            ReadOutcome::Bad(status, message) => {
                let n = shared.next_request.fetch_add(1, Ordering::Relaxed) + 1;
                {
                    let mut st = lock(&shared.state);
                    st.violations.push(format!("request #{n}: bad HTTP ({status}): {message}"));
                    st.requests.push(Summary::default().record(status, None));
                }
                shared.changed.notify_all();
                let _ = write_response(&mut writer, status, "text/plain", message.as_bytes(), &[], true);
                let _ = writer.shutdown(Shutdown::Both);
                return;
            }
            ReadOutcome::Request(req) => {
                if !handle_request(shared, &mut writer, req) {
                    let _ = writer.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
    }
}

/// What a request carried, for [`RequestRecord`].
#[derive(Default)]
struct Summary {
    events: usize,
    event_ids: Vec<String>,
    test_event_code: Option<String>,
}

impl Summary {
    fn of(body: Option<&Value>) -> Summary {
        let mut s = Summary::default();
        let Some(obj) = body.and_then(Value::as_object) else {
            return s;
        };
        s.test_event_code = obj.get("test_event_code").and_then(Value::as_str).map(str::to_string);
        if let Some(data) = obj.get("data").and_then(Value::as_array) {
            s.events = data.len();
            s.event_ids =
                data.iter().filter_map(|e| e.get("event_id").and_then(Value::as_str)).map(str::to_string).collect();
        }
        s
    }

    fn record(&self, status: u16, code: Option<i64>) -> RequestRecord {
        RequestRecord {
            status,
            code,
            events: self.events,
            test_event_code: self.test_event_code.clone(),
            event_ids: self.event_ids.clone(),
        }
    }
}

/// Answers one request; returns whether the connection stays open.
fn handle_request(shared: &Shared, writer: &mut TcpStream, req: Request) -> bool {
    let n = shared.next_request.fetch_add(1, Ordering::Relaxed) + 1;
    let parsed: Result<Value, serde_json::Error> = serde_json::from_slice(&req.body);
    let summary = Summary::of(parsed.as_ref().ok());
    if req.method == "HEAD" && req.target == TRACK_PATH {
        // Asking the time: like the real endpoint, any method but POST is refused, with a `Date`.
        // Not a violation, and no fault is spent on it; a server that is down does not answer.
        let down = lock(&shared.state).down;
        shared.record(if down { 0 } else { 405 }, None, &summary);
        return !down && write_dated(shared, writer, 405, "text/plain", b"", &[], req.close).is_ok() && !req.close;
    }
    let (fault, token) = {
        let mut st = lock(&shared.state);
        let fault = if st.down { Some(Fault::Reset) } else { st.faults.pop_front().or_else(|| st.persistent.clone()) };
        (fault, st.token.clone())
    };
    match fault {
        Some(f) => apply_fault(shared, writer, f, &summary, n, req.close),
        None => handle_normally(shared, writer, req, parsed, summary, &token, n),
    }
}

fn apply_fault(shared: &Shared, writer: &mut TcpStream, fault: Fault, summary: &Summary, n: u64, close: bool) -> bool {
    let request_id = shared.request_id(n);
    let written = match fault {
        Fault::Code(code, message) => {
            shared.record(200, Some(code), summary);
            let body = envelope(code, &message, &request_id);
            write_dated(shared, writer, 200, "application/json", &body, &[], close)
        }
        Fault::Http(status, body) => {
            let code = serde_json::from_str::<Value>(&body).ok().and_then(|v| v.get("code").and_then(Value::as_i64));
            shared.record(status, code, summary);
            write_dated(shared, writer, status, "application/json", body.as_bytes(), &[], close)
        }
        Fault::HttpRetryAfter(status, secs) => {
            shared.record(status, Some(40100), summary);
            let body = envelope(40100, "Too many requests. Please retry in some time.", &request_id);
            let extra = [("Retry-After", secs.to_string())];
            write_dated(shared, writer, status, "application/json", &body, &extra, close)
        }
        Fault::Html502 => {
            shared.record(502, None, summary);
            let body = b"<html><body>502 Bad Gateway</body></html>";
            write_dated(shared, writer, 502, "text/html", body, &[], close)
        }
        Fault::Redirect(status, location) => {
            shared.record(status, None, summary);
            let body = envelope(0, "OK", &request_id);
            write_dated(shared, writer, status, "application/json", &body, &[("Location", location)], close)
        }
        Fault::Reset => {
            shared.record(0, None, summary);
            return false;
        }
        Fault::Hang(d) => {
            shared.record(0, None, summary);
            shared.sleep(d);
            return false;
        }
    };
    written.is_ok() && !close
}

enum Outcome {
    NotFound,
    Error(i64, String),
    Accept,
}

fn handle_normally(
    shared: &Shared,
    writer: &mut TcpStream,
    req: Request,
    parsed: Result<Value, serde_json::Error>,
    summary: Summary,
    token: &str,
    n: u64,
) -> bool {
    let mut issues = Issues::default();
    let outcome = if req.method != "POST" || req.target != TRACK_PATH {
        issues.add(
            0,
            "request",
            format!(
                "{} {} is not the endpoint (expected POST {TRACK_PATH}); answered 404",
                cut(&req.method),
                cut(&req.target)
            ),
        );
        Outcome::NotFound
    } else {
        match req.header("access-token") {
            None => {
                issues.add(40001, "Access-Token", "header is missing");
                Outcome::Error(40001, "Access-Token: header is missing".to_string())
            }
            Some(t) if t != token => Outcome::Error(40105, "Access token is invalid".to_string()),
            Some(_) => {
                let content_type = req.header("content-type").unwrap_or("");
                if !content_type.to_ascii_lowercase().starts_with("application/json") {
                    issues.add(
                        40002,
                        "Content-Type",
                        format!("must be application/json (got {:?})", cut(content_type)),
                    );
                }
                match &parsed {
                    Ok(body) => validate_body(body, &shared.event_source_id, shared.now(), &mut issues),
                    Err(e) => issues.add(40002, "body", format!("not valid JSON ({e})")),
                }
                match issues.list.first() {
                    Some(first) => Outcome::Error(first.code, first.message()),
                    None => Outcome::Accept,
                }
            }
        }
    };

    let events: Vec<String> = match (&outcome, &parsed) {
        (Outcome::Accept, Ok(body)) => match body.get("data") {
            Some(Value::Array(events)) => events.iter().map(Value::to_string).collect(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    drop(parsed);

    let where_ = format!("request #{n} ({} {})", cut(&req.method), cut(&req.target));
    let (outcome, delay) = {
        let mut guard = lock(&shared.state);
        let st = &mut *guard;
        let outcome = match outcome {
            Outcome::Accept => {
                let refused = summary.event_ids.iter().position(|id| st.rejected_ids.contains(id));
                let unknown = st
                    .unknown_code
                    .as_ref()
                    .filter(|(_, ids)| summary.event_ids.iter().any(|id| ids.contains(id)))
                    .map(|(code, _)| *code);
                match refused {
                    _ if st.request_refusal.is_some() => {
                        let (code, message) = st.request_refusal.clone().unwrap_or_default();
                        Outcome::Error(code, message)
                    }
                    _ if unknown.is_some() => {
                        Outcome::Error(unknown.unwrap_or_default(), "Unexpected failure, please retry".to_string())
                    }
                    Some(i) => {
                        Outcome::Error(40002, format!("data.{i}.properties.contents.0.content_id: Not a valid string"))
                    }
                    None => {
                        for id in &summary.event_ids {
                            if !st.unique.contains(id) {
                                st.unique.insert(id.clone());
                            }
                        }
                        st.accepted_ids.extend(summary.event_ids.iter().cloned());
                        st.accepted.extend(events);
                        Outcome::Accept
                    }
                }
            }
            other => other,
        };
        for issue in &issues.list {
            st.violations.push(format!("{where_}: {}", issue.line()));
        }
        if issues.total > issues.list.len() {
            st.violations.push(format!(
                "{where_}: ... and {} more violations in this request",
                issues.total - issues.list.len()
            ));
        }
        let (status, code) = match &outcome {
            Outcome::NotFound => (404, None),
            Outcome::Error(code, _) => (200, Some(*code)),
            Outcome::Accept => (200, Some(0)),
        };
        st.requests.push(summary.record(status, code));
        (outcome, st.response_delay)
    };
    shared.changed.notify_all();

    if !delay.is_zero() && !shared.sleep(delay) {
        return false;
    }
    let request_id = shared.request_id(n);
    let written = match outcome {
        Outcome::NotFound => write_dated(shared, writer, 404, "text/plain", b"404 page not found", &[], req.close),
        Outcome::Error(code, message) => {
            let body = envelope(code, &message, &request_id);
            write_dated(shared, writer, 200, "application/json", &body, &[], req.close)
        }
        Outcome::Accept => {
            let body = envelope(0, "OK", &request_id);
            write_dated(shared, writer, 200, "application/json", &body, &[], req.close)
        }
    };
    written.is_ok() && !req.close
}

/// [`write_response`] with a `Date` header on the fake's clock.
fn write_dated(
    shared: &Shared,
    w: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &[u8],
    extra_headers: &[(&str, String)],
    close: bool,
) -> io::Result<()> {
    let mut headers = vec![("Date", http_date(shared.now()))];
    headers.extend(extra_headers.iter().cloned());
    write_response(w, status, content_type, body, &headers, close)
}

/// Unix seconds as an HTTP IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), with `std` only.
pub fn http_date(unix: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Shortens text for messages, on a char boundary.
fn cut(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(MAX).collect();
        out.push_str("...");
        out
    }
}

struct Issue {
    code: i64,
    path: String,
    msg: String,
    got: Option<String>,
}

impl Issue {
    /// The response message, TikTok style: `path: message`.
    fn message(&self) -> String {
        format!("{}: {}", self.path, self.msg)
    }

    fn line(&self) -> String {
        match &self.got {
            Some(got) => format!("{}: {} (got {got})", self.path, self.msg),
            None => self.message(),
        }
    }
}

#[derive(Default)]
struct Issues {
    list: Vec<Issue>,
    total: usize,
}

impl Issues {
    fn push(&mut self, code: i64, path: String, msg: String, got: Option<String>) {
        self.total += 1;
        if self.list.len() < MAX_ISSUES_KEPT {
            self.list.push(Issue { code, path, msg, got });
        }
    }

    fn add(&mut self, code: i64, path: impl Into<String>, msg: impl Into<String>) {
        self.push(code, path.into(), msg.into(), None);
    }

    fn add_got(&mut self, code: i64, path: impl Into<String>, msg: impl Into<String>, got: &Value) {
        self.push(code, path.into(), msg.into(), Some(cut(&got.to_string())));
    }
}

fn check_keys(obj: &serde_json::Map<String, Value>, allowed: &[&str], path: &str, issues: &mut Issues) {
    for key in obj.keys() {
        if !allowed.contains(&key.as_str()) {
            let full = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
            issues.add(40002, full, format!("unknown field (allowed: {})", allowed.join(", ")));
        }
    }
}

fn check_string(obj: &serde_json::Map<String, Value>, key: &str, path: &str, issues: &mut Issues) {
    if let Some(v) = obj.get(key) {
        if !v.is_string() {
            issues.add_got(40002, format!("{path}.{key}"), "Not a valid string", v);
        }
    }
}

fn check_integer(obj: &serde_json::Map<String, Value>, key: &str, path: &str, issues: &mut Issues) {
    if let Some(v) = obj.get(key) {
        if !(v.is_i64() || v.is_u64()) {
            issues.add_got(40002, format!("{path}.{key}"), "must be an integer", v);
        }
    }
}

fn check_number(obj: &serde_json::Map<String, Value>, key: &str, path: &str, issues: &mut Issues) {
    if let Some(v) = obj.get(key) {
        if !v.is_number() {
            issues.add_got(40002, format!("{path}.{key}"), "must be a JSON number", v);
        }
    }
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn validate_body(body: &Value, event_source_id: &str, now: i64, issues: &mut Issues) {
    let Some(obj) = body.as_object() else {
        issues.add_got(40002, "body", "must be a JSON object", body);
        return;
    };
    check_keys(obj, TOP_KEYS, "", issues);

    match obj.get("event_source") {
        None => issues.add(40002, "event_source", "required"),
        Some(Value::String(s)) if s == "offline" => {}
        Some(v) => issues.add_got(40002, "event_source", "must be \"offline\"", v),
    }

    match obj.get("event_source_id") {
        None => issues.add(40002, "event_source_id", "required"),
        Some(Value::String(s)) => {
            let v = Value::String(s.clone());
            if s.len() != 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
                issues.add_got(40002, "event_source_id", "must be 19 digits", &v);
            }
            if s != event_source_id {
                issues.add_got(
                    40002,
                    "event_source_id",
                    format!("not the configured event set {event_source_id:?}"),
                    &v,
                );
            }
        }
        Some(v) => issues.add_got(40002, "event_source_id", "Not a valid string", v),
    }

    match obj.get("test_event_code") {
        None => {}
        Some(Value::String(s)) if !s.is_empty() => {}
        Some(v) => issues.add_got(40002, "test_event_code", "must be a non-empty string when present", v),
    }

    match obj.get("data") {
        None => issues.add(40002, "data", "required"),
        Some(Value::Array(events)) => {
            if events.is_empty() {
                issues.add(40002, "data", "must hold 1 to 1000 events (got 0)");
            } else if events.len() > MAX_EVENTS {
                issues.add(
                    40000,
                    "data",
                    format!("too many events: at most {MAX_EVENTS} per request (got {})", events.len()),
                );
            } else {
                for (i, event) in events.iter().enumerate() {
                    validate_event(i, event, now, issues);
                }
            }
        }
        Some(v) => issues.add_got(40002, "data", "must be an array", v),
    }
}

fn validate_event(i: usize, event: &Value, now: i64, issues: &mut Issues) {
    let Some(obj) = event.as_object() else {
        issues.add_got(40002, format!("data.{i}"), "must be an object", event);
        return;
    };
    let path = format!("data.{i}");
    check_keys(obj, EVENT_KEYS, &path, issues);

    match obj.get("event") {
        None => issues.add(40002, format!("{path}.event"), "required"),
        Some(Value::String(name))
            if STANDARD_EVENTS.contains(&name.as_str()) || LEGACY_EVENTS.contains(&name.as_str()) => {}
        Some(v @ Value::String(_)) => issues.add_got(
            40002,
            format!("{path}.event"),
            "not a standard event name (offline accepts no custom events)",
            v,
        ),
        Some(v) => issues.add_got(40002, format!("{path}.event"), "Not a valid string", v),
    }

    match obj.get("event_time") {
        None => issues.add(40002, format!("{path}.event_time"), "required"),
        Some(v) => {
            if let Some(t) = v.as_i64() {
                if t <= 1_000_000_000 || t >= 100_000_000_000 {
                    issues.add_got(40002, format!("{path}.event_time"), "must be unix seconds", v);
                } else if t < now - MAX_AGE_SECS {
                    issues.add_got(
                        40002,
                        format!("{path}.event_time"),
                        "older than 28 days (outside the attribution window)",
                        v,
                    );
                } else if t > now + MAX_FUTURE_SECS {
                    issues.add_got(40002, format!("{path}.event_time"), "more than 10 minutes in the future", v);
                }
            } else if v.is_u64() {
                issues.add_got(40002, format!("{path}.event_time"), "must be unix seconds", v);
            } else {
                issues.add_got(40002, format!("{path}.event_time"), "must be an integer (unix seconds)", v);
            }
        }
    }

    match obj.get("event_id") {
        None => issues.add(40002, format!("{path}.event_id"), "required"),
        Some(Value::String(s)) if !s.is_empty() => {}
        Some(v @ Value::String(_)) => issues.add_got(40002, format!("{path}.event_id"), "must not be empty", v),
        Some(v) => issues.add_got(40002, format!("{path}.event_id"), "Not a valid string", v),
    }

    match obj.get("user") {
        None => {}
        Some(Value::Object(user)) => validate_user(&path, user, issues),
        Some(v) => issues.add_got(40002, format!("{path}.user"), "must be an object", v),
    }

    match obj.get("properties") {
        None => {}
        Some(Value::Object(props)) => validate_properties(&path, props, issues),
        Some(v) => issues.add_got(40002, format!("{path}.properties"), "must be an object", v),
    }
}

fn validate_user(event_path: &str, user: &serde_json::Map<String, Value>, issues: &mut Issues) {
    let path = format!("{event_path}.user");
    check_keys(user, USER_KEYS, &path, issues);
    const NOT_HASHED: &str = "PII not hashed: must be a lowercase SHA-256 hex digest";
    for key in USER_KEYS {
        match user.get(*key) {
            None => {}
            Some(Value::String(s)) if is_sha256_hex(s) => {}
            Some(v @ Value::String(_)) => {
                issues.add_got(40062, format!("{path}.{key}"), NOT_HASHED, v);
            }
            Some(Value::Array(values)) => {
                for (j, v) in values.iter().enumerate() {
                    match v {
                        Value::String(s) if is_sha256_hex(s) => {}
                        Value::String(_) => issues.add_got(40062, format!("{path}.{key}.{j}"), NOT_HASHED, v),
                        _ => issues.add_got(40002, format!("{path}.{key}.{j}"), "Not a valid string", v),
                    }
                }
            }
            Some(v) => issues.add_got(40002, format!("{path}.{key}"), "must be a string or an array of strings", v),
        }
    }
}

fn validate_properties(event_path: &str, props: &serde_json::Map<String, Value>, issues: &mut Issues) {
    let path = format!("{event_path}.properties");
    check_keys(props, PROPERTY_KEYS, &path, issues);

    match props.get("currency") {
        None => {}
        Some(Value::String(c)) if CURRENCIES.contains(&c.as_str()) => {}
        Some(v @ Value::String(_)) => {
            issues.add_got(40002, format!("{path}.currency"), "not one of TikTok's 62 supported currencies", v)
        }
        Some(v) => issues.add_got(40002, format!("{path}.currency"), "Not a valid string", v),
    }
    check_number(props, "value", &path, issues);
    match props.get("content_type") {
        None => {}
        Some(Value::String(t)) if t == "product" || t == "product_group" => {}
        Some(v) => issues.add_got(40002, format!("{path}.content_type"), "must be \"product\" or \"product_group\"", v),
    }
    check_string(props, "order_id", &path, issues);
    check_string(props, "shop_id", &path, issues);
    check_string(props, "description", &path, issues);
    check_integer(props, "num_items", &path, issues);

    match props.get("contents") {
        None => {}
        Some(Value::Array(contents)) => {
            for (k, item) in contents.iter().enumerate() {
                let item_path = format!("{path}.contents.{k}");
                let Some(item_obj) = item.as_object() else {
                    issues.add_got(40002, item_path, "must be an object", item);
                    continue;
                };
                check_keys(item_obj, CONTENT_KEYS, &item_path, issues);
                match item_obj.get("content_id") {
                    Some(Value::String(s)) if s.is_empty() => {
                        issues.add(40002, format!("{item_path}.content_id"), "Not a valid string (empty)")
                    }
                    _ => check_string(item_obj, "content_id", &item_path, issues),
                }
                check_string(item_obj, "content_name", &item_path, issues);
                check_string(item_obj, "content_category", &item_path, issues);
                check_string(item_obj, "brand", &item_path, issues);
                check_number(item_obj, "price", &item_path, issues);
                check_integer(item_obj, "quantity", &item_path, issues);
            }
        }
        Some(v) => issues.add_got(40002, format!("{path}.contents"), "must be an array", v),
    }
}

/// One request a [`Catcher`] got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaughtRequest {
    pub method: String,
    pub target: String,
    /// Header names lower-cased, values trimmed.
    pub headers: Vec<(String, String)>,
}

/// A loopback server that must never be reached: the target of a redirect. It answers every
/// request `{"code":0}` (as a server eager to make a client believe it delivered would) and
/// records it, so a test can assert that it got none.
pub struct Catcher {
    addr: SocketAddr,
    caught: Arc<Mutex<Vec<CaughtRequest>>>,
    stopped: Arc<Mutex<bool>>,
    accept_thread: Option<JoinHandle<()>>,
}

impl Catcher {
    pub fn start() -> Catcher {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("catcher: bind 127.0.0.1");
        let addr = listener.local_addr().expect("catcher: local address");
        let caught = Arc::new(Mutex::new(Vec::new()));
        let stopped = Arc::new(Mutex::new(false));
        let (for_thread, stop) = (Arc::clone(&caught), Arc::clone(&stopped));
        let accept_thread = thread::Builder::new()
            .name("catcher-accept".to_string())
            .spawn(move || {
                for stream in listener.incoming() {
                    if *lock(&stop) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let caught = Arc::clone(&for_thread);
                    let _ =
                        thread::Builder::new().name("catcher-conn".to_string()).spawn(move || catch(stream, &caught));
                }
            })
            .expect("catcher: spawn the accept thread");
        Catcher { addr, caught, stopped, accept_thread: Some(accept_thread) }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.addr.port())
    }

    /// Every request received, in order.
    pub fn caught(&self) -> Vec<CaughtRequest> {
        lock(&self.caught).clone()
    }
}

fn catch(stream: TcpStream, caught: &Mutex<Vec<CaughtRequest>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(mut writer) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    while let ReadOutcome::Request(req) = read_request(&mut reader, &mut writer) {
        lock(caught).push(CaughtRequest { method: req.method, target: req.target, headers: req.headers });
        let body = envelope(0, "OK", "caught");
        if write_response(&mut writer, 200, "application/json", &body, &[], req.close).is_err() || req.close {
            return;
        }
    }
}

impl Drop for Catcher {
    fn drop(&mut self) {
        *lock(&self.stopped) = true;
        if TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok() {
            if let Some(handle) = self.accept_thread.take() {
                let _ = handle.join();
            }
        }
    }
}
