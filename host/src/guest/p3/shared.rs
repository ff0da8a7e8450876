//! WASI 0.3 instances shared by concurrent requests (`--instance-reuse N` above 1, with
//! `--instance-concurrency M`): a request takes a seat on an open instance with fewer than M
//! requests in flight, else a fresh instance in a free slot. An instance takes at most N requests
//! in all and is dropped once they are done, or after `IDLE_LINGER` with none in flight. Every
//! request keeps its own clock; when any of them runs out of time, or the guest traps, the
//! instance is dropped and every request on it fails (the one out of time with 504).
use super::{serve_job, GuestTask, Job, Ticket};
use crate::guest::clock::{Expiry, RequestClock};
use crate::guest::handle::{instantiate_failure, trap_summary, AppRuntime, GuestFailure};
use crate::guest::store::GuestState;
use crate::log::request_figures::RequestFigures;
use crate::log_error;
use crate::metrics::labels::Outcome;
use futures::stream::{FuturesUnordered, StreamExt as _};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Notify};
use wasmtime::component::Accessor;
use wasmtime::Store;
use wasmtime_wasi_http::p3::bindings::{Service, ServicePre};

/// An open instance with no request in flight is dropped after this long (as `wasmtime serve`'s
/// `--idle-instance-timeout` default), giving its slot back.
const IDLE_LINGER: Duration = Duration::from_secs(1);

/// A worker's shared 0.3 instances.
pub struct SharedInstances {
    /// `--instance-reuse`: requests one instance takes in all.
    reuse: u32,
    /// `--instance-concurrency`: requests one instance has in flight at once.
    concurrency: u32,
    /// Instances that take new requests; each one's counts change only under this lock.
    open: Mutex<Vec<Arc<Shared>>>,
    next_ticket: AtomicU64,
}

/// One shared instance, as the requests see it.
struct Shared {
    jobs: mpsc::UnboundedSender<(u64, Job)>,
    seats: Mutex<Seats>,
    /// The requests in flight on it, by ticket number.
    tickets: Mutex<HashMap<u64, Answering>>,
    /// Woken when a request joins (its clock may be the next to run out).
    joined: Notify,
}

/// An instance's request counts (see `seat`, the one rule for them).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Seats {
    /// Requests it has taken so far.
    pub taken: u32,
    pub in_flight: u32,
    /// Takes no more requests (used up, idle too long, or failed).
    pub closed: bool,
}

/// Takes a seat if there is one: fewer than `concurrency` in flight and not closed; an instance
/// that takes its `reuse`-th request closes.
pub fn seat(seats: &mut Seats, reuse: u32, concurrency: u32) -> bool {
    if seats.closed || seats.in_flight >= concurrency {
        return false;
    }
    seats.taken += 1;
    seats.in_flight += 1;
    seats.closed = seats.taken >= reuse;
    true
}

/// Why a shared instance was dropped with requests on it.
enum Lost {
    Expired(u64, Expiry),
    Failed(GuestFailure),
}

impl SharedInstances {
    pub fn new(reuse: u32, concurrency: u32) -> SharedInstances {
        SharedInstances { reuse, concurrency, open: Mutex::new(Vec::new()), next_ticket: AtomicU64::new(1) }
    }

    /// Puts `job` on an open instance with a free seat, else on a fresh one in a free slot (and
    /// starts that instance's task); the returned task answers with the request's outcome.
    pub(super) fn start(
        &self,
        app: &Arc<AppRuntime>,
        pre: &ServicePre<GuestState>,
        job: Job,
        ticket: Ticket,
    ) -> Result<GuestTask, GuestFailure> {
        let number = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        let ticket = Answering { ticket, answer };
        let task: GuestTask = Box::pin(async move {
            answered.await.unwrap_or(Err(GuestFailure::InstanceLost(Outcome::Trap, "its instance task ended".into())))
        });
        let mut open = self.open.lock().map_err(|_| lock_failure())?;
        open.retain(|shared| shared.seats.lock().is_ok_and(|seats| !seats.closed));
        let seated = open
            .iter()
            .find(|shared| shared.seats.lock().is_ok_and(|mut seats| seat(&mut seats, self.reuse, self.concurrency)));
        if let Some(shared) = seated {
            // Admitted under the lock: a dropped instance's requests are drained under it too.
            shared.admit(number, job, ticket);
            return Ok(task);
        }
        let store = app.fresh_store(&ticket.ticket.request_id, &RequestClock::new(None, None))?;
        let (jobs, receiver) = mpsc::unbounded_channel();
        let mut seats = Seats::default();
        seat(&mut seats, self.reuse, self.concurrency);
        let shared = Arc::new(Shared {
            jobs,
            seats: Mutex::new(seats),
            tickets: Mutex::new(HashMap::new()),
            joined: Notify::new(),
        });
        shared.admit(number, job, ticket);
        if !seats.closed {
            open.push(shared.clone());
        }
        drop(open);
        tokio::spawn(run_instance(app.clone(), pre.clone(), store, shared, receiver));
        Ok(task)
    }

