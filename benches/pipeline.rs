//! Pipeline benchmark: ingest of generated native CSV into a fresh queue, flush of that backlog to a
//! loopback receiver, and the idle daemon's footprint. Each measured phase runs in its own child
//! process so that its peak RSS (VmHWM) is its own.
//!
//!     cargo bench --bench pipeline                      # 1,000,000 rows / 250,000 orders
//!     OEA_BENCH_ROWS=40000 cargo bench --bench pipeline # a quick run
//!
//! Prints one line per figure; BENCHMARKS.md records the results. The idle daemon is the release
//! binary (or `OEA_BENCH_AGENT`) with the packaged unit's `Environment=` lines.

#[path = "../tests/support/fake_tiktok.rs"]
mod fake_tiktok;

mod common;
use common::{SOURCE_ID, TOKEN};
use offline_events_agent::queue::{Queue, Role};
use offline_events_agent::{config, intake, sender};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const ITEMS_PER_ORDER: usize = 4;

fn main() {
    match std::env::var("OEA_BENCH_PHASE").as_deref() {
        Ok("ingest") => phase_ingest(),
        Ok("flush") => phase_flush(),
        _ => orchestrate(),
    }
}

fn load(dir: &Path) -> config::Config {
    let text = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    config::parse(&text, &config::Context { config_dir: dir.to_path_buf(), ..Default::default() }).unwrap()
}

fn peak_rss_kb() -> u64 {
    proc_status_kb("self", "VmHWM:")
}

fn proc_status_kb(pid: &str, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn phase_ingest() {
    let dir = PathBuf::from(std::env::var("OEA_BENCH_DIR").unwrap());
    let config = load(&dir);
    let file = dir.join("inbox/export.csv");
    // Set up as the service's ingest connection is (its cap, its cache, foreign keys off).
    let mut queue = Role::Ingest.open(&config.queue_path, config.max_queue_bytes).unwrap();
    let started = Instant::now();
    let policy = intake::age_policy(&config, offline_events_agent::now());
    let outcome = intake::ingest::ingest_file(&mut queue, &config.sources[0], &file, policy).unwrap();
    let secs = started.elapsed().as_secs_f64();
    let intake::ingest::Outcome::Ingested { counts, .. } = outcome else { panic!("{outcome:?}") };
    println!("{} {secs:.3} {} {}", counts.events, peak_rss_kb(), wal_bytes(&config.queue_path));
}

fn phase_flush() {
    let dir = PathBuf::from(std::env::var("OEA_BENCH_DIR").unwrap());
    let config = load(&dir);
    let queue = Queue::open(&config.queue_path).unwrap();
    let mut sender = sender::Sender::new(queue, &config, sender::Settings::from_config(&config)).unwrap();
    let started = Instant::now();
    let report = sender::flush(&mut sender, Duration::from_secs(600)).unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert!(report.undelivered.is_none(), "{report:?}");
    let wal_after_flush = wal_bytes(&config.queue_path);
    let rss = peak_rss_kb();
    // The maintenance pass of a running service, an hour later: sent events' JSON dropped, pages
    // given back, WAL truncated.
    // A sender of its own: this one's clock judge saw the wall clock stand still for the flush, and
    // would take a wall clock an hour on with no monotonic time passed for a clock jump.
    drop(sender);
    let queue = Queue::open(&config.queue_path).unwrap();
    let mut later = sender::Sender::new(queue, &config, sender::Settings::from_config(&config)).unwrap();
    later.maintain(offline_events_agent::now() + 3601, config.sender.sent_retention).unwrap();
    let db = std::fs::metadata(&config.queue_path).map(|m| m.len()).unwrap_or(0);
    println!("{} {secs:.3} {rss} {wal_after_flush} {} {db}", report.sent, wal_bytes(&config.queue_path));
}

fn wal_bytes(queue: &Path) -> u64 {
    let mut wal = queue.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0)
}

