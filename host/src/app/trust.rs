//! Compiled code is trusted input: the private cache directory (0700, ours, not group/world-
//! writable), files opened without following symlinks and checked on the open fd, and the
//! SHA-256 digests that tie a `.cwasm` to what rustcorn compiled.
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;

/// A SHA-256 digest as lowercase hex.
pub type Sha256Hex = String;

/// Who may own a file rustcorn loads native code from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Only the effective uid (the cache rustcorn writes itself).
    Us,
    /// The effective uid or root (a `.cwasm` the operator passed, e.g. installed by a package).
    UsOrRoot,
}

/// Why a file or directory with this owner and mode cannot be trusted; None if it can.
pub fn trust_problem(owner_uid: u32, mode: u32, euid: u32, allowed: Owner) -> Option<String> {
    let owner_ok = owner_uid == euid || (allowed == Owner::UsOrRoot && owner_uid == 0);
    if !owner_ok {
        return Some(format!("it is owned by uid {owner_uid}, not by rustcorn's uid {euid}"));
    }
    if mode & 0o022 != 0 {
        let who = if mode & 0o002 != 0 { "world" } else { "group" };
        return Some(format!("it is {who}-writable (mode {:03o}), so another user could change it", mode & 0o777));
    }
    None
}

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Creates `dir` (mode 0700) if missing, opens it and checks it is a directory owned by us and
/// not group/world-writable. The returned handle is what the cache files are opened against.
pub fn open_private_dir(dir: &Path) -> Result<File> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("--cache-dir {}: cannot create it", dir.display()))?;
    let handle = File::open(dir).with_context(|| format!("--cache-dir {}: cannot open it", dir.display()))?;
    let meta = handle.metadata().with_context(|| format!("--cache-dir {}: cannot stat it", dir.display()))?;
    if !meta.is_dir() {
        bail!("--cache-dir {}: not a directory", dir.display());
    }
    if let Some(problem) = trust_problem(meta.uid(), meta.mode(), euid(), Owner::Us) {
        bail!(
            "--cache-dir {}: refusing a cache directory {problem}; chmod 700 it, or pass another --cache-dir",
            dir.display()
        );
    }
    Ok(handle)
}

/// Opens `name` inside the directory `dir` with O_NOFOLLOW. Ok(None) if it does not exist.
/// A symlink, a non-regular file, or one that fails `trust_problem` is an error.
pub fn open_in_dir(dir: &File, dir_path: &Path, name: &str) -> Result<Option<File>> {
    let path = dir_path.join(name);
    let c_name = std::ffi::CString::new(name).context("a cache file name contains a NUL byte")?;
    // SAFETY: a valid directory fd and a NUL-terminated name; the result is checked below.
    let fd =
        unsafe { libc::openat(dir.as_raw_fd(), c_name.as_ptr(), libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOENT) => Ok(None),
            Some(libc::ELOOP) => bail!("--cache-dir: refusing {}: it is a symlink", path.display()),
            _ => Err(e).with_context(|| format!("--cache-dir: cannot open {}", path.display())),
        };
    }
    // SAFETY: openat just returned this fd; nothing else owns it.
    let file = unsafe { File::from_raw_fd(fd) };
    check_open_file(&file, &path, Owner::Us).map_err(|e| anyhow::anyhow!("--cache-dir: {e}"))?;
    Ok(Some(file))
}

/// Checks an open file is a regular file that only `allowed` can change.
pub fn check_open_file(file: &File, path: &Path, allowed: Owner) -> Result<()> {
    let meta = file.metadata().with_context(|| format!("cannot stat {}", path.display()))?;
    if !meta.is_file() {
        bail!("refusing {}: not a regular file", path.display());
    }
    if let Some(problem) = trust_problem(meta.uid(), meta.mode(), euid(), allowed) {
        bail!("refusing to load native code from {}: {problem}", path.display());
    }
    Ok(())
}

/// SHA-256 of a whole open file, read from its start.
pub fn sha256_file(file: &File) -> Result<Sha256Hex> {
    use std::io::{Seek, SeekFrom};
    let mut reader = file;
    reader.seek(SeekFrom::Start(0)).context("cannot rewind the compiled app")?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf).context("cannot read the compiled app")?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

pub fn sha256_bytes(bytes: &[u8]) -> Sha256Hex {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses a digest sidecar's contents: 64 hex digits, optional trailing newline.
pub fn parse_digest(text: &str) -> Option<Sha256Hex> {
    let text = text.trim_end_matches('\n');
    (text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_own_not_shared_writable_files_are_trusted() {
        assert_eq!(trust_problem(1000, 0o100600, 1000, Owner::Us), None);
        assert_eq!(trust_problem(1000, 0o40755, 1000, Owner::Us), None);
        assert!(trust_problem(1001, 0o600, 1000, Owner::Us).unwrap().contains("owned by uid 1001"));
        assert!(trust_problem(0, 0o600, 1000, Owner::Us).is_some());
        assert_eq!(trust_problem(0, 0o644, 1000, Owner::UsOrRoot), None);
        assert!(trust_problem(1000, 0o620, 1000, Owner::Us).unwrap().contains("group-writable"));
        assert!(trust_problem(1000, 0o40777, 1000, Owner::Us).unwrap().contains("world-writable (mode 777)"));
    }

    #[test]
    fn digests_parse_strictly() {
        let good = sha256_bytes(b"x");
        assert_eq!(parse_digest(&format!("{good}\n")), Some(good.clone()));
        assert_eq!(parse_digest(&good.to_uppercase()), None);
        assert_eq!(parse_digest("abc"), None);
    }

    #[test]
    fn a_world_writable_cache_dir_is_refused_and_a_new_one_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let fresh = root.path().join("a/b");
        let handle = open_private_dir(&fresh).unwrap();
        assert_eq!(handle.metadata().unwrap().mode() & 0o777, 0o700);
        std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = open_private_dir(&fresh).unwrap_err().to_string();
        assert!(e.contains("--cache-dir") && e.contains("world-writable"), "{e}");
    }

    #[test]
    fn cache_files_are_opened_without_following_symlinks() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("target"), b"x").unwrap();
        std::os::unix::fs::symlink(root.path().join("target"), root.path().join("link")).unwrap();
        let dir = File::open(root.path()).unwrap();
        let e = open_in_dir(&dir, root.path(), "link").unwrap_err().to_string();
        assert!(e.contains("symlink"), "{e}");
        assert!(open_in_dir(&dir, root.path(), "missing").unwrap().is_none());
        assert!(open_in_dir(&dir, root.path(), "target").unwrap().is_some());
    }
}
