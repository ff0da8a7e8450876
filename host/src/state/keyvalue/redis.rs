//! The `redis://HOST:PORT[/DB]` backend (`rediss://` over TLS): one `ConnectionManager` per
//! bucket in each worker, created after the fork inside the worker's runtime and connected
//! lazily, so a Redis that is down at boot delays nothing. Each bucket's keys live under its own
//! prefix (`rustcorn:<length of name>:<name>:`), so two buckets on one server never see each
//! other's keys; `list-keys` pages with `SCAN MATCH` and hands out Redis's cursor. `increment` is
//! `INCRBY`; the batch calls are one `MGET`, `MSET` or `DEL`: one round trip each.
use super::backoff::Backoff;
use super::op::{Failure, Op, Reply};
use super::outage::bounded;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::RedisError;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Operations a worker may have in flight to Redis at once (all its Redis buckets together);
/// beyond it a guest gets an error at once, as with a full SQLite queue.
pub const IN_FLIGHT: usize = 256;
/// `SCAN`'s COUNT hint: about this many keys per `list-keys` page.
pub const SCAN_COUNT: usize = 1000;
/// A page of more keys than this is refused as the server's fault (SCAN returns about COUNT).
pub const MAX_PAGE_KEYS: usize = 10 * SCAN_COUNT;
/// One connection attempt's limit (a server that drops packets instead of refusing).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One granted bucket on a Redis server.
pub struct RedisBucket {
    connection: ConnectionManager,
    /// What every key of the bucket starts with.
    prefix: Vec<u8>,
    /// `SCAN MATCH` pattern of the bucket's keys: the prefix, glob characters escaped, then `*`.
    pattern: Vec<u8>,
    backoff: Backoff,
    in_flight: Arc<Semaphore>,
    /// `redis://HOST:PORT/DB` for messages (never the credentials).
    shown: String,
}

/// The prefix of bucket `name`'s keys: its length first, so no bucket's prefix starts another's
/// (`a:b` + key `c` and `a` + key `b:c` stay apart).
pub fn key_prefix(name: &str) -> Vec<u8> {
    format!("rustcorn:{}:{name}:", name.len()).into_bytes()
}

/// `prefix*` with the glob characters of the prefix escaped.
fn match_pattern(prefix: &[u8]) -> Vec<u8> {
    let mut pattern = Vec::with_capacity(prefix.len() + 8);
    for &byte in prefix {
        if matches!(byte, b'*' | b'?' | b'[' | b']' | b'\\') {
            pattern.push(b'\\');
        }
        pattern.push(byte);
    }
    pattern.push(b'*');
    pattern
}

