//! The archive as the redo log, in the background: started with the pipeline (after READY, so it
//! never delays start-up), it reconciles the archive with the queue once (again once there is room,
//! if the queue filled up on the way), then now and then rebuilds payloads the sender found damaged
//! and prunes archived files past their keep time. Its connection is held to the queue's cap.
//! Orchestration only: the work is [`crate::intake::redo`].

use super::{blocking, over_high_water, Health};
use crate::config::Config;
use crate::intake::redo;
use crate::queue::Role;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// How often damaged payloads are looked for (an indexed query when there are none).
const REBUILD_EVERY: Duration = Duration::from_secs(5);
/// How often old archived files are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// How long a reconcile stopped by a full queue waits before it tries again though the queue has
/// not shrunk: the disk may have been what was full, or a part needed more than the room left.
const RECONCILE_RETRY: Duration = Duration::from_secs(300);

/// Where the archive's reconcile stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reconcile {
    /// Not run yet.
    Due,
    /// Stopped at a full queue: the queue's used bytes then, and when.
    Waiting { used: u64, since: Instant },
    /// Gone through once.
    Done,
}

/// Whether to run the archive's reconcile now: until it went through once; not while the queue
/// is past its high water; after a stop at a full queue, once the queue has shrunk since (the
/// sender frees space while something waits for room) or [`RECONCILE_RETRY`] has passed. Pure.
fn reconcile_due(state: Reconcile, used: u64, cap: u64, now: Instant) -> bool {
    match state {
        Reconcile::Done => false,
        _ if over_high_water(used, cap) => false,
        Reconcile::Due => true,
        Reconcile::Waiting { used: then, since } => used < then || now.duration_since(since) >= RECONCILE_RETRY,
    }
}

pub(super) async fn redo_loop(
    config: Arc<Config>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
    health: Arc<Health>,
) {
    // The archive is the real queue's redo log: a test session (its own queue) leaves it alone
    // rather than send every archived sale again as a test event.
    if config.test_session() && !config.dry_run {
        let _ = stop.changed().await;
        return;
    }
    let mut queue = match Role::Redo.open(&config.queue_path, config.max_queue_bytes) {
        Ok(q) => q,
        Err(e) => {
            // Not a reason to stop delivering: wait for the pipeline to stop (a loop that returned
            // on its own would end the service).
            tracing::error!("the archive cannot be reconciled with the queue: {e}");
            let _ = stop.changed().await;
            return;
        }
    };
    // Until the archive went through once: a reconcile that stopped at a full queue waits for
    // room, and `status` says what waits.
    let mut state = Reconcile::Due;
    let mut next_prune = Instant::now();
    loop {
        if *stop.borrow() {
            return;
        }
        let cfg = config.clone();
        let halt = stop.clone();
        let prune = Instant::now() >= next_prune;
        let (q, (done, used, rebuilt)) = blocking(queue, move |q| {
            let mut used = q.used_bytes();
            let done = reconcile_due(state, used, cfg.max_queue_bytes, Instant::now())
                .then(|| redo::reconcile(q, &cfg, &|| *halt.borrow()));
            if done.is_some() {
                used = q.used_bytes();
            }
            if prune {
                redo::prune_archive(q, &cfg);
            }
            // What it writes waits while the queue is past its high water, as new files do, and
            // after a reconcile that just found it full.
            let full = done.as_ref().is_some_and(|d| d.waiting_for_room.is_some());
            let rebuilt =
                if full || over_high_water(used, cfg.max_queue_bytes) { Ok(0) } else { redo::rebuild_corrupt(q, &cfg) };
            (done, used, rebuilt)
        })
        .await;
        queue = q;
        if let Some(done) = done.filter(|_| !*stop.borrow()) {
            if done.events > 0 || done.waiting_for_room.is_some() {
                // Parts of a file that did not fit whole are committed too.
                wake.notify_one();
            }
            match done.waiting_for_room {
                Some(why) => {
                    let text = format!(
                        "archived files whose events the queue lost wait for room in the queue to be re-ingested, from {why}; tried again once sending frees space"
                    );
                    if !matches!(state, Reconcile::Waiting { .. }) {
                        tracing::warn!("{text}");
                        let _ = queue.update_agent_state(|s| s.reconcile_held = Some(text.clone()));
                        health.set_reconcile_held(Some(text));
                    } else {
                        tracing::debug!("{text} (still)");
                    }
                    state = Reconcile::Waiting { used, since: Instant::now() };
                }
                None => {
                    if std::mem::replace(&mut state, Reconcile::Done) != Reconcile::Due {
                        tracing::info!("the archive is reconciled with the queue: every archived file waiting for room was re-ingested");
                    }
                    if queue.agent_state().is_ok_and(|s| s.reconcile_held.is_some()) {
                        let _ = queue.update_agent_state(|s| s.reconcile_held = None);
                    }
                    health.set_reconcile_held(None);
                    tracing::debug!(
                        "archive reconciled with the queue: {} files looked at, {} hashed, {} re-ingested",
                        done.looked_at,
                        done.hashed,
                        done.reingested
                    );
                }
            }
        }
        if prune {
            next_prune = Instant::now() + PRUNE_EVERY;
        }
        match rebuilt {
            Ok(n) if n > 0 => wake.notify_one(),
            Ok(_) => {}
            Err(e) => tracing::warn!("damaged payloads not rebuilt: {e}"),
        }
        queue.release_memory();
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(REBUILD_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconcile_runs_once_then_after_a_full_queue_when_it_shrank_or_after_a_while() {
        let then = Instant::now();
        let (soon, later) = (then + Duration::from_secs(5), then + RECONCILE_RETRY);
        let cap = 1000;
        let stopped = |used| Reconcile::Waiting { used, since: then };
        // (case, where the reconcile stands, used bytes now, now, due)
        let cases = [
            ("the first run", Reconcile::Due, 100, soon, true),
            ("the first run, past the high water", Reconcile::Due, 950, soon, false),
            ("stopped at 850: not shrunk", stopped(850), 850, soon, false),
            ("stopped at 850: grown", stopped(850), 870, soon, false),
            ("stopped at 850: shrunk", stopped(850), 849, soon, true),
            ("stopped at 990: shrunk, still past the high water", stopped(990), 950, soon, false),
            ("stopped a while ago", stopped(850), 850, later, true),
            ("stopped a while ago, past the high water", stopped(950), 950, later, false),
            ("gone through", Reconcile::Done, 100, later, false),
        ];
        for (name, state, used, now, due) in cases {
            assert_eq!(reconcile_due(state, used, cap, now), due, "{name}");
        }
    }
}
