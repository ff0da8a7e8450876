//! The log settings' plain data: levels and where a log goes (`log` opens and writes them).
use std::path::PathBuf;

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

    pub(crate) fn label(self) -> &'static str {
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
}