fn child(phase: &str, dir: &Path) -> Vec<f64> {
    let out = Command::new(std::env::current_exe().unwrap())
        .env("OEA_BENCH_PHASE", phase)
        .env("OEA_BENCH_DIR", dir)
        .env("OEA_BENCH_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{phase}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().map(|f| f.parse().unwrap()).collect()
}

fn generate(path: &Path, rows: usize) -> usize {
    let now = offline_events_agent::now();
    let mut out = BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(out, "order_id,event_time,email,phone,content_id,content_name,price,quantity").unwrap();
    let orders = rows / ITEMS_PER_ORDER;
    for o in 0..orders {
        let t = now - 86_400 + (o as i64 % 80_000);
        for i in 0..ITEMS_PER_ORDER {
            let (email, phone) = if i == 0 {
                let phone = if o % 2 == 0 { format!("+1415555{:04}", o % 10_000) } else { String::new() };
                (format!("Customer{o}@Example.com"), phone)
            } else {
                (String::new(), String::new())
            };
            writeln!(
                out,
                "{o:08},{t},{email},{phone},SKU-{i:05},\"Item {i}, size M\",{}.{:02},{}",
                1 + i * 3,
                o % 100,
                1 + (o + i) % 3
            )
            .unwrap();
        }
    }
    out.flush().unwrap();
    orders
}

fn orchestrate() {
    let rows: usize = std::env::var("OEA_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("inbox")).unwrap();
    let fake = fake_tiktok::FakeTikTok::start(TOKEN, SOURCE_ID);
    std::fs::write(
        dir.path().join("config.toml"),
        common::config_text(dir.path(), &fake.base_url(), "after_ingest = \"keep\"\n"),
    )
    .unwrap();

    let file = dir.path().join("inbox/export.csv");
    let orders = generate(&file, rows);
    let size_mb = std::fs::metadata(&file).unwrap().len() as f64 / 1e6;
    println!("generated {rows} rows / {orders} orders ({size_mb:.1} MB)");

    let ingest = child("ingest", dir.path());
    let (events, secs, rss) = (ingest[0], ingest[1], ingest[2] as u64);
    assert_eq!(events as usize, orders);
    println!(
        "ingest: {rows} rows in {secs:.2} s = {:.0} rows/s ({:.0} orders/s), peak RSS {:.1} MB",
        rows as f64 / secs,
        events / secs,
        rss as f64 / 1024.0
    );
    let queue_mb = std::fs::metadata(dir.path().join("queue.sqlite")).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
    println!("queue file after ingest: {queue_mb:.1} MB, WAL right after the ingest commit: {:.1} MB", ingest[3] / 1e6);

    let flush = child("flush", dir.path());
    let (sent, secs, rss) = (flush[0], flush[1], flush[2] as u64);
    assert_eq!(sent as usize, orders);
    assert_eq!(fake.unique_ids().len(), orders);
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
    println!(
        "flush: {sent} events in {secs:.2} s = {:.0} events/s, peak RSS {:.1} MB",
        sent / secs,
        rss as f64 / 1024.0
    );
    println!(
        "WAL after the flush: {:.1} MB; after the maintenance pass: {:.1} MB; queue file then: {:.1} MB",
        flush[3] / 1e6,
        flush[4] / 1e6,
        flush[5] / 1e6
    );
    // At rest the WAL is bounded: a maintenance pass truncates it.
    assert!(flush[4] <= 64.0 * 1024.0 * 1024.0, "WAL not bounded after maintenance: {} bytes", flush[4]);
    // Space drained is given back: the sent events' JSON is dropped and the file shrinks.
    assert!(flush[5] < queue_mb * 1e6 / 2.0, "queue file did not shrink after maintenance: {} bytes", flush[5]);
    drop(fake);

    idle(dir.path());
}

/// Start the real daemon on an empty folder with a full (all sent) queue and watch it do nothing.
fn idle(dir: &Path) {
    let mut child = Command::new(common::agent_binary())
        .envs(common::unit_environment())
        .arg("--config")
        .arg(dir.join("config.toml"))
        .arg("run")
        .env("OEA_BENCH_TOKEN", TOKEN)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::fs::remove_file(dir.join("inbox/export.csv")).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let pid = child.id().to_string();
    let cpu = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    let before = cpu();
    let window = 10;
    std::thread::sleep(Duration::from_secs(window));
    let ticks = cpu() - before;
    let rss = proc_status_kb(&pid, "VmRSS:");
    println!("idle: RSS {:.1} MB, CPU {ticks} ticks (1/100 s) in {window} s", rss as f64 / 1024.0);
    let _ = child.kill();
    let _ = child.wait();
}
