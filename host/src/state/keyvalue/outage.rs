//! One log line when a bucket's backend starts failing and one when it works again, for every
//! backend: a bucket that fails for a thousand requests writes two lines, not a thousand. What a
//! backend says (a Redis server's error text) is escaped and cut short before it reaches the log.
use crate::{log_info, log_warning};
use std::sync::atomic::{AtomicBool, Ordering};

/// Most characters of a backend's message that reach the log or a guest.
pub const MAX_MESSAGE_CHARS: usize = 300;

/// Whether one bucket is in an outage (true from its first failure to its next success).
#[derive(Default)]
pub struct Outage {
    failing: AtomicBool,
}

impl Outage {
    /// A backend failure: logged if it starts an outage. Returns whether it did.
    pub fn failed(&self, bucket: &str, message: &str) -> bool {
        let started = !self.failing.swap(true, Ordering::Relaxed);
        if started {
            log_warning!("keyvalue bucket {bucket:?}: operations fail: {}", escaped(message));
        }
        started
    }

    /// A backend success: logged if it ends an outage. Returns whether it did.
    pub fn succeeded(&self, bucket: &str) -> bool {
        let ended = self.failing.swap(false, Ordering::Relaxed);
        if ended {
            log_info!("keyvalue bucket {bucket:?}: operations succeed again");
        }
        ended
    }
}

/// `message` cut to [`MAX_MESSAGE_CHARS`] with every control character escaped (one log line,
/// no terminal escapes).
pub fn escaped(message: &str) -> String {
    let mut out: String = message.chars().take(MAX_MESSAGE_CHARS).flat_map(char::escape_default).collect();
    if message.chars().nth(MAX_MESSAGE_CHARS).is_some() {
        out.push_str("...");
    }
    out
}

/// `message` cut to [`MAX_MESSAGE_CHARS`] (for a guest: it may hold anything, the log may not).
pub fn bounded(message: &str) -> String {
    let mut out: String = message.chars().take(MAX_MESSAGE_CHARS).collect();
    if message.chars().nth(MAX_MESSAGE_CHARS).is_some() {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_outage_and_per_recovery() {
        let outage = Outage::default();
        assert!(!outage.succeeded("b"), "no outage yet: nothing to end");
        assert!(outage.failed("b", "down"));
        assert!(!outage.failed("b", "still down"), "the same outage");
        assert!(outage.succeeded("b"));
        assert!(!outage.succeeded("b"));
        assert!(outage.failed("b", "down again"), "a new outage");
    }

    #[test]
    fn messages_are_escaped_and_bounded() {
        assert_eq!(escaped("a\nb\x1b[31m"), "a\\nb\\u{1b}[31m");
        let long = "x".repeat(MAX_MESSAGE_CHARS + 50);
        assert_eq!(escaped(&long).len(), MAX_MESSAGE_CHARS + 3);
        assert_eq!(bounded(&long).len(), MAX_MESSAGE_CHARS + 3);
        assert_eq!(bounded("short"), "short");
    }
}
