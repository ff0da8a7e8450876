//! `wasi:keyvalue@0.2.0-draft` for guests: the buckets granted with `--keyvalue NAME=URL` (any
//! other name is `no-such-store`), the key and value size limits, every operation bounded by the
//! request's clock, and backend failures turned into the guest's `error::other` (never a trap),
//! logged once when a bucket starts failing and once when it recovers (`outage`), and counted in
//! the metrics by bucket, operation and outcome.
pub mod backoff;
pub mod host;
pub mod op;
pub mod outage;
pub mod redis;
pub mod sqlite;

use crate::config::state::{Backend, StateSettings};
use crate::metrics::Recorder;
use op::{Failure, Op, Reply};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest any one operation may take, even for a request with no deadline.
pub const MAX_OPERATION_TIME: Duration = Duration::from_secs(30);
/// Most keys (or pairs) one batch call may carry.
pub const MAX_BATCH: usize = 1000;

/// Where a granted bucket's operations go.
enum Route {
    /// Index of its file in the SQLite thread's list.
    Sqlite(usize),
    Redis(redis::RedisBucket),
}

/// A granted bucket.
struct Granted {
    name: String,
    route: Route,
    outage: outage::Outage,
    /// Its label in the metrics arena (see `Arena::bucket_labels`).
    label: u16,
}

/// One worker's buckets, limits and backend connections.
pub struct Keyvalue {
    buckets: Vec<Granted>,
    max_key_bytes: usize,
    max_value_bytes: usize,
    sqlite: Option<sqlite::SqliteQueue>,
    metrics: Recorder,
}

impl Keyvalue {
    /// No bucket at all.
    pub fn none() -> Keyvalue {
        Keyvalue { buckets: Vec::new(), max_key_bytes: 0, max_value_bytes: 0, sqlite: None, metrics: Recorder::disabled() }
    }

    /// Opens the granted buckets' backends (in the worker, after the fork, inside its runtime):
    /// the SQLite files now, Redis connections lazily. `labels` are the buckets' metrics labels,
    /// in grant order (missing ones are `_other`).
    pub fn open(settings: &StateSettings, metrics: Recorder, labels: &[u16]) -> anyhow::Result<Keyvalue> {
        let mut files: Vec<PathBuf> = Vec::new();
        let mut buckets = Vec::new();
        let in_flight = Arc::new(tokio::sync::Semaphore::new(redis::IN_FLIGHT));
        for (i, spec) in settings.buckets.iter().enumerate() {
            let route = match &spec.backend {
                Backend::Sqlite(path) => Route::Sqlite(files.iter().position(|f| f == path).unwrap_or_else(|| {
                    files.push(path.clone());
                    files.len() - 1
                })),
                Backend::Redis(target) => Route::Redis(redis::RedisBucket::open(
                    &spec.name,
                    &target.url,
                    &target.shown,
                    in_flight.clone(),
                )?),
            };
            let label = labels.get(i).copied().unwrap_or(0);
            buckets.push(Granted { name: spec.name.clone(), route, outage: outage::Outage::default(), label });
        }
        let sqlite = if files.is_empty() { None } else { Some(sqlite::start(files)?) };
        Ok(Keyvalue {
            buckets,
            max_key_bytes: settings.max_key_bytes,
            max_value_bytes: settings.max_value_bytes,
            sqlite,
            metrics,
        })
    }

    /// The granted bucket called `name`.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.buckets.iter().position(|b| b.name == name)
    }

    /// Runs `op` on bucket `index`, within the limits and before `deadline`; counts it in the
    /// metrics and notes the bucket's outages.
    pub async fn call(&self, index: usize, op: Op, deadline: Option<Instant>) -> Result<Reply, String> {
        let bucket = self.buckets.get(index).ok_or("no such bucket")?;
        let started = Instant::now();
        let key = crate::metrics::labels::keyvalue_key(bucket.label, op.index());
        let result = self.run(bucket, op, deadline).await;
        self.metrics.keyvalue(key, result.as_ref().err().map_or(0, Failure::outcome), started.elapsed());
        match result {
            Ok(reply) => {
                bucket.outage.succeeded(&bucket.name);
                Ok(reply)
            }
            Err(Failure::Backend(message)) => {
                bucket.outage.failed(&bucket.name, &message);
                Err(message)
            }
            // The guest's own doing, load or its clock say nothing about the backend (and a guest
            // must not be able to fill the log).
            Err(other) => Err(other.into_message()),
        }
    }

    async fn run(&self, bucket: &Granted, op: Op, deadline: Option<Instant>) -> Result<Reply, Failure> {
        self.check_limits(&op).map_err(Failure::Refused)?;
        let cap = Instant::now() + MAX_OPERATION_TIME;
        let until = deadline.map_or(cap, |d| d.min(cap));
        match &bucket.route {
            Route::Redis(redis) => redis.run(op, self.max_value_bytes, until).await,
            Route::Sqlite(file) => {
                let name = op.name();
                let queue = self.sqlite.as_ref().ok_or(Failure::Backend("the bucket has no backend".into()))?;
                let answer = queue.submit(*file, &bucket.name, op)?;
                match tokio::time::timeout_at(until.into(), answer).await {
                    Ok(Ok(result)) => result,
                    Ok(Err(_)) => Err(Failure::Backend("the key-value store thread has stopped".to_string())),
                    // The request's clock (or a backend that is too slow): the job is dropped.
                    Err(_) => Err(Failure::Timeout(format!("{name}: out of time for this request"))),
                }
            }
        }
    }

    /// The key and value size limits and the batch size limit (before any I/O).
    fn check_limits(&self, op: &Op) -> Result<(), String> {
        let key = |k: &String| {
            if k.len() > self.max_key_bytes {
                Err(format!("key of {} bytes: longer than --keyvalue-max-key-size {}", k.len(), self.max_key_bytes))
            } else {
                Ok(())
            }
        };
        let value = |v: &Vec<u8>| {
            if v.len() > self.max_value_bytes {
                Err(format!(
                    "value of {} bytes: larger than --keyvalue-max-value-size {}",
                    v.len(),
                    self.max_value_bytes
                ))
            } else {
                Ok(())
            }
        };
        let batch = |n: usize| {
            if n > MAX_BATCH {
                Err(format!("batch of {n} keys: more than {MAX_BATCH}"))
            } else {
                Ok(())
            }
        };
        match op {
            Op::Get(k) | Op::Delete(k) | Op::Exists(k) | Op::Increment(k, _) => key(k),
            Op::Set(k, v) => key(k).and_then(|()| value(v)),
            Op::ListKeys(_) => Ok(()),
            Op::GetMany(keys) | Op::DeleteMany(keys) => batch(keys.len()).and_then(|()| keys.iter().try_for_each(key)),
            Op::SetMany(pairs) => {
                batch(pairs.len()).and_then(|()| pairs.iter().try_for_each(|(k, v)| key(k).and_then(|()| value(v))))
            }
        }
    }
}
