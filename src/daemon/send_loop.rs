//! The send loop: step the sender on the blocking pool, and wait as each step says: for new events,
//! out a backoff (cut short when the API is reachable again), or out a pause on a token problem.
//!
//! Two cheap looks every [`LOOK_EVERY`] cut a wait short: while idle, the queue's `data_version`
//! (another process changed the queue: `dead-letter requeue`, `import`, `flush`); while paused,
//! the token file's stamp (a fixed token is used at once, not after `auth_retry_secs`).

use super::{blocking, Health, LogLimiter, Part, Verdict};
use crate::config::Config;
use crate::sender::token_watch::TokenWatch;
use crate::sender::{Sender, Step};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// How often the idle sender looks at the queue's `data_version`, and the paused sender at the
/// token file: a change made by another process is acted on within this (plus a step).
pub(super) const LOOK_EVERY: Duration = Duration::from_millis(500);

/// Events sent (or dead-lettered) in a row past which the sender checkpoints the WAL once it has
/// been idle for [`CHECKPOINT_IDLE`]. The automatic checkpoints of a backlog are partial (the
/// sender is always reading), and a WAL left past `wal_autocheckpoint` is copied by whichever
/// commit next finds it so, likely on a new sale's way out (~0.1 s for 64 MiB; the sender's
/// commits copy it at a quarter of its bound, `queue::WalDuty`, so less is left). Not while the
/// backlog is ingested (the ingest wakes the sender every part, well within the idle time), and
/// never for a trickle of sales (no checkpoint and `fsync` per sale).
const CHECKPOINT_AFTER: usize = 10_000;
const CHECKPOINT_IDLE: Duration = Duration::from_millis(200);

pub(super) async fn send_loop(
    config: Arc<Config>,
    mut sender: Sender,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
    health: Arc<Health>,
) {
    const MAINTENANCE_EVERY: Duration = Duration::from_secs(600);
    let mut next_maintenance = Instant::now();
    let mut paused_logged = false;
    let mut limiter = LogLimiter::new(Duration::from_secs(600));
    let mut token = TokenWatch::new(config.token.as_ref());
    let mut streak = 0;
    // The idle checkpoint is due: run before the next step, on the step's blocking call.
    let mut checkpoint_due = false;
    // After a shared power or network outage a whole fleet starts at once: spread the first send.
    if sender.queue().has_pending().unwrap_or(false) {
        let jitter = config.sender.recovery_jitter.mul_f64(fastrand::f64());
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(jitter) => {}
        }
    }
    'run: loop {
        if *stop.borrow() {
            break;
        }
        if Instant::now() >= next_maintenance {
            let retention = config.sender.sent_retention;
            health.begin(Part::Send);
            let (s, r) = blocking(sender, move |s| s.maintain(crate::now(), retention)).await;
            health.end(Part::Send);
            sender = s;
            if let Err(e) = r {
                tracing::error!("queue maintenance failed: {e}");
            }
            next_maintenance = Instant::now() + MAINTENANCE_EVERY;
        }
        token.mark();
        health.begin(Part::Send);
        let checkpoint = std::mem::take(&mut checkpoint_due);
        let (s, step) = blocking(sender, move |s| {
            if checkpoint {
                match s.queue().checkpoint() {
                    Ok((frames, copied)) => {
                        tracing::debug!("idle after a backlog: {copied} of {frames} WAL frames copied")
                    }
                    Err(e) => tracing::debug!("idle after a backlog: no checkpoint: {e}"),
                }
            }
            s.step(crate::now())
        })
        .await;
        health.end(Part::Send);
        sender = s;
        let wait = match step {
            Ok(Step::Progress { sent, dead }) => {
                streak += sent + dead;
                limiter.reset("delivery failed");
                if health.held().is_some() {
                    let (s, r) = blocking(sender, |s| s.free_space()).await;
                    sender = s;
                    if let Err(e) = r {
                        tracing::error!("cannot free queue space: {e}");
                    }
                }
                if paused_logged {
                    tracing::info!("sending resumed");
                    paused_logged = false;
                }
                tracing::info!(
                    "delivered {sent} events{}",
                    if dead > 0 { format!(", {dead} dead-lettered") } else { String::new() }
                );
                continue;
            }
            Ok(Step::Idle) => {
                let checkpoint_at = (streak >= CHECKPOINT_AFTER).then(|| Instant::now() + CHECKPOINT_IDLE);
                tracing::debug!(
                    "nothing to send; waiting for new events (maintenance at the latest in {:?})",
                    next_maintenance.saturating_duration_since(Instant::now())
                );
                // Woken by this process's ingest (`wake`), by maintenance, or by a change another
                // process committed (`data_version` moves only for other connections' commits).
                let seen = sender.queue().data_version().ok();
                loop {
                    tokio::select! {
                        _ = stop.changed() => break 'run,
                        _ = wake.notified() => break,
                        _ = tokio::time::sleep_until(checkpoint_at.unwrap_or(next_maintenance).into()), if checkpoint_at.is_some() => {
                            (checkpoint_due, streak) = (true, 0);
                            break;
                        }
                        _ = tokio::time::sleep_until(next_maintenance.into()) => break,
                        _ = tokio::time::sleep(LOOK_EVERY) => {
                            if sender.queue().data_version().ok() != seen {
                                tracing::debug!("the queue was changed by another process; sending");
                                break;
                            }
                        }
                    }
                }
                continue;
            }
            Ok(Step::Retry { delay, connect_failure, reason }) => {
                match limiter.check("delivery failed", Instant::now()) {
                    Verdict::Log => tracing::warn!(
                        "delivery failed: {reason}; events stay queued, next try in {:.1}s (repeats are summarised every 10 minutes)",
                        delay.as_secs_f64()
                    ),
                    Verdict::LogWithCount(n) => tracing::warn!(
                        "delivery still failing: {reason}; {n} more failed tries in the last 10 minutes; events stay queued"
                    ),
                    Verdict::Quiet => {}
                }
                tracing::debug!(
                    "backing off {:.1}s (until {}): {reason}",
                    delay.as_secs_f64(),
                    crate::logging::local_time_after(delay)
                );
                let probe = connect_failure.then(|| first_hop(&config)).flatten();
                (delay, probe, false)
            }
            Ok(Step::Paused { retry, reason }) => {
                tracing::debug!(
                    "paused; trying again in {:?} (until {}): {reason}",
                    retry,
                    crate::logging::local_time_after(retry)
                );
                if !paused_logged {
                    tracing::error!("{reason}");
                    paused_logged = true;
                }
                (retry, None, true)
            }
            Err(e) => {
                match limiter.check("sender error", Instant::now()) {
                    Verdict::Quiet => {}
                    _ => tracing::error!("sender: {e}; retrying in 5s"),
                }
                (Duration::from_secs(5), None, false)
            }
        };
        let (delay, probe, paused) = wait;
        let recovered = async {
            match probe {
                Some(addr) => {
                    wait_until_reachable(&addr, config.sender.recovery_probe, config.sender.recovery_jitter).await
                }
                None => std::future::pending().await,
            }
        };
        tokio::pin!(recovered);
        let until = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                _ = stop.changed() => break 'run,
                _ = tokio::time::sleep_until(until) => break,
                _ = &mut recovered => {
                    tracing::info!("{} is reachable again; sending now", crate::config::redact_url(&config.api_base));
                    break;
                }
                _ = tokio::time::sleep(LOOK_EVERY), if paused => {
                    if token.changed() {
                        tracing::info!("the access token file changed; trying again now");
                        break;
                    }
                }
            }
        }
    }
    // Stopping: the requests delivered and not recorded yet are recorded (waiting for the lock off
    // the runtime's thread).
    let (_, r) = blocking(sender, |s| s.finish()).await;
    if let Err(e) = r {
        tracing::warn!("stopping: {e}");
    }
}

