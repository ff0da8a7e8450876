//! Lines a log could not take: counted per log in this process (the worker copies the counts into
//! its metrics slot, the arbiter renders its own as `rustcorn_log_lines_dropped_total{log}`), and
//! reported by one error-log line per log once the log takes lines again.
use super::sink::{refusal_text, Refusal};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering::Relaxed};

/// The logs whose lines are counted apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    /// The error log's own lines.
    Error = 0,
    /// The access log.
    Access,
    /// Guest stdout/stderr, written into the error log.
    Guest,
}

impl LogKind {
    pub const ALL: [LogKind; 3] = [LogKind::Error, LogKind::Access, LogKind::Guest];

    /// The `log` label value.
    pub fn label(self) -> &'static str {
        match self {
            LogKind::Error => "error",
            LogKind::Access => "access",
            LogKind::Guest => "guest",
        }
    }

    /// The logs whose notes a successful write of this kind may release: the error log and guest
    /// output share the error log's sink; the access log has its own.
    pub(super) fn sharing_its_sink(self) -> &'static [LogKind] {
        match self {
            LogKind::Error | LogKind::Guest => &[LogKind::Error, LogKind::Guest],
            LogKind::Access => &[LogKind::Access],
        }
    }
}

struct Tally {
    /// Every line dropped by this process (monotonic).
    total: AtomicU64,
    /// Dropped since the last note.
    unreported: AtomicU64,
    /// The last refusal, for the note.
    cause: AtomicI32,
}

impl Tally {
    const fn new() -> Tally {
        Tally { total: AtomicU64::new(0), unreported: AtomicU64::new(0), cause: AtomicI32::new(0) }
    }
}

static TALLIES: [Tally; 3] = [Tally::new(), Tally::new(), Tally::new()];

/// A line of `kind` was refused.
pub(super) fn count(kind: LogKind, refusal: Refusal) {
    let tally = &TALLIES[kind as usize];
    tally.cause.store(refusal, Relaxed);
    tally.total.fetch_add(1, Relaxed);
    tally.unreported.fetch_add(1, Relaxed);
}

/// Lines dropped by this process, indexed like [`LogKind::ALL`].
pub fn dropped_counts() -> [u64; 3] {
    LogKind::ALL.map(|kind| TALLIES[kind as usize].total.load(Relaxed))
}

/// In a freshly forked child: the counts it inherited are its parent's to report.
pub fn forget_inherited_drops() {
    for tally in &TALLIES {
        tally.total.store(0, Relaxed);
        tally.unreported.store(0, Relaxed);
    }
}

/// Whether some log has drops no note reported yet (one load per log: checked after every line).
pub(super) fn any_unreported() -> bool {
    TALLIES.iter().any(|tally| tally.unreported.load(Relaxed) > 0)
}

/// Writes a note for each of `kinds` with unreported drops through `write` (which says whether
/// the error log took it); a note it did not take is tried again later with the later drops.
pub(super) fn report(kinds: &[LogKind], write: impl Fn(std::fmt::Arguments<'_>) -> bool) {
    for &kind in kinds {
        let tally = &TALLIES[kind as usize];
        let dropped = tally.unreported.swap(0, Relaxed);
        if dropped == 0 {
            continue;
        }
        let cause = refusal_text(tally.cause.load(Relaxed));
        if !write(format_args!("{} log: dropped {dropped} lines ({cause})", kind.label())) {
            tally.unreported.fetch_add(dropped, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_reports_each_drop_once_and_waits_while_the_log_refuses_it() {
        forget_inherited_drops();
        count(LogKind::Access, libc::EAGAIN);
        count(LogKind::Access, libc::ENOSPC);
        assert_eq!(dropped_counts(), [0, 2, 0]);
        assert!(any_unreported());
        report(&[LogKind::Access], |_| false);
        assert!(any_unreported(), "a refused note is kept");
        let notes = std::sync::Mutex::new(Vec::new());
        report(&LogKind::ALL, |note| {
            notes.lock().unwrap().push(note.to_string());
            true
        });
        assert_eq!(*notes.lock().unwrap(), ["access log: dropped 2 lines (no space left on the log's device)"]);
        assert!(!any_unreported());
        assert_eq!(dropped_counts(), [0, 2, 0], "the total stays");
    }
}
