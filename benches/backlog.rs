//! Backlog benchmark, end to end: N one-order rows in 10 files renamed into the watched folder of
//! the real release binary running as a service, delivered to a local HTTP receiver that answers
//! TikTok's success body. Beside it, in the same run, the durable-ingest floor: `sqlite3 .import`
//! of the same rows into a WAL database with `synchronous=FULL`, timed before the backlog and again
//! after it (the mean of the two: this machine's pace drifts by a third within minutes, and a
//! floor timed on one side only moved the ratio more than some changes did).
//!
//!     cargo bench --bench backlog                       # 1,000,000 rows (the figures in BENCHMARKS.md)
//!     OEA_BENCH_ROWS=20000 cargo bench --bench backlog  # short form (CI)
//!
//! Prints: wall to the first and to the last event, the agent's CPU time, peak RSS and bytes
//! written (`/proc/<pid>/io`) once it is idle after the last event (what the backlog left to do
//! after it counts; CPU and bytes at the last event too), the JSON bytes received, the floor and
//! the ratio to it; then the trickle that follows (a one-order file every 100 ms: rename to
//! delivery, p50 and p99, and the bytes written per sale); then the
//! start-up to READY with the whole backlog queued. No figure is asserted: every event must arrive,
//! that is all.
//!
//! `OEA_BENCH_AGENT=/path/to/binary` runs another build of the agent (an older one to compare
//! against, or one under a profiler wrapper) in place of this build's. `OEA_BENCH_KEEP=1` keeps
//! the run's folder (queue, agent log) and prints where it is. `OEA_BENCH_QUEUE_MB=16` runs the
//! agent with that `max_queue_mb` (the rows must fit in it: 20,000 do in 16).

mod common;
use common::TOKEN;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const FILES: usize = 10;

/// The native CSV header of every generated file.
const HEADER: &str = "order_id,event_time,email,phone,content_id,content_name,price,quantity";

