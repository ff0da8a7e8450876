//! Descriptor hygiene across fork and exec: a child closes every descriptor except stdio and the
//! ones it was handed, so it holds nothing of the arbiter's (the previous generation's
//! listeners, the signal pipe, the compiler's socket, the admin listener, descriptors leaked by
//! whoever started us). `close_range(2)` (Linux >= 5.9) closes each gap in one call; where it
//! fails (ENOSYS on older kernels, EPERM under an older container seccomp profile) the open
//! descriptors are listed from `/proc/self/fd` and closed one by one, and without `/proc` every
//! number below the soft `RLIMIT_NOFILE` (at most 2^20) is.
use std::os::fd::RawFd;

/// Closes every descriptor of this process except stdin, stdout, stderr and `keep`. Meant for a
/// freshly forked child of the single-threaded arbiter (it allocates).
pub fn keep_only(keep: &[RawFd]) -> std::io::Result<()> {
    let mut kept: Vec<u32> = keep.iter().filter_map(|fd| u32::try_from(*fd).ok()).filter(|fd| *fd > 2).collect();
    kept.sort_unstable();
    kept.dedup();
    // ENOSYS before Linux 5.9; EPERM where an older container seccomp profile refuses it.
    close_gaps(&kept).or_else(|_| close_listed(&kept))
}

/// The ranges of descriptor numbers from 3 up that `kept` (sorted, distinct, all > 2) leaves.
fn gaps(kept: &[u32]) -> Vec<(u32, u32)> {
    let mut gaps = Vec::new();
    let mut first = 3u32;
    for &fd in kept {
        if fd > first {
            gaps.push((first, fd - 1));
        }
        first = fd.saturating_add(1);
    }
    if first < u32::MAX {
        gaps.push((first, u32::MAX));
    }
    gaps
}

fn close_gaps(kept: &[u32]) -> std::io::Result<()> {
    for (first, last) in gaps(kept) {
        // SAFETY: close_range(2) on descriptor numbers only; nothing here uses them afterwards.
        if unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Without `close_range`: closes the open descriptors `/proc/self/fd` lists (read in full before
/// any is closed, so the directory's own descriptor is closed by dropping it), else every number
/// up to the soft descriptor limit.
fn close_listed(kept: &[u32]) -> std::io::Result<()> {
    let open: Vec<u32> = match std::fs::read_dir("/proc/self/fd") {
        Ok(entries) => entries.flatten().filter_map(|entry| entry.file_name().to_str()?.parse().ok()).collect(),
        Err(_) => {
            let (soft, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)?;
            (3..u32::try_from(soft).unwrap_or(u32::MAX).min(1 << 20)).collect()
        }
    };
    for fd in open.into_iter().filter(|fd| *fd > 2 && kept.binary_search(fd).is_err()) {
        // SAFETY: closing a descriptor number nothing in this process uses afterwards (EBADF
        // for the directory's own, already closed, is fine).
        unsafe { libc::close(fd as RawFd) };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gaps_leave_exactly_the_kept_descriptors() {
        assert_eq!(gaps(&[]), [(3, u32::MAX)]);
        assert_eq!(gaps(&[3, 4, 9]), [(5, 8), (10, u32::MAX)]);
        assert_eq!(gaps(&[7]), [(3, 6), (8, u32::MAX)]);
        assert_eq!(gaps(&[u32::MAX]), [(3, u32::MAX - 1)]);
    }

    /// Runs `keep_only` in a forked child and reports, through the exit status, which of
    /// `probe` it still holds (bit i set: probe[i] open).
    fn open_after_keep_only(keep: &[RawFd], probe: &[RawFd], listed: bool) -> i32 {
        // SAFETY: the child only closes descriptors and calls fcntl/_exit; it allocates in
        // `keep_only`, acceptable in a test child that exits at once.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let mut kept: Vec<u32> = keep.iter().map(|fd| *fd as u32).collect();
                kept.sort_unstable();
                let _ = if listed { close_listed(&kept) } else { keep_only(keep) };
                let mut bits = 0;
                for (i, fd) in probe.iter().enumerate() {
                    // SAFETY: F_GETFD only asks whether the descriptor is open.
                    if unsafe { libc::fcntl(*fd, libc::F_GETFD) } >= 0 {
                        bits |= 1 << i;
                    }
                }
                // SAFETY: leave the child without running the test harness's destructors.
                unsafe { libc::_exit(bits) }
            }
            nix::unistd::ForkResult::Parent { child } => match nix::sys::wait::waitpid(child, None).unwrap() {
                nix::sys::wait::WaitStatus::Exited(_, code) => code,
                other => panic!("the child ended with {other:?}"),
            },
        }
    }

    #[test]
    fn a_child_keeps_stdio_and_what_it_was_handed_only() {
        use std::os::fd::AsRawFd;
        let files: Vec<std::fs::File> = (0..4).map(|_| tempfile::tempfile().unwrap()).collect();
        let fds: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
        let probe = [0, 1, 2, fds[0], fds[1], fds[2], fds[3]];
        for listed in [false, true] {
            let bits = open_after_keep_only(&[fds[1], fds[3]], &probe, listed);
            assert_eq!(bits, 0b101_0111, "stdio, fds[1] and fds[3] stay (fallback: {listed})");
        }
    }
}
