//! The pid file (`-p`): written atomically, removed on exit only if it still names this process,
//! and during a USR2 upgrade kept as `PIDFILE.2` by the new arbiter until the old one has exited.
use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Writes `pid` to `path` through a fresh temporary file in the same directory (created with
/// O_EXCL under an unpredictable name, so a symlink planted there is never followed) and a
/// rename (which replaces a symlink at `path` rather than writing through it). A reader never
/// sees the file empty.
pub fn write(path: &Path, pid: u32) -> Result<()> {
    let context = || format!("--pid {}: cannot write the pid file", path.display());
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path.file_name().with_context(|| format!("--pid {}: not a file path", path.display()))?;
    let mut staged = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(context)?;
    // Readable by all, like any pid file (the temporary file starts 0600).
    staged.as_file().set_permissions(std::fs::Permissions::from_mode(0o644)).with_context(context)?;
    staged.write_all(format!("{pid}\n").as_bytes()).with_context(context)?;
    staged.persist(path).map_err(|e| e.error).with_context(context)?;
    Ok(())
}

/// The pid a file names, if it can be read (a symlink at the path is not followed).
pub fn read(path: &Path) -> Option<u32> {
    let mut file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path).ok()?;
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_at_the_pid_file_or_a_guessable_temp_name_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        let pid_file = dir.path().join("app.pid");
        std::os::unix::fs::symlink(&victim, &pid_file).unwrap();
        // The name the previous implementation staged through, planted as a symlink too.
        std::os::unix::fs::symlink(&victim, dir.path().join("app.pid.4242.tmp")).unwrap();
        write(&pid_file, 4242).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        let meta = std::fs::symlink_metadata(&pid_file).unwrap();
        assert!(meta.file_type().is_file(), "the symlink was replaced by a regular file");
        assert_eq!(meta.permissions().mode() & 0o777, 0o644);
        assert_eq!(read(&pid_file), Some(4242));
        remove_if_ours(&pid_file, 4242);
        assert!(!pid_file.exists());
    }
}