    /// Closes `shared` if it has no request in flight; true when it did.
    fn close_if_idle(&self, shared: &Arc<Shared>) -> bool {
        let Ok(mut open) = self.open.lock() else { return true };
        let idle = shared.seats.lock().map_or(true, |mut seats| {
            seats.closed |= seats.in_flight == 0;
            seats.closed && seats.in_flight == 0
        });
        if idle {
            open.retain(|other| !Arc::ptr_eq(other, shared));
        }
        idle
    }

    /// Closes `shared` for good and takes the requests still on it.
    fn drop_instance(&self, shared: &Arc<Shared>) -> Vec<(u64, Answering)> {
        let mut open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        open.retain(|other| !Arc::ptr_eq(other, shared));
        if let Ok(mut seats) = shared.seats.lock() {
            seats.closed = true;
        }
        shared.tickets.lock().map(|mut tickets| tickets.drain().collect()).unwrap_or_default()
    }
}

fn lock_failure() -> GuestFailure {
    GuestFailure::Instantiate(wasmtime::Error::msg("the shared instances' lock is poisoned"))
}

/// A request's ticket and where its outcome is answered.
pub(super) struct Answering {
    ticket: Ticket,
    answer: oneshot::Sender<Result<(), GuestFailure>>,
}

impl Answering {
    fn settle(self, app: &AppRuntime, result: Result<(), GuestFailure>) {
        self.ticket.settle(app, &result);
        let _ = self.answer.send(result);
    }
}

impl Shared {
    fn admit(&self, number: u64, job: Job, ticket: Answering) {
        if let Ok(mut tickets) = self.tickets.lock() {
            tickets.insert(number, ticket);
        }
        self.joined.notify_one();
        // The receiver lives as long as the instance task, which settles every ticket at its end.
        let _ = self.jobs.send((number, job));
    }

    /// Records a request whose guest run completed and frees its seat; true when the instance
    /// is closed and has nothing left in flight.
    fn complete(&self, app: &AppRuntime, number: u64) -> bool {
        let ticket = self.tickets.lock().ok().and_then(|mut tickets| tickets.remove(&number));
        if let Some(ticket) = ticket {
            ticket.settle(app, Ok(()));
        }
        self.seats.lock().map_or(true, |mut seats| {
            seats.in_flight = seats.in_flight.saturating_sub(1);
            seats.closed && seats.in_flight == 0
        })
    }

    /// The figures of the request that opened the instance (its instantiation is reported there).
    fn opener_figures(&self) -> Option<Arc<RequestFigures>> {
        let tickets = self.tickets.lock().ok()?;
        tickets.iter().min_by_key(|(number, _)| **number).map(|(_, t)| t.ticket.figures.clone())
    }

    /// Resolves with the first request in flight to run out of time (of several at once, the
    /// one whose deadline came first).
    async fn first_expiry(&self) -> (u64, Expiry) {
        loop {
            let joined = self.joined.notified();
            let now = Instant::now();
            let mut next: Option<(Instant, u64)> = None;
            if let Ok(tickets) = self.tickets.lock() {
                for (number, answering) in tickets.iter() {
                    if let Some(deadline) = answering.ticket.clock.deadline() {
                        next = Some(next.map_or((deadline, *number), |first| first.min((deadline, *number))));
                    }
                }
                if let Some((_, number)) = next {
                    let clock = &tickets[&number].ticket.clock;
                    if let Some(why) = clock.check(now) {
                        clock.expire();
                        return (number, why);
                    }
                }
            }
            match next.map(|(deadline, _)| deadline) {
                Some(at) => tokio::select! { _ = tokio::time::sleep_until(at.into()) => {}, _ = joined => {} },
                None => joined.await,
            }
        }
    }
}

impl Lost {
    /// The failure one request on the dropped instance reports.
    fn failure_for(&self, number: u64) -> GuestFailure {
        match self {
            Lost::Expired(expired, why) if *expired == number => GuestFailure::Timeout(*why),
            Lost::Expired(..) => {
                GuestFailure::InstanceLost(Outcome::Timeout, "another request on it ran out of time".into())
            }
            Lost::Failed(GuestFailure::Instantiate(error)) => {
                GuestFailure::Instantiate(wasmtime::Error::msg(format!("{error:#}")))
            }
            Lost::Failed(failure) => GuestFailure::InstanceLost(failure.outcome(), self.describe().into()),
        }
    }

