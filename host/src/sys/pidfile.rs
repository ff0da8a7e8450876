//! The pid file (`-p`): written atomically, removed on exit only if it still names this process,
//! and during a USR2 upgrade kept as `PIDFILE.2` by the new arbiter until the old one has exited.
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Writes `pid` to `path` through a temporary file and a rename, so a reader never sees it empty.
pub fn write(path: &Path, pid: u32) -> Result<()> {
    let mut staged = path.as_os_str().to_owned();
    staged.push(format!(".{pid}.tmp"));
    let staged = PathBuf::from(staged);
    std::fs::write(&staged, format!("{pid}\n"))
        .and_then(|()| std::fs::rename(&staged, path))
        .with_context(|| format!("--pid {}: cannot write the pid file", path.display()))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&staged);
        })
}

/// The pid a file names, if it can be read.
pub fn read(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Removes the pid file if it names `pid` (another arbiter may own the path by now).
pub fn remove_if_ours(path: &Path, pid: u32) {
    if read(path) == Some(pid) {
        let _ = std::fs::remove_file(path);
    }
}

/// `PIDFILE.2`: where an arbiter started by USR2 writes its pid while the old one still runs.
pub fn upgrade_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".2");
    PathBuf::from(name)
}
