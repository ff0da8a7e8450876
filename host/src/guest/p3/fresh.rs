//! A fresh WASI 0.3 instance for one request (the default): instantiated in a free instance slot,
//! run under the request's clock, dropped with its store once the response body has ended.
use super::{serve_job, GuestTask, Job, Ticket};
use crate::guest::handle::{instantiate_failure, settle, AppRuntime, GuestFailure};
use crate::guest::store::GuestState;
use std::sync::Arc;
use wasmtime::Store;
use wasmtime_wasi_http::p3::bindings::ServicePre;

/// Takes a slot and a store for `job`; the returned task instantiates the app and serves it.
pub(super) fn start(
    app: &Arc<AppRuntime>,
    pre: ServicePre<GuestState>,
    job: Job,
    ticket: Ticket,
) -> Result<GuestTask, GuestFailure> {
    let store = app.fresh_store(&ticket.request_id, &ticket.clock)?;
    Ok(Box::pin(run(app.clone(), pre, store, job, ticket)))
}

/// Instantiates, runs the handler and the body under the request clock, and records the outcome
/// before the store (and with it the body's source) is dropped.
async fn run(
    app: Arc<AppRuntime>,
    pre: ServicePre<GuestState>,
    mut store: Store<GuestState>,
    job: Job,
    ticket: Ticket,
) -> Result<(), GuestFailure> {
    let clock = ticket.clock.clone();
    let figures = ticket.figures.clone();
    let result = tokio::select! {
        biased;
        why = clock.expired() => Err(GuestFailure::Timeout(why)),
        result = async {
            let started = std::time::Instant::now();
            let service = pre.instantiate_async(&mut store).await.map_err(instantiate_failure)?;
            figures.set_instantiation(started.elapsed());
            let ran = store.run_concurrent(async move |accessor| serve_job(accessor, &service, job).await).await;
            ran.and_then(|served| served).map_err(|error| GuestFailure::Trap { error, out_of_memory: false })
        } => result,
    };
    let result = settle(result, &clock, store.data().memory_denied());
    ticket.settle(&app, &result);
    drop(store);
    result
}
