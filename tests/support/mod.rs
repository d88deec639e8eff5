//! Shared helpers of the integration tests: a temp store with a config, the real binary started,
//! stopped and killed, waits with timeouts, generated exports, and a leak check on every output.

#![allow(dead_code)]

pub mod fake_tiktok;

pub use fake_tiktok::{FakeTikTok, Fault};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const SOURCE_ID: &str = "7181537436256731137";
/// Distinctive, so a leak check can look for it in every output.
pub const TOKEN: &str = "tok-SECRET-3b1f9e7c5a";
/// Raw PII used by the tests; it must never appear in any output or file we write.
pub const RAW_EMAIL: &str = " ALICE_abc@gmail.com ";
pub const RAW_PHONE: &str = "(+1)2133734253";
pub const EMAIL_HASH: &str = "848a771458438fc2ec420560d769fb9b9b86851ee338ec56517baabd79d3bb4f";
pub const PHONE_HASH: &str = "9f7ec22d72092cd3c0b58726ed9c2d91b92e51a3f29837508fb2948bb22dd2fd";
pub const EXTERNAL_HASH: &str = "80fba0ae1c48e3978e43e4efc365e14e12ea0c830ba8ba5b9a2dafc7e3f2ab8b";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_offline-events-agent")
}

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Quick retries for tests; a test's own `[sender]` lines replace these.
const SENDER_DEFAULTS: [(&str, &str); 8] = [
    ("backoff_base_ms", "100"),
    ("backoff_max_secs", "1"),
    ("throttle_backoff_max_secs", "1"),
    ("auth_retry_secs", "1"),
    ("recovery_probe_secs", "1"),
    ("recovery_jitter_secs", "0"),
    ("request_timeout_secs", "5"),
    ("connect_timeout_secs", "2"),
];

/// Extra config lines for the three places tests vary (`source` lines may replace `format`).
#[derive(Default, Clone)]
pub struct Opts {
    pub top: String,
    pub sender: String,
    pub source: String,
}

/// A store: temp folder, source folder (`inbox`), token file, config, queue.
pub struct Agent {
    pub dir: tempfile::TempDir,
    pub inbox: PathBuf,
    pub config: PathBuf,
    pub token_file: PathBuf,
    pub queue: PathBuf,
    api_base: String,
    opts: Opts,
}

