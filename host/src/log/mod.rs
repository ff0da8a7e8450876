//! The error log: levels, targets (stderr or a file opened O_APPEND) and Gunicorn's line format
//! `[2026-11-22 10:00:00 +0000] [pid] [INFO] message`. Each line is written with one write(2),
//! so lines from several workers appending to the same file never interleave. Log files are
//! reopened in place on USR1 (for logrotate).
pub mod access;
pub mod escape;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warning,
    Error,
    Critical,
}

impl Level {
    pub fn parse(text: &str) -> Option<Level> {
        Some(match text.to_ascii_lowercase().as_str() {
            "debug" => Level::Debug,
            "info" => Level::Info,
            "warning" | "warn" => Level::Warning,
            "error" => Level::Error,
            "critical" => Level::Critical,
            _ => return None,
        })
    }

    fn label(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
            Level::Critical => "CRITICAL",
        }
    }
}

/// Where a log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Stdout,
    Stderr,
    File(PathBuf),
}

impl LogTarget {
    /// `-` means stdout (Gunicorn's meaning for the access log).
    pub fn parse_stdout_default(text: &str) -> LogTarget {
        if text == "-" {
            LogTarget::Stdout
        } else {
            LogTarget::File(PathBuf::from(text))
        }
    }

    /// `-` means stderr (Gunicorn's meaning for the error log).
    pub fn parse_stderr_default(text: &str) -> LogTarget {
        if text == "-" {
            LogTarget::Stderr
        } else {
            LogTarget::File(PathBuf::from(text))
        }
    }

    /// Opens the target for appending whole lines.
    pub fn open(&self) -> std::io::Result<LogSink> {
        Ok(match self {
            LogTarget::Stdout => LogSink::Stdout,
            LogTarget::Stderr => LogSink::Stderr,
            LogTarget::File(path) => LogSink::File(OpenOptions::new().create(true).append(true).open(path)?),
        })
    }
}

/// An open log destination. Writes whole lines in one call.
#[derive(Debug)]
pub enum LogSink {
    Stdout,
    Stderr,
    File(File),
}

impl LogSink {
    /// Reopens a file sink at its path (after logrotate renamed it): the new file takes over the
    /// same descriptor number with dup3(2), so every holder of this sink writes there from now on
    /// and a line is never written to a closed descriptor. Standard streams are left alone.
    pub fn reopen(&self, target: &LogTarget) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let (LogSink::File(current), LogTarget::File(path)) = (self, target) else {
            return Ok(());
        };
        let fresh = OpenOptions::new().create(true).append(true).open(path)?;
        // SAFETY: dup3 onto a descriptor this sink owns; O_CLOEXEC as std opened it.
        if unsafe { libc::dup3(fresh.as_raw_fd(), current.as_raw_fd(), libc::O_CLOEXEC) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Whether a line of up to PIPE_BUF bytes can be written without blocking: always for a
    /// regular file; for a pipe (stderr, or a FIFO given as the log file) when it has room.
    fn writable_now(&self) -> bool {
        use std::os::fd::{AsFd, BorrowedFd};
        let (stdout, stderr) = (std::io::stdout(), std::io::stderr());
        let fd: BorrowedFd<'_> = match self {
            LogSink::File(file) => file.as_fd(),
            LogSink::Stdout => stdout.as_fd(),
            LogSink::Stderr => stderr.as_fd(),
        };
        let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLOUT)];
        matches!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO), Ok(1))
            && fds[0].revents().is_some_and(|r| r.contains(nix::poll::PollFlags::POLLOUT))
    }

    pub fn write_line(&self, line: &[u8]) {
        // One write per line: stdout/stderr locks are per process, O_APPEND keeps processes apart.
        let _ = match self {
            LogSink::Stdout => std::io::stdout().lock().write_all(line),
            LogSink::Stderr => std::io::stderr().lock().write_all(line),
            LogSink::File(file) => (&*file).write_all(line),
        };
    }
}

struct ErrorLog {
    sink: LogSink,
    target: LogTarget,
    level: Level,
}

static ERROR_LOG: OnceLock<ErrorLog> = OnceLock::new();

/// Opens the error log once per process (the arbiter before forking; workers inherit it).
pub fn init(target: &LogTarget, level: Level) -> std::io::Result<()> {
    let sink = target.open()?;
    let _ = ERROR_LOG.set(ErrorLog { sink, target: target.clone(), level });
    Ok(())
}

/// The descriptors the error log holds open (a forked worker keeps them; stdio is kept anyway).
pub fn held_fds() -> Vec<std::os::fd::RawFd> {
    use std::os::fd::AsRawFd;
    match ERROR_LOG.get().map(|log| &log.sink) {
        Some(LogSink::File(file)) => vec![file.as_raw_fd()],
        _ => Vec::new(),
    }
}

/// USR1: reopens the error log file of this process (a no-op for stderr).
pub fn reopen_error_log() -> std::io::Result<()> {
    match ERROR_LOG.get() {
        Some(log) => log.sink.reopen(&log.target),
        None => Ok(()),
    }
}

pub fn enabled(level: Level) -> bool {
    ERROR_LOG.get().map_or(level >= Level::Info, |log| level >= log.level)
}

/// Writes one error-log line if `level` is enabled.
pub fn log(level: Level, message: std::fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let line = format!("[{}] [{}] [{}] {}\n", local_time("%Y-%m-%d %H:%M:%S %z"), pid(), level.label(), message);
    match ERROR_LOG.get() {
        Some(log) => log.sink.write_line(line.as_bytes()),
        None => LogSink::Stderr.write_line(line.as_bytes()),
    }
}

/// Like [`log`] for text nobody waits on (guest output): when the log is a pipe or terminal that
/// cannot take the line right now, the line is dropped and false returned, instead of blocking
/// the worker's event loop (and with it its heartbeat) on a slow reader.
pub fn log_nonblocking(level: Level, message: std::fmt::Arguments<'_>) -> bool {
    if !enabled(level) {
        return true;
    }
    let line = format!("[{}] [{}] [{}] {}\n", local_time("%Y-%m-%d %H:%M:%S %z"), pid(), level.label(), message);
    let sink = ERROR_LOG.get().map_or(&LogSink::Stderr, |log| &log.sink);
    if !sink.writable_now() {
        return false;
    }
    sink.write_line(line.as_bytes());
    true
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
