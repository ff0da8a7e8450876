//! The `sqlite:PATH` backend: one thread per worker owns that worker's SQLite connections and runs
//! the operations queued to it, so the worker's tokio runtime never blocks on the database. The
//! file is shared by every worker of every generation (WAL journal, busy timeout); `increment` is
//! one `INSERT ... ON CONFLICT DO UPDATE ... RETURNING` statement, atomic across processes.
use super::op::{Failure, Op, Reply};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;
use tokio::sync::oneshot;

/// Operations a worker may have waiting for its SQLite thread; beyond it a guest gets an error
/// at once (the thread serves one operation at a time, so a longer queue only adds latency).
pub const QUEUE_DEPTH: usize = 256;
/// How long one statement waits for another process's write lock before it fails.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Most keys one `list-keys` call returns; the cursor pages through the rest.
pub const LIST_PAGE: i64 = 1000;

/// One queued operation and where its answer goes.
struct Job {
    file: usize,
    bucket: String,
    op: Op,
    reply: oneshot::Sender<Result<Reply, Failure>>,
}

/// The handle the request path queues operations on.
#[derive(Clone)]
pub struct SqliteQueue {
    jobs: mpsc::SyncSender<Job>,
}

impl SqliteQueue {
    /// Queues `op` on bucket `bucket` of file number `file`; the receiver gets the answer.
    pub fn submit(
        &self,
        file: usize,
        bucket: &str,
        op: Op,
    ) -> Result<oneshot::Receiver<Result<Reply, Failure>>, Failure> {
        let (reply, answer) = oneshot::channel();
        let job = Job { file, bucket: bucket.to_string(), op, reply };
        match self.jobs.try_send(job) {
            Ok(()) => Ok(answer),
            Err(mpsc::TrySendError::Full(_)) => {
                Err(Failure::Busy(format!("the key-value store is busy ({QUEUE_DEPTH} operations waiting in this worker)")))
            }
            Err(mpsc::TrySendError::Disconnected(_)) => {
                Err(Failure::Backend("the key-value store thread has stopped".to_string()))
            }
        }
    }
}

/// Opens every file (creating it and its table if needed) on a new thread and returns the queue,
/// or the first file's error. Called in the worker after the fork and the privilege drop.
pub fn start(files: Vec<PathBuf>) -> anyhow::Result<SqliteQueue> {
    let (jobs, queue) = mpsc::sync_channel::<Job>(QUEUE_DEPTH);
    let (opened, ready) = mpsc::channel::<Result<(), String>>();
    std::thread::Builder::new().name("keyvalue-sqlite".into()).spawn(move || {
        let mut connections = Vec::with_capacity(files.len());
        for path in &files {
            match open(path) {
                Ok(connection) => connections.push(connection),
                Err(e) => {
                    let _ = opened.send(Err(format!("sqlite:{}: {e}", path.display())));
                    return;
                }
            }
        }
        let _ = opened.send(Ok(()));
        serve(connections, queue);
    })?;
    match ready.recv() {
        Ok(Ok(())) => Ok(SqliteQueue { jobs }),
        Ok(Err(e)) => Err(anyhow::anyhow!("--keyvalue {e}")),
        Err(_) => Err(anyhow::anyhow!("--keyvalue: the SQLite thread stopped while opening its files")),
    }
}

/// Opens (or creates) one database: WAL so readers never wait for the writer, a busy timeout so
/// concurrent writers from other workers wait instead of failing, and the one table.
fn open(path: &Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open(path)?;
    connection.busy_timeout(BUSY_TIMEOUT)?;
    // Workers booting together on a new file race to switch it to WAL, and SQLite answers that
    // race with SQLITE_BUSY without waiting in the busy handler: retry, within the same timeout.
    let give_up = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match prepare(&connection) {
            Err(e) if is_busy(&e) && std::time::Instant::now() < give_up => {
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return result.map(|()| connection),
        }
    }
}

/// WAL mode (kept in the file), the sync level, and the table.
fn prepare(connection: &Connection) -> rusqlite::Result<()> {
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    connection.execute_batch(
        "CREATE TABLE IF NOT EXISTS kv (
            bucket TEXT NOT NULL,
            key TEXT NOT NULL,
            value BLOB NOT NULL,
            PRIMARY KEY (bucket, key)
        )",
    )
}

fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(error.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

fn serve(connections: Vec<Connection>, queue: mpsc::Receiver<Job>) {
    for job in queue {
        // The request gave up (its clock ran out, or it went away): skip the work.
        if job.reply.is_closed() {
            continue;
        }
        let result = run(&connections[job.file], &job.bucket, job.op);
        let _ = job.reply.send(result);
    }
}

/// The largest counter `increment` keeps (SQLite integers are signed 64-bit).
const MAX_COUNTER: i64 = i64::MAX;

/// Increments a decimal counter in place and returns the new value; no row back means the
/// current value is not a counter that can take `delta` more.
const INCREMENT: &str = "INSERT INTO kv (bucket, key, value) VALUES (?1, ?2, CAST(CAST(?3 AS TEXT) AS BLOB))
    ON CONFLICT (bucket, key) DO UPDATE
        SET value = CAST(CAST(CAST(CAST(value AS TEXT) AS INTEGER) + ?3 AS TEXT) AS BLOB)
        WHERE length(value) BETWEEN 1 AND 19
          AND CAST(value AS TEXT) NOT GLOB '*[^0-9]*'
          AND CAST(CAST(value AS TEXT) AS INTEGER) <= ?4 - ?3
    RETURNING CAST(value AS TEXT)";

fn run(db: &Connection, bucket: &str, op: Op) -> Result<Reply, Failure> {
    let sql = |e: rusqlite::Error| Failure::Backend(format!("sqlite: {e}"));
    Ok(match op {
        Op::Get(key) => Reply::Value(get(db, bucket, &key).map_err(sql)?),
        Op::Set(key, value) => {
            set(db, bucket, &key, &value).map_err(sql)?;
            Reply::Done
        }
        Op::Delete(key) => {
            db.prepare_cached("DELETE FROM kv WHERE bucket = ?1 AND key = ?2")
                .and_then(|mut s| s.execute(params![bucket, key]))
                .map_err(sql)?;
            Reply::Done
        }
        Op::Exists(key) => {
            let found = db
                .prepare_cached("SELECT 1 FROM kv WHERE bucket = ?1 AND key = ?2")
                .and_then(|mut s| s.query_row(params![bucket, key], |_| Ok(())).optional())
                .map_err(sql)?;
            Reply::Exists(found.is_some())
        }
        Op::ListKeys(cursor) => list_keys(db, bucket, cursor).map_err(sql)?,
        Op::Increment(key, delta) => {
            let delta = i64::try_from(delta)
                .map_err(|_| Failure::Refused(format!("increment by {delta}: larger than {MAX_COUNTER}")))?;
            let value: Option<String> = db
                .prepare_cached(INCREMENT)
                .and_then(|mut s| s.query_row(params![bucket, key, delta, MAX_COUNTER], |row| row.get(0)).optional())
                .map_err(sql)?;
            let value = value.ok_or_else(|| {
                Failure::Refused(format!("increment: the value of {key:?} is not a decimal counter that can grow by {delta} (at most {MAX_COUNTER})"))
            })?;
            Reply::Counter(
                value.parse().map_err(|e| Failure::Backend(format!("increment: stored counter {value:?}: {e}")))?,
            )
        }
        Op::GetMany(keys) => {
            let tx = db.unchecked_transaction().map_err(sql)?;
            let mut found = Vec::with_capacity(keys.len());
            for key in keys {
                found.push(get(&tx, bucket, &key).map_err(sql)?.map(|value| (key, value)));
            }
            tx.commit().map_err(sql)?;
            Reply::Values(found)
        }
        Op::SetMany(pairs) => {
            let tx = db.unchecked_transaction().map_err(sql)?;
            for (key, value) in pairs {
                set(&tx, bucket, &key, &value).map_err(sql)?;
            }
            tx.commit().map_err(sql)?;
            Reply::Done
        }
        Op::DeleteMany(keys) => {
            let tx = db.unchecked_transaction().map_err(sql)?;
            for key in keys {
                tx.prepare_cached("DELETE FROM kv WHERE bucket = ?1 AND key = ?2")
                    .and_then(|mut s| s.execute(params![bucket, key]))
                    .map_err(sql)?;
            }
            tx.commit().map_err(sql)?;
            Reply::Done
        }
    })
}

fn get(db: &Connection, bucket: &str, key: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    db.prepare_cached("SELECT CAST(value AS BLOB) FROM kv WHERE bucket = ?1 AND key = ?2")?
        .query_row(params![bucket, key], |row| row.get(0))
        .optional()
}

fn set(db: &Connection, bucket: &str, key: &str, value: &[u8]) -> rusqlite::Result<()> {
    db.prepare_cached(
        "INSERT INTO kv (bucket, key, value) VALUES (?1, ?2, ?3)
         ON CONFLICT (bucket, key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![bucket, key, value])?;
    Ok(())
}

/// One page of keys in rowid order; the cursor is the last rowid returned, so keys added or
/// removed meanwhile never make a page repeat or skip the others.
fn list_keys(db: &Connection, bucket: &str, cursor: Option<u64>) -> rusqlite::Result<Reply> {
    let after = cursor.map_or(0, |c| i64::try_from(c).unwrap_or(i64::MAX));
    let mut statement =
        db.prepare_cached("SELECT rowid, key FROM kv WHERE bucket = ?1 AND rowid > ?2 ORDER BY rowid LIMIT ?3")?;
    let rows = statement
        .query_map(params![bucket, after, LIST_PAGE], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let next = (rows.len() as i64 == LIST_PAGE).then(|| rows.last().map(|(rowid, _)| *rowid as u64)).flatten();
    Ok(Reply::Keys(rows.into_iter().map(|(_, key)| key).collect(), next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let connection = open(&dir.path().join("kv.db")).unwrap();
        (dir, connection)
    }

    #[test]
    fn increment_counts_from_zero_and_refuses_what_is_not_a_counter() {
        let (_dir, db) = db();
        assert!(matches!(run(&db, "b", Op::Increment("n".into(), 5)), Ok(Reply::Counter(5))));
        assert!(matches!(run(&db, "b", Op::Increment("n".into(), 2)), Ok(Reply::Counter(7))));
        assert!(matches!(run(&db, "b", Op::Get("n".into())), Ok(Reply::Value(Some(v))) if v == b"7"));
        run(&db, "b", Op::Set("s".into(), b"abc".to_vec())).unwrap();
        assert!(run(&db, "b", Op::Increment("s".into(), 1)).is_err());
        run(&db, "b", Op::Set("m".into(), (i64::MAX - 1).to_string().into_bytes())).unwrap();
        assert!(matches!(run(&db, "b", Op::Increment("m".into(), 1)), Ok(Reply::Counter(c)) if c == i64::MAX as u64));
        assert!(run(&db, "b", Op::Increment("m".into(), 1)).is_err(), "past the largest counter");
        assert!(run(&db, "b", Op::Increment("n".into(), u64::MAX)).is_err());
    }

    #[test]
    fn buckets_in_one_file_are_apart_and_list_keys_pages() {
        let (_dir, db) = db();
        let pairs: Vec<_> = (0..LIST_PAGE + 5).map(|i| (format!("k{i}"), vec![1])).collect();
        run(&db, "a", Op::SetMany(pairs)).unwrap();
        assert!(matches!(run(&db, "b", Op::Exists("k1".into())), Ok(Reply::Exists(false))));
        let Ok(Reply::Keys(first, Some(cursor))) = run(&db, "a", Op::ListKeys(None)) else { panic!("first page") };
        assert_eq!(first.len() as i64, LIST_PAGE);
        let Ok(Reply::Keys(rest, None)) = run(&db, "a", Op::ListKeys(Some(cursor))) else { panic!("last page") };
        assert_eq!(rest, vec!["k1000", "k1001", "k1002", "k1003", "k1004"]);
        run(&db, "a", Op::DeleteMany(vec!["k0".into(), "k1".into()])).unwrap();
        let Ok(Reply::Values(got)) = run(&db, "a", Op::GetMany(vec!["k0".into(), "k2".into()])) else { panic!() };
        assert_eq!(got, vec![None, Some(("k2".to_string(), vec![1]))]);
    }
}