impl Agent {
    pub fn new(api_base: &str, opts: Opts) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let inbox = dir.path().join("inbox");
        std::fs::create_dir_all(&inbox).unwrap();
        let token_file = dir.path().join("token");
        let agent = Agent {
            inbox,
            config: dir.path().join("config.toml"),
            queue: dir.path().join("state/queue.sqlite"),
            token_file,
            dir,
            api_base: api_base.to_string(),
            opts,
        };
        agent.set_token(TOKEN);
        agent.write_config();
        agent
    }

    pub fn set_token(&self, token: &str) {
        std::fs::write(&self.token_file, format!("{token}\n")).unwrap();
        set_mode(&self.token_file, 0o600);
    }

    /// Replace the extra config lines and rewrite the file.
    pub fn set_opts(&mut self, opts: Opts) {
        self.opts = opts;
        self.write_config();
    }

    pub fn write_config(&self) {
        let Opts { top, sender, source } = &self.opts;
        let text = format!(
            r#"event_source_id = "{SOURCE_ID}"
access_token_file = "{token}"
api_base = "{api}"
queue_path = "{queue}"
phone_region = "US"
{top}

[sender]
{sender_defaults}
{sender}

[[source]]
name = "till"
path = "{inbox}"
{format}
time_zone = "UTC"
currency = "USD"
shop_id = "s042"
till_id = "t1"
settle_secs = 1
rescan_secs = 1
{source}
"#,
            sender_defaults = SENDER_DEFAULTS
                .iter()
                .filter(|(key, _)| !sender.lines().any(|l| l.trim_start().starts_with(key)))
                .map(|(key, value)| format!("{key} = {value}\n"))
                .collect::<String>(),
            token = self.token_file.display(),
            api = self.api_base,
            queue = self.queue.display(),
            inbox = self.inbox.display(),
            format = if source.contains("format =") { "" } else { "format = \"native-csv\"" },
        );
        std::fs::write(&self.config, text).unwrap();
    }

    /// Run a command to completion; its output is leak-checked.
    pub fn cmd(&self, args: &[&str]) -> Output {
        self.cmd_env(args, &[])
    }

    /// [`Agent::cmd`] with extra environment variables (the debug builds' clock offset, say).
    pub fn cmd_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let out = Command::new(bin())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .envs(env.iter().copied())
            .env_remove("OFFLINE_EVENTS_AGENT_LOG")
            .output()
            .unwrap();
        assert_no_leak(&String::from_utf8_lossy(&out.stdout));
        assert_no_leak(&String::from_utf8_lossy(&out.stderr));
        out
    }

    pub fn cmd_ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Start `run` in the background, its log going to a file in the temp folder.
    pub fn spawn(&self) -> Daemon {
        self.spawn_with_env(&[])
    }

    pub fn spawn_with_env(&self, env: &[(&str, &str)]) -> Daemon {
        self.spawn_with(Command::new(bin()), env)
    }

    /// Start `run` from inside the store's folder with `--config config.toml`, a relative path,
    /// the config naming its source folder relative to itself too.
    pub fn spawn_relative(&self) -> Daemon {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let text = text.replace(&format!("path = \"{}\"", self.inbox.display()), "path = \"inbox\"");
        std::fs::write(&self.config, text).unwrap();
        let mut command = Command::new(bin());
        command.current_dir(self.dir.path());
        self.spawn_at(command, &[], Path::new("config.toml"))
    }

    /// Start `run` as user `nobody` (after [`Agent::give_to_nobody`]), so that file modes bind
    /// even when the tests run as root.
    pub fn spawn_as_nobody(&self) -> Daemon {
        let mut setpriv = Command::new("setpriv");
        setpriv.args(["--reuid=65534", "--regid=65534", "--clear-groups", bin()]);
        self.spawn_with(setpriv, &[])
    }

    /// Give the store's folder to user `nobody` (uid 65534) and check that the agent can run as it
    /// through `setpriv`; Err says why that cannot be done here.
    pub fn give_to_nobody(&self) -> Result<(), String> {
        let chown = Command::new("chown").args(["-R", "65534:65534"]).arg(self.dir.path()).status();
        if !chown.is_ok_and(|s| s.success()) {
            return Err("chown failed".into());
        }
        let probe = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", bin(), "--version"])
            .output()
            .map_err(|e| format!("setpriv: {e}"))?;
        if !probe.status.success() {
            return Err(format!("setpriv cannot run the agent as nobody: {}", String::from_utf8_lossy(&probe.stderr)));
        }
        Ok(())
    }

    fn spawn_with(&self, command: Command, env: &[(&str, &str)]) -> Daemon {
        self.spawn_at(command, env, &self.config)
    }

    fn spawn_at(&self, mut command: Command, env: &[(&str, &str)], config: &Path) -> Daemon {
        let log = self.dir.path().join(format!("daemon-{}.log", fastrand_u32()));
        let child = command
            .arg("--config")
            .arg(config)
            .arg("run")
            .envs(env.iter().copied())
            .stdout(Stdio::from(File::create(&log).unwrap()))
            .stderr(Stdio::from(File::options().append(true).open(&log).unwrap()))
            .spawn()
            .unwrap();
        Daemon { child: Some(child), log }
    }

    /// Put a file into the source folder the way a careful POS does: write, then rename into place.
    pub fn drop_file(&self, name: &str, content: &str) -> PathBuf {
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, content).unwrap();
        let target = self.inbox.join(name);
        std::fs::rename(&tmp, &target).unwrap();
        target
    }

    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.cmd_ok(&["status", "--json"])).unwrap()
    }

    /// `status --json`, or `None` while it fails (no queue yet, or a damaged one not yet moved
    /// aside by the service).
    pub fn status_if_any(&self) -> Option<serde_json::Value> {
        let out = self.cmd(&["status", "--json"]);
        out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    /// (pending, sent, dead); all -1 while there is no queue yet.
    pub fn counts(&self) -> (i64, i64, i64) {
        let Some(s) = self.status_if_any() else { return (-1, -1, -1) };
        let c = &s["counts"];
        (c["pending"].as_i64().unwrap(), c["sent"].as_i64().unwrap(), c["dead"].as_i64().unwrap())
    }
}