    fn describe(&self) -> String {
        match self {
            Lost::Expired(number, Expiry::NoProgress) => {
                format!("request #{number} on it made no progress within --timeout")
            }
            Lost::Expired(number, Expiry::MaxRequestTime) => {
                format!("request #{number} on it ran over --max-request-time")
            }
            Lost::Failed(GuestFailure::Trap { error, out_of_memory: true }) => {
                format!("the guest exceeded the memory limit (--max-memory) and trapped: {}", trap_summary(error))
            }
            Lost::Failed(GuestFailure::Trap { error, .. }) => format!("the guest trapped: {}", trap_summary(error)),
            Lost::Failed(GuestFailure::Instantiate(error)) => format!("cannot instantiate the app: {error:#}"),
            Lost::Failed(_) => "it failed".to_string(),
        }
    }
}

/// The instance's task: instantiates, serves its requests inside the store's event loop until it
/// is closed and empty (or idle too long), and fails what is left if the guest traps or a request
/// runs out of time; its store (and slot) goes with it.
async fn run_instance(
    app: Arc<AppRuntime>,
    pre: ServicePre<GuestState>,
    mut store: Store<GuestState>,
    shared: Arc<Shared>,
    mut jobs: mpsc::UnboundedReceiver<(u64, Job)>,
) {
    let Some(instances) = &app.shared else { return };
    let ended = tokio::select! {
        biased;
        (number, why) = shared.first_expiry() => Err(Lost::Expired(number, why)),
        ended = async {
            let started = Instant::now();
            let service = pre.instantiate_async(&mut store).await.map_err(instantiate_failure)?;
            if let Some(figures) = shared.opener_figures() {
                figures.set_instantiation(started.elapsed());
            }
            let ran = store
                .run_concurrent(async |accessor| serve_jobs(accessor, &service, &app, instances, &shared, &mut jobs).await)
                .await;
            ran.and_then(|served| served).map_err(|error| GuestFailure::Trap { error, out_of_memory: false })
        } => ended.map_err(Lost::Failed),
    };
    let lost = match ended {
        Ok(()) => Lost::Failed(GuestFailure::InstanceLost(Outcome::Trap, "its instance ended".into())),
        Err(Lost::Failed(GuestFailure::Trap { error, .. })) => {
            Lost::Failed(GuestFailure::Trap { error, out_of_memory: store.data().memory_denied() })
        }
        Err(lost) => lost,
    };
    let left = instances.drop_instance(&shared);
    if !left.is_empty() {
        log_error!("a WASI 0.3 instance with {} request(s) in flight was dropped: {}", left.len(), lost.describe());
    }
    for (number, answering) in left {
        answering.settle(&app, Err(lost.failure_for(number)));
    }
    drop(store);
}

/// The event loop's side: starts each request that takes a seat, records each one that
/// completes, and ends when the instance is closed and empty or has been idle `IDLE_LINGER`.
async fn serve_jobs(
    accessor: &Accessor<GuestState>,
    service: &Service,
    app: &AppRuntime,
    instances: &SharedInstances,
    shared: &Arc<Shared>,
    jobs: &mut mpsc::UnboundedReceiver<(u64, Job)>,
) -> wasmtime::Result<()> {
    let mut running = FuturesUnordered::new();
    loop {
        tokio::select! {
            Some(done) = running.next() => {
                let number = done?;
                if shared.complete(app, number) {
                    return Ok(());
                }
            }
            Some((number, job)) = jobs.recv() => {
                running.push(async move { serve_job(accessor, service, job).await.map(|()| number) });
            }
            _ = tokio::time::sleep(IDLE_LINGER), if running.is_empty() => {
                if instances.close_if_idle(shared) {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seat_is_free_below_the_concurrency_and_the_reuse_th_request_closes_the_instance() {
        let mut seats = Seats::default();
        assert!(seat(&mut seats, 3, 2) && seat(&mut seats, 3, 2));
        assert!(!seat(&mut seats, 3, 2), "two in flight: no third seat");
        seats.in_flight -= 1;
        assert!(seat(&mut seats, 3, 2), "a seat freed");
        assert_eq!(seats, Seats { taken: 3, in_flight: 2, closed: true }, "the third request in all closes it");
        seats.in_flight = 0;
        assert!(!seat(&mut seats, 3, 2), "a closed instance takes no more, even when empty");
    }

    #[test]
    fn reuse_one_never_shares() {
        let mut seats = Seats::default();
        assert!(seat(&mut seats, 1, 16));
        assert!(seats.closed, "its only request closes it");
    }
}
