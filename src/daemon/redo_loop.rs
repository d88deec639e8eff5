//! The archive as the redo log, in the background: started with the pipeline (after READY, so it
//! never delays start-up), it reconciles the archive with the queue once (again once there is room,
//! if the queue filled up on the way), then now and then rebuilds payloads the sender found damaged
//! and prunes archived files past their keep time. Its connection is held to the queue's cap.
//! Orchestration only: the work is [`crate::intake::redo`].

use super::{blocking, over_high_water, Role};
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
    let opened = Queue::open(&config.queue_path).and_then(|q| Role::Redo.configure(&q, &config).map(|()| q));
    let mut queue = match opened {
        Ok(q) => q,
        Err(e) => {
            // Not a reason to stop delivering: wait for the pipeline to stop (a loop that returned
            // on its own would end the service).
            tracing::error!("the archive cannot be reconciled with the queue: {e}");
            let _ = stop.changed().await;
            return;
        }
    };
    // Until the archive is reconciled whole: a reconcile that stopped at a full queue is tried
    // again once the queue has room (sending frees it), every REBUILD_EVERY.
    let mut unreconciled = true;
    let mut next_prune = Instant::now();
    loop {
        if *stop.borrow() {
            return;
        }
        let cfg = config.clone();
        let halt = stop.clone();
        let prune = Instant::now() >= next_prune;
        let (q, (reconciled, rebuilt)) = blocking(queue, move |q| {
            // What it writes waits while the queue is past its high water, as new files do.
            let room = !over_high_water(q.used_bytes(), cfg.max_queue_bytes);
            let reconciled = (unreconciled && room).then(|| redo::reconcile(q, &cfg, &|| *halt.borrow()));
            if prune {
                redo::prune_archive(q, &cfg);
            }
            (reconciled, if room { redo::rebuild_corrupt(q, &cfg) } else { Ok(0) })
        })
        .await;
        queue = q;
        if let Some(done) = reconciled {
            if done.events > 0 {
                wake.notify_one();
            }
            tracing::debug!(
                "archive reconciled with the queue: {} files looked at, {} hashed, {} re-ingested{}",
                done.looked_at,
                done.hashed,
                done.reingested,
                if done.waiting_for_room { "; the rest waits for room in the queue" } else { "" }
            );
            unreconciled = done.waiting_for_room && !*stop.borrow();
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