impl RedisBucket {
    /// A bucket `name` on the server at `url`; no I/O (it connects on first use). Must run inside
    /// the worker's tokio runtime.
    pub fn open(name: &str, url: &str, shown: &str, in_flight: Arc<Semaphore>) -> anyhow::Result<RedisBucket> {
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("--keyvalue {name}=...: not a Redis URL ({})", e.category()))?;
        // One attempt per reconnection: `Backoff` spaces the attempts, and no request waits for a
        // chain of retries.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(super::MAX_OPERATION_TIME));
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| anyhow::anyhow!("--keyvalue {name}=...: {}", e.category()))?;
        let prefix = key_prefix(name);
        Ok(RedisBucket {
            connection,
            pattern: match_pattern(&prefix),
            prefix,
            backoff: Backoff::default(),
            in_flight,
            shown: shown.to_string(),
        })
    }

    /// Runs `op` (keys and values already within the limits) before `until`; `max_value` bounds
    /// the values it returns.
    pub async fn run(&self, op: Op, max_value: usize, until: Instant) -> Result<Reply, Failure> {
        let _slot = self.in_flight.try_acquire().map_err(|_| {
            Failure::Busy(format!("the key-value store is busy ({IN_FLIGHT} Redis operations in flight in this worker)"))
        })?;
        if let Err(wait) = self.backoff.admit(Instant::now()) {
            return Err(Failure::Backend(format!(
                "redis {}: unreachable, next attempt in {} ms",
                self.shown,
                wait.as_millis()
            )));
        }
        let name = op.name();
        match tokio::time::timeout_at(until.into(), self.send(op, max_value)).await {
            Ok(Ok(reply)) => {
                self.backoff.succeeded();
                Ok(reply)
            }
            Ok(Err(Sent::Refused(message))) => {
                self.backoff.succeeded();
                Err(Failure::Refused(message))
            }
            Ok(Err(Sent::Redis(e))) => {
                let unreachable = e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout();
                if unreachable {
                    self.backoff.failed(Instant::now());
                } else {
                    // It answered (with an error of its own): it is reachable.
                    self.backoff.succeeded();
                }
                Err(classify(name, &self.shown, e))
            }
            Err(_) => {
                // A server that takes this long is treated as down until a probe says otherwise.
                self.backoff.failed(Instant::now());
                Err(Failure::Timeout(format!("{name}: out of time for this request")))
            }
        }
    }

    fn key(&self, key: &str) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.prefix.len() + key.len());
        full.extend_from_slice(&self.prefix);
        full.extend_from_slice(key.as_bytes());
        full
    }

    /// One round trip for `op`.
    async fn send(&self, op: Op, max_value: usize) -> Result<Reply, Sent> {
        let mut c = self.connection.clone();
        let check = |value: Option<Vec<u8>>| match value {
            Some(v) if v.len() > max_value => Err(Sent::Refused(format!(
                "the stored value is {} bytes: larger than --keyvalue-max-value-size {max_value} (written by another client?)",
                v.len()
            ))),
            other => Ok(other),
        };
        Ok(match op {
            Op::Get(key) => Reply::Value(check(redis::cmd("GET").arg(self.key(&key)).query_async(&mut c).await?)?),
            Op::Set(key, value) => {
                redis::cmd("SET").arg(self.key(&key)).arg(value).exec_async(&mut c).await?;
                Reply::Done
            }
            Op::Delete(key) => {
                redis::cmd("DEL").arg(self.key(&key)).exec_async(&mut c).await?;
                Reply::Done
            }
            Op::Exists(key) => {
                let n: i64 = redis::cmd("EXISTS").arg(self.key(&key)).query_async(&mut c).await?;
                Reply::Exists(n > 0)
            }
            Op::ListKeys(cursor) => self.list_keys(&mut c, cursor).await?,
            Op::Increment(key, delta) => {
                let delta = i64::try_from(delta)
                    .map_err(|_| Sent::Refused(format!("increment by {delta}: larger than {}", i64::MAX)))?;
                let n: i64 = redis::cmd("INCRBY")
                    .arg(self.key(&key))
                    .arg(delta)
                    .query_async(&mut c)
                    .await
                    .map_err(|e| match is_data_error(&e) {
                        // Redis left the value as it was.
                        true => Sent::Refused(bounded(&format!(
                            "increment: the value of {key:?} is not a decimal counter that can grow by {delta} (at most {})",
                            i64::MAX
                        ))),
                        false => Sent::Redis(e),
                    })?;
                Reply::Counter(u64::try_from(n).map_err(|_| {
                    Sent::Refused(format!("increment: the counter {key:?} is negative ({n}): not a wasi:keyvalue counter"))
                })?)
            }
            Op::GetMany(keys) if keys.is_empty() => Reply::Values(Vec::new()),
            Op::GetMany(keys) => {
                let full: Vec<Vec<u8>> = keys.iter().map(|k| self.key(k)).collect();
                let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET").arg(full).query_async(&mut c).await?;
                if values.len() != keys.len() {
                    return Err(Sent::Redis(RedisError::from((
                        redis::ErrorKind::UnexpectedReturnType,
                        "MGET answered a different number of values",
                    ))));
                }
                let mut found = Vec::with_capacity(keys.len());
                for (key, value) in keys.into_iter().zip(values) {
                    found.push(check(value)?.map(|v| (key, v)));
                }
                Reply::Values(found)
            }
            Op::SetMany(pairs) if pairs.is_empty() => Reply::Done,
            Op::SetMany(pairs) => {
                let mut mset = redis::cmd("MSET");
                for (key, value) in pairs {
                    mset.arg(self.key(&key)).arg(value);
                }
                mset.exec_async(&mut c).await?;
                Reply::Done
            }
            Op::DeleteMany(keys) if keys.is_empty() => Reply::Done,
            Op::DeleteMany(keys) => {
                let full: Vec<Vec<u8>> = keys.iter().map(|k| self.key(k)).collect();
                redis::cmd("DEL").arg(full).exec_async(&mut c).await?;
                Reply::Done
            }
        })
    }

    /// One `SCAN` page of the bucket's keys, prefix removed; keys that are not UTF-8 (written by
    /// another client) are left out. Redis's cursor 0 ends the listing.
    async fn list_keys(&self, c: &mut ConnectionManager, cursor: Option<u64>) -> Result<Reply, Sent> {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor.unwrap_or(0))
            .arg("MATCH")
            .arg(&self.pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query_async(c)
            .await?;
        if keys.len() > MAX_PAGE_KEYS {
            return Err(Sent::Redis(RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "SCAN answered far more keys than asked for",
            ))));
        }
        let keys = keys
            .into_iter()
            .filter_map(|k| k.strip_prefix(self.prefix.as_slice()).and_then(|k| String::from_utf8(k.to_vec()).ok()))
            .collect();
        Ok(Reply::Keys(keys, (next != 0).then_some(next)))
    }
}

/// What a round trip gave instead of a reply.
enum Sent {
    Redis(RedisError),
    /// The data cannot serve this operation (the bucket is fine).
    Refused(String),
}

impl From<RedisError> for Sent {
    fn from(e: RedisError) -> Sent {
        Sent::Redis(e)
    }
}

/// Whether Redis refused the operation for the data it found (`INCRBY` on a value that is no
/// integer or would overflow, a key holding another type): it changed nothing.
fn is_data_error(e: &RedisError) -> bool {
    let detail = e.detail().unwrap_or("");
    match e.code() {
        Some("WRONGTYPE") => true,
        Some("ERR") => detail.contains("not an integer") || detail.contains("overflow"),
        _ => false,
    }
}

/// A Redis error as the guest's (see `is_data_error`) or the backend's.
fn classify(op: &str, shown: &str, e: RedisError) -> Failure {
    if is_data_error(&e) {
        Failure::Refused(bounded(&format!("{op}: the stored value cannot serve it (redis: {e})")))
    } else {
        Failure::Backend(bounded(&format!("redis {shown}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_keep_buckets_apart_and_patterns_match_only_their_own() {
        assert_eq!(key_prefix("default"), b"rustcorn:7:default:");
        // Without the length, bucket "a:b" key "c" and bucket "a" key "b:c" would be one Redis key.
        let mut one = key_prefix("a:b");
        one.extend_from_slice(b"c");
        let mut other = key_prefix("a");
        other.extend_from_slice(b"b:c");
        assert_ne!(one, other);
        assert_eq!(match_pattern(b"rustcorn:3:a*[:"), b"rustcorn:3:a\\*\\[:*");
    }
}
