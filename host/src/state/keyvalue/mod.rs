//! `wasi:keyvalue@0.2.0-draft` for guests: the buckets granted with `--keyvalue NAME=URL` (any
//! other name is `no-such-store`), the key and value size limits, every operation bounded by the
//! request's clock, and backend failures turned into the guest's `error::other` (never a trap),
//! logged once when a bucket starts failing and once when it recovers.
pub mod host;
pub mod op;
pub mod sqlite;

use crate::config::state::{Backend, StateSettings};
use crate::{log_info, log_warning};
use op::{Failure, Op, Reply};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The longest any one operation may take, even for a request with no deadline.
pub const MAX_OPERATION_TIME: Duration = Duration::from_secs(30);
/// Most keys (or pairs) one batch call may carry.
pub const MAX_BATCH: usize = 1000;

/// A granted bucket and where its operations go.
struct Granted {
    name: String,
    /// Index of its file in the SQLite thread's list.
    file: usize,
    /// True from the first failure to the next success (one log line per outage).
    failing: AtomicBool,
}

/// One worker's buckets, limits and backend connections.
pub struct Keyvalue {
    buckets: Vec<Granted>,
    max_key_bytes: usize,
    max_value_bytes: usize,
    sqlite: Option<sqlite::SqliteQueue>,
}

impl Keyvalue {
    /// No bucket at all.
    pub fn none() -> Keyvalue {
        Keyvalue { buckets: Vec::new(), max_key_bytes: 0, max_value_bytes: 0, sqlite: None }
    }

    /// Opens the granted buckets' backends (in the worker, after the fork).
    pub fn open(settings: &StateSettings) -> anyhow::Result<Keyvalue> {
        let mut files: Vec<PathBuf> = Vec::new();
        let mut buckets = Vec::new();
        for spec in &settings.buckets {
            let Backend::Sqlite(path) = &spec.backend;
            let file = files.iter().position(|f| f == path).unwrap_or_else(|| {
                files.push(path.clone());
                files.len() - 1
            });
            buckets.push(Granted { name: spec.name.clone(), file, failing: AtomicBool::new(false) });
        }
        let sqlite = if files.is_empty() { None } else { Some(sqlite::start(files)?) };
        Ok(Keyvalue {
            buckets,
            max_key_bytes: settings.max_key_bytes,
            max_value_bytes: settings.max_value_bytes,
            sqlite,
        })
    }

    /// The granted bucket called `name`.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.buckets.iter().position(|b| b.name == name)
    }

    /// Runs `op` on bucket `index`, within the limits and before `deadline`.
    pub async fn call(&self, index: usize, op: Op, deadline: Option<Instant>) -> Result<Reply, String> {
        let bucket = self.buckets.get(index).ok_or("no such bucket")?;
        self.check_limits(&op)?;
        let name = op.name();
        let queue = self.sqlite.as_ref().ok_or("the bucket has no backend")?;
        let answer = queue.submit(bucket.file, &bucket.name, op).inspect_err(|e| self.note(bucket, Some(e)))?;
        let cap = Instant::now() + MAX_OPERATION_TIME;
        let until = deadline.map_or(cap, |d| d.min(cap));
        let result = match tokio::time::timeout_at(until.into(), answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Failure::Backend("the key-value store thread has stopped".to_string())),
            // A timeout is the request's (or a backend that is too slow): the job is dropped.
            Err(_) => return Err(format!("{name}: out of time for this request")),
        };
        match result {
            Ok(reply) => {
                self.note(bucket, None);
                Ok(reply)
            }
            // The guest's own doing says nothing about the backend (and must not reach the log).
            Err(Failure::Refused(message)) => Err(message),
            Err(Failure::Backend(message)) => {
                self.note(bucket, Some(&message));
                Err(message)
            }
        }
    }

    /// Logs a bucket's first failure and its recovery, not every failed operation.
    fn note(&self, bucket: &Granted, error: Option<&String>) {
        match error {
            Some(e) if !bucket.failing.swap(true, Ordering::Relaxed) => {
                log_warning!("keyvalue bucket {:?}: operations fail: {e}", bucket.name)
            }
            None if bucket.failing.swap(false, Ordering::Relaxed) => {
                log_info!("keyvalue bucket {:?}: operations succeed again", bucket.name)
            }
            _ => {}
        }
    }

    /// The key and value size limits and the batch size limit.
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
