//! `--reload` (development): the arbiter polls the app file and each `--reload-extra-file` once a
//! second and reloads like HUP when one changes (mtime, size or inode: an atomic rename counts).
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const POLL_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    mtime_ns: i128,
    size: u64,
    inode: u64,
    device: u64,
}

fn fingerprint(path: &std::path::Path) -> Option<Fingerprint> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Fingerprint {
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        size: meta.size(),
        inode: meta.ino(),
        device: meta.dev(),
    })
}

/// The watched files and what they looked like at the last poll.
pub struct ReloadWatch {
    files: Vec<(PathBuf, Option<Fingerprint>)>,
    next_poll: Instant,
}

impl ReloadWatch {
    pub fn new(files: Vec<PathBuf>) -> ReloadWatch {
        let files = files.into_iter().map(|path| {
            let seen = fingerprint(&path);
            (path, seen)
        });
        ReloadWatch { files: files.collect(), next_poll: Instant::now() + POLL_INTERVAL }
    }

    /// At most once per interval: the first watched file that changed since the last poll. A
    /// file that is missing (mid-deploy) counts as unchanged until it is back.
    pub fn poll(&mut self, now: Instant) -> Option<PathBuf> {
        if now < self.next_poll {
            return None;
        }
        self.next_poll = now + POLL_INTERVAL;
        let mut changed = None;
        for (path, seen) in &mut self.files {
            let current = fingerprint(path);
            if current.is_some() && current != *seen {
                *seen = current;
                changed.get_or_insert_with(|| path.clone());
            }
        }
        changed
    }

    pub fn files(&self) -> impl Iterator<Item = &PathBuf> {
        self.files.iter().map(|(path, _)| path)
    }
}
