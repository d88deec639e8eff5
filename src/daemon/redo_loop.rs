//! The archive as the redo log, in the background: started with the pipeline (after READY, so it
//! never delays start-up), it reconciles the archive with the queue once, then now and then
//! rebuilds payloads the sender found damaged and prunes archived files past their keep time.
//! Orchestration only: the work is [`crate::intake::redo`].

use super::blocking;
use crate::config::Config;
use crate::intake::redo;
use crate::queue::Queue;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// How often damaged payloads are looked for (an indexed query when there are none).
const REBUILD_EVERY: Duration = Duration::from_secs(5);
/// How often old archived files are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

pub(super) async fn redo_loop(config: Arc<Config>, wake: Arc<Notify>, mut stop: watch::Receiver<bool>) {
    // The archive is the real queue's redo log: a test session (its own queue) leaves it alone
    // rather than send every archived sale again as a test event.
    if config.test_session() && !config.dry_run {
        let _ = stop.changed().await;
        return;
    }
    let queue = match Queue::open(&config.queue_path) {
        Ok(q) => q,
        Err(e) => {
            // Not a reason to stop delivering: wait for the pipeline to stop (a loop that returned
            // on its own would end the service).
            tracing::error!("the archive cannot be reconciled with the queue: {e}");
            let _ = stop.changed().await;
            return;
        }
    };
    let cfg = config.clone();
    let halt = stop.clone();
    let (mut queue, done) = blocking(queue, move |q| redo::reconcile(q, &cfg, &|| *halt.borrow())).await;
    if done.events > 0 {
        wake.notify_one();
    }
    tracing::debug!(
        "archive reconciled with the queue: {} files looked at, {} hashed, {} re-ingested",
        done.looked_at,
        done.hashed,
        done.reingested
    );
    let mut next_prune = Instant::now();
    loop {
        if *stop.borrow() {
            return;
        }
        let cfg = config.clone();
        let prune = Instant::now() >= next_prune;
        let (q, rebuilt) = blocking(queue, move |q| {
            if prune {
                redo::prune_archive(q, &cfg);
            }
            redo::rebuild_corrupt(q, &cfg)
        })
        .await;
        queue = q;
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
