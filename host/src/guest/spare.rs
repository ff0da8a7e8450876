//! Spare instances: after a request, once the worker has nothing more urgent to run, it
//! instantiates the next fresh instance ahead of time, so the next request starts on a ready
//! one. Each spare is still used by exactly one request (isolation is unchanged).
use crate::guest::clock::RequestClock;
use crate::guest::handle::AppRuntime;
use crate::guest::store::new_store;
use std::sync::Arc;

/// Scheduler rounds to give up before instantiating, so requests and I/O already waiting run
/// first (tokio's yield_now lets the runtime poll for I/O in between).
const YIELD_ROUNDS: usize = 8;

/// Starts making spare instances on their own task, unless one is at it already or enough
/// are ready.
pub fn start_refill(app: &Arc<AppRuntime>) {
    if !app.kept.wants_spare() || !app.kept.begin_refill() {
        return;
    }
    let app = app.clone();
    tokio::spawn(async move {
        refill(&app).await;
        app.kept.end_refill();
    });
}

/// Makes spare instances until `SPARE_INSTANCES` are ready. Errors (no free slot, ...) are
/// left for the request that would meet them.
async fn refill(app: &Arc<AppRuntime>) {
    for _ in 0..YIELD_ROUNDS {
        tokio::task::yield_now().await;
    }
    // Spares are 0.2 instances only: a 0.3 request always instantiates its own.
    let crate::app::world::AppPre::Proxy02(pre) = &app.pre else { return };
    while app.kept.wants_spare() {
        let id: Arc<str> = Arc::from("spare");
        let clock = RequestClock::new(app.settings.request_timeout, app.settings.max_request_time);
        let Some(slot) = app.kept.slot_for_spare() else { return };
        let store =
            new_store(app.pre.engine(), &app.settings, &app.outbound, &app.state, &id, clock, app.metrics, slot);
        let Ok(mut store) = store else { return };
        let started = std::time::Instant::now();
        let Ok(proxy) = pre.instantiate_async(&mut store).await else { return };
        // Reported (access log, metrics) by the request that takes the spare, as its own.
        app.kept.add_spare(store, proxy, started.elapsed());
    }
}