/// `host:port` the client connects to first: the proxy if one is set, else the API host.
fn first_hop(config: &Config) -> Option<String> {
    let proxy = config.proxy.clone().or_else(|| {
        ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
            .iter()
            .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    });
    let url = proxy.as_deref().unwrap_or(&config.api_base);
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let authority = rest.split('/').next()?.rsplit('@').next()?;
    if authority.is_empty() {
        return None;
    }
    let has_port = authority.rsplit_once(':').is_some_and(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
        && !authority.ends_with(']');
    if has_port {
        Some(authority.to_string())
    } else {
        Some(format!("{authority}:{}", if scheme == "https" { 443 } else { 80 }))
    }
}

/// Return once a TCP connection to `addr` succeeds, plus a random jitter so that a fleet of tills
/// recovering from one outage does not send in lockstep.
async fn wait_until_reachable(addr: &str, every: Duration, jitter: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let attempt = tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr)).await;
        if matches!(attempt, Ok(Ok(_))) {
            tokio::time::sleep(jitter.mul_f64(fastrand::f64())).await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_hop_of_urls() {
        let mut config = crate::config::parse(
            "event_source_id = \"7181537436256731137\"\ndry_run = true\nqueue_path = \"/tmp/q\"\n",
            &crate::config::Context::default(),
        )
        .unwrap();
        let cases = [
            ("https://business-api.tiktok.com", "business-api.tiktok.com:443"),
            ("http://127.0.0.1:8080/", "127.0.0.1:8080"),
            ("http://localhost", "localhost:80"),
        ];
        for (base, expected) in cases {
            config.api_base = base.into();
            config.proxy = None;
            assert_eq!(first_hop(&config).as_deref(), Some(expected));
        }
        config.proxy = Some("http://user:pw@proxy.example:3128".into());
        assert_eq!(first_hop(&config).as_deref(), Some("proxy.example:3128"));
    }
}