pub struct Daemon {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    /// SIGKILL: no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        assert_no_leak(&self.log_text());
    }

    /// SIGTERM, then wait; returns the exit status and how long the stop took.
    pub fn terminate(&mut self) -> (std::process::ExitStatus, Duration) {
        let mut c = self.child.take().expect("running");
        let started = Instant::now();
        Command::new("kill").arg("-TERM").arg(c.id().to_string()).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                assert_no_leak(&self.log_text());
                return (status, started.elapsed());
            }
            assert!(Instant::now() < deadline, "daemon did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait up to `timeout` for the daemon to exit on its own; its exit status, or None.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        let c = self.child.as_mut().expect("running");
        while Instant::now() < deadline {
            if let Some(status) = c.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("running").id();
        Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().unwrap();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The bundled Shopify orders export (dated 2025, hence the long attribution window).
pub const SHOPIFY_SAMPLE: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pos-exports/shopify-orders_export.csv");

/// A store whose one source reads Shopify orders exports like [`SHOPIFY_SAMPLE`].
pub fn shopify_agent(fake: &FakeTikTok) -> Agent {
    Agent::new(
        &fake.base_url(),
        Opts {
            top: "attribution_window_days = 36500".into(),
            source: "format = \"shopify-orders\"".into(),
            ..Opts::default()
        },
    )
}

/// Poll `f` until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The token and raw PII never appear in anything the agent prints or logs.
pub fn assert_no_leak(text: &str) {
    assert!(!text.contains(TOKEN), "the access token leaked:\n{text}");
    if let Some(hit) = raw_pii_in(text.as_bytes()) {
        panic!("raw customer data leaked ({hit}):\n{text}");
    }
}

/// Raw phone numbers the tests and fixtures feed, as their digits (a number written with
/// punctuation is also looked for as written, in [`RAW_PHONES_WRITTEN`]).
pub const RAW_PHONE_DIGITS: &[&str] =
    &["2133734253", "4155550177", "6175550110", "4155550199", "4155550142", "4155550123", "9175550134"];

/// Raw phone numbers as the tests and fixtures write them.
pub const RAW_PHONES_WRITTEN: &[&str] =
    &["(213) 373-4253", "(415) 555-0177", "(617) 555-0110", "415 555 0199", "415-555-0142", "917 555 0134"];

/// The domains of every raw e-mail address the tests and fixtures feed (`RAW_EMAIL`, `csv_orders`'
/// `c{n}@example.com`, the sample exports): any address at one of them is raw customer data.
pub const RAW_EMAIL_DOMAINS: &[&str] = &["@gmail.com", "@example.com", "@harbor-kaffee.example.com"];

/// The first raw value (e-mail address or phone number) found in `bytes`, e-mails matched in any
/// case; `None` when there is none. Hashes are hex, so they never match.
pub fn raw_pii_in(bytes: &[u8]) -> Option<String> {
    let lower = bytes.to_ascii_lowercase();
    let contains = |needle: &[u8]| lower.windows(needle.len()).any(|w| w == needle);
    let local = |b: u8| b.is_ascii_alphanumeric() || b"._%+-".contains(&b);
    for (at, _) in lower.iter().enumerate().filter(|(_, b)| **b == b'@') {
        if at == 0 || !local(lower[at - 1]) {
            continue;
        }
        if let Some(domain) = RAW_EMAIL_DOMAINS.iter().find(|d| lower[at..].starts_with(d.as_bytes())) {
            let start = lower[..at].iter().rposition(|b| !local(*b)).map_or(0, |p| p + 1);
            return Some(format!("an e-mail address at {domain}, local part of {} bytes", at - start));
        }
    }
    let phones = RAW_PHONE_DIGITS.iter().chain(RAW_PHONES_WRITTEN);
    phones.into_iter().find(|p| contains(p.as_bytes())).map(|p| format!("phone number {p}"))
}

/// Whether `path` (under a store's folder) is something the agent wrote: the queue and anything
/// next to it (WAL, shared memory, a damaged queue moved aside), any SQLite file, daemon logs,
/// `.reason` files, metrics textfiles, dry-run output. Exports the test wrote (inbox, archive,
/// quarantined copies, staged files) are the store's own data and are not.
fn written_by_agent(path: &Path, queue_dir: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let sqlite = || {
        let mut magic = [0u8; 16];
        File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic)).is_ok()
            && magic.starts_with(b"SQLite format 3")
    };
    path.starts_with(queue_dir)
        || name.ends_with(".log")
        || name.ends_with(".reason")
        || name.ends_with(".prom")
        || name.contains("dry-run")
        || name.ends_with("-wal")
        || name.ends_with("-journal")
        || sqlite()
}

