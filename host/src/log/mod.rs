//! The error log: levels, targets (stderr or a file opened O_APPEND) and Gunicorn's line format
//! `[2026-11-22 10:00:00 +0000] [pid] [INFO] message`. Every line of every log (error log, access
//! log, guest output) goes out through [`deliver`]: one write of a whole line to a [`LogSink`]
//! that never waits on a reader, or dropped and counted by [`drops`] when the sink cannot take it,
//! so a stalled log reader or a full disk never stops serving or the heartbeat. Log files are
//! reopened in place on USR1 (for logrotate).
pub mod access;
pub mod drops;
pub mod escape;
pub mod request_figures;
pub mod sink;

pub use drops::{dropped_counts, forget_inherited_drops, LogKind};
pub use sink::LogSink;

use std::sync::OnceLock;

pub use crate::config::logging::{Level, LogTarget};

impl LogTarget {
    /// Opens the target for appending whole lines.
    pub fn open(&self) -> std::io::Result<LogSink> {
        Ok(match self {
            LogTarget::Stdout => LogSink::stdout(),
            LogTarget::Stderr => LogSink::stderr(),
            LogTarget::File(path) => LogSink::open_file(path)?,
        })
    }
}

impl LogSink {
    /// Reopens a file sink at its target's path (after logrotate); standard streams stay.
    pub fn reopen(&self, target: &LogTarget) -> std::io::Result<()> {
        match target {
            LogTarget::File(path) => self.reopen_path(path),
            LogTarget::Stdout | LogTarget::Stderr => Ok(()),
        }
    }
}

struct ErrorLog {
    sink: LogSink,
    target: LogTarget,
    level: Level,
}

static ERROR_LOG: OnceLock<ErrorLog> = OnceLock::new();
/// Stderr, for lines logged before [`init`].
static STDERR: OnceLock<LogSink> = OnceLock::new();

/// Opens the error log once per process (the arbiter before forking; workers inherit it).
pub fn init(target: &LogTarget, level: Level) -> std::io::Result<()> {
    let sink = target.open()?;
    let _ = ERROR_LOG.set(ErrorLog { sink, target: target.clone(), level });
    Ok(())
}

/// The descriptors the error log holds open (a forked worker keeps them; stdio is kept anyway).
pub fn held_fds() -> Vec<std::os::fd::RawFd> {
    ERROR_LOG.get().and_then(|log| log.sink.owned_fd()).into_iter().collect()
}

/// USR1: reopens the error log file of this process (a no-op for stderr).
pub fn reopen_error_log() -> std::io::Result<()> {
    match ERROR_LOG.get() {
        Some(log) => log.sink.reopen(&log.target),
        None => Ok(()),
    }
}

fn error_sink() -> &'static LogSink {
    match ERROR_LOG.get() {
        Some(log) => &log.sink,
        None => STDERR.get_or_init(LogSink::stderr),
    }
}

pub fn enabled(level: Level) -> bool {
    ERROR_LOG.get().map_or(level >= Level::Info, |log| level >= log.level)
}

/// Writes one error-log line if `level` is enabled (dropped and counted if the log cannot take
/// it now).
pub fn log(level: Level, message: std::fmt::Arguments<'_>) {
    if enabled(level) {
        deliver(LogKind::Error, error_sink(), error_line(level, message).as_bytes());
    }
}

/// A line of guest output, into the error log at INFO (counted apart when dropped).
pub fn log_guest(message: std::fmt::Arguments<'_>) {
    if enabled(Level::Info) {
        deliver(LogKind::Guest, error_sink(), error_line(Level::Info, message).as_bytes());
    }
}

/// A line for stdout that is no log's (the arbiter's readiness line): written the same way, never
/// waited on; counted with the error log if stdout cannot take it.
pub fn stdout_line(text: &str) {
    static STDOUT: OnceLock<LogSink> = OnceLock::new();
    deliver(LogKind::Error, STDOUT.get_or_init(LogSink::stdout), format!("{text}\n").as_bytes());
}

/// Writes the dropped-lines notes of the logs that take lines again: the error log's and guest
/// output's if the error log takes the note; the access log's (into the error log too, so access
/// log parsers see only access lines) if `access_log` shows room. The worker calls it after each
/// heartbeat, the arbiter every loop turn; it costs one load per log when nothing was dropped.
pub fn report_drops(access_log: Option<&LogSink>) {
    if !drops::any_unreported() {
        return;
    }
    drops::report(LogKind::Error.sharing_its_sink(), write_note);
    if access_log.is_some_and(LogSink::has_room) {
        drops::report(LogKind::Access.sharing_its_sink(), write_note);
    }
}

/// Every log line goes through here: written whole or dropped and counted, never waited on.
/// After a line the sink took, the notes of drops that sink had refused follow.
fn deliver(kind: LogKind, sink: &LogSink, line: &[u8]) {
    match sink.write_line(line) {
        Ok(()) if drops::any_unreported() => drops::report(kind.sharing_its_sink(), write_note),
        Ok(()) => {}
        Err(refusal) => drops::count(kind, refusal),
    }
}

/// A dropped-lines note, at WARNING whatever the level; false if the error log refused it.
fn write_note(message: std::fmt::Arguments<'_>) -> bool {
    error_sink().write_line(error_line(Level::Warning, message).as_bytes()).is_ok()
}

/// `[2026-11-22 10:00:00 +0000] [pid] [LEVEL] message\n`
fn error_line(level: Level, message: std::fmt::Arguments<'_>) -> String {
    format!("[{}] [{}] [{}] {}\n", local_time("%Y-%m-%d %H:%M:%S %z"), pid(), level.label(), message)
}

#[macro_export]
macro_rules! log_debug { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Debug, format_args!($($t)*)) } }
#[macro_export]
macro_rules! log_info { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Info, format_args!($($t)*)) } }
#[macro_export]
macro_rules! log_warning { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Warning, format_args!($($t)*)) } }
#[macro_export]
macro_rules! log_error { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Error, format_args!($($t)*)) } }
#[macro_export]
macro_rules! log_critical { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Critical, format_args!($($t)*)) } }

/// Formats the current local time with strftime(3).
pub fn local_time(format: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as libc::time_t)
        .unwrap_or(0);
    format_time(now, format)
}

/// Formats a Unix time as local time with strftime(3).
pub fn format_time(secs: libc::time_t, format: &str) -> String {
    let Ok(format) = std::ffi::CString::new(format) else {
        return String::new();
    };
    // SAFETY: localtime_r and strftime write only into the buffers we pass.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&secs, &mut tm).is_null() {
            return String::new();
        }
        let mut buf = [0u8; 64];
        let n = libc::strftime(buf.as_mut_ptr().cast(), buf.len(), format.as_ptr(), &tm);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

/// This process's pid, as log lines show it.
pub fn pid() -> u32 {
    std::process::id()
}