fn main() {
    let rows: usize = std::env::var("OEA_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let staging = dir.path().join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    let files = generate(&staging, rows);
    let csv_bytes: u64 = files.iter().map(|f| std::fs::metadata(f).unwrap().len()).sum();
    println!("generated {rows} one-order rows in {FILES} files ({:.1} MB)", csv_bytes as f64 / 1e6);

    let floor_before = sqlite_floor(dir.path(), &files);

    let receiver = Receiver::start();
    let run = dir.path().join("run");
    std::fs::create_dir_all(run.join("inbox")).unwrap();
    // `OEA_BENCH_QUEUE_MB`: the agent's `max_queue_mb` (its default otherwise); the WAL's bound and
    // the sender's checkpoints follow it, so the trickle's bytes a sale do too.
    let cap = std::env::var("OEA_BENCH_QUEUE_MB").map(|mb| format!("max_queue_mb = {mb}\n")).unwrap_or_default();
    let config = format!("{cap}{}", common::config_text(&run, &receiver.base_url(), ""));
    std::fs::write(run.join("config.toml"), config).unwrap();
    let notify = Notify::bind(&run);
    let started = Instant::now();
    let mut agent = spawn(&run, &notify);
    let ready = notify.wait_ready(Duration::from_secs(60)).expect("READY") - started;
    println!("start-up to READY, empty queue: {:.3} s", ready.as_secs_f64());

    let t0 = Instant::now();
    for f in &files {
        std::fs::rename(f, run.join("inbox").join(f.file_name().unwrap())).unwrap();
    }
    let last = receiver.wait_for(rows as u64, Duration::from_secs(1800));
    let pid = agent.id();
    let (cpu_at_last, written_at_last) = (cpu_secs(pid), io_write_bytes(pid));
    let last = last.unwrap_or_else(|| panic!("only {} of {rows} events arrived", receiver.events()));
    // What the backlog costs includes the work it leaves for after its last event (the WAL's
    // checkpoint, say): CPU and bytes are read once the agent is idle, the trickle after that.
    let idle_after = settle(pid);
    let (cpu, rss, written) = (cpu_secs(pid), status_kb(pid, "VmHWM:"), io_write_bytes(pid));
    let json = receiver.bytes();
    let (p50, p99) = trickle(&run, &staging, &receiver, rows, TRICKLE_FILES);
    settle(pid);
    let trickle_bytes = io_write_bytes(pid).saturating_sub(written) / TRICKLE_FILES as u64;
    stop(&mut agent);
    let floor_after = floor_before.and_then(|_| sqlite_floor(dir.path(), &archived_exports(&run)));
    let floor = match (floor_before, floor_after) {
        (Some(before), Some(after)) => {
            let mean = (before + after) / 2.0;
            println!(
                "floor: sqlite3 .import into WAL, synchronous=FULL: {mean:.2} s (before the backlog {before:.2} s, after it {after:.2} s)"
            );
            Some(mean)
        }
        _ => {
            println!("floor: sqlite3 not installed (apt-get install sqlite3); no ratio");
            None
        }
    };
    let wall = (last - t0).as_secs_f64();
    let first = (receiver.first().expect("a first event") - t0).as_secs_f64();
    println!("backlog: {rows} events delivered; wall to last event {wall:.2} s, to first event {first:.3} s");
    println!(
        "agent: CPU {cpu:.2} s, peak RSS {:.1} MiB, bytes written {:.1} MB = {:.2}x the {:.1} MB of JSON sent \
         (idle {idle_after:.1} s after the last event; at the last event: CPU {cpu_at_last:.2} s, {:.2}x)",
        rss as f64 / 1024.0,
        written as f64 / 1e6,
        written as f64 / json.max(1) as f64,
        json as f64 / 1e6,
        written_at_last as f64 / json.max(1) as f64,
    );
    if let Some(floor) = floor {
        println!("ratio to the floor: {:.2}x (goal: at most 2.0x)", wall / floor);
    }
    println!(
        "trickle, then: a one-order file every 100 ms, rename to delivery p50 {:.1} ms, p99 {:.1} ms, {:.1} KB written per sale",
        p50 * 1e3,
        p99 * 1e3,
        trickle_bytes as f64 / 1e3
    );
    drop(receiver);

    startup_with_backlog(dir.path(), &run, rows);
    if std::env::var_os("OEA_BENCH_KEEP").is_some() {
        println!("kept: {}", dir.keep().display());
    }
}

/// Files in the trickle that follows the backlog.
const TRICKLE_FILES: usize = 40;

/// One-order files renamed into the running agent's folder one every 100 ms (or once the one
/// before arrived, if that took longer), each timed from its rename to its event's arrival at the
/// receiver: the median and the 99th percentile, in seconds.
fn trickle(run: &Path, staging: &Path, receiver: &Receiver, first_order: usize, n: usize) -> (f64, f64) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let mut latencies = Vec::new();
    for i in 0..n {
        let name = format!("trickle-{i:03}.csv");
        let o = first_order + i;
        std::fs::write(
            staging.join(&name),
            format!("{HEADER}\n{o:08},{},c{o}@example.com,,SKU-1,Item,1.00,1\n", now - 60),
        )
        .unwrap();
        let before = receiver.events();
        let tick = Instant::now();
        std::fs::rename(staging.join(&name), run.join("inbox").join(&name)).unwrap();
        let arrived = receiver.wait_for(before + 1, Duration::from_secs(60)).expect("a trickle event arrives");
        latencies.push((arrived - tick).as_secs_f64());
        std::thread::sleep(Duration::from_millis(100).saturating_sub(tick.elapsed()));
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

/// N one-order rows spread over [`FILES`] native CSV files: an e-mail on every order, an E.164
/// phone on every second one, as a till would export them.
fn generate(dir: &Path, rows: usize) -> Vec<PathBuf> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let per_file = rows.div_ceil(FILES);
    let mut files = Vec::new();
    for f in 0..FILES {
        let path = dir.join(format!("export-{f:02}.csv"));
        let mut out = BufWriter::new(std::fs::File::create(&path).unwrap());
        writeln!(out, "{HEADER}").unwrap();
        for o in (f * per_file)..((f + 1) * per_file).min(rows) {
            let t = now - 86_400 + (o as i64 % 80_000);
            let phone = if o % 2 == 0 { format!("+1415555{:04}", o % 10_000) } else { String::new() };
            writeln!(
                out,
                "{o:08},{t},Customer{o}@Example.com,{phone},SKU-{:05},Item {},{}.{:02},1",
                o % 977,
                o % 977,
                1 + o % 40,
                o % 100
            )
            .unwrap();
        }
        out.flush().unwrap();
        files.push(path);
    }
    files
}

/// Wall seconds for `sqlite3 .import` of the files into a fresh WAL database with
/// `synchronous=FULL`, one transaction per file as the shell does; None without a sqlite3 binary.
fn sqlite_floor(dir: &Path, files: &[PathBuf]) -> Option<f64> {
    let db = dir.join("floor.sqlite");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.join(format!("floor.sqlite{suffix}")));
    }
    let mut script = String::from(
        "PRAGMA journal_mode=WAL;\nPRAGMA synchronous=FULL;\n\
         CREATE TABLE t(order_id, event_time, email, phone, content_id, content_name, price, quantity);\n",
    );
    for f in files {
        script.push_str(&format!(".import --csv --skip 1 '{}' t\n", f.display()));
    }
    let started = Instant::now();
    let mut child = Command::new("sqlite3").arg(&db).stdin(Stdio::piped()).stdout(Stdio::null()).spawn().ok()?;
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let status = child.wait().unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert!(status.success(), "sqlite3 .import failed");
    Some(secs)
}

/// The backlog's exports, archived by the agent in `run`'s folder.
fn archived_exports(run: &Path) -> Vec<PathBuf> {
    let mut archived: Vec<PathBuf> = walk(&run.join("inbox"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "csv"))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("export-")))
        .collect();
    archived.sort();
    assert_eq!(archived.len(), FILES, "the archived exports");
    archived
}