/// Every file under `dir` that the agent wrote ([`written_by_agent`]), as (path, bytes); links
/// are not followed and special files are not opened.
pub fn agent_written_files(dir: &Path, queue_dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else { continue };
            let path = entry.path();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() && written_by_agent(&path, queue_dir) {
                if let Ok(bytes) = std::fs::read(&path) {
                    out.push((path, bytes));
                }
            }
        }
    }
    out
}

impl Agent {
    /// Fail if any file the agent wrote under the store's folder (queue with its WAL and free
    /// pages read as raw bytes, logs, `.reason` files, metrics, dry-run output) holds a raw
    /// e-mail address, phone number or the token. Run for every `Agent` when it is dropped.
    pub fn assert_nothing_raw_on_disk(&self) {
        let queue_dir = self.queue.parent().unwrap_or(self.dir.path());
        for (path, bytes) in agent_written_files(self.dir.path(), queue_dir) {
            if let Some(hit) = raw_pii_in(&bytes) {
                panic!("raw customer data on disk in {} ({hit})", path.display());
            }
            let token = TOKEN.as_bytes();
            assert!(
                !bytes.windows(token.len()).any(|w| w == token),
                "the access token is on disk in {}",
                path.display()
            );
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // A test that already failed keeps its own message (a second panic would abort).
        if !std::thread::panicking() {
            self.assert_nothing_raw_on_disk();
        }
    }
}

/// Native CSV with `orders` orders of `items` lines each, ids `{prefix}{n}`, recent times.
pub fn csv_orders(prefix: &str, orders: usize, items: usize) -> String {
    let base = now() - 3600;
    let mut out = String::from("order_id,event_time,email,content_id,content_name,price,quantity\n");
    for o in 0..orders {
        for i in 0..items {
            let email = if i == 0 { format!("c{o}@example.com") } else { String::new() };
            out.push_str(&format!(
                "{prefix}{o},{},{email},SKU-{i},item {i},{}.50,{}\n",
                base - (o % 3000) as i64,
                1 + i,
                1 + i % 3
            ));
        }
    }
    out
}

pub fn ids(prefix: &str, orders: usize) -> std::collections::BTreeSet<String> {
    (0..orders).map(|o| format!("s042:t1:{prefix}{o}")).collect()
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn fastrand_u32() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
}

/// Text of every file under `dir` (for "no raw PII on disk" checks), binary files included lossily.
pub fn all_file_text(dir: &Path) -> String {
    String::from_utf8_lossy(&all_file_bytes(dir)).into_owned()
}

/// The bytes of every file under `dir`, one after the other.
pub fn all_file_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.extend_from_slice(&bytes);
            }
        }
    }
    out
}

/// Text of every regular file under `dir`, lossily, without following symbolic links or opening
/// special files (a FIFO would block the read): what the agent wrote, for "never quoted" checks in
/// a folder that holds links to secrets.
pub fn regular_file_text(dir: &Path) -> String {
    let mut out = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let Ok(kind) = entry.file_type() else { continue };
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                if let Ok(bytes) = std::fs::read(entry.path()) {
                    out.push_str(&String::from_utf8_lossy(&bytes));
                }
            }
        }
    }
    out
}

/// Make a FIFO at `path` (`mkfifo`).
pub fn mkfifo(path: &Path) {
    assert!(Command::new("mkfifo").arg(path).status().unwrap().success(), "mkfifo {}", path.display());
}

/// Write `bytes` over the file at `path` from `offset`, in place and durably (damage, for tests).
pub fn overwrite(path: &std::path::Path, offset: u64, bytes: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
}