/// Start-up to READY of the service with `rows` events queued and not yet sent (queued by
/// `import` into a fresh queue; the receiver is not running, so nothing is sent meanwhile).
fn startup_with_backlog(dir: &Path, run: &Path, rows: usize) {
    let second = dir.join("second");
    std::fs::create_dir_all(second.join("inbox")).unwrap();
    std::fs::write(second.join("config.toml"), common::config_text(&second, "http://127.0.0.1:9", "")).unwrap();
    let archived = archived_exports(run);
    let mut import = Command::new(common::agent_binary());
    import.arg("--config").arg(second.join("config.toml")).arg("import").args(&archived).env("OEA_BENCH_TOKEN", TOKEN);
    let out = import.stderr(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "import");
    let notify = Notify::bind(&second);
    let started = Instant::now();
    let mut agent = spawn(&second, &notify);
    let ready = notify.wait_ready(Duration::from_secs(120)).expect("READY") - started;
    stop(&mut agent);
    println!("start-up to READY with {rows} events queued: {:.3} s (goal: at most 0.100 s)", ready.as_secs_f64());
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn spawn(dir: &Path, notify: &Notify) -> Child {
    Command::new(common::agent_binary())
        .envs(common::unit_environment())
        .arg("--config")
        .arg(dir.join("config.toml"))
        .arg("run")
        .env("OEA_BENCH_TOKEN", TOKEN)
        .env("NOTIFY_SOCKET", &notify.path)
        .stderr(std::fs::File::create(dir.join("agent.log")).unwrap())
        .spawn()
        .unwrap()
}

fn stop(agent: &mut Child) {
    let _ = Command::new("kill").arg("-TERM").arg(agent.id().to_string()).status();
    let _ = agent.wait();
}

fn proc_file(pid: u32, name: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/{name}")).unwrap_or_default()
}

/// User + system CPU seconds of a running process.
fn cpu_secs(pid: u32) -> f64 {
    let stat = proc_file(pid, "stat");
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    ticks as f64 / 100.0
}

/// Wait until the agent is idle: its CPU time and bytes written unchanged for half a second (at
/// most 20 s). Returns how long that took, the half second of stillness included.
fn settle(pid: u32) -> f64 {
    let start = Instant::now();
    let mut last = (cpu_secs(pid), io_write_bytes(pid));
    let mut still = 0;
    while still < 5 && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
        let now = (cpu_secs(pid), io_write_bytes(pid));
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
    start.elapsed().as_secs_f64()
}

fn status_kb(pid: u32, key: &str) -> u64 {
    proc_file(pid, "status")
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Bytes the process caused to be written to storage (`write_bytes` of `/proc/<pid>/io`).
fn io_write_bytes(pid: u32) -> u64 {
    proc_file(pid, "io")
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A systemd notify socket that only waits for READY=1.
struct Notify {
    path: PathBuf,
    socket: UnixDatagram,
}

impl Notify {
    fn bind(dir: &Path) -> Notify {
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).unwrap();
        Notify { path, socket }
    }

    /// When READY=1 arrived; from then on the socket is drained in the background, as systemd
    /// does (an unread socket fills up, and the agent's next STATUS would wait for room).
    fn wait_ready(&self, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            self.socket.set_read_timeout(Some(deadline - Instant::now())).unwrap();
            let n = self.socket.recv(&mut buf).ok()?;
            if String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == "READY=1") {
                let ready = Instant::now();
                let socket = self.socket.try_clone().unwrap();
                socket.set_read_timeout(None).unwrap();
                std::thread::spawn(move || while socket.recv(&mut [0u8; 4096]).is_ok() {});
                return Some(ready);
            }
        }
        None
    }
}

/// A minimal HTTP/1.1 receiver answering every POST with TikTok's success body; it counts the
/// events (`"event_id"` keys) and bytes it received and when the first and the last arrived.
struct Receiver {
    port: u16,
    state: Arc<Seen>,
}

#[derive(Default)]
struct Seen {
    events: AtomicU64,
    bytes: AtomicU64,
    first: Mutex<Option<Instant>>,
    last: Mutex<Option<Instant>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Seen::default());
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = shared.clone();
                std::thread::spawn(move || serve(stream, &state));
            }
        });
        Receiver { port, state }
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn events(&self) -> u64 {
        self.state.events.load(Ordering::SeqCst)
    }

    fn bytes(&self) -> u64 {
        self.state.bytes.load(Ordering::SeqCst)
    }

    fn first(&self) -> Option<Instant> {
        *self.state.first.lock().unwrap()
    }

    /// When the `n`th event arrived, waiting up to `timeout` for it.
    fn wait_for(&self, n: u64, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.events() >= n {
                return *self.state.last.lock().unwrap();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }
}

fn serve(stream: TcpStream, state: &Seen) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let events = body.windows(10).filter(|w| w == b"\"event_id\"").count() as u64;
        let now = Instant::now();
        if events > 0 {
            state.first.lock().unwrap().get_or_insert(now);
            *state.last.lock().unwrap() = Some(now);
        }
        state.bytes.fetch_add(length as u64, Ordering::SeqCst);
        state.events.fetch_add(events, Ordering::SeqCst);
        let answer = r#"{"code":0,"message":"OK","request_id":"bench","data":{}}"#;
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}
